//! The communication thread: the one thread of a process that calls MPI.
//!
//! The training thread hands it jobs (sum these numbers over all ranks, broadcast these
//! bytes) over a channel and goes on computing, which is how a bucket's reduction overlaps the
//! rest of backward. Every wait here polls (`MPI_Test`) instead of blocking, so that while it
//! waits the thread can answer its peers' pings and notice a peer that answers none: a rank
//! that died, was stopped, or became unreachable ends the job within seconds, naming that rank,
//! instead of leaving the others blocked in a collective forever.

use std::ops::AddAssign;
use std::sync::mpsc::{Receiver, RecvTimeoutError, Sender};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use mpi::Threading;
use mpi::datatype::Equivalence;
use mpi::request::{Request, StaticScope};
use mpi::topology::SimpleCommunicator;
use mpi::traits::{Communicator, Destination, Source};

use super::world::CommStats;

/// Message tags: data of the collectives, and the liveness protocol.
const DATA: i32 = 11;
const PING: i32 = 12;
const PONG: i32 = 13;
/// Pings and pongs carry nothing; the sender's rank is the message.
static TOKEN: u64 = 0;

/// How long an idle communication thread sleeps between looks at its peers' pings.
const IDLE_POLL: Duration = Duration::from_millis(1);

/// Work for the communication thread. Each job is collective: every rank submits the same jobs
/// in the same order.
pub(crate) enum Job {
    /// Sums `data` element-wise over all ranks (ring all-reduce); every rank gets the same bits.
    SumF32 {
        data: Vec<f32>,
        reply: Sender<Vec<f32>>,
    },
    /// As `SumF32`, in f64 (metrics: sums of losses and counts).
    SumF64 {
        data: Vec<f64>,
        reply: Sender<Vec<f64>>,
    },
    /// Every rank's `value`, indexed by rank.
    GatherU64 { value: u64, reply: Sender<Vec<u64>> },
    /// `root`'s bytes, on every rank (the others' `data` is ignored).
    Broadcast {
        root: usize,
        data: Vec<u8>,
        reply: Sender<Vec<u8>>,
    },
    /// Prints `message` and ends the whole job with a non-zero exit.
    Abort { message: String },
    /// Finalizes MPI and ends the thread (the `World` was dropped).
    Shutdown,
}

/// What the communication thread reports once MPI is up.
pub(crate) struct Started {
    pub rank: usize,
    pub size: usize,
}

/// The body of the communication thread: starts MPI, serves jobs until the channel closes,
/// then finalizes MPI.
pub(crate) fn run(
    jobs: Receiver<Job>,
    started: Sender<Result<Started, String>>,
    peer_timeout: Duration,
    stats: Arc<Mutex<CommStats>>,
) {
    // This thread makes every MPI call of the process, so it is MPI's "main" thread.
    let Some((universe, _threading)) = mpi::initialize_with_threading(Threading::Funneled) else {
        let _ = started.send(Err("MPI was already initialized in this process".into()));
        return;
    };
    let world = universe.world();
    let (rank, size) = (world.rank() as usize, world.size() as usize);
    if started.send(Ok(Started { rank, size })).is_err() {
        return;
    }
    let mut comm = Comm {
        world,
        rank,
        size,
        health: Health::new(size, peer_timeout),
        stats,
    };
    loop {
        match jobs.recv_timeout(IDLE_POLL) {
            Ok(Job::Shutdown) => break,
            Ok(job) => comm.serve_job(job),
            Err(RecvTimeoutError::Timeout) => comm.health.serve(&comm.world),
            Err(RecvTimeoutError::Disconnected) => break,
        }
    }
    comm.health.finish_sends(&comm.world);
    drop(comm);
    drop(universe); // MPI_Finalize
}

struct Comm {
    world: SimpleCommunicator,
    rank: usize,
    size: usize,
    health: Health,
    stats: Arc<Mutex<CommStats>>,
}

impl Comm {
    fn serve_job(&mut self, job: Job) {
        // A closed reply channel means the training thread is gone (it panicked, and the
        // panic ends the job); nothing to do then.
        match job {
            Job::SumF32 { mut data, reply } => {
                let started = Instant::now();
                self.sum_in_place(&mut data);
                let seconds = started.elapsed().as_secs_f64();
                let mut stats = self.stats.lock().unwrap_or_else(|e| e.into_inner());
                stats.buckets += 1;
                stats.bytes += (data.len() * size_of::<f32>()) as u64;
                stats.reduce_seconds += seconds;
                drop(stats);
                let _ = reply.send(data);
            }
            Job::SumF64 { mut data, reply } => {
                self.sum_in_place(&mut data);
                let _ = reply.send(data);
            }
            Job::GatherU64 { value, reply } => {
                let _ = reply.send(self.gather(value));
            }
            Job::Broadcast { root, data, reply } => {
                let _ = reply.send(self.broadcast(root, data));
            }
            Job::Abort { message } => self.abort(&message),
            Job::Shutdown => unreachable!("handled by the thread's loop"),
        }
    }

    fn abort(&self, message: &str) -> ! {
        eprintln!("striate::distributed: {message}");
        self.world.abort(1)
    }

    fn right(&self) -> usize {
        (self.rank + 1) % self.size
    }

    fn left(&self) -> usize {
        (self.rank + self.size - 1) % self.size
    }

    /// Ring all-reduce (Patarasuk and Yuan 2009, as in Baidu's and Horovod's): a reduce-scatter
    /// of `size` chunks, then an all-gather, each `size - 1` steps of sending one chunk to the
    /// right while receiving one from the left. Each rank sends `2 (size - 1) / size` of the
    /// data, whatever the number of ranks. Each chunk is summed once, along the ring, and then
    /// copied: every rank ends with the same bits.
    fn sum_in_place<T: Equivalence + Copy + Default + AddAssign>(&mut self, data: &mut [T]) {
        let n = self.size;
        if n == 1 || data.is_empty() {
            return;
        }
        let len = data.len();
        let bounds = |chunk: usize| chunk * len / n..(chunk + 1) * len / n;
        let mut incoming = vec![T::default(); len.div_ceil(n)];
        let (r, right, left) = (self.rank, self.right(), self.left());
        // Reduce-scatter: after step s, chunk r - s - 1 holds s + 2 ranks' contributions.
        for step in 0..n - 1 {
            let (out, into) = (
                bounds((r + n - step) % n),
                bounds((r + 2 * n - step - 1) % n),
            );
            let buffer = &mut incoming[..into.len()];
            self.exchange(right, &data[out], left, buffer, "the gradient all-reduce");
            for (sum, part) in data[into].iter_mut().zip(buffer.iter()) {
                *sum += *part;
            }
        }
        // All-gather: rank r holds the complete chunk r + 1 and passes complete chunks on.
        for step in 0..n - 1 {
            let (out, into) = (bounds((r + 1 + n - step) % n), bounds((r + n - step) % n));
            let buffer = &mut incoming[..into.len()];
            self.exchange(right, &data[out], left, buffer, "the gradient all-reduce");
            data[into].copy_from_slice(buffer);
        }
    }

    /// Every rank's value, by ring: each step passes on the value received in the last one.
    fn gather(&mut self, value: u64) -> Vec<u64> {
        let n = self.size;
        let mut values = vec![0u64; n];
        values[self.rank] = value;
        let (r, right, left) = (self.rank, self.right(), self.left());
        for step in 0..n - 1 {
            let (out, into) = ((r + n - step) % n, (r + 2 * n - step - 1) % n);
            let mut received = [0u64];
            self.exchange(right, &values[out..=out], left, &mut received, "a check");
            values[into] = received[0];
        }
        values
    }

    /// `root`'s bytes, relayed around the ring: the length first, then the bytes.
    fn broadcast(&mut self, root: usize, data: Vec<u8>) -> Vec<u8> {
        if self.size == 1 {
            return data;
        }
        let (right, left) = (self.right(), self.left());
        let data = if self.rank == root {
            data
        } else {
            let mut len = [0u64];
            self.receive(left, &mut len, "a broadcast");
            let mut data = vec![0u8; len[0] as usize];
            self.receive(left, &mut data, "a broadcast");
            data
        };
        if right != root {
            self.send(right, &[data.len() as u64], "a broadcast");
            self.send(right, &data, "a broadcast");
        }
        data
    }

    fn send<T: Equivalence>(&mut self, to: usize, data: &[T], what: &str) {
        self.exchange::<T>(to, data, usize::MAX, &mut [], what);
    }

    fn receive<T: Equivalence>(&mut self, from: usize, data: &mut [T], what: &str) {
        self.exchange::<T>(usize::MAX, &[], from, data, what);
    }

    /// Sends `out` to rank `to` while receiving `into` from rank `from` (`usize::MAX`: no such
    /// half), polling until both are done, serving pings and watching the peers meanwhile.
    fn exchange<T: Equivalence>(
        &mut self,
        to: usize,
        out: &[T],
        from: usize,
        into: &mut [T],
        what: &str,
    ) {
        let (world, health, rank) = (&self.world, &mut self.health, self.rank);
        mpi::request::scope(|scope| {
            let mut sending = (to != usize::MAX).then(|| {
                world
                    .process_at_rank(to as i32)
                    .immediate_send_with_tag(scope, out, DATA)
            });
            let mut receiving = (from != usize::MAX).then(|| {
                world
                    .process_at_rank(from as i32)
                    .immediate_receive_into_with_tag(scope, into, DATA)
            });
            let started = Instant::now();
            loop {
                sending = sending.and_then(|request| request.test().err());
                receiving = receiving.and_then(|request| request.test().err());
                if sending.is_none() && receiving.is_none() {
                    break;
                }
                health.serve(world);
                health.watch(world, rank, started, what);
                pause(started.elapsed());
            }
        });
    }
}

/// Between two polls of a pending transfer: spin briefly (a neighbour's chunk is usually
/// microseconds away), then sleep in short naps. Sleeping, unlike yielding, lets the scheduler
/// run this rank's training thread on the core and wake this thread for the next poll a few
/// tens of microseconds later, so that when ranks share cores with their training threads the
/// transfer still advances (yielding instead handed the core away for whole time slices, and a
/// 1.7 MB all-reduce took 16 ms on 2 busy cores).
fn pause(waited: Duration) {
    if waited < Duration::from_micros(20) {
        std::hint::spin_loop();
    } else {
        std::thread::sleep(Duration::from_micros(20));
    }
}

/// The liveness protocol. A rank that has waited `SUSPECT_AFTER` for a transfer pings every
/// peer (again every `SUSPECT_AFTER` while it waits); every communication thread answers pings
/// whenever it polls, idle or waiting. A peer that has left a ping unanswered for
/// `timeout` is dead, stopped or unreachable: the job is aborted, naming it.
struct Health {
    timeout: Duration,
    /// Per peer: when the oldest ping it has not answered was sent.
    unanswered_since: Vec<Option<Instant>>,
    last_round: Option<Instant>,
    /// Pings and pongs in flight (small, so they complete almost at once).
    sends: Vec<Request<'static, u64, StaticScope>>,
}

const SUSPECT_AFTER: Duration = Duration::from_secs(1);

impl Health {
    fn new(size: usize, timeout: Duration) -> Health {
        Health {
            timeout,
            unanswered_since: vec![None; size],
            last_round: None,
            sends: Vec::new(),
        }
    }

    /// Answers pending pings, records pongs, and completes finished sends.
    fn serve(&mut self, world: &SimpleCommunicator) {
        while let Some((message, status)) =
            world.any_process().immediate_matched_probe_with_tag(PING)
        {
            let mut token = 0u64;
            message.matched_receive_into(&mut token);
            let peer = world.process_at_rank(status.source_rank());
            self.sends
                .push(peer.immediate_send_with_tag(StaticScope, &TOKEN, PONG));
        }
        while let Some((message, status)) =
            world.any_process().immediate_matched_probe_with_tag(PONG)
        {
            let mut token = 0u64;
            message.matched_receive_into(&mut token);
            self.unanswered_since[status.source_rank() as usize] = None;
        }
        let sends = std::mem::take(&mut self.sends);
        self.sends = sends
            .into_iter()
            .filter_map(|request| request.test().err())
            .collect();
    }

    /// Called while a transfer for `what` has been pending since `waiting_since`: pings the
    /// peers once a wait gets long, and aborts the job if one has stopped answering.
    fn watch(
        &mut self,
        world: &SimpleCommunicator,
        rank: usize,
        waiting_since: Instant,
        what: &str,
    ) {
        let now = Instant::now();
        if now - waiting_since < SUSPECT_AFTER {
            return;
        }
        if self
            .last_round
            .is_none_or(|last| now - last >= SUSPECT_AFTER)
        {
            self.last_round = Some(now);
            for peer in (0..self.unanswered_since.len()).filter(|&p| p != rank) {
                self.unanswered_since[peer].get_or_insert(now);
                let process = world.process_at_rank(peer as i32);
                self.sends
                    .push(process.immediate_send_with_tag(StaticScope, &TOKEN, PING));
            }
        }
        let silent: Vec<String> = self
            .unanswered_since
            .iter()
            .enumerate()
            .filter(|(_, since)| since.is_some_and(|since| now - since >= self.timeout))
            .map(|(peer, _)| peer.to_string())
            .collect();
        if !silent.is_empty() {
            let (s, verb) = if silent.len() == 1 {
                ("", "has")
            } else {
                ("s", "have")
            };
            eprintln!(
                "striate::distributed: rank{s} {} {verb} not answered for {:.0?} (dead, stopped \
                 or unreachable); rank {rank} was waiting in {what} for {:.1?}. Ending the job.",
                silent.join(", "),
                self.timeout,
                now - waiting_since,
            );
            world.abort(1);
        }
    }

    /// Completes the last pongs before MPI is finalized (waiting at most a second: a peer that
    /// cannot take them is gone anyway).
    fn finish_sends(&mut self, world: &SimpleCommunicator) {
        let started = Instant::now();
        while !self.sends.is_empty() && started.elapsed() < Duration::from_secs(1) {
            self.serve(world);
            pause(started.elapsed());
        }
        // A send still pending would make MPI_Finalize wait for it; leak its handle instead
        // (the process is about to exit).
        for request in self.sends.drain(..) {
            std::mem::forget(request);
        }
    }
}
