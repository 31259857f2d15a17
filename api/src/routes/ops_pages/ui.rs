//! The look of the /ops pages: one layout, tables that stack into cards on a phone, times
//! shown relative with the exact UTC time on hover, SVG graphs drawn here (no CDN, no script
//! library), and the small script that refreshes a page's live part in place.

use hilt_shared::service::ops::GraphPoint;
use maud::{DOCTYPE, Markup, PreEscaped, html};

/// What the last action did, shown once at the top of the next page.
pub enum Flash {
    Done(String),
    Failed(String),
}

/// A whole page. `live` is the part the page refreshes in place every `refresh_s` seconds
/// (0: never); forms outside it keep what the operator is typing.
pub fn layout(title: &str, flash: Option<&Flash>, before: Markup, live: Markup, refresh_s: u32) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { (title) " · Hilt operations" }
                style { (PreEscaped(CSS)) }
            }
            body data-refresh=(refresh_s) {
                header {
                    nav {
                        a href="/ops" { b { "Hilt operations" } }
                        @for q in hilt_shared::queue::Queue::ALL {
                            a href={ "/ops/queues/" (q.as_str()) } { (q.as_str()) }
                        }
                    }
                    form.search method="get" action="/ops/search" {
                        input type="search" name="q" placeholder="job, membership, payment, ticket id · @handle · user id" aria-label="Search";
                        button { "Search" }
                    }
                }
                main {
                    h1 { (title) }
                    @match flash {
                        Some(Flash::Done(text)) => p.flash.ok role="status" { (text) },
                        Some(Flash::Failed(text)) => p.flash.bad role="alert" { (text) },
                        None => {},
                    }
                    (before)
                    div #live { (live) }
                    @if refresh_s > 0 {
                        p.muted { "Refreshes every " (refresh_s) " s; last " span #updated { "at load" } "." }
                    }
                }
                script { (PreEscaped(SCRIPT)) }
            }
        }
    }
}

/// An RFC 3339 time, shown relative ("3 min ago") by the page's script, exact on hover.
pub fn time(rfc3339: &str) -> Markup {
    html! { time datetime=(rfc3339) title=(rfc3339) { (rfc3339) } }
}

pub fn time_opt(rfc3339: Option<&str>) -> Markup {
    match rfc3339 {
        Some(t) => time(t),
        None => html! { "–" },
    }
}

/// A table whose cells carry their column name, so that on a narrow screen each row stacks
/// into a card instead of scrolling sideways.
pub fn table(head: &[&str], rows: impl IntoIterator<Item = Vec<Markup>>) -> Markup {
    html! {
        table {
            thead { tr { @for h in head { th scope="col" { (h) } } } }
            tbody {
                @for row in rows {
                    tr { @for (cell, h) in row.into_iter().zip(head) { td data-label=(h) { (cell) } } }
                }
            }
        }
    }
}

/// One thing's fields, a row each: `(name, value)`.
pub fn fields(rows: Vec<(&str, Markup)>) -> Markup {
    html! {
        table.fields {
            tbody { @for (name, value) in rows { tr { th scope="row" { (name) } td { (value) } } } }
        }
    }
}

/// A job state (`dead`, `retrying`, …) as a coloured tag.
pub fn tag(name: &str) -> Markup {
    html! { span class={ "tag " (name) } { (name) } }
}

pub fn code(text: &str) -> Markup {
    html! { code { (text) } }
}

/// A form posting to `action` with the page's csrf token; `confirm` is asked before it goes.
pub fn action_button(action: &str, csrf: &str, label: &str, confirm: &str) -> Markup {
    html! {
        form.inline method="post" action=(action) data-confirm=(confirm) {
            input type="hidden" name="csrf" value=(csrf);
            button { (label) }
        }
    }
}

const WIDTH: f64 = 600.0;
const HEIGHT: f64 = 120.0;
const PAD: f64 = 28.0;

/// Runs per minute over the last hour: done (green) and failed (red), stacked.
pub fn runs_graph(points: &[GraphPoint]) -> Markup {
    let max = points.iter().map(|p| p.done + p.failed).max().unwrap_or(0).max(1) as f64;
    let step = (WIDTH - PAD) / points.len().max(1) as f64;
    let y = |v: f64| HEIGHT - PAD / 2.0 - v / max * (HEIGHT - PAD);
    html! {
        svg.graph viewBox={ "0 0 " (WIDTH) " " (HEIGHT) } role="img" aria-label="Runs per minute, last hour: done and failed" {
            (axes(max, "runs/min"))
            @for (i, p) in points.iter().enumerate() {
                @let x = PAD + i as f64 * step;
                @if p.done > 0 {
                    rect.done x=(fmt(x)) y=(fmt(y(p.done as f64))) width=(fmt(step * 0.8)) height=(fmt(y(0.0) - y(p.done as f64))) {
                        title { (p.done) " done" }
                    }
                }
                @if p.failed > 0 {
                    rect.failed x=(fmt(x)) y=(fmt(y((p.done + p.failed) as f64))) width=(fmt(step * 0.8)) height=(fmt(y(0.0) - y(p.failed as f64))) {
                        title { (p.failed) " failed" }
                    }
                }
            }
        }
    }
}

/// p50 (blue) and p95 (orange) run time per minute over the last hour, milliseconds.
pub fn run_time_graph(points: &[GraphPoint]) -> Markup {
    let max = points.iter().filter_map(|p| p.run_ms_p95).fold(1.0_f64, f64::max);
    let step = (WIDTH - PAD) / points.len().max(1) as f64;
    let y = |v: f64| HEIGHT - PAD / 2.0 - v / max * (HEIGHT - PAD);
    let line = |pick: fn(&GraphPoint) -> Option<f64>| -> String {
        points
            .iter()
            .enumerate()
            .filter_map(|(i, p)| pick(p).map(|v| format!("{},{}", fmt(PAD + (i as f64 + 0.4) * step), fmt(y(v)))))
            .collect::<Vec<_>>()
            .join(" ")
    };
    html! {
        svg.graph viewBox={ "0 0 " (WIDTH) " " (HEIGHT) } role="img" aria-label="Run time per minute, last hour: p50 and p95" {
            (axes(max, "ms"))
            polyline.p95 points=(line(|p| p.run_ms_p95)) {}
            polyline.p50 points=(line(|p| p.run_ms_p50)) {}
            // Dots too: a minute with runs between quiet minutes is a line of one point.
            @for (i, p) in points.iter().enumerate() {
                @let x = fmt(PAD + (i as f64 + 0.4) * step);
                @if let Some(v) = p.run_ms_p95 { circle.p95 cx=(x) cy=(fmt(y(v))) r="2" { title { "p95 " (fmt(v)) " ms" } } }
                @if let Some(v) = p.run_ms_p50 { circle.p50 cx=(x) cy=(fmt(y(v))) r="2" { title { "p50 " (fmt(v)) " ms" } } }
            }
        }
    }
}

fn axes(max: f64, unit: &str) -> Markup {
    html! {
        line.axis x1=(PAD) y1=(HEIGHT - PAD / 2.0) x2=(WIDTH) y2=(HEIGHT - PAD / 2.0) {}
        text x="0" y=(PAD / 2.0 + 4.0) { (fmt(max)) }
        text x="0" y=(HEIGHT - PAD / 2.0) { "0" }
        text x=(WIDTH - 60.0) y="10" { (unit) }
        text x=(PAD) y=(HEIGHT - 2.0) { "−60 min" }
        text x=(WIDTH - 30.0) y=(HEIGHT - 2.0) { "now" }
    }
}

fn fmt(v: f64) -> String {
    format!("{v:.0}")
}

const CSS: &str = "\
body{font:14px/1.45 system-ui,sans-serif;margin:0;color:#1d2330;background:#f7f8fa}\
header{background:#1d2330;color:#fff;padding:.5rem 1rem;display:flex;flex-wrap:wrap;gap:.5rem 1rem;align-items:center;justify-content:space-between}\
header nav{display:flex;flex-wrap:wrap;gap:.2rem .8rem} header a{color:#dbe4ff;text-decoration:none} header a:hover{text-decoration:underline}\
header input{width:min(26rem,70vw);padding:.25rem .4rem}\
main{padding:0 1rem 2rem;max-width:80rem}\
h1{font-size:1.3rem} h2{font-size:1.05rem;margin-top:1.6rem}\
table{border-collapse:collapse;background:#fff;box-shadow:0 1px 2px #0001;width:100%}\
th,td{padding:.35rem .6rem;border-bottom:1px solid #e6e8ec;text-align:left;vertical-align:top;overflow-wrap:anywhere}\
th{background:#eef0f4;font-weight:600;overflow-wrap:normal} code{font-size:12px} .muted{color:#6b7280}\
.warn{color:#b45309;font-weight:600} .bad{color:#b91c1c;font-weight:600}\
.tag{display:inline-block;padding:0 .45rem;border-radius:.6rem;background:#e5e7eb;font-size:12px}\
.tag.dead{background:#fee2e2} .tag.retrying{background:#ffedd5} .tag.running{background:#dbeafe} .tag.done,.tag.delivered{background:#dcfce7} .tag.manual_review,.tag.failed{background:#fee2e2} .tag.paused{background:#fef3c7}\
.flash{padding:.5rem .8rem;border-radius:.3rem} .flash.ok{background:#dcfce7} .flash.bad{background:#fee2e2}\
table.fields{width:auto;min-width:min(40rem,100%)} table.fields th{width:10rem}\
form.inline{display:inline} button{font:inherit;padding:.15rem .7rem;cursor:pointer}\
.filters{display:flex;flex-wrap:wrap;gap:.5rem;align-items:end;margin:.6rem 0} .filters label{display:flex;flex-direction:column;font-size:12px}\
.tabs a{display:inline-block;margin:0 .3rem .3rem 0;padding:.15rem .6rem;border-radius:1rem;background:#e5e7eb;color:inherit;text-decoration:none}\
.tabs a.on{background:#1d2330;color:#fff}\
.graphs{display:grid;grid-template-columns:repeat(auto-fit,minmax(18rem,1fr));gap:1rem}\
svg.graph{width:100%;height:auto;background:#fff;box-shadow:0 1px 2px #0001} svg text{font-size:10px;fill:#6b7280}\
.axis{stroke:#9ca3af} rect.done{fill:#22c55e} rect.failed{fill:#ef4444} polyline{fill:none;stroke-width:2} polyline.p50{stroke:#3b82f6} polyline.p95{stroke:#f97316} circle.p50{fill:#3b82f6} circle.p95{fill:#f97316}\
@media (max-width:640px){thead{display:none} table,tbody,tr,td{display:block;width:auto} tr{margin:.5rem 0;box-shadow:0 1px 2px #0002}\
td{border:0;padding:.15rem .6rem;display:flex;justify-content:space-between;gap:1rem;text-align:right}\
td::before{content:attr(data-label);flex:none;font-size:12px;color:#6b7280;text-align:left}}";

/// Relative times, confirmation before an action, and the in-place refresh of `#live`
/// (skipped while the operator types, or the tab is hidden).
const SCRIPT: &str = r#"(function(){
function ago(){document.querySelectorAll('time[datetime]').forEach(function(t){
var s=(Date.now()-Date.parse(t.getAttribute('datetime')))/1000;if(isNaN(s))return;var f=s<0;s=Math.abs(s);
var w=s<60?Math.round(s)+' s':s<3600?Math.round(s/60)+' min':s<86400?Math.round(s/3600)+' h':Math.round(s/86400)+' d';
t.textContent=f?'in '+w:w+' ago';});}
document.addEventListener('submit',function(e){var q=e.target.getAttribute('data-confirm');if(q&&!window.confirm(q))e.preventDefault();});
ago();var every=parseInt(document.body.getAttribute('data-refresh')||'0',10);
if(every>0)setInterval(function(){
if(document.hidden)return;var a=document.activeElement;if(a&&/INPUT|SELECT|TEXTAREA/.test(a.tagName))return;
fetch(location.href,{credentials:'same-origin'}).then(function(r){return r.ok?r.text():null}).then(function(h){
if(!h)return;var n=new DOMParser().parseFromString(h,'text/html').getElementById('live');var o=document.getElementById('live');
if(n&&o){o.replaceWith(n);ago();var u=document.getElementById('updated');if(u)u.textContent=new Date().toLocaleTimeString();}
}).catch(function(){});},every*1000);
})();"#;
