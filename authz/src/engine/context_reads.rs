//! What a policy set reads of the context, so a request builds only that.
//!
//! Building a Cedar context is most of the cost of a decision after evaluation
//! itself: every string becomes a Cedar value, and each `ip(…)` or `datetime(…)` call
//! re-parses the function's name. Two exact reductions follow from the policies:
//!
//! - **Keys.** A policy observes the context only through `context.KEY` and
//!   `context has KEY`. When every use of `context` has that form, a context holding
//!   just those keys gives every policy the same result as the full one.
//! - **Header elements.** When every use of `context.headers` is
//!   `.contains("lit")`, `.containsAny(["lit", …])` or `.containsAll(["lit", …])` with
//!   string literals, the answer depends only on which of those literals are present;
//!   a set holding just the request's elements that equal one of them answers every
//!   such test exactly as the full set. The same holds for `context.headerNames`.
//!
//! Any other use (`context` or a header set compared, tested for emptiness, or passed
//! whole) or any syntax this walk does not know counts as reading everything.

use std::collections::BTreeSet;

use cedar_policy::pst::{self, BinaryOp, Clause, Expr, Literal, Var};

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
}

/// Which elements of a header set the policies can tell apart.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Elements {
    /// Only these literals are ever looked up.
    Only(BTreeSet<Box<str>>),
    /// The set is used in a way that depends on all of it.
    Every,
}

impl Default for Elements {
    fn default() -> Self {
        Self::Only(BTreeSet::new())
    }
}

impl Elements {
    pub(super) fn admits(&self, element: &str) -> bool {
        match self {
            Self::Only(literals) => literals.contains(element),
            Self::Every => true,
        }
    }

    fn union(&mut self, other: &Self) {
        match (&mut *self, other) {
            (Self::Every, _) => {}
            (_, Self::Every) => *self = Self::Every,
            (Self::Only(mine), Self::Only(theirs)) => mine.extend(theirs.iter().cloned()),
        }
    }
}

/// What a policy set reads of the context.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(super) struct Reads {
    pub(super) keys: Keys,
    /// Of `context.headers`.
    pub(super) headers: Elements,
    /// Of `context.headerNames`.
    pub(super) header_names: Elements,
}

impl Reads {
    /// Everything: the whole `RequestContext`.
    pub(super) fn all() -> Self {
        Self {
            keys: Keys::ALL,
            headers: Elements::Every,
            header_names: Elements::Every,
        }
    }

    /// What one policy reads; everything when it cannot tell.
    #[cfg(test)]
    pub(super) fn of(policy: &cedar_policy::Policy) -> Self {
        policy.to_pst().map_or_else(|_| Self::all(), |pst| Self::of_pst(&pst))
    }

    /// What one policy, in its syntax-tree form, reads.
    pub(super) fn of_pst(pst: &pst::Policy) -> Self {
        let mut reads = Self::default();
        for clause in pst.body().clauses() {
            let (Clause::When(expr) | Clause::Unless(expr)) = clause;
            reads.visit(expr);
        }
        reads
    }

    pub(super) fn union(&mut self, other: &Self) {
        self.keys = self.keys.union(other.keys);
        self.headers.union(&other.headers);
        self.header_names.union(&other.header_names);
    }

    fn visit(&mut self, expr: &Expr) {
        if self.visit_lookup(expr) {
            return;
        }
        match expr {
            Expr::GetAttr { expr, attr } if is_context(expr) => self.read_key(attr),
            Expr::HasAttr { expr, attrs } if is_context(expr) => {
                self.keys = self.keys.union(Keys::named(attrs.first()));
            }
            Expr::Var(Var::Context) => *self = Self::all(),
            Expr::Literal(_) | Expr::Var(_) | Expr::Slot(_) => {}
            Expr::UnaryOp { expr, .. }
            | Expr::GetAttr { expr, .. }
            | Expr::HasAttr { expr, .. }
            | Expr::Like { expr, .. } => self.visit(expr),
            Expr::BinaryOp { left, right, .. } => {
                self.visit(left);
                self.visit(right);
            }
            Expr::Is { expr, in_expr, .. } => {
                self.visit(expr);
                if let Some(in_expr) = in_expr {
                    self.visit(in_expr);
                }
            }
            Expr::IfThenElse {
                cond,
                then_expr,
                else_expr,
            } => {
                self.visit(cond);
                self.visit(then_expr);
                self.visit(else_expr);
            }
            Expr::Set(items) => items.iter().for_each(|item| self.visit(item)),
            Expr::Record(fields) => fields.values().for_each(|field| self.visit(field)),
            _ => *self = Self::all(),
        }
    }

    /// A key read as a whole value: for the header sets, every element matters.
    fn read_key(&mut self, attr: &str) {
        let key = Keys::named(attr);
        self.keys = self.keys.union(key);
        if key == Keys::HEADERS {
            self.headers = Elements::Every;
        } else if key == Keys::HEADER_NAMES {
            self.header_names = Elements::Every;
        }
    }

    /// `context.headers.contains("lit")` and the like: records the literals and
    /// answers true when `expr` has that form.
    fn visit_lookup(&mut self, expr: &Expr) -> bool {
        let Expr::BinaryOp { op, left, right } = expr else {
            return false;
        };
        let Expr::GetAttr { expr: set, attr } = left.as_ref() else {
            return false;
        };
        let key = Keys::named(attr);
        if !is_context(set) || (key != Keys::HEADERS && key != Keys::HEADER_NAMES) {
            return false;
        }
        let literals = match (op, right.as_ref()) {
            (BinaryOp::Contains, Expr::Literal(Literal::String(s))) => vec![s.as_str()],
            (BinaryOp::ContainsAll | BinaryOp::ContainsAny, Expr::Set(items)) => {
                match items
                    .iter()
                    .map(|item| string_literal(item))
                    .collect::<Option<Vec<_>>>()
                {
                    Some(literals) => literals,
                    None => return false,
                }
            }
            _ => return false,
        };
        self.keys = self.keys.union(key);
        let elements = if key == Keys::HEADERS {
            &mut self.headers
        } else {
            &mut self.header_names
        };
        let found = Elements::Only(literals.into_iter().map(Box::from).collect());
        elements.union(&found);
        true
    }
}

fn is_context(expr: &Expr) -> bool {
    matches!(expr, Expr::Var(Var::Context))
}

fn string_literal(expr: &Expr) -> Option<&str> {
    match expr {
        Expr::Literal(Literal::String(s)) => Some(s.as_str()),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn only(literals: &[&str]) -> Elements {
        Elements::Only(literals.iter().map(|&l| Box::from(l)).collect())
    }

    fn reads(keys: Keys, headers: Elements, header_names: Elements) -> Reads {
        Reads {
            keys,
            headers,
            header_names,
        }
    }

    #[test]
    fn a_policy_reads_the_keys_it_names_and_everything_when_it_uses_context_whole() {
        let none = Elements::default;
        let cases = [
            ("true", reads(Keys::default(), none(), none())),
            (r#"context.path == "/a""#, reads(Keys::PATH, none(), none())),
            (
                r#"context has sourceIp && context.sourceIp.isInRange(ip("10.0.0.0/8"))"#,
                reads(Keys::SOURCE_IP, none(), none()),
            ),
            (
                r#"if context.protocol == "h2" then context.time > datetime("2020-01-01") else [context.host].isEmpty()"#,
                reads(Keys::PROTOCOL.union(Keys::TIME).union(Keys::HOST), none(), none()),
            ),
            (
                r#"principal.getTag("a") == "b""#,
                reads(Keys::default(), none(), none()),
            ),
            (
                r#"context.path like "/x*" && context.nope == 1"#,
                reads(Keys::PATH, none(), none()),
            ),
            ("context == {}", Reads::all()),
            (r#"{a: context}.a has path"#, Reads::all()),
        ];
        for (condition, expected) in cases {
            let src = format!("permit(principal, action, resource) when {{ {condition} }};");
            let policy = cedar_policy::Policy::parse(None, &src).unwrap();
            assert_eq!(Reads::of(&policy), expected, "{condition}");
        }
    }

    #[test]
    fn header_lookups_by_literal_read_only_those_elements() {
        let cases = [
            (
                r#"context.headers.contains("x-role:admin")"#,
                reads(Keys::HEADERS, only(&["x-role:admin"]), only(&[])),
            ),
            (
                r#"context.headers.containsAny(["a:1", "b:2"]) || context.headers.containsAll(["c:3"])"#,
                reads(Keys::HEADERS, only(&["a:1", "b:2", "c:3"]), only(&[])),
            ),
            (
                r#"context.headerNames.contains("x-debug")"#,
                reads(Keys::HEADER_NAMES, only(&[]), only(&["x-debug"])),
            ),
            (
                r#"context.headers.isEmpty()"#,
                reads(Keys::HEADERS, Elements::Every, only(&[])),
            ),
            (
                r#"context.headers == ["a:1"]"#,
                reads(Keys::HEADERS, Elements::Every, only(&[])),
            ),
            (
                r#"context.headers.contains(context.path)"#,
                reads(Keys::HEADERS.union(Keys::PATH), Elements::Every, only(&[])),
            ),
            (
                r#"context.headers.containsAny([context.host])"#,
                reads(Keys::HEADERS.union(Keys::HOST), Elements::Every, only(&[])),
            ),
            (
                r#"["a:1"].containsAll(context.headers)"#,
                reads(Keys::HEADERS, Elements::Every, only(&[])),
            ),
            (r#"context has headers"#, reads(Keys::HEADERS, only(&[]), only(&[]))),
        ];
        for (condition, expected) in cases {
            let src = format!("permit(principal, action, resource) when {{ {condition} }};");
            let policy = cedar_policy::Policy::parse(None, &src).unwrap();
            assert_eq!(Reads::of(&policy), expected, "{condition}");
        }
    }

    #[test]
    fn reads_add_up_and_everything_absorbs() {
        let mut reads = reads(Keys::PATH, only(&["a:1"]), only(&[]));
        reads.union(&Reads {
            keys: Keys::HEADERS,
            headers: only(&["b:2"]),
            header_names: only(&["x"]),
        });
        assert_eq!(
            reads,
            Reads {
                keys: Keys::PATH.union(Keys::HEADERS),
                headers: only(&["a:1", "b:2"]),
                header_names: only(&["x"])
            }
        );
        reads.union(&Reads::all());
        assert_eq!(reads, Reads::all());
    }
}
