//! What this worker's runs came to, per queue and minute: counted as outcomes commit, written
//! to `job_minutes` by upkeep (so the /ops graphs count every worker and every outcome), and
//! reported to `/metrics` as they happen.

use std::{collections::HashMap, sync::Mutex, time::Duration};

use hilt_shared::{
    metrics,
    storage::{
        job_minutes::{self, Minute},
        jobs::Finish,
    },
};
use sqlx::AnyConnection;

const MINUTE_MS: i64 = 60_000;

#[derive(Default)]
pub struct RunStats {
    minutes: Mutex<HashMap<(&'static str, i64), Minute>>,
}

impl RunStats {
    /// A run of a `queue` job that took `ran` finished as `finish`, committed at `now` (unix ms).
    pub fn record(&self, queue: &str, finish: &Finish, ran: Duration, now: i64) {
        let status = match finish {
            Finish::Done => "done",
            Finish::Dead { .. } => "dead",
            Finish::RetryAt { failed: true, .. } | Finish::InternalError { .. } => "retrying",
            // Put off without a failure (a wait for a rate limit): not a run that counts.
            Finish::RetryAt { failed: false, .. } => return,
        };
        // Static labels and keys: nothing is allocated per job on the hot path.
        let queue = hilt_shared::queue::Queue::parse(queue).map_or("unknown", |q| q.as_str());
        metrics::job_run(queue, status, ran);
        let Ok(mut minutes) = self.minutes.lock() else { return };
        let m = minutes.entry((queue, now - now.rem_euclid(MINUTE_MS))).or_default();
        match status {
            "done" => m.done += 1,
            "dead" => {
                m.dead += 1;
                m.failed += 1;
            }
            _ => m.failed += 1,
        }
        m.count_run(i64::try_from(ran.as_millis()).unwrap_or(i64::MAX));
    }

    /// Saves this worker's minutes; forgets those that ended more than a minute ago (a late
    /// outcome of the minute just ended is still saved on the next flush).
    pub async fn flush(&self, conn: &mut AnyConnection, worker_id: &str, now: i64) -> Result<(), sqlx::Error> {
        let snapshot: Vec<((String, i64), Minute)> = match self.minutes.lock() {
            Ok(minutes) => minutes.iter().map(|((q, at), v)| (((*q).to_owned(), *at), v.clone())).collect(),
            Err(_) => return Ok(()),
        };
        for ((queue, minute), m) in &snapshot {
            job_minutes::save(&mut *conn, queue, *minute, worker_id, m).await?;
        }
        let keep_from = now - now.rem_euclid(MINUTE_MS) - MINUTE_MS;
        if let Ok(mut minutes) = self.minutes.lock() {
            minutes.retain(|(_, minute), _| *minute >= keep_from);
        }
        Ok(())
    }
}
