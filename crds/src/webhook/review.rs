//! AdmissionReview v1, the API server's question and our answer, and [`review`],
//! the pure decision on one request.
//!
//! Only what a validating webhook reads or writes is modelled. Unknown fields are
//! ignored rather than refused (unlike our own file formats): the API server owns
//! this format and adds fields (`userInfo`, `options`, `requestKind`, ...) that we
//! have no use for.
//!
//! The decision fails closed: a body that is not an AdmissionReview v1, a
//! `CedarPolicy` object that does not deserialize, or an operation we do not know
//! is refused; only `DELETE` and `CONNECT`, other kinds, and subresources (whose
//! writes cannot change a policy) are allowed without a look.

use serde::{Deserialize, Serialize};

use super::check::{self, Verdict};
use super::ReviewContext;
use crate::resources::{CedarPolicy, GROUP};

/// The `apiVersion` of an AdmissionReview v1.
pub const API_VERSION: &str = "admission.k8s.io/v1";
/// The `kind` of an AdmissionReview.
pub const KIND: &str = "AdmissionReview";

/// `status.code` of a policy that is not valid (how webhooks say "unprocessable").
pub const CODE_INVALID: u16 = 422;
/// `status.code` of a request or object that is not what it should be.
pub const CODE_MALFORMED: u16 = 400;

/// An AdmissionReview: `request` from the API server, `response` back to it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AdmissionReview {
    /// `admission.k8s.io/v1`.
    pub api_version: String,
    /// `AdmissionReview`.
    pub kind: String,
    /// The question; set on what the API server sends.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request: Option<AdmissionRequest>,
    /// The answer; set on what a webhook sends back.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub response: Option<AdmissionResponse>,
}

/// What the API server asks about.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AdmissionRequest {
    /// Identifies this request; the response must carry it back.
    pub uid: String,
    /// The kind of the object (in the version the webhook registered for).
    pub kind: GroupVersionKind,
    /// The resource being written.
    pub resource: GroupVersionResource,
    /// `status` and the like, when a subresource is written.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sub_resource: Option<String>,
    /// The object's name; empty on a `CREATE` that relies on `generateName`.
    #[serde(default)]
    pub name: String,
    /// The object's namespace.
    #[serde(default)]
    pub namespace: String,
    /// What is being done.
    pub operation: Operation,
    /// The object as it would be stored (`CREATE`, `UPDATE`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub object: Option<serde_json::Value>,
    /// The object as it is stored (`UPDATE`, `DELETE`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub old_object: Option<serde_json::Value>,
    /// Whether nothing will be persisted (`kubectl apply --dry-run=server`).
    #[serde(default)]
    pub dry_run: bool,
}

/// An API group, version and kind.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupVersionKind {
    /// Empty for the core group.
    #[serde(default)]
    pub group: String,
    /// `v1alpha1`, ...
    pub version: String,
    /// `CedarPolicy`, ...
    pub kind: String,
}

/// An API group, version and resource (plural).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupVersionResource {
    /// Empty for the core group.
    #[serde(default)]
    pub group: String,
    /// `v1alpha1`, ...
    pub version: String,
    /// `cedarpolicies`, ...
    pub resource: String,
}

/// What a request does to its object.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum Operation {
    /// Creates the object.
    Create,
    /// Replaces or patches the object.
    Update,
    /// Deletes the object.
    Delete,
    /// Connects to it (`exec`, `portforward`, ...).
    Connect,
    /// An operation this webhook does not know; refused.
    #[serde(other)]
    Unknown,
}

/// The answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AdmissionResponse {
    /// The request's `uid`.
    pub uid: String,
    /// Whether the request may go on.
    pub allowed: bool,
    /// Why not, when it may not.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<ResponseStatus>,
    /// Shown by `kubectl` as `Warning: ...`, even when allowed.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
}

/// Why a request was refused: what `kubectl` prints after
/// `admission webhook "..." denied the request:`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResponseStatus {
    /// An HTTP-like code: [`CODE_INVALID`] or [`CODE_MALFORMED`].
    pub code: u16,
    /// The whole explanation.
    pub message: String,
}

impl AdmissionResponse {
    /// Lets the request go on.
    pub fn allow(uid: &str) -> Self {
        Self {
            uid: uid.to_owned(),
            allowed: true,
            status: None,
            warnings: Vec::new(),
        }
    }

    /// Refuses the request with `code` and `message`.
    pub fn refuse(uid: &str, code: u16, message: impl Into<String>) -> Self {
        Self {
            uid: uid.to_owned(),
            allowed: false,
            status: Some(ResponseStatus {
                code,
                message: message.into(),
            }),
            warnings: Vec::new(),
        }
    }

    /// This answer in the AdmissionReview v1 envelope.
    pub fn into_review(self) -> AdmissionReview {
        AdmissionReview {
            api_version: API_VERSION.to_owned(),
            kind: KIND.to_owned(),
            request: None,
            response: Some(self),
        }
    }
}

/// Parses an AdmissionReview v1 body into its request.
///
/// # Errors
///
/// The refusal to send back when `body` is not an AdmissionReview v1 with a
/// request; it echoes the request's `uid` when one can be found.
pub fn parse_request(body: &[u8]) -> Result<AdmissionRequest, AdmissionResponse> {
    let malformed = |reason: String| {
        let message = format!("the webhook expects an AdmissionReview {API_VERSION} with a request: {reason}; register it with `admissionReviewVersions: [v1]`");
        AdmissionResponse::refuse(&loose_uid(body), CODE_MALFORMED, message)
    };
    let review: AdmissionReview = serde_json::from_slice(body).map_err(|e| malformed(e.to_string()))?;
    if review.api_version != API_VERSION || review.kind != KIND {
        let (version, kind) = (&review.api_version, &review.kind);
        return Err(malformed(format!("got `{version}` `{kind}`")));
    }
    review
        .request
        .ok_or_else(|| malformed("it has no `request`".to_owned()))
}

/// Answers one request: a `CedarPolicy` being created or updated is checked
/// against the bundle in `context`; everything else the webhook may see is
/// allowed or, when it cannot be understood, refused.
pub fn review(request: &AdmissionRequest, context: &ReviewContext) -> AdmissionResponse {
    let uid = request.uid.as_str();
    let is_cedar_policy = request.kind.group == GROUP && request.kind.kind == "CedarPolicy";
    if !is_cedar_policy || request.sub_resource.as_deref().is_some_and(|s| !s.is_empty()) {
        return AdmissionResponse::allow(uid);
    }
    match request.operation {
        Operation::Create | Operation::Update => {}
        Operation::Delete | Operation::Connect => return AdmissionResponse::allow(uid),
        Operation::Unknown => {
            let message = "unknown operation; the webhook checks `CREATE` and `UPDATE` of a CedarPolicy only";
            return AdmissionResponse::refuse(uid, CODE_MALFORMED, message);
        }
    }
    let policy = match policy_of(request) {
        Ok(policy) => policy,
        Err(message) => return AdmissionResponse::refuse(uid, CODE_MALFORMED, message),
    };
    match check::check(&policy, context) {
        Verdict::Valid { warnings } => AdmissionResponse {
            warnings,
            ..AdmissionResponse::allow(uid)
        },
        Verdict::Invalid { code, message } => AdmissionResponse::refuse(uid, code, message),
    }
}

/// [`parse_request`] then [`review`], in the envelope: what the server answers.
pub fn review_json(body: &[u8], context: &ReviewContext) -> AdmissionReview {
    let response = match parse_request(body) {
        Ok(request) => review(&request, context),
        Err(refusal) => refusal,
    };
    response.into_review()
}

/// The policy being written, with the name and namespace the API server gave it.
fn policy_of(request: &AdmissionRequest) -> Result<check::Named, String> {
    let Some(object) = request.object.clone() else {
        return Err("the request has no `object`; the webhook checks the CedarPolicy being written".to_owned());
    };
    let policy: CedarPolicy = serde_json::from_value(object).map_err(|e| {
        format!("the object is not a CedarPolicy: {e}; check it against the CRD (`kubectl explain cedarpolicy.spec`)")
    })?;
    // The request's fields come from the URL the API server served; the object's
    // name may be the one generated from `generateName`.
    let namespace = first_non_empty(&request.namespace, policy.metadata.namespace.as_deref());
    let name = first_non_empty(policy.metadata.name.as_deref().unwrap_or_default(), Some(&request.name));
    Ok(check::Named {
        namespace: namespace.to_owned(),
        name: name.to_owned(),
        spec: policy.spec,
    })
}

fn first_non_empty<'a>(first: &'a str, second: Option<&'a str>) -> &'a str {
    match first.is_empty() {
        true => second.unwrap_or_default(),
        false => first,
    }
}

/// `request.uid` from a body that is not a valid review, when it has one.
fn loose_uid(body: &[u8]) -> String {
    #[derive(Deserialize)]
    struct Loose {
        request: Option<LooseRequest>,
    }
    #[derive(Deserialize)]
    struct LooseRequest {
        uid: Option<String>,
    }
    serde_json::from_slice::<Loose>(body)
        .ok()
        .and_then(|loose| loose.request?.uid)
        .unwrap_or_default()
}
