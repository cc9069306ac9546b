//! Fuzzes `SpiffeId::parse`: it never panics, never rewrites what it accepts, and every
//! accessor agrees with the accepted string. Refusals must give a short, escaped message.

#![no_main]

use libfuzzer_sys::fuzz_target;
use palisade_ca::spiffe_id::{SpiffeId, TrustDomain, MAX_ID_LEN};

fuzz_target!(|data: &[u8]| {
    let Ok(input) = std::str::from_utf8(data) else {
        return;
    };
    match SpiffeId::parse(input) {
        Ok(id) => check_accepted(input, &id),
        Err(error) => {
            let message = error.to_string();
            assert!(message.len() <= 512, "message too long: {message}");
            assert!(!message.chars().any(char::is_control), "raw control character: {message:?}");
        }
    }
});

fn check_accepted(input: &str, id: &SpiffeId) {
    // Never normalized: the value is the input, and its Display parses back to it.
    assert_eq!(id.as_str(), input);
    assert_eq!(SpiffeId::parse(&id.to_string()).as_ref(), Ok(id));
    assert!(id.as_str().len() <= MAX_ID_LEN);

    // The pieces put back together are the whole ID.
    let td = id.trust_domain();
    assert_eq!(td.as_str(), id.trust_domain_name());
    assert_eq!(format!("spiffe://{td}{}", id.path()), input);
    assert_eq!(TrustDomain::new(id.trust_domain_name()).as_ref(), Ok(&td));
    assert!(id.is_member_of(&td));
    assert!(id.path().is_empty() || id.path().starts_with('/'));

    // namespace and service_account come together, only for exactly `/ns/<ns>/sa/<sa>`.
    match (id.namespace(), id.service_account()) {
        (Some(namespace), Some(service_account)) => {
            assert_eq!(id.path(), format!("/ns/{namespace}/sa/{service_account}"));
            assert_eq!(SpiffeId::mesh(&td, namespace, service_account).as_ref(), Ok(id));
        }
        (None, None) => {
            let segments: Vec<&str> = id.path().split('/').skip(1).collect();
            let mesh_shaped = matches!(segments.as_slice(), ["ns", _, "sa", _]);
            assert!(!mesh_shaped, "mesh form not recognized: {input}");
        }
        _ => panic!("namespace and service account disagree for {input}"),
    }
}
