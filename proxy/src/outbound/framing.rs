//! One framing per HTTP/1 request (`SECURITY.md` §2), checked on the bytes hyper
//! reads.
//!
//! hyper accepts a request carrying both `Content-Length` and `Transfer-Encoding`
//! (it honours the coding, drops the length and closes the connection after the
//! response, as RFC 9112 §6.3 allows), and folds repeated equal `Content-Length`
//! lines into one. By the time the request reaches the pipeline neither is visible,
//! yet both mean the sender and some other parser may disagree on where the request
//! ends: we refuse them with 400.
//!
//! [`Watched`] wraps the app's connection and reads its bytes beside hyper, never
//! changing one. It finds each request head, notes the heads whose framing is
//! ambiguous or too large, and follows the body's framing (a length, or chunked
//! exactly as hyper decodes it) only to find where the next head starts. The
//! pipeline asks [`Heads::verdict`] about the n-th request of the connection.
//! Once the watch cannot follow (a head it cannot parse, HTTP/2's preface, a
//! malformed chunk: all input hyper refuses too), it stops looking, and any later
//! HTTP/1 request on that connection is refused rather than let through unchecked.

use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use crate::request::Refusal;

/// The app's connection, with its request heads watched.
#[derive(Debug)]
pub(crate) struct Watched<IO> {
    io: IO,
    watch: Watch,
}

/// What the watch learned about a connection's request heads, shared with the
/// requests' pipelines.
#[derive(Debug, Clone, Default)]
pub(crate) struct Heads(Arc<Mutex<HeadLog>>);

#[derive(Debug, Default)]
struct HeadLog {
    /// How many heads were read completely.
    complete: u64,
    /// The heads (by index) that must be refused, oldest first.
    flagged: Vec<(u64, Flag)>,
    /// The watch stopped following the connection after `complete` heads.
    lost: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Flag {
    LengthAndCoding,
    SeveralLengths,
    TooLarge,
}

#[derive(Debug)]
struct Watch {
    state: State,
    /// The index of the head being read or whose body is being skipped.
    index: u64,
    max_header_bytes: usize,
    max_headers: usize,
    heads: Heads,
}

#[derive(Debug)]
enum State {
    /// Reading a head; the bytes so far.
    Head(Vec<u8>),
    /// Skipping a body of known length; bytes left.
    Fixed(u64),
    /// Skipping a chunked body.
    Chunked(Chunk),
    /// No longer following: nothing more is learned.
    Lost,
}

/// Where a chunked body is, state for state as hyper's decoder
/// (`proto/h1/decode.rs`) reads it.
#[derive(Debug, Clone, Copy)]
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
}

/// A chunk's next state, or `None` when the body has ended.
type Step = Result<Option<Chunk>, ()>;

impl<IO> Watched<IO> {
    /// Wraps `io`; a head over `max_header_bytes` is refused with 431.
    pub(crate) fn new(io: IO, max_header_bytes: usize, max_headers: usize) -> (Self, Heads) {
        let heads = Heads::default();
        let watch = Watch {
            state: State::Head(Vec::new()),
            index: 0,
            max_header_bytes,
            max_headers,
            heads: heads.clone(),
        };
        (Self { io, watch }, heads)
    }
}

impl Heads {
    /// Whether the `index`-th request (from 0) of the connection may proceed.
    ///
    /// # Errors
    ///
    /// 400 for an ambiguous framing or one the watch could not follow, 431 for a
    /// head over the size limit.
    pub(crate) fn verdict(&self, index: u64) -> Result<(), Refusal> {
        let mut log = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        let flag = log.flagged.iter().find(|(i, _)| *i == index).map(|(_, flag)| *flag);
        log.flagged.retain(|(i, _)| *i > index);
        match flag {
            Some(Flag::LengthAndCoding) => Err(bad("the request has both Content-Length and Transfer-Encoding")),
            Some(Flag::SeveralLengths) => Err(bad("the request has several Content-Length headers")),
            Some(Flag::TooLarge) => Err(Refusal::HeadersTooLarge),
            None if index < log.complete => Ok(()),
            None => Err(bad(
                "the connection's earlier framing could not be followed; open a new connection",
            )),
        }
    }

    fn complete(&self, index: u64, flag: Option<Flag>) {
        let mut log = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        log.complete = index + 1;
        if let Some(flag) = flag {
            log.flagged.push((index, flag));
        }
    }

    fn lose(&self) {
        self.0.lock().unwrap_or_else(PoisonError::into_inner).lost = true;
    }
}

fn bad(reason: &str) -> Refusal {
    Refusal::BadRequest(reason.to_owned())
}

impl Watch {
    /// Follows `input`, the next bytes the app sent.
    fn feed(&mut self, mut input: &[u8]) {
        while !input.is_empty() {
            input = match &mut self.state {
                State::Lost => return,
                State::Head(_) => self.head(input),
                State::Fixed(left) => {
                    let (skipped, rest) = skip(left, input);
                    if skipped {
                        self.next_head();
                    }
                    rest
                }
                State::Chunked(chunk) => match chunked(chunk, input) {
                    Ok((true, rest)) => {
                        self.next_head();
                        rest
                    }
                    Ok((false, rest)) => rest,
                    Err(()) => {
                        self.lose();
                        return;
                    }
                },
            };
        }
    }

    /// Adds `input` to the head being read; returns what follows the head.
    fn head<'a>(&mut self, input: &'a [u8]) -> &'a [u8] {
        let State::Head(buf) = &mut self.state else {
            return input;
        };
        let before = buf.len();
        buf.extend_from_slice(input);
        let mut lines = vec![httparse::EMPTY_HEADER; self.max_headers];
        let mut request = httparse::Request::new(&mut lines);
        match request.parse(buf) {
            Ok(httparse::Status::Complete(len)) => {
                let too_large = len > self.max_header_bytes;
                let framing = framing(request.headers);
                let rest = input.get(len.saturating_sub(before)..).unwrap_or_default();
                self.body(framing, too_large);
                rest
            }
            Ok(httparse::Status::Partial) if buf.len() <= self.max_header_bytes => &[],
            Ok(httparse::Status::Partial) => {
                self.heads.complete(self.index, Some(Flag::TooLarge));
                self.lose();
                &[]
            }
            Err(_) => {
                self.lose();
                &[]
            }
        }
    }

    /// Records the head just read and moves on to its body.
    fn body(&mut self, framing: Framing, too_large: bool) {
        let (flag, state) = match framing {
            Framing::Length(n) => (None, State::Fixed(n)),
            Framing::Chunked => (None, State::Chunked(Chunk::Start)),
            Framing::LengthAndChunked => (Some(Flag::LengthAndCoding), State::Chunked(Chunk::Start)),
            Framing::SeveralLengths(n) => (Some(Flag::SeveralLengths), State::Fixed(n)),
            Framing::Refused => (None, State::Lost),
        };
        let flag = if too_large { Some(Flag::TooLarge) } else { flag };
        self.heads.complete(self.index, flag);
        self.state = state;
        if matches!(self.state, State::Lost) {
            self.heads.lose();
        } else if matches!(self.state, State::Fixed(0)) {
            self.next_head();
        }
    }

    fn next_head(&mut self) {
        let mut buf = match std::mem::replace(&mut self.state, State::Lost) {
            State::Head(buf) => buf,
            _ => Vec::new(),
        };
        buf.clear();
        self.state = State::Head(buf);
        self.index += 1;
    }

    fn lose(&mut self) {
        self.state = State::Lost;
        self.heads.lose();
    }
}

/// How a request's body is delimited, by its head.
#[derive(Debug, PartialEq, Eq)]
enum Framing {
    Length(u64),
    Chunked,
    /// Both headers: hyper reads the body as chunked.
    LengthAndChunked,
    /// Repeated, equal lengths: hyper reads one.
    SeveralLengths(u64),
    /// hyper refuses the head (a bad length or coding): the connection ends.
    Refused,
}

fn framing(headers: &[httparse::Header<'_>]) -> Framing {
    let mut lengths = headers.iter().filter(|h| h.name.eq_ignore_ascii_case("content-length"));
    let codings: Vec<&[u8]> = headers
        .iter()
        .filter(|h| h.name.eq_ignore_ascii_case("transfer-encoding"))
        .map(|h| h.value)
        .collect();
    let first = lengths.next().map(|h| parse_length(h.value));
    let more = lengths.map(|h| parse_length(h.value)).collect::<Vec<_>>();
    match (codings.last(), first) {
        (Some(last), length) if is_chunked(last) => match length {
            Some(_) => Framing::LengthAndChunked,
            None => Framing::Chunked,
        },
        (Some(_), _) => Framing::Refused,
        (None, None) => Framing::Length(0),
        (None, Some(Some(n))) if more.is_empty() => Framing::Length(n),
        (None, Some(Some(n))) if more.iter().all(|m| *m == Some(n)) => Framing::SeveralLengths(n),
        (None, Some(_)) => Framing::Refused,
    }
}

/// A length as hyper reads one: decimal digits only.
fn parse_length(value: &[u8]) -> Option<u64> {
    if value.is_empty() || !value.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(value).ok()?.parse().ok()
}

/// Whether the last coding of a `Transfer-Encoding` line is `chunked`, as hyper checks.
fn is_chunked(value: &[u8]) -> bool {
    value
        .rsplit(|b| *b == b',')
        .next()
        .is_some_and(|last| last.trim_ascii().eq_ignore_ascii_case(b"chunked"))
}

/// Skips up to `left` bytes of `input`; returns whether the body ended and the rest.
fn skip<'a>(left: &mut u64, input: &'a [u8]) -> (bool, &'a [u8]) {
    let n = usize::try_from(*left).unwrap_or(usize::MAX).min(input.len());
    *left -= n as u64;
    (*left == 0, input.get(n..).unwrap_or_default())
}

/// Follows a chunked body through `input`; returns whether it ended and the rest.
fn chunked<'a>(chunk: &mut Chunk, mut input: &'a [u8]) -> Result<(bool, &'a [u8]), ()> {
    while let Some((&byte, rest)) = input.split_first() {
        if let Chunk::Data(left) = chunk {
            let (done, rest) = skip(left, input);
            if done {
                *chunk = Chunk::DataCr;
            }
            input = rest;
            continue;
        }
        input = rest;
        match chunk_step(*chunk, byte)? {
            Some(next) => *chunk = next,
            None => return Ok((true, input)),
        }
    }
    Ok((false, input))
}

/// One byte of chunk framing.
fn chunk_step(chunk: Chunk, byte: u8) -> Step {
    let next = match (chunk, byte) {
        (Chunk::Start, _) => Chunk::Size(hex(0, byte)?),
        (Chunk::Size(size), b'\t' | b' ') => Chunk::SizeLws(size),
        (Chunk::Size(size) | Chunk::SizeLws(size), b';') => Chunk::Extension(size),
        (Chunk::Size(size) | Chunk::SizeLws(size) | Chunk::Extension(size), b'\r') => Chunk::SizeLf(size),
        (Chunk::Size(size), _) => Chunk::Size(hex(size, byte)?),
        (Chunk::SizeLws(size), b'\t' | b' ') => Chunk::SizeLws(size),
        (Chunk::Extension(_), b'\n') => return Err(()),
        (Chunk::Extension(size), _) => Chunk::Extension(size),
        (Chunk::SizeLf(0), b'\n') => Chunk::EndCr,
        (Chunk::SizeLf(size), b'\n') => Chunk::Data(size),
        (Chunk::DataCr, b'\r') => Chunk::DataLf,
        (Chunk::DataLf, b'\n') => Chunk::Start,
        (Chunk::EndCr, b'\r') => Chunk::EndLf,
        (Chunk::Trailer, b'\r') => Chunk::TrailerLf,
        (Chunk::EndCr | Chunk::Trailer, _) => Chunk::Trailer,
        (Chunk::TrailerLf, b'\n') => Chunk::EndCr,
        (Chunk::EndLf, b'\n') => return Ok(None),
        _ => return Err(()),
    };
    Ok(Some(next))
}

/// `size` with one more hex digit, refusing overflow.
fn hex(size: u64, digit: u8) -> Result<u64, ()> {
    let value = char::from(digit).to_digit(16).ok_or(())?;
    size.checked_mul(16)
        .and_then(|s| s.checked_add(u64::from(value)))
        .ok_or(())
}

impl<IO: AsyncRead + Unpin> AsyncRead for Watched<IO> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let this = &mut *self;
        let poll = Pin::new(&mut this.io).poll_read(cx, buf);
        if let Poll::Ready(Ok(())) = poll {
            this.watch.feed(buf.filled().get(before..).unwrap_or_default());
        }
        poll
    }
}

impl<IO: AsyncWrite + Unpin> AsyncWrite for Watched<IO> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Feeds `bytes` in pieces of `step` bytes and asks about `requests` requests.
    fn verdicts(bytes: &[u8], step: usize, requests: u64) -> Vec<Result<(), u16>> {
        let (mut watched, heads) = Watched::new((), 64 * 1024, 100);
        for piece in bytes.chunks(step) {
            watched.watch.feed(piece);
        }
        (0..requests)
            .map(|i| heads.verdict(i).map_err(|r| r.status().as_u16()))
            .collect()
    }

    #[test]
    fn heads_are_found_across_bodies_whatever_the_read_sizes() {
        let stream: &[u8] = b"GET /a HTTP/1.1\r\nHost: a\r\n\r\n\
            POST /b HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nhello\
            POST /c HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n\
            5;ext=1\r\nhello\r\nA \r\n0123456789\r\n0\r\nx-trailer: 1\r\n\r\n\
            POST /d HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n\
            POST /e HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\nContent-Length: 1\r\n\r\nx\
            GET /f HTTP/1.1\r\nHost: a\r\n\r\n";
        let expected = vec![Ok(()), Ok(()), Ok(()), Err(400), Err(400), Ok(()), Err(400)];
        for step in [1, 3, 7, stream.len()] {
            assert_eq!(verdicts(stream, step, 7), expected, "read size {step}");
        }
    }

    #[test]
    fn the_order_of_length_and_coding_does_not_matter() {
        let stream = b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n0\r\n\r\n";
        assert_eq!(verdicts(stream, 5, 1), vec![Err(400)]);
    }

    #[test]
    fn an_oversized_head_is_431_and_nothing_after_it_passes() {
        let mut stream = b"GET / HTTP/1.1\r\nx-big: ".to_vec();
        stream.extend(std::iter::repeat_n(b'a', 70 * 1024));
        stream.extend_from_slice(b"\r\n\r\nGET / HTTP/1.1\r\n\r\n");
        assert_eq!(verdicts(&stream, 4096, 2), vec![Err(431), Err(400)]);
    }

    #[test]
    fn http2_and_broken_chunks_stop_the_watch() {
        assert_eq!(verdicts(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", 24, 1), vec![Err(400)]);
        let broken = b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nGET / HTTP/1.1\r\n\r\n";
        assert_eq!(verdicts(broken, 8, 2), vec![Ok(()), Err(400)]);
    }

    #[test]
    fn framing_by_head() {
        let h = |name, value| httparse::Header { name, value };
        let cases: [(Vec<httparse::Header<'_>>, Framing); 6] = [
            (vec![], Framing::Length(0)),
            (vec![h("Content-Length", b"12")], Framing::Length(12)),
            (vec![h("content-length", b"+5")], Framing::Refused),
            (vec![h("transfer-encoding", b"gzip, chunked")], Framing::Chunked),
            (vec![h("transfer-encoding", b"chunked, gzip")], Framing::Refused),
            (
                vec![h("content-length", b"2"), h("content-length", b"3")],
                Framing::Refused,
            ),
        ];
        for (headers, expected) in cases {
            assert_eq!(framing(&headers), expected, "{headers:?}");
        }
    }
}
