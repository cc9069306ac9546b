//! The admin port: `/live`, `/ready`, `/metrics` (Prometheus text) and `/config`
//! (what the sidecar runs with), plain HTTP/1.1 on loopback.
//!
//! It runs on its own thread and single-threaded runtime, away from the data plane
//! (as ztunnel does), so a scrape never competes with requests for worker threads
//! and a busy data plane never makes the admin port unanswerable. [`serve`] is
//! generic over [`Pages`] so the control plane's admin port uses the same server.

use std::convert::Infallible;
use std::sync::Arc;

use bytes::Bytes;
use http::header::CONTENT_TYPE;
use http::{Method, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;

/// One answer of the admin port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Page {
    pub status: u16,
    pub content_type: &'static str,
    pub body: String,
}

impl Page {
    /// 200 with a JSON body.
    pub fn json(value: &serde_json::Value) -> Self {
        Self::json_with_status(200, value)
    }

    /// A JSON body with a status.
    pub fn json_with_status(status: u16, value: &serde_json::Value) -> Self {
        let mut body = serde_json::to_string_pretty(value).unwrap_or_default();
        body.push('\n');
        Self {
            status,
            content_type: "application/json",
            body,
        }
    }

    /// A plain-text body with a status.
    pub fn text(status: u16, body: impl Into<String>) -> Self {
        Self {
            status,
            content_type: "text/plain; charset=utf-8",
            body: body.into(),
        }
    }
}

/// What an admin port serves: a page per path, `None` for 404.
pub trait Pages: Send + Sync + 'static {
    fn page(&self, path: &str) -> Option<Page>;
}

/// Serves `pages` on `listener` from a thread of its own until the process ends.
///
/// # Errors
///
/// When the thread or its runtime cannot be started.
pub fn serve(listener: std::net::TcpListener, pages: Arc<dyn Pages>) -> std::io::Result<()> {
    listener.set_nonblocking(true)?;
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    std::thread::Builder::new()
        .name("palisade-admin".into())
        .spawn(move || runtime.block_on(accept_loop(listener, pages)))?;
    Ok(())
}

async fn accept_loop(listener: std::net::TcpListener, pages: Arc<dyn Pages>) {
    let listener = match tokio::net::TcpListener::from_std(listener) {
        Ok(listener) => listener,
        Err(e) => {
            tracing::error!(error = %e, "the admin port cannot serve");
            return;
        }
    };
    loop {
        let Ok((tcp, _)) = listener.accept().await else {
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            continue;
        };
        let pages = Arc::clone(&pages);
        tokio::spawn(async move {
            let service = service_fn(move |request| {
                let pages = Arc::clone(&pages);
                async move { Ok::<_, Infallible>(answer(pages.as_ref(), &request)) }
            });
            let connection = http1::Builder::new()
                .timer(hyper_util::rt::TokioTimer::new())
                .header_read_timeout(std::time::Duration::from_secs(5))
                .serve_connection(TokioIo::new(tcp), service);
            let _ = connection.await;
        });
    }
}

fn answer(pages: &dyn Pages, request: &Request<Incoming>) -> Response<Full<Bytes>> {
    let page = if request.method() == Method::GET || request.method() == Method::HEAD {
        pages
            .page(request.uri().path())
            .unwrap_or_else(|| Page::text(404, "not found: try /ready, /metrics or /config\n"))
    } else {
        Page::text(405, "the admin port answers GET only\n")
    };
    let mut response = Response::new(Full::new(Bytes::from(page.body)));
    *response.status_mut() = StatusCode::from_u16(page.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    if let Ok(value) = http::HeaderValue::from_str(page.content_type) {
        response.headers_mut().insert(CONTENT_TYPE, value);
    }
    response
}
