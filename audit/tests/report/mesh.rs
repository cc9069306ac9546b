//! A synthetic day of a small mesh, for the sample report and the benchmark.
//!
//! Eight services in six namespaces call each other along seven allowed edges;
//! the batch reporter is denied at payments' sidecar although its own allowed it
//! (one side said no), the frontend and shipping are denied at their own sidecar,
//! a dry-run policy would lock down the orders admin API, and denials burst in the
//! middle of the day. Around the calls: BlackHoled, Passthrough and allowlisted
//! external traffic, certificate issuance and renewal, and policy publication.
//!
//! Records are made in place ([`Mesh::fill`] rewrites one [`StoredRecord`]'s
//! strings without allocating once they have grown), so a million of them can
//! be streamed into a report without a million records in memory. Traffic
//! density follows `1 / (1 + a·cos 2πx)` over the window: quiet at the edges,
//! busy in the middle.

use palisade_audit::record::{
    Decision, Effect, Event, External, ExternalKind, Identity, IdentityKind, PolicyChange, PolicyOutcome, Record, Side,
    StoredRecord, GENESIS,
};

const TD: &str = "spiffe://prod.example";

/// (caller, callee service id, action, path, the policy that permits it).
const EDGES: [(&str, &str, &str, &str, &str); 7] = [
    (
        "ns/shop/sa/frontend",
        "shop/checkout",
        "POST",
        "/api/cart/checkout",
        "shop-frontend-to-checkout",
    ),
    (
        "ns/shop/sa/checkout",
        "payments/payments",
        "POST",
        "/v1/charges",
        "payments-allow-checkout",
    ),
    (
        "ns/shop/sa/checkout",
        "orders/orders",
        "POST",
        "/v1/orders",
        "orders-allow-checkout",
    ),
    (
        "ns/orders/sa/orders",
        "inventory/inventory",
        "GET",
        "/v1/stock/sku-1234",
        "inventory-allow-orders",
    ),
    (
        "ns/shop/sa/frontend",
        "identity/auth",
        "POST",
        "/oauth/token",
        "auth-allow-mesh",
    ),
    (
        "ns/orders/sa/orders",
        "shipping/shipping",
        "POST",
        "/v1/shipments",
        "shipping-allow-orders",
    ),
    (
        "ns/batch/sa/reporter",
        "orders/orders",
        "GET",
        "/v1/orders?since=1d",
        "orders-allow-reporting",
    ),
];

const BLACKHOLE_HOSTS: [(&str, u16); 3] = [
    ("paste.example.net", 443),
    ("198.51.100.23", 4444),
    ("pool.mining.example", 3333),
];
const PASSTHROUGH_HOSTS: [(&str, u16); 2] = [("api.partner.example", 443), ("telemetry.vendor.example", 443)];
const ALLOWLISTED_HOSTS: [(&str, u16); 3] = [
    ("api.stripe.example", 443),
    ("s3.eu-west-1.storage.example", 443),
    ("smtp.mail.example", 587),
];

/// The generator: `count` records spread over `[since, until]`.
#[derive(Debug, Clone)]
pub struct Mesh {
    pub since: i64,
    pub until: i64,
    pub count: u64,
}

impl Mesh {
    /// An empty record for [`Mesh::fill`] to rewrite.
    pub fn blank() -> StoredRecord {
        StoredRecord {
            seq: 0,
            sender: String::new(),
            received_micros: 0,
            record: Record {
                id: String::new(),
                time_micros: 0,
                event: Event::Decision(blank_decision()),
            },
            prev_hash: GENESIS,
            hash: GENESIS,
        }
    }

    /// Every record, in memory (for small counts).
    pub fn records(&self) -> Vec<StoredRecord> {
        (0..self.count)
            .map(|i| {
                let mut record = Self::blank();
                self.fill(&mut record, i);
                record
            })
            .collect()
    }

    /// Rewrites `out` as record `i` (seq `i + 1`).
    pub fn fill(&self, out: &mut StoredRecord, i: u64) {
        out.seq = i + 1;
        out.hash = GENESIS;
        out.hash[..8].copy_from_slice(&out.seq.to_be_bytes());
        out.prev_hash = GENESIS;
        out.prev_hash[..8].copy_from_slice(&i.to_be_bytes());
        let time = self.time_of(i);
        out.received_micros = time + 1_500;
        out.record.time_micros = time;
        set(&mut out.record.id, format_args!("{i:016x}"));
        let pair = i / 2;
        let roll = mix(pair) % 1_000;
        let x = self.fraction(i);
        if roll < 900 {
            self.fill_decision(out, i, pair, x);
        } else if roll < 975 {
            fill_external(out, i);
        } else if roll < 997 {
            fill_identity(out, i);
        } else {
            fill_policy(out, i);
        }
    }

    fn fraction(&self, i: u64) -> f64 {
        i as f64 / self.count.max(1) as f64
    }

    /// Monotonic in `i`, denser in the middle of the window.
    fn time_of(&self, i: u64) -> i64 {
        let x = self.fraction(i);
        let a = 0.6;
        let warped = x + a * (2.0 * std::f64::consts::PI * x).sin() / (2.0 * std::f64::consts::PI);
        self.since + ((self.until - self.since) as f64 * warped) as i64
    }

    fn fill_decision(&self, out: &mut StoredRecord, i: u64, pair: u64, x: f64) {
        let d = decision_mut(out);
        let side = if i.is_multiple_of(2) {
            Side::Egress
        } else {
            Side::Ingress
        };
        let pick = mix(pair ^ 0x5eed) % 1_000;
        // An incident between 55 % and 62 % of the window: the reporter hammers payments.
        let incident = (0.55..0.62).contains(&x) && pick < 250;
        set(
            &mut d.request_id,
            format_args!("{:08x}-{:04x}-4{:03x}", mix(pair) as u32, pair % 0xffff, pair % 0xfff),
        );
        d.side = side;
        d.status = 200;
        d.latency_micros = 300 + mix(i) % 4_000;
        let edge = if incident || pick < 12 {
            // Allowed by the reporter's sidecar, denied by payments'.
            set_edge(
                d,
                "ns/batch/sa/reporter",
                "payments/payments",
                "GET",
                "/v1/charges/export",
            );
            d.effect = if side == Side::Egress {
                Effect::Allow
            } else {
                Effect::Deny
            };
            let policy = if side == Side::Egress {
                "batch-egress-any"
            } else {
                "payments-forbid-batch"
            };
            set_policy(d, policy);
            d.status = 403;
            return out.sender_from(side, "ns/batch/sa/reporter", "ns/payments/sa/payments");
        } else if pick < 20 {
            // Denied at the frontend's own sidecar: nothing permits it.
            set_edge(d, "ns/shop/sa/frontend", "payments/payments", "POST", "/v1/charges");
            set(
                &mut d.request_id,
                format_args!("{:08x}-{}", mix(pair) as u32, side.as_str()),
            );
            d.side = Side::Egress;
            d.effect = Effect::Deny;
            d.policies.clear();
            d.status = 403;
            return out.sender_from(Side::Egress, "ns/shop/sa/frontend", "");
        } else if pick < 26 {
            set_edge(d, "ns/shipping/sa/shipping", "payments/payments", "GET", "/v1/refunds");
            set(
                &mut d.request_id,
                format_args!("{:08x}-{}", mix(pair) as u32, side.as_str()),
            );
            d.side = Side::Egress;
            d.effect = Effect::Deny;
            set_policy(d, "shipping-forbid-payments");
            d.status = 403;
            return out.sender_from(Side::Egress, "ns/shipping/sa/shipping", "");
        } else if pick < 40 {
            set_edge(d, "ns/shop/sa/checkout", "orders/orders", "POST", "/admin/reindex");
            let dry = side == Side::Ingress;
            d.effect = if dry { Effect::DryRunDeny } else { Effect::Allow };
            set_policy(
                d,
                if dry {
                    "orders-admin-lockdown"
                } else {
                    "orders-allow-checkout"
                },
            );
            EDGES[2]
        } else {
            let edge = EDGES[usize::try_from(pick % 7).unwrap_or(0)];
            set_edge(d, edge.0, edge.1, edge.2, edge.3);
            d.effect = Effect::Allow;
            set_policy(d, edge.4);
            if pick % 500 == 41 && side == Side::Egress {
                // A legacy caller without a sidecar: only the callee's record has the id.
                set(&mut d.request_id, format_args!("legacy-{pair:x}"));
            }
            edge
        };
        let callee = format!(
            "ns/{}/sa/{}",
            edge.1.split('/').next().unwrap_or(""),
            edge.1.split('/').nth(1).unwrap_or("")
        );
        out.sender_from(side, edge.0, &callee);
    }
}

trait SenderFrom {
    fn sender_from(&mut self, side: Side, caller: &str, callee: &str);
}

impl SenderFrom for StoredRecord {
    fn sender_from(&mut self, side: Side, caller: &str, callee: &str) {
        let who = if side == Side::Egress { caller } else { callee };
        set(&mut self.sender, format_args!("{TD}/{who}"));
    }
}

fn fill_external(out: &mut StoredRecord, i: u64) {
    let roll = mix(i ^ 0xe7) % 100;
    let (kind, (host, port), reason) = if roll < 22 {
        let h = BLACKHOLE_HOSTS[usize::try_from(roll % 3).unwrap_or(0)];
        (
            ExternalKind::BlackHole,
            h,
            "not in egress.yaml: refused (REGISTRY_ONLY)",
        )
    } else if roll < 40 {
        let h = PASSTHROUGH_HOSTS[usize::try_from(roll % 2).unwrap_or(0)];
        (
            ExternalKind::Passthrough,
            h,
            "not in egress.yaml: let through (ALLOW_ANY)",
        )
    } else {
        let h = ALLOWLISTED_HOSTS[usize::try_from(roll % 3).unwrap_or(0)];
        (ExternalKind::Allowlisted, h, "allowed by egress.yaml")
    };
    let workload = match roll % 4 {
        0 => "ns/batch/sa/reporter",
        1 => "ns/shop/sa/checkout",
        2 => "ns/orders/sa/orders",
        _ => "ns/shop/sa/frontend",
    };
    set(&mut out.sender, format_args!("{TD}/{workload}"));
    let e = external_mut(out);
    e.kind = kind;
    set(&mut e.workload, format_args!("{TD}/{workload}"));
    set(&mut e.host, format_args!("{host}"));
    set(&mut e.sni, format_args!("{host}"));
    e.port = port;
    set(&mut e.protocol, format_args!("tls"));
    set(&mut e.request_id, format_args!("ext-{i:x}"));
    set(&mut e.reason, format_args!("{reason}"));
}

fn fill_identity(out: &mut StoredRecord, i: u64) {
    let roll = mix(i ^ 0x1d) % 100;
    let kind = match roll {
        0..=1 => IdentityKind::Revoked,
        2 => IdentityKind::Unrevoked,
        3..=20 => IdentityKind::Issued,
        _ => IdentityKind::Renewed,
    };
    let edge = EDGES[usize::try_from(roll % 7).unwrap_or(0)];
    set(&mut out.sender, format_args!("{TD}/ns/palisade/sa/ca"));
    out.record.event = Event::Identity(Identity {
        kind,
        spiffe_id: format!("{TD}/{}", edge.0),
        serial: format!("{:032x}", u128::from(mix(i)) << 64 | u128::from(mix(i + 1))),
        reason: match kind {
            IdentityKind::Revoked => "key compromise reported by on-call".to_owned(),
            IdentityKind::Unrevoked => "revoked in error".to_owned(),
            IdentityKind::Issued => "join token attested".to_owned(),
            IdentityKind::Renewed => "renewed at 2/3 of lifetime".to_owned(),
        },
        not_after_unix: out.record.time_micros / 1_000_000 + 3_600,
    });
}

fn fill_policy(out: &mut StoredRecord, i: u64) {
    set(&mut out.sender, format_args!("{TD}/ns/palisade/sa/control-plane"));
    let rejected = mix(i ^ 0x9).is_multiple_of(4);
    out.record.event = Event::Policy(PolicyChange {
        outcome: if rejected {
            PolicyOutcome::Rejected
        } else {
            PolicyOutcome::Accepted
        },
        version: if rejected { 0 } else { 100 + i / 1_000 },
        digest: if rejected {
            String::new()
        } else {
            format!("sha256:{:016x}{:016x}", mix(i), mix(i + 7))
        },
        detail: if rejected {
            "payments/ingress.cedar:12:5: unknown attribute `context.mtls`\n  did you mean `context.tls`?".to_owned()
        } else {
            String::new()
        },
    });
}

fn blank_decision() -> Decision {
    Decision {
        side: Side::Egress,
        effect: Effect::Allow,
        principal: String::new(),
        action: String::new(),
        resource: String::new(),
        path: String::new(),
        policies: Vec::new(),
        request_id: String::new(),
        status: 0,
        latency_micros: 0,
    }
}

fn decision_mut(out: &mut StoredRecord) -> &mut Decision {
    if !matches!(out.record.event, Event::Decision(_)) {
        out.record.event = Event::Decision(blank_decision());
    }
    match &mut out.record.event {
        Event::Decision(d) => d,
        _ => unreachable!("just set"),
    }
}

fn external_mut(out: &mut StoredRecord) -> &mut External {
    if !matches!(out.record.event, Event::External(_)) {
        out.record.event = Event::External(External {
            kind: ExternalKind::BlackHole,
            workload: String::new(),
            host: String::new(),
            sni: String::new(),
            port: 0,
            protocol: String::new(),
            request_id: String::new(),
            reason: String::new(),
        });
    }
    match &mut out.record.event {
        Event::External(e) => e,
        _ => unreachable!("just set"),
    }
}

fn set_edge(d: &mut Decision, caller: &str, resource: &str, action: &str, path: &str) {
    set(&mut d.principal, format_args!("{TD}/{caller}"));
    set(&mut d.resource, format_args!("{resource}"));
    set(&mut d.action, format_args!("{action}"));
    set(&mut d.path, format_args!("{path}"));
}

/// Makes `policy` the one determining policy, reusing the buffer; none when empty.
fn set_policy(d: &mut Decision, policy: &str) {
    d.policies.truncate(1);
    match d.policies.first_mut() {
        Some(first) => set(first, format_args!("{policy}")),
        None => d.policies.push(policy.to_owned()),
    }
}

/// Overwrites a string, reusing its buffer.
fn set(s: &mut String, args: std::fmt::Arguments<'_>) {
    use std::fmt::Write;
    s.clear();
    s.write_fmt(args).unwrap();
}

/// SplitMix64: a deterministic stand-in for randomness.
fn mix(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}
