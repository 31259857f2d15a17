//! The operations console at `/ops`: server-rendered pages (maud), no external assets, opened in
//! a browser with the admin token as the Basic password. Overview, a triage page per queue
//! (filters, pages, bulk retry and discard with a confirmation that states the count), job
//! and membership timelines with their actions, and search by any id or buyer. Every action is
//! a same-origin form post with the page's csrf token, is written to the audit log, and is
//! answered with a flash message on the page it returns to.

mod ui;

use axum::{
    extract::State,
    http::{HeaderMap, HeaderValue, header},
    response::{IntoResponse, Redirect, Response},
};
use base64::Engine;
use hilt_shared::{
    service::{delivery, ops},
    storage::jobs::JobState,
};
use maud::{Markup, html};
use ui::{Flash, action_button, code, fields, table, tag, time, time_opt};

use super::ops::{Actor, bulk, job_filter};
use crate::{
    error::ApiError,
    extract::{Admin, Path, QueryPairs},
    idempotency::RequestTx,
    state::AppState,
};

const FLASH_COOKIE: &str = "hilt_flash";
/// Jobs per page of a queue.
const PAGE_SIZE: i64 = 50;

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
                    HeaderValue::from_static("Basic realm=\"Hilt operations\", charset=\"UTF-8\""),
                );
                Err(response)
            }
        }
    }
}

/// A state-changing form post from an /ops page, with its fields. Basic credentials are resent
/// by the browser to any site's form, so the admin check alone is not enough (CSRF): the
/// request must also come from this origin (`Origin`, else `Referer`, matching `Host`) and
/// carry the page's `csrf` token, which another site cannot read. 403 otherwise.
pub struct PageAction(Vec<(String, String)>);

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
        let fields = std::str::from_utf8(&bytes).ok().and_then(|raw| crate::extract::parse_pairs(raw).ok()).unwrap_or_default();
        if !fields.iter().any(|(k, v)| k == "csrf" && *v == csrf_token(state)) {
            return Err(ApiError::Forbidden("the form's csrf token is missing or wrong; reload the page".into()).into_response());
        }
        Ok(PageAction(fields.into_iter().filter(|(k, _)| k != "csrf").collect()))
    }
}

/// The token /ops forms carry: derived from the admin token, so it changes when that does and
/// no other site can know it.
fn csrf_token(state: &AppState) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(format!("hilt ops csrf\0{}", state.admin_token)))
}

/// The flash message a previous action left for this page, if any.
fn take_flash(headers: &HeaderMap) -> Option<Flash> {
    let cookies = headers.get_all(header::COOKIE).into_iter().filter_map(|v| v.to_str().ok());
    let value = cookies.flat_map(|c| c.split(';')).find_map(|c| c.trim().strip_prefix(FLASH_COOKIE)?.strip_prefix('=').map(str::to_owned))?;
    let text = String::from_utf8(base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(value).ok()?).ok()?;
    match text.split_once(':') {
        Some(("ok", message)) => Some(Flash::Done(message.to_owned())),
        Some((_, message)) => Some(Flash::Failed(message.to_owned())),
        None => None,
    }
}

/// An /ops page: no other site may frame it (clickjacking); a flash message shown is cleared.
fn page_response(markup: Markup, shown_flash: bool) -> Response {
    let mut response = (
        [(header::CONTENT_SECURITY_POLICY, "frame-ancestors 'none'"), (header::X_FRAME_OPTIONS, "DENY")],
        axum::response::Html(markup.into_string()),
    )
        .into_response();
    if shown_flash {
        response.headers_mut().insert(header::SET_COOKIE, HeaderValue::from_static("hilt_flash=; Path=/ops; Max-Age=0; HttpOnly; SameSite=Strict"));
    }
    response
}

/// Back to `to` after an action, with what it did.
fn flash_redirect(to: &str, flash: Flash) -> Response {
    let text = match flash {
        Flash::Done(m) => format!("ok:{m}"),
        Flash::Failed(m) => format!("failed:{m}"),
    };
    let cookie = format!("{FLASH_COOKIE}={}; Path=/ops; Max-Age=60; HttpOnly; SameSite=Strict", base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(text));
    let mut response = Redirect::to(to).into_response();
    if let Ok(value) = HeaderValue::from_str(&cookie) {
        response.headers_mut().insert(header::SET_COOKIE, value);
    }
    response
}

/// An action's result as a flash: done, or refused for a reason the operator can act on
/// (404, 409, 422); other errors stay errors.
fn outcome(to: &str, done: Result<String, ApiError>) -> Result<Response, ApiError> {
    match done {
        Ok(message) => Ok(flash_redirect(to, Flash::Done(message))),
        Err(ApiError::Conflict(m)) => Ok(flash_redirect(to, Flash::Failed(m))),
        Err(ApiError::NotFound) => Ok(flash_redirect(to, Flash::Failed("not found: it may have been pruned".into()))),
        Err(ApiError::Validation { message, param }) => {
            Ok(flash_redirect(to, Flash::Failed(format!("{}: {message}", param.unwrap_or_default()))))
        }
        Err(e) => Err(e),
    }
}

fn query_string(pairs: &[(String, String)]) -> String {
    let mut out = String::new();
    for (k, v) in pairs {
        let sep = if out.is_empty() { '?' } else { '&' };
        out.push_str(&format!("{sep}{}={}", urlencode(k), urlencode(v)));
    }
    out
}

fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// The filter fields of the queue page, as given (empty ones dropped).
fn filter_pairs(query: &[(String, String)]) -> Vec<(String, String)> {
    const FIELDS: [&str; 6] = ["status", "merchant_id", "provider", "error_code", "since", "until"];
    query.iter().filter(|(k, v)| FIELDS.contains(&k.as_str()) && !v.trim().is_empty()).cloned().collect()
}

pub async fn overview(_: PageAdmin, State(state): State<AppState>, headers: HeaderMap) -> Result<Response, ApiError> {
    let queues = ops::queues(&state.db).await?;
    let failures = ops::recent_failures(&state.db, 20).await?;
    let review = ops::manual_review(&state.db, 50).await?;
    let unreached = ops::unreached_buyers(&state.db, 20).await?;
    let recent = ops::recent_jobs(&state.db, 25).await?;
    let pauses = ops::provider_pauses(&state.db).await?;
    let limits = ops::rate_limits(&state.db, &state.rate_limits).await?;
    let (actions, _) = ops::audit_log(&state.db, 10, 0).await?;
    let csrf = csrf_token(&state);
    let flash = take_flash(&headers);
    let live = html! {
        p.muted { (queues.workers.len()) " live worker(s) · generated " (time(&queues.generated_at)) }
        h2 { "Queues" }
        (table(
            &["queue", "pending", "scheduled", "running", "retrying", "dead", "done / 5 min", "failed / 5 min", "p95 run time", "oldest pending", ""],
            queues.queues.iter().map(|q| {
                let action = if q.paused { "resume" } else { "pause" };
                vec![
                    html! { a href={ "/ops/queues/" (q.name) } { b { (q.name) } } @if q.paused { " " (tag("paused")) } },
                    html! { (q.pending) },
                    html! { (q.scheduled) },
                    html! { (q.running) },
                    html! { a.warn[q.retrying > 0] href={ "/ops/queues/" (q.name) "?status=retrying" } { (q.retrying) } },
                    html! { a.bad[q.dead > 0] href={ "/ops/queues/" (q.name) "?status=dead" } { (q.dead) } },
                    html! { (q.done_last_5m) },
                    html! { span.bad[q.failed_last_5m > 0] { (q.failed_last_5m) } },
                    html! { (q.run_ms_p95.map(|ms| format!("{ms:.0} ms")).unwrap_or_else(|| "–".into())) },
                    html! { (q.oldest_pending_age_s.map(|s| format!("{s} s")).unwrap_or_else(|| "–".into())) },
                    action_button(&format!("/ops/queues/{}/{action}", q.name), &csrf, action, &format!("{action} the {} queue?", q.name)),
                ]
            }),
        ))
        @if !pauses.is_empty() {
            h2.bad { "Paused providers (" (pauses.len()) ")" }
            (table(&["provider", "state", "until", "why", "opened by", ""], pauses.iter().map(|p| vec![
                html! { b { (p.provider) } },
                tag(&p.state),
                time(&p.paused_until),
                html! { (p.reason) },
                code(&p.opened_by),
                action_button(&format!("/ops/providers/{}/resume", p.provider), &csrf, "resume",
                    &format!("Call {} again now in every worker?", p.provider)),
            ])))
        }
        h2 { "Merchants' share of the work" }
        @if queues.merchants.is_empty() {
            p.muted { "No job is due or running." }
        } @else {
            (table(&["queue", "merchant", "due", "running", "share"], queues.merchants.iter().map(|m| vec![
                html! { (m.queue) },
                code(m.merchant_id.as_deref().unwrap_or("–")),
                html! { (m.due) },
                html! { (m.running) },
                html! { span.warn[m.share >= 0.8] { (format!("{:.0} %", m.share * 100.0)) } },
            ])))
        }
        h2 { "Provider rate limits" }
        p.muted {
            "Slots in " (limits.store) "; " (limits.jobs_waiting) " job(s) rescheduled for a slot"
            @if let Some(e) = &limits.error { " · " span.bad { "store unreadable: " (e) } }
        }
        @if limits.keys.is_empty() {
            p.muted { "No provider calls in the last minute." }
        } @else {
            (table(&["limit", "fill", "wait"], limits.keys.iter().take(10).map(|k| vec![
                code(&k.key),
                html! { span.warn[k.fill >= 0.8] { (format!("{:.0} %", k.fill * 100.0)) } },
                html! { (format!("{} ms", k.wait_ms)) },
            ])))
        }
        h2 { "Manual review (" (review.len()) ")" }
        @if review.is_empty() {
            p.muted { "Nothing waits for a person." }
        } @else {
            (table(&["membership", "merchant", "attempts", "last error", "ticket", "since"], review.iter().map(|r| vec![
                html! { a href={ "/ops/memberships/" (r.membership_id) } { code { (r.membership_id) } } },
                code(&r.merchant_id),
                html! { (r.attempts) },
                html! { b { (r.last_error_code.as_deref().unwrap_or("–")) } },
                code(r.support_ticket_id.as_deref().unwrap_or("–")),
                time(&r.updated_at),
            ])))
        }
        h2 { "Buyers not reached by a renewal reminder (" (unreached.len()) ")" }
        @if unreached.is_empty() {
            p.muted { "Every reminder reached its buyer." }
        } @else {
            (table(&["when", "membership", "merchant", "channel", "error", "period end"], unreached.iter().map(|u| vec![
                time(&u.at),
                html! { a href={ "/ops/memberships/" (u.membership_id) } { code { (u.membership_id) } } },
                code(&u.merchant_id),
                html! { (u.channel) },
                html! { b { (u.error_code.as_deref().unwrap_or("")) } },
                time(&u.period_end),
            ])))
        }
        h2 { "Recent failures" }
        @if failures.is_empty() {
            p.muted { "No failed attempts." }
        } @else {
            (table(&["when", "provider", "error", "membership", "job"], failures.iter().map(|f| vec![
                time_opt(f.finished_at.as_deref()),
                html! { (f.provider) },
                html! { b { (f.error_code.as_deref().unwrap_or("")) } " " (f.error_message.as_deref().unwrap_or("")) },
                html! { a href={ "/ops/memberships/" (f.membership_id) } { code { (f.membership_id) } } },
                html! { @if let Some(j) = &f.job_id { a href={ "/ops/jobs/" (j) } { (j) } } },
            ])))
        }
        h2 { "Recent jobs" }
        (jobs_table(&recent))
        h2 { "Workers" }
        (table(&["id", "concurrency", "started", "last heartbeat"], queues.workers.iter().map(|w| vec![
            code(&w.id), html! { (w.concurrency) }, time(&w.started_at), time(&w.heartbeat_at),
        ])))
        h2 { "Recent actions" }
        @if actions.is_empty() {
            p.muted { "No operations action yet." }
        } @else {
            (table(&["when", "action", "target", "who", "from"], actions.iter().map(|a| vec![
                time(&a.at), html! { (a.action) }, code(&a.target), html! { (a.actor) }, html! { (a.source) },
            ])))
        }
    };
    Ok(page_response(ui::layout("Overview", flash.as_ref(), html! {}, live, 5), flash.is_some()))
}

fn jobs_table(jobs: &[ops::JobView]) -> Markup {
    table(&["job", "queue", "status", "runs", "failures", "last error", "membership", "updated"], jobs.iter().map(|j| vec![
        html! { a href={ "/ops/jobs/" (j.id) } { (j.id) } },
        html! { (j.queue) },
        tag(&j.status),
        html! { (j.runs) },
        html! { (j.failures) },
        html! { (j.last_error.as_deref().unwrap_or("")) },
        html! { @if let Some(m) = &j.membership_id { a href={ "/ops/memberships/" (m) } { code { (m) } } } },
        time(&j.updated_at),
    ]))
}

/// A queue's triage page: graphs, jobs per state, filters, pages of jobs, bulk actions.
pub async fn queue_page(
    _: PageAdmin,
    State(state): State<AppState>,
    Path(queue): Path<String>,
    QueryPairs(query): QueryPairs,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let filter = job_filter(&query)?;
    let page = crate::extract::Page::from_query(&[("limit".into(), PAGE_SIZE.to_string())].into_iter().chain(query.iter().filter(|(k, _)| k == "offset").cloned()).collect::<Vec<_>>())?;
    let jobs = ops::list_jobs(&state.db, &queue, &filter, page.limit, page.offset).await?;
    let graph = ops::queue_graph(&state.db, &queue).await?;
    let given = filter_pairs(&query);
    let without_status: Vec<_> = given.iter().filter(|(k, _)| k != "status").cloned().collect();
    let value = |name: &str| given.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone()).unwrap_or_default();
    let base = format!("/ops/queues/{queue}");
    let flash = take_flash(&headers);
    let filters = html! {
        form.filters method="get" action=(base) {
            @if !value("status").is_empty() { input type="hidden" name="status" value=(value("status")); }
            label { "merchant" input name="merchant_id" value=(value("merchant_id")) size="24"; }
            label { "provider"
                select name="provider" {
                    @for p in ["", "telegram", "discord"] { option value=(p) selected[value("provider") == p] { (if p.is_empty() { "any" } else { p }) } }
                }
            }
            label { "error code" input name="error_code" value=(value("error_code")) size="16" placeholder="user_blocked_bot"; }
            label { "changed since" input name="since" value=(value("since")) size="12" placeholder="1h or RFC 3339"; }
            label { "until" input name="until" value=(value("until")) size="12"; }
            button { "Filter" }
            a href=(base) { "clear" }
        }
    };
    let shown_to = (page.offset + jobs.data.len() as i64).min(jobs.total);
    let live = html! {
        div.graphs {
            figure { (ui::runs_graph(&graph)) figcaption.muted { "Runs per minute, last hour: done (green), failed (red)" } }
            figure { (ui::run_time_graph(&graph)) figcaption.muted { "Run time, last hour: p50 (blue), p95 (orange)" } }
        }
        nav.tabs {
            a.on[value("status").is_empty()] href={ (base) (query_string(&without_status)) } { "all" }
            @for c in &jobs.by_status {
                @let mut with = without_status.clone();
                @let _ = with.push(("status".to_owned(), c.status.clone()));
                a.on[value("status") == c.status] href={ (base) (query_string(&with)) } { (c.status) " " b { (c.count) } }
            }
        }
        p {
            (jobs.total) " matching job(s)"
            @if jobs.total > 0 { "; showing " (page.offset + 1) "–" (shown_to) "." }
            " "
            @if jobs.total > 0 {
                a href={ (base) "/confirm" (query_string(&[given.clone(), vec![("action".into(), "retry".into())]].concat())) } { "Retry all matching…" }
                " · "
                a href={ (base) "/confirm" (query_string(&[given.clone(), vec![("action".into(), "discard".into())]].concat())) } { "Discard all matching…" }
            }
        }
        (jobs_table(&jobs.data))
        p {
            @if page.offset > 0 {
                a href={ (base) (query_string(&[given.clone(), vec![("offset".into(), (page.offset - PAGE_SIZE).max(0).to_string())]].concat())) } { "← newer" }
                " "
            }
            @if shown_to < jobs.total {
                a href={ (base) (query_string(&[given.clone(), vec![("offset".into(), (page.offset + PAGE_SIZE).to_string())]].concat())) } { "older →" }
            }
        }
    };
    Ok(page_response(ui::layout(&format!("Queue {queue}"), flash.as_ref(), filters, live, 5), flash.is_some()))
}

/// What a bulk action would take, stated before it is done.
pub async fn confirm_page(
    _: PageAdmin,
    State(state): State<AppState>,
    Path(queue): Path<String>,
    QueryPairs(query): QueryPairs,
) -> Result<Response, ApiError> {
    let retry = match query.iter().find(|(k, _)| k == "action").map(|(_, v)| v.as_str()) {
        Some("retry") => true,
        Some("discard") => false,
        _ => return Err(ApiError::validation("action", "must be retry or discard")),
    };
    let filter = job_filter(&query)?;
    let allowed: &[JobState] = if retry { &JobState::RETRYABLE } else { &JobState::DISCARDABLE };
    let jobs = ops::list_jobs(&state.db, &queue, &filter, 1, 0).await?;
    // What the action will take: the states it can act on, within the filter's.
    let count: i64 = jobs
        .by_status
        .iter()
        .filter(|c| JobState::parse(&c.status).is_some_and(|s| allowed.contains(&s) && (filter.states.is_empty() || filter.states.contains(&s))))
        .map(|c| c.count)
        .sum();
    let given = filter_pairs(&query);
    let verb = if retry { "Retry" } else { "Discard" };
    let described = if given.is_empty() { "every job".to_owned() } else { given.iter().map(|(k, v)| format!("{k} = {v}")).collect::<Vec<_>>().join(", ") };
    let back = format!("/ops/queues/{queue}{}", query_string(&given));
    let body = html! {
        p { "Queue " b { (queue) } ", filter: " (described) "." }
        @if count == 0 {
            p { "No matching job can be " (if retry { "retried" } else { "discarded" }) "." }
        } @else {
            p { b { (verb) " " (count) " job(s)?" } " "
                (if retry { "They run again now (running and done jobs are left alone)." } else { "They will not run (running and done jobs are left alone)." }) }
            form method="post" action={ "/ops/queues/" (queue) "/jobs/" (if retry { "retry" } else { "discard" }) } {
                input type="hidden" name="csrf" value=(csrf_token(&state));
                @for (k, v) in &given { input type="hidden" name=(k) value=(v); }
                button #confirm { (verb) " " (count) " job(s)" }
            }
        }
        p { a href=(back) { "← back to the queue" } }
    };
    Ok(page_response(ui::layout(&format!("{verb} jobs of {queue}"), None, body, html! {}, 0), false))
}

pub async fn bulk_action(
    actor: Actor,
    Path((queue, action)): Path<(String, String)>,
    mut tx: RequestTx,
    PageAction(fields): PageAction,
) -> Result<Response, ApiError> {
    let retry = match action.as_str() {
        "retry" => true,
        "discard" => false,
        _ => return Err(ApiError::NotFound),
    };
    let given = filter_pairs(&fields);
    let back = format!("/ops/queues/{queue}{}", query_string(&given));
    let done = async {
        let count = bulk(&actor, &mut tx, &queue, &given, retry).await?;
        tx.commit_form().await?;
        Ok(format!("{} {count} job(s).", if retry { "Retried" } else { "Discarded" }))
    };
    outcome(&back, done.await)
}

pub async fn job_page(_: PageAdmin, State(state): State<AppState>, Path(id): Path<String>, headers: HeaderMap) -> Result<Response, ApiError> {
    let d = ops::job(&mut *state.db.conn().await?, &id).await?;
    let j = &d.job;
    let csrf = csrf_token(&state);
    let flash = take_flash(&headers);
    let before = html! {
        p { a href={ "/ops/queues/" (j.queue) } { "← queue " (j.queue) } }
        p {
            (action_button(&format!("/ops/jobs/{}/retry", j.id), &csrf, "retry now", "Run this job again now?")) " "
            (action_button(&format!("/ops/jobs/{}/discard", j.id), &csrf, "discard", "Discard this job? It will not run."))
        }
    };
    let live = html! {
        (fields(vec![
            ("job", code(&j.id)),
            ("queue", html! { (j.queue) }),
            ("status", tag(&j.status)),
            ("membership", html! { @if let Some(m) = &j.membership_id { a href={ "/ops/memberships/" (m) } { code { (m) } } } @else { "–" } }),
            ("run at", time(&j.run_at)),
            ("runs / failures", html! { (j.runs) " / " (j.failures) }),
            ("last error", html! { (j.last_error.as_deref().unwrap_or("–")) }),
            ("held by", code(j.locked_by.as_deref().unwrap_or("–"))),
            ("payload", code(&j.payload.to_string())),
        ]))
        h2 { "Attempts" }
        (attempts_table(&d.attempts))
    };
    Ok(page_response(ui::layout(&format!("Job {}", j.id), flash.as_ref(), before, live, 3), flash.is_some()))
}

fn attempts_table(attempts: &[hilt_shared::views::AttemptView]) -> Markup {
    if attempts.is_empty() {
        return html! { p.muted { "No attempt." } };
    }
    table(&["#", "trigger", "provider", "outcome", "error", "invite link", "worker", "duration", "started"], attempts.iter().map(|a| vec![
        html! { (a.number) },
        html! { (a.trigger) },
        html! { (a.provider) },
        html! { (a.outcome.as_deref().unwrap_or("running")) },
        html! { @if let Some(e) = &a.error { b { (e.code) } " " (e.message) } },
        // Which link an attempt handed out, and whether it still admits anyone.
        html! {
            @match (&a.invite_link, &a.invite_link_revoked_at) {
                (Some(link), None) => { code { (link) } " live" },
                (Some(link), Some(at)) => { code { (link) } " revoked " (time(at)) },
                (None, _) => {},
            }
        },
        code(&a.worker_id),
        html! { (a.duration_ms.map(|d| format!("{d} ms")).unwrap_or_default()) },
        time(&a.started_at),
    ]))
}

/// A membership's timeline: the row behind a manual-review entry, with its actions.
pub async fn membership_page(_: PageAdmin, State(state): State<AppState>, Path(id): Path<String>, headers: HeaderMap) -> Result<Response, ApiError> {
    let t = ops::membership_timeline(&mut *state.db.conn().await?, &id).await?;
    let m = &t.membership;
    let csrf = csrf_token(&state);
    let flash = take_flash(&headers);
    let before = html! {
        p {
            (action_button(&format!("/ops/memberships/{}/retry-delivery", m.id), &csrf, "retry delivery", "Queue a delivery attempt for this membership now?")) " "
            (action_button(&format!("/ops/memberships/{}/ticket", m.id), &csrf, "open ticket", "Open (or reuse) this membership's delivery ticket?"))
        }
    };
    let fmt_ms = |ms: Option<i64>| ms.map(hilt_shared::clock::rfc3339);
    let live = html! {
        (fields(vec![
            ("membership", code(&m.id)),
            ("merchant", code(&m.merchant_id)),
            ("platform", html! { (m.platform) }),
            ("buyer", html! {
                (m.handle.as_deref().unwrap_or(""))
                @if let Some(u) = m.telegram_user_id { " tg:" (u) }
                @if let Some(u) = &m.discord_user_id { " discord:" (u) }
                @if let Some(e) = &m.email { " " (e) }
            }),
            ("status", html! { (m.status) }),
            ("delivery", tag(&m.delivery_status)),
            ("attempts", html! { (m.delivery_attempts) }),
            ("last error", html! { @if let Some(c) = &m.last_error_code { b { (c) } " " (m.last_error_message.as_deref().unwrap_or("")) } @else { "–" } }),
            ("next retry", time_opt(fmt_ms(m.next_retry_at).as_deref())),
            ("ticket", html! { @if let Some((id, subject, status)) = &t.ticket { code { (id) } " " (subject) " (" (status) ")" } @else { "–" } }),
        ]))
        h2 { "Attempts" }
        (attempts_table(&t.attempts))
        h2 { "Jobs" }
        (jobs_table(&t.jobs))
        h2 { "Events" }
        (table(&["event", "when"], t.events.iter().map(|(kind, at)| vec![html! { (kind) }, time(at)])))
    };
    Ok(page_response(ui::layout(&format!("Membership {}", m.id), flash.as_ref(), before, live, 3), flash.is_some()))
}

/// Search by any id (job, membership, payment, ticket, attempt) or buyer (handle, user id):
/// one hit opens its page at once.
pub async fn search_page(_: PageAdmin, State(state): State<AppState>, QueryPairs(query): QueryPairs) -> Result<Response, ApiError> {
    let q = query.iter().find(|(k, _)| k == "q").map(|(_, v)| v.trim().to_owned()).unwrap_or_default();
    let hits = if q.is_empty() || q.chars().count() > 200 { Vec::new() } else { ops::search(&mut *state.db.conn().await?, &q).await? };
    if let [hit] = hits.as_slice() {
        return Ok(Redirect::to(&hit.page).into_response());
    }
    let body = html! {
        @if hits.is_empty() {
            p { "Nothing matches " code { (q) } ". Search takes a job, membership, payment, ticket or attempt id, a buyer's @handle, or a Telegram or Discord user id." }
        } @else {
            (table(&["kind", "id", "what"], hits.iter().map(|h| vec![
                html! { (h.kind) }, html! { a href=(h.page) { code { (h.id) } } }, html! { (h.summary) },
            ])))
        }
    };
    Ok(page_response(ui::layout(&format!("Search: {q}"), None, body, html! {}, 0), false))
}

pub async fn page_retry(actor: Actor, Path(id): Path<String>, mut tx: RequestTx, _: PageAction) -> Result<Response, ApiError> {
    let done = async {
        ops::retry_job(&mut tx, &id).await?;
        actor.record(&mut tx, "job.retry", &id).await?;
        tx.commit_form().await?;
        Ok("The job runs again now.".to_owned())
    };
    outcome(&format!("/ops/jobs/{id}"), done.await)
}

pub async fn page_discard(actor: Actor, Path(id): Path<String>, mut tx: RequestTx, _: PageAction) -> Result<Response, ApiError> {
    let done = async {
        ops::discard_job(&mut tx, &id).await?;
        actor.record(&mut tx, "job.discard", &id).await?;
        tx.commit_form().await?;
        Ok("The job was discarded.".to_owned())
    };
    outcome(&format!("/ops/jobs/{id}"), done.await)
}

pub async fn page_queue_action(
    actor: Actor,
    Path((queue, action)): Path<(String, String)>,
    mut tx: RequestTx,
    _: PageAction,
) -> Result<Response, ApiError> {
    let paused = match action.as_str() {
        "pause" => true,
        "resume" => false,
        _ => return Err(ApiError::NotFound),
    };
    let done = async {
        ops::set_paused(&mut tx, &queue, paused).await?;
        actor.record(&mut tx, &format!("queue.{action}"), &queue).await?;
        tx.commit_form().await?;
        Ok(if paused { format!("Queue {queue} paused: running jobs finish, no new ones start.") } else { format!("Queue {queue} resumed.") })
    };
    outcome("/ops", done.await)
}

pub async fn page_resume_provider(actor: Actor, Path(provider): Path<String>, mut tx: RequestTx, _: PageAction) -> Result<Response, ApiError> {
    let done = async {
        let woken = ops::resume_provider(&mut tx, &provider).await?;
        actor.record(&mut tx, "provider.resume", &provider).await?;
        tx.commit_form().await?;
        Ok(format!("Calls to {provider} resume in every worker; {woken} waiting job(s) run now."))
    };
    outcome("/ops", done.await)
}

pub async fn page_retry_delivery(State(state): State<AppState>, actor: Actor, Path(id): Path<String>, mut tx: RequestTx, _: PageAction) -> Result<Response, ApiError> {
    let done = async {
        let merchant = membership_merchant(&state, &id).await?;
        let (_, job) = delivery::retry(&mut tx, &merchant, &id).await?;
        actor.record(&mut tx, "membership.retry_delivery", &id).await?;
        tx.commit_form().await?;
        Ok(format!("Delivery queued now (job {job})."))
    };
    outcome(&format!("/ops/memberships/{id}"), done.await)
}

pub async fn page_open_ticket(State(state): State<AppState>, actor: Actor, Path(id): Path<String>, mut tx: RequestTx, _: PageAction) -> Result<Response, ApiError> {
    let done = async {
        let merchant = membership_merchant(&state, &id).await?;
        let (ticket, created) = delivery::support_ticket(&mut tx, &merchant, &id, &state.config.public_base_url()).await?;
        actor.record(&mut tx, "membership.open_ticket", &id).await?;
        tx.commit_form().await?;
        Ok(if created { format!("Ticket {} opened.", ticket.id) } else { format!("Ticket {} is already open.", ticket.id) })
    };
    outcome(&format!("/ops/memberships/{id}"), done.await)
}

async fn membership_merchant(state: &AppState, id: &str) -> Result<String, ApiError> {
    let m = hilt_shared::storage::memberships::get_any(&mut *state.db.conn().await?, id).await?.ok_or(ApiError::NotFound)?;
    Ok(m.merchant_id)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_carry_filters_encoded() {
        let q = query_string(&[("error_code".into(), "http_502: a&b".into()), ("since".into(), "1h".into())]);
        assert_eq!(q, "?error_code=http_502%3A%20a%26b&since=1h");
    }

    #[test]
    fn a_flash_survives_its_cookie() {
        let response = flash_redirect("/ops", Flash::Failed("a job that runs cannot be retried".into()));
        let cookie = response.headers()[header::SET_COOKIE].to_str().expect("ascii").split(';').next().expect("value").to_owned();
        let mut headers = HeaderMap::new();
        headers.insert(header::COOKIE, HeaderValue::from_str(&format!("other=1; {cookie}")).expect("header"));
        assert!(matches!(take_flash(&headers), Some(Flash::Failed(m)) if m == "a job that runs cannot be retried"));
    }
}
