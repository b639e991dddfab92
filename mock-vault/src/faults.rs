//! Fault injection: latency, throttling, server errors, connection resets and outages, each
//! scoped to a vault, an operation prefix or an identity, and bounded by a count, a
//! fraction of requests or a time window.

use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

/// What a rule does to a matching request.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum FaultKind {
    /// Delay the answer: `fixed_ms`, or uniform in `[min_ms, max_ms]`.
    Latency {
        /// Fixed delay in milliseconds.
        #[serde(default)]
        fixed_ms: Option<u64>,
        /// Lower bound of a uniform delay.
        #[serde(default)]
        min_ms: Option<u64>,
        /// Upper bound of a uniform delay.
        #[serde(default)]
        max_ms: Option<u64>,
    },
    /// Answer `429 Throttled` with `Retry-After` seconds.
    Throttle {
        /// `Retry-After` value in seconds.
        #[serde(default = "one")]
        retry_after_secs: u64,
    },
    /// Answer with this HTTP status (500, 502, 503, 504 ...).
    Status {
        /// Status code.
        status: u16,
    },
    /// Drop the connection without an answer.
    Reset,
    /// Everything fails (connections dropped) while the rule is active.
    Outage,
}

fn one() -> u64 {
    1
}

/// Which requests a rule applies to.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Scope {
    /// Vault name; absent = every vault.
    #[serde(default)]
    pub vault: Option<String>,
    /// Operation name prefix (`keys.decrypt`, `secrets.`, `entra.`); absent = every vault
    /// operation (Entra endpoints only when named).
    #[serde(default)]
    pub operation: Option<String>,
    /// Identity name; absent = every caller.
    #[serde(default)]
    pub identity: Option<String>,
}

/// A rule as given to the control API.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FaultSpec {
    /// The effect.
    #[serde(flatten)]
    pub kind: FaultKind,
    /// Which requests.
    #[serde(default)]
    pub scope: Scope,
    /// Apply to the next N matching requests only.
    #[serde(default)]
    pub count: Option<u64>,
    /// Apply to this fraction (0..=1) of matching requests.
    #[serde(default)]
    pub fraction: Option<f64>,
    /// Stay active for this many milliseconds from now.
    #[serde(default)]
    pub duration_ms: Option<u64>,
}

/// An installed rule.
#[derive(Debug, Clone)]
struct Rule {
    id: u64,
    spec: FaultSpec,
    remaining: Option<u64>,
    until: Option<Instant>,
}

/// What the server must do to one request.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Decision {
    /// Sleep this long first.
    pub delay: Duration,
    /// Then fail this way (first matching failure rule wins).
    pub failure: Option<FaultKind>,
    /// Ids of the rules that fired.
    pub fired: Vec<u64>,
}

/// The rule set.
#[derive(Debug, Default)]
pub struct Faults {
    next_id: u64,
    rules: Vec<Rule>,
}

/// Errors in a fault specification.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum FaultError {
    /// A field is out of range or inconsistent.
    #[error("invalid fault: {0}")]
    Invalid(String),
}

impl Faults {
    /// Installs a rule; returns its id.
    pub fn add(&mut self, spec: FaultSpec) -> Result<u64, FaultError> {
        if let Some(f) = spec.fraction
            && !(0.0..=1.0).contains(&f)
        {
            return Err(FaultError::Invalid("fraction must be within 0..=1".into()));
        }
        match &spec.kind {
            FaultKind::Latency {
                fixed_ms,
                min_ms,
                max_ms,
            } => match (fixed_ms, min_ms, max_ms) {
                (Some(_), None, None) => {}
                (None, Some(lo), Some(hi)) if lo <= hi => {}
                _ => {
                    return Err(FaultError::Invalid(
                        "latency needs fixed_ms, or min_ms <= max_ms".into(),
                    ));
                }
            },
            FaultKind::Status { status } if !(400..=599).contains(status) => {
                return Err(FaultError::Invalid("status must be 400..=599".into()));
            }
            _ => {}
        }
        self.next_id += 1;
        let id = self.next_id;
        self.rules.push(Rule {
            id,
            remaining: spec.count,
            until: spec
                .duration_ms
                .map(|ms| Instant::now() + Duration::from_millis(ms)),
            spec,
        });
        Ok(id)
    }

    /// Removes one rule.
    pub fn remove(&mut self, id: u64) -> bool {
        let before = self.rules.len();
        self.rules.retain(|r| r.id != id);
        before != self.rules.len()
    }

    /// Removes every rule.
    pub fn clear(&mut self) {
        self.rules.clear();
    }

    /// Installed rules with their ids (for the control API).
    pub fn list(&self) -> Vec<(u64, FaultSpec, Option<u64>)> {
        self.rules
            .iter()
            .map(|r| (r.id, r.spec.clone(), r.remaining))
            .collect()
    }

    /// Decides what happens to a request, consuming counted rules.
    pub fn decide(
        &mut self,
        vault: Option<&str>,
        operation: &str,
        identity: Option<&str>,
    ) -> Decision {
        let now = Instant::now();
        self.rules
            .retain(|r| r.until.is_none_or(|u| u > now) && r.remaining != Some(0));
        let mut d = Decision::default();
        for rule in &mut self.rules {
            if !matches_scope(&rule.spec.scope, vault, operation, identity) {
                continue;
            }
            if let Some(f) = rule.spec.fraction
                && rand::random::<f64>() >= f
            {
                continue;
            }
            let is_failure = !matches!(rule.spec.kind, FaultKind::Latency { .. });
            if is_failure && d.failure.is_some() {
                continue;
            }
            if let Some(n) = rule.remaining.as_mut() {
                *n = n.saturating_sub(1);
            }
            d.fired.push(rule.id);
            match &rule.spec.kind {
                FaultKind::Latency {
                    fixed_ms,
                    min_ms,
                    max_ms,
                } => {
                    let ms = match (fixed_ms, min_ms, max_ms) {
                        (Some(f), _, _) => *f,
                        (None, Some(lo), Some(hi)) => {
                            lo + (rand::random::<f64>() * (hi - lo) as f64) as u64
                        }
                        _ => 0,
                    };
                    d.delay += Duration::from_millis(ms);
                }
                other => d.failure = Some(other.clone()),
            }
        }
        d
    }
}

fn matches_scope(
    scope: &Scope,
    vault: Option<&str>,
    operation: &str,
    identity: Option<&str>,
) -> bool {
    let vault_ok = match (&scope.vault, vault) {
        (None, _) => true,
        (Some(want), Some(v)) => want.eq_ignore_ascii_case(v),
        (Some(_), None) => false,
    };
    let op_ok = match &scope.operation {
        Some(prefix) => operation.starts_with(prefix.as_str()),
        None => !operation.starts_with("entra."),
    };
    let id_ok = match (&scope.identity, identity) {
        (None, _) => true,
        (Some(want), Some(i)) => want == i,
        (Some(_), None) => false,
    };
    vault_ok && op_ok && id_ok
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn spec(kind: FaultKind) -> FaultSpec {
        FaultSpec {
            kind,
            scope: Scope::default(),
            count: None,
            fraction: None,
            duration_ms: None,
        }
    }

    #[test]
    fn counted_rules_expire_and_scopes_filter() {
        let mut f = Faults::default();
        let mut s = spec(FaultKind::Throttle {
            retry_after_secs: 2,
        });
        s.count = Some(2);
        s.scope.operation = Some("keys.".into());
        f.add(s).unwrap();
        assert_eq!(f.decide(Some("kv"), "secrets.get", None).failure, None);
        assert!(f.decide(Some("kv"), "keys.decrypt", None).failure.is_some());
        assert!(f.decide(Some("kv"), "keys.decrypt", None).failure.is_some());
        assert_eq!(f.decide(Some("kv"), "keys.decrypt", None).failure, None);
        assert!(f.list().is_empty());
    }

    #[test]
    fn entra_is_only_hit_when_named_and_latency_adds_up() {
        let mut f = Faults::default();
        f.add(spec(FaultKind::Outage)).unwrap();
        assert_eq!(f.decide(None, "entra.token", None).failure, None);
        f.clear();
        f.add(spec(FaultKind::Latency {
            fixed_ms: Some(5),
            min_ms: None,
            max_ms: None,
        }))
        .unwrap();
        f.add(spec(FaultKind::Latency {
            fixed_ms: Some(7),
            min_ms: None,
            max_ms: None,
        }))
        .unwrap();
        assert_eq!(
            f.decide(Some("kv"), "keys.get", None).delay,
            Duration::from_millis(12)
        );
    }

    #[test]
    fn bad_specs_are_refused() {
        let mut f = Faults::default();
        let mut s = spec(FaultKind::Reset);
        s.fraction = Some(1.5);
        assert!(f.add(s).is_err());
        assert!(f.add(spec(FaultKind::Status { status: 200 })).is_err());
        assert!(
            f.add(spec(FaultKind::Latency {
                fixed_ms: None,
                min_ms: Some(9),
                max_ms: Some(3)
            }))
            .is_err()
        );
    }
}
