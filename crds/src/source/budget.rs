//! Budgets: no namespace can make the bundle too big for everyone.
//!
//! The loader refuses a bundle over its limits ([`MAX_FILES`] files,
//! [`MAX_FILE_BYTES`] per file, [`MAX_TOTAL_BYTES`] in all), and a refused bundle
//! is no new bundle for anyone. In a cluster, whoever may create objects in one
//! namespace could push it over: thousands of `CedarPolicy`s, pods or Services.
//! So [`plan`] checks each namespace's part before the loader runs and cuts parts
//! that are too big:
//!
//! 1. Each namespace has a budget of its own: at most [`NAMESPACE_POLICIES`]
//!    policy files and [`NAMESPACE_POLICY_BYTES`] of policy text, and at most
//!    [`NAMESPACE_ENTRY_BYTES`] in each of `workloads.yaml`, `services.yaml` and
//!    `egress.yaml`. Over it, only that namespace is cut.
//! 2. The budgets of all namespaces may add up to more than the loader's
//!    limits. When the namespaces within budget still overflow a limit, each
//!    namespace is guaranteed its **fair share** of that limit: the limit divided
//!    by the number of namespaces. A namespace within its fair share is never
//!    cut, whatever the others do. Of those above their share, the biggest is cut
//!    first, then the next, until the bundle fits. Since the shares add up to
//!    the limit, some namespace is always above its share while the bundle does
//!    not fit. So one namespace's growth can cost another namespace only when that
//!    namespace itself takes more than its share.
//!
//! A cut of policies holds the namespace on its last valid set (as an invalid
//! policy does). When that does not bring it within what it may have (its own
//! budget, or its fair share), it has no policy at all: every call to and from it
//! is denied. A cut of workloads, Services or allowlist entries leaves them out.
//! Every cut narrows access.

use std::collections::BTreeMap;

use palisade_policy::bundle::{MAX_FILES, MAX_FILE_BYTES, MAX_TOTAL_BYTES};

/// The most policy files (`CedarPolicy`s) one namespace may have.
pub const NAMESPACE_POLICIES: usize = 256;
/// The most policy text, in bytes, one namespace may have.
pub const NAMESPACE_POLICY_BYTES: usize = 2 << 20;
/// The most bytes one namespace may take of `workloads.yaml`, of
/// `services.yaml` and of `egress.yaml`, each.
pub const NAMESPACE_ENTRY_BYTES: usize = 256 << 10;

/// Room kept for `mesh.yaml` and the three YAML files themselves.
const RESERVED_FILES: usize = 4;
const RESERVED_BYTES: usize = 64 << 10;

/// A part of the bundle one namespace contributes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(super) enum Part {
    Policies,
    Workloads,
    Services,
    Egress,
}

impl Part {
    fn file(self) -> &'static str {
        match self {
            Self::Policies => "policy files",
            Self::Workloads => "`workloads.yaml`",
            Self::Services => "`services.yaml`",
            Self::Egress => "`egress.yaml`",
        }
    }
}

/// Policy files: how many, how many bytes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(super) struct Size {
    pub(super) files: usize,
    pub(super) bytes: usize,
}

/// What one namespace contributes.
#[derive(Debug, Clone, Default)]
pub(super) struct Usage {
    /// Its current policies.
    pub(super) policies: Size,
    /// Its last valid policy set.
    pub(super) held: Size,
    /// Bytes of `workloads.yaml`, `services.yaml` and `egress.yaml` its entries take.
    pub(super) workloads: usize,
    pub(super) services: usize,
    pub(super) egress: usize,
}

/// How far a namespace's policies were cut.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum PolicyCut {
    /// Its last valid set.
    Held,
    /// No policy at all.
    Empty,
}

/// What a namespace loses, and why (in words for its resources' status).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(super) struct Cuts {
    /// Namespace → how far its policies were cut, and why.
    pub(super) policies: BTreeMap<String, (PolicyCut, String)>,
    /// `(namespace, part)` → why, for workloads, Services and allowlist entries.
    pub(super) entries: BTreeMap<(String, Part), String>,
}

impl Cuts {
    /// Whether `part` of `namespace` is left out (policies: held or empty).
    pub(super) fn cut(&self, namespace: &str, part: Part) -> bool {
        match part {
            Part::Policies => self.policies.contains_key(namespace),
            _ => self.entries.contains_key(&(namespace.to_owned(), part)),
        }
    }

    /// Why `part` of `namespace` is left out.
    pub(super) fn reason(&self, namespace: &str, part: Part) -> Option<&str> {
        match part {
            Part::Policies => self.policies.get(namespace).map(|(_, why)| why.as_str()),
            _ => self.entries.get(&(namespace.to_owned(), part)).map(String::as_str),
        }
    }

    fn size(&self, namespace: &str, usage: &Usage, part: Part) -> Size {
        let bytes = |bytes| Size { files: 0, bytes };
        match part {
            // Not cut, a namespace may still fall back on its last valid set (an
            // invalid policy): it counts as the bigger of the two.
            Part::Policies => match self.policies.get(namespace) {
                None => Size {
                    files: usage.policies.files.max(usage.held.files),
                    bytes: usage.policies.bytes.max(usage.held.bytes),
                },
                Some((PolicyCut::Held, _)) => usage.held,
                Some((PolicyCut::Empty, _)) => Size::default(),
            },
            _ if self.cut(namespace, part) => Size::default(),
            Part::Workloads => bytes(usage.workloads),
            Part::Services => bytes(usage.services),
            Part::Egress => bytes(usage.egress),
        }
    }

    /// Cuts `part` of `namespace` one step further.
    fn deepen(&mut self, namespace: &str, part: Part, why: String) {
        if part != Part::Policies {
            self.entries.insert((namespace.to_owned(), part), why);
            return;
        }
        let next = match self.policies.get(namespace) {
            None => PolicyCut::Held,
            Some(_) => PolicyCut::Empty,
        };
        self.policies.insert(namespace.to_owned(), (next, why));
    }
}

/// What each namespace must lose so that none is over its budget and the whole
/// bundle is within the loader's limits.
pub(super) fn plan(usage: &BTreeMap<String, Usage>) -> Cuts {
    let mut cuts = Cuts::default();
    for (namespace, used) in usage {
        own_budget(&mut cuts, namespace, used);
    }
    // Each step cuts one part one step further, and a part can be cut at most twice.
    for _ in 0..usage.len().saturating_mul(5).saturating_add(1) {
        let Some(cut) = biggest_over_share(&cuts, usage) else {
            break;
        };
        let Over {
            limit,
            namespace,
            part,
            amount,
            share,
        } = cut;
        let why = format!(
            "the mesh's bundle would be over {limit}, and namespace `{namespace}` takes {amount} of it, more than \
             its fair share ({share}: the limit divided among the {count} namespaces); the namespaces furthest over \
             their share are cut first until the bundle fits: make namespace `{namespace}` smaller",
            count = usage.len()
        );
        cuts.deepen(namespace, part, why);
    }
    cuts
}

/// The cuts of one namespace over its own budget.
fn own_budget(cuts: &mut Cuts, namespace: &str, used: &Usage) {
    let over = |size: Size| size.files > NAMESPACE_POLICIES || size.bytes > NAMESPACE_POLICY_BYTES;
    if over(used.policies) {
        let Size { files, bytes } = used.policies;
        let why = format!(
            "namespace `{namespace}` has {files} CedarPolicies of {bytes} bytes in all, over what one namespace may \
             have ({NAMESPACE_POLICIES} policies, {NAMESPACE_POLICY_BYTES} bytes); remove or merge policies"
        );
        cuts.deepen(namespace, Part::Policies, why.clone());
        if over(used.held) {
            cuts.deepen(namespace, Part::Policies, why);
        }
    }
    for (part, bytes) in [
        (Part::Workloads, used.workloads),
        (Part::Services, used.services),
        (Part::Egress, used.egress),
    ] {
        if bytes > NAMESPACE_ENTRY_BYTES {
            let why = format!(
                "namespace `{namespace}` would take {bytes} bytes of {}, over what one namespace may take \
                 ({NAMESPACE_ENTRY_BYTES} bytes); run fewer distinct service accounts, Services or allowlist hosts",
                part.file()
            );
            cuts.deepen(namespace, part, why);
        }
    }
}

/// A limit of the loader the bundle is over: in words, how much it allows, the
/// parts that count towards it, and how.
struct Limit {
    words: String,
    capacity: usize,
    parts: Vec<Part>,
    measure: fn(Size) -> usize,
}

/// A namespace to cut because the bundle is over `limit` and it takes more than
/// its `share`.
struct Over<'a> {
    limit: String,
    namespace: &'a str,
    part: Part,
    amount: usize,
    share: usize,
}

/// The first limit the bundle is over, with the namespace furthest above its
/// fair share of it and that namespace's biggest part; `None` when the bundle
/// fits.
fn biggest_over_share<'a>(cuts: &Cuts, usage: &'a BTreeMap<String, Usage>) -> Option<Over<'a>> {
    let all = [Part::Policies, Part::Workloads, Part::Services, Part::Egress];
    let files = |s: Size| s.files;
    let bytes = |s: Size| s.bytes;
    let mut limits = vec![Limit {
        words: format!("its limit of {MAX_FILES} files"),
        capacity: MAX_FILES.saturating_sub(RESERVED_FILES),
        parts: vec![Part::Policies],
        measure: files,
    }];
    for part in [Part::Workloads, Part::Services, Part::Egress] {
        limits.push(Limit {
            words: format!("the limit of {MAX_FILE_BYTES} bytes for {}", part.file()),
            capacity: MAX_FILE_BYTES,
            parts: vec![part],
            measure: bytes,
        });
    }
    limits.push(Limit {
        words: format!("its limit of {MAX_TOTAL_BYTES} bytes in all"),
        capacity: MAX_TOTAL_BYTES.saturating_sub(RESERVED_BYTES),
        parts: all.to_vec(),
        measure: bytes,
    });
    let amount = |limit: &Limit, namespace: &str, used: &Usage| -> usize {
        (limit.parts.iter())
            .map(|part| (limit.measure)(cuts.size(namespace, used, *part)))
            .sum()
    };
    let limit = limits.into_iter().find(|limit| {
        let total: usize = usage.iter().map(|(ns, used)| amount(limit, ns, used)).sum();
        total > limit.capacity
    })?;
    let share = limit.capacity / usage.len().max(1);
    // The furthest over its share; between equals, the namespace that sorts last.
    let (taken, namespace, used) = (usage.iter())
        .map(|(ns, used)| (amount(&limit, ns, used), ns.as_str(), used))
        .filter(|(taken, _, _)| *taken > share)
        .max_by(|a, b| (a.0, a.1).cmp(&(b.0, b.1)))?;
    let part = (limit.parts.iter())
        .copied()
        .max_by_key(|part| (limit.measure)(cuts.size(namespace, used, *part)))?;
    Some(Over {
        limit: limit.words,
        namespace,
        part,
        amount: taken,
        share,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policies(files: usize, bytes: usize) -> Usage {
        Usage {
            policies: Size { files, bytes },
            ..Usage::default()
        }
    }

    fn usage(entries: Vec<(&str, Usage)>) -> BTreeMap<String, Usage> {
        entries.into_iter().map(|(ns, u)| (ns.to_owned(), u)).collect()
    }

    #[test]
    fn a_namespace_within_its_budget_in_a_bundle_that_fits_loses_nothing() {
        let cuts = plan(&usage(vec![
            ("a", policies(NAMESPACE_POLICIES, NAMESPACE_POLICY_BYTES)),
            ("b", policies(3, 900)),
        ]));
        assert_eq!(cuts, Cuts::default());
    }

    #[test]
    fn a_namespace_over_its_own_budget_is_held_and_no_other_is_touched() {
        let mut greedy = policies(NAMESPACE_POLICIES + 1, 1000);
        greedy.held = Size { files: 2, bytes: 100 };
        greedy.workloads = NAMESPACE_ENTRY_BYTES + 1;
        let cuts = plan(&usage(vec![("greedy", greedy), ("payments", policies(4, 4000))]));
        assert_eq!(cuts.policies["greedy"].0, PolicyCut::Held);
        assert!(cuts.cut("greedy", Part::Workloads));
        assert!(!cuts.cut("greedy", Part::Services));
        assert!(!cuts.cut("payments", Part::Policies));
        let why = cuts.reason("greedy", Part::Policies).unwrap();
        assert!(why.contains("has 257 CedarPolicies"), "{why}");
    }

    #[test]
    fn a_last_valid_set_over_the_budget_is_no_policy_at_all() {
        let mut greedy = policies(1, NAMESPACE_POLICY_BYTES + 1);
        greedy.held = Size {
            files: 1,
            bytes: NAMESPACE_POLICY_BYTES + 1,
        };
        let cuts = plan(&usage(vec![("greedy", greedy)]));
        assert_eq!(cuts.policies["greedy"].0, PolicyCut::Empty);
    }

    #[test]
    fn when_namespaces_within_budget_add_up_to_too_much_the_biggest_above_their_share_go_first() {
        // 60 namespaces of 200 policy files each: 12,000 files, over 10,000.
        let mut all: Vec<(String, Usage)> = (0..60).map(|i| (format!("team-{i:02}"), policies(200, 1000))).collect();
        all.push(("big".into(), policies(NAMESPACE_POLICIES, 2000)));
        let usage: BTreeMap<String, Usage> = all.into_iter().collect();
        let cuts = plan(&usage);
        assert_eq!(
            cuts.policies["big"].0,
            PolicyCut::Held,
            "the biggest goes first (its last valid set is empty)"
        );
        let kept: usize = (usage.iter())
            .map(|(ns, u)| cuts.size(ns, u, Part::Policies).files)
            .sum();
        assert!(kept + RESERVED_FILES <= MAX_FILES, "{kept}");
        assert!(
            kept + RESERVED_FILES + 200 > MAX_FILES,
            "no more is cut than needed: {kept}"
        );
        let why = cuts.reason("big", Part::Policies).unwrap();
        assert!(
            why.contains("its limit of 10000 files") && why.contains("fair share"),
            "{why}"
        );
    }

    #[test]
    fn a_namespace_within_its_fair_share_is_never_cut_whatever_another_does() {
        // 40 namespaces: a fair share of `services.yaml` is 4 MiB / 40 ≈ 105 KiB.
        let entries = |services| Usage {
            services,
            ..Usage::default()
        };
        let mut all: Vec<(String, Usage)> = (0..38).map(|i| (format!("t{i:02}"), entries(100 << 10))).collect();
        all.push(("victim".into(), entries(100 << 10)));
        // The attacker grows to its own budget and tips the file over.
        all.push(("attacker".into(), entries(NAMESPACE_ENTRY_BYTES)));
        let cuts = plan(&all.into_iter().collect());
        assert!(cuts.cut("attacker", Part::Services));
        assert_eq!(cuts.entries.len(), 1, "{:?}", cuts.entries.keys());
    }

    #[test]
    fn a_shared_yaml_file_over_its_limit_cuts_the_namespace_that_fills_it() {
        let entries = |workloads| Usage {
            workloads,
            ..Usage::default()
        };
        let mut all: Vec<(String, Usage)> = (0..21).map(|i| (format!("t{i:02}"), entries(200 << 10))).collect();
        all.push(("small".into(), entries(10)));
        let cuts = plan(&all.into_iter().collect());
        assert!(!cuts.cut("small", Part::Workloads));
        assert_eq!(cuts.entries.len(), 1, "{:?}", cuts.entries.keys());
        assert!(cuts.cut("t20", Part::Workloads), "between equals, the last in order");
    }
}
