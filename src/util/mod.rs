//! What every floor of the crate uses and no user needs to see: the one atomic file writer.
//! (Its types are re-exported where users need them, as [`crate::io::AtomicFile`].)

pub(crate) mod atomic_file;
