//! Watch streams: one JSON event per line (`ADDED`, `MODIFIED`, `DELETED`,
//! `BOOKMARK`, `ERROR`), from a `resourceVersion` on, until `timeoutSeconds`.
//!
//! A watch from `resourceVersion` `0` (or none) starts with an `ADDED` event per
//! existing object; a watch from a revision older than the kept history gets one
//! `ERROR` event with a 410 `Status` and ends, as the API server does, so the
//! client lists again. With `allowWatchBookmarks=true` a `BOOKMARK` carrying the
//! current revision ends a stream that timed out.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use std::convert::Infallible;

use bytes::Bytes;
use http_body_util::StreamBody;
use hyper::body::Frame;
use serde_json::{json, Value};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

use super::kinds::Kind;
use super::store::{ApiError, EventType};
use super::Shared;

/// How long a watch lasts when the client names no `timeoutSeconds`.
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(1800);

/// Events buffered per stream before the writer waits for the client.
const BUFFER: usize = 64;

/// A watch's body: JSON lines as they come.
pub type Stream = StreamBody<ReceiverStream<Result<Frame<Bytes>, Infallible>>>;

type Sender = mpsc::Sender<Result<Frame<Bytes>, Infallible>>;

/// The client went away.
struct Gone;

/// Starts a watch of `kind` in `namespace` (all when `None`).
pub fn start(
    shared: Arc<Shared>,
    kind: &'static Kind,
    namespace: Option<String>,
    query: &BTreeMap<String, String>,
) -> Result<Stream, ApiError> {
    let from = match query.get("resourceVersion").map(String::as_str) {
        None | Some("" | "0") => None,
        Some(rv) => Some(
            rv.parse::<u64>()
                .map_err(|_| ApiError::bad_request(format!("invalid resourceVersion `{rv}`")))?,
        ),
    };
    let timeout = match query.get("timeoutSeconds") {
        Some(secs) => Duration::from_secs(
            secs.parse()
                .map_err(|_| ApiError::bad_request(format!("invalid timeoutSeconds `{secs}`")))?,
        ),
        None => DEFAULT_TIMEOUT,
    };
    let watch = Watch {
        shared,
        kind,
        namespace,
        bookmarks: query.get("allowWatchBookmarks").is_some_and(|v| v == "true"),
    };
    let (tx, rx) = mpsc::channel(BUFFER);
    tokio::spawn(watch.run(tx, from, timeout));
    Ok(StreamBody::new(ReceiverStream::new(rx)))
}

struct Watch {
    shared: Arc<Shared>,
    kind: &'static Kind,
    namespace: Option<String>,
    bookmarks: bool,
}

impl Watch {
    async fn run(self, tx: Sender, from: Option<u64>, timeout: Duration) {
        let deadline = tokio::time::Instant::now() + timeout;
        let mut revisions = self.shared.revision.subscribe();
        let mut shutdown = self.shared.shutdown.subscribe();
        let mut seen = match from {
            Some(revision) => revision,
            None => {
                let (objects, revision) = self
                    .shared
                    .read(|s| (s.list(self.kind, self.namespace.as_deref()), s.revision()));
                for object in objects {
                    if send(&tx, EventType::Added.as_str(), object).await.is_err() {
                        return;
                    }
                }
                revision
            }
        };
        loop {
            revisions.mark_unchanged();
            let changes = self.shared.read(|s| {
                s.changes_since(self.kind, self.namespace.as_deref(), seen)
                    .map(|c| (c, s.revision()))
            });
            match changes {
                Ok((changes, revision)) => {
                    for change in changes {
                        if send(&tx, change.event.as_str(), change.object).await.is_err() {
                            return;
                        }
                    }
                    seen = revision;
                }
                Err(gone) => {
                    let _ = send(&tx, "ERROR", gone.to_status()).await;
                    return;
                }
            }
            tokio::select! {
                changed = revisions.changed() => if changed.is_err() { return },
                () = tokio::time::sleep_until(deadline) => {
                    if self.bookmarks {
                        let _ = send(&tx, "BOOKMARK", self.bookmark(seen)).await;
                    }
                    return;
                }
                () = super::stopped(&mut shutdown) => return,
            }
        }
    }

    fn bookmark(&self, revision: u64) -> Value {
        json!({
            "kind": self.kind.kind,
            "apiVersion": self.kind.api_version(),
            "metadata": {"resourceVersion": revision.to_string()},
        })
    }
}

async fn send(tx: &Sender, event: &str, object: Value) -> Result<(), Gone> {
    let mut line = json!({"type": event, "object": object}).to_string();
    line.push('\n');
    tx.send(Ok(Frame::data(Bytes::from(line)))).await.map_err(|_| Gone)
}
