//! Tests of the checks applied to each step's answer.

use super::*;

#[test]
fn status_checks() {
    assert!(check_status("ok", "v2", "k").is_empty());
    assert!(check_status("ok", "v2beta1", "k").is_empty());
    assert_eq!(check_status("degraded", "v1", "").len(), 3);
}
