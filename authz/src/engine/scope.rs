//! What a policy's scope decides before any request arrives.
//!
//! The entities are fixed for the life of an engine, so for a registered principal
//! (or resource) a scope constraint such as `principal in Namespace::"shop"` is
//! already true or false when the engine is built. The same holds for the action
//! scope once policies are split by action. A constraint known to be true is
//! replaced by the unconstrained form (`principal`, `action`): the policy's condition
//! is `scope && body`, so replacing a true conjunct by `true` changes no result and
//! no error, and Cedar no longer rebuilds and evaluates it on every request, which is
//! a large share of its cost. A policy whose constraint is known to be false is left
//! out of that principal's sets altogether.

use cedar_policy::pst;
use cedar_policy::{
    ActionConstraint, Entities, EntityTypeName, EntityUid, Policy, PrincipalConstraint, ResourceConstraint,
};

use super::entities::Names;
use super::model::{Action, Direction};

/// The principal (egress) or resource (ingress) constraint of a policy: the side of
/// the scope that decides which partition a request evaluates.
#[derive(Debug, Clone)]
pub(super) enum Side {
    Any,
    Eq(EntityUid),
    In(EntityUid),
    Is(EntityTypeName),
    IsIn(EntityTypeName, EntityUid),
}

impl Side {
    /// The owning side of `policy`'s scope for a direction.
    pub(super) fn of(policy: &Policy, direction: Direction) -> Self {
        match direction {
            Direction::Egress => match policy.principal_constraint() {
                PrincipalConstraint::Any => Self::Any,
                PrincipalConstraint::Eq(uid) => Self::Eq(uid),
                PrincipalConstraint::In(uid) => Self::In(uid),
                PrincipalConstraint::Is(ty) => Self::Is(ty),
                PrincipalConstraint::IsIn(ty, uid) => Self::IsIn(ty, uid),
            },
            Direction::Ingress => match policy.resource_constraint() {
                ResourceConstraint::Any => Self::Any,
                ResourceConstraint::Eq(uid) => Self::Eq(uid),
                ResourceConstraint::In(uid) => Self::In(uid),
                ResourceConstraint::Is(ty) => Self::Is(ty),
                ResourceConstraint::IsIn(ty, uid) => Self::IsIn(ty, uid),
            },
        }
    }

    /// The exact principal or resource id (`== Workload::"X"` at egress, `==
    /// Service::"NS/N"` at ingress) the policy is scoped to, if any.
    pub(super) fn exact_key(&self, names: &Names, direction: Direction) -> Option<String> {
        let Self::Eq(uid) = self else {
            return None;
        };
        let owned = match direction {
            Direction::Egress => names.is_workload(uid),
            Direction::Ingress => names.is_service(uid),
        };
        owned.then(|| uid.id().unescaped().to_owned())
    }

    /// Whether the constraint holds for `uid`, with Cedar's meaning of `==`, `in` and
    /// `is` over `entities`.
    pub(super) fn holds(&self, uid: &EntityUid, entities: &Entities) -> bool {
        let within = |ancestor: &EntityUid| uid == ancestor || entities.is_ancestor_of(ancestor, uid);
        match self {
            Self::Any => true,
            Self::Eq(other) => uid == other,
            Self::In(ancestor) => within(ancestor),
            Self::Is(ty) => uid.type_name() == ty,
            Self::IsIn(ty, ancestor) => uid.type_name() == ty && within(ancestor),
        }
    }
}

/// The request actions a policy's action scope admits, with Cedar's meaning of `==`
/// and `in` over the schema's action entities.
pub(super) fn actions(policy: &Policy, names: &Names, entities: &Entities) -> Vec<Action> {
    let constraint = policy.action_constraint();
    let admitted = |action: &Action| {
        let uid = names.action(*action);
        match &constraint {
            ActionConstraint::Any => true,
            ActionConstraint::Eq(scope) => scope == uid,
            ActionConstraint::In(scopes) => scopes
                .iter()
                .any(|scope| scope == uid || entities.is_ancestor_of(scope, uid)),
        }
    };
    Action::ALL.into_iter().filter(admitted).collect()
}

/// `policy` (whose syntax tree is `pst`) with its action constraint and its owning
/// side replaced by the unconstrained form. Returns the policy unchanged when it
/// cannot be rewritten: it then evaluates as written, slower but never different.
pub(super) fn settle(policy: &Policy, pst: Option<pst::Policy>, side: Direction) -> Policy {
    pst.and_then(|pst| rewrite(pst, side)).unwrap_or_else(|| policy.clone())
}

fn rewrite(policy: pst::Policy, side: Direction) -> Option<Policy> {
    let pst::Policy::Static(policy) = policy else {
        return None;
    };
    let mut body = policy.body().clone();
    body.action = pst::ActionConstraint::Any;
    match side {
        Direction::Egress => body.principal = pst::PrincipalConstraint::Any,
        Direction::Ingress => body.resource = pst::ResourceConstraint::Any,
    }
    let body = pst::StaticPolicy::try_from(body).ok()?;
    Policy::from_pst(pst::Policy::Static(body)).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::tests::Bundle;
    use crate::engine::{entities, schema};

    const POLICY: &str = r#"@id("p") permit(principal in Namespace::"shop", action == Action::"GET", resource in Namespace::"pay")
        when { context.path == "/" };"#;

    #[test]
    fn settling_frees_the_action_and_the_owning_side_only() {
        let policy = Policy::parse(Some(cedar_policy::PolicyId::new("p")), POLICY).unwrap();
        let shop = || "Namespace::\"shop\"".parse().unwrap();
        let pay = || "Namespace::\"pay\"".parse().unwrap();
        let cases = [
            (
                Direction::Egress,
                PrincipalConstraint::Any,
                ResourceConstraint::In(pay()),
            ),
            (
                Direction::Ingress,
                PrincipalConstraint::In(shop()),
                ResourceConstraint::Any,
            ),
        ];
        for (side, principal, resource) in cases {
            let settled = rewrite(policy.to_pst().unwrap(), side).unwrap();
            assert_eq!(settled.principal_constraint(), principal, "{side:?}");
            assert_eq!(settled.action_constraint(), ActionConstraint::Any, "{side:?}");
            assert_eq!(settled.resource_constraint(), resource, "{side:?}");
            assert_eq!(settled.id().to_string(), "p");
            assert_eq!(settled.annotation("id"), Some("p"));
        }
    }

    #[test]
    fn a_side_holds_as_cedar_would_decide_it() {
        let input = Bundle::shop();
        let names = entities::Names::new().unwrap();
        let entities = entities::build(&names, input.input(), &schema::schema().unwrap()).unwrap();
        let frontend = names.workload(crate::engine::tests::FRONTEND);
        let stranger = names.workload(crate::engine::tests::STRANGER);
        let uid = |s: &str| s.parse::<EntityUid>().unwrap();
        let workload = || "Workload".parse::<EntityTypeName>().unwrap();
        let cases = [
            (Side::Any, &frontend, true),
            (Side::Eq(frontend.clone()), &frontend, true),
            (Side::Eq(frontend.clone()), &stranger, false),
            (Side::In(uid(r#"Namespace::"shop""#)), &frontend, true),
            (Side::In(uid(r#"Namespace::"ops""#)), &frontend, false),
            (Side::In(frontend.clone()), &frontend, true),
            (Side::In(uid(r#"Namespace::"shop""#)), &stranger, false),
            (Side::Is(workload()), &stranger, true),
            (Side::IsIn(workload(), uid(r#"Namespace::"shop""#)), &frontend, true),
            (Side::IsIn(workload(), uid(r#"Namespace::"ops""#)), &frontend, false),
        ];
        for (side, uid, expected) in cases {
            assert_eq!(side.holds(uid, &entities), expected, "{side:?} {uid}");
        }
    }
}
