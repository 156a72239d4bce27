//! `GET /events`: the event ring as server-sent events.
//!
//! - Each event is `id: <seq>`, `event: <kind>`, `data: <json>`.
//! - Where it starts: after the `Last-Event-ID` header's sequence number if present (a
//!   reconnecting `EventSource` sends it, and it is newer than the URL it reconnects to),
//!   else after `?since=SEQ`, else at the ring's current end (only new events). A start
//!   beyond the newest event counts as the newest (only new events).
//! - `?follow=false` ends the stream once it has sent what the ring held when the request
//!   came (`drvisor ctl events` without `--follow`); the default follows until the VM stops.
//! - A reader that fell behind the ring first gets `event: lost` with
//!   `data: {"event":"lost","count":N}` and `id:` the last lost sequence number, so a client
//!   that reconnects with that id does not count the same loss twice.
//! - The stream ends when the ring is closed (the VM stopped) or, at the latest
//!   [`DRAIN_GRACE`] after the server began to shut down.
//!   Idle streams get a keep-alive comment every 15 s.
//!
//! The ring is read without waiting, only when the HTTP connection has room for more; a stream
//! that caught up waits for the ring's wake (no thread each, no polling). A stalled client holds
//! nothing the producer waits for, it just falls behind and is told how far.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::sse::{Event, KeepAlive, Sse};
use futures_util::stream::{self, Stream, StreamExt};
use serde::Deserialize;

/// How long a stream may go on draining the ring once the server shuts down.
pub(crate) const DRAIN_GRACE: Duration = Duration::from_secs(4);

use super::error::bad_request;
use super::extract::StrictQuery;
use super::routes::AppState;
use crate::control::Control;
use crate::rest::ApiError;
use crate::ring::EventKind;

/// Events read from the ring at a time.
const BATCH: usize = 256;
/// Keep-alive comment interval.
const KEEP_ALIVE: Duration = Duration::from_secs(15);

/// `GET /events` query.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct EventsQuery {
    /// Replay every event after this sequence number that the ring still has.
    since: Option<u64>,
    /// `false`: end once caught up with the ring as it was at the request.
    follow: Option<bool>,
}

struct Reader {
    control: Arc<dyn Control>,
    cursor: u64,
    /// `follow=false`: the last sequence number to send.
    end: Option<u64>,
    pending: VecDeque<Event>,
    done: bool,
}

impl Reader {
    async fn next(mut self) -> Option<(Result<Event, Infallible>, Reader)> {
        loop {
            if let Some(ev) = self.pending.pop_front() {
                return Some((Ok(ev), self));
            }
            if self.done || self.end.is_some_and(|end| self.cursor >= end) {
                return None;
            }
            let ring = self.control.events();
            let batch = ring.read_after(self.cursor, BATCH, Duration::ZERO);
            if batch.lost == 0 && batch.events.is_empty() && !batch.closed {
                ring.grown(self.cursor).await;
                continue;
            }
            if batch.lost > 0 {
                self.cursor += batch.lost;
                let data = format!(r#"{{"event":"lost","count":{}}}"#, batch.lost);
                self.pending.push_back(
                    Event::default()
                        .id(self.cursor.to_string())
                        .event(EventKind::Lost.name())
                        .data(data),
                );
            }
            for e in batch.events {
                if self.end.is_some_and(|end| e.seq > end) {
                    break;
                }
                self.cursor = e.seq;
                self.pending.push_back(
                    Event::default()
                        .id(e.seq.to_string())
                        .event(e.kind.name())
                        .data(&*e.data),
                );
            }
            self.done = batch.closed;
        }
    }
}

fn last_event_id(headers: &HeaderMap) -> Result<Option<u64>, ApiError> {
    let Some(v) = headers.get("last-event-id") else {
        return Ok(None);
    };
    v.to_str()
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .map(Some)
        .ok_or_else(|| bad_request("bad-header", "`Last-Event-ID` must be a sequence number"))
}

/// The event stream.
#[utoipa::path(get, path = "/events", tag = "events",
    params(
        ("since" = Option<u64>, Query, description = "Replay the events after this sequence number that the ring still has"),
        ("follow" = Option<bool>, Query, description = "`false`: end once caught up with the ring as it was at the request (default `true`)"),
        ("Last-Event-ID" = Option<u64>, Header, description = "Resume after this sequence number (wins over `since`)"),
    ),
    responses((status = 200, description = "Server-sent events: `id: <seq>`, `event: hit|plan|state|lost`, `data: <json>`", body = String, content_type = "text/event-stream")))]
pub(crate) async fn events(
    State(st): State<AppState>,
    headers: HeaderMap,
    StrictQuery(q): StrictQuery<EventsQuery>,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, ApiError> {
    let resume = last_event_id(&headers)?;
    let last = st.control.events().last_seq();
    let cursor = resume.or(q.since).unwrap_or(last).min(last);
    let end = (q.follow == Some(false)).then_some(last);
    let reader = Reader {
        control: st.control.clone(),
        cursor,
        end,
        pending: VecDeque::new(),
        done: false,
    };
    let mut shutdown = st.shutdown.clone();
    // The VMM closes the ring before it shuts the server down: a reader that keeps up gets
    // every event up to the VM's stop and ends by itself; one slowed down (a loaded host) has
    // DRAIN_GRACE to catch up, and one that stopped reading is cut off then. A server shut down
    // with the ring still open ends its streams at once.
    let control = st.control.clone();
    let stopped = async move {
        let _ = shutdown.wait_for(|s| *s).await;
        if control.events().is_closed() {
            tokio::time::sleep(DRAIN_GRACE).await;
        }
    };
    let stream = stream::unfold(reader, Reader::next).take_until(stopped);
    Ok(Sse::new(stream).keep_alive(KeepAlive::new().interval(KEEP_ALIVE)))
}
