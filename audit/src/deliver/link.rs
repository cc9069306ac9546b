//! The connection to the audit service: an mTLS channel that accepts only the
//! audit service's identity, and one `Append` call with its outcome classified.

use std::time::Duration;

use tonic::transport::{Channel, Endpoint};
use tonic::Code;

use palisade_ca::client::{svid_channel, SvidPeer};

use crate::ingest::RECORD_INDEX_METADATA;
use crate::proto::v1 as pb;
use crate::proto::v1::audit_log_client::AuditLogClient;

/// How long connecting (TCP + TLS) may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// How long one `Append` may take.
const APPEND_TIMEOUT: Duration = Duration::from_secs(15);

/// How one `Append` ended, when not confirmed.
#[derive(Debug)]
pub(crate) enum Unsent {
    /// The service refused the record at `index` (nothing was stored).
    Invalid { index: usize, message: String },
    /// The service refused the batch without naming a record (nothing was stored).
    InvalidBatch(String),
    /// The connection or the service failed; the batch may or may not be stored.
    Failed(String),
}

/// The endpoint for `addr` (`host:port`), with the delivery's timeouts.
pub(crate) fn endpoint(addr: &str) -> Result<Endpoint, String> {
    let endpoint = Endpoint::from_shared(format!("http://{addr}")).map_err(|e| e.to_string())?;
    Ok(endpoint
        .connect_timeout(CONNECT_TIMEOUT)
        .timeout(APPEND_TIMEOUT)
        .http2_keep_alive_interval(Duration::from_secs(30))
        .keep_alive_timeout(Duration::from_secs(10))
        .keep_alive_while_idle(true))
}

/// A client of the audit service at `peer`, over TLS 1.3, presenting the
/// sender's SVID and accepting only `peer.expected` (secure naming).
pub(crate) async fn connect(endpoint: Endpoint, peer: SvidPeer) -> Result<AuditLogClient<Channel>, String> {
    let channel = svid_channel(endpoint, peer).await.map_err(|e| e.to_string())?;
    Ok(AuditLogClient::new(channel))
}

/// Sends one batch.
pub(crate) async fn append(
    mut client: AuditLogClient<Channel>,
    records: Vec<pb::Record>,
) -> Result<pb::AppendResponse, Unsent> {
    let call = client.append(pb::AppendRequest { records });
    match tokio::time::timeout(APPEND_TIMEOUT, call).await {
        Ok(Ok(response)) => Ok(response.into_inner()),
        Ok(Err(status)) => Err(classify(&status)),
        Err(_) => Err(Unsent::Failed(format!("no answer within {APPEND_TIMEOUT:?}"))),
    }
}

fn classify(status: &tonic::Status) -> Unsent {
    let message = status.message().to_owned();
    if status.code() != Code::InvalidArgument {
        return Unsent::Failed(format!("{:?}: {message}", status.code()));
    }
    let index = status
        .metadata()
        .get(RECORD_INDEX_METADATA)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok());
    match index {
        Some(index) => Unsent::Invalid { index, message },
        None => Unsent::InvalidBatch(message),
    }
}
