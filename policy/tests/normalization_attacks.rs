//! SECURITY.md §1 end to end through the real loader, engine and canonicalizer:
//! no spelling of a forbidden path or host turns the forbid's deny into an allow.
//! Each attack is either refused before any policy (the sidecar's 400/414) or
//! canonicalized to the form the forbid names, which then denies it.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "tests assert by panicking"
)]

use palisade_authz::engine::{Action, Direction, Effect, Engine, Protocol, RequestFacts, Resource};
use palisade_authz::normalize::{normalize_host, normalize_path};

const CLIENT: &str = "spiffe://att.example/ns/a/sa/client";

/// A bundle where `a` may call anything in `b`, and `b`'s ingress permits every
/// call but forbids `/admin` (and below) and `/secret` on host `api.b.svc`.
fn engine() -> (tempfile::TempDir, Engine) {
    let dir = tempfile::tempdir().unwrap();
    let files = [
        ("mesh.yaml", "trustDomain: att.example\n"),
        (
            "workloads.yaml",
            "- spiffeId: spiffe://att.example/ns/a/sa/client\n- spiffeId: spiffe://att.example/ns/b/sa/api\n",
        ),
        (
            "services.yaml",
            "- namespace: b\n  name: api\n  hosts: [api.b.svc]\n  ports: [8080]\n  servedBy: [spiffe://att.example/ns/b/sa/api]\n",
        ),
        (
            "policies/a/egress/out.cedar",
            "@id(\"a-out\")\npermit (principal in Namespace::\"a\", action, resource in Namespace::\"b\");\n",
        ),
        (
            "policies/b/ingress/in.cedar",
            concat!(
                "@id(\"b-in\")\npermit (principal, action, resource in Namespace::\"b\");\n",
                "@id(\"b-no-admin\")\nforbid (principal, action, resource in Namespace::\"b\")\n",
                "when { context.path == \"/admin\" || context.path like \"/admin/*\" };\n",
                "@id(\"b-no-secret-on-api\")\nforbid (principal, action, resource in Namespace::\"b\")\n",
                "when { context.host == \"api.b.svc\" && context.path == \"/secret\" };\n",
            ),
        ),
    ];
    for (name, text) in files {
        let path = dir.path().join(name);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, text).unwrap();
    }
    let bundle = palisade_policy::load(dir.path()).unwrap_or_else(|d| panic!("{d}"));
    let engine = Engine::new(bundle.engine_input()).unwrap();
    (dir, engine)
}

fn ingress(engine: &Engine, path: &str, host: &str) -> Effect {
    let facts = RequestFacts {
        principal: CLIENT,
        action: Action::Get,
        resource: Resource::Service {
            namespace: "b",
            name: "api",
        },
        path,
        host,
        protocol: Protocol::Http1,
        source_ip: None,
        headers: &[],
        time_unix: 1_900_000_000,
    };
    engine.evaluate(Direction::Ingress, &facts).effect
}

#[derive(Debug, PartialEq)]
enum Outcome {
    /// Refused before any policy (400 or 414).
    Refused,
    /// Canonicalized and decided.
    Decided(Effect, String),
}

fn through_the_sidecar(engine: &Engine, target: &str) -> Outcome {
    match normalize_path(target) {
        Err(_) => Outcome::Refused,
        Ok(p) => Outcome::Decided(ingress(engine, p.path(), "api.b.svc"), p.path().to_string()),
    }
}

#[test]
fn no_spelling_of_a_forbidden_path_is_allowed() {
    let (_dir, engine) = engine();
    assert_eq!(ingress(&engine, "/ok", "api.b.svc"), Effect::Allow, "the permit works");
    let deny = |p: &str| Outcome::Decided(Effect::Deny, p.to_string());
    let cases = [
        ("/admin", deny("/admin")),
        ("//admin", deny("/admin")),
        ("/a/../admin", deny("/admin")),
        ("/./admin", deny("/admin")),
        ("/%61dmin", deny("/admin")),
        ("/admin;x", deny("/admin")),
        ("/x/..;p/admin", deny("/admin")),
        ("/admin?x", deny("/admin")),
        ("/admin?x=/../ok", deny("/admin")),
        ("/admin/", deny("/admin/")),
        ("/admin/users", deny("/admin/users")),
        ("/ok/../admin/users", deny("/admin/users")),
        ("/%2e%2e/admin", Outcome::Refused),
        ("/%2E%2E/admin", Outcome::Refused),
        ("/admin%2F", Outcome::Refused),
        ("/admin%2fusers", Outcome::Refused),
        ("/admin%5Cusers", Outcome::Refused),
        ("/admin%3Bx", Outcome::Refused),
        ("/admin#x", Outcome::Refused),
        ("/admin\\users", Outcome::Refused),
        ("/admin%00", Outcome::Refused),
        ("/../admin", Outcome::Refused),
        ("admin", Outcome::Refused),
    ];
    for (target, want) in cases {
        assert_eq!(through_the_sidecar(&engine, target), want, "{target:?}");
    }
    // Paths are case-sensitive: `/ADMIN` is another resource, and it is exactly
    // what goes upstream, so the backend never sees `/admin` for it.
    assert_eq!(
        through_the_sidecar(&engine, "/ADMIN"),
        Outcome::Decided(Effect::Allow, "/ADMIN".into())
    );
    // SECURITY.md rule 8: `like "/admin/*"` with the `== "/admin"` idiom does not
    // catch `/administrator`, which is a different path.
    assert_eq!(
        through_the_sidecar(&engine, "/administrator"),
        Outcome::Decided(Effect::Allow, "/administrator".into())
    );
}

#[test]
fn no_spelling_of_a_forbidden_host_is_allowed() {
    let (_dir, engine) = engine();
    assert_eq!(
        ingress(&engine, "/secret", "other.b.svc"),
        Effect::Allow,
        "the forbid is host-specific"
    );
    for header in [
        "api.b.svc",
        "API.B.SVC",
        "Api.B.Svc.",
        "api.b.svc:443",
        "api.b.svc.:443",
        "api.b.svc:8443",
    ] {
        let host = normalize_host(header, Some(443)).unwrap_or_else(|e| panic!("{header:?}: {e}"));
        assert_eq!(host.name(), "api.b.svc", "{header:?}");
        assert_eq!(ingress(&engine, "/secret", host.name()), Effect::Deny, "{header:?}");
    }
    for refused in [
        "api.b.svc..",
        "",
        "api.b.svc:",
        "api.b.svc:99999",
        "u@api.b.svc",
        "api.b.svc\u{0}",
        "äpi.b.svc",
    ] {
        assert!(normalize_host(refused, Some(443)).is_err(), "{refused:?} must be a 400");
    }
}
