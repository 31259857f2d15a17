//! What workers' job runs came to, per queue and minute (`job_minutes`): the /ops graphs read
//! it. Each worker writes its own row per queue and minute, so workers never contend.

use sqlx::AnyConnection;

/// Upper bounds (milliseconds) of the run time buckets; one more bucket counts longer runs.
pub const RUN_MS_BUCKETS: [i64; 12] = [5, 10, 25, 50, 100, 250, 500, 1_000, 2_500, 5_000, 10_000, 30_000];

/// Runs of one queue in one minute.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Minute {
    /// Runs that finished the job.
    pub done: i64,
    /// Runs that failed (to be retried or dead).
    pub failed: i64,
    /// Runs that left the job dead (also counted in `failed`).
    pub dead: i64,
    /// Run counts per [`RUN_MS_BUCKETS`] bucket, then the overflow bucket.
    pub run_ms: [i64; RUN_MS_BUCKETS.len() + 1],
}

impl Minute {
    pub fn count_run(&mut self, ms: i64) {
        let bucket = RUN_MS_BUCKETS.iter().position(|&le| ms <= le).unwrap_or(RUN_MS_BUCKETS.len());
        self.run_ms[bucket] += 1;
    }

    pub fn add(&mut self, other: &Minute) {
        self.done += other.done;
        self.failed += other.failed;
        self.dead += other.dead;
        for (a, b) in self.run_ms.iter_mut().zip(other.run_ms) {
            *a += b;
        }
    }

    /// The run time under which a share `q` (0–1) of runs finished, in milliseconds,
    /// interpolated inside its bucket as Prometheus' `histogram_quantile` does; `None` with no runs.
    pub fn run_ms_quantile(&self, q: f64) -> Option<f64> {
        let total: i64 = self.run_ms.iter().sum();
        if total == 0 {
            return None;
        }
        let rank = q * total as f64;
        let mut below = 0;
        for (i, &n) in self.run_ms.iter().enumerate() {
            if n > 0 && (below + n) as f64 >= rank {
                let lower = if i == 0 { 0 } else { RUN_MS_BUCKETS[i - 1] };
                let Some(&upper) = RUN_MS_BUCKETS.get(i) else { return Some(lower as f64) };
                return Some(lower as f64 + (upper - lower) as f64 * ((rank - below as f64) / n as f64));
            }
            below += n;
        }
        None
    }

    fn encode(&self) -> String {
        self.run_ms.map(|n| n.to_string()).join(",")
    }

    fn decode(done: i64, failed: i64, dead: i64, run_ms: &str) -> Self {
        let mut minute = Minute { done, failed, dead, ..Minute::default() };
        for (slot, n) in minute.run_ms.iter_mut().zip(run_ms.split(',')) {
            *slot = n.parse().unwrap_or(0);
        }
        minute
    }
}

/// Writes this worker's totals for a queue and minute (start, unix milliseconds), replacing
/// what it wrote for them before.
pub async fn save(conn: &mut AnyConnection, queue: &str, minute: i64, worker_id: &str, m: &Minute) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO job_minutes (queue, minute, worker_id, done, failed, dead, run_ms) VALUES ($1, $2, $3, $4, $5, $6, $7) \
         ON CONFLICT (queue, minute, worker_id) DO UPDATE SET done = excluded.done, failed = excluded.failed, \
         dead = excluded.dead, run_ms = excluded.run_ms",
    )
    .bind(queue)
    .bind(minute)
    .bind(worker_id)
    .bind(m.done)
    .bind(m.failed)
    .bind(m.dead)
    .bind(m.encode())
    .execute(conn)
    .await?;
    Ok(())
}

/// Every worker's runs of `queue` per minute from `since` (unix milliseconds), oldest first.
pub async fn since(conn: &mut AnyConnection, queue: &str, since: i64) -> Result<Vec<(i64, Minute)>, sqlx::Error> {
    let rows: Vec<(i64, i64, i64, i64, String)> = sqlx::query_as(
        "SELECT minute, done, failed, dead, run_ms FROM job_minutes WHERE queue = $1 AND minute >= $2 ORDER BY minute",
    )
    .bind(queue)
    .bind(since)
    .fetch_all(conn)
    .await?;
    let mut minutes: Vec<(i64, Minute)> = Vec::new();
    for (minute, done, failed, dead, run_ms) in rows {
        let m = Minute::decode(done, failed, dead, &run_ms);
        match minutes.last_mut() {
            Some((at, total)) if *at == minute => total.add(&m),
            _ => minutes.push((minute, m)),
        }
    }
    Ok(minutes)
}

/// Removes minutes older than `cutoff` (unix milliseconds); the graphs show the last hour.
pub async fn prune(conn: &mut AnyConnection, cutoff: i64) -> Result<u64, sqlx::Error> {
    Ok(sqlx::query("DELETE FROM job_minutes WHERE minute < $1").bind(cutoff).execute(conn).await?.rows_affected())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_interpolate_inside_the_bucket() {
        let mut m = Minute::default();
        for ms in [1, 2, 3, 4, 20, 20, 20, 20, 20, 900] {
            m.count_run(ms);
        }
        // 4 runs ≤ 5 ms, 5 in (10, 25], 1 in (500, 1000].
        assert_eq!(m.run_ms_quantile(0.4), Some(5.0));
        assert_eq!(m.run_ms_quantile(0.5), Some(13.0));
        assert_eq!(m.run_ms_quantile(0.95), Some(750.0));
        assert_eq!(Minute::default().run_ms_quantile(0.5), None);
        assert_eq!(Minute::decode(1, 2, 3, &m.encode()), Minute { done: 1, failed: 2, dead: 3, ..m });
    }
}
