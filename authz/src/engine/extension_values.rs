//! The `ip(…)` and `datetime(…)` values of a request's context, remembered per thread.
//!
//! Cedar's `RestrictedExpression::new_ip` and `new_datetime` parse the extension
//! function's name with the full policy parser on every call: about 6 µs each on our
//! machines, more than evaluating a small policy set. A clone of an expression built
//! before is a few reference-count increments. Requests on one thread mostly repeat
//! the current second and a few peer addresses, so each thread keeps the last time
//! and the last [`IPS`] addresses it built. What is remembered for a key is exactly
//! what would be built for it again, so a decision never depends on what is cached.

use std::cell::RefCell;
use std::collections::VecDeque;
use std::net::IpAddr;

use cedar_policy::RestrictedExpression;

use super::context::{datetime, ip_literal};

/// How many peer addresses each thread remembers.
const IPS: usize = 8;

#[derive(Default)]
struct Recent {
    time: Option<(i64, RestrictedExpression)>,
    ips: VecDeque<(IpAddr, RestrictedExpression)>,
}

thread_local! {
    static RECENT: RefCell<Recent> = RefCell::default();
}

/// `ip("…")` for `ip`.
pub(super) fn ip(ip: IpAddr) -> RestrictedExpression {
    let build = || RestrictedExpression::new_ip(ip_literal(ip));
    RECENT.with(|recent| {
        let Ok(mut recent) = recent.try_borrow_mut() else {
            return build();
        };
        if let Some((_, expr)) = recent.ips.iter().find(|(known, _)| *known == ip) {
            return expr.clone();
        }
        let expr = build();
        recent.ips.push_front((ip, expr.clone()));
        recent.ips.truncate(IPS);
        expr
    })
}

/// `datetime("…")` for `unix` seconds, or `None` outside what a Cedar `datetime`
/// string can name.
pub(super) fn time(unix: i64) -> Option<RestrictedExpression> {
    let build = || datetime(unix).map(RestrictedExpression::new_datetime);
    RECENT.with(|recent| {
        let Ok(mut recent) = recent.try_borrow_mut() else {
            return build();
        };
        match &recent.time {
            Some((known, expr)) if *known == unix => Some(expr.clone()),
            _ => {
                let expr = build()?;
                recent.time = Some((unix, expr.clone()));
                Some(expr)
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remembered_values_are_the_values_built_afresh() {
        let addresses: Vec<IpAddr> = (0..20u8).map(|i| IpAddr::from([10, 0, 0, i % 11])).collect();
        for &address in addresses.iter().chain(&addresses) {
            assert_eq!(
                ip(address),
                RestrictedExpression::new_ip(ip_literal(address)),
                "{address}"
            );
        }
        for unix in [0, 0, 1, 0, 1_795_348_800, 1_795_348_800] {
            let fresh = datetime(unix).map(RestrictedExpression::new_datetime);
            assert_eq!(time(unix), fresh, "{unix}");
        }
        assert_eq!(time(i64::MAX), None);
    }
}
