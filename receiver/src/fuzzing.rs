//! The properties the fuzz targets in `receiver/fuzz` check, as plain functions.
//!
//! `cargo fuzz` drives them with generated inputs; the unit test `fuzz_corpus` replays the
//! kept corpus through them on every `make test`, so a regression on an input the fuzzer
//! once found interesting fails without a nightly toolchain.

use axum::http::{HeaderMap, HeaderName, HeaderValue};

use crate::config::{Provider, ReceiverConfig};
use crate::payload::{note, parse, reason};
use crate::secrets::Secret;
use crate::signature::{Algorithm, Encoding, GenericHmac, Scheme, names, node_json};

/// The generic HMAC layout's headers the `signature` target sets (see `generic`).
const GENERIC_HEADERS: [&str; 3] = ["x-acme-signature", "x-acme-timestamp", "x-acme-id"];

/// The header names the signature input is split into, in order: the schemes' table, with
/// the generic layout's after the first twelve (where the corpus has them).
fn header_layout() -> Vec<HeaderName> {
    let mut all = names::ALL.to_vec();
    let rest = all.split_off(12);
    all.extend(GENERIC_HEADERS.map(HeaderName::from_static));
    all.extend(rest);
    all
}

/// Every scheme's header parsing and verification on arbitrary headers and bodies: never a
/// panic, never an acceptance, since the input cannot know the secret, and the check made
/// before the body is read refusing only what verification refuses, for the same reason.
///
/// Layout: the first byte picks the provider (its high bit the generic encoding, the next
/// whether the generic layout accepts the JSON.stringify form); the rest is
/// split on 0xFF into one value per header of [`header_layout`], then the body.
pub fn signature(data: &[u8]) {
    let Some((&selector, rest)) = data.split_first() else {
        return;
    };
    let provider = Provider::ALL[selector as usize % Provider::ALL.len()];
    let mut fields = rest.split(|b| *b == 0xFF);
    let mut headers = HeaderMap::new();
    for name in header_layout() {
        if let Some(Ok(v)) = fields.next().map(HeaderValue::from_bytes) {
            headers.insert(name, v);
        }
    }
    let body: Vec<u8> = fields.flatten().copied().collect();
    let scheme = Scheme {
        generic: Some(GenericHmac {
            header: "X-Acme-Signature".into(),
            algorithm: Algorithm::Sha256,
            encoding: if selector & 0x80 == 0 {
                Encoding::Hex
            } else {
                Encoding::Base64
            },
            prefix: "v1=".into(),
            timestamp_header: Some("X-Acme-Timestamp".into()),
            template: Some("{header:X-Acme-Id}.{timestamp}.{body}".into()),
            accept_json_stringify: selector & 0x40 != 0,
        }),
        ..Scheme::new(provider)
    };
    // Nothing in the input can produce an HMAC under this key; the GitLab token is compared
    // in constant time, so the fuzzer gets no byte-by-byte feedback towards it.
    let secret = Secret::new(b"fuzz-secret-5c0f1e2d3a4b59687766554433221100");
    // The check made before the body is read refuses only what the whole check refuses,
    // for the same reason: a delivery refused early would have been refused anyway.
    let early = scheme.precheck(&headers, 1_700_000_000);
    let verdict = scheme.verify(&headers, &body, &[secret], 1_700_000_000);
    if let Err(early) = early {
        assert_eq!(
            verdict.as_ref().err(),
            Some(&early),
            "{provider}: refused before the body for another reason than after it"
        );
    }
    assert!(
        verdict.is_err(),
        "{provider} accepted a delivery it could not have verified"
    );
}

/// The JSON.stringify form of arbitrary bytes: never a panic; a form is UTF-8 and is its
/// own form (so it is compact and canonical).
pub fn node_json(data: &[u8]) {
    if let Ok(form) = node_json::stringify(data) {
        assert!(
            std::str::from_utf8(&form).is_ok(),
            "a form that is not UTF-8"
        );
        assert_eq!(
            node_json::stringify(&form).as_deref(),
            Ok(form.as_slice()),
            "a form that is not its own form"
        );
    }
}

/// Payload parsing for every provider and the Event texts made from it: never a panic, and
/// reasons and notes stay within what an Event can carry.
///
/// Layout: the first byte picks the provider; its first 16 bytes after that also serve as the
/// event-type headers of the providers that carry one.
pub fn payload(data: &[u8]) {
    let Some((&selector, body)) = data.split_first() else {
        return;
    };
    let provider = Provider::ALL[selector as usize % Provider::ALL.len()];
    let mut headers = HeaderMap::new();
    if let Ok(v) = HeaderValue::from_bytes(&body[..body.len().min(16)]) {
        headers.insert("x-github-event", v.clone());
        headers.insert("x-gitlab-event", v.clone());
        headers.insert("x-shopify-topic", v);
    }
    if let Ok(parsed) = parse(provider, &headers, body) {
        for e in &parsed.events {
            let r = reason(&e.event_type);
            assert!(!r.is_empty() && r.len() <= 128, "reason {r:?}");
            assert!(note(e).len() <= 1000, "note too long");
        }
    }
}

/// The config parser on arbitrary documents: an error, never a panic; what parses renders
/// and parses back to the same.
pub fn config(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(config) = ReceiverConfig::from_yaml(text) {
        let rendered = config.to_yaml();
        let again = rendered
            .as_deref()
            .ok()
            .map(ReceiverConfig::from_yaml)
            .and_then(Result::ok);
        assert_eq!(again.as_ref(), Some(&config), "config did not round-trip");
    }
}

#[cfg(test)]
mod tests {
    /// `fuzz/seed.py` writes the corpus's seeds in the same layout: its list of header
    /// names must be this one.
    #[test]
    fn the_seed_script_splits_headers_as_the_target_does() {
        let script = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/fuzz/seed.py"))
            .expect("receiver/fuzz/seed.py");
        let list = script
            .split_once("HEADERS = [")
            .and_then(|(_, rest)| rest.split_once(']'))
            .map(|(list, _)| list)
            .expect("HEADERS = [...] in seed.py");
        let names: Vec<String> = list
            .split(',')
            .map(|n| n.trim().trim_matches('"').to_string())
            .filter(|n| !n.is_empty())
            .collect();
        let ours: Vec<String> = super::header_layout()
            .iter()
            .map(|h| h.to_string())
            .collect();
        assert_eq!(names, ours);
    }
}
