//! Operations: the queue dashboard at `/ops` (server-rendered HTML, no external assets, opens
//! in a browser with the admin token as the Basic password), its JSON under `/v1/ops/`, and
//! Prometheus `/metrics`.

use axum::{
    Json,
    extract::State,
    http::{StatusCode, header},
    response::{Html, IntoResponse, Redirect, Response},
};
use hilt_shared::{
    queue::Queue,
    storage::jobs::JobStatus,
    service::ops::{self, AuditEntry, FailureView, JobDetail, JobView, QueuesView, ReviewView, UnreachedView},
};
use serde::Serialize;
use utoipa::ToSchema;

use super::List;
use crate::{
    error::ApiError,
    extract::{Admin, QueryPairs, Path},
    idempotency::RequestTx,
    state::AppState,
};

#[utoipa::path(get, path = "/v1/ops/queues", tag = "operations",
    responses((status = 200, body = QueuesView)), security(("admin_token" = [])))]
pub async fn list_queues(_: Admin, State(state): State<AppState>) -> Result<Json<QueuesView>, ApiError> {
    Ok(Json(ops::queues(&state.db).await?))
}

#[derive(Serialize, ToSchema)]
pub struct JobList {
    pub data: Vec<JobView>,
}

/// Recent jobs of a queue; `status` narrows to one state.
#[utoipa::path(get, path = "/v1/ops/queues/{queue}/jobs", tag = "operations",
    params(("queue" = String, Path), ("status" = Option<String>, Query), ("limit" = Option<i64>, Query)),
    responses((status = 200, body = JobList)), security(("admin_token" = [])))]
pub async fn list_jobs(
    _: Admin,
    State(state): State<AppState>,
    Path(queue): Path<String>,
    QueryPairs(query): QueryPairs,
) -> Result<Json<JobList>, ApiError> {
    if !Queue::ALL.iter().any(|q| q.as_str() == queue) {
        return Err(ApiError::NotFound);
    }
    let status = match query.iter().find(|(k, _)| k == "status") {
        None => None,
        Some((_, s)) => Some(JobStatus::parse(s).ok_or_else(|| ApiError::validation("status", "must be queued, running, done, dead or discarded"))?),
    };
    let page = crate::extract::Page::from_query(&query)?;
    Ok(Json(JobList { data: ops::list_jobs(&state.db, &queue, status, page.limit).await? }))
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

/// Prometheus text format: job counts by queue and outcome, queue depth, delivery outcomes by
/// provider and error code, attempt latency histograms.
#[utoipa::path(get, path = "/metrics", tag = "operations", responses((status = 200, content_type = "text/plain")),
    security(("admin_token" = [])))]
pub async fn metrics(_: Admin, State(state): State<AppState>) -> Result<Response, ApiError> {
    let text = ops::prometheus(&state.db).await?;
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
    async fn record(&self, tx: &mut RequestTx, action: &str, target: &str) -> Result<(), ApiError> {
        Ok(ops::record_action(tx, &self.who, action, target, &self.from).await?)
    }
}

/// The admin check for pages: a browser gets a Basic prompt instead of JSON.
pub struct PageAdmin;

impl axum::extract::FromRequestParts<AppState> for PageAdmin {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut axum::http::request::Parts, state: &AppState) -> Result<Self, Self::Rejection> {
        match Admin::from_request_parts(parts, state).await {
            Ok(Admin) => Ok(PageAdmin),
            Err(e) => {
                let mut response = e.into_response();
                response.headers_mut().insert(
                    header::WWW_AUTHENTICATE,
                    header::HeaderValue::from_static("Basic realm=\"Hilt operations\", charset=\"UTF-8\""),
                );
                Err(response)
            }
        }
    }
}

/// A state-changing form post from an /ops page. Basic credentials are resent by the browser to
/// any site's form, so the admin check alone is not enough (CSRF): the request must also come
/// from this origin (`Origin`, else `Referer`, matching `Host`) and carry the page's `csrf`
/// token, which another site cannot read.
pub struct PageAction;

impl axum::extract::FromRequest<AppState> for PageAction {
    type Rejection = Response;

    async fn from_request(req: axum::extract::Request, state: &AppState) -> Result<Self, Self::Rejection> {
        let (mut parts, body) = req.into_parts();
        <PageAdmin as axum::extract::FromRequestParts<AppState>>::from_request_parts(&mut parts, state).await?;
        let host = parts.headers.get(header::HOST).and_then(|v| v.to_str().ok()).unwrap_or_default();
        let source = parts.headers.get(header::ORIGIN).or_else(|| parts.headers.get(header::REFERER)).and_then(|v| v.to_str().ok());
        let same_origin = source.is_some_and(|s| {
            let rest = s.strip_prefix("http://").or_else(|| s.strip_prefix("https://")).unwrap_or_default();
            !host.is_empty() && rest.split('/').next() == Some(host)
        });
        if !same_origin {
            return Err(ApiError::Forbidden("operations actions are taken from this site's /ops pages only".into()).into_response());
        }
        let bytes = axum::body::to_bytes(body, 64 * 1024).await.map_err(|_| ApiError::PayloadTooLarge.into_response())?;
        let token = url_form_value(&bytes, "csrf");
        if token.as_deref() != Some(csrf_token(state).as_str()) {
            return Err(ApiError::Forbidden("the form's csrf token is missing or wrong; reload the page".into()).into_response());
        }
        Ok(PageAction)
    }
}

/// The token /ops forms carry: derived from the admin token, so it changes when that does and
/// no other site can know it.
fn csrf_token(state: &AppState) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(format!("hilt ops csrf\0{}", state.admin_token)))
}

/// One field of an `application/x-www-form-urlencoded` body (our tokens are plain hex).
fn url_form_value(body: &[u8], name: &str) -> Option<String> {
    std::str::from_utf8(body).ok()?.split('&').find_map(|pair| {
        let (key, value) = pair.split_once('=')?;
        (key == name).then(|| value.to_owned())
    })
}

/// A hidden form field with the page's csrf token.
fn csrf_field(state: &AppState) -> String {
    format!("<input type=hidden name=csrf value='{}'>", csrf_token(state))
}

/// An /ops page: no other site may frame it (clickjacking).
fn page_response(html: String) -> Response {
    (
        [(header::CONTENT_SECURITY_POLICY, "frame-ancestors 'none'"), (header::X_FRAME_OPTIONS, "DENY")],
        Html(html),
    )
        .into_response()
}

pub async fn dashboard(_: PageAdmin, State(state): State<AppState>) -> Result<Response, ApiError> {
    let queues = ops::queues(&state.db).await?;
    let failures = ops::recent_failures(&state.db, 20).await?;
    let review = ops::manual_review(&state.db, 50).await?;
    let unreached = ops::unreached_buyers(&state.db, 20).await?;
    let mut recent = Vec::new();
    for queue in Queue::ALL {
        recent.extend(ops::list_jobs(&state.db, queue.as_str(), None, 10).await?);
    }
    recent.sort_by(|a, b| b.updated_at.cmp(&a.updated_at));
    recent.truncate(25);

    let mut body = String::new();
    body.push_str(&format!("<p class=muted>Generated {} · refreshes every 5 s · {} live worker(s)</p>", esc(&queues.generated_at), queues.workers.len()));
    body.push_str("<h2>Queues</h2><table><tr><th>queue</th><th>pending</th><th>scheduled</th><th>running</th><th>failed</th><th>dead</th><th>done / 5 min</th><th>per min</th><th>avg latency</th><th>oldest waiting</th><th></th></tr>");
    let csrf = csrf_field(&state);
    for q in &queues.queues {
        let action = if q.paused { "resume" } else { "pause" };
        body.push_str(&format!(
            "<tr class='{}'><td><b>{}</b>{}</td><td>{}</td><td>{}</td><td>{}</td><td class='{}'>{}</td><td class='{}'>{}</td><td>{}</td><td>{:.1}</td><td>{}</td><td>{}</td>\
             <td><form method=post action='/ops/queues/{}/{action}'>{csrf}<button>{action}</button></form></td></tr>",
            if q.paused { "paused" } else { "" },
            esc(&q.name),
            if q.paused { " <span class=tag>paused</span>" } else { "" },
            q.pending, q.scheduled, q.running,
            if q.failed > 0 { "warn" } else { "" }, q.failed,
            if q.dead > 0 { "bad" } else { "" }, q.dead,
            q.done_last_5m, q.throughput_per_min,
            q.latency_ms_avg.map(|ms| format!("{ms:.0} ms")).unwrap_or_else(|| "–".into()),
            q.oldest_waiting_age_s.map(|s| format!("{s} s")).unwrap_or_else(|| "–".into()),
            esc(&q.name),
        ));
    }
    body.push_str("</table>");

    body.push_str(&format!("<h2>Manual review ({})</h2>", review.len()));
    if review.is_empty() {
        body.push_str("<p class=muted>Nothing waits for a person.</p>");
    } else {
        body.push_str("<table><tr><th>membership</th><th>merchant</th><th>attempts</th><th>last error</th><th>ticket</th><th>since</th></tr>");
        for r in &review {
            body.push_str(&format!(
                "<tr><td><code>{}</code></td><td><code>{}</code></td><td>{}</td><td>{}</td><td><code>{}</code></td><td>{}</td></tr>",
                esc(&r.membership_id), esc(&r.merchant_id), r.attempts,
                esc(r.last_error_code.as_deref().unwrap_or("–")), esc(r.support_ticket_id.as_deref().unwrap_or("–")), esc(&r.updated_at)
            ));
        }
        body.push_str("</table>");
    }

    body.push_str(&format!("<h2>Buyers not reached by a renewal reminder ({})</h2>", unreached.len()));
    if unreached.is_empty() {
        body.push_str("<p class=muted>Every reminder reached its buyer.</p>");
    } else {
        body.push_str("<table><tr><th>when</th><th>membership</th><th>merchant</th><th>channel</th><th>error</th><th>period end</th></tr>");
        for u in &unreached {
            body.push_str(&format!(
                "<tr><td>{}</td><td><code>{}</code></td><td><code>{}</code></td><td>{}</td><td><b>{}</b></td><td>{}</td></tr>",
                esc(&u.at), esc(&u.membership_id), esc(&u.merchant_id), esc(&u.channel),
                esc(u.error_code.as_deref().unwrap_or("")), esc(&u.period_end),
            ));
        }
        body.push_str("</table>");
    }

    body.push_str("<h2>Recent failures</h2>");
    if failures.is_empty() {
        body.push_str("<p class=muted>No failed attempts.</p>");
    } else {
        body.push_str("<table><tr><th>when</th><th>provider</th><th>error</th><th>membership</th><th>job</th></tr>");
        for f in &failures {
            body.push_str(&format!(
                "<tr><td>{}</td><td>{}</td><td><b>{}</b> {}</td><td><code>{}</code></td><td>{}</td></tr>",
                esc(f.finished_at.as_deref().unwrap_or("")), esc(&f.provider),
                esc(f.error_code.as_deref().unwrap_or("")), esc(f.error_message.as_deref().unwrap_or("")),
                esc(&f.membership_id),
                f.job_id.as_deref().map(|j| format!("<a href='/ops/jobs/{0}'>{0}</a>", esc(j))).unwrap_or_default(),
            ));
        }
        body.push_str("</table>");
    }

    body.push_str("<h2>Recent jobs</h2><table><tr><th>job</th><th>queue</th><th>status</th><th>runs</th><th>failures</th><th>last error</th><th>updated</th></tr>");
    for j in &recent {
        body.push_str(&format!(
            "<tr><td><a href='/ops/jobs/{0}'>{0}</a></td><td>{1}</td><td><span class='tag {2}'>{2}</span></td><td>{3}</td><td>{4}</td><td>{5}</td><td>{6}</td></tr>",
            esc(&j.id), esc(&j.queue), esc(&j.status), j.runs, j.failures, esc(j.last_error.as_deref().unwrap_or("")), esc(&j.updated_at)
        ));
    }
    body.push_str("</table>");
    body.push_str("<h2>Workers</h2><table><tr><th>id</th><th>concurrency</th><th>started</th><th>last heartbeat</th></tr>");
    for w in &queues.workers {
        body.push_str(&format!("<tr><td><code>{}</code></td><td>{}</td><td>{}</td><td>{}</td></tr>", esc(&w.id), w.concurrency, esc(&w.started_at), esc(&w.heartbeat_at)));
    }
    body.push_str("</table>");
    let (actions, _) = ops::audit_log(&state.db, 10, 0).await?;
    body.push_str("<h2>Recent actions</h2>");
    if actions.is_empty() {
        body.push_str("<p class=muted>No operations action yet.</p>");
    } else {
        body.push_str("<table><tr><th>when</th><th>action</th><th>target</th><th>who</th><th>from</th></tr>");
        for a in &actions {
            body.push_str(&format!(
                "<tr><td>{}</td><td>{}</td><td><code>{}</code></td><td>{}</td><td>{}</td></tr>",
                esc(&a.at), esc(&a.action), esc(&a.target), esc(&a.actor), esc(&a.source)
            ));
        }
        body.push_str("</table>");
    }
    Ok(page_response(page("Hilt operations", &body, true)))
}

pub async fn job_page(_: PageAdmin, State(state): State<AppState>, Path(id): Path<String>) -> Result<Response, ApiError> {
    let d = ops::job(&mut *state.db.conn().await?, &id).await?;
    let j = &d.job;
    let mut body = format!(
        "<p><a href='/ops'>← all queues</a></p><table>\
         <tr><th>job</th><td><code>{id}</code></td></tr><tr><th>queue</th><td>{queue}</td></tr>\
         <tr><th>status</th><td><span class='tag {status}'>{status}</span></td></tr>\
         <tr><th>membership</th><td><code>{membership}</code></td></tr><tr><th>run at</th><td>{run_at}</td></tr>\
         <tr><th>runs / failures</th><td>{runs} / {failures}</td></tr><tr><th>last error</th><td>{error}</td></tr>\
         <tr><th>held by</th><td>{held}</td></tr><tr><th>payload</th><td><code>{payload}</code></td></tr></table>\
         <form method=post action='/ops/jobs/{id}/retry' style='display:inline'>{csrf}<button>retry now</button></form> \
         <form method=post action='/ops/jobs/{id}/discard' style='display:inline'>{csrf}<button>discard</button></form>",
        id = esc(&j.id),
        queue = esc(&j.queue),
        status = esc(&j.status),
        membership = esc(j.membership_id.as_deref().unwrap_or("–")),
        run_at = esc(&j.run_at),
        runs = j.runs,
        failures = j.failures,
        error = esc(j.last_error.as_deref().unwrap_or("–")),
        held = esc(j.locked_by.as_deref().unwrap_or("–")),
        payload = esc(&j.payload.to_string()),
        csrf = csrf_field(&state),
    );
    body.push_str("<h2>Attempts</h2><table><tr><th>#</th><th>trigger</th><th>provider</th><th>outcome</th><th>error</th><th>invite link</th><th>worker</th><th>duration</th><th>started</th></tr>");
    for a in &d.attempts {
        // Which link an attempt handed out, and whether it still admits anyone.
        let link = match (&a.invite_link, &a.invite_link_revoked_at) {
            (Some(link), None) => format!("<code>{}</code> live", esc(link)),
            (Some(link), Some(at)) => format!("<code>{}</code> revoked {}", esc(link), esc(at)),
            (None, _) => String::new(),
        };
        body.push_str(&format!(
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{link}</td><td><code>{}</code></td><td>{}</td><td>{}</td></tr>",
            a.number, esc(&a.trigger), esc(&a.provider), esc(a.outcome.as_deref().unwrap_or("running")),
            a.error.as_ref().map(|e| format!("<b>{}</b> {}", esc(&e.code), esc(&e.message))).unwrap_or_default(),
            esc(&a.worker_id), a.duration_ms.map(|d| format!("{d} ms")).unwrap_or_default(), esc(&a.started_at)
        ));
    }
    body.push_str("</table>");
    Ok(page_response(page(&format!("Job {}", j.id), &body, false)))
}

/// Form actions of the page: do it, then back to the page.
pub async fn page_retry(actor: Actor, Path(id): Path<String>, mut tx: RequestTx, _: PageAction) -> Result<Redirect, ApiError> {
    ops::retry_job(&mut tx, &id).await?;
    actor.record(&mut tx, "job.retry", &id).await?;
    tx.commit_form().await?;
    Ok(Redirect::to(&format!("/ops/jobs/{id}")))
}

pub async fn page_discard(actor: Actor, Path(id): Path<String>, mut tx: RequestTx, _: PageAction) -> Result<Redirect, ApiError> {
    ops::discard_job(&mut tx, &id).await?;
    actor.record(&mut tx, "job.discard", &id).await?;
    tx.commit_form().await?;
    Ok(Redirect::to(&format!("/ops/jobs/{id}")))
}

pub async fn page_queue_action(
    actor: Actor,
    Path((queue, action)): Path<(String, String)>,
    mut tx: RequestTx,
    _: PageAction,
) -> Result<Redirect, ApiError> {
    match action.as_str() {
        "pause" => ops::set_paused(&mut tx, &queue, true).await?,
        "resume" => ops::set_paused(&mut tx, &queue, false).await?,
        _ => return Err(ApiError::NotFound),
    }
    actor.record(&mut tx, &format!("queue.{action}"), &queue).await?;
    tx.commit_form().await?;
    Ok(Redirect::to("/ops"))
}

fn esc(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;").replace('\'', "&#39;")
}

fn page(title: &str, body: &str, refresh: bool) -> String {
    format!(
        "<!doctype html><html lang=en><head><meta charset=utf-8><title>{}</title>{}\
         <meta name=viewport content='width=device-width, initial-scale=1'><style>\
         body{{font:14px/1.4 system-ui,sans-serif;margin:1.5rem;color:#1d2330;background:#f7f8fa}}\
         h1{{font-size:1.3rem}} h2{{font-size:1.05rem;margin-top:1.6rem}}\
         table{{border-collapse:collapse;background:#fff;box-shadow:0 1px 2px #0001;width:100%}}\
         th,td{{padding:.35rem .6rem;border-bottom:1px solid #e6e8ec;text-align:left;vertical-align:top}}\
         th{{background:#eef0f4;font-weight:600}} code{{font-size:12px}} .muted{{color:#6b7280}}\
         .warn{{color:#b45309;font-weight:600}} .bad{{color:#b91c1c;font-weight:600}} tr.paused{{background:#fff7ed}}\
         .tag{{display:inline-block;padding:0 .4rem;border-radius:.6rem;background:#e5e7eb;font-size:12px}}\
         .tag.dead{{background:#fee2e2}} .tag.running{{background:#dbeafe}} .tag.done{{background:#dcfce7}}\
         button{{font:inherit;padding:.1rem .6rem;cursor:pointer}}</style></head>\
         <body><h1>{}</h1>{}</body></html>",
        esc(title),
        if refresh { "<meta http-equiv=refresh content=5>" } else { "" },
        esc(title),
        body
    )
}
