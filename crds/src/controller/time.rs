//! Times as Kubernetes writes them: RFC 3339 in UTC, to the second.

use std::time::{SystemTime, UNIX_EPOCH};

use k8s_openapi::jiff::Timestamp;

/// Now.
pub fn now() -> String {
    rfc3339(SystemTime::now())
}

/// `at`, e.g. `2025-01-31T12:00:00Z`.
pub fn rfc3339(at: SystemTime) -> String {
    let seconds = match at.duration_since(UNIX_EPOCH) {
        Ok(after) => i64::try_from(after.as_secs()).unwrap_or(i64::MAX),
        Err(before) => i64::try_from(before.duration().as_secs()).map_or(i64::MIN, |s| -s),
    };
    unix(seconds)
}

/// `seconds` after the Unix epoch.
pub fn unix(seconds: i64) -> String {
    Timestamp::from_second(seconds)
        .unwrap_or(Timestamp::UNIX_EPOCH)
        .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_are_utc_to_the_second() {
        assert_eq!(unix(1_900_000_000), "2030-03-17T17:46:40Z");
        assert_eq!(
            rfc3339(UNIX_EPOCH + std::time::Duration::from_millis(1500)),
            "1970-01-01T00:00:01Z"
        );
    }
}
