//! Prometheus metrics through the `metrics` facade and `metrics-exporter-prometheus`.
//!
//! Two kinds, so that scraping several processes adds up:
//! - **What this process did**: counters that only go up and histograms (job runs, delivery
//!   attempts, HTTP requests). Each process counts its own; sum them across instances.
//! - **What the database holds**: gauges (queue depth, oldest pending job, outbox lag, manual
//!   review, live workers) and the pruned-rows counter, set from the database when the API's
//!   `/metrics` is scraped. Every API process reports the same values: take `max` across
//!   instances, never `sum` (`docs/prometheus-alerts.yml` does).
//!
//! `hilt worker` serves its own `/metrics` on `HILT_METRICS_LISTEN` when that is set; `hilt serve`
//! and `hilt api` report through the API's `/metrics`.

use std::{net::SocketAddr, sync::OnceLock, time::Duration};

use metrics::{Unit, counter, describe_counter, describe_gauge, describe_histogram, histogram};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

/// Histogram bucket bounds, seconds: 1 ms to 1 min.
const SECONDS_BUCKETS: [f64; 16] = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 20.0, 30.0, 60.0];

static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();

fn builder() -> PrometheusBuilder {
    PrometheusBuilder::new()
        .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), &SECONDS_BUCKETS)
        .expect("bucket bounds are not empty")
        // Gauges are set at each scrape; one not set for two minutes (a merchant that left the
        // busiest ten, a limit key gone idle) is dropped rather than shown stale.
        .idle_timeout(metrics_util::MetricKindMask::GAUGE, Some(Duration::from_secs(120)))
}

/// This process's recorder, installed on first use; renders the text format at a scrape.
pub fn handle() -> &'static PrometheusHandle {
    HANDLE.get_or_init(|| {
        let recorder = builder().build_recorder();
        let handle = recorder.handle();
        // A recorder installed before (a worker's own listener) keeps counting; this handle
        // then renders only what it recorded, which is nothing.
        if metrics::set_global_recorder(recorder).is_ok() {
            describe();
        }
        handle
    })
}

/// Renders this process's metrics in the Prometheus text format (version 0.0.4).
pub fn render() -> String {
    let handle = handle();
    handle.run_upkeep();
    handle.render()
}

/// Serves this process's metrics at `http://{addr}/metrics` (a worker's `HILT_METRICS_LISTEN`).
/// Must run inside a tokio runtime; fails when the address cannot be bound.
pub fn serve(addr: SocketAddr) -> anyhow::Result<()> {
    builder().with_http_listener(addr).upkeep_timeout(Duration::from_secs(5)).install()?;
    describe();
    Ok(())
}

fn describe() {
    describe_counter!("hilt_jobs_finished_total", "Jobs finished, by queue and status (done, dead, discarded).");
    describe_counter!("hilt_job_failures_total", "Job runs that failed, by queue (retried or dead).");
    describe_histogram!("hilt_job_run_duration_seconds", Unit::Seconds, "How long a job's run took, by queue.");
    describe_counter!("hilt_delivery_attempts_total", "Provider calls of deliveries and access removals, by provider, outcome and error code.");
    describe_histogram!("hilt_delivery_attempt_duration_seconds", Unit::Seconds, "Provider call time of delivery attempts, by provider.");
    describe_histogram!("hilt_delivery_latency_seconds", Unit::Seconds, "From payment confirmed to access delivered.");
    describe_counter!("hilt_http_requests_total", "HTTP requests answered, by route, method and status.");
    describe_histogram!("hilt_http_request_duration_seconds", Unit::Seconds, "HTTP request time, by route and method.");
    describe_gauge!("hilt_queue_jobs", "Jobs in the database by queue and state (pending, scheduled, running, retrying, dead).");
    describe_gauge!("hilt_queue_oldest_pending_seconds", Unit::Seconds, "Age of the oldest due job no worker has taken yet, by queue.");
    describe_gauge!("hilt_outbox_lag_seconds", Unit::Seconds, "Age of the oldest unfinished job (pending, running or retrying) since it was written, by queue.");
    describe_gauge!("hilt_manual_review_memberships", "Memberships waiting for a person (delivery in manual review).");
    describe_gauge!("hilt_workers_live", "Workers that heartbeated in the last 30 s.");
    describe_gauge!("hilt_provider_paused", "1 while a provider's bot is paused in every worker after a burst of 401/403 answers.");
    describe_gauge!("hilt_queue_merchant_jobs", "Due and running jobs of the ten busiest merchants, by queue, merchant and state (a merchant's share of the work).");
    describe_counter!("hilt_rate_limit_deferred_total", "Jobs rescheduled for their provider slot instead of waiting in a worker, by provider.");
    describe_histogram!("hilt_provider_call_wait_seconds", Unit::Seconds, "How long provider calls waited for their rate limit slot, by provider.");
    describe_gauge!("hilt_rate_limit_fill", "How much of a provider limit's burst is booked (0 idle, 1 every call waits), by limit key.");
    describe_gauge!("hilt_rate_limit_wait_seconds", Unit::Seconds, "How long a provider call made now would wait for its slot, by limit key.");
    describe_counter!("hilt_pruned_rows_total", "Rows pruned after HILT_RETENTION, by table, since the database was created.");
}

/// A job run finished with `status` (`done`, `dead`) or failed and will be retried (`retrying`).
pub fn job_run(queue: &'static str, status: &'static str, ran: Duration) {
    histogram!("hilt_job_run_duration_seconds", "queue" => queue).record(ran.as_secs_f64());
    if status != "done" {
        counter!("hilt_job_failures_total", "queue" => queue).increment(1);
    }
    if status != "retrying" {
        counter!("hilt_jobs_finished_total", "queue" => queue, "status" => status).increment(1);
    }
}

/// An operator discarded `n` jobs of `queue`.
pub fn jobs_discarded(queue: &str, n: u64) {
    counter!("hilt_jobs_finished_total", "queue" => queue.to_owned(), "status" => "discarded").increment(n);
}

/// A provider call of a delivery or access removal ended: `outcome` `succeeded` or `failed`,
/// `error_code` empty on success.
pub fn delivery_attempt(provider: &str, outcome: &str, error_code: &str, took: Duration) {
    let provider = provider.to_owned();
    counter!("hilt_delivery_attempts_total", "provider" => provider.clone(), "outcome" => outcome.to_owned(), "error_code" => error_code.to_owned())
        .increment(1);
    histogram!("hilt_delivery_attempt_duration_seconds", "provider" => provider).record(took.as_secs_f64());
}

/// A job was rescheduled for its provider slot (`provider` `telegram` or `discord`).
pub fn rate_limit_deferred(provider: &'static str) {
    counter!("hilt_rate_limit_deferred_total", "provider" => provider).increment(1);
}

/// A provider call waited `waited` for its rate limit slot.
pub fn provider_call_wait(provider: &'static str, waited: Duration) {
    histogram!("hilt_provider_call_wait_seconds", "provider" => provider).record(waited.as_secs_f64());
}

/// Access was delivered `latency` after its payment was confirmed.
pub fn delivered(latency: Duration) {
    histogram!("hilt_delivery_latency_seconds").record(latency.as_secs_f64());
}

/// The API answered a request on `route` (its pattern, e.g. `/v1/payments/{id}`).
pub fn http_request(route: &str, method: &str, status: u16, took: Duration) {
    let (route, method) = (route.to_owned(), method.to_owned());
    counter!("hilt_http_requests_total", "route" => route.clone(), "method" => method.clone(), "status" => status.to_string()).increment(1);
    histogram!("hilt_http_request_duration_seconds", "route" => route, "method" => method).record(took.as_secs_f64());
}
