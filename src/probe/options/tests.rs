//! Tests of the probe options' validation.

use super::*;

#[test]
fn options_validation() {
    assert!(ProbeOptions::default().validate().is_ok());
    let colon = ProbeOptions {
        provider_name: "a:b".into(),
        ..ProbeOptions::default()
    };
    assert!(colon.validate().unwrap_err().to_string().contains("':'"));
    let zero = ProbeOptions {
        timeout: Duration::ZERO,
        ..ProbeOptions::default()
    };
    assert!(zero.validate().is_err());
}
