//! Who splits the work: one level of parallelism, decided by [`inside_split`].
//!
//! A kernel called at the top of a program spreads its work over the pool; the same kernel
//! called from inside one of striate's splits (one image per task, one batch element per task)
//! runs on its thread alone, since the caller already keeps every thread busy.
//!
//! On a thread that is not one of rayon's workers, nothing is split yet. On a worker, a task is
//! running, except on the one worker that is the program's own thread: [`crate::set_num_threads`]
//! called from `main` makes that thread the pool's worker 0 (as OpenMP's master thread is part
//! of its team), so that parallel regions start from a worker and cost no sleep and wake of the
//! caller. That thread is inside a split only while it has one open ([`split`]).

use std::cell::Cell;

thread_local! {
    /// This thread is the program's own thread, joined to the pool as its worker 0.
    static CALLER_IN_POOL: Cell<bool> = const { Cell::new(false) };
    /// This thread (the caller in the pool) has one of striate's splits open.
    static SPLITTING: Cell<bool> = const { Cell::new(false) };
}

/// Whether the current thread runs inside a split of the work over threads, so that a kernel
/// called here must not split its own work again.
pub(crate) fn inside_split() -> bool {
    match rayon::current_thread_index() {
        None => false,
        Some(_) => !CALLER_IN_POOL.get() || SPLITTING.get(),
    }
}

/// Runs `f`, which opens a parallel region whose tasks call kernels, marked as inside a split
/// for its whole length: the tasks the calling thread runs itself (its own share, or work it
/// takes while it waits) must not split again.
pub(crate) fn split<R>(f: impl FnOnce() -> R) -> R {
    struct Restore(bool);
    impl Drop for Restore {
        fn drop(&mut self) {
            SPLITTING.set(self.0);
        }
    }
    let _restore = Restore(SPLITTING.replace(true));
    f()
}

/// Builds rayon's global pool of `threads` threads (`0`: rayon's default count); on the
/// program's main thread, with two threads or more, that thread is one of them (worker 0).
///
/// Never with one: the main thread would be the pool's only thread, and work sent to the pool
/// from another thread (the data loader's prefetching thread runs parallel iterators) would wait
/// for it while it waits for that thread's batch.
pub(crate) fn build_global_pool(threads: usize) -> Result<(), rayon::ThreadPoolBuildError> {
    let is_main = std::thread::current().name() == Some("main");
    let builder = rayon::ThreadPoolBuilder::new().num_threads(threads);
    if is_main && resolved_count(threads) >= 2 {
        builder.use_current_thread().build_global()?;
        CALLER_IN_POOL.set(true);
        Ok(())
    } else {
        builder.build_global()
    }
}

/// The number of threads rayon gives a pool asked for `threads`: `RAYON_NUM_THREADS` if set to
/// a positive count, else one per logical CPU, when `threads` is 0.
fn resolved_count(threads: usize) -> usize {
    if threads > 0 {
        return threads;
    }
    std::env::var("RAYON_NUM_THREADS")
        .ok()
        .and_then(|count| count.parse().ok())
        .filter(|&count: &usize| count > 0)
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, usize::from))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_thread_outside_the_pool_is_not_inside_a_split_and_a_pool_task_is() {
        assert!(!inside_split());
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(2)
            .build()
            .unwrap();
        assert!(pool.install(inside_split));
        // Marking a split on a thread outside the pool changes nothing for it: its tasks run on
        // the pool's workers, which are inside the split.
        assert!(!split(inside_split));
    }

    #[test]
    fn an_explicit_count_is_kept_and_the_default_is_at_least_one() {
        assert_eq!(resolved_count(3), 3);
        assert!(resolved_count(0) >= 1);
    }
}
