//! A `CONNECT` tunnel after its `200`: the app's ClientHello read and its SNI
//! checked against the target, then the upstream connected and both ways spliced.
//!
//! Everything before the `200` (the target, the decision, the addresses) is done by
//! the outbound pipeline; this is handed the connection once hyper lets go of it.
//! The bare TCP socket is taken back from under hyper and the framing watch, so
//! tunnel bytes are never parsed as HTTP; the bytes hyper had read past the
//! `CONNECT` head come first.

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context as TaskContext, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;
use hyper_util::server::conn::auto::upgrade::downcast;
use palisade_audit::record::ExternalKind;
use palisade_authz::normalize_host;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;

use super::address;
use super::sni::{self, Alert, ClientHello, HelloError, Progress, MAX_HELLO_BYTES};
use crate::audit::ExternalFacts;
use crate::context::Context;
use crate::request::framing::Watched;

/// The largest read while waiting for the ClientHello.
const READ_CHUNK: usize = 4096;

/// The most a refused tunnel reads and drops after its alert, and for how long.
const DRAIN_BYTES: usize = 64 * 1024;
const DRAIN_TIME: Duration = Duration::from_secs(1);

/// Buffer size of each direction of a spliced tunnel.
const SPLICE_BUFFER: usize = 32 * 1024;

/// An allowed tunnel, answered `200`.
#[derive(Debug)]
pub struct Tunnel {
    pub ctx: Arc<Context>,
    /// The canonical target host (no port).
    pub host: String,
    pub port: u16,
    /// `HOST:PORT`.
    pub resource: String,
    /// Where the name resolved to, checked.
    pub addrs: Vec<SocketAddr>,
    /// `Allowlisted` or `Passthrough`.
    pub kind: ExternalKind,
    /// Why it was allowed, for the record.
    pub reason: String,
    pub request_id: String,
}

/// A tunnel refused after its `200`.
#[derive(Debug)]
struct Refused {
    alert: Alert,
    reason: String,
    sni: String,
}

/// Takes the app's connection over once hyper hands it out (`upgrade`), and runs
/// the tunnel to its end; every outcome is reported (metrics and audit).
pub async fn run(tunnel: Tunnel, upgrade: OnUpgrade) {
    let limit = tunnel.ctx.limits.tunnel_hello_timeout;
    let upgraded = match tokio::time::timeout(limit, upgrade).await {
        Ok(Ok(upgraded)) => upgraded,
        Ok(Err(e)) => {
            tracing::debug!(request_id = %tunnel.request_id, error = %e, "the app connection closed before its tunnel began");
            return;
        }
        Err(_) => {
            tracing::debug!(request_id = %tunnel.request_id, "the app connection was not handed over in time");
            return;
        }
    };
    match downcast::<TokioIo<Watched<TcpStream>>>(upgraded) {
        Ok(parts) => tunnel.serve(parts.io.into_inner().into_inner(), parts.read_buf).await,
        Err(upgraded) => tunnel.serve(TokioIo::new(upgraded), Bytes::new()).await,
    }
}

impl Tunnel {
    async fn serve<S: AsyncRead + AsyncWrite + Unpin>(self, mut app: S, early: Bytes) {
        let limit = self.ctx.limits.tunnel_hello_timeout;
        let checked = match read_hello(&mut app, &early, limit).await {
            Ok((bytes, hello)) => self.check(&hello).map(|sni| (bytes, sni)),
            Err(refused) => Err(refused),
        };
        let (hello, sni) = match checked {
            Ok(found) => found,
            Err(refused) => {
                self.report(ExternalKind::BlackHole, &refused.sni, &refused.reason);
                refuse(&mut app, refused.alert).await;
                return;
            }
        };
        let timeout = self.ctx.limits.connect_timeout;
        let mut upstream = match address::connect(&self.resource, &self.addrs, timeout).await {
            Ok(upstream) => upstream,
            Err(e) => {
                self.report(self.kind, &sni, &format!("{}; but {e}", self.reason));
                refuse(&mut app, Alert::InternalError).await;
                return;
            }
        };
        if let Err(e) = upstream.write_all(&hello).await {
            self.report(
                self.kind,
                &sni,
                &format!("{}; but {} closed at once: {e}", self.reason, self.resource),
            );
            refuse(&mut app, Alert::InternalError).await;
            return;
        }
        self.report(self.kind, &sni, &self.reason);
        splice(app, upstream, self.ctx.limits.tunnel_idle_timeout, &self.request_id).await;
    }

    /// The SNI, when it is the target's name.
    fn check(&self, hello: &ClientHello<'_>) -> Result<String, Refused> {
        let sni = hello.sni.as_deref().unwrap_or_default().to_owned();
        let refused = |reason: String| Refused {
            alert: Alert::UnrecognizedName,
            reason,
            sni: sni.clone(),
        };
        if hello.encrypted {
            return Err(refused(format!(
                "the ClientHello is encrypted (ECH), so its SNI cannot be checked against the CONNECT target `{}`",
                self.host
            )));
        }
        if sni.is_empty() {
            return Err(refused(format!(
                "the ClientHello has no SNI; a tunnel goes only to the name it was opened for, `{}`",
                self.host
            )));
        }
        let same = normalize_host(&sni, None).is_ok_and(|name| name.port().is_none() && name.name() == self.host);
        if !same {
            return Err(refused(format!(
                "SNI `{sni}` does not match the CONNECT target `{}`",
                self.host
            )));
        }
        Ok(sni)
    }

    fn report(&self, kind: ExternalKind, sni: &str, reason: &str) {
        super::report(
            &self.ctx,
            &ExternalFacts {
                kind,
                workload: self.ctx.id.as_str(),
                host: &self.host,
                port: self.port,
                sni,
                protocol: "tls",
                request_id: &self.request_id,
                reason,
            },
        );
    }
}

/// Reads until the ClientHello is whole; returns every byte read (to forward) and
/// the hello.
async fn read_hello<S: AsyncRead + Unpin>(
    app: &mut S,
    early: &[u8],
    limit: Duration,
) -> Result<(Vec<u8>, ClientHello<'static>), Refused> {
    let failed = |reason: String| Refused {
        alert: Alert::HandshakeFailure,
        reason,
        sni: String::new(),
    };
    let unreadable = |e: HelloError| failed(format!("the tunnel did not start with a usable TLS ClientHello: {e}"));
    let mut bytes = Vec::with_capacity(early.len().max(READ_CHUNK));
    bytes.extend_from_slice(early);
    let reading = async {
        let mut chunk = [0u8; READ_CHUNK];
        loop {
            match sni::parse(&bytes) {
                Ok(Progress::Complete(hello)) => return Ok(hello.into_owned()),
                Ok(Progress::Incomplete) if bytes.len() >= MAX_HELLO_BYTES => {
                    return Err(unreadable(HelloError::TooLarge(bytes.len())));
                }
                Ok(Progress::Incomplete) => {}
                Err(e) => return Err(unreadable(e)),
            }
            let room = MAX_HELLO_BYTES.saturating_sub(bytes.len()).min(READ_CHUNK);
            let buf = chunk.get_mut(..room).unwrap_or_default();
            match app.read(buf).await {
                Ok(0) => {
                    return Err(failed(
                        "the app closed the tunnel before its ClientHello was whole".to_owned(),
                    ))
                }
                Ok(n) => bytes.extend_from_slice(buf.get(..n).unwrap_or_default()),
                Err(e) => return Err(failed(format!("reading the ClientHello failed: {e}"))),
            }
        }
    };
    match tokio::time::timeout(limit, reading).await {
        Ok(Ok(hello)) => Ok((bytes, hello)),
        Ok(Err(refused)) => Err(refused),
        Err(_) => Err(failed(format!(
            "no whole TLS ClientHello within {}s",
            limit.as_secs_f32()
        ))),
    }
}

/// Sends a fatal alert and closes. What the app sent meanwhile is read and
/// dropped for a moment (bounded), so closing with unread bytes does not reset the
/// connection before the app reads the alert.
async fn refuse<S: AsyncRead + AsyncWrite + Unpin>(app: &mut S, alert: Alert) {
    // The app may be gone already; there is nothing more to tell it then.
    let _ = app.write_all(&alert.record()).await;
    let _ = app.shutdown().await;
    let mut sink = [0u8; READ_CHUNK];
    let mut left = DRAIN_BYTES;
    let drain = async {
        while left > 0 {
            match app.read(&mut sink).await {
                Ok(0) | Err(_) => return,
                Ok(n) => left = left.saturating_sub(n),
            }
        }
    };
    let _ = tokio::time::timeout(DRAIN_TIME, drain).await;
}

/// Copies both ways until both sides are done, or nothing moved for `idle`.
async fn splice<A, B>(app: A, upstream: B, idle: Duration, request_id: &str)
where
    A: AsyncRead + AsyncWrite + Unpin,
    B: AsyncRead + AsyncWrite + Unpin,
{
    let start = Instant::now();
    let last = AtomicU64::new(0);
    let mut app = Touching {
        inner: app,
        last: &last,
        start,
    };
    let mut upstream = Touching {
        inner: upstream,
        last: &last,
        start,
    };
    let copy = tokio::io::copy_bidirectional_with_sizes(&mut app, &mut upstream, SPLICE_BUFFER, SPLICE_BUFFER);
    tokio::pin!(copy);
    loop {
        let quiet = start
            .elapsed()
            .saturating_sub(Duration::from_millis(last.load(Ordering::Relaxed)));
        let wait = idle.saturating_sub(quiet);
        if wait.is_zero() {
            tracing::debug!(request_id, "a tunnel was idle too long; closed");
            return;
        }
        tokio::select! {
            result = &mut copy => {
                match result {
                    Ok((sent, received)) => tracing::debug!(request_id, sent, received, "a tunnel ended"),
                    Err(e) => tracing::debug!(request_id, error = %e, "a tunnel ended with an error"),
                }
                return;
            }
            () = tokio::time::sleep(wait) => {}
        }
    }
}

/// A stream that notes, in milliseconds since `start`, when it last read a byte.
struct Touching<'a, S> {
    inner: S,
    last: &'a AtomicU64,
    start: Instant,
}

impl<S: AsyncRead + Unpin> AsyncRead for Touching<'_, S> {
    fn poll_read(self: Pin<&mut Self>, cx: &mut TaskContext<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let poll = Pin::new(&mut this.inner).poll_read(cx, buf);
        if matches!(poll, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            let now = u64::try_from(this.start.elapsed().as_millis()).unwrap_or(u64::MAX);
            this.last.store(now, Ordering::Relaxed);
        }
        poll
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Touching<'_, S> {
    fn poll_write(self: Pin<&mut Self>, cx: &mut TaskContext<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}
