//! Operations under `/v1/ops/` (JSON, the admin token) and Prometheus `/metrics`; the pages
//! at `/ops` are in `ops_pages`.

use axum::{
    Json,
    extract::State,
    http::{StatusCode, header},
    response::{IntoResponse, Response},
};
use hilt_shared::{
    clock::now_ms,
    domain::Period,
    service::{optional_text, required_text},
    service::ops::{self, AuditEntry, FailureView, GraphPoint, JobDetail, JobPage, JobView, PauseView, QueuesView, RateLimitsView, ReviewView, SearchHit, UnreachedView},
    storage::jobs::{JobFilter, JobState},
};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::List;
use crate::{
    error::ApiError,
    extract::{Admin, ApiJson, QueryPairs, Path},
    idempotency::RequestTx,
    state::AppState,
};

#[utoipa::path(get, path = "/v1/ops/queues", tag = "operations",
    responses((status = 200, body = QueuesView)), security(("admin_token" = [])))]
pub async fn list_queues(_: Admin, State(state): State<AppState>) -> Result<Json<QueuesView>, ApiError> {
    Ok(Json(ops::queues(&state.db).await?))
}

/// The job filters of `/v1/ops/queues/{queue}/jobs`, its bulk actions and the queue page:
/// `status` (one of [`JobState`]'s names), `merchant_id`, `provider` (`telegram`, `discord`),
/// `error_code` (the last error starts with it), `since` and `until` (RFC 3339, or a span back
/// from now such as `15m`, `1h`, `7d`). 422 for a bad value.
pub fn job_filter(query: &[(String, String)]) -> Result<JobFilter, ApiError> {
    let get = |name: &str| query.iter().rev().find(|(k, v)| k == name && !v.trim().is_empty()).map(|(_, v)| v.trim().to_owned());
    let states = match get("status") {
        None => Vec::new(),
        Some(s) => vec![JobState::parse(&s).ok_or_else(|| ApiError::validation("status", &format!("must be one of {}", JobState::names())))?],
    };
    let provider = get("provider");
    if provider.as_deref().is_some_and(|p| !["telegram", "discord"].contains(&p)) {
        return Err(ApiError::validation("provider", "must be telegram or discord"));
    }
    let text = |field: &str| -> Result<Option<String>, ApiError> {
        let given = query.iter().rev().find(|(k, _)| k == field).map(|(_, v)| v.as_str());
        Ok(optional_text(field, given, 200)?)
    };
    let (merchant_id, error_code) = (text("merchant_id")?, text("error_code")?);
    let time = |field: &str| -> Result<Option<i64>, ApiError> {
        let Some(value) = get(field) else { return Ok(None) };
        if let Ok(at) = chrono::DateTime::parse_from_rfc3339(&value) {
            return Ok(Some(at.timestamp_millis()));
        }
        let span: Period = value.parse().map_err(|_| ApiError::validation(field, "must be an RFC 3339 time or a span back from now such as 15m, 1h or 7d"))?;
        Ok(Some(now_ms() - span.as_millis()))
    };
    Ok(JobFilter { states, merchant_id, provider, error_code, since: time("since")?, until: time("until")? })
}

/// A queue's jobs, newest first, filtered and paged, with how many match in each state.
#[utoipa::path(get, path = "/v1/ops/queues/{queue}/jobs", tag = "operations",
    params(("queue" = String, Path), ("status" = Option<String>, Query, description = "pending, scheduled, running, retrying, done, dead or discarded"),
        ("merchant_id" = Option<String>, Query), ("provider" = Option<String>, Query, description = "telegram or discord"),
        ("error_code" = Option<String>, Query, description = "the last error starts with this"),
        ("since" = Option<String>, Query, description = "RFC 3339, or a span back from now: 15m, 1h, 7d"),
        ("until" = Option<String>, Query, description = "RFC 3339, or a span back from now"),
        ("limit" = Option<i64>, Query), ("offset" = Option<i64>, Query)),
    responses((status = 200, body = JobPage)), security(("admin_token" = [])))]
pub async fn list_jobs(
    _: Admin,
    State(state): State<AppState>,
    Path(queue): Path<String>,
    QueryPairs(query): QueryPairs,
) -> Result<Json<JobPage>, ApiError> {
    let filter = job_filter(&query)?;
    let page = crate::extract::Page::from_query(&query)?;
    Ok(Json(ops::list_jobs(&state.db, &queue, &filter, page.limit, page.offset).await?))
}

/// Which jobs of a queue a bulk action takes: the filters of the job list (every field optional).
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BulkFilter {
    /// One of `pending`, `scheduled`, `running`, `retrying`, `done`, `dead`, `discarded`.
    pub status: Option<String>,
    pub merchant_id: Option<String>,
    /// `telegram` or `discord`.
    pub provider: Option<String>,
    /// The last error starts with this.
    pub error_code: Option<String>,
    /// RFC 3339, or a span back from now (`1h`).
    pub since: Option<String>,
    pub until: Option<String>,
}

impl BulkFilter {
    pub fn pairs(&self) -> Vec<(String, String)> {
        [("status", &self.status), ("merchant_id", &self.merchant_id), ("provider", &self.provider), ("error_code", &self.error_code), ("since", &self.since), ("until", &self.until)]
            .into_iter()
            .filter_map(|(k, v)| v.clone().map(|v| (k.to_owned(), v)))
            .collect()
    }
}

#[derive(Serialize, ToSchema)]
pub struct BulkResult {
    /// Jobs the action changed (those in a state it can take).
    pub count: u64,
}

/// Runs now every job of the queue matching the filter that is not running or done.
#[utoipa::path(post, path = "/v1/ops/queues/{queue}/jobs/retry", tag = "operations", params(("queue" = String, Path)),
    request_body = BulkFilter, responses((status = 200, body = BulkResult), (status = 404)), security(("admin_token" = [])))]
pub async fn bulk_retry(_: Admin, actor: Actor, Path(queue): Path<String>, mut tx: RequestTx, ApiJson(body): ApiJson<BulkFilter>) -> Result<Response, ApiError> {
    let count = bulk(&actor, &mut tx, &queue, &body.pairs(), true).await?;
    tx.commit(StatusCode::OK, &BulkResult { count }).await
}

/// Discards every job of the queue matching the filter that is waiting or dead.
#[utoipa::path(post, path = "/v1/ops/queues/{queue}/jobs/discard", tag = "operations", params(("queue" = String, Path)),
    request_body = BulkFilter, responses((status = 200, body = BulkResult), (status = 404)), security(("admin_token" = [])))]
pub async fn bulk_discard(_: Admin, actor: Actor, Path(queue): Path<String>, mut tx: RequestTx, ApiJson(body): ApiJson<BulkFilter>) -> Result<Response, ApiError> {
    let count = bulk(&actor, &mut tx, &queue, &body.pairs(), false).await?;
    tx.commit(StatusCode::OK, &BulkResult { count }).await
}

/// A bulk retry or discard, written to the audit log with its filter and count.
pub async fn bulk(actor: &Actor, tx: &mut RequestTx, queue: &str, query: &[(String, String)], retry: bool) -> Result<u64, ApiError> {
    let filter = job_filter(query)?;
    let count = ops::act_on_jobs(tx, queue, &filter, retry).await?;
    let described: Vec<String> = query.iter().map(|(k, v)| format!("{k}={v}")).collect();
    let target = format!("{queue} [{}] ({count} jobs)", if described.is_empty() { "all".to_owned() } else { described.join(" ") });
    actor.record(tx, if retry { "jobs.retry" } else { "jobs.discard" }, &target).await?;
    Ok(count)
}

/// Providers whose bot is paused in every worker after a burst of 401/403 answers.
#[utoipa::path(get, path = "/v1/ops/providers", tag = "operations",
    responses((status = 200, body = Vec<PauseView>)), security(("admin_token" = [])))]
pub async fn provider_pauses(_: Admin, State(state): State<AppState>) -> Result<Json<Vec<PauseView>>, ApiError> {
    Ok(Json(ops::provider_pauses(&state.db).await?))
}

/// The provider rate limits every worker shares: the busiest keys with their wait (ms) and fill
/// (0–1 of the burst booked), and how many jobs wait for a slot.
#[utoipa::path(get, path = "/v1/ops/rate-limits", tag = "operations",
    responses((status = 200, body = RateLimitsView)), security(("admin_token" = [])))]
pub async fn rate_limits(_: Admin, State(state): State<AppState>) -> Result<Json<RateLimitsView>, ApiError> {
    Ok(Json(ops::rate_limits(&state.db, &state.rate_limits).await?))
}

/// Ends a provider's pause at once: every worker calls it again within a second and the jobs
/// that waited for it run now. 404 when it is not paused.
#[utoipa::path(post, path = "/v1/ops/providers/{provider}/resume", tag = "operations", params(("provider" = String, Path)),
    responses((status = 204), (status = 404)), security(("admin_token" = [])))]
pub async fn resume_provider(_: Admin, actor: Actor, Path(provider): Path<String>, mut tx: RequestTx) -> Result<Response, ApiError> {
    ops::resume_provider(&mut tx, &provider).await?;
    actor.record(&mut tx, "provider.resume", &provider).await?;
    tx.commit_empty(StatusCode::NO_CONTENT).await
}

/// A queue's last hour, minute by minute: runs done and failed, p50 and p95 run time.
#[utoipa::path(get, path = "/v1/ops/queues/{queue}/graph", tag = "operations", params(("queue" = String, Path)),
    responses((status = 200, body = Vec<GraphPoint>), (status = 404)), security(("admin_token" = [])))]
pub async fn queue_graph(_: Admin, State(state): State<AppState>, Path(queue): Path<String>) -> Result<Json<Vec<GraphPoint>>, ApiError> {
    Ok(Json(ops::queue_graph(&state.db, &queue).await?))
}

/// Finds a job, membership, payment, ticket or attempt by id, or a buyer's memberships by
/// handle or platform user id.
#[utoipa::path(get, path = "/v1/ops/search", tag = "operations", params(("q" = String, Query)),
    responses((status = 200, body = Vec<SearchHit>)), security(("admin_token" = [])))]
pub async fn search(_: Admin, State(state): State<AppState>, QueryPairs(query): QueryPairs) -> Result<Json<Vec<SearchHit>>, ApiError> {
    let q = required_text("q", query.iter().find(|(k, _)| k == "q").map(|(_, v)| v.as_str()).unwrap_or_default(), 200)?;
    Ok(Json(ops::search(&mut *state.db.conn().await?, &q).await?))
}

#[utoipa::path(get, path = "/v1/ops/jobs/{id}", tag = "operations", params(("id" = String, Path)),
    responses((status = 200, body = JobDetail), (status = 404)), security(("admin_token" = [])))]
pub async fn get_job(_: Admin, State(state): State<AppState>, Path(id): Path<String>) -> Result<Json<JobDetail>, ApiError> {
    Ok(Json(ops::job(&mut *state.db.conn().await?, &id).await?))
}

/// Run a waiting, failed or dead job now.
#[utoipa::path(post, path = "/v1/ops/jobs/{id}/retry", tag = "operations", params(("id" = String, Path)),
    responses((status = 200, body = JobView), (status = 404), (status = 409)), security(("admin_token" = [])))]
pub async fn retry_job(_: Admin, actor: Actor, Path(id): Path<String>, mut tx: RequestTx) -> Result<Response, ApiError> {
    let job = ops::retry_job(&mut tx, &id).await?;
    actor.record(&mut tx, "job.retry", &id).await?;
    tx.commit(StatusCode::OK, &job).await
}

/// Drop a waiting, failed or dead job.
#[utoipa::path(post, path = "/v1/ops/jobs/{id}/discard", tag = "operations", params(("id" = String, Path)),
    responses((status = 200, body = JobView), (status = 404), (status = 409)), security(("admin_token" = [])))]
pub async fn discard_job(_: Admin, actor: Actor, Path(id): Path<String>, mut tx: RequestTx) -> Result<Response, ApiError> {
    let job = ops::discard_job(&mut tx, &id).await?;
    actor.record(&mut tx, "job.discard", &id).await?;
    tx.commit(StatusCode::OK, &job).await
}

/// Stop handing a queue's jobs to workers (running jobs finish).
#[utoipa::path(post, path = "/v1/ops/queues/{queue}/pause", tag = "operations", params(("queue" = String, Path)),
    responses((status = 204), (status = 404)), security(("admin_token" = [])))]
pub async fn pause_queue(_: Admin, actor: Actor, Path(queue): Path<String>, mut tx: RequestTx) -> Result<Response, ApiError> {
    ops::set_paused(&mut tx, &queue, true).await?;
    actor.record(&mut tx, "queue.pause", &queue).await?;
    tx.commit_empty(StatusCode::NO_CONTENT).await
}

#[utoipa::path(post, path = "/v1/ops/queues/{queue}/resume", tag = "operations", params(("queue" = String, Path)),
    responses((status = 204), (status = 404)), security(("admin_token" = [])))]
pub async fn resume_queue(_: Admin, actor: Actor, Path(queue): Path<String>, mut tx: RequestTx) -> Result<Response, ApiError> {
    ops::set_paused(&mut tx, &queue, false).await?;
    actor.record(&mut tx, "queue.resume", &queue).await?;
    tx.commit_empty(StatusCode::NO_CONTENT).await
}

/// Every operations action (pause, resume, retry, discard) from the dashboard or this API,
/// newest first (to the millisecond): who, when, what and from where.
#[utoipa::path(get, path = "/v1/ops/audit", tag = "operations",
    params(("limit" = Option<i64>, Query), ("offset" = Option<i64>, Query)),
    responses((status = 200, body = List<AuditEntry>)), security(("admin_token" = [])))]
pub async fn audit(_: Admin, State(state): State<AppState>, QueryPairs(query): QueryPairs) -> Result<Json<List<AuditEntry>>, ApiError> {
    let page = crate::extract::Page::from_query(&query)?;
    let (data, total) = ops::audit_log(&state.db, page.limit, page.offset).await?;
    Ok(Json(List { data, total, limit: page.limit, offset: page.offset }))
}

#[derive(Serialize, ToSchema)]
pub struct Attention {
    /// The latest failed delivery attempts, newest first.
    pub recent_failures: Vec<FailureView>,
    /// Memberships waiting for a person.
    pub manual_review: Vec<ReviewView>,
    /// Buyers a renewal reminder did not reach.
    pub unreached_buyers: Vec<UnreachedView>,
}

#[utoipa::path(get, path = "/v1/ops/attention", tag = "operations",
    responses((status = 200, body = Attention)), security(("admin_token" = [])))]
pub async fn attention(_: Admin, State(state): State<AppState>) -> Result<Json<Attention>, ApiError> {
    Ok(Json(Attention {
        recent_failures: ops::recent_failures(&state.db, 50).await?,
        manual_review: ops::manual_review(&state.db, 100).await?,
        unreached_buyers: ops::unreached_buyers(&state.db, 100).await?,
    }))
}

/// Prometheus text format (0.0.4): the database-wide gauges (queue depth by state, oldest
/// pending job, outbox lag, manual review, live workers; the same from every API process, so
/// take `max` across instances) and this process's counters and histograms (jobs finished,
/// job failures, delivery attempts by provider and error code, HTTP requests, run and
/// confirm → delivered times). See `docs/OPERATIONS.md`.
#[utoipa::path(get, path = "/metrics", tag = "operations", responses((status = 200, content_type = "text/plain")),
    security(("admin_token" = [])))]
pub async fn metrics(_: Admin, State(state): State<AppState>) -> Result<Response, ApiError> {
    let text = ops::prometheus(&state.db, &state.rate_limits).await?;
    Ok(([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], text).into_response())
}

/// Who takes an operations action and from where, for the audit log: a fingerprint of the
/// admin credential (never the credential), the client's address, dashboard or API.
pub struct Actor {
    who: String,
    from: String,
}

impl axum::extract::FromRequestParts<AppState> for Actor {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut axum::http::request::Parts, _: &AppState) -> Result<Self, Self::Rejection> {
        use sha2::Digest;
        let credential = parts.headers.get(header::AUTHORIZATION).map(|v| v.as_bytes()).unwrap_or_default();
        let fingerprint = hex::encode(&sha2::Sha256::digest(credential)[..4]);
        let address = parts
            .extensions
            .get::<axum::extract::ConnectInfo<std::net::SocketAddr>>()
            .map_or_else(|| "an unknown address".to_owned(), |c| c.0.ip().to_string());
        let via = if parts.uri.path().starts_with("/ops/") { "dashboard" } else { "API" };
        Ok(Actor { who: format!("admin credential {fingerprint}"), from: format!("{address} via the {via}") })
    }
}

impl Actor {
    pub async fn record(&self, tx: &mut RequestTx, action: &str, target: &str) -> Result<(), ApiError> {
        Ok(ops::record_action(tx, &self.who, action, target, &self.from).await?)
    }
}

