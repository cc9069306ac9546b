//! Interned names. A million records name a few hundred principals, resources,
//! workloads, hosts and policies over and over; each distinct name is stored once
//! and the count tables are keyed by small copyable [`Name`]s, so counting a record
//! allocates nothing once its names have been seen.

use std::collections::HashMap;

/// A name's number in its [`Names`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) struct Name(usize);

/// Every distinct name seen, numbered in order of first appearance.
#[derive(Debug, Default)]
pub(crate) struct Names {
    numbers: HashMap<Box<str>, Name>,
    names: Vec<Box<str>>,
}

impl Names {
    /// The number of a name, giving it one when it is new.
    pub(crate) fn intern(&mut self, name: &str) -> Name {
        if let Some(number) = self.numbers.get(name) {
            return *number;
        }
        let number = Name(self.names.len());
        self.names.push(name.into());
        self.numbers.insert(name.into(), number);
        number
    }

    /// The name with a number (empty for a number this table never gave out).
    pub(crate) fn name(&self, number: Name) -> &str {
        self.names.get(number.0).map_or("", |name| name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_name_keeps_its_number() {
        let mut names = Names::default();
        let a = names.intern("spiffe://mesh/ns/a/sa/a");
        let b = names.intern("payments/payments");
        assert_ne!(a, b);
        assert_eq!(names.intern("spiffe://mesh/ns/a/sa/a"), a);
        assert_eq!(names.name(b), "payments/payments");
    }
}
