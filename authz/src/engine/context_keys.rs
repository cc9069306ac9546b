//! Which context keys a policy set reads, so a request builds only those.
//!
//! Building a Cedar context is most of the cost of a decision: every string becomes a
//! Cedar value, and each `ip(…)` or `datetime(…)` call re-parses the function's name.
//! A policy can only observe the context through `context.KEY` and `context has KEY`;
//! when every use of `context` in a set's policies has that form, a context holding
//! just those keys gives every policy exactly the same result as the full one. Any
//! other use (`context` compared or passed whole) or any syntax this walk does not
//! know counts as reading every key.

use cedar_policy::pst::{self, Clause, Expr, Var};
use cedar_policy::Policy;

/// A set of the `RequestContext` keys.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(super) struct Keys(u8);

impl Keys {
    pub(super) const PATH: Self = Self(1);
    pub(super) const HOST: Self = Self(1 << 1);
    pub(super) const PROTOCOL: Self = Self(1 << 2);
    pub(super) const SOURCE_IP: Self = Self(1 << 3);
    pub(super) const HEADERS: Self = Self(1 << 4);
    pub(super) const HEADER_NAMES: Self = Self(1 << 5);
    pub(super) const TIME: Self = Self(1 << 6);
    pub(super) const ALL: Self = Self((1 << 7) - 1);

    /// The key of that name; a name the schema does not have reads nothing we build.
    fn named(name: &str) -> Self {
        match name {
            "path" => Self::PATH,
            "host" => Self::HOST,
            "protocol" => Self::PROTOCOL,
            "sourceIp" => Self::SOURCE_IP,
            "headers" => Self::HEADERS,
            "headerNames" => Self::HEADER_NAMES,
            "time" => Self::TIME,
            _ => Self::default(),
        }
    }

    pub(super) fn union(self, other: Self) -> Self {
        Self(self.0 | other.0)
    }

    pub(super) fn contains(self, other: Self) -> bool {
        self.0 & other.0 == other.0
    }

    /// The keys one policy reads; every key when it cannot tell.
    pub(super) fn read_by(policy: &Policy) -> Self {
        let Ok(pst) = policy.to_pst() else {
            return Self::ALL;
        };
        let mut keys = Self::default();
        for clause in pst.body().clauses() {
            let (Clause::When(expr) | Clause::Unless(expr)) = clause;
            keys = keys.union(Self::read_by_expr(expr));
        }
        keys
    }

    fn read_by_expr(expr: &Expr) -> Self {
        match expr {
            Expr::GetAttr { expr, attr } if is_context(expr) => Self::named(attr),
            Expr::HasAttr { expr, attrs } if is_context(expr) => Self::named(attrs.first()),
            Expr::Var(Var::Context) => Self::ALL,
            Expr::Literal(_) | Expr::Var(_) | Expr::Slot(_) => Self::default(),
            Expr::UnaryOp { expr, .. }
            | Expr::GetAttr { expr, .. }
            | Expr::HasAttr { expr, .. }
            | Expr::Like { expr, .. } => Self::read_by_expr(expr),
            Expr::BinaryOp { left, right, .. } => Self::read_by_expr(left).union(Self::read_by_expr(right)),
            Expr::Is { expr, in_expr, .. } => {
                let inner = in_expr.as_deref().map_or(Self::default(), Self::read_by_expr);
                Self::read_by_expr(expr).union(inner)
            }
            Expr::IfThenElse { cond, then_expr, else_expr } => Self::read_by_expr(cond)
                .union(Self::read_by_expr(then_expr))
                .union(Self::read_by_expr(else_expr)),
            Expr::Set(items) => Self::read_by_all(items.iter().map(AsRef::as_ref)),
            Expr::Record(fields) => Self::read_by_all(fields.values().map(AsRef::as_ref)),
            _ => Self::ALL,
        }
    }

    fn read_by_all<'a>(exprs: impl Iterator<Item = &'a Expr>) -> Self {
        exprs.fold(Self::default(), |keys, expr| keys.union(Self::read_by_expr(expr)))
    }
}

fn is_context(expr: &Expr) -> bool {
    matches!(expr, Expr::Var(Var::Context))
}

// Keeps the import used when the walk is read: `pst` is where these types live.
#[expect(unused_imports, reason = "documentation link target")]
use pst as _;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_policy_reads_the_keys_it_names_and_everything_when_it_uses_context_whole() {
        let cases = [
            ("permit(principal, action, resource);", Keys::default()),
            (r#"permit(principal, action, resource) when { context.path == "/a" };"#, Keys::PATH),
            (
                r#"forbid(principal, action, resource) unless { context has sourceIp && context.headers.contains("a:b") };"#,
                Keys::SOURCE_IP.union(Keys::HEADERS),
            ),
            (
                r#"permit(principal, action, resource) when { if context.protocol == "h2" then context.time > datetime("2020-01-01") else [context.host].isEmpty() };"#,
                Keys::PROTOCOL.union(Keys::TIME).union(Keys::HOST),
            ),
            (r#"permit(principal, action, resource) when { context.headerNames.contains("x") };"#, Keys::HEADER_NAMES),
            (r#"permit(principal, action, resource) when { principal.getTag("a") == "b" };"#, Keys::default()),
            (r#"permit(principal, action, resource) when { context == {} };"#, Keys::ALL),
            (r#"permit(principal, action, resource) when { {a: context}.a has path };"#, Keys::ALL),
            (r#"permit(principal, action, resource) when { context.path like "/x*" && context.nope == 1 };"#, Keys::PATH),
        ];
        for (src, expected) in cases {
            let policy = Policy::parse(None, src).unwrap();
            assert_eq!(Keys::read_by(&policy), expected, "{src}");
        }
    }
}
