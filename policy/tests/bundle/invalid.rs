//! Every rule of the validator, one row each: the bundle is refused, and the one
//! problem is reported at the right file, line and column.

use palisade_policy::{Diagnostic, Diagnostics};

use crate::support::TempBundle;

/// One invalid bundle: the minimal valid bundle with `files` written over it.
struct Row {
    rule: &'static str,
    files: &'static [(&'static str, &'static str)],
    /// Where the problem is: file (inside the bundle), line, column.
    at: (&'static str, u32, u32),
    /// A piece of the message.
    says: &'static str,
}

const IN_PAYMENTS: &str = "policies/payments/ingress/p.cedar";
const FROM_WEB: &str = "policies/web/egress/p.cedar";

const ROWS: &[Row] = &[
    // Annotations.
    Row {
        rule: "every policy has an @id",
        files: &[(IN_PAYMENTS, "// no id\npermit (principal, action, resource in Namespace::\"payments\");\n")],
        at: (IN_PAYMENTS, 2, 1),
        says: "policy has no `@id`",
    },
    Row {
        rule: "@mode is dry-run or absent",
        files: &[(
            IN_PAYMENTS,
            "@id(\"p\")\n@mode(\"audit\")\npermit (principal, action, resource in Namespace::\"payments\");\n",
        )],
        at: (IN_PAYMENTS, 2, 1),
        says: "unknown `@mode(\"audit\")`",
    },
    Row {
        rule: "an @id is unique across namespaces",
        files: &[
            ("policies/payments/ingress/a.cedar", "@id(\"same\")\npermit (principal, action, resource in Namespace::\"payments\");\n"),
            ("policies/web/egress/b.cedar", "\n@id(\"same\")\npermit (principal in Namespace::\"web\", action, resource);\n"),
        ],
        at: ("policies/web/egress/b.cedar", 2, 1),
        says: "policy id `same` is used twice (first at ",
    },
    Row {
        rule: "templates are not policies",
        files: &[(
            IN_PAYMENTS,
            "@id(\"p\")\npermit (principal == ?principal, action, resource in Namespace::\"payments\");\n",
        )],
        at: (IN_PAYMENTS, 2, 1),
        says: "templates are not supported",
    },
    // Cedar syntax and strict validation against the schema.
    Row {
        rule: "Cedar syntax",
        files: &[(
            IN_PAYMENTS,
            "@id(\"p\")\npermit (principal, action, resource in Namespace::\"payments\")\nwhen { context.path = \"/x\" };\n",
        )],
        at: (IN_PAYMENTS, 3, 8),
        says: "'=' is not a valid operator",
    },
    Row {
        rule: "Cedar syntax: unexpected end of input",
        files: &[(IN_PAYMENTS, "@id(\"p\")\npermit (principal, action, resource in Namespace::\"payments\")\n")],
        at: (IN_PAYMENTS, 2, 62),
        says: "unexpected end of input",
    },
    Row {
        rule: "schema: unknown attribute",
        files: &[(
            IN_PAYMENTS,
            "@id(\"p\")\npermit (principal, action, resource in Namespace::\"payments\")\nwhen { principal.team == \"x\" };\n",
        )],
        at: (IN_PAYMENTS, 3, 8),
        says: "in policy `p`: attribute `team` on entity type `Workload` not found",
    },
    Row {
        rule: "schema: wrong type",
        files: &[(
            IN_PAYMENTS,
            "@id(\"p\")\npermit (principal, action, resource in Namespace::\"payments\")\nwhen { context.path == 5 };\n",
        )],
        at: (IN_PAYMENTS, 3, 8),
        says: "the types Long and String are not compatible",
    },
    Row {
        rule: "schema: a tag read without hasTag",
        files: &[(
            IN_PAYMENTS,
            "@id(\"p\")\npermit (principal, action, resource in Namespace::\"payments\")\nwhen { principal.getTag(\"pci\") == \"true\" };\n",
        )],
        at: (IN_PAYMENTS, 3, 8),
        says: "unable to guarantee safety of access to tag",
    },
    Row {
        rule: "schema warnings are errors: an impossible policy",
        files: &[(
            IN_PAYMENTS,
            "@id(\"p\")\nforbid (principal, action, resource in Namespace::\"payments\")\nwhen { false };\n",
        )],
        at: (IN_PAYMENTS, 1, 1),
        says: "policy is impossible",
    },
    // The namespace rule.
    Row {
        rule: "ingress: the resource must be constrained",
        files: &[(IN_PAYMENTS, "@id(\"p\")\npermit (\n  principal,\n  action,\n  resource\n);\n")],
        at: (IN_PAYMENTS, 5, 3),
        says: "ingress policy of namespace `payments` must constrain `resource` to that namespace, as \
               `resource in Namespace::\"payments\"`, `resource == Service::\"payments/NAME\"` or \
               `resource is Service in Namespace::\"payments\"`; this one leaves `resource` unconstrained",
    },
    Row {
        rule: "ingress: not to another namespace",
        files: &[(IN_PAYMENTS, "@id(\"p\")\npermit (principal, action, resource in Namespace::\"web\");\n")],
        at: (IN_PAYMENTS, 2, 28),
        says: "this one names `Namespace::\"web\"`, another namespace",
    },
    Row {
        rule: "ingress: not a service of another namespace",
        files: &[(IN_PAYMENTS, "@id(\"p\")\npermit (principal, action, resource == Service::\"web/frontend\");\n")],
        at: (IN_PAYMENTS, 2, 28),
        says: "a service of namespace `web`",
    },
    Row {
        rule: "ingress: a type alone is no constraint",
        files: &[(IN_PAYMENTS, "@id(\"p\")\npermit (principal, action, resource is Service);\n")],
        at: (IN_PAYMENTS, 2, 28),
        says: "only says `resource is Service`",
    },
    Row {
        rule: "egress: the principal must be constrained",
        files: &[(FROM_WEB, "@id(\"p\")\npermit (principal, action, resource);\n")],
        at: (FROM_WEB, 2, 9),
        says: "egress policy of namespace `web` must constrain `principal` to that namespace",
    },
    Row {
        rule: "egress: not a workload of another namespace",
        files: &[(
            FROM_WEB,
            "@id(\"p\")\npermit (principal == Workload::\"spiffe://shop.example/ns/other/sa/x\", action, resource);\n",
        )],
        at: (FROM_WEB, 2, 9),
        says: "a workload of namespace `other`",
    },
    Row {
        rule: "egress: not a workload of another trust domain",
        files: &[(
            FROM_WEB,
            "@id(\"p\")\npermit (principal == Workload::\"spiffe://evil.example/ns/web/sa/x\", action, resource);\n",
        )],
        at: (FROM_WEB, 2, 9),
        says: "outside the trust domain `shop.example`",
    },
    Row {
        rule: "egress: not another namespace",
        files: &[(FROM_WEB, "@id(\"p\")\npermit (principal in Namespace::\"payments\", action, resource);\n")],
        at: (FROM_WEB, 2, 9),
        says: "another namespace",
    },
    // YAML.
    Row {
        rule: "unknown YAML field",
        files: &[("services.yaml", "- namespace: payments\n  nmae: payments\n")],
        at: ("services.yaml", 2, 3),
        says: "unknown field `nmae`",
    },
    Row {
        rule: "YAML type error",
        files: &[(
            "services.yaml",
            "- namespace: payments\n  name: payments\n  hosts: [payments.shop]\n  ports: [x]\n  servedBy: []\n",
        )],
        at: ("services.yaml", 4, 11),
        says: "invalid type: string \"x\", expected a port number from 1 to 65535",
    },
    Row {
        rule: "YAML syntax error",
        files: &[("egress.yaml", "- host: api.stripe.com\n  ports: [443]\n  protocol: tls: x\n")],
        at: ("egress.yaml", 3, 16),
        says: "mapping values are not allowed in this context",
    },
    Row {
        rule: "mesh.yaml: outbound mode",
        files: &[("mesh.yaml", "trustDomain: shop.example\noutboundMode: allow\n")],
        at: ("mesh.yaml", 2, 15),
        says: "unknown variant `allow`, expected `REGISTRY_ONLY` or `ALLOW_ANY`",
    },
    Row {
        rule: "mesh.yaml: trust domain",
        files: &[("mesh.yaml", "trustDomain: spiffe://shop.example\n")],
        at: ("mesh.yaml", 1, 14),
        says: "invalid trust domain `spiffe://shop.example`",
    },
    // Registry.
    Row {
        rule: "a SPIFFE ID follows the grammar",
        files: &[(
            "workloads.yaml",
            "- spiffeId: spiffe://shop.example/ns/payments/sa/payments\n- spiffeId: spiffe://shop.example/ns/web//sa/x\n",
        )],
        at: ("workloads.yaml", 2, 13),
        says: "invalid SPIFFE ID `spiffe://shop.example/ns/web//sa/x`: the path has an empty segment",
    },
    Row {
        rule: "a workload ID has the mesh form",
        files: &[(
            "workloads.yaml",
            "- spiffeId: spiffe://shop.example/ns/payments/sa/payments\n- spiffeId: spiffe://shop.example/web\n",
        )],
        at: ("workloads.yaml", 2, 13),
        says: "is not a mesh workload ID",
    },
    Row {
        rule: "a workload is in the trust domain",
        files: &[(
            "workloads.yaml",
            "- spiffeId: spiffe://shop.example/ns/payments/sa/payments\n- spiffeId: spiffe://evil.example/ns/web/sa/x\n",
        )],
        at: ("workloads.yaml", 2, 13),
        says: "SPIFFE ID `spiffe://evil.example/ns/web/sa/x` is outside the trust domain `shop.example`",
    },
    Row {
        rule: "a workload is declared once",
        files: &[(
            "workloads.yaml",
            "- spiffeId: spiffe://shop.example/ns/payments/sa/payments\n- spiffeId: spiffe://shop.example/ns/payments/sa/payments\n",
        )],
        at: ("workloads.yaml", 2, 13),
        says: "workload `spiffe://shop.example/ns/payments/sa/payments` is declared twice (first at ",
    },
    Row {
        rule: "servedBy names a registered workload",
        files: &[(
            "services.yaml",
            "- namespace: payments\n  name: payments\n  hosts: [payments.shop]\n  ports: [8080]\n  servedBy: [spiffe://shop.example/ns/payments/sa/ghost]\n",
        )],
        at: ("services.yaml", 5, 14),
        says: "workload `spiffe://shop.example/ns/payments/sa/ghost` is not in `workloads.yaml`",
    },
    Row {
        rule: "servedBy IDs are in the trust domain",
        files: &[(
            "services.yaml",
            "- namespace: payments\n  name: payments\n  hosts: [payments.shop]\n  ports: [8080]\n  servedBy: [spiffe://evil.example/ns/payments/sa/payments]\n",
        )],
        at: ("services.yaml", 5, 14),
        says: "outside the trust domain",
    },
    Row {
        rule: "ports are 1 to 65535",
        files: &[(
            "services.yaml",
            "- namespace: payments\n  name: payments\n  hosts: [payments.shop]\n  ports: [8080, 70000]\n  servedBy: [spiffe://shop.example/ns/payments/sa/payments]\n",
        )],
        at: ("services.yaml", 4, 17),
        says: "port `70000` is out of range",
    },
    Row {
        rule: "a service is declared once",
        files: &[(
            "services.yaml",
            "- namespace: payments\n  name: payments\n  hosts: [payments.shop]\n  ports: [8080]\n  servedBy: [spiffe://shop.example/ns/payments/sa/payments]\n\
             - namespace: payments\n  name: payments\n  hosts: [pay.shop]\n  ports: [8080]\n  servedBy: [spiffe://shop.example/ns/payments/sa/payments]\n",
        )],
        at: ("services.yaml", 7, 9),
        says: "service `payments/payments` is declared twice (first at ",
    },
    Row {
        rule: "a host names one service",
        files: &[(
            "services.yaml",
            "- namespace: payments\n  name: payments\n  hosts: [payments.shop]\n  ports: [8080]\n  servedBy: [spiffe://shop.example/ns/payments/sa/payments]\n\
             - namespace: payments\n  name: refunds\n  hosts: [Payments.Shop.]\n  ports: [8080]\n  servedBy: [spiffe://shop.example/ns/payments/sa/payments]\n",
        )],
        at: ("services.yaml", 8, 11),
        says: "host `payments.shop` already belongs to service `payments/payments`",
    },
    Row {
        rule: "service names are DNS labels",
        files: &[(
            "services.yaml",
            "- namespace: payments\n  name: Payments_API\n  hosts: [payments.shop]\n  ports: [8080]\n  servedBy: [spiffe://shop.example/ns/payments/sa/payments]\n",
        )],
        at: ("services.yaml", 2, 9),
        says: "invalid service name `Payments_API`",
    },
    Row {
        rule: "a service has hosts",
        files: &[(
            "services.yaml",
            "- namespace: payments\n  name: payments\n  hosts: []\n  ports: [8080]\n  servedBy: [spiffe://shop.example/ns/payments/sa/payments]\n",
        )],
        at: ("services.yaml", 3, 10),
        says: "`hosts` is empty",
    },
    Row {
        rule: "endpoints are host:port",
        files: &[(
            "services.yaml",
            "- namespace: payments\n  name: payments\n  hosts: [payments.shop]\n  ports: [8080]\n  servedBy: [spiffe://shop.example/ns/payments/sa/payments]\n  endpoints: [\"10.0.0.1\"]\n",
        )],
        at: ("services.yaml", 6, 15),
        says: "invalid endpoint `10.0.0.1`: give it a port",
    },
    // Egress allowlist.
    Row {
        rule: "egress hosts are valid host names",
        files: &[(
            "egress.yaml",
            "- host: api_stripe.com\n  ports: [443]\n  protocol: tls\n  workloads: { namespaces: [web] }\n",
        )],
        at: ("egress.yaml", 1, 9),
        says: "invalid host `api_stripe.com`",
    },
    Row {
        rule: "egress hosts carry no port",
        files: &[(
            "egress.yaml",
            "- host: api.stripe.com:443\n  ports: [443]\n  protocol: tls\n  workloads: { namespaces: [web] }\n",
        )],
        at: ("egress.yaml", 1, 9),
        says: "host `api.stripe.com:443` has a port",
    },
    Row {
        rule: "egress wildcards cover a domain, not a TLD",
        files: &[("egress.yaml", "- host: \"*.com\"\n  ports: [443]\n  protocol: tls\n  workloads: { namespaces: [web] }\n")],
        at: ("egress.yaml", 1, 9),
        says: "invalid host pattern `*.com`",
    },
    Row {
        rule: "egress wildcards are a whole first label",
        files: &[(
            "egress.yaml",
            "- host: \"api.*.com\"\n  ports: [443]\n  protocol: tls\n  workloads: { namespaces: [web] }\n",
        )],
        at: ("egress.yaml", 1, 9),
        says: "`*` may only be the whole first label",
    },
    Row {
        rule: "an egress host is not a mesh host",
        files: &[(
            "egress.yaml",
            "- host: payments.shop\n  ports: [443]\n  protocol: tls\n  workloads: { namespaces: [web] }\n",
        )],
        at: ("egress.yaml", 1, 9),
        says: "host `payments.shop` already belongs to service `payments/payments`",
    },
    Row {
        rule: "egress ports are 1 to 65535",
        files: &[("egress.yaml", "- host: api.stripe.com\n  ports: [0]\n  protocol: tls\n  workloads: { namespaces: [web] }\n")],
        at: ("egress.yaml", 2, 11),
        says: "port `0` is out of range",
    },
    Row {
        rule: "egress protocol is http or tls",
        files: &[("egress.yaml", "- host: api.stripe.com\n  ports: [443]\n  protocol: udp\n  workloads: { namespaces: [web] }\n")],
        at: ("egress.yaml", 3, 13),
        says: "unknown variant `udp`, expected `http` or `tls`",
    },
    Row {
        rule: "an egress rule selects someone",
        files: &[("egress.yaml", "- host: api.stripe.com\n  ports: [443]\n  protocol: tls\n  workloads: {}\n")],
        at: ("egress.yaml", 4, 14),
        says: "the rule selects no workload",
    },
    Row {
        rule: "egress selector IDs are registered workloads",
        files: &[(
            "egress.yaml",
            "- host: api.stripe.com\n  ports: [443]\n  protocol: tls\n  workloads:\n    spiffeIds: [spiffe://shop.example/ns/web/sa/ghost]\n",
        )],
        at: ("egress.yaml", 5, 17),
        says: "workload `spiffe://shop.example/ns/web/sa/ghost` is not in `workloads.yaml`",
    },
];

fn load_row(row: &Row) -> Diagnostics {
    let bundle = row
        .files
        .iter()
        .fold(TempBundle::new(), |b, (path, text)| b.write(path, text));
    bundle.errors()
}

fn at(d: &Diagnostic) -> (String, u32, u32) {
    let location = d.location().unwrap_or_else(|| panic!("no location: {d}"));
    (location.file.to_string(), location.line, location.column)
}

#[test]
fn each_rule_rejects_the_bundle_with_one_located_error() {
    for row in ROWS {
        let errors = load_row(row);
        assert_eq!(errors.len(), 1, "{}: expected one error, got:\n{errors}", row.rule);
        let d = errors.iter().next().unwrap();
        let (file, line, column) = at(d);
        let (want_file, want_line, want_column) = row.at;
        assert!(
            file.ends_with(want_file),
            "{}: in {file}, not {want_file}\n{d}",
            row.rule
        );
        assert_eq!((line, column), (want_line, want_column), "{}:\n{d}", row.rule);
        let message = d.problem().to_string();
        assert!(
            message.contains(row.says),
            "{}: `{message}` does not say `{}`",
            row.rule,
            row.says
        );
        let rendered = d.to_string();
        assert!(
            rendered.contains(&format!("{want_file}:{want_line}:{want_column}\n")),
            "{rendered}"
        );
        assert!(
            rendered.contains(&format!("\n{want_line} | ")),
            "{}: no excerpt\n{rendered}",
            row.rule
        );
    }
}

#[test]
fn a_duplicate_id_names_where_it_was_first_used() {
    let row = ROWS
        .iter()
        .find(|r| r.rule.contains("unique across namespaces"))
        .unwrap();
    let errors = load_row(row);
    let message = errors.iter().next().unwrap().problem().to_string();
    assert!(message.contains("policies/payments/ingress/a.cedar:1:1)"), "{message}");
}

#[test]
fn a_cedar_error_renders_like_rustc_with_a_caret_under_the_offending_text() {
    let bundle = TempBundle::new().write(
        IN_PAYMENTS,
        "@id(\"p\")\npermit (principal, action, resource in Namespace::\"payments\")\nwhen { context.path = \"/x\" };\n",
    );
    let errors = bundle.errors();
    let path = bundle.path().join(IN_PAYMENTS);
    assert_eq!(
        errors.to_string(),
        format!(
            "error: '=' is not a valid operator in Cedar\n \
             --> {}:3:8\n  \
             |\n\
             3 | when {{ context.path = \"/x\" }};\n  \
             |        ^^^^^^^^^^^^^^^^^^^\n  \
             = help: try using '==' instead",
            path.display()
        )
    );
}

#[test]
fn a_yaml_error_renders_with_its_excerpt() {
    let bundle = TempBundle::new().write("services.yaml", "- namespace: payments\n  nmae: payments\n");
    let rendered = bundle.errors().to_string();
    let expected_tail = "services.yaml:2:3\n  |\n2 |   nmae: payments\n  |   ^";
    assert!(rendered.contains(expected_tail), "{rendered}");
    assert!(
        rendered.starts_with("error: [0]: unknown field `nmae`, expected one of"),
        "{rendered}"
    );
}

#[test]
fn a_scope_error_underlines_the_whole_scope_element() {
    let bundle = TempBundle::new().write(
        IN_PAYMENTS,
        "@id(\"p\")\npermit (principal, action, resource in Namespace::\"web\");\n",
    );
    let errors = bundle.errors();
    let excerpt = errors.iter().next().unwrap().excerpt().unwrap();
    assert_eq!(
        (excerpt.column, excerpt.width),
        (28, 28),
        "resource in Namespace::\"web\""
    );
}

#[test]
fn every_error_of_a_bundle_is_reported_in_file_order() {
    let bundle = TempBundle::new()
        .write("workloads.yaml", "- spiffeId: spiffe://evil.example/ns/web/sa/x\n- spiffeId: spiffe://shop.example/ns/payments/sa/payments\n")
        .write(
            "services.yaml",
            "- namespace: payments\n  name: payments\n  hosts: [payments.shop]\n  ports: [0, 70000]\n  servedBy: [spiffe://shop.example/ns/payments/sa/payments]\n",
        )
        .write(IN_PAYMENTS, "permit (principal, action, resource in Namespace::\"payments\");\n@id(\"q\")\npermit (principal, action, resource);\n")
        .write(FROM_WEB, "@id(\"r\")\npermit (principal, action, resource)\nwhen { context.nope };\n");
    let errors = bundle.errors();
    let found: Vec<(String, u32, u32)> = errors.iter().map(at).collect();
    let short: Vec<(&str, u32, u32)> = found
        .iter()
        .map(|(f, l, c)| (f.rsplit_once(bundle.path().to_str().unwrap()).unwrap().1, *l, *c))
        .collect();
    assert_eq!(
        short,
        [
            ("/workloads.yaml", 1, 13),
            ("/services.yaml", 4, 11),
            ("/services.yaml", 4, 14),
            ("/policies/payments/ingress/p.cedar", 1, 1),
            ("/policies/payments/ingress/p.cedar", 3, 28),
            ("/policies/web/egress/p.cedar", 2, 9),
            ("/policies/web/egress/p.cedar", 3, 8),
        ],
        "{errors}"
    );
}

#[test]
fn a_broken_mesh_yaml_does_not_hide_the_other_errors() {
    let bundle = TempBundle::new()
        .write("mesh.yaml", "trustDomain: Shop\n")
        .write(FROM_WEB, "@id(\"r\")\npermit (principal, action, resource);\n");
    let errors = bundle.errors();
    assert_eq!(errors.len(), 2, "{errors}");
}

#[test]
fn problems_with_the_layout_name_the_file() {
    let cases: &[(&str, &str, &str)] = &[
        (
            "policies/payments/inbound/p.cedar",
            "policies/payments/inbound",
            "unexpected directory `policies/payments/inbound`",
        ),
        (
            "policies/payments/ingress/p.txt",
            "policies/payments/ingress/p.txt",
            "policy files end in `.cedar`",
        ),
        (
            "policies/Payments/ingress/p.cedar",
            "policies/Payments",
            "invalid namespace `Payments`",
        ),
        (
            "policies/README.md",
            "policies/README.md",
            "`policies/` holds one directory per namespace",
        ),
    ];
    for (path, at, says) in cases {
        let bundle = TempBundle::new().write(path, "");
        let errors = bundle.errors();
        assert_eq!(errors.len(), 1, "{errors}");
        let d = errors.iter().next().unwrap();
        assert!(d.file().unwrap().ends_with(at), "{d}");
        assert!(d.to_string().contains(says), "{d}");
        assert_eq!(d.location(), None);
    }
}

#[test]
fn a_bundle_without_mesh_yaml_is_refused() {
    let bundle = TempBundle::new();
    std::fs::remove_file(bundle.path().join("mesh.yaml")).unwrap();
    let errors = bundle.errors();
    assert!(errors.to_string().contains("the bundle has no `mesh.yaml`"), "{errors}");
}

#[test]
fn the_minimal_bundle_of_these_tests_is_valid() {
    palisade_policy::load(TempBundle::new().path()).unwrap();
}
