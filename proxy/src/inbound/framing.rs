//! HTTP/1 request heads as they cross the wire, for the two framing rules of
//! `SECURITY.md` §2 that hyper settles leniently before a service can see them:
//!
//! - Content-Length together with Transfer-Encoding: hyper drops the length, frames
//!   the body as chunked and closes the connection after the response (RFC 9112
//!   §6.1 allows that); we refuse the request with 400.
//! - a repeated Content-Length with equal values: hyper keeps one line; we refuse.
//!
//! [`track`] wraps the connection's reader. The tracker follows message framing the
//! way hyper does (heads parsed by the same `httparse`, bodies skipped by length or
//! chunk by chunk) and queues one [`Framing`] per request head, which the request
//! step takes in order: hyper hands requests to the service in the order their
//! heads arrived, and a head is always read through here before hyper parses it.
//! When the tracker cannot follow (a head hyper refuses on its own, an upgrade, a
//! malformed chunk) it stops for the rest of the connection and the queue runs dry,
//! so it can only ever add a refusal, never lose one hyper would make.

use std::collections::VecDeque;
use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use crate::context::Limits;
use crate::request::Refusal;

/// The longest chunk-size or trailer line followed; longer, the tracker stops.
const MAX_LINE: usize = 4096;

/// What a request head says about its own framing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Framing {
    Sound,
    LengthAndChunked,
    RepeatedLength,
}

impl Framing {
    /// The refusal for a head whose framing has no single meaning.
    pub(super) fn refusal(self) -> Option<Refusal> {
        let reason = match self {
            Self::Sound => return None,
            Self::LengthAndChunked => "the request has both Content-Length and Transfer-Encoding",
            Self::RepeatedLength => "the request has several Content-Length headers",
        };
        Some(Refusal::BadRequest(reason.to_owned()))
    }
}

/// The verdicts of the heads read so far and not yet taken.
#[derive(Debug, Default)]
pub(super) struct Heads(Mutex<VecDeque<Framing>>);

impl Heads {
    /// The framing of the next request, in arrival order; `Sound` once the tracker
    /// has stopped (hyper refuses or closes on its own then).
    pub(super) fn next(&self) -> Framing {
        self.lock().pop_front().unwrap_or(Framing::Sound)
    }

    fn push(&self, framing: Framing) {
        self.lock().push_back(framing);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, VecDeque<Framing>> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Wraps a connection so that every request head read through it is judged.
pub(super) fn track<IO>(io: IO, limits: &Limits) -> (Tracked<IO>, Arc<Heads>) {
    let heads = Arc::new(Heads::default());
    let tracker = Tracker {
        state: State::Head,
        buf: Vec::new(),
        max_head: limits.max_header_bytes,
        max_headers: limits.max_headers,
        heads: Arc::clone(&heads),
    };
    (Tracked { io, tracker }, heads)
}

/// A reader that judges the request heads passing through it.
#[derive(Debug)]
pub(super) struct Tracked<IO> {
    io: IO,
    tracker: Tracker,
}

#[derive(Debug)]
struct Tracker {
    state: State,
    /// A partial head or line.
    buf: Vec<u8>,
    max_head: usize,
    max_headers: usize,
    heads: Arc<Heads>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Head,
    /// Bytes of a fixed-length body still to come.
    Body(u64),
    Chunked(Chunk),
    /// Not following any more.
    Lost,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Chunk {
    Size,
    Data(u64),
    DataEnd,
    Trailers,
}

impl Tracker {
    fn feed(&mut self, mut bytes: &[u8]) {
        while !bytes.is_empty() {
            bytes = match self.state {
                State::Lost => return,
                State::Head => self.head(bytes),
                State::Body(left) => {
                    let (rest, left) = skip(bytes, left);
                    self.state = if left == 0 { State::Head } else { State::Body(left) };
                    rest
                }
                State::Chunked(chunk) => self.chunked(chunk, bytes),
            };
        }
    }

    /// Accumulates a head; once complete, judges it and moves on to its body.
    fn head<'b>(&mut self, bytes: &'b [u8]) -> &'b [u8] {
        let before = self.buf.len();
        self.buf.extend_from_slice(bytes);
        let mut headers = vec![httparse::EMPTY_HEADER; self.max_headers];
        let mut request = httparse::Request::new(&mut headers);
        match request.parse(&self.buf) {
            Ok(httparse::Status::Complete(len)) => {
                let (framing, next) = judge(&request);
                self.heads.push(framing);
                self.state = next;
                self.buf.clear();
                bytes.get(len.saturating_sub(before)..).unwrap_or_default()
            }
            Ok(httparse::Status::Partial) if self.buf.len() <= self.max_head => &[],
            // Too large, too many headers or malformed: hyper answers it itself.
            _ => self.lose(),
        }
    }

    fn chunked<'b>(&mut self, chunk: Chunk, bytes: &'b [u8]) -> &'b [u8] {
        if let Chunk::Data(left) = chunk {
            let (rest, left) = skip(bytes, left);
            self.state = State::Chunked(if left == 0 { Chunk::DataEnd } else { Chunk::Data(left) });
            return rest;
        }
        let Some((line, rest)) = self.line(bytes) else {
            return &[];
        };
        self.state = match (chunk, line.as_slice()) {
            (Chunk::Size, line) => match httparse::parse_chunk_size(line) {
                Ok(httparse::Status::Complete((_, 0))) => State::Chunked(Chunk::Trailers),
                Ok(httparse::Status::Complete((_, size))) => State::Chunked(Chunk::Data(size)),
                _ => State::Lost,
            },
            (Chunk::DataEnd, b"\r\n") => State::Chunked(Chunk::Size),
            (Chunk::Trailers, b"\r\n" | b"\n") => State::Head,
            (Chunk::Trailers, _) => State::Chunked(Chunk::Trailers),
            _ => State::Lost,
        };
        rest
    }

    /// The next whole line (with its line feed) and what follows it, or `None`
    /// while the line is incomplete.
    fn line<'b>(&mut self, bytes: &'b [u8]) -> Option<(Vec<u8>, &'b [u8])> {
        let Some(end) = bytes.iter().position(|b| *b == b'\n') else {
            self.buf.extend_from_slice(bytes);
            if self.buf.len() > MAX_LINE {
                self.lose();
            }
            return None;
        };
        let (line, rest) = bytes.split_at(end.saturating_add(1));
        self.buf.extend_from_slice(line);
        if self.buf.len() > MAX_LINE {
            self.lose();
            return None;
        }
        Some((std::mem::take(&mut self.buf), rest))
    }

    fn lose(&mut self) -> &'static [u8] {
        self.state = State::Lost;
        self.buf = Vec::new();
        &[]
    }
}

/// Skips up to `left` bytes: what remains of `bytes` and of `left`.
fn skip(bytes: &[u8], left: u64) -> (&[u8], u64) {
    let take = usize::try_from(left).unwrap_or(usize::MAX).min(bytes.len());
    let rest = bytes.get(take..).unwrap_or_default();
    (rest, left.saturating_sub(u64::try_from(take).unwrap_or(u64::MAX)))
}

/// A head's framing verdict and where its body ends, as hyper frames it.
fn judge(request: &httparse::Request<'_, '_>) -> (Framing, State) {
    let named = |name: &'static str| {
        request
            .headers
            .iter()
            .filter(move |h| h.name.eq_ignore_ascii_case(name))
            .map(|h| h.value)
    };
    let lengths: Vec<&[u8]> = named("content-length").collect();
    let last_coding = named("transfer-encoding").next_back();
    let framing = match (lengths.as_slice(), last_coding) {
        ([_, ..], Some(_)) => return (Framing::LengthAndChunked, State::Lost),
        ([_, _, ..], None) => Framing::RepeatedLength,
        _ => Framing::Sound,
    };
    let upgrade = request.method == Some("CONNECT") || named("upgrade").next().is_some();
    let next = match (last_coding, lengths.first()) {
        _ if upgrade || (request.version != Some(1) && last_coding.is_some()) => State::Lost,
        (Some(coding), _) if ends_with_chunked(coding) => State::Chunked(Chunk::Size),
        (Some(_), _) => State::Lost,
        (None, Some(length)) => match decimal(length) {
            Some(n) if lengths.iter().all(|l| decimal(l) == Some(n)) => State::Body(n),
            _ => State::Lost,
        },
        (None, None) => State::Head,
    };
    let next = if next == State::Body(0) { State::Head } else { next };
    (framing, next)
}

/// Whether a Transfer-Encoding value's last coding is `chunked`.
fn ends_with_chunked(value: &[u8]) -> bool {
    value
        .rsplit(|b| *b == b',')
        .next()
        .is_some_and(|last| last.trim_ascii().eq_ignore_ascii_case(b"chunked"))
}

/// A Content-Length value: plain decimal digits only.
fn decimal(value: &[u8]) -> Option<u64> {
    let digits = value.trim_ascii();
    if digits.is_empty() || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(digits).ok()?.parse().ok()
}

impl<IO: AsyncRead + Unpin> AsyncRead for Tracked<IO> {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let poll = Pin::new(&mut this.io).poll_read(cx, buf);
        if let Poll::Ready(Ok(())) = poll {
            this.tracker.feed(buf.filled().get(before..).unwrap_or_default());
        }
        poll
    }
}

impl<IO: AsyncWrite + Unpin> AsyncWrite for Tracked<IO> {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Feeds `wire` in pieces of `step` bytes and returns the verdicts queued.
    fn verdicts(wire: &str, step: usize) -> Vec<Framing> {
        let (mut tracked, heads) = track((), &Limits::default());
        for piece in wire.as_bytes().chunks(step) {
            tracked.tracker.feed(piece);
        }
        let mut out = Vec::new();
        while let Some(framing) = heads.lock().pop_front() {
            out.push(framing);
        }
        out
    }

    #[test]
    fn heads_are_judged_in_order_across_bodies_whatever_the_read_sizes() {
        let wire = concat!(
            "POST /a HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nhello",
            "POST /b HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n",
            "5\r\nPOST \r\n3;ext=1\r\n/x \r\n0\r\nx-trailer: 1\r\n\r\n",
            "GET /c HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\nContent-Length: 0\r\n\r\n",
            "GET /d HTTP/1.1\r\nHost: a\r\n\r\n",
            "POST /e HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n",
            "GET /never-judged HTTP/1.1\r\n\r\n",
        );
        let expected = [
            Framing::Sound,
            Framing::Sound,
            Framing::RepeatedLength,
            Framing::Sound,
            Framing::LengthAndChunked,
        ];
        for step in [1, 2, 7, 64, wire.len()] {
            assert_eq!(verdicts(wire, step), expected, "read size {step}");
        }
    }

    #[test]
    fn body_bytes_that_look_like_heads_are_not_judged() {
        let body = "GET / HTTP/1.1\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n";
        let wire = format!(
            "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: {}\r\n\r\n{body}GET / HTTP/1.1\r\nHost: a\r\n\r\n",
            body.len()
        );
        assert_eq!(verdicts(&wire, 3), [Framing::Sound, Framing::Sound]);
    }

    #[test]
    fn the_tracker_stops_where_hyper_refuses_on_its_own() {
        let cases = [
            "GET / HTTP/1.1\r\nBad Header: x\r\n\r\nGET / HTTP/1.1\r\n\r\n",
            "POST / HTTP/1.1\r\nTransfer-Encoding: gzip\r\n\r\nGET / HTTP/1.1\r\n\r\n",
            "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nGET / HTTP/1.1\r\n\r\n",
        ];
        for wire in cases {
            assert!(verdicts(wire, 5).len() <= 1, "{wire:?}");
        }
        let huge = format!("GET / HTTP/1.1\r\nx: {}\r\n\r\n", "a".repeat(70_000));
        assert!(verdicts(&huge, 4096).is_empty());
    }
}
