//! The CA's TokenReview client: asks the Kubernetes API server about a pod's
//! ServiceAccount token (`authentication.k8s.io/v1` `TokenReview`, created with the
//! token and the one audience the CA requires) and hands its answer to the CA's
//! pure decision, `palisade_ca::attest::service_account::identity_for`.
//!
//! The token is never logged. The CA bounds each review in time and concurrency;
//! this client only maps the API server's answer, or its failure.

use std::fmt;
use std::path::Path;

use k8s_openapi::api::authentication::v1::{
    TokenReview as K8sTokenReview, TokenReviewSpec, TokenReviewStatus, UserInfo,
};
use kube::api::{Api, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use palisade_ca::attest::service_account::{
    async_trait, ReviewError, TokenReview, TokenReviewer, EXTRA_POD_NAME, EXTRA_POD_UID,
};

/// A [`TokenReviewer`] backed by the Kubernetes API server.
#[derive(Clone)]
pub struct KubeTokenReviewer {
    client: kube::Client,
    audience: String,
}

impl fmt::Debug for KubeTokenReviewer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KubeTokenReviewer")
            .field("audience", &self.audience)
            .finish_non_exhaustive()
    }
}

/// No Kubernetes client could be made.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConnectError {
    #[error("cannot load the in-cluster Kubernetes config (tried because no --kubeconfig was given): {0}; run the CA in a pod, or pass --kubeconfig FILE")]
    InCluster(String),
    #[error(
        "cannot load the kubeconfig `{path}`: {reason}; check the file, or leave out --kubeconfig inside a cluster"
    )]
    Kubeconfig { path: String, reason: String },
    #[error("cannot make a Kubernetes client from {tried}: {reason}")]
    Client { tried: String, reason: String },
}

impl KubeTokenReviewer {
    /// A reviewer that asks with `client` for tokens of `audience`.
    pub fn new(client: kube::Client, audience: impl Into<String>) -> Self {
        Self {
            client,
            audience: audience.into(),
        }
    }

    /// A reviewer reaching the API server as `kubeconfig` says, or with the pod's
    /// in-cluster config when there is none.
    ///
    /// # Errors
    ///
    /// When that config cannot be loaded or no client made from it; the error says
    /// which config was tried.
    pub async fn connect(kubeconfig: Option<&Path>, audience: impl Into<String>) -> Result<Self, ConnectError> {
        let (config, tried) = match kubeconfig {
            None => (
                kube::Config::incluster().map_err(|e| ConnectError::InCluster(e.to_string()))?,
                "the in-cluster config".to_owned(),
            ),
            Some(path) => (from_file(path).await?, format!("the kubeconfig `{}`", path.display())),
        };
        let client = kube::Client::try_from(config).map_err(|e| ConnectError::Client {
            tried,
            reason: e.to_string(),
        })?;
        Ok(Self::new(client, audience))
    }
}

async fn from_file(path: &Path) -> Result<kube::Config, ConnectError> {
    let bad = |reason: String| ConnectError::Kubeconfig {
        path: path.display().to_string(),
        reason,
    };
    let kubeconfig = Kubeconfig::read_from(path).map_err(|e| bad(e.to_string()))?;
    kube::Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
        .await
        .map_err(|e| bad(e.to_string()))
}

#[async_trait]
impl TokenReviewer for KubeTokenReviewer {
    async fn review(&self, token: &str) -> Result<TokenReview, ReviewError> {
        let request = K8sTokenReview {
            spec: TokenReviewSpec {
                token: Some(token.to_owned()),
                audiences: Some(vec![self.audience.clone()]),
            },
            ..K8sTokenReview::default()
        };
        let api: Api<K8sTokenReview> = Api::all(self.client.clone());
        let answer = api
            .create(&PostParams::default(), &request)
            .await
            .map_err(|e| ReviewError::Unavailable(describe(&e)))?;
        review_from_status(answer.status)
    }
}

/// An API error as the API server put it (`403 Forbidden: … cannot create resource
/// "tokenreviews" …`); any other failure with its causes.
fn describe(e: &kube::Error) -> String {
    match e {
        kube::Error::Api(status) => format!("{} {}: {}", status.code, status.reason, status.message),
        other => {
            let mut out = other.to_string();
            let mut source = std::error::Error::source(other);
            while let Some(cause) = source {
                let text = cause.to_string();
                if !out.contains(&text) {
                    out.push_str(": ");
                    out.push_str(&text);
                }
                source = cause.source();
            }
            out
        }
    }
}

/// What the API server's `status` says, in the CA's terms.
///
/// # Errors
///
/// When there is no status: the API server gave no answer about the token.
pub fn review_from_status(status: Option<TokenReviewStatus>) -> Result<TokenReview, ReviewError> {
    let status = status.ok_or_else(|| ReviewError::Unavailable("its answer has no status".to_owned()))?;
    let user = status.user.unwrap_or_default();
    Ok(TokenReview {
        authenticated: status.authenticated.unwrap_or(false),
        pod_name: extra(&user, EXTRA_POD_NAME),
        pod_uid: extra(&user, EXTRA_POD_UID),
        username: user.username.unwrap_or_default(),
        audiences: status.audiences.unwrap_or_default(),
        error: status.error.unwrap_or_default(),
    })
}

fn extra(user: &UserInfo, key: &str) -> Option<String> {
    user.extra.as_ref()?.get(key)?.first().cloned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_authenticated_answer_carries_the_user_audiences_and_pod() {
        let status: TokenReviewStatus = serde_json::from_value(serde_json::json!({
            "authenticated": true,
            "audiences": ["palisade-ca"],
            "user": {
                "username": "system:serviceaccount:shop:web",
                "uid": "4f1c",
                "groups": ["system:serviceaccounts", "system:serviceaccounts:shop"],
                "extra": {
                    "authentication.kubernetes.io/pod-name": ["web-7d9f"],
                    "authentication.kubernetes.io/pod-uid": ["a1b2"]
                }
            }
        }))
        .unwrap();
        let review = review_from_status(Some(status)).unwrap();
        assert_eq!(
            review,
            TokenReview {
                authenticated: true,
                username: "system:serviceaccount:shop:web".into(),
                audiences: vec!["palisade-ca".into()],
                error: String::new(),
                pod_name: Some("web-7d9f".into()),
                pod_uid: Some("a1b2".into()),
            }
        );
    }

    #[test]
    fn missing_fields_mean_not_authenticated_and_no_status_is_no_answer() {
        let refused: TokenReviewStatus =
            serde_json::from_value(serde_json::json!({ "error": "token has expired", "user": {} })).unwrap();
        let review = review_from_status(Some(refused)).unwrap();
        assert!(!review.authenticated);
        assert_eq!(review.error, "token has expired");
        assert!(review.audiences.is_empty() && review.username.is_empty() && review.pod_name.is_none());
        assert!(matches!(review_from_status(None), Err(ReviewError::Unavailable(_))));
    }
}
