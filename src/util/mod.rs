//! What every floor of the crate uses and no user needs to see: runtime SIMD dispatch and
//! vector helpers, the one atomic file writer, and the allocator setting behind
//! [`crate::keep_freed_memory`]. (The atomic writer's types are re-exported where users need
//! them, as [`crate::io::AtomicFile`].)

pub(crate) mod atomic_file;
pub(crate) mod memory;
pub(crate) mod simd;
pub(crate) mod threads;
