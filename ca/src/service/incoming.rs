//! The CA's TLS listener: accepts TCP, runs the TLS 1.3 handshake (client
//! certificate optional, verified when present) off the accept loop with a
//! deadline, and hands tonic connections that carry the verified peer identity.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_rustls::server::TlsStream;
use tokio_rustls::TlsAcceptor;
use tonic::transport::server::Connected;

use crate::serial::Serial;
use crate::spiffe_id::SpiffeId;
use crate::svid::SvidFacts;

/// How long a client has to finish the TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// How many handshakes may be in progress at once; a connection beyond that is
/// closed at once, so unauthenticated clients cannot pile up pending handshakes.
const MAX_PENDING_HANDSHAKES: usize = 256;

/// The verified client SVID of a connection, if the client presented one.
#[derive(Debug, Clone, Default)]
pub struct PeerInfo {
    pub svid: Option<PeerSvid>,
}

/// Facts of a client certificate that passed the handshake's verifier.
#[derive(Debug, Clone)]
pub struct PeerSvid {
    pub id: SpiffeId,
    pub serial: Serial,
    pub not_after: SystemTime,
}

/// A TLS connection handed to tonic.
#[derive(Debug)]
pub struct TlsConn {
    io: TlsStream<TcpStream>,
    peer: PeerInfo,
}

impl Connected for TlsConn {
    type ConnectInfo = PeerInfo;

    fn connect_info(&self) -> PeerInfo {
        self.peer.clone()
    }
}

impl AsyncRead for TlsConn {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl AsyncWrite for TlsConn {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

/// Accepts connections forever, sending each completed handshake to `tx`.
pub async fn accept_loop(listener: TcpListener, acceptor: TlsAcceptor, tx: mpsc::Sender<io::Result<TlsConn>>) {
    let pending = Arc::new(tokio::sync::Semaphore::new(MAX_PENDING_HANDSHAKES));
    loop {
        let (tcp, remote) = match listener.accept().await {
            Ok(conn) => conn,
            Err(e) => {
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let Ok(permit) = Arc::clone(&pending).try_acquire_owned() else {
            tracing::warn!(%remote, limit = MAX_PENDING_HANDSHAKES, "too many TLS handshakes in progress; connection closed");
            drop(tcp);
            continue;
        };
        let acceptor = acceptor.clone();
        let tx = tx.clone();
        tokio::spawn(async move {
            let _permit = permit;
            match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                Ok(Ok(io)) => {
                    let peer = peer_info(&io);
                    let _ = tx.send(Ok(TlsConn { io, peer })).await;
                }
                Ok(Err(e)) => tracing::info!(%remote, error = %e, "TLS handshake refused"),
                Err(_) => tracing::info!(%remote, "TLS handshake timed out"),
            }
        });
    }
}

fn peer_info(io: &TlsStream<TcpStream>) -> PeerInfo {
    let leaf = io.get_ref().1.peer_certificates().and_then(|c| c.first());
    let svid = leaf.and_then(|leaf| {
        let facts = SvidFacts::parse(leaf).ok()?;
        Some(PeerSvid {
            id: facts.id?,
            serial: facts.serial,
            not_after: facts.not_after,
        })
    });
    PeerInfo { svid }
}

/// Shared so tests and the CA's own renewals can build acceptors the same way.
pub fn acceptor(config: rustls::ServerConfig) -> TlsAcceptor {
    TlsAcceptor::from(Arc::new(config))
}
