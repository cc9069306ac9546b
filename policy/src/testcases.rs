//! Policy test files: `DIR/tests/*.yaml`, each a list of requests with the
//! decisions the bundle must give them. `palisade policy test DIR` runs them.
//!
//! ```yaml
//! - name: frontend cannot charge cards
//!   from: spiffe://shop.example/ns/web/sa/frontend
//!   to: payments/payments            # NS/SERVICE, or HOST[:PORT] for an external host
//!   method: POST                     # GET HEAD POST PUT PATCH DELETE OPTIONS, or CONNECT (raw TCP/TLS)
//!   path: /charge                    # default `/`
//!   headers: { x-request-id: "1" }   # default none; names are case-insensitive
//!   expect:
//!     egress: allow                  # the caller's side
//!     ingress: deny                  # the callee's side; omitted for an external host
//!     overall: deny                  # what actually happens
//! ```

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use serde::{Deserialize, Serialize};

use palisade_authz::{normalize_host, Action, Effect, SourceLocation};
use palisade_ca::SpiffeId;

use crate::error::{Diagnostics, Located, Problem};
use crate::field::{child, is_dns_label, Fields};
use crate::source::SourceFile;
use crate::yaml::{unique_map, Step};

/// One entry of a test file (a list of them).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TestCaseEntry {
    /// What the case shows; unique across the test files.
    pub name: String,
    /// The caller's SPIFFE ID.
    pub from: String,
    /// `NAMESPACE/SERVICE` for a mesh service, `HOST` or `HOST:PORT` for an external one.
    pub to: String,
    /// The HTTP method in upper case, or `CONNECT` for a raw TCP (TLS) connection.
    pub method: String,
    /// The request path, as sent (it is normalized like a real request). Default `/`.
    #[serde(default = "root")]
    pub path: String,
    /// Request headers.
    #[serde(default, deserialize_with = "unique_map")]
    pub headers: BTreeMap<String, String>,
    /// The decisions expected.
    pub expect: ExpectEntry,
}

fn root() -> String {
    "/".into()
}

/// The decisions a case expects.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExpectEntry {
    /// The caller's egress decision.
    pub egress: Verdict,
    /// The callee's ingress decision: required for a mesh service, omitted for an
    /// external host (which has no ingress side).
    #[serde(default)]
    pub ingress: Option<Verdict>,
    /// Whether the call happens.
    pub overall: Verdict,
}

/// `allow` or `deny`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Verdict {
    Allow,
    Deny,
}

impl From<Verdict> for Effect {
    fn from(verdict: Verdict) -> Self {
        match verdict {
            Verdict::Allow => Effect::Allow,
            Verdict::Deny => Effect::Deny,
        }
    }
}

/// Where a test request goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// A mesh service, `NAMESPACE/NAME`.
    Service { namespace: String, name: String },
    /// An external host, canonical, with the port if the case gave one.
    External { host: String, port: Option<u16> },
}

/// The decisions a case expects, as engine effects.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Expectation {
    pub egress: Effect,
    /// `Some` exactly when the target is a [`Target::Service`].
    pub ingress: Option<Effect>,
    pub overall: Effect,
}

/// One parsed test case.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TestCase {
    pub name: String,
    pub from: SpiffeId,
    pub to: Target,
    pub action: Action,
    /// As written; the runner normalizes it.
    pub path: String,
    /// Header names in lower case, values as written.
    pub headers: BTreeMap<String, String>,
    pub expect: Expectation,
    /// Where the case starts.
    pub location: SourceLocation,
}

/// Every case of `dir/tests/*.yaml` (and `*.yml`), files in name order; no
/// `tests/` directory is no case.
///
/// # Errors
///
/// Every problem of every file, located.
pub fn load(dir: impl AsRef<Path>) -> Result<Vec<TestCase>, Diagnostics> {
    let dir = dir.as_ref();
    let mut diagnostics = Diagnostics::default();
    let mut cases = Vec::new();
    let mut names = HashMap::new();
    for name in files(dir, &mut diagnostics) {
        let file = match SourceFile::read(dir, &format!("tests/{name}")) {
            Ok(file) => file,
            Err(diagnostic) => {
                diagnostics.push(diagnostic);
                continue;
            }
        };
        let entries: Vec<TestCaseEntry> = match file.parse_yaml() {
            Ok(entries) => entries,
            Err(diagnostic) => {
                diagnostics.push(diagnostic);
                continue;
            }
        };
        let mut fields = Fields {
            file: &file,
            trust_domain: None,
            workloads: None,
            diagnostics: &mut diagnostics,
        };
        for (i, entry) in entries.iter().enumerate() {
            cases.extend(case(i, entry, &mut names, &mut fields));
        }
    }
    match diagnostics.is_empty() {
        true => Ok(cases),
        false => Err(diagnostics),
    }
}

/// The test files' names, sorted.
fn files(dir: &Path, diagnostics: &mut Diagnostics) -> Vec<String> {
    let tests = dir.join("tests");
    if !tests.is_dir() {
        return Vec::new();
    }
    let read = match std::fs::read_dir(&tests) {
        Ok(read) => read,
        Err(error) => {
            let problem = Problem::Read {
                reason: error.to_string(),
            };
            diagnostics.push(crate::error::Diagnostic::in_file(
                problem,
                tests.display().to_string().into(),
            ));
            return Vec::new();
        }
    };
    let mut names: Vec<String> = (read.flatten())
        .filter_map(|entry| entry.file_name().into_string().ok())
        .filter(|name| !name.starts_with('.') && (name.ends_with(".yaml") || name.ends_with(".yml")))
        .collect();
    names.sort();
    names
}

fn case(
    i: usize,
    entry: &TestCaseEntry,
    names: &mut HashMap<String, SourceLocation>,
    fields: &mut Fields<'_>,
) -> Option<TestCase> {
    let errors_before = fields.diagnostics.len();
    let here = [Step::Index(i)];
    let at = |key| child(&here, Step::Key(key));
    let location = fields.file.yaml_location(&here);
    if let Some(first) = names.get(&entry.name) {
        let problem = Problem::DuplicateTestName {
            name: entry.name.clone(),
            first: Located(first.clone()),
        };
        fields.report(problem, &at("name"));
    } else {
        names.insert(entry.name.clone(), location.clone());
    }
    let from = SpiffeId::parse(&entry.from).map_err(|e| fields.report(Problem::InvalidSpiffeId(e), &at("from")));
    let to = parse_target(&entry.to).map_err(|hint| {
        let problem = Problem::InvalidTarget {
            to: entry.to.clone(),
            hint,
        };
        fields.report(problem, &at("to"));
    });
    let action = parse_method(&entry.method).ok_or_else(|| {
        let problem = Problem::InvalidMethod {
            method: entry.method.clone(),
        };
        fields.report(problem, &at("method"));
    });
    if !entry.path.starts_with('/') {
        let problem = Problem::InvalidTarget {
            to: entry.path.clone(),
            hint: "a path starts with `/`".into(),
        };
        fields.report(problem, &at("path"));
    }
    let headers = headers(&entry.headers, fields, &at("headers"));
    let expect = expectation(entry.expect, to.as_ref().ok(), fields, &at("expect"));
    if fields.diagnostics.len() > errors_before {
        return None;
    }
    Some(TestCase {
        name: entry.name.clone(),
        from: from.ok()?,
        to: to.ok()?,
        action: action.ok()?,
        path: entry.path.clone(),
        headers,
        expect: expect?,
        location,
    })
}

/// Reads a destination: `NAMESPACE/NAME` for a mesh service, `HOST[:PORT]` otherwise.
pub fn parse_target(raw: &str) -> Result<Target, String> {
    if let Some((namespace, name)) = raw.split_once('/') {
        if is_dns_label(namespace) && is_dns_label(name) {
            return Ok(Target::Service {
                namespace: namespace.to_owned(),
                name: name.to_owned(),
            });
        }
        return Err("write a mesh service as `NAMESPACE/NAME`, both lower-case DNS labels".into());
    }
    match normalize_host(raw, None) {
        Ok(host) => Ok(Target::External {
            host: host.name().to_owned(),
            port: host.port(),
        }),
        Err(error) => Err(format!("{error}; write an external host as `HOST` or `HOST:PORT`")),
    }
}

/// Reads an HTTP method (upper-case, as on the wire) or `CONNECT` for raw TCP.
pub fn parse_method(method: &str) -> Option<Action> {
    Some(match method {
        "GET" => Action::Get,
        "HEAD" => Action::Head,
        "POST" => Action::Post,
        "PUT" => Action::Put,
        "PATCH" => Action::Patch,
        "DELETE" => Action::Delete,
        "OPTIONS" => Action::Options,
        "CONNECT" => Action::Connect,
        _ => return None,
    })
}

/// Whether `name` is an HTTP header name (an RFC 9110 token).
pub fn is_header_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

fn headers(raw: &BTreeMap<String, String>, fields: &mut Fields<'_>, path: &[Step<'_>]) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    for (name, value) in raw {
        if !is_header_name(name) {
            let problem = Problem::InvalidHeaderName { name: name.clone() };
            fields.report(problem, &child(path, Step::Key(name)));
            continue;
        }
        out.insert(name.to_ascii_lowercase(), value.clone());
    }
    out
}

fn expectation(
    raw: ExpectEntry,
    to: Option<&Target>,
    fields: &mut Fields<'_>,
    path: &[Step<'_>],
) -> Option<Expectation> {
    let ingress = match (to, raw.ingress) {
        (Some(Target::Service { .. }), None) => {
            let problem = Problem::IngressExpectation("a mesh service has an ingress side; give `expect.ingress`");
            fields.report(problem, path);
            return None;
        }
        (Some(Target::External { .. }), Some(_)) => {
            let problem = Problem::IngressExpectation("an external host has no ingress side; remove `expect.ingress`");
            fields.report(problem, &child(path, Step::Key("ingress")));
            return None;
        }
        (_, ingress) => ingress.map(Effect::from),
    };
    Some(Expectation {
        egress: raw.egress.into(),
        ingress,
        overall: raw.overall.into(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_are_services_or_hosts() {
        assert_eq!(
            parse_target("payments/payments"),
            Ok(Target::Service {
                namespace: "payments".into(),
                name: "payments".into()
            })
        );
        assert_eq!(
            parse_target("API.stripe.com:443"),
            Ok(Target::External {
                host: "api.stripe.com".into(),
                port: Some(443)
            })
        );
        assert_eq!(
            parse_target("api.stripe.com"),
            Ok(Target::External {
                host: "api.stripe.com".into(),
                port: None
            })
        );
        for bad in ["a/b/c", "Pay/x", "a b", "host:0", ""] {
            assert!(parse_target(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn methods_are_upper_case() {
        assert_eq!(parse_method("POST"), Some(Action::Post));
        assert_eq!(parse_method("CONNECT"), Some(Action::Connect));
        assert_eq!(parse_method("post"), None);
        assert_eq!(parse_method("TRACE"), None);
    }
}
