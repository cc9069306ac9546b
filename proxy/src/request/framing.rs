//! One framing per HTTP/1 request (`SECURITY.md` §2), checked on the bytes hyper
//! reads, for both sides.
//!
//! hyper accepts a request carrying both `Content-Length` and `Transfer-Encoding`
//! (it drops the length, reads the body as chunked and closes the connection after
//! the response, as RFC 9112 §6.1 allows) and folds repeated equal `Content-Length`
//! lines into one. Neither is visible in the parsed request, yet both mean that the
//! sender and some other parser may disagree on where the request ends.
//!
//! [`Watched`] wraps an HTTP/1 connection and reads its bytes beside hyper, never
//! changing one. A [`Watch`] parses each request head with the `httparse` hyper
//! uses, in its strict default (no obs-fold, no whitespace before a colon), judges
//! it, and follows the body (by its length, or chunked byte for byte as hyper's
//! decoder reads it) only to find where the next head starts. Nothing is kept but
//! the head being read (at most `max_header_bytes`) and a few counters, whatever
//! the bodies' sizes. [`Verdicts::next`] gives the verdict on the next request
//! hyper hands over: hyper serves an HTTP/1 connection's requests one at a time in
//! arrival order, and every head passes through here before hyper parses it.
//!
//! The first head refused ends the watch, and so does the first thing it cannot
//! follow: an oversized or malformed head (HTTP/2's preface among them), a
//! malformed chunk, an upgrade or `CONNECT` (the bytes after it may not be HTTP/1).
//! From there on it fails closed: the request at that point gets its refusal and
//! every later request on the connection a 400. After a `CONNECT` answered `200`
//! hyper hands the connection over and no further request is read: the tunnel
//! takes the socket back with [`Watched::into_inner`], so its bytes are neither
//! parsed nor cut; a refused `CONNECT` closes the connection. Both sides send each refusal with
//! [`close_after`]: the bytes after a request with no single framing have no
//! agreed start, so nothing more is read from that connection.
//!
//! Refused: 400 for `Content-Length` with `Transfer-Encoding` (either order), more
//! than one `Content-Length` line (even equal), a length that is not plain decimal
//! digits, any `Transfer-Encoding` but exactly one `chunked` on HTTP/1.1, and a head
//! `httparse` refuses; 431 for a head over `max_header_bytes` or with more than
//! `max_headers` lines.

use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll};

use http::header::CONNECTION;
use http::{HeaderValue, Response};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use super::Refusal;
use crate::context::Limits;

/// Header slots kept on the stack for a parse; more (a higher `max_headers`) go on
/// the heap. hyper's own default.
const STACK_HEADERS: usize = 100;

/// An HTTP/1 connection whose request heads are judged as hyper reads them.
#[derive(Debug)]
pub struct Watched<IO> {
    io: IO,
    watch: Watch,
}

/// The verdicts on a connection's requests, shared between its [`Watch`] and the
/// requests' pipelines.
#[derive(Debug, Clone)]
pub struct Verdicts(Arc<Mutex<Log>>);

#[derive(Debug, Default)]
struct Log {
    /// Heads judged sound and not yet taken.
    sound: u64,
    /// Why the request after those is refused, once the watch has stopped.
    stop: Option<Reason>,
    /// Heads judged in all, sound or refused.
    judged: u64,
}

/// Follows the bytes of one HTTP/1 connection from the client; no I/O.
#[derive(Debug)]
pub struct Watch {
    state: State,
    /// The head being read, when it spans reads.
    held: Vec<u8>,
    max_header_bytes: usize,
    max_headers: usize,
    verdicts: Verdicts,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Head,
    /// Bytes of a body of known length still to come (never 0).
    Fixed(u64),
    Chunked(Chunk),
    /// Nothing more is learned: every later request is refused.
    Stopped,
}

/// Where a chunked body is, state for state as hyper's decoder
/// (`proto/h1/decode.rs`, `ChunkedState`) reads it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Chunk {
    Start,
    Size(u64),
    SizeLws(u64),
    Extension(u64),
    SizeLf(u64),
    Data(u64),
    DataCr,
    DataLf,
    EndCr,
    Trailer,
    TrailerLf,
    EndLf,
    End,
}

/// Why a request is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Reason {
    LengthAndCoding,
    SeveralLengths,
    BadLength,
    BadCoding,
    Malformed(httparse::Error),
    TooLarge,
    /// An earlier request was refused, or its framing could not be followed.
    Earlier,
}

/// How a sound head's body is delimited, as hyper reads it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Body {
    Length(u64),
    Chunked,
    /// An upgrade or `CONNECT`: what follows may not be HTTP/1 at all.
    Unknown,
}

/// A head parsed as far as the bytes allow.
enum Parsed {
    /// The head's length and its verdict.
    Complete(usize, Result<Body, Reason>),
    Partial,
    Invalid(httparse::Error),
}

impl<IO> Watched<IO> {
    /// Wraps `io`; `limits` bound the heads as they bound hyper's.
    pub fn new(io: IO, limits: &Limits) -> (Self, Verdicts) {
        let (watch, verdicts) = Watch::new(limits.max_header_bytes, limits.max_headers);
        (Self { io, watch }, verdicts)
    }

    /// The connection itself, watched no more: a tunnel takes it back after a
    /// `CONNECT` is answered `200`, when its bytes are no longer HTTP.
    pub fn into_inner(self) -> IO {
        self.io
    }
}

impl Verdicts {
    /// The verdict on the next request of the connection, in arrival order.
    ///
    /// # Errors
    ///
    /// The refusal to answer with (then [`close_after`]): 400 for a framing with no
    /// single meaning, a malformed head, or any request after the watch stopped;
    /// 431 for a head over the limits.
    pub fn next(&self) -> Result<(), Refusal> {
        let mut log = self.lock();
        if log.sound > 0 {
            log.sound -= 1;
            return Ok(());
        }
        // The watch stopped here; or hyper is ahead of it, which it never should be:
        // either way nothing from here on is known to be framed one way.
        let reason = log.stop.replace(Reason::Earlier).unwrap_or(Reason::Earlier);
        Err(reason.refusal())
    }

    /// How many request heads the watch has judged, sound or refused.
    pub fn judged(&self) -> u64 {
        self.lock().judged
    }

    fn sound(&self) {
        let mut log = self.lock();
        log.judged = log.judged.saturating_add(1);
        if log.stop.is_none() {
            log.sound = log.sound.saturating_add(1);
        }
    }

    fn refuse(&self, reason: Reason) {
        let mut log = self.lock();
        log.judged = log.judged.saturating_add(1);
        log.stop.get_or_insert(reason);
    }

    fn stop(&self, reason: Reason) {
        self.lock().stop.get_or_insert(reason);
    }

    fn lock(&self) -> MutexGuard<'_, Log> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Asks hyper to close the connection once `response` is written: the answer to
/// every request [`Verdicts::next`] refuses. HTTP/1 only (HTTP/2 forbids the header).
pub fn close_after<B>(response: &mut Response<B>) {
    response
        .headers_mut()
        .insert(CONNECTION, HeaderValue::from_static("close"));
}

impl Watch {
    /// A watch at the start of a connection: heads over `max_header_bytes` or with
    /// more than `max_headers` lines are refused with 431.
    pub fn new(max_header_bytes: usize, max_headers: usize) -> (Self, Verdicts) {
        let verdicts = Verdicts(Arc::default());
        let watch = Self {
            state: State::Head,
            held: Vec::new(),
            max_header_bytes,
            max_headers,
            verdicts: verdicts.clone(),
        };
        (watch, verdicts)
    }

    /// Follows `input`, the next bytes the client sent.
    pub fn feed(&mut self, mut input: &[u8]) {
        while !input.is_empty() {
            input = match self.state {
                State::Stopped => return,
                State::Head => self.head(input),
                State::Fixed(left) => {
                    let (left, rest) = skip(left, input);
                    self.state = if left == 0 { State::Head } else { State::Fixed(left) };
                    rest
                }
                State::Chunked(chunk) => self.chunked(chunk, input),
            };
        }
    }

    /// Reads `input` into the head in progress; returns what follows the head.
    fn head<'a>(&mut self, input: &'a [u8]) -> &'a [u8] {
        let held = self.held.len();
        // One byte past the limit is enough to know the head is too large.
        let room = self.max_header_bytes.saturating_add(1).saturating_sub(held);
        let taken = input.get(..room).unwrap_or(input);
        let total = held.saturating_add(taken.len());
        let parsed = if held == 0 {
            parse(taken, self.max_headers)
        } else {
            self.held.extend_from_slice(taken);
            parse(&self.held, self.max_headers)
        };
        match parsed {
            Parsed::Complete(len, _) if len > self.max_header_bytes => self.stop(Reason::TooLarge),
            Parsed::Complete(len, verdict) => {
                self.held = Vec::new();
                self.judge(verdict);
                input.get(len.saturating_sub(held)..).unwrap_or_default()
            }
            Parsed::Partial if total > self.max_header_bytes => self.stop(Reason::TooLarge),
            Parsed::Partial => {
                if held == 0 {
                    self.held.extend_from_slice(taken);
                }
                // All of `input` was taken: it fitted within the limit.
                &[]
            }
            Parsed::Invalid(httparse::Error::TooManyHeaders) => self.stop(Reason::TooLarge),
            Parsed::Invalid(error) => self.stop(Reason::Malformed(error)),
        }
    }

    /// Records a complete head's verdict and moves on to its body.
    fn judge(&mut self, verdict: Result<Body, Reason>) {
        match verdict {
            Err(reason) => {
                self.verdicts.refuse(reason);
                self.stop(Reason::Earlier);
            }
            Ok(body) => {
                self.verdicts.sound();
                self.state = match body {
                    Body::Length(0) => State::Head,
                    Body::Length(n) => State::Fixed(n),
                    Body::Chunked => State::Chunked(Chunk::Start),
                    Body::Unknown => {
                        self.stop(Reason::Earlier);
                        return;
                    }
                };
            }
        }
    }

    /// Follows a chunked body through `input`; returns what follows the body.
    fn chunked<'a>(&mut self, mut chunk: Chunk, mut input: &'a [u8]) -> &'a [u8] {
        while let Some((&byte, rest)) = input.split_first() {
            if let Chunk::Data(left) = chunk {
                let (left, rest) = skip(left, input);
                chunk = if left == 0 { Chunk::DataCr } else { Chunk::Data(left) };
                input = rest;
                continue;
            }
            input = rest;
            match chunk.step(byte) {
                Some(Chunk::End) => {
                    self.state = State::Head;
                    return input;
                }
                Some(next) => chunk = next,
                None => return self.stop(Reason::Earlier),
            }
        }
        self.state = State::Chunked(chunk);
        input
    }

    /// Stops following: the next request not yet judged is refused for `reason`,
    /// every one after it as well.
    fn stop(&mut self, reason: Reason) -> &'static [u8] {
        self.state = State::Stopped;
        self.held = Vec::new();
        self.verdicts.stop(reason);
        &[]
    }
}

impl Chunk {
    /// The state after one more byte of chunk framing; `None` where hyper's decoder
    /// fails.
    fn step(self, byte: u8) -> Option<Self> {
        Some(match (self, byte) {
            (Self::Start, _) => Self::Size(hex(0, byte)?),
            (Self::Size(size), b'\t' | b' ') => Self::SizeLws(size),
            (Self::Size(size) | Self::SizeLws(size), b';') => Self::Extension(size),
            (Self::Size(size) | Self::SizeLws(size) | Self::Extension(size), b'\r') => Self::SizeLf(size),
            (Self::Size(size), _) => Self::Size(hex(size, byte)?),
            (Self::SizeLws(size), b'\t' | b' ') => Self::SizeLws(size),
            (Self::Extension(_), b'\n') => return None,
            (Self::Extension(size), _) => Self::Extension(size),
            (Self::SizeLf(0), b'\n') => Self::EndCr,
            (Self::SizeLf(size), b'\n') => Self::Data(size),
            (Self::DataCr, b'\r') => Self::DataLf,
            (Self::DataLf, b'\n') => Self::Start,
            (Self::EndCr, b'\r') => Self::EndLf,
            (Self::Trailer, b'\r') => Self::TrailerLf,
            (Self::EndCr | Self::Trailer, _) => Self::Trailer,
            (Self::TrailerLf, b'\n') => Self::EndCr,
            (Self::EndLf, b'\n') => Self::End,
            _ => return None,
        })
    }
}

/// `size` with one more hex digit; `None` for a byte that is not one, or overflow.
fn hex(size: u64, digit: u8) -> Option<u64> {
    let value = char::from(digit).to_digit(16)?;
    size.checked_mul(16)?.checked_add(u64::from(value))
}

/// Skips up to `left` bytes of `input`: what remains of `left`, and of `input`.
fn skip(left: u64, input: &[u8]) -> (u64, &[u8]) {
    let n = usize::try_from(left).unwrap_or(usize::MAX).min(input.len());
    let left = left.saturating_sub(u64::try_from(n).unwrap_or(u64::MAX));
    (left, input.get(n..).unwrap_or_default())
}

/// Parses a head from the start of `bytes`, with at most `max_headers` lines.
fn parse(bytes: &[u8], max_headers: usize) -> Parsed {
    let mut stack = [httparse::EMPTY_HEADER; STACK_HEADERS];
    let mut heap;
    let headers = match stack.get_mut(..max_headers) {
        Some(headers) => headers,
        None => {
            heap = vec![httparse::EMPTY_HEADER; max_headers];
            heap.as_mut_slice()
        }
    };
    let mut request = httparse::Request::new(headers);
    match request.parse(bytes) {
        Ok(httparse::Status::Complete(len)) => Parsed::Complete(len, judge(&request)),
        Ok(httparse::Status::Partial) => Parsed::Partial,
        Err(error) => Parsed::Invalid(error),
    }
}

/// A complete head's verdict, and how its body is delimited when it is sound.
fn judge(request: &httparse::Request<'_, '_>) -> Result<Body, Reason> {
    let values = |name: &'static str| {
        request
            .headers
            .iter()
            .filter(move |h| h.name.eq_ignore_ascii_case(name))
            .map(|h| h.value)
    };
    let (mut lengths, mut codings) = (values("content-length"), values("transfer-encoding"));
    let body = match (lengths.next(), codings.next()) {
        (Some(_), Some(_)) => return Err(Reason::LengthAndCoding),
        (Some(_), None) if lengths.next().is_some() => return Err(Reason::SeveralLengths),
        (Some(length), None) => Body::Length(decimal(length).ok_or(Reason::BadLength)?),
        (None, Some(coding))
            if codings.next().is_none() && request.version == Some(1) && coding.eq_ignore_ascii_case(b"chunked") =>
        {
            Body::Chunked
        }
        (None, Some(_)) => return Err(Reason::BadCoding),
        (None, None) => Body::Length(0),
    };
    let upgrade = request.method == Some("CONNECT") || values("upgrade").next().is_some();
    Ok(if upgrade { Body::Unknown } else { body })
}

/// A `Content-Length` value as hyper reads one: decimal digits only, no sign, no
/// space, no list.
fn decimal(value: &[u8]) -> Option<u64> {
    if value.is_empty() {
        return None;
    }
    value.iter().try_fold(0u64, |n, &b| {
        let digit = char::from(b).to_digit(10)?;
        n.checked_mul(10)?.checked_add(u64::from(digit))
    })
}

impl Reason {
    fn refusal(self) -> Refusal {
        let reason = match self {
            Self::TooLarge => return Refusal::HeadersTooLarge,
            Self::LengthAndCoding => "the request has both Content-Length and Transfer-Encoding",
            Self::SeveralLengths => "the request has several Content-Length headers",
            Self::BadLength => "the Content-Length header is not a plain decimal number",
            Self::BadCoding => "the only transfer coding accepted is a single `chunked`, in HTTP/1.1",
            Self::Malformed(httparse::Error::HeaderName) => {
                "a header name is malformed; check for whitespace before a colon or a folded line"
            }
            Self::Malformed(_) => "the request head is not valid HTTP/1.1",
            Self::Earlier => "an earlier request on this connection had no single framing; open a new connection",
        };
        Refusal::BadRequest(reason.to_owned())
    }
}

impl<IO: AsyncRead + Unpin> AsyncRead for Watched<IO> {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let poll = Pin::new(&mut this.io).poll_read(cx, buf);
        if let Poll::Ready(Ok(())) = poll {
            this.watch.feed(buf.filled().get(before..).unwrap_or_default());
        }
        poll
    }
}

impl<IO: AsyncWrite + Unpin> AsyncWrite for Watched<IO> {
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

    /// Feeds `wire` in pieces of `step` bytes, then asks for `requests` verdicts.
    fn refusals(wire: &[u8], step: usize, requests: usize) -> (Vec<Result<(), Refusal>>, u64) {
        let (mut watch, verdicts) = Watch::new(64 * 1024, 100);
        for piece in wire.chunks(step) {
            watch.feed(piece);
        }
        let judged = verdicts.judged();
        ((0..requests).map(|_| verdicts.next()).collect(), judged)
    }

    /// The same, as statuses.
    fn verdicts(wire: &[u8], step: usize, requests: usize) -> Vec<Result<(), u16>> {
        let (verdicts, _) = refusals(wire, step, requests);
        verdicts
            .into_iter()
            .map(|v| v.map_err(|r| r.status().as_u16()))
            .collect()
    }

    fn bad(reason: &str) -> Result<(), Refusal> {
        Err(Refusal::BadRequest(reason.to_owned()))
    }

    const EARLIER: &str = "an earlier request on this connection had no single framing; open a new connection";

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
        // The first refused head ends the watch: /d and /e are not judged.
        let expected = vec![
            Ok(()),
            Ok(()),
            bad("the request has several Content-Length headers"),
            bad(EARLIER),
            bad(EARLIER),
            bad(EARLIER),
        ];
        for step in [1, 2, 7, 64, wire.len()] {
            assert_eq!(
                refusals(wire.as_bytes(), step, 6),
                (expected.clone(), 3),
                "read size {step}"
            );
        }
    }

    #[test]
    fn heads_are_found_across_bodies_whatever_the_read_sizes() {
        let stream: &[u8] = b"GET /a HTTP/1.1\r\nHost: a\r\n\r\n\
            POST /b HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nhello\
            POST /c HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n\
            5;ext=1\r\nhello\r\nA \r\n0123456789\r\n0\r\nx-trailer: 1\r\n\r\n\
            \r\nGET /d HTTP/1.1\r\nHost: a\r\n\r\n\
            POST /e HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n\
            POST /f HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\nContent-Length: 1\r\n\r\nx\
            GET /g HTTP/1.1\r\nHost: a\r\n\r\n";
        let expected = vec![Ok(()), Ok(()), Ok(()), Ok(()), Err(400), Err(400), Err(400), Err(400)];
        for step in [1, 3, 7, stream.len()] {
            assert_eq!(verdicts(stream, step, 8), expected, "read size {step}");
        }
    }

    #[test]
    fn body_bytes_that_look_like_heads_are_not_judged() {
        let body = "GET / HTTP/1.1\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n";
        let wire = format!(
            "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: {}\r\n\r\n{body}GET / HTTP/1.1\r\nHost: a\r\n\r\n",
            body.len()
        );
        assert_eq!(refusals(wire.as_bytes(), 3, 2), (vec![Ok(()), Ok(())], 2));
    }

    #[test]
    fn a_trailer_hyper_reads_is_not_taken_for_a_head() {
        // After the last chunk, hyper reads a bare LF as the start of a trailer, so
        // "GET /phantom" is a trailer line and the body ends at the empty line.
        let wire = b"POST /a HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\nGET /phantom HTTP/1.1\r\n\r\n\
            POST /b HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 1\r\n\r\nx";
        for step in [1, 5, wire.len()] {
            let (verdicts, judged) = refusals(wire, step, 2);
            assert_eq!(judged, 2, "read size {step}");
            assert_eq!(
                verdicts,
                [Ok(()), bad("the request has several Content-Length headers")]
            );
        }
    }

    #[test]
    fn the_order_of_length_and_coding_does_not_matter() {
        let stream = b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n0\r\n\r\n";
        assert_eq!(verdicts(stream, 5, 1), vec![Err(400)]);
    }

    #[test]
    fn the_watch_stops_where_hyper_refuses_on_its_own_and_nothing_after_passes() {
        let cases: [(&str, Vec<Result<(), u16>>); 5] = [
            (
                "GET / HTTP/1.1\r\nBad Header: x\r\n\r\nGET / HTTP/1.1\r\n\r\n",
                vec![Err(400), Err(400)],
            ),
            (
                "GET / HTTP/1.1\r\nHost : a\r\n\r\nGET / HTTP/1.1\r\n\r\n",
                vec![Err(400), Err(400)],
            ),
            (
                "GET / HTTP/1.1\r\nx-a: 1\r\n folded\r\n\r\nGET / HTTP/1.1\r\n\r\n",
                vec![Err(400), Err(400)],
            ),
            (
                "POST / HTTP/1.1\r\nTransfer-Encoding: gzip\r\n\r\nGET / HTTP/1.1\r\n\r\n",
                vec![Err(400), Err(400)],
            ),
            (
                "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nGET / HTTP/1.1\r\n\r\n",
                vec![Ok(()), Err(400)],
            ),
        ];
        for (wire, expected) in cases {
            assert_eq!(verdicts(wire.as_bytes(), 5, 2), expected, "{wire:?}");
        }
        let huge = format!(
            "GET / HTTP/1.1\r\nx: {}\r\n\r\nGET / HTTP/1.1\r\n\r\n",
            "a".repeat(70_000)
        );
        assert_eq!(verdicts(huge.as_bytes(), 4096, 2), vec![Err(431), Err(400)]);
    }

    #[test]
    fn obs_fold_and_whitespace_before_a_colon_are_named() {
        let reason = "a header name is malformed; check for whitespace before a colon or a folded line";
        for wire in [
            "GET / HTTP/1.1\r\nHost : a\r\n\r\n",
            "GET / HTTP/1.1\r\nHost: a\r\n b\r\n\r\n",
        ] {
            let (verdicts, judged) = refusals(wire.as_bytes(), 4, 2);
            assert_eq!(verdicts, [bad(reason), bad(EARLIER)], "{wire:?}");
            assert_eq!(judged, 0);
        }
    }

    #[test]
    fn an_oversized_head_is_431_and_nothing_after_it_passes() {
        let mut stream = b"GET / HTTP/1.1\r\nx-big: ".to_vec();
        stream.extend(std::iter::repeat_n(b'a', 70 * 1024));
        stream.extend_from_slice(b"\r\n\r\nGET / HTTP/1.1\r\n\r\n");
        assert_eq!(verdicts(&stream, 4096, 2), vec![Err(431), Err(400)]);
        assert_eq!(verdicts(&stream, stream.len(), 2), vec![Err(431), Err(400)]);
    }

    #[test]
    fn a_head_over_the_limit_is_431_even_when_hyper_buffers_more() {
        // hyper's HTTP/1 buffer is at least 8 KiB; the limit may be lower.
        let head = format!("GET / HTTP/1.1\r\nx: {}\r\n\r\n", "a".repeat(5000));
        let many: String = (0..101).map(|i| format!("x-{i}: 1\r\n")).collect();
        let cases = [head, format!("GET / HTTP/1.1\r\n{many}\r\n")];
        for wire in cases {
            for step in [1, 700, wire.len()] {
                let (mut watch, verdicts) = Watch::new(4096, 100);
                for piece in wire.as_bytes().chunks(step) {
                    watch.feed(piece);
                }
                assert_eq!(verdicts.next(), Err(Refusal::HeadersTooLarge), "read size {step}");
                assert_eq!(verdicts.next().map_err(|r| r.status().as_u16()), Err(400));
            }
        }
    }

    #[test]
    fn http2_and_broken_chunks_stop_the_watch() {
        assert_eq!(verdicts(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", 24, 1), vec![Err(400)]);
        let broken = b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nGET / HTTP/1.1\r\n\r\n";
        assert_eq!(verdicts(broken, 8, 2), vec![Ok(()), Err(400)]);
        // hyper refuses a size line without a digit, and a bare LF after a size.
        for body in ["\r\n0\r\n\r\n", "5\nhello\r\n0\r\n\r\n", "5;a\nb\r\nhello\r\n0\r\n\r\n"] {
            let wire = format!("POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n{body}GET / HTTP/1.1\r\n\r\n");
            assert_eq!(verdicts(wire.as_bytes(), 3, 2), vec![Ok(()), Err(400)], "{body:?}");
        }
    }

    #[test]
    fn after_an_upgrade_or_connect_nothing_passes() {
        for head in [
            "GET / HTTP/1.1\r\nHost: a\r\nConnection: upgrade\r\nUpgrade: websocket\r\n\r\n",
            "CONNECT a:443 HTTP/1.1\r\nHost: a:443\r\n\r\n",
        ] {
            let wire = format!("{head}POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\nContent-Length: 1\r\n\r\nx");
            assert_eq!(
                refusals(wire.as_bytes(), 6, 2),
                (vec![Ok(()), bad(EARLIER)], 1),
                "{head:?}"
            );
        }
    }

    #[test]
    fn a_request_the_watch_has_not_seen_is_refused_and_so_is_every_later_one() {
        let (mut watch, verdicts) = Watch::new(64 * 1024, 100);
        assert_eq!(verdicts.next(), bad(EARLIER));
        watch.feed(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n");
        assert_eq!(verdicts.judged(), 1);
        assert_eq!(verdicts.next(), bad(EARLIER));
    }

    #[test]
    fn bodies_are_skipped_not_buffered() {
        let (mut watch, verdicts) = Watch::new(64 * 1024, 100);
        watch.feed(b"POST / HTTP/1.1\r\nContent-Length: 10000000\r\n\r\n");
        let piece = vec![b'G'; 64 * 1024];
        let mut left = 10_000_000usize;
        while left > 0 {
            let n = left.min(piece.len());
            watch.feed(&piece[..n]);
            left -= n;
            assert_eq!(watch.held.capacity(), 0);
        }
        watch.feed(b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n");
        for _ in 0..1000 {
            watch.feed(b"ffff\r\n");
            watch.feed(&piece[..0xffff]);
            watch.feed(b"\r\n");
            assert_eq!(watch.held.capacity(), 0);
        }
        watch.feed(b"0\r\n\r\nGET / HTTP/1.1\r\n\r\n");
        assert_eq!(verdicts.judged(), 3);
        assert_eq!(
            [verdicts.next(), verdicts.next(), verdicts.next()],
            [Ok(()), Ok(()), Ok(())]
        );
    }

    #[test]
    fn verdicts_by_head() {
        let sound = |body| Ok(body);
        let cases: [(&str, Result<Body, Reason>); 19] = [
            ("", sound(Body::Length(0))),
            ("Content-Length: 12\r\n", sound(Body::Length(12))),
            ("content-length: 0\r\n", sound(Body::Length(0))),
            ("Transfer-Encoding: chunked\r\n", sound(Body::Chunked)),
            ("transfer-encoding: Chunked\r\n", sound(Body::Chunked)),
            ("Upgrade: websocket\r\n", sound(Body::Unknown)),
            ("content-length: +5\r\n", Err(Reason::BadLength)),
            ("content-length: 0x5\r\n", Err(Reason::BadLength)),
            ("content-length: 5 5\r\n", Err(Reason::BadLength)),
            ("content-length: 5,5\r\n", Err(Reason::BadLength)),
            ("content-length:\r\n", Err(Reason::BadLength)),
            ("content-length: 99999999999999999999\r\n", Err(Reason::BadLength)),
            (
                "content-length: 2\r\ncontent-length: 2\r\n",
                Err(Reason::SeveralLengths),
            ),
            (
                "content-length: 2\r\ncontent-length: 3\r\n",
                Err(Reason::SeveralLengths),
            ),
            ("transfer-encoding: gzip, chunked\r\n", Err(Reason::BadCoding)),
            ("transfer-encoding: chunked, gzip\r\n", Err(Reason::BadCoding)),
            (
                "transfer-encoding: chunked\r\ntransfer-encoding: chunked\r\n",
                Err(Reason::BadCoding),
            ),
            (
                "transfer-encoding: chunked\r\ncontent-length: 3\r\n",
                Err(Reason::LengthAndCoding),
            ),
            (
                "content-length: 3\r\ntransfer-encoding: gzip\r\n",
                Err(Reason::LengthAndCoding),
            ),
        ];
        for (headers, expected) in cases {
            let head = format!("POST / HTTP/1.1\r\n{headers}\r\n");
            let Parsed::Complete(len, verdict) = parse(head.as_bytes(), 100) else {
                panic!("{head:?} does not parse");
            };
            assert_eq!(len, head.len());
            assert_eq!(verdict, expected, "{headers:?}");
        }
        let Parsed::Complete(_, verdict) = parse(b"POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n", 100) else {
            panic!("HTTP/1.0 does not parse");
        };
        assert_eq!(verdict, Err(Reason::BadCoding), "HTTP/1.0 has no transfer coding");
        let Parsed::Complete(_, verdict) = parse(b"CONNECT a:443 HTTP/1.1\r\n\r\n", 100) else {
            panic!("CONNECT does not parse");
        };
        assert_eq!(verdict, Ok(Body::Unknown));
    }

    #[test]
    fn empty_lines_between_requests_are_skipped_as_hyper_does() {
        let wire = b"\r\n\nGET /a HTTP/1.1\r\n\r\n\r\nGET /b HTTP/1.1\r\n\r\n";
        assert_eq!(verdicts(wire, 1, 3), vec![Ok(()), Ok(()), Err(400)]);
    }

    #[test]
    fn more_header_slots_than_the_stack_holds() {
        let many: String = (0..150).map(|i| format!("x-{i}: 1\r\n")).collect();
        let wire = format!("GET / HTTP/1.1\r\n{many}\r\n");
        let (mut watch, verdicts) = Watch::new(64 * 1024, 200);
        watch.feed(wire.as_bytes());
        assert_eq!(verdicts.next(), Ok(()));
    }

    #[test]
    fn close_after_sets_connection_close() {
        let mut response = Response::new(());
        close_after(&mut response);
        assert_eq!(response.headers()[CONNECTION], "close");
    }
}
