//! `POST /apis/authentication.k8s.io/v1/tokenreviews`, as the real API server
//! answers it, for the tokens a test registers.
//!
//! Like the real API server it authenticates a token only for the audiences it
//! was minted for: the answer's `audiences` are the intersection with the
//! requested ones, and no intersection (or an expired or unknown token) is
//! `authenticated: false` with the real server's error text. It records every
//! review it was asked for, can be told to refuse the caller (403, as when the
//! CA's service account may not create `tokenreviews`) and can hold a token's
//! review until released (an API server that does not answer).

use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, SystemTime};

use serde_json::{json, Value};
use tokio::sync::watch;

use super::store::ApiError;

/// The path of TokenReviews.
pub const REVIEWS_PATH: &str = "/apis/authentication.k8s.io/v1/tokenreviews";
/// The audience the real API server assumes when a review names none.
const API_SERVER_AUDIENCE: &str = "https://kubernetes.default.svc.cluster.local";

/// A token the fake API server knows: whose it is, for which audiences, until when.
#[derive(Debug, Clone)]
pub struct KnownToken {
    pub namespace: String,
    pub service_account: String,
    pub audiences: Vec<String>,
    pub expires: SystemTime,
    pub pod_name: String,
    pub pod_uid: String,
}

impl KnownToken {
    /// A token of `namespace`/`service_account` for `audience`, valid for an hour.
    pub fn new(namespace: &str, service_account: &str, audience: &str) -> Self {
        Self {
            namespace: namespace.to_owned(),
            service_account: service_account.to_owned(),
            audiences: vec![audience.to_owned()],
            expires: SystemTime::now() + Duration::from_secs(3600),
            pod_name: format!("{service_account}-6d4c9"),
            pod_uid: "0b7e2f3a-1c44-4b7e-9d0a-5e3f2a1b9c8d".to_owned(),
        }
    }

    /// The same token, expired a minute ago.
    #[must_use]
    pub fn expired(self) -> Self {
        Self {
            expires: SystemTime::now() - Duration::from_secs(60),
            ..self
        }
    }
}

/// One review the fake API server was asked for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SeenReview {
    pub token: String,
    pub audiences: Vec<String>,
}

/// What the TokenReview endpoint knows and has seen.
#[derive(Debug)]
pub struct Reviews {
    tokens: Mutex<HashMap<String, KnownToken>>,
    seen: Mutex<Vec<SeenReview>>,
    forbidden: Mutex<bool>,
    held: Mutex<Vec<String>>,
    release: watch::Sender<bool>,
}

impl Default for Reviews {
    fn default() -> Self {
        Self {
            tokens: Mutex::default(),
            seen: Mutex::default(),
            forbidden: Mutex::default(),
            held: Mutex::default(),
            release: watch::Sender::new(false),
        }
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Reviews {
    pub(super) fn knows(&self, token: &str, known: KnownToken) {
        lock(&self.tokens).insert(token.to_owned(), known);
    }

    pub(super) fn seen(&self) -> Vec<SeenReview> {
        lock(&self.seen).clone()
    }

    pub(super) fn forbid(&self, forbidden: bool) {
        *lock(&self.forbidden) = forbidden;
    }

    pub(super) fn hold(&self, token: &str) {
        self.release.send_replace(false);
        lock(&self.held).push(token.to_owned());
    }

    pub(super) fn release_held(&self) {
        lock(&self.held).clear();
        self.release.send_replace(true);
    }

    /// The answer to a TokenReview `body`: the created review, or the refusal.
    pub(super) async fn answer(&self, body: &[u8]) -> Result<Value, ApiError> {
        let review: Value = serde_json::from_slice(body)
            .map_err(|_| ApiError::new(400, "BadRequest", "the body is not a TokenReview"))?;
        let spec = review.get("spec").cloned().unwrap_or(Value::Null);
        let token = spec.get("token").and_then(Value::as_str).unwrap_or_default().to_owned();
        let audiences: Vec<String> = (spec.get("audiences").and_then(Value::as_array))
            .map(|a| a.iter().filter_map(Value::as_str).map(str::to_owned).collect())
            .unwrap_or_default();
        lock(&self.seen).push(SeenReview {
            token: token.clone(),
            audiences: audiences.clone(),
        });
        if *lock(&self.forbidden) {
            return Err(ApiError::new(
                403,
                "Forbidden",
                "tokenreviews.authentication.k8s.io is forbidden: User \"system:serviceaccount:palisade-system:palisade-ca\" cannot create resource \"tokenreviews\" in API group \"authentication.k8s.io\" at the cluster scope",
            ));
        }
        if lock(&self.held).contains(&token) {
            let mut released = self.release.subscribe();
            let _ = released.wait_for(|released| *released).await;
        }
        let known = lock(&self.tokens).get(&token).cloned();
        Ok(json!({
            "kind": "TokenReview",
            "apiVersion": "authentication.k8s.io/v1",
            "metadata": { "creationTimestamp": null },
            "spec": spec,
            "status": review_status(known.as_ref(), &audiences),
        }))
    }
}

/// What the real API server says about a token asked for `requested` audiences.
fn review_status(known: Option<&KnownToken>, requested: &[String]) -> Value {
    let requested = if requested.is_empty() {
        vec![API_SERVER_AUDIENCE.to_owned()]
    } else {
        requested.to_vec()
    };
    let Some(known) = known else {
        return refused("[invalid bearer token, square/go-jose: error in cryptographic primitive]");
    };
    if known.expires < SystemTime::now() {
        return refused("[invalid bearer token, service account token has expired]");
    }
    let both: Vec<&String> = requested.iter().filter(|a| known.audiences.contains(a)).collect();
    if both.is_empty() {
        return refused(&format!(
            "[invalid bearer token, token audiences {:?} is invalid for the target audiences {:?}]",
            known.audiences, requested
        ));
    }
    json!({
        "authenticated": true,
        "user": {
            "username": format!("system:serviceaccount:{}:{}", known.namespace, known.service_account),
            "uid": "5a0e6b6c-8d5f-4b8e-a1d2-3c4b5a6f7e8d",
            "groups": ["system:serviceaccounts", format!("system:serviceaccounts:{}", known.namespace), "system:authenticated"],
            "extra": {
                "authentication.kubernetes.io/credential-id": ["JTI=3c0b4a52-9e1f-4b43-8c77-2f1d5e6a7b8c"],
                "authentication.kubernetes.io/node-name": ["worker-1"],
                "authentication.kubernetes.io/pod-name": [known.pod_name],
                "authentication.kubernetes.io/pod-uid": [known.pod_uid],
            },
        },
        "audiences": both,
    })
}

fn refused(error: &str) -> Value {
    json!({ "user": {}, "error": error })
}
