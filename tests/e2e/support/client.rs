//! Clients the way apps talk to their sidecar: HTTP/1.1 written by hand (so tests
//! can send exactly the bytes an attacker would), and HTTP/2 prior knowledge
//! through hyper (for h2 and gRPC).

use std::io::{Read, Write};
use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, Request};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::{TokioExecutor, TokioIo};

/// A response.
#[derive(Debug, Clone)]
pub struct Reply {
    pub status: u16,
    pub headers: HeaderMap,
    pub body: String,
    pub trailers: Option<HeaderMap>,
}

impl Reply {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.body))
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

/// Sends raw HTTP/1.1 bytes and reads the whole response (the request should say
/// `Connection: close`). Status 0 when the connection closed without an answer.
pub fn raw(addr: SocketAddr, request: &[u8]) -> Reply {
    let mut tcp = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(5)).unwrap();
    tcp.set_read_timeout(Some(Duration::from_secs(15))).unwrap();
    let _ = tcp.write_all(request);
    let mut bytes = Vec::new();
    let _ = tcp.read_to_end(&mut bytes);
    parse(&bytes)
}

/// `METHOD http://HOST/PATH` in proxy form, as an app configured with an HTTP
/// proxy sends it, with `extra` header lines.
pub fn call(outbound: SocketAddr, method: &str, host: &str, path: &str, extra: &[(&str, &str)]) -> Reply {
    let mut request = format!("{method} http://{host}{path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n");
    for (name, value) in extra {
        request.push_str(&format!("{name}: {value}\r\n"));
    }
    if method == "POST" || method == "PUT" {
        request.push_str("Content-Length: 2\r\n\r\n{}");
    } else {
        request.push_str("\r\n");
    }
    raw(outbound, request.as_bytes())
}

fn parse(bytes: &[u8]) -> Reply {
    let text = String::from_utf8_lossy(bytes);
    let Some((head, body)) = text.split_once("\r\n\r\n") else {
        return Reply {
            status: 0,
            headers: HeaderMap::new(),
            body: text.into_owned(),
            trailers: None,
        };
    };
    let mut lines = head.split("\r\n");
    let status = lines
        .next()
        .and_then(|l| l.get(9..12))
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let mut headers = HeaderMap::new();
    for line in lines {
        if let Some((name, value)) = line.split_once(':') {
            if let (Ok(name), Ok(value)) = (
                http::HeaderName::from_bytes(name.trim().as_bytes()),
                http::HeaderValue::from_str(value.trim()),
            ) {
                headers.append(name, value);
            }
        }
    }
    let chunked = headers
        .get("transfer-encoding")
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"chunked"));
    let body = if chunked { dechunk(body) } else { body.to_string() };
    Reply {
        status,
        headers,
        body,
        trailers: None,
    }
}

fn dechunk(mut rest: &str) -> String {
    let mut out = String::new();
    while let Some((size, after)) = rest.split_once("\r\n") {
        let Ok(size) = usize::from_str_radix(size.trim(), 16) else {
            break;
        };
        if size == 0 || after.len() < size {
            break;
        }
        out.push_str(&after[..size]);
        rest = after[size..].trim_start_matches("\r\n");
    }
    out
}

/// One HTTP/2 (prior knowledge) request to a sidecar's outbound port.
pub async fn h2(outbound: SocketAddr, request: Request<Full<Bytes>>) -> Reply {
    let tcp = tokio::net::TcpStream::connect(outbound).await.unwrap();
    let (mut sender, connection) = hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tcp))
        .await
        .unwrap();
    tokio::spawn(connection);
    let response = sender.send_request(request).await.unwrap();
    let (parts, body) = response.into_parts();
    let collected = body.collect().await.unwrap();
    let trailers = collected.trailers().cloned();
    let bytes = collected.to_bytes();
    Reply {
        status: parts.status.as_u16(),
        headers: parts.headers,
        body: String::from_utf8_lossy(&bytes).into_owned(),
        trailers,
    }
}

/// A gRPC-shaped unary call: one length-prefixed message, `te: trailers`.
pub fn grpc_request(host: &str, method_path: &str) -> Request<Full<Bytes>> {
    let message = b"{}";
    let mut frame = vec![0u8];
    frame.extend_from_slice(&u32::try_from(message.len()).unwrap().to_be_bytes());
    frame.extend_from_slice(message);
    Request::builder()
        .method("POST")
        .uri(format!("http://{host}{method_path}"))
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .body(Full::new(Bytes::from(frame)))
        .unwrap()
}
