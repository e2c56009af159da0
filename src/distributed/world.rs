//! `World`: this process's place in an MPI job, and the collectives training needs.

use std::sync::mpsc::{Receiver, Sender, channel};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use super::comm::{self, Job};
use crate::error::{Error, Result};

/// How long a peer may leave a ping unanswered before the job is ended (see [`World`]).
pub const DEFAULT_PEER_TIMEOUT: Duration = Duration::from_secs(5);

/// What the gradient all-reduces cost so far, on this rank ([`World::stats`]).
///
/// `reduce_seconds` is the time the communication thread spent reducing gradient buckets;
/// `exposed_seconds` the part of it the training thread waited for after its backward pass
/// had finished. The rest was hidden behind backward: the overlap is
/// `1 - exposed_seconds / reduce_seconds`.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct CommStats {
    /// Gradient buckets reduced.
    pub buckets: u64,
    /// Bytes of gradients (and presence flags) reduced.
    pub bytes: u64,
    /// Seconds the communication thread spent reducing them.
    pub reduce_seconds: f64,
    /// Seconds the training thread waited for them after backward.
    pub exposed_seconds: f64,
}

/// The processes of an MPI job (`mpirun -np N`), as seen from one of them: its rank, the
/// number of ranks, and the collectives data-parallel training uses.
///
/// Start it once per process, at the top of `main`; dropping it finalizes MPI. One thread per
/// process makes every MPI call (the *communication thread*): the training thread hands it
/// work and, during backward, goes on computing while it reduces gradients.
///
/// **Faults end the job.** While a rank waits for a peer, its communication thread pings the
/// peers; a peer that has not answered for the peer timeout (default
/// [`DEFAULT_PEER_TIMEOUT`], 5 s; waits shorter than a second send no ping) is dead, stopped
/// or unreachable, and the job is aborted with a message naming it and a non-zero exit. A
/// rank killed outright is noticed by `mpirun` itself, which ends the job naming it. A slow
/// peer (rank 0 writing a checkpoint, say) still answers pings and is waited for.
///
/// # Examples
///
/// ```no_run
/// use striate::distributed::World;
///
/// let world = World::init()?;
/// if world.is_leader() {
///     println!("{} ranks", world.size());
/// }
/// // Sums over all ranks: every rank gets the same result.
/// let mut counts = [1.0f64];
/// world.sum_f64(&mut counts)?;
/// assert_eq!(counts[0], world.size() as f64);
/// # Ok::<(), striate::Error>(())
/// ```
pub struct World {
    rank: usize,
    size: usize,
    jobs: Option<Sender<Job>>,
    thread: Option<JoinHandle<()>>,
    stats: Arc<Mutex<CommStats>>,
}

impl World {
    /// Starts MPI (on the communication thread) with the default peer timeout, or the one in
    /// seconds in `STRIATE_PEER_TIMEOUT` if that is set. Outside `mpirun`, Open MPI starts a
    /// job of one rank.
    ///
    /// # Errors
    ///
    /// [`Error::Distributed`] if MPI was already started in this process, or
    /// `STRIATE_PEER_TIMEOUT` is not a positive number.
    pub fn init() -> Result<World> {
        let timeout = match std::env::var("STRIATE_PEER_TIMEOUT") {
            Ok(text) => match text.parse::<f64>() {
                Ok(seconds) if seconds > 0.0 && seconds.is_finite() => {
                    Duration::from_secs_f64(seconds)
                }
                _ => {
                    return Err(Error::Distributed(format!(
                        "STRIATE_PEER_TIMEOUT: expected a positive number of seconds, found \
                         {text:?}"
                    )));
                }
            },
            Err(_) => DEFAULT_PEER_TIMEOUT,
        };
        World::init_with_timeout(timeout)
    }

    /// Starts MPI with `peer_timeout`: how long a peer may leave a ping unanswered before the
    /// job is ended.
    ///
    /// # Errors
    ///
    /// [`Error::Distributed`] if MPI was already started in this process.
    pub fn init_with_timeout(peer_timeout: Duration) -> Result<World> {
        let (jobs, inbox) = channel();
        let (started_sender, started) = channel();
        let stats = Arc::new(Mutex::new(CommStats::default()));
        let thread_stats = Arc::clone(&stats);
        let thread = std::thread::Builder::new()
            .name("striate-mpi".into())
            .spawn(move || comm::run(inbox, started_sender, peer_timeout, thread_stats))
            .map_err(|e| Error::Distributed(format!("starting the MPI thread: {e}")))?;
        match started.recv() {
            Ok(Ok(comm::Started { rank, size })) => Ok(World {
                rank,
                size,
                jobs: Some(jobs),
                thread: Some(thread),
                stats,
            }),
            Ok(Err(message)) => {
                let _ = thread.join();
                Err(Error::Distributed(message))
            }
            Err(_) => Err(Error::Distributed(
                "the MPI thread stopped while starting MPI".into(),
            )),
        }
    }

    /// This process's rank, from 0.
    pub fn rank(&self) -> usize {
        self.rank
    }

    /// The number of ranks.
    pub fn size(&self) -> usize {
        self.size
    }

    /// What the gradient all-reduces have cost on this rank since the start, or since
    /// [`World::reset_stats`].
    pub fn stats(&self) -> CommStats {
        *self.stats.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Sets the [`World::stats`] back to zero (after a warm-up, say).
    pub fn reset_stats(&self) {
        *self.stats.lock().unwrap_or_else(|e| e.into_inner()) = CommStats::default();
    }

    /// Adds time the training thread waited for gradient buckets.
    pub(crate) fn add_exposed(&self, seconds: f64) {
        self.stats
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .exposed_seconds += seconds;
    }

    /// Whether this is rank 0, the one that prints, evaluates for show and writes files.
    pub fn is_leader(&self) -> bool {
        self.rank == 0
    }

    /// Hands a job to the communication thread and returns where its answer will come.
    pub(crate) fn submit<T>(&self, job: impl FnOnce(Sender<T>) -> Job) -> Result<Receiver<T>> {
        let (reply, answer) = channel();
        self.jobs
            .as_ref()
            .and_then(|jobs| jobs.send(job(reply)).ok())
            .ok_or_else(|| self.thread_gone())?;
        Ok(answer)
    }

    /// Waits for the answer of a job handed over by [`World::submit`].
    pub(crate) fn wait<T>(&self, answer: Receiver<T>) -> Result<T> {
        answer.recv().map_err(|_| self.thread_gone())
    }

    fn thread_gone(&self) -> Error {
        Error::Distributed(format!(
            "rank {}: the MPI communication thread has stopped",
            self.rank
        ))
    }

    /// Sums `data` element-wise over all ranks (in f32, in a fixed order: every rank gets the
    /// same bits).
    ///
    /// Collective: every rank must call it, with the same length.
    ///
    /// # Errors
    ///
    /// [`Error::Distributed`] if the communication thread has stopped.
    pub fn sum_f32(&self, data: Vec<f32>) -> Result<Vec<f32>> {
        let answer = self.submit(|reply| Job::SumF32 { data, reply })?;
        self.wait(answer)
    }

    /// Sums `values` over all ranks, in place, in f64 (exact for integer counts below 2^53).
    ///
    /// Collective: every rank must call it, with the same length.
    ///
    /// # Errors
    ///
    /// [`Error::Distributed`] if the communication thread has stopped.
    pub fn sum_f64(&self, values: &mut [f64]) -> Result<()> {
        let data = values.to_vec();
        let answer = self.submit(|reply| Job::SumF64 { data, reply })?;
        values.copy_from_slice(&self.wait(answer)?);
        Ok(())
    }

    /// Every rank's `value`, indexed by rank.
    ///
    /// Collective: every rank must call it.
    ///
    /// # Errors
    ///
    /// [`Error::Distributed`] if the communication thread has stopped.
    pub fn gather_u64(&self, value: u64) -> Result<Vec<u64>> {
        let answer = self.submit(|reply| Job::GatherU64 { value, reply })?;
        self.wait(answer)
    }

    /// Rank `root`'s `data` on every rank (the others' `data` is ignored).
    ///
    /// Collective: every rank must call it, with the same `root`.
    ///
    /// # Errors
    ///
    /// [`Error::Distributed`] if the communication thread has stopped.
    ///
    /// # Panics
    ///
    /// If `root` is not a rank.
    pub fn broadcast(&self, root: usize, data: Vec<u8>) -> Result<Vec<u8>> {
        if root >= self.size {
            crate::tensor::check::contract_violation(
                "World::broadcast",
                "root must be a rank",
                format_args!("root {root}, {} ranks", self.size),
            );
        }
        let answer = self.submit(|reply| Job::Broadcast { root, data, reply })?;
        self.wait(answer)
    }

    /// Waits until every rank has called it.
    ///
    /// # Errors
    ///
    /// [`Error::Distributed`] if the communication thread has stopped.
    pub fn barrier(&self) -> Result<()> {
        self.gather_u64(0).map(|_| ())
    }

    /// Checks that every rank computed the same `value` for `what` (a hash, a count):
    /// an [`Error::Distributed`] naming the ranks that differ from rank 0, on every rank.
    ///
    /// Collective: every rank must call it.
    ///
    /// # Errors
    ///
    /// [`Error::Distributed`] if values differ, or the communication thread has stopped.
    pub fn expect_same(&self, what: &str, value: u64) -> Result<()> {
        let values = self.gather_u64(value)?;
        let differing: Vec<String> = (1..self.size)
            .filter(|&r| values[r] != values[0])
            .map(|r| format!("rank {r} has {}", values[r]))
            .collect();
        if differing.is_empty() {
            return Ok(());
        }
        Err(Error::Distributed(format!(
            "the ranks disagree on {what}: rank 0 has {}, {}",
            values[0],
            differing.join(", ")
        )))
    }

    /// The handle a synchronised batch norm sums its statistics with:
    /// `BatchNorm2d::new(64).synchronized(world.replica_sum())`.
    ///
    /// Every rank must then run the same synchronised layers in the same order, as it runs the
    /// same model. Using it after the `World` is dropped panics.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// use striate::distributed::World;
    /// use striate::nn::BatchNorm2d;
    ///
    /// let world = World::init()?;
    /// let bn = BatchNorm2d::new(64).synchronized(world.replica_sum());
    /// # Ok::<(), striate::Error>(())
    /// ```
    pub fn replica_sum(&self) -> std::sync::Arc<dyn crate::autograd::ops::batch_norm::ReplicaSum> {
        std::sync::Arc::new(ReplicaSumOverMpi {
            rank: self.rank,
            jobs: self.jobs.clone(),
        })
    }

    /// Prints `message` (prefixed with this rank) and ends the whole job, every rank, with a
    /// non-zero exit: for an error that struck one rank while the others wait for it.
    pub fn abort(&self, message: &str) -> ! {
        let message = format!("rank {}: {message}", self.rank);
        if let Some(jobs) = &self.jobs
            && jobs
                .send(Job::Abort {
                    message: message.clone(),
                })
                .is_ok()
        {
            // The communication thread ends the process.
            loop {
                std::thread::park();
            }
        }
        eprintln!("striate::distributed: {message}");
        std::process::exit(1)
    }
}

impl Drop for World {
    fn drop(&mut self) {
        if std::thread::panicking() {
            // The peers would wait for this rank forever: end the job.
            self.abort("panicked (see the message above)");
        }
        // The communication thread finalizes MPI and ends (handles from `replica_sum` may
        // still hold the channel open, hence the explicit job).
        if let Some(jobs) = self.jobs.take() {
            let _ = jobs.send(Job::Shutdown);
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// [`World::replica_sum`]: sums through the communication thread.
struct ReplicaSumOverMpi {
    rank: usize,
    jobs: Option<Sender<Job>>,
}

impl crate::autograd::ops::batch_norm::ReplicaSum for ReplicaSumOverMpi {
    fn sum(&self, values: &mut [f64]) {
        let (reply, answer) = channel();
        let data = values.to_vec();
        let sent = self
            .jobs
            .as_ref()
            .is_some_and(|jobs| jobs.send(Job::SumF64 { data, reply }).is_ok());
        match answer.recv() {
            Ok(sums) if sent => values.copy_from_slice(&sums),
            _ => panic!(
                "rank {}: a synchronised batch norm ran after MPI was finalized (its World was \
                 dropped)",
                self.rank
            ),
        }
    }
}

impl std::fmt::Debug for ReplicaSumOverMpi {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ReplicaSumOverMpi(rank {})", self.rank)
    }
}

impl std::fmt::Debug for World {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("World")
            .field("rank", &self.rank)
            .field("size", &self.size)
            .finish()
    }
}
