//! The namespace rule: a namespace's policies reach only that namespace.
//!
//! - An **ingress** policy of `policies/NS/ingress/` guards calls *into* NS, so its
//!   scope must keep `resource` inside NS: `resource in Namespace::"NS"`,
//!   `resource == Service::"NS/NAME"` (or `in`), or
//!   `resource is Service in Namespace::"NS"`.
//! - An **egress** policy of `policies/NS/egress/` guards calls *from* NS, so its
//!   scope must keep `principal` inside NS: `principal in Namespace::"NS"`,
//!   `principal == Workload::"spiffe://TD/ns/NS/sa/SA"` (or `in`), or
//!   `principal is Workload in Namespace::"NS"`.
//!
//! Anything else is refused: no constraint, a type alone (`resource is Service`),
//! another namespace, a workload of another namespace or trust domain. Only the
//! scope counts, never the `when` clause: the scope is what the engine partitions
//! policies by, and what a reader checks at a glance.

use cedar_policy::{EntityUid, Policy, PrincipalConstraint, ResourceConstraint};

use palisade_authz::Direction;
use palisade_ca::{SpiffeId, TrustDomain};

use crate::error::{DirectionName, Problem};

/// The owner of a policy file: `policies/NS/DIRECTION/`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Owner {
    pub(super) namespace: String,
    pub(super) direction: Direction,
}

impl Owner {
    /// The scope variable the rule constrains.
    pub(super) fn variable(&self) -> &'static str {
        match self.direction {
            Direction::Egress => "principal",
            Direction::Ingress => "resource",
        }
    }

    /// Checks the rule; the problem when `policy` breaks it.
    pub(super) fn check(&self, policy: &Policy, trust_domain: Option<&TrustDomain>) -> Result<(), Problem> {
        let found = match self.direction {
            Direction::Ingress => self.resource(policy.resource_constraint()),
            Direction::Egress => self.principal(policy.principal_constraint(), trust_domain),
        };
        found.map_err(|found| self.problem(found))
    }

    fn resource(&self, constraint: ResourceConstraint) -> Result<(), String> {
        match constraint {
            ResourceConstraint::Any => Err("leaves `resource` unconstrained".into()),
            ResourceConstraint::Is(ty) => Err(format!("only says `resource is {ty}`, of any namespace")),
            ResourceConstraint::In(uid) => self.namespace_or_service(&uid),
            ResourceConstraint::IsIn(ty, uid) if ty.to_string() == "Service" => self.namespace_or_service(&uid),
            ResourceConstraint::IsIn(ty, _) => Err(format!("says `resource is {ty}`, which is not a service")),
            ResourceConstraint::Eq(uid) if is(&uid, "Service") => self.service(&uid),
            ResourceConstraint::Eq(uid) => Err(format!("names `{uid}`, which is not a service")),
        }
    }

    fn namespace_or_service(&self, uid: &EntityUid) -> Result<(), String> {
        if is(uid, "Namespace") {
            return self.namespace(uid);
        }
        if is(uid, "Service") {
            return self.service(uid);
        }
        Err(format!("names `{uid}`, which is neither a namespace nor a service"))
    }

    fn principal(&self, constraint: PrincipalConstraint, trust_domain: Option<&TrustDomain>) -> Result<(), String> {
        match constraint {
            PrincipalConstraint::Any => Err("leaves `principal` unconstrained".into()),
            PrincipalConstraint::Is(ty) => Err(format!("only says `principal is {ty}`, of any namespace")),
            PrincipalConstraint::In(uid) => self.namespace_or_workload(&uid, trust_domain),
            PrincipalConstraint::IsIn(ty, uid) if ty.to_string() == "Workload" => {
                self.namespace_or_workload(&uid, trust_domain)
            }
            PrincipalConstraint::IsIn(ty, _) => Err(format!("says `principal is {ty}`, which is not a workload")),
            PrincipalConstraint::Eq(uid) if is(&uid, "Workload") => self.workload(&uid, trust_domain),
            PrincipalConstraint::Eq(uid) => Err(format!("names `{uid}`, which is not a workload")),
        }
    }

    fn namespace_or_workload(&self, uid: &EntityUid, trust_domain: Option<&TrustDomain>) -> Result<(), String> {
        if is(uid, "Namespace") {
            return self.namespace(uid);
        }
        if is(uid, "Workload") {
            return self.workload(uid, trust_domain);
        }
        Err(format!("names `{uid}`, which is neither a namespace nor a workload"))
    }

    fn namespace(&self, uid: &EntityUid) -> Result<(), String> {
        match uid.id().unescaped() == self.namespace {
            true => Ok(()),
            false => Err(format!("names `{uid}`, another namespace")),
        }
    }

    fn service(&self, uid: &EntityUid) -> Result<(), String> {
        let id = uid.id().unescaped();
        match id.split_once('/') {
            Some((namespace, name)) if namespace == self.namespace && !name.is_empty() && !name.contains('/') => Ok(()),
            Some((namespace, _)) if namespace != self.namespace => {
                Err(format!("names `{uid}`, a service of namespace `{namespace}`"))
            }
            _ => Err(format!("names `{uid}`, which is not a service id `NAMESPACE/NAME`")),
        }
    }

    fn workload(&self, uid: &EntityUid, trust_domain: Option<&TrustDomain>) -> Result<(), String> {
        let Ok(id) = SpiffeId::parse(uid.id().unescaped()) else {
            return Err(format!("names `{uid}`, which is not a SPIFFE ID"));
        };
        if let Some(trust_domain) = trust_domain.filter(|td| !id.is_member_of(td)) {
            return Err(format!("names `{uid}`, outside the trust domain `{trust_domain}`"));
        }
        match id.namespace() {
            Some(namespace) if namespace == self.namespace => Ok(()),
            Some(namespace) => Err(format!("names `{uid}`, a workload of namespace `{namespace}`")),
            None => Err(format!(
                "names `{uid}`, which is not a mesh workload ID `…/ns/NS/sa/SA`"
            )),
        }
    }

    fn problem(&self, found: String) -> Problem {
        let ns = &self.namespace;
        let expected = match self.direction {
            Direction::Ingress => format!(
                "`resource in Namespace::\"{ns}\"`, `resource == Service::\"{ns}/NAME\"` \
                 or `resource is Service in Namespace::\"{ns}\"`"
            ),
            Direction::Egress => format!(
                "`principal in Namespace::\"{ns}\"`, `principal == Workload::\"spiffe://…/ns/{ns}/sa/NAME\"` \
                 or `principal is Workload in Namespace::\"{ns}\"`"
            ),
        };
        Problem::Scope {
            direction: DirectionName(self.direction),
            namespace: ns.clone(),
            variable: self.variable(),
            expected,
            found,
        }
    }
}

fn is(uid: &EntityUid, type_name: &str) -> bool {
    uid.type_name().to_string() == type_name
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(direction: Direction, scope: &str) -> Result<(), String> {
        let owner = Owner {
            namespace: "payments".into(),
            direction,
        };
        let policy = Policy::parse(None, format!("permit({scope});")).unwrap();
        let trust_domain = TrustDomain::new("shop.example").unwrap();
        owner
            .check(&policy, Some(&trust_domain))
            .map_err(|problem| problem.to_string())
    }

    #[test]
    fn ingress_policies_must_keep_the_resource_in_their_namespace() {
        let accepted = [
            r#"principal, action, resource in Namespace::"payments""#,
            r#"principal, action, resource == Service::"payments/payments""#,
            r#"principal, action, resource in Service::"payments/payments""#,
            r#"principal, action, resource is Service in Namespace::"payments""#,
            r#"principal in Namespace::"checkout", action, resource in Namespace::"payments""#,
        ];
        for scope in accepted {
            assert_eq!(check(Direction::Ingress, scope), Ok(()), "{scope}");
        }
        let rejected = [
            ("principal, action, resource", "leaves `resource` unconstrained"),
            (
                "principal, action, resource is Service",
                "only says `resource is Service`",
            ),
            (
                r#"principal, action, resource in Namespace::"web""#,
                "another namespace",
            ),
            (
                r#"principal, action, resource == Service::"web/frontend""#,
                "a service of namespace `web`",
            ),
            (
                r#"principal, action, resource == Service::"payments""#,
                "not a service id",
            ),
            (
                r#"principal, action, resource == ExternalHost::"a:443""#,
                "not a service",
            ),
            (
                r#"principal, action, resource == Namespace::"payments""#,
                "not a service",
            ),
            (
                r#"principal in Namespace::"payments", action, resource"#,
                "unconstrained",
            ),
        ];
        for (scope, why) in rejected {
            let error = check(Direction::Ingress, scope).unwrap_err();
            assert!(error.contains(why), "{scope}: {error}");
            assert!(error.starts_with("ingress policy of namespace `payments` must constrain `resource`"));
        }
    }

    #[test]
    fn egress_policies_must_keep_the_principal_in_their_namespace() {
        let accepted = [
            r#"principal in Namespace::"payments", action, resource"#,
            r#"principal == Workload::"spiffe://shop.example/ns/payments/sa/api", action, resource"#,
            r#"principal is Workload in Namespace::"payments", action, resource in Namespace::"web""#,
        ];
        for scope in accepted {
            assert_eq!(check(Direction::Egress, scope), Ok(()), "{scope}");
        }
        let rejected = [
            ("principal, action, resource", "leaves `principal` unconstrained"),
            ("principal is Workload, action, resource", "only says"),
            (
                r#"principal in Namespace::"web", action, resource"#,
                "another namespace",
            ),
            (
                r#"principal == Workload::"spiffe://shop.example/ns/other/sa/x", action, resource"#,
                "a workload of namespace `other`",
            ),
            (
                r#"principal == Workload::"spiffe://evil.example/ns/payments/sa/x", action, resource"#,
                "outside the trust domain",
            ),
            (
                r#"principal == Workload::"payments", action, resource"#,
                "not a SPIFFE ID",
            ),
        ];
        for (scope, why) in rejected {
            let error = check(Direction::Egress, scope).unwrap_err();
            assert!(error.contains(why), "{scope}: {error}");
        }
    }
}
