//! Bodies as they cross the sidecar: data frames pass untouched, trailers are
//! sanitized like heads are (`SECURITY.md` §1 rules 6–7), since HTTP/2 and gRPC
//! trailers are header fields too and an app may read identity from them.

use std::pin::Pin;
use std::task::{Context, Poll};

use hyper::body::{Body, Frame, Incoming, SizeHint};

use super::headers;

/// A body streamed through the sidecar, its trailers sanitized.
pub type Streamed = SanitizedTrailers<Incoming>;

/// A body whose trailer frames lose their hop-by-hop and identity fields
/// (`x-forwarded-client-cert`, `x-palisade-*`). Data frames pass as they are: no
/// copy, no allocation.
#[derive(Debug)]
pub struct SanitizedTrailers<B> {
    inner: B,
}

impl<B> SanitizedTrailers<B> {
    pub fn new(inner: B) -> Self {
        Self { inner }
    }
}

impl<B: Body + Unpin> Body for SanitizedTrailers<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        Pin::new(&mut self.inner)
            .poll_frame(cx)
            .map(|frame| frame.map(|frame| frame.map(sanitize_trailers)))
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// A trailers frame sanitized; any other frame as it is.
fn sanitize_trailers<D>(frame: Frame<D>) -> Frame<D> {
    match frame.into_trailers() {
        Ok(mut trailers) => {
            headers::sanitize(&mut trailers);
            Frame::trailers(trailers)
        }
        Err(frame) => frame,
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;
    use http::{HeaderMap, HeaderValue};
    use http_body_util::{BodyExt, Full};

    use super::*;

    #[tokio::test]
    async fn identity_trailers_are_stripped_and_data_and_grpc_status_pass() {
        let mut trailers = HeaderMap::new();
        trailers.insert(
            "x-forwarded-client-cert",
            HeaderValue::from_static("URI=spiffe://evil/ns/a/sa/b"),
        );
        trailers.insert("x-palisade-peer", HeaderValue::from_static("forged"));
        trailers.insert("connection", HeaderValue::from_static("x-named"));
        trailers.insert("x-named", HeaderValue::from_static("hop-by-hop"));
        trailers.insert("grpc-status", HeaderValue::from_static("0"));
        let body = Full::new(Bytes::from_static(b"data")).with_trailers(std::future::ready(Some(Ok(trailers))));
        let collected = SanitizedTrailers::new(body).collect().await.unwrap();
        let trailers = collected.trailers().cloned().unwrap();
        assert_eq!(collected.to_bytes(), "data");
        assert_eq!(trailers.len(), 1, "{trailers:?}");
        assert_eq!(trailers["grpc-status"], "0");
    }
}
