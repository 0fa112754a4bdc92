//! The forms Node computes, checked against Node itself: the JSON.stringify form that
//! Opal's and Membrane's sample code signs, and Standard Webhooks' ed25519 (`v1a`)
//! signatures. The vectors (tests/vectors/node-forms.json) are made by
//! tests/vectors/node-forms.mjs; the first test checks that they still are.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::header_map;
use hookwarden_receiver::config::Provider;
use hookwarden_receiver::secrets::Secret;
use hookwarden_receiver::signature::{
    Algorithm, Encoding, GenericHmac, Rejection, Scheme, Verified, node_json, sign,
};
use serde::Deserialize;

#[derive(Deserialize, Debug)]
struct Vector {
    kind: String,
    what: String,
    scheme: String,
    secret: String,
    #[serde(default)]
    public: String,
    body: String,
    #[serde(default)]
    signed: String,
    headers: std::collections::BTreeMap<String, String>,
}

const NODE_FORMS: &str = include_str!("vectors/node-forms.json");
const TS: i64 = 1_767_225_600;

fn vectors(kind: &str) -> Vec<Vector> {
    let all: Vec<Vector> = serde_json::from_str(NODE_FORMS).unwrap();
    all.into_iter().filter(|v| v.kind == kind).collect()
}

fn verify(v: &Vector, scheme: &Scheme, secret: &str, body: &[u8]) -> Result<Verified, Rejection> {
    scheme.verify(
        &header_map(&v.headers),
        body,
        &[Secret::new(secret.as_bytes())],
        TS,
    )
}

fn scheme(v: &Vector) -> Scheme {
    Scheme::new(Provider::parse(&v.scheme).unwrap())
}

#[test]
fn the_committed_vectors_are_what_node_makes() {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/vectors/node-forms.mjs");
    let out = std::process::Command::new("node")
        .arg(script)
        .output()
        .expect(
            "node (Node.js) is needed to check the vectors Node made: install it (Debian: nodejs)",
        );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        String::from_utf8(out.stdout).unwrap() == NODE_FORMS,
        "tests/vectors/node-forms.json is stale: node receiver/tests/vectors/node-forms.mjs > receiver/tests/vectors/node-forms.json"
    );
}

#[test]
fn the_json_stringify_form_is_nodes_byte_for_byte() {
    let all = vectors("json-stringify");
    assert_eq!(all.len(), 22);
    for v in &all {
        let form = node_json::stringify(v.body.as_bytes()).unwrap();
        assert_eq!(String::from_utf8(form).unwrap(), v.signed, "{}", v.what);
        // A form is its own form.
        assert_eq!(
            node_json::stringify(v.signed.as_bytes()).unwrap(),
            v.signed.as_bytes()
        );
    }
}

#[test]
fn a_signature_over_the_json_stringify_form_verifies_and_that_form_is_what_is_recorded() {
    for v in vectors("json-stringify") {
        let s = scheme(&v);
        let got = verify(&v, &s, &v.secret, v.body.as_bytes()).unwrap();
        // Replaced where the bytes differ from the form (all but one vector).
        let differs = v.body != v.signed;
        assert_eq!(
            got.signed_body.as_deref(),
            differs.then_some(v.signed.as_bytes()),
            "{} {}",
            v.scheme,
            v.what
        );
        // The form itself, sent as it is, verifies on the fast path: nothing to replace.
        let direct = verify(&v, &s, &v.secret, v.signed.as_bytes()).unwrap();
        assert_eq!(direct.signed_body, None);
        // Both are one delivery: the same MAC, so the same identity.
        assert_eq!(got.mac, direct.mac, "{}", v.what);
        assert!(got.mac.is_some());
        // The wrong secret fails in both forms.
        assert_eq!(
            verify(&v, &s, "not-the-secret", v.body.as_bytes()),
            Err(Rejection::BadSignature)
        );
    }
}

#[test]
fn a_changed_value_fails_in_either_form() {
    for v in vectors("json-stringify") {
        let s = scheme(&v);
        // Change one character inside a string or a number: the JSON.stringify form
        // changes with it.
        let changed =
            v.body
                .replacen("\"x\"", "\"y\"", 1)
                .replacen("org-created", "org-createe", 1);
        assert_ne!(changed, v.body, "{}", v.what);
        assert_eq!(
            verify(&v, &s, &v.secret, changed.as_bytes()),
            Err(Rejection::BadSignature),
            "{} {}",
            v.scheme,
            v.what
        );
    }
}

#[test]
fn a_key_given_twice_is_refused_not_read_one_way() {
    // A captured Membrane delivery rearranged so that JavaScript (the last value wins, at
    // the first key's place) reads the signed delivery, and a first-wins parser another.
    let v = vectors("json-stringify")
        .into_iter()
        .find(|v| v.scheme == "membrane" && v.what == "pretty-printed")
        .unwrap();
    let rearranged = v.signed.replacen(
        r#""type":"org-created""#,
        r#""type":"user-invited-to-org","type":"org-created""#,
        1,
    );
    assert_ne!(rearranged, v.signed);
    assert_eq!(
        verify(&v, &scheme(&v), &v.secret, rearranged.as_bytes()),
        Err(Rejection::DuplicateKey)
    );
    // Checked only once the raw body fails: a body signed as it is stands as it is.
    let mut headers = v.headers.clone();
    headers.insert(
        "X-Signature".into(),
        hex(&hookwarden_receiver::signature::hmac(
            Algorithm::Sha256,
            v.secret.as_bytes(),
            &[rearranged.as_bytes()],
        )),
    );
    let raw = Scheme::new(Provider::Membrane).verify(
        &header_map(&headers),
        rearranged.as_bytes(),
        &[Secret::new(v.secret.as_bytes())],
        TS,
    );
    assert_eq!(raw.map(|r| r.signed_body), Ok(None));
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[test]
fn only_the_senders_that_sign_the_json_stringify_form_get_it() {
    let v = vectors("json-stringify")
        .into_iter()
        .find(|v| v.scheme == "membrane" && v.what == "pretty-printed")
        .unwrap();
    let signature = v.headers["X-Signature"].clone();
    // GitHub signs the bytes it sends: the same signature over the same form is refused.
    let mut github = std::collections::BTreeMap::new();
    github.insert(
        "X-Hub-Signature-256".to_string(),
        format!("sha256={signature}"),
    );
    let gv = Vector {
        headers: github,
        ..v
    };
    let gh = Scheme::new(Provider::Github);
    assert_eq!(
        verify(&gv, &gh, &gv.secret, gv.body.as_bytes()),
        Err(Rejection::BadSignature)
    );
    assert!(verify(&gv, &gh, &gv.secret, gv.signed.as_bytes()).is_ok());
    // A generic layout, as configured.
    let layout = |accept| Scheme {
        generic: Some(GenericHmac {
            header: "X-Hub-Signature-256".into(),
            algorithm: Algorithm::Sha256,
            encoding: Encoding::Hex,
            prefix: "sha256=".into(),
            timestamp_header: None,
            template: None,
            accept_json_stringify: accept,
        }),
        ..Scheme::new(Provider::GenericHmac)
    };
    assert_eq!(
        verify(&gv, &layout(false), &gv.secret, gv.body.as_bytes()),
        Err(Rejection::BadSignature)
    );
    let got = verify(&gv, &layout(true), &gv.secret, gv.body.as_bytes()).unwrap();
    assert_eq!(got.signed_body.as_deref(), Some(gv.signed.as_bytes()));
}

#[test]
fn standard_webhooks_v1a_signatures_made_by_node_verify_with_the_public_key() {
    let all = vectors("standard-webhooks-v1a");
    assert_eq!(all.len(), 3);
    let s = Scheme::new(Provider::StandardWebhooks);
    for v in &all {
        let ok = verify(v, &s, &v.public, v.body.as_bytes()).unwrap();
        assert_eq!(
            ok.delivery_id.as_deref(),
            Some(v.headers["webhook-id"].as_str())
        );
        assert_eq!(ok.timestamp, Some(TS));
        // Another key, or the right key given as a shared secret, verifies nothing.
        let other = &all.iter().find(|o| o.public != v.public).unwrap().public;
        assert_eq!(
            verify(v, &s, other, v.body.as_bytes()),
            Err(Rejection::BadSignature)
        );
        assert_eq!(
            verify(
                v,
                &s,
                "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
                v.body.as_bytes()
            ),
            Err(Rejection::BadSignature)
        );
        // A rotation: an HMAC secret and the public key side by side.
        let both = [
            Secret::new(b"whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"),
            Secret::new(v.public.as_bytes()),
        ];
        assert!(
            s.verify(&header_map(&v.headers), v.body.as_bytes(), &both, TS)
                .is_ok()
        );
        // sign() with the secret key makes Node's signature exactly (ed25519 is
        // deterministic).
        let signed = sign(
            &s,
            v.secret.as_bytes(),
            v.body.as_bytes(),
            TS,
            &v.headers["webhook-id"],
            &[],
        );
        for (name, value) in signed {
            assert_eq!(v.headers.get(&name), Some(&value), "{}: {name}", v.what);
        }
    }
}

#[test]
fn tampered_v1a_deliveries_fail() {
    let s = Scheme::new(Provider::StandardWebhooks);
    for v in vectors("standard-webhooks-v1a") {
        let body = v.body.as_bytes();
        for i in 0..body.len() {
            let mut tampered = body.to_vec();
            tampered[i] ^= 0x01;
            assert_eq!(
                verify(&v, &s, &v.public, &tampered),
                Err(Rejection::BadSignature),
                "{} byte {i}",
                v.what
            );
        }
        assert_eq!(
            verify(&v, &s, &v.public, &[body, b" "].concat()),
            Err(Rejection::BadSignature)
        );
        let sig = v.headers["webhook-signature"].clone();
        let encoded = sig.strip_prefix("v1a,").unwrap();
        let mut raw = base64_decode(encoded);
        for bit in [0, 100, 255, 256, 511] {
            raw[bit / 8] ^= 1 << (bit % 8);
            let mut headers = v.headers.clone();
            headers.insert(
                "webhook-signature".into(),
                format!("v1a,{}", base64_encode(&raw)),
            );
            let r = s.verify(
                &header_map(&headers),
                body,
                &[Secret::new(v.public.as_bytes())],
                TS,
            );
            assert_eq!(r, Err(Rejection::BadSignature), "{} bit {bit}", v.what);
            raw[bit / 8] ^= 1 << (bit % 8);
        }
        for (header, value) in [
            ("webhook-id", format!("{}x", v.headers["webhook-id"])),
            ("webhook-timestamp", (TS + 1).to_string()),
        ] {
            let mut headers = v.headers.clone();
            headers.insert(header.into(), value);
            let r = s.verify(
                &header_map(&headers),
                body,
                &[Secret::new(v.public.as_bytes())],
                TS,
            );
            assert_eq!(r, Err(Rejection::BadSignature), "{} {header}", v.what);
        }
        // A signature that is not 64 bytes is malformed, not merely wrong; a v1 one beside
        // it that does not match does not make the v1a one fail.
        for bad in [
            format!("v1a,{}", base64_encode(&raw[..63])),
            "v1a,!!".into(),
        ] {
            let mut headers = v.headers.clone();
            headers.insert("webhook-signature".into(), bad.clone());
            let r = s.verify(
                &header_map(&headers),
                body,
                &[Secret::new(v.public.as_bytes())],
                TS,
            );
            assert!(
                matches!(r, Err(Rejection::MalformedHeader { .. })),
                "{bad}: {r:?}"
            );
        }
        let mut headers = v.headers.clone();
        headers.insert(
            "webhook-signature".into(),
            format!("v1,{} {sig} v2,abc", base64_encode(&[0; 32])),
        );
        assert!(
            s.verify(
                &header_map(&headers),
                body,
                &[Secret::new(v.public.as_bytes())],
                TS
            )
            .is_ok()
        );
    }
}

fn base64_decode(s: &str) -> Vec<u8> {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.decode(s).unwrap()
}

fn base64_encode(b: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(b)
}

/// Random bodies, each given to Node's `JSON.stringify(JSON.parse(body))` and to ours: the
/// same bytes, or both refuse (ours refuses a repeated key where Node keeps the last).
#[test]
fn thousands_of_random_bodies_give_what_node_gives() {
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let bodies: Vec<String> = (0..4000).map(|_| rng.body(0)).collect();
    // (setEncoding: a character split across two chunks is still one character)
    let script = r#"let input = "";
process.stdin.setEncoding("utf8");
process.stdin.on("data", (d) => (input += d));
process.stdin.on("end", () => {
  const out = JSON.parse(input).map((b) => {
    try { return JSON.stringify(JSON.parse(b)); } catch (e) { return null; }
  });
  process.stdout.write(JSON.stringify(out));
});"#;
    use std::io::Write;
    let mut child = std::process::Command::new("node")
        .args(["-e", script])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("node (Node.js) is needed to compare with Node: install it");
    let input = serde_json::to_vec(&bodies).unwrap();
    child.stdin.take().unwrap().write_all(&input).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    // Node's answers may hold lone surrogates, which serde_json cannot read into a String:
    // compare them as the JSON text of each answer instead.
    let node: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout)
        .or_else(|_| serde_json::from_slice::<Vec<serde_json::Value>>(&out.stdout))
        .expect("Node's answers");
    let (mut same, mut refused, mut duplicates) = (0, 0, 0);
    for (body, node) in bodies.iter().zip(node) {
        match (node_json::stringify(body.as_bytes()), node) {
            (Ok(ours), serde_json::Value::String(theirs)) => {
                assert_eq!(String::from_utf8(ours).unwrap(), theirs, "{body}");
                same += 1;
            }
            (Err(node_json::Problem::NotJson), serde_json::Value::Null) => refused += 1,
            (Err(node_json::Problem::DuplicateKey), serde_json::Value::String(_)) => {
                duplicates += 1
            }
            (ours, theirs) => panic!("{body}: ours {ours:?}, Node's {theirs:?}"),
        }
    }
    // The generator reaches every branch.
    assert!(
        same > 2000 && refused > 200 && duplicates > 20,
        "{same} {refused} {duplicates}"
    );
}

/// A small deterministic generator of JSON-like text: valid most of the time, with the
/// numbers, escapes and keys where JavaScript differs from plain JSON.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    fn pick<'a>(&mut self, items: &[&'a str]) -> &'a str {
        items[self.below(items.len() as u64) as usize]
    }

    fn ws(&mut self) -> &'static str {
        ["", "", "", " ", "\n  ", "\t", "\r\n"][self.below(7) as usize]
    }

    fn number(&mut self) -> String {
        let digits = |r: &mut Self, n: u64| -> String {
            (0..n)
                .map(|_| char::from(b'0' + r.below(10) as u8))
                .collect()
        };
        let mut s = String::new();
        if self.below(3) == 0 {
            s.push('-');
        }
        let int_len = 1 + self.below(22);
        let int = digits(self, int_len);
        s.push_str(if self.below(4) == 0 {
            "0"
        } else {
            int.trim_start_matches('0')
        });
        if s.ends_with('-') || s.is_empty() {
            s.push('7');
        }
        if self.below(2) == 0 {
            s.push('.');
            let frac_len = 1 + self.below(20);
            s.push_str(&digits(self, frac_len));
        }
        if self.below(3) == 0 {
            s.push_str(self.pick(&["e", "E", "e+", "e-", "E-"]));
            let exp_len = 1 + self.below(3);
            s.push_str(&digits(self, exp_len));
        }
        // Now and then, not a JSON number.
        if self.below(40) == 0 {
            s.push_str(self.pick(&[".", "e", "x", "-"]));
        }
        s
    }

    fn string(&mut self) -> String {
        let mut s = String::from("\"");
        for _ in 0..self.below(8) {
            s.push_str(self.pick(&[
                "a",
                "Z",
                " ",
                "é",
                "☃",
                "😀",
                "\u{2028}",
                "\u{7f}",
                "\\\"",
                "\\\\",
                "\\/",
                "\\b",
                "\\f",
                "\\n",
                "\\r",
                "\\t",
                "\\u0000",
                "\\u001f",
                "\\u0041",
                "\\u00E9",
                "\\ud83d\\ude00",
                "\\ud800",
                "\\udfff",
                "\\uDBFF",
                "\\u2028",
                "\\uFEFF",
            ]));
        }
        if self.below(60) == 0 {
            s.push_str(self.pick(&["\\x", "\\u12", "\t", "\u{1}"]));
        }
        s.push('"');
        s
    }

    fn key(&mut self) -> String {
        match self.below(4) {
            0 => self.string(),
            1 => format!("\"{}\"", self.below(12)),
            _ => format!(
                "\"{}\"",
                self.pick(&[
                    "a",
                    "b",
                    "type",
                    "0",
                    "01",
                    "-1",
                    "1.5",
                    "4294967294",
                    "4294967295",
                    "10",
                    "__proto__"
                ])
            ),
        }
    }

    fn body(&mut self, depth: u32) -> String {
        let kind = if depth > 3 {
            self.below(5)
        } else {
            self.below(7)
        };
        let w = |r: &mut Self| r.ws().to_string();
        match kind {
            0 => self.number(),
            1 => self.string(),
            2 => self
                .pick(&["true", "false", "null", "nul", "True"])
                .to_string(),
            3 | 4 if depth > 3 => self.number(),
            3 | 5 => {
                let n = self.below(5);
                let items: Vec<String> = (0..n).map(|_| self.body(depth + 1)).collect();
                let sep = format!("{},{}", w(self), w(self));
                format!("[{}{}{}]", w(self), items.join(&sep), w(self))
            }
            _ => {
                let n = self.below(6);
                let members: Vec<String> = (0..n)
                    .map(|_| {
                        let (k, v) = (self.key(), self.body(depth + 1));
                        format!("{k}{}:{}{v}", w(self), w(self))
                    })
                    .collect();
                let sep = format!("{},{}", w(self), w(self));
                format!("{{{}{}{}}}", w(self), members.join(&sep), w(self))
            }
        }
    }
}
