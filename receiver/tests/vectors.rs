//! Published signature vectors (tests/vectors, copied from the senders' documentation and
//! SDK tests) and tampered variants of each.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::header_map;
use hookwarden_receiver::config::Provider;
use hookwarden_receiver::secrets::Secret;
use hookwarden_receiver::signature::{Rejection, Scheme, sign};
use serde::Deserialize;

#[derive(Deserialize)]
struct Vector {
    scheme: String,
    secret: String,
    body: String,
    headers: std::collections::BTreeMap<String, String>,
    #[serde(default)]
    must_fail_signature_headers: Vec<String>,
}

fn vectors() -> Vec<Vector> {
    let mut all: Vec<Vector> =
        serde_json::from_str(include_str!("vectors/opal-membrane.json")).unwrap();
    all.extend(
        serde_json::from_str::<Vec<Vector>>(include_str!("vectors/other-schemes.json")).unwrap(),
    );
    all
}

/// The signing time a vector carries (its clock for the replay window).
fn signed_at(v: &Vector) -> i64 {
    let h = &v.headers;
    for k in [
        "X-Opal-Request-Timestamp",
        "X-Slack-Request-Timestamp",
        "webhook-timestamp",
    ] {
        if let Some(t) = h.get(k) {
            return t.parse().unwrap();
        }
    }
    if let Some(s) = h.get("Stripe-Signature") {
        return s
            .split(',')
            .find_map(|i| i.strip_prefix("t="))
            .unwrap()
            .parse()
            .unwrap();
    }
    1_700_000_000
}

fn scheme(v: &Vector) -> Scheme {
    Scheme::new(Provider::parse(&v.scheme).unwrap())
}

fn secrets(v: &Vector) -> Vec<Secret> {
    vec![Secret::new(v.secret.as_bytes())]
}

#[test]
fn every_published_vector_verifies() {
    let all = vectors();
    assert_eq!(all.len(), 9);
    for v in &all {
        let result = scheme(v).verify(
            &header_map(&v.headers),
            v.body.as_bytes(),
            &secrets(v),
            signed_at(v),
        );
        assert!(result.is_ok(), "{}: {result:?}", v.scheme);
    }
}

#[test]
fn any_tampered_body_byte_fails() {
    for v in vectors() {
        let headers = header_map(&v.headers);
        let body = v.body.as_bytes();
        for i in 0..body.len() {
            let mut tampered = body.to_vec();
            tampered[i] ^= 0x01;
            let r = scheme(&v).verify(&headers, &tampered, &secrets(&v), signed_at(&v));
            assert_eq!(r, Err(Rejection::BadSignature), "{} byte {i}", v.scheme);
        }
        // and a byte added or removed (not whitespace, which a JSON.stringify form skips:
        // see node_forms.rs)
        let mut longer = body.to_vec();
        longer.push(b'x');
        assert!(
            scheme(&v)
                .verify(&headers, &longer, &secrets(&v), signed_at(&v))
                .is_err()
        );
        assert!(
            scheme(&v)
                .verify(
                    &headers,
                    &body[..body.len() - 1],
                    &secrets(&v),
                    signed_at(&v)
                )
                .is_err()
        );
    }
}

#[test]
fn any_tampered_signature_or_timestamp_fails() {
    for v in vectors() {
        for (name, value) in &v.headers {
            if name.eq_ignore_ascii_case("content-type")
                || name.eq_ignore_ascii_case("webhook-id") && v.scheme != "standard-webhooks"
            {
                continue;
            }
            // Change one character in the middle of each header that takes part in the check.
            let mut chars: Vec<char> = value.chars().collect();
            let i = chars.len() / 2;
            chars[i] = if chars[i] == '1' { '2' } else { '1' };
            let mut headers = v.headers.clone();
            headers.insert(name.clone(), chars.into_iter().collect());
            let r = scheme(&v).verify(
                &header_map(&headers),
                v.body.as_bytes(),
                &secrets(&v),
                signed_at(&v),
            );
            assert!(r.is_err(), "{}: tampered {name} accepted", v.scheme);
        }
    }
}

#[test]
fn wrong_secret_fails_and_any_active_secret_passes() {
    for v in vectors() {
        let headers = header_map(&v.headers);
        let wrong = vec![Secret::new(b"not-the-secret")];
        assert!(
            scheme(&v)
                .verify(&headers, v.body.as_bytes(), &wrong, signed_at(&v))
                .is_err(),
            "{}",
            v.scheme
        );
        // rotation: old and new side by side
        let both = vec![
            Secret::new(b"not-the-secret"),
            Secret::new(v.secret.as_bytes()),
        ];
        assert!(
            scheme(&v)
                .verify(&headers, v.body.as_bytes(), &both, signed_at(&v))
                .is_ok(),
            "{}",
            v.scheme
        );
    }
}

#[test]
fn standard_webhooks_must_fail_signatures_fail() {
    let v = vectors()
        .into_iter()
        .find(|v| v.scheme == "standard-webhooks")
        .unwrap();
    assert!(!v.must_fail_signature_headers.is_empty());
    for bad in &v.must_fail_signature_headers {
        let mut headers = v.headers.clone();
        headers.insert("webhook-signature".into(), bad.clone());
        let r = scheme(&v).verify(
            &header_map(&headers),
            v.body.as_bytes(),
            &secrets(&v),
            signed_at(&v),
        );
        assert_eq!(r, Err(Rejection::BadSignature));
    }
}

#[test]
fn timestamps_outside_the_window_fail() {
    for v in vectors() {
        let s = scheme(&v);
        let at = signed_at(&v);
        let headers = header_map(&v.headers);
        let ok = |now| s.verify(&headers, v.body.as_bytes(), &secrets(&v), now);
        let timed = matches!(
            s.provider,
            Provider::Opal | Provider::Slack | Provider::Stripe | Provider::StandardWebhooks
        );
        if !timed {
            continue;
        }
        assert!(ok(at + 300).is_ok(), "{}", v.scheme);
        assert!(ok(at - 300).is_ok(), "{}", v.scheme);
        assert_eq!(
            ok(at + 301),
            Err(Rejection::StaleTimestamp {
                tolerance_secs: 300
            }),
            "{}",
            v.scheme
        );
        assert_eq!(
            ok(at - 301),
            Err(Rejection::StaleTimestamp {
                tolerance_secs: 300
            }),
            "{}",
            v.scheme
        );
    }
}

#[test]
fn missing_headers_are_named() {
    for v in vectors() {
        for name in v
            .headers
            .keys()
            .filter(|k| !k.eq_ignore_ascii_case("content-type"))
        {
            let mut headers = v.headers.clone();
            headers.remove(name);
            let r = scheme(&v).verify(
                &header_map(&headers),
                v.body.as_bytes(),
                &secrets(&v),
                signed_at(&v),
            );
            assert_eq!(
                r,
                Err(Rejection::MissingHeader(name.to_ascii_lowercase())),
                "{}",
                v.scheme
            );
        }
    }
}

#[test]
fn sign_reproduces_the_published_headers() {
    for v in vectors() {
        let s = scheme(&v);
        let id = v.headers.get("webhook-id").cloned().unwrap_or_default();
        let signed = sign(
            &s,
            v.secret.as_bytes(),
            v.body.as_bytes(),
            signed_at(&v),
            &id,
            &[],
        );
        for (name, value) in signed {
            let published = v
                .headers
                .iter()
                .find(|(k, _)| k.eq_ignore_ascii_case(&name))
                .map(|(_, v)| v);
            assert_eq!(published, Some(&value), "{}: {name}", v.scheme);
        }
    }
}
