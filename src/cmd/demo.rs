//! `palisade demo app`: the small HTTP app the demo puts behind each sidecar.

use std::convert::Infallible;
use std::sync::Arc;

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Request, Response};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;

use super::shutdown_signal;
use crate::cli::{DemoApp, DemoCommand};
use crate::exit;

pub async fn run(command: DemoCommand) -> anyhow::Result<u8> {
    match command {
        DemoCommand::App(a) => app(a).await,
    }
}

async fn app(a: DemoApp) -> anyhow::Result<u8> {
    let listener = tokio::net::TcpListener::bind(a.listen)
        .await
        .map_err(|e| anyhow::anyhow!("cannot listen on {}: {e}; is another process using it?", a.listen))?;
    println!("palisade demo app `{}` listening on {}", a.name, listener.local_addr()?);
    let name: Arc<str> = a.name.into();
    let accept = async {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                continue;
            };
            let _ = tcp.set_nodelay(true);
            let name = Arc::clone(&name);
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |request| {
                    let name = Arc::clone(&name);
                    async move { Ok::<_, Infallible>(answer(&name, request).await) }
                });
                let _ = auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(tcp), service)
                    .await;
            });
        }
    };
    tokio::select! {
        () = accept => {}
        () = shutdown_signal() => {}
    }
    Ok(exit::OK)
}

/// Echoes what the app saw; gRPC-shaped requests get a gRPC answer.
async fn answer(name: &str, request: Request<Incoming>) -> Response<GrpcOrJson> {
    let (parts, body) = request.into_parts();
    let _ = body.collect().await;
    let header = |n: &str| parts.headers.get(n).and_then(|v| v.to_str().ok());
    let caller = header("x-forwarded-client-cert").and_then(|x| x.split(";URI=").nth(1));
    let text = serde_json::json!({
        "app": name,
        "method": parts.method.as_str(),
        "target": parts.uri.path_and_query().map_or("/", |p| p.as_str()),
        "caller": caller,
        "requestId": header("x-request-id"),
    })
    .to_string();
    let grpc = header("content-type").is_some_and(|v| v.starts_with("application/grpc"));
    let mut response = Response::new(GrpcOrJson::new(text, grpc));
    let content_type = if grpc { "application/grpc" } else { "application/json" };
    response
        .headers_mut()
        .insert(http::header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    response
}

/// A JSON body, or the same JSON as one gRPC message followed by `grpc-status: 0`.
#[derive(Debug)]
struct GrpcOrJson {
    data: Option<Bytes>,
    trailers: Option<HeaderMap>,
}

impl GrpcOrJson {
    fn new(text: String, grpc: bool) -> Self {
        if !grpc {
            return Self {
                data: Some(Bytes::from(text)),
                trailers: None,
            };
        }
        let len = u32::try_from(text.len()).unwrap_or(u32::MAX);
        let mut frame = Vec::with_capacity(text.len() + 5);
        frame.push(0);
        frame.extend_from_slice(&len.to_be_bytes());
        frame.extend_from_slice(text.as_bytes());
        let mut trailers = HeaderMap::new();
        trailers.insert("grpc-status", HeaderValue::from_static("0"));
        Self {
            data: Some(Bytes::from(frame)),
            trailers: Some(trailers),
        }
    }
}

impl hyper::body::Body for GrpcOrJson {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<hyper::body::Frame<Bytes>, Infallible>>> {
        let frame = match (self.data.take(), self.trailers.take()) {
            (Some(data), trailers) => {
                self.trailers = trailers;
                Some(hyper::body::Frame::data(data))
            }
            (None, Some(trailers)) => Some(hyper::body::Frame::trailers(trailers)),
            (None, None) => None,
        };
        std::task::Poll::Ready(frame.map(Ok))
    }

    fn is_end_stream(&self) -> bool {
        self.data.is_none() && self.trailers.is_none()
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        match (&self.data, &self.trailers) {
            (Some(data), None) => hyper::body::SizeHint::with_exact(data.len() as u64),
            _ => hyper::body::SizeHint::default(),
        }
    }
}
