//! A tiny real app for the mesh tests: HTTP/1.1 and HTTP/2 (prior knowledge) on
//! loopback, answering every request with what it saw, and answering gRPC-shaped
//! requests with a gRPC frame and `grpc-status: 0` trailers.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http::{HeaderMap, Request, Response};
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;

/// One request as the app received it.
#[derive(Debug, Clone)]
pub struct Seen {
    pub method: String,
    pub target: String,
    pub headers: HeaderMap,
}

impl Seen {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

/// A running app.
pub struct App {
    pub addr: SocketAddr,
    seen: Arc<Mutex<Vec<Seen>>>,
    task: tokio::task::JoinHandle<()>,
}

impl App {
    /// Starts an app named `name` on a free port of `ip`.
    pub async fn start_on(name: &'static str, ip: std::net::IpAddr) -> Self {
        let listener = tokio::net::TcpListener::bind((ip, 0)).await.unwrap();
        Self::serve(name, listener)
    }

    fn serve(name: &'static str, listener: tokio::net::TcpListener) -> Self {
        let addr = listener.local_addr().unwrap();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let recorded = Arc::clone(&seen);
        let task = tokio::spawn(async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    continue;
                };
                let recorded = Arc::clone(&recorded);
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(move |request: Request<Incoming>| {
                        let recorded = Arc::clone(&recorded);
                        async move { Ok::<_, Infallible>(answer(name, request, &recorded).await) }
                    });
                    let _ = auto::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(tcp), service)
                        .await;
                });
            }
        });
        Self { addr, seen, task }
    }

    /// Every request received so far.
    pub fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }

    pub fn count(&self) -> usize {
        self.seen.lock().unwrap().len()
    }
}

impl Drop for App {
    fn drop(&mut self) {
        self.task.abort();
    }
}

type AppBody = http_body_util::Either<Full<Bytes>, StreamBody<futures_stream::Iter<Result<Frame<Bytes>, Infallible>>>>;

async fn answer(name: &str, request: Request<Incoming>, recorded: &Mutex<Vec<Seen>>) -> Response<AppBody> {
    let (parts, body) = request.into_parts();
    let _ = body.collect().await;
    let seen = Seen {
        method: parts.method.to_string(),
        target: parts.uri.path_and_query().map(|p| p.to_string()).unwrap_or_default(),
        headers: parts.headers.clone(),
    };
    let grpc = parts
        .headers
        .get("content-type")
        .is_some_and(|v| v.as_bytes().starts_with(b"application/grpc"));
    let text = serde_json::json!({
        "app": name,
        "method": seen.method,
        "target": seen.target,
        "xfcc": seen.header("x-forwarded-client-cert"),
        "requestId": seen.header("x-request-id"),
    })
    .to_string();
    recorded.lock().unwrap().push(seen);
    if grpc {
        // One length-prefixed gRPC message holding the JSON, then the status trailers.
        let mut frame = vec![0u8];
        frame.extend_from_slice(&u32::try_from(text.len()).unwrap().to_be_bytes());
        frame.extend_from_slice(text.as_bytes());
        let mut trailers = HeaderMap::new();
        trailers.insert("grpc-status", "0".parse().unwrap());
        let frames = vec![Ok(Frame::data(Bytes::from(frame))), Ok(Frame::trailers(trailers))];
        let body = StreamBody::new(futures_stream::iter(frames));
        return Response::builder()
            .header("content-type", "application/grpc")
            .body(http_body_util::Either::Right(body))
            .unwrap();
    }
    Response::builder()
        .header("content-type", "application/json")
        .body(http_body_util::Either::Left(Full::new(Bytes::from(text))))
        .unwrap()
}

/// A minimal `Stream` over a vector, so the app needs no futures crate.
pub mod futures_stream {
    use std::pin::Pin;
    use std::task::{Context, Poll};

    pub struct Iter<T>(std::vec::IntoIter<T>);

    pub fn iter<T>(items: Vec<T>) -> Iter<T> {
        Iter(items.into_iter())
    }

    impl<T: Unpin> tokio_stream::Stream for Iter<T> {
        type Item = T;
        fn poll_next(mut self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<Option<T>> {
            Poll::Ready(self.0.next())
        }
    }
}
