//! A small ordered worker pool: a few threads take the next job in turn, and the results
//! come back in the order of the inputs, whichever thread finished first. A pull's layer
//! downloads and postroj's image probes both run on it.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Mutex;

/// Runs `job` on each of `items` with at most `workers` threads (at least one, and no
/// more than there are items), and returns the results in the order of `items`.
///
/// Once `cancelled` is set (by a job, typically on failure), no further job starts; the
/// ones under way finish, and the items never started are `None`. Without `cancelled`,
/// every item has a result.
pub fn run_ordered<T, R>(
    items: &[T],
    workers: usize,
    cancelled: Option<&AtomicBool>,
    job: impl Fn(usize, &T) -> R + Sync,
) -> Vec<Option<R>>
where
    T: Sync,
    R: Send,
{
    let next = AtomicUsize::new(0);
    let results: Mutex<Vec<Option<R>>> = Mutex::new((0..items.len()).map(|_| None).collect());
    std::thread::scope(|scope| {
        for _ in 0..workers.clamp(1, items.len().max(1)) {
            scope.spawn(|| loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= items.len() || cancelled.is_some_and(|c| c.load(Ordering::Relaxed)) {
                    break;
                }
                let result = job(i, &items[i]);
                results.lock().unwrap_or_else(|p| p.into_inner())[i] = Some(result);
            });
        }
    });
    results.into_inner().unwrap_or_else(|p| p.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn results_keep_the_order_of_the_inputs() {
        let items: Vec<u64> = (0..20).collect();
        let results = run_ordered(&items, 4, None, |i, &n| {
            std::thread::sleep(std::time::Duration::from_millis(20 - n));
            (i, n * 2)
        });
        let expected: Vec<Option<(usize, u64)>> = (0..20).map(|n| Some((n as usize, n * 2))).collect();
        assert_eq!(results, expected);
    }

    #[test]
    fn no_job_starts_after_a_cancel() {
        let cancelled = AtomicBool::new(false);
        let items = [0, 1, 2, 3, 4];
        let results = run_ordered(&items, 1, Some(&cancelled), |_, &n| {
            if n == 1 {
                cancelled.store(true, Ordering::Relaxed);
            }
            n
        });
        assert_eq!(results, vec![Some(0), Some(1), None, None, None]);
    }

    #[test]
    fn no_items_no_results() {
        assert!(run_ordered(&[] as &[u8], 3, None, |_, _| ()).is_empty());
    }
}
