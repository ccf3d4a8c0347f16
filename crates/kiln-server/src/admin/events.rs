//! `/api/v1/events`: what happened to machines (DHCP, TFTP, HTTP, workflows, BMCs), and the
//! same as a Server-Sent Events stream for `kiln events --follow`.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Query, State};
use axum::http::HeaderMap;
use axum::response::sse::{self, KeepAlive, Sse};
use axum::{Extension, Json};
use futures_util::Stream;
use kiln_api::EventView;
use kiln_api::events::SSE_EVENT;
use kiln_api::time::rfc3339_ms;
use kiln_store::{EventRecord, Store, StoreHandle};
use serde::Deserialize;
use tokio::sync::watch;

use super::auth::{Caller, Credential};
use super::{AdminState, ApiResult, Failure};

/// How often the stream looks for new events.
const POLL: Duration = Duration::from_millis(250);
/// How often a stream asks again whether its token (or the web page's session) still lets
/// it in: a revoked token's stream ends within this long.
const RECHECK: Duration = Duration::from_secs(2);
/// Events one read (a page, a poll of the stream) returns at most.
const PAGE: i64 = 1000;

pub(crate) fn event_view(rec: &EventRecord) -> EventView {
    let e = &rec.event;
    EventView {
        id: rec.id,
        at: rfc3339_ms(e.at_ms),
        at_ms: e.at_ms,
        machine: e.machine.clone(),
        mac: e.mac.map(|m| m.to_string()),
        ip: e.ip.map(|i| i.to_string()),
        kind: e.kind,
        detail: e.detail.clone(),
        data: e.data.clone(),
    }
}

fn enrolled(store: &dyn Store, machine: Option<&str>) -> Result<(), Failure> {
    if let Some(name) = machine
        && store.hardware_by_name(name)?.is_none()
    {
        return Err(Failure::not_found(format!(
            "no machine named {name:?} is enrolled"
        )));
    }
    Ok(())
}

#[derive(Deserialize, utoipa::IntoParams)]
pub struct EventsQuery {
    /// Only this machine's events (by hostname).
    machine: Option<String>,
    /// How many: the latest N (default 100); with `after`, the first N after it (at most 1000).
    last: Option<i64>,
    /// Only events after this id, oldest first.
    after: Option<i64>,
}

/// Events, oldest first: the latest `last`, or those after `after`.
#[utoipa::path(get, path = "/api/v1/events", tag = "events", operation_id = "event_list",
    params(EventsQuery),
    responses((status = 200, body = Vec<EventView>), (status = 404, body = kiln_api::ApiErrorBody)))]
pub async fn list(
    State(s): State<Arc<AdminState>>,
    Query(q): Query<EventsQuery>,
) -> ApiResult<Json<Vec<EventView>>> {
    s.store
        .clone()
        .run(move |store| {
            let machine = q.machine.as_deref();
            enrolled(store, machine)?;
            let records = match q.after {
                Some(after) => {
                    store.events(machine, after, q.last.unwrap_or(PAGE).clamp(0, PAGE))?
                }
                None => {
                    let mut all = store.events(machine, 0, i64::MAX)?;
                    let skip = all
                        .len()
                        .saturating_sub(q.last.unwrap_or(100).max(0) as usize);
                    all.split_off(skip)
                }
            };
            Ok(Json(records.iter().map(event_view).collect()))
        })
        .await
}

#[derive(Deserialize, utoipa::IntoParams)]
pub struct StreamQuery {
    /// Only this machine's events (by hostname).
    machine: Option<String>,
    /// Start after this id (default: the newest event, or the `Last-Event-ID` header).
    after: Option<i64>,
}

/// New events as Server-Sent Events (`event: event`, `id:` the event's id, `data:` the JSON
/// of an event), with keep-alive comments; ends when the server shuts down, or within
/// [`RECHECK`] of its token's revocation (or its web page session's end).
#[utoipa::path(get, path = "/api/v1/events/stream", tag = "events", operation_id = "event_stream",
    params(StreamQuery),
    responses((status = 200, description = "text/event-stream of EventView", content_type = "text/event-stream", body = EventView),
        (status = 404, body = kiln_api::ApiErrorBody)))]
pub async fn stream(
    State(s): State<Arc<AdminState>>,
    Query(q): Query<StreamQuery>,
    Extension(caller): Extension<Caller>,
    headers: HeaderMap,
) -> ApiResult<Sse<impl Stream<Item = Result<sse::Event, Infallible>>>> {
    let resumed = headers
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<i64>().ok());
    let machine = q.machine.clone();
    let after = s
        .store
        .run(move |store| {
            enrolled(store, machine.as_deref())?;
            match q.after.or(resumed) {
                Some(a) => Ok::<_, Failure>(a),
                None => Ok(store.last_event_id()?),
            }
        })
        .await?;
    let tail = Tail {
        store: s.store.clone(),
        machine: q.machine,
        after,
        pending: VecDeque::new(),
        shutdown: s.shutdown.clone(),
        credential: caller.credential,
        checked: tokio::time::Instant::now(),
        state: s.clone(),
    };
    Ok(Sse::new(futures_util::stream::unfold(tail, Tail::next)).keep_alive(KeepAlive::default()))
}

/// Where a stream is: what it has read and not yet sent, and where to read on from.
struct Tail {
    store: StoreHandle,
    machine: Option<String>,
    after: i64,
    pending: VecDeque<EventRecord>,
    shutdown: watch::Receiver<bool>,
    /// What let the stream in, and when that was last asked again.
    credential: Credential,
    checked: tokio::time::Instant,
    state: Arc<AdminState>,
}

impl Tail {
    /// The next event to send, polling the store for it; `None` at shutdown, once the
    /// credential no longer lets the stream in, or when the store fails (the client
    /// reconnects with `Last-Event-ID`).
    async fn next(mut self) -> Option<(Result<sse::Event, Infallible>, Tail)> {
        loop {
            if self.checked.elapsed() >= RECHECK {
                if let Err((_, _, why)) = super::auth::resolve(&self.state, &self.credential).await
                {
                    tracing::info!("admin API: event stream ended: {why}");
                    return None;
                }
                self.checked = tokio::time::Instant::now();
            }
            if let Some(rec) = self.pending.pop_front() {
                let data = serde_json::to_string(&event_view(&rec)).expect("events serialize");
                let ev = sse::Event::default()
                    .id(rec.id.to_string())
                    .event(SSE_EVENT)
                    .data(data);
                return Some((Ok(ev), self));
            }
            if *self.shutdown.borrow() {
                return None;
            }
            tokio::select! {
                changed = self.shutdown.changed() => {
                    if changed.is_err() || *self.shutdown.borrow() {
                        return None;
                    }
                    continue;
                }
                () = tokio::time::sleep(POLL) => {}
            }
            let (machine, after) = (self.machine.clone(), self.after);
            let read = self
                .store
                .run(move |store| store.events(machine.as_deref(), after, PAGE))
                .await;
            match read {
                Ok(records) => {
                    if let Some(last) = records.last() {
                        self.after = last.id;
                    }
                    self.pending.extend(records);
                }
                Err(e) => {
                    tracing::warn!("admin API: event stream: {e}");
                    return None;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_event_shows_its_time_twice_and_addresses_as_text() {
        let rec = EventRecord {
            id: 7,
            event: kiln_model::Event {
                at_ms: 1_795_312_245_123,
                machine: Some("n1".into()),
                mac: Some("52:54:00:aa:00:01".parse().unwrap()),
                ip: Some("10.9.0.11".parse().unwrap()),
                kind: kiln_api::EventKind::DhcpOffer,
                detail: "offered".into(),
                data: None,
            },
        };
        let v = serde_json::to_value(event_view(&rec)).unwrap();
        assert_eq!(v["at"], "2026-11-22T01:50:45.123Z");
        assert_eq!(v["at_ms"], 1_795_312_245_123u64);
        assert_eq!(v["mac"], "52:54:00:aa:00:01");
        assert_eq!(v["ip"], "10.9.0.11");
        // The same fields as the stored record (what `kiln events -o json` printed), plus `at`.
        let stored = serde_json::to_value(&rec).unwrap();
        for (k, val) in stored.as_object().unwrap() {
            assert_eq!(&v[k], val, "{k}");
        }
    }
}
