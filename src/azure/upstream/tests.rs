//! The classification of token-request failures, built as `azure_identity` 1.x builds them:
//! an `HttpResponse` error with Entra's status, AADSTS codes and raw answer, wrapped in a
//! `Credential` error.

use azure_core::Bytes;
use azure_core::http::headers::Headers;

use super::*;

/// The error `azure_identity` returns when Entra answers `status` with `body`.
fn entra_answer(status: u16, body: &str, headers: Headers) -> azure_core::Error {
    let codes: Option<String> = serde_json::from_str::<serde_json::Value>(body)
        .ok()
        .and_then(|v| v["error_codes"].as_array().cloned())
        .map(|c| {
            c.iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(",")
        });
    let response = RawResponse::from_bytes(
        StatusCode::from(status),
        headers,
        Bytes::from(body.to_owned()),
    );
    let inner = azure_core::Error::new(
        ErrorKind::HttpResponse {
            status: StatusCode::from(status),
            error_code: codes,
            raw_response: Some(Box::new(response)),
        },
        "AADSTS7000215: Invalid client secret provided. the-description",
    );
    azure_core::Error::with_error(
        ErrorKind::Credential,
        inner,
        "ClientSecretCredential authentication failed. the-description",
    )
}

fn oauth(error: &str, code: u32) -> String {
    format!(
        r#"{{"error":"{error}","error_description":"AADSTS{code}: the-description","error_codes":[{code}]}}"#
    )
}

#[test]
fn entra_rejections_are_told_from_outages_and_throttling() {
    for (status, error, code) in [
        (401, "invalid_client", 7000215),
        (400, "invalid_grant", 700024),
        (400, "unauthorized_client", 700016),
        (400, "invalid_request", 90002),
        (400, "invalid_scope", 1002012),
    ] {
        let failure = token_failure(&entra_answer(status, &oauth(error, code), Headers::new()));
        assert_eq!(
            failure,
            TokenFailure::Rejected(format!("{error}, AADSTS{code}, HTTP {status}"))
        );
        let kv = classify(
            &entra_answer(status, &oauth(error, code), Headers::new()),
            "secrets/get",
            "secret x",
        );
        assert!(
            matches!(
                kv,
                KvError::Unauthenticated {
                    by: Upstream::Entra,
                    ..
                }
            ),
            "{kv:?}"
        );
        assert!(!kv.to_string().contains("the-description"), "{kv}");
    }
    for status in [500, 502, 503, 504, 408] {
        let kv = classify(
            &entra_answer(status, &oauth("temporarily_unavailable", 0), Headers::new()),
            "secrets/get",
            "secret x",
        );
        assert_eq!(
            kv,
            KvError::Unavailable {
                by: Upstream::Entra,
                reason: format!("HTTP {status}")
            }
        );
        assert_eq!(
            kv.to_string(),
            format!("Microsoft Entra is unavailable: HTTP {status}")
        );
    }
    // A 4xx that says Entra is overloaded is an outage too.
    assert!(matches!(
        token_failure(&entra_answer(
            400,
            &oauth("temporarily_unavailable", 0),
            Headers::new()
        )),
        TokenFailure::Failed(KvError::Unavailable {
            by: Upstream::Entra,
            ..
        })
    ));
    // An HTML page from a gateway: an outage, its text not repeated.
    let html = entra_answer(502, "<html>bad gateway</html>", Headers::new());
    assert!(!classify(&html, "p", "w").to_string().contains("html"));
}

#[test]
fn entra_throttling_names_entra_and_its_retry_after() {
    let mut headers = Headers::new();
    headers.insert(RETRY_AFTER, "7");
    let kv = classify(
        &entra_answer(429, &oauth("temporarily_unavailable", 50196), headers),
        "keys/decrypt",
        "key k/1",
    );
    assert_eq!(
        kv,
        KvError::Throttled(Throttle {
            by: Upstream::Entra,
            retry_after: Some(Duration::from_secs(7)),
            beyond_deadline: false,
        })
    );
    assert_eq!(
        kv.to_string(),
        "Microsoft Entra is throttling requests (HTTP 429, Retry-After 7s) past the retries"
    );
    let kv = classify(
        &entra_answer(429, "{}", Headers::new()),
        "keys/decrypt",
        "key k/1",
    );
    assert_eq!(
        kv.to_string(),
        "Microsoft Entra is throttling requests (HTTP 429) past the retries"
    );
}

#[test]
fn unknown_oauth_errors_and_descriptions_are_not_repeated() {
    let body = r#"{"error":"<script>secret-looking</script>","error_description":"token=abc","error_codes":[1, 2]}"#;
    let TokenFailure::Rejected(text) = token_failure(&entra_answer(400, body, Headers::new()))
    else {
        panic!("a 400 is a rejection");
    };
    assert_eq!(text, "AADSTS1, AADSTS2, HTTP 400");
}

#[test]
fn unreachable_entra_and_unreadable_answers_are_outages() {
    let io = azure_core::Error::with_error(
        ErrorKind::Credential,
        azure_core::Error::new(
            ErrorKind::Connection,
            std::io::Error::from(std::io::ErrorKind::ConnectionRefused),
        ),
        "ClientSecretCredential authentication failed.",
    );
    assert_eq!(
        classify(&io, "p", "w"),
        KvError::Unavailable {
            by: Upstream::Entra,
            reason: "it could not be reached".into()
        }
    );
    let not_json = azure_core::Error::with_error(
        ErrorKind::Credential,
        azure_core::Error::with_message(ErrorKind::DataConversion, "expected value"),
        "authentication failed.",
    );
    assert!(matches!(
        token_failure(&not_json),
        TokenFailure::Failed(KvError::Unavailable {
            by: Upstream::Entra,
            ..
        })
    ));
    // A local failure (an assertion that cannot be signed) is the credential's.
    let local = azure_core::Error::with_message(ErrorKind::Credential, "signing failed");
    assert!(matches!(token_failure(&local), TokenFailure::Rejected(_)));
}

#[test]
fn certificate_failures_are_found_under_io_errors() {
    for (problem, said) in [
        (rustls::CertificateError::UnknownIssuer, "unknown issuer"),
        (rustls::CertificateError::NotValidForName, "host name"),
        (rustls::CertificateError::Expired, "expired"),
    ] {
        // As hyper-util hands it over: rustls' error in an I/O error, in another.
        let io = std::io::Error::other(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            rustls::Error::InvalidCertificate(problem),
        ));
        let e = azure_core::Error::with_error(ErrorKind::Connection, io, "request failed");
        let reason = certificate_problem(&e).expect("found");
        assert!(reason.contains(said), "{reason}");
    }
    let other = azure_core::Error::new(
        ErrorKind::Connection,
        std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            rustls::Error::HandshakeNotComplete,
        ),
    );
    assert_eq!(certificate_problem(&other), None);
    // What the policy makes of it, classified.
    let cut = azure_core::Error::new(
        ErrorKind::Other,
        Cut::Certificate {
            by: Upstream::KeyVault,
            host: "kv1.vault.azure.net".into(),
            reason: "it is not issued by a trusted CA (unknown issuer)".into(),
        },
    );
    let kv = classify(&cut.with_context("retry gave up"), "p", "w");
    assert_eq!(
        kv.to_string(),
        "the TLS certificate of kv1.vault.azure.net (Key Vault) could not be verified: it is \
         not issued by a trusted CA (unknown issuer); is its CA in --ca-bundle (or the system \
         roots)?"
    );
}

#[test]
fn a_retry_after_beyond_the_deadline_is_throttling_that_says_so() {
    let cut = azure_core::Error::new(
        ErrorKind::Other,
        Cut::WaitPastDeadline {
            by: Upstream::KeyVault,
            status: 429,
            retry_after: Duration::from_secs(60),
        },
    );
    assert_eq!(
        classify(&cut, "p", "w").to_string(),
        "Key Vault is throttling requests (HTTP 429): Retry-After 60s is beyond this call's \
         deadline, so it was not retried"
    );
    // Through a credential, it is Entra's.
    let through = azure_core::Error::with_error(
        ErrorKind::Credential,
        azure_core::Error::new(
            ErrorKind::Other,
            Cut::WaitPastDeadline {
                by: Upstream::Entra,
                status: 503,
                retry_after: Duration::from_secs(60),
            },
        ),
        "authentication failed.",
    );
    assert!(matches!(
        classify(&through, "p", "w"),
        KvError::Unavailable {
            by: Upstream::Entra,
            ..
        }
    ));
}

#[tokio::test]
async fn a_deadline_names_what_the_call_was_waiting_for() {
    let slow = || tokio::time::sleep(Duration::from_secs(5));
    let short = Duration::from_millis(20);
    assert_eq!(within(short, slow()).await, Err(Upstream::KeyVault));
    let waiting_for_a_token = async {
        started();
        slow().await;
    };
    assert_eq!(
        within(short, waiting_for_a_token).await,
        Err(Upstream::Entra)
    );
    let waiting_for_the_vault = async {
        started();
        mark(Waiting::KeyVault);
        slow().await;
    };
    assert_eq!(
        within(short, waiting_for_the_vault).await,
        Err(Upstream::KeyVault)
    );
    assert_eq!(within(short, async { 7 }).await, Ok(7));
}

#[test]
fn metrics_tell_entra_failures_from_the_vaults() {
    let entra = [
        KvError::Unauthenticated {
            by: Upstream::Entra,
            reason: "invalid_client".into(),
        },
        KvError::Throttled(Throttle {
            by: Upstream::Entra,
            retry_after: None,
            beyond_deadline: false,
        }),
        KvError::Unavailable {
            by: Upstream::Entra,
            reason: "HTTP 503".into(),
        },
    ];
    for e in &entra {
        assert_eq!(e.upstream_label(), "entra", "{e:?}");
    }
    let vault = [
        KvError::Unauthenticated {
            by: Upstream::KeyVault,
            reason: "Key Vault answered 401".into(),
        },
        KvError::unavailable("connection failed"),
        KvError::NotFound("key kek".into()),
        KvError::DeadlineExceeded(Duration::from_secs(2)),
    ];
    for e in &vault {
        assert_eq!(e.upstream_label(), "key_vault", "{e:?}");
    }
}
