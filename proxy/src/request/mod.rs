//! What both sides of a call do to a request before and after deciding on it.
//!
//! - [`canonical`] — refuse what has no single meaning (framing, Host, method), then
//!   the path and host rule of `palisade-authz`: the decision and the upstream see
//!   the same request.
//! - [`framing`] — HTTP/1 request heads judged on the bytes beside hyper, one
//!   verdict per request in order: a body framed two ways (or not plainly) is 400
//!   and closes the connection, and once the bytes cannot be followed every later
//!   request is refused (fail-closed), with only the head in progress buffered.
//! - [`body`] — bodies streamed through, their trailers sanitized like heads.
//! - [`headers`] — identity headers (`x-forwarded-client-cert`, `x-palisade-*`)
//!   and hop-by-hop headers stripped in both directions; identity set again only
//!   from a verified peer.
//! - [`request_id`] — the `x-request-id` both sides' decisions correlate on.
//! - [`respond`] — every refusal a caller can see, mapped to its status in one place.

pub mod body;
pub mod canonical;
pub mod framing;
pub mod headers;
pub mod request_id;
pub mod respond;

pub use canonical::{canonicalize, Canonical};
pub use respond::Refusal;
