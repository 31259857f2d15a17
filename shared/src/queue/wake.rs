//! Waking idle workers of this process the moment a job can be claimed.
//!
//! On PostgreSQL the wake comes from `NOTIFY` (see `storage::jobs::notify`), delivered at commit
//! and relayed here by each worker process's listener. On SQLite `enqueue` wakes this process
//! directly: the enqueuing transaction holds SQLite's write lock (`BEGIN IMMEDIATE`), so a
//! claim it wakes waits for that commit and then sees the row. Either way a wake is a hint:
//! workers also look for due work every `Tuning::poll_backstop`.

use std::sync::LazyLock;

use tokio::sync::Notify;

use super::Queue;

static WAKERS: LazyLock<Vec<(Queue, Notify)>> = LazyLock::new(|| Queue::WITH_JOBS.iter().map(|q| (*q, Notify::new())).collect());

/// The notifier idle fetchers of `queue` wait on.
pub fn waker(queue: Queue) -> &'static Notify {
    match WAKERS.iter().find(|(q, _)| *q == queue) {
        Some((_, notify)) => notify,
        None => &WAKERS[0].1,
    }
}

/// Wakes every idle fetcher of `queue` in this process.
pub fn wake(queue: Queue) {
    waker(queue).notify_waiters();
}

/// Wakes every idle fetcher of every queue (after a lost listener connection, say).
pub fn wake_all() {
    for (_, notify) in WAKERS.iter() {
        notify.notify_waiters();
    }
}
