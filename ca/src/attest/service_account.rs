//! Kubernetes ServiceAccount tokens: a pod's projected token bootstraps its first
//! SVID, `spiffe://TD/ns/NAMESPACE/sa/SERVICE_ACCOUNT`.
//!
//! The CA does not verify the token itself: a [`TokenReviewer`] asks the API server
//! (`TokenReview`, implemented in `palisade-crds`), and [`identity_for`] — pure, no
//! I/O — decides from the API server's answer which identity, if any, the token
//! attests. Only a token the API server authenticated, for the audience the CA
//! requires, of a ServiceAccount (not a node, a user or anything else) attests an
//! identity, and only the one of its own namespace and name.

use std::fmt::Debug;

/// The attribute [`TokenReviewer`] implementations use (tonic's re-export of
/// `async-trait`), so they need no dependency of their own.
pub use tonic::async_trait;

use crate::spiffe_id::{SpiffeId, TrustDomain};

/// The audience a token must be projected for when the CA is told none.
pub const DEFAULT_AUDIENCE: &str = "palisade-ca";

/// The username prefix of every ServiceAccount.
const SERVICE_ACCOUNT_PREFIX: &str = "system:serviceaccount:";
/// The `extra` key the API server uses for the pod a bound token belongs to.
pub const EXTRA_POD_NAME: &str = "authentication.kubernetes.io/pod-name";
/// The `extra` key the API server uses for that pod's UID.
pub const EXTRA_POD_UID: &str = "authentication.kubernetes.io/pod-uid";

/// What the API server said about a token (a `TokenReview`'s status).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TokenReview {
    /// Whether the API server authenticated the token.
    pub authenticated: bool,
    /// The authenticated user, e.g. `system:serviceaccount:shop:web`.
    pub username: String,
    /// The audiences the token is valid for that were also asked for; empty when
    /// the authenticator does not know audiences.
    pub audiences: Vec<String>,
    /// Why the token was not authenticated (e.g. `token has expired`).
    pub error: String,
    /// The pod a bound token belongs to, if the API server said.
    pub pod_name: Option<String>,
    /// That pod's UID, if the API server said.
    pub pod_uid: Option<String>,
}

/// The API server could not review a token.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ReviewError {
    #[error("the Kubernetes API server cannot review the token: {0}; check that the CA reaches it and may create `tokenreviews`")]
    Unavailable(String),
}

/// Asks the Kubernetes API server about a ServiceAccount token.
///
/// Implementations must never log the token.
#[tonic::async_trait]
pub trait TokenReviewer: Send + Sync + Debug {
    /// Reviews `token`; an answer (even "not authenticated") is `Ok`, only a failure
    /// to get one is an error.
    async fn review(&self, token: &str) -> Result<TokenReview, ReviewError>;
}

/// Why a reviewed token attests no identity.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AttestError {
    #[error("the Kubernetes API server did not authenticate the ServiceAccount token for audience `{audience}`: {reason}; the sidecar needs a current projected token with `audience: {audience}`")]
    Unauthenticated { audience: String, reason: String },
    #[error("the ServiceAccount token is not for audience `{required}` (the API server confirmed {found}); project it with `audience: {required}`")]
    Audience { required: String, found: String },
    #[error("`{username}` is not a ServiceAccount (`system:serviceaccount:NAMESPACE:NAME`); only a ServiceAccount token bootstraps an SVID")]
    NotServiceAccount { username: String },
    #[error("the ServiceAccount `{username}` has no valid SPIFFE ID: {reason}")]
    BadName { username: String, reason: String },
}

/// The one SPIFFE ID a reviewed token attests: `spiffe://TD/ns/NS/sa/SA` when the
/// API server authenticated it for `required_audience` as
/// `system:serviceaccount:NS:SA`.
///
/// # Errors
///
/// When the token was not authenticated, the audience was not confirmed (an empty
/// list, from an authenticator that ignores audiences, confirms nothing), or the
/// user is not a ServiceAccount with a namespace (a DNS label) and a name (a DNS
/// subdomain) that Kubernetes would accept.
pub fn identity_for(td: &TrustDomain, review: &TokenReview, required_audience: &str) -> Result<SpiffeId, AttestError> {
    if !review.authenticated {
        let reason = match review.error.trim() {
            "" => "it gave no reason".to_owned(),
            e => e.to_owned(),
        };
        return Err(AttestError::Unauthenticated {
            audience: required_audience.to_owned(),
            reason,
        });
    }
    if !review.audiences.iter().any(|a| a == required_audience) {
        return Err(AttestError::Audience {
            required: required_audience.to_owned(),
            found: describe_audiences(&review.audiences),
        });
    }
    let (namespace, name) = service_account(&review.username)?;
    SpiffeId::mesh(td, namespace, name).map_err(|e| bad_name(&review.username, &e.to_string()))
}

/// `system:serviceaccount:NS:SA` → (NS, SA), each checked as Kubernetes names them.
fn service_account(username: &str) -> Result<(&str, &str), AttestError> {
    let not_sa = || AttestError::NotServiceAccount {
        username: username.to_owned(),
    };
    let rest = username.strip_prefix(SERVICE_ACCOUNT_PREFIX).ok_or_else(not_sa)?;
    let (namespace, name) = rest.split_once(':').ok_or_else(not_sa)?;
    if !is_dns_label(namespace) {
        return Err(bad_name(
            username,
            &format!("the namespace `{namespace}` is not a DNS label (lower-case letters, digits and `-`, at most 63)"),
        ));
    }
    if !is_dns_subdomain(name) {
        return Err(bad_name(
            username,
            &format!("the name `{name}` is not a DNS subdomain (lower-case letters, digits, `-` and `.`, at most 253)"),
        ));
    }
    Ok((namespace, name))
}

fn bad_name(username: &str, reason: &str) -> AttestError {
    AttestError::BadName {
        username: username.to_owned(),
        reason: reason.to_owned(),
    }
}

fn describe_audiences(audiences: &[String]) -> String {
    if audiences.is_empty() {
        return "no audience".to_owned();
    }
    let quoted: Vec<String> = audiences.iter().map(|a| format!("`{a}`")).collect();
    quoted.join(", ")
}

/// RFC 1123 label: 1–63 of `a-z0-9-`, starting and ending with a letter or digit.
fn is_dns_label(s: &str) -> bool {
    let alnum = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit();
    (1..=63).contains(&s.len()) && s.chars().all(|c| alnum(c) || c == '-') && s.starts_with(alnum) && s.ends_with(alnum)
}

/// RFC 1123 subdomain: at most 253 bytes of labels joined by `.`.
fn is_dns_subdomain(s: &str) -> bool {
    s.len() <= 253 && s.split('.').all(is_dns_label)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn td() -> TrustDomain {
        TrustDomain::new("td").unwrap()
    }

    fn review(username: &str) -> TokenReview {
        TokenReview {
            authenticated: true,
            username: username.to_owned(),
            audiences: vec![DEFAULT_AUDIENCE.to_owned()],
            ..TokenReview::default()
        }
    }

    fn attest(r: &TokenReview) -> Result<SpiffeId, AttestError> {
        identity_for(&td(), r, DEFAULT_AUDIENCE)
    }

    #[test]
    fn a_service_account_token_attests_its_own_namespace_and_name() {
        let id = attest(&review("system:serviceaccount:shop:web")).unwrap();
        assert_eq!(id.as_str(), "spiffe://td/ns/shop/sa/web");
        let dotted = attest(&review("system:serviceaccount:kube-system:cert-manager.v1")).unwrap();
        assert_eq!(dotted.as_str(), "spiffe://td/ns/kube-system/sa/cert-manager.v1");
        let also = TokenReview {
            audiences: vec!["https://kubernetes.default.svc".into(), DEFAULT_AUDIENCE.into()],
            ..review("system:serviceaccount:shop:web")
        };
        assert!(attest(&also).is_ok(), "one of several audiences is enough");
    }

    #[test]
    fn an_unauthenticated_token_is_refused_with_the_api_servers_reason() {
        let expired = TokenReview {
            authenticated: false,
            error: "[invalid bearer token, token has expired]".into(),
            ..review("system:serviceaccount:shop:web")
        };
        let e = attest(&expired).unwrap_err();
        assert!(matches!(e, AttestError::Unauthenticated { .. }));
        assert!(e.to_string().contains("token has expired"), "{e}");
        let silent = TokenReview {
            authenticated: false,
            ..TokenReview::default()
        };
        assert!(attest(&silent).unwrap_err().to_string().contains("no reason"));
    }

    #[test]
    fn the_audience_must_be_confirmed() {
        let cases = [
            (vec![], "no audience"),
            (
                vec!["https://kubernetes.default.svc".to_owned()],
                "`https://kubernetes.default.svc`",
            ),
            (vec!["Palisade-CA".to_owned()], "`Palisade-CA`"),
            (vec!["palisade-ca ".to_owned()], "`palisade-ca `"),
        ];
        for (audiences, shown) in cases {
            let r = TokenReview {
                audiences: audiences.clone(),
                ..review("system:serviceaccount:shop:web")
            };
            let e = attest(&r).unwrap_err();
            assert!(matches!(e, AttestError::Audience { .. }), "{audiences:?}: {e}");
            assert!(e.to_string().contains(shown), "{e}");
        }
        let custom = identity_for(&td(), &review("system:serviceaccount:shop:web"), "mesh-ca");
        assert!(custom.is_err(), "the required audience is the CA's, not the default");
    }

    #[test]
    fn only_service_accounts_attest() {
        for username in [
            "system:node:worker-1",
            "system:anonymous",
            "system:kube-controller-manager",
            "alice@example.com",
            "",
            "System:ServiceAccount:shop:web",
            "system:serviceaccounts:shop",
            "system:serviceaccount:shop",
            "system:serviceaccount:",
            " system:serviceaccount:shop:web",
        ] {
            let e = attest(&review(username)).unwrap_err();
            assert!(matches!(e, AttestError::NotServiceAccount { .. }), "{username:?}: {e}");
        }
    }

    #[test]
    fn names_kubernetes_would_not_accept_are_refused() {
        for username in [
            "system:serviceaccount:shop:web:admin",
            "system:serviceaccount:shop::web",
            "system:serviceaccount::web",
            "system:serviceaccount:shop:",
            "system:serviceaccount:Shop:web",
            "system:serviceaccount:shop:Web",
            "system:serviceaccount:shop.prod:web",
            "system:serviceaccount:-shop:web",
            "system:serviceaccount:shop:web-",
            "system:serviceaccount:shop:..",
            "system:serviceaccount:shop:.web",
            "system:serviceaccount:shop:web/../admin",
            "system:serviceaccount:shop:web%2f",
            "system:serviceaccount:shop:wéb",
            "system:serviceaccount:shop :web",
        ] {
            let e = attest(&review(username)).unwrap_err();
            assert!(matches!(e, AttestError::BadName { .. }), "{username:?}: {e}");
        }
        let long_ns = format!("system:serviceaccount:{}:web", "a".repeat(64));
        assert!(attest(&review(&long_ns)).is_err());
        let long_name = format!("system:serviceaccount:shop:{}", vec!["a".repeat(63); 4].join("."));
        assert!(attest(&review(&long_name)).is_err(), "a name over 253 bytes");
    }
}
