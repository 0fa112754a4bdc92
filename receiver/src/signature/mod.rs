//! Signature schemes: how each sender signs a delivery, and the check of one delivery
//! against the active secrets. Pure: headers, raw body, secrets and the clock go in, a
//! verdict comes out. Every comparison of a signature is constant-time (`subtle`'s
//! `ct_eq`, one MAC per delivery against every candidate), and a malformed header is
//! rejected, never "fixed up".
//!
//! `node_json` gives the second form of a JSON body that Opal's and Membrane's own sample
//! code signs (`JSON.stringify` of the parsed body), checked only when the raw body fails.

pub mod node_json;

use axum::http::{HeaderMap, HeaderName};
use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use hmac::{Hmac, KeyInit, Mac};
use subtle::{Choice, ConstantTimeEq};

use crate::config::{Provider, ReceiverConfig};
use crate::secrets::{Secret, whsec_key, whsk_key};
pub use hookwarden_api::layout::{Algorithm, Encoding, GenericHmac};

/// The headers the schemes read and `sign` writes: the one table of their names, which the
/// fuzz targets use too.
pub mod names {
    use axum::http::HeaderName;

    pub const OPAL_SIGNATURE: HeaderName = HeaderName::from_static("x-opal-signature");
    pub const OPAL_TIMESTAMP: HeaderName = HeaderName::from_static("x-opal-request-timestamp");
    pub const MEMBRANE_SIGNATURE: HeaderName = HeaderName::from_static("x-signature");
    pub const GITHUB_SIGNATURE: HeaderName = HeaderName::from_static("x-hub-signature-256");
    pub const SLACK_SIGNATURE: HeaderName = HeaderName::from_static("x-slack-signature");
    pub const SLACK_TIMESTAMP: HeaderName = HeaderName::from_static("x-slack-request-timestamp");
    pub const STRIPE_SIGNATURE: HeaderName = HeaderName::from_static("stripe-signature");
    pub const WEBHOOK_ID: HeaderName = HeaderName::from_static("webhook-id");
    pub const WEBHOOK_TIMESTAMP: HeaderName = HeaderName::from_static("webhook-timestamp");
    pub const WEBHOOK_SIGNATURE: HeaderName = HeaderName::from_static("webhook-signature");
    pub const SHOPIFY_SIGNATURE: HeaderName = HeaderName::from_static("x-shopify-hmac-sha256");
    pub const GITLAB_TOKEN: HeaderName = HeaderName::from_static("x-gitlab-token");
    pub const GITLAB_EVENT_UUID: HeaderName = HeaderName::from_static("x-gitlab-event-uuid");

    /// Every one of them. The order is the fuzz corpus's layout: add new ones at the end.
    pub const ALL: [HeaderName; 13] = [
        OPAL_SIGNATURE,
        OPAL_TIMESTAMP,
        MEMBRANE_SIGNATURE,
        GITHUB_SIGNATURE,
        SLACK_SIGNATURE,
        SLACK_TIMESTAMP,
        STRIPE_SIGNATURE,
        WEBHOOK_ID,
        WEBHOOK_TIMESTAMP,
        WEBHOOK_SIGNATURE,
        SHOPIFY_SIGNATURE,
        GITLAB_TOKEN,
        GITLAB_EVENT_UUID,
    ];
}

/// Default replay window: deliveries signed more than this far in the past or future are
/// refused.
pub const DEFAULT_TOLERANCE_SECS: i64 = 300;

/// Why a delivery was refused. Messages name the header and the problem, never a secret
/// or an expected signature.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Rejection {
    #[error("missing header {0}")]
    MissingHeader(String),
    #[error("malformed header {header}: {reason}")]
    MalformedHeader {
        header: String,
        reason: &'static str,
    },
    #[error("timestamp outside the replay window of {tolerance_secs} s")]
    StaleTimestamp { tolerance_secs: i64 },
    #[error("signature does not match")]
    BadSignature,
    /// Only where the signature may cover the body's JSON.stringify form: a key twice would
    /// let a captured delivery be rearranged into one that reads differently.
    #[error("the body gives an object key twice")]
    DuplicateKey,
    #[error("no signing secret is available")]
    NoSecret,
}

impl Rejection {
    /// A short label for metrics.
    pub fn metric_label(&self) -> &'static str {
        match self {
            Rejection::MissingHeader(_) => "missing_header",
            Rejection::MalformedHeader { .. } => "malformed_header",
            Rejection::StaleTimestamp { .. } => "stale_timestamp",
            Rejection::BadSignature => "bad_signature",
            Rejection::DuplicateKey => "duplicate_key",
            Rejection::NoSecret => "no_secret",
        }
    }
}

/// What verification established about a delivery.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verified {
    /// The sender's delivery id, where the scheme has one.
    pub delivery_id: Option<String>,
    /// The signed timestamp, where the scheme has one.
    pub timestamp: Option<i64>,
    /// The MAC that matched, where the scheme signs with one: it stands for everything
    /// signed (timestamp and body), so a delivery's identity can be derived from it
    /// without hashing the body again.
    pub mac: Option<Tag>,
    /// What the signature covered when that is not the body received: its JSON.stringify
    /// form. What is recorded is then this, exactly what was verified.
    pub signed_body: Option<Vec<u8>>,
}

/// The longest MAC a scheme produces: HMAC-SHA512's 64 bytes.
const MAX_TAG: usize = 64;

/// A MAC: a signature as decoded from its header, or as computed. Kept on the stack, so no
/// allocation per delivery.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Tag {
    /// Room for base64 decoding, which needs a little slack past `MAX_TAG`.
    bytes: [u8; MAX_TAG + 8],
    len: usize,
}

impl Tag {
    fn empty() -> Self {
        Tag {
            bytes: [0; MAX_TAG + 8],
            len: 0,
        }
    }

    pub fn as_slice(&self) -> &[u8] {
        &self.bytes[..self.len]
    }
}

impl std::fmt::Debug for Tag {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Tag(<{} bytes>)", self.len)
    }
}

/// The scheme of one Webhook.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Scheme {
    pub provider: Provider,
    pub tolerance_secs: i64,
    pub generic: Option<GenericHmac>,
}

impl Scheme {
    /// The signature scheme deliveries to a receiver with `config` are checked with.
    pub fn of(config: &ReceiverConfig) -> Self {
        Scheme {
            generic: config.generic_hmac.clone(),
            tolerance_secs: config.limits.replay_window_seconds.into(),
            ..Scheme::new(config.provider)
        }
    }

    pub fn new(provider: Provider) -> Self {
        Scheme {
            provider,
            tolerance_secs: DEFAULT_TOLERANCE_SECS,
            generic: None,
        }
    }

    /// Checks `body` and `headers` against each secret; accepted when any secret verifies.
    pub fn verify(
        &self,
        headers: &HeaderMap,
        body: &[u8],
        secrets: &[Secret],
        now: i64,
    ) -> Result<Verified, Rejection> {
        if secrets.is_empty() {
            return Err(Rejection::NoSecret);
        }
        let check = self.parse(headers)?;
        self.in_window(&check, now)?;
        if let Some(verified) = check.verify(secrets, body) {
            return Ok(verified);
        }
        if !self.accepts_json_stringify() {
            return Err(Rejection::BadSignature);
        }
        // The second form, only now: the raw body costs nothing extra.
        match node_json::stringify(body) {
            Ok(form) if form != body => match check.verify(secrets, &form) {
                Some(verified) => Ok(Verified {
                    signed_body: Some(form),
                    ..verified
                }),
                None => Err(Rejection::BadSignature),
            },
            Ok(_) | Err(node_json::Problem::NotJson) => Err(Rejection::BadSignature),
            Err(node_json::Problem::DuplicateKey) => Err(Rejection::DuplicateKey),
        }
    }

    /// What can be checked before the body is read: the scheme's signature and timestamp
    /// headers are there, once, and well formed, and the timestamp is within the replay
    /// window. Refuses as [`Scheme::verify`] would, with the same rejection; passing it
    /// says nothing of the signature itself.
    pub fn precheck(&self, headers: &HeaderMap, now: i64) -> Result<(), Rejection> {
        let check = self.parse(headers)?;
        self.in_window(&check, now)
    }

    /// Whether the signed timestamp, where the scheme has one, is within the replay window.
    fn in_window(&self, check: &Check<'_>, now: i64) -> Result<(), Rejection> {
        match check.timestamp {
            Some(ts) if (now - ts).abs() > self.tolerance_secs => Err(Rejection::StaleTimestamp {
                tolerance_secs: self.tolerance_secs,
            }),
            _ => Ok(()),
        }
    }

    /// Whether a signature over the body's JSON.stringify form is accepted too: for the
    /// senders whose documentation signs that (Opal, Membrane), and generic layouts that
    /// ask for it.
    pub fn accepts_json_stringify(&self) -> bool {
        match self.provider {
            Provider::Opal | Provider::Membrane => true,
            Provider::GenericHmac => self
                .generic
                .as_ref()
                .is_some_and(|g| g.accept_json_stringify),
            _ => false,
        }
    }

    /// Reads the scheme's headers into what must be checked.
    fn parse<'h>(&self, headers: &'h HeaderMap) -> Result<Check<'h>, Rejection> {
        use Provider::*;
        let plain = |algorithm,
                     header: &HeaderName,
                     encoding,
                     prefix: &str|
         -> Result<Check<'h>, Rejection> {
            let value = header_str(headers, header)?;
            let sig = strip(value, prefix, header.as_str())?;
            Ok(Check::hmac(
                algorithm,
                vec![decode(sig, encoding, header.as_str())?],
                Layout::Body,
            ))
        };
        match self.provider {
            Membrane => plain(
                Algorithm::Sha256,
                &names::MEMBRANE_SIGNATURE,
                Encoding::Hex,
                "",
            ),
            Github => plain(
                Algorithm::Sha256,
                &names::GITHUB_SIGNATURE,
                Encoding::Hex,
                "sha256=",
            ),
            Shopify => plain(
                Algorithm::Sha256,
                &names::SHOPIFY_SIGNATURE,
                Encoding::Base64,
                "",
            ),
            Opal | Slack => {
                let (sig_h, ts_h, prefix) = if self.provider == Opal {
                    (&names::OPAL_SIGNATURE, &names::OPAL_TIMESTAMP, "")
                } else {
                    (&names::SLACK_SIGNATURE, &names::SLACK_TIMESTAMP, "v0=")
                };
                let ts_raw = header_str(headers, ts_h)?;
                let ts = parse_ts(ts_raw, ts_h.as_str())?;
                let sig = strip(header_str(headers, sig_h)?, prefix, sig_h.as_str())?;
                let mut c = Check::hmac(
                    Algorithm::Sha256,
                    vec![decode(sig, Encoding::Hex, sig_h.as_str())?],
                    Layout::Prefixed([b"v0:", ts_raw.as_bytes(), b":", b""]),
                );
                c.timestamp = Some(ts);
                Ok(c)
            }
            Stripe => parse_stripe(headers),
            StandardWebhooks => parse_standard(headers),
            Gitlab => {
                let token = header_str(headers, &names::GITLAB_TOKEN)?;
                Ok(Check {
                    kind: CheckKind::Token(token.as_bytes().to_vec()),
                    delivery_id: headers
                        .get(names::GITLAB_EVENT_UUID)
                        .and_then(|v| v.to_str().ok())
                        .map(String::from),
                    timestamp: None,
                })
            }
            GenericHmac => {
                let g = self.generic.as_ref().ok_or(Rejection::NoSecret)?;
                parse_generic(g, headers)
            }
        }
    }
}

/// What is signed, around the body.
#[derive(Debug, Clone)]
enum Layout<'h> {
    Body,
    /// Pieces before the body (from the request's headers and literals), then the body.
    Prefixed([&'h [u8]; 4]),
    /// Generic template parts; `None` stands for the body.
    Parts(Vec<Option<Vec<u8>>>),
}

#[derive(Debug, Clone)]
enum CheckKind<'h> {
    Hmac {
        algorithm: Algorithm,
        candidates: Vec<Tag>,
        layout: Layout<'h>,
    },
    /// Standard Webhooks: `v1` HMACs checked with `whsec_` secrets, `v1a` ed25519
    /// signatures with `whpk_` public keys, both over `{id}.{timestamp}.{body}`.
    Standard {
        v1: Vec<Tag>,
        v1a: Vec<ed25519_dalek::Signature>,
        prefix: [&'h [u8]; 4],
    },
    Token(Vec<u8>),
}

/// What must be checked of one delivery, read from its headers.
#[derive(Debug, Clone)]
struct Check<'h> {
    kind: CheckKind<'h>,
    delivery_id: Option<String>,
    timestamp: Option<i64>,
}

impl<'h> Check<'h> {
    fn hmac(algorithm: Algorithm, candidates: Vec<Tag>, layout: Layout<'h>) -> Self {
        Check {
            kind: CheckKind::Hmac {
                algorithm,
                candidates,
                layout,
            },
            delivery_id: None,
            timestamp: None,
        }
    }

    /// What verification established when any of `secrets` verifies `body`.
    fn verify(&self, secrets: &[Secret], body: &[u8]) -> Option<Verified> {
        let mac = secrets.iter().find_map(|s| self.matches(s, body))?;
        Some(Verified {
            delivery_id: self.delivery_id.clone(),
            timestamp: self.timestamp,
            // The MAC stands for the delivery only where it covers the body.
            mac: match &self.kind {
                CheckKind::Hmac { layout, .. } if layout.signs_body() => Some(mac),
                _ => None,
            },
            signed_body: None,
        })
    }

    /// The MAC that matched (for a token or a public-key signature, an empty one), or
    /// `None`.
    fn matches(&self, secret: &Secret, body: &[u8]) -> Option<Tag> {
        match &self.kind {
            CheckKind::Token(token) => constant_time_eq(token, secret.expose()).then(Tag::empty),
            CheckKind::Standard { v1, v1a, prefix } => {
                if let Some(key) = secret.ed25519() {
                    // Public data on both sides, so no constant time needed; strict
                    // verification refuses malleable signatures and small-order keys.
                    let mut message = Vec::with_capacity(
                        prefix.iter().map(|p| p.len()).sum::<usize>() + body.len(),
                    );
                    prefix.iter().for_each(|p| message.extend_from_slice(p));
                    message.extend_from_slice(body);
                    v1a.iter()
                        .any(|sig| key.verify_strict(&message, sig).is_ok())
                        .then(Tag::empty)
                } else {
                    let signed = |update: &mut dyn FnMut(&[u8])| {
                        prefix.iter().for_each(|p| update(p));
                        update(body);
                    };
                    mac_matches(secret.hmac_sha256(true)?, signed, v1)
                }
            }
            CheckKind::Hmac {
                algorithm,
                candidates,
                layout,
            } => {
                let signed = |update: &mut dyn FnMut(&[u8])| layout.feed(body, update);
                match algorithm {
                    // The common case: the secret's prepared key.
                    Algorithm::Sha256 => {
                        mac_matches(secret.hmac_sha256(false)?, signed, candidates)
                    }
                    Algorithm::Sha512 => mac_matches(
                        Hmac::<sha2::Sha512>::new_from_slice(secret.expose()).ok()?,
                        signed,
                        candidates,
                    ),
                    Algorithm::Sha1 => mac_matches(
                        Hmac::<sha1::Sha1>::new_from_slice(secret.expose()).ok()?,
                        signed,
                        candidates,
                    ),
                }
            }
        }
    }
}

impl Layout<'_> {
    fn signs_body(&self) -> bool {
        match self {
            Layout::Body | Layout::Prefixed(_) => true,
            Layout::Parts(parts) => parts.iter().any(Option::is_none),
        }
    }

    /// Feeds what is signed, in order, to `update`.
    fn feed(&self, body: &[u8], update: &mut dyn FnMut(&[u8])) {
        match self {
            Layout::Body => update(body),
            Layout::Prefixed(pieces) => {
                for piece in pieces {
                    update(piece);
                }
                update(body);
            }
            Layout::Parts(parts) => {
                for part in parts {
                    update(part.as_deref().unwrap_or(body));
                }
            }
        }
    }
}

/// The MAC of what `signed` feeds, if it equals any candidate: computed once, compared to
/// each in constant time.
fn mac_matches<M: Mac>(
    mut mac: M,
    signed: impl FnOnce(&mut dyn FnMut(&[u8])),
    candidates: &[Tag],
) -> Option<Tag> {
    signed(&mut |part| mac.update(part));
    let computed = mac.finalize().into_bytes();
    let computed = computed.as_slice();
    let matched: bool = candidates
        .iter()
        .fold(Choice::from(0), |any, c| any | computed.ct_eq(c.as_slice()))
        .into();
    matched.then(|| {
        let mut tag = Tag::empty();
        tag.len = computed.len().min(MAX_TAG);
        tag.bytes[..tag.len].copy_from_slice(&computed[..tag.len]);
        tag
    })
}

/// Computes the HMAC of `parts` (concatenated) with `key`.
pub fn hmac(algorithm: Algorithm, key: &[u8], parts: &[&[u8]]) -> Vec<u8> {
    fn run<M: Mac + KeyInit>(key: &[u8], parts: &[&[u8]]) -> Vec<u8> {
        // HMAC accepts keys of any length.
        let mut mac = <M as KeyInit>::new_from_slice(key).unwrap_or_else(|_| unreachable!());
        for p in parts {
            mac.update(p);
        }
        mac.finalize().into_bytes().to_vec()
    }
    match algorithm {
        Algorithm::Sha256 => run::<Hmac<sha2::Sha256>>(key, parts),
        Algorithm::Sha512 => run::<Hmac<sha2::Sha512>>(key, parts),
        Algorithm::Sha1 => run::<Hmac<sha1::Sha1>>(key, parts),
    }
}

/// Constant-time check of `expected` against the HMAC of `parts`.
pub fn verify_hmac(algorithm: Algorithm, key: &[u8], parts: &[&[u8]], expected: &[u8]) -> bool {
    fn run<M: Mac + KeyInit>(key: &[u8], parts: &[&[u8]], expected: &[u8]) -> bool {
        let Ok(mut mac) = <M as KeyInit>::new_from_slice(key) else {
            return false;
        };
        for p in parts {
            mac.update(p);
        }
        mac.verify_slice(expected).is_ok()
    }
    match algorithm {
        Algorithm::Sha256 => run::<Hmac<sha2::Sha256>>(key, parts, expected),
        Algorithm::Sha512 => run::<Hmac<sha2::Sha512>>(key, parts, expected),
        Algorithm::Sha1 => run::<Hmac<sha1::Sha1>>(key, parts, expected),
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    // Compare HMACs of both under a fixed key: constant-time in content, and lengths leak
    // nothing useful.
    let ka = hmac(Algorithm::Sha256, b"hookwarden-token-compare", &[a]);
    verify_hmac(Algorithm::Sha256, b"hookwarden-token-compare", &[b], &ka)
}

fn header_str<'a>(headers: &'a HeaderMap, name: &HeaderName) -> Result<&'a str, Rejection> {
    let mut values = headers.get_all(name).iter();
    let value = values
        .next()
        .ok_or_else(|| Rejection::MissingHeader(name.as_str().to_string()))?;
    if values.next().is_some() {
        return Err(Rejection::MalformedHeader {
            header: name.as_str().into(),
            reason: "sent more than once",
        });
    }
    value.to_str().map_err(|_| Rejection::MalformedHeader {
        header: name.as_str().into(),
        reason: "not visible ASCII",
    })
}

/// A header named in the Webhook's configuration; a name no header can have is missing.
fn configured_header(name: &str) -> Result<HeaderName, Rejection> {
    HeaderName::from_bytes(name.to_ascii_lowercase().as_bytes())
        .map_err(|_| Rejection::MissingHeader(name.to_ascii_lowercase()))
}

fn strip<'a>(value: &'a str, prefix: &str, header: &str) -> Result<&'a str, Rejection> {
    value
        .strip_prefix(prefix)
        .ok_or_else(|| Rejection::MalformedHeader {
            header: header.into(),
            reason: "missing the expected prefix",
        })
}

fn decode(sig: &str, encoding: Encoding, header: &str) -> Result<Tag, Rejection> {
    let bad = |reason| Rejection::MalformedHeader {
        header: header.into(),
        reason,
    };
    if sig.is_empty() {
        return Err(bad("empty signature"));
    }
    let mut tag = Tag::empty();
    match encoding {
        Encoding::Hex => {
            // Lowercase or uppercase hex, nothing else (no whitespace, no 0x, which the
            // decoder would otherwise skip).
            if sig.starts_with("0x") || sig.starts_with("0X") {
                return Err(bad("not hexadecimal"));
            }
            if sig.len() > 2 * MAX_TAG {
                return Err(bad("longer than any signature"));
            }
            if !sig.len().is_multiple_of(2) {
                return Err(bad("not hexadecimal"));
            }
            tag.len = sig.len() / 2;
            hex::decode_to_slice(sig, &mut tag.bytes[..tag.len])
                .map_err(|_| bad("not hexadecimal"))?;
        }
        Encoding::Base64 => {
            if sig.len() > MAX_TAG.div_ceil(3) * 4 {
                return Err(bad("longer than any signature"));
            }
            tag.len = B64
                .decode_slice(sig, &mut tag.bytes)
                .map_err(|_| bad("not base64"))?;
        }
    }
    Ok(tag)
}

fn parse_ts(raw: &str, header: &str) -> Result<i64, Rejection> {
    if raw.is_empty() || raw.len() > 12 || !raw.bytes().all(|b| b.is_ascii_digit()) {
        return Err(Rejection::MalformedHeader {
            header: header.into(),
            reason: "not a Unix timestamp in seconds",
        });
    }
    raw.parse().map_err(|_| Rejection::MalformedHeader {
        header: header.into(),
        reason: "not a Unix timestamp in seconds",
    })
}

fn parse_stripe(headers: &HeaderMap) -> Result<Check<'_>, Rejection> {
    const H: &str = "stripe-signature";
    let value = header_str(headers, &names::STRIPE_SIGNATURE)?;
    let mut ts_raw = None;
    let mut candidates = Vec::new();
    for item in value.split(',') {
        let (k, v) = item.split_once('=').ok_or(Rejection::MalformedHeader {
            header: H.into(),
            reason: "items must be key=value",
        })?;
        match k.trim() {
            "t" if ts_raw.is_none() => ts_raw = Some(v.trim()),
            "t" => {
                return Err(Rejection::MalformedHeader {
                    header: H.into(),
                    reason: "more than one t",
                });
            }
            "v1" => candidates.push(decode(v.trim(), Encoding::Hex, H)?),
            _ => {} // other schemes (v0, ...) are ignored, as Stripe's libraries do
        }
    }
    let ts_raw = ts_raw.ok_or(Rejection::MalformedHeader {
        header: H.into(),
        reason: "no t= timestamp",
    })?;
    if candidates.is_empty() {
        return Err(Rejection::MalformedHeader {
            header: H.into(),
            reason: "no v1 signature",
        });
    }
    let ts = parse_ts(ts_raw, H)?;
    let mut c = Check::hmac(
        Algorithm::Sha256,
        candidates,
        Layout::Prefixed([ts_raw.as_bytes(), b".", b"", b""]),
    );
    c.timestamp = Some(ts);
    Ok(c)
}

fn parse_standard(headers: &HeaderMap) -> Result<Check<'_>, Rejection> {
    let id = header_str(headers, &names::WEBHOOK_ID)?;
    let ts_raw = header_str(headers, &names::WEBHOOK_TIMESTAMP)?;
    let ts = parse_ts(ts_raw, "webhook-timestamp")?;
    let value = header_str(headers, &names::WEBHOOK_SIGNATURE)?;
    let malformed = |reason| Rejection::MalformedHeader {
        header: names::WEBHOOK_SIGNATURE.to_string(),
        reason,
    };
    let (mut v1, mut v1a) = (Vec::new(), Vec::new());
    for item in value.split(' ').filter(|s| !s.is_empty()) {
        let (version, sig) = item
            .split_once(',')
            .ok_or(malformed("items must be version,signature"))?;
        let decoded = || decode(sig, Encoding::Base64, names::WEBHOOK_SIGNATURE.as_str());
        match version {
            "v1" => v1.push(decoded()?),
            "v1a" => v1a.push(
                ed25519_dalek::Signature::from_slice(decoded()?.as_slice())
                    .map_err(|_| malformed("a v1a signature is 64 bytes"))?,
            ),
            _ => {} // later versions are for later receivers
        }
    }
    if v1.is_empty() && v1a.is_empty() {
        return Err(malformed("no v1 or v1a signature"));
    }
    Ok(Check {
        kind: CheckKind::Standard {
            v1,
            v1a,
            prefix: [id.as_bytes(), b".", ts_raw.as_bytes(), b"."],
        },
        delivery_id: Some(id.to_string()),
        timestamp: Some(ts),
    })
}

fn parse_generic<'h>(g: &GenericHmac, headers: &'h HeaderMap) -> Result<Check<'h>, Rejection> {
    let header = configured_header(&g.header)?;
    let value = header_str(headers, &header)?;
    let sig = decode(
        strip(value, &g.prefix, header.as_str())?,
        g.encoding,
        header.as_str(),
    )?;
    let mut timestamp = None;
    let mut ts_value = None;
    if let Some(th) = &g.timestamp_header {
        let th = configured_header(th)?;
        let raw = header_str(headers, &th)?;
        timestamp = Some(parse_ts(raw, th.as_str())?);
        ts_value = Some(raw.to_string());
    }
    let template = g.template.as_deref().unwrap_or("{body}");
    let parts = render_template(template, headers, ts_value.as_deref())?;
    let mut c = Check::hmac(g.algorithm, vec![sig], Layout::Parts(parts));
    c.timestamp = timestamp;
    Ok(c)
}

/// Splits a signed-string template into literal parts and the body.
fn render_template(
    template: &str,
    headers: &HeaderMap,
    timestamp: Option<&str>,
) -> Result<Vec<Option<Vec<u8>>>, Rejection> {
    let mut parts = Vec::new();
    let mut literal = String::new();
    let mut rest = template;
    while let Some(start) = rest.find('{') {
        literal.push_str(&rest[..start]);
        let end = rest[start..]
            .find('}')
            .map(|e| start + e)
            .ok_or(Rejection::MalformedHeader {
                header: "template".into(),
                reason: "unclosed {",
            })?;
        let token = &rest[start + 1..end];
        match token {
            "body" => {
                parts.push(Some(std::mem::take(&mut literal).into_bytes()));
                parts.push(None);
            }
            "timestamp" => literal.push_str(timestamp.ok_or(Rejection::MalformedHeader {
                header: "template".into(),
                reason: "{timestamp} needs timestampHeader",
            })?),
            t if t.starts_with("header:") => literal.push_str(header_str(
                headers,
                &configured_header(&t["header:".len()..])?,
            )?),
            _ => {
                return Err(Rejection::MalformedHeader {
                    header: "template".into(),
                    reason: "unknown placeholder",
                });
            }
        }
        rest = &rest[end + 1..];
    }
    literal.push_str(rest);
    parts.push(Some(literal.into_bytes()));
    Ok(parts
        .into_iter()
        .filter(|p| p.as_ref().is_none_or(|b| !b.is_empty()))
        .collect())
}

/// The headers a sender of `provider` sets for `body` signed with `secret` at `timestamp`
/// (`hookwarden-receiver sign`, and tests). `extra` are other headers the sender sets,
/// which a generic template may sign (`{header:Name}`).
pub fn sign(
    scheme: &Scheme,
    secret: &[u8],
    body: &[u8],
    timestamp: i64,
    delivery_id: &str,
    extra: &[(String, String)],
) -> Vec<(String, String)> {
    use Provider::*;
    let hex_sig = |parts: &[&[u8]]| hex::encode(hmac(Algorithm::Sha256, secret, parts));
    let ts = timestamp.to_string();
    match scheme.provider {
        Opal => vec![
            (
                names::OPAL_SIGNATURE.to_string(),
                hex_sig(&[format!("v0:{ts}:").as_bytes(), body]),
            ),
            (names::OPAL_TIMESTAMP.to_string(), ts),
        ],
        Membrane => vec![(names::MEMBRANE_SIGNATURE.to_string(), hex_sig(&[body]))],
        Github => vec![(
            names::GITHUB_SIGNATURE.to_string(),
            format!("sha256={}", hex_sig(&[body])),
        )],
        Slack => vec![
            (
                names::SLACK_SIGNATURE.to_string(),
                format!("v0={}", hex_sig(&[format!("v0:{ts}:").as_bytes(), body])),
            ),
            (names::SLACK_TIMESTAMP.to_string(), ts),
        ],
        Stripe => vec![(
            names::STRIPE_SIGNATURE.to_string(),
            format!(
                "t={ts},v1={}",
                hex_sig(&[format!("{ts}.").as_bytes(), body])
            ),
        )],
        StandardWebhooks => {
            let signed = [format!("{delivery_id}.{ts}.").as_bytes(), body].concat();
            let signature = match whsk_key(secret) {
                Some(key) => {
                    use ed25519_dalek::Signer;
                    format!("v1a,{}", B64.encode(key.sign(&signed).to_bytes()))
                }
                None => {
                    let key = whsec_key(secret).unwrap_or_else(|| secret.to_vec());
                    let sig = hmac(Algorithm::Sha256, &key, &[&signed]);
                    format!("v1,{}", B64.encode(sig))
                }
            };
            vec![
                (names::WEBHOOK_ID.to_string(), delivery_id.into()),
                (names::WEBHOOK_TIMESTAMP.to_string(), ts),
                (names::WEBHOOK_SIGNATURE.to_string(), signature),
            ]
        }
        Shopify => vec![(
            names::SHOPIFY_SIGNATURE.to_string(),
            B64.encode(hmac(Algorithm::Sha256, secret, &[body])),
        )],
        Gitlab => vec![
            (
                names::GITLAB_TOKEN.to_string(),
                String::from_utf8_lossy(secret).into_owned(),
            ),
            (names::GITLAB_EVENT_UUID.to_string(), delivery_id.into()),
        ],
        GenericHmac => {
            let Some(g) = &scheme.generic else {
                return vec![];
            };
            let mut headers = vec![];
            let mut map = HeaderMap::new();
            let mut known: Vec<(String, String)> = extra.to_vec();
            if let Some(th) = &g.timestamp_header {
                headers.push((th.clone(), ts.clone()));
                known.push((th.clone(), ts.clone()));
            }
            for (k, v) in &known {
                if let (Ok(n), Ok(v)) = (
                    axum::http::HeaderName::from_bytes(k.to_ascii_lowercase().as_bytes()),
                    axum::http::HeaderValue::from_str(v),
                ) {
                    map.insert(n, v);
                }
            }
            let template = g.template.as_deref().unwrap_or("{body}");
            let Ok(parts) = render_template(template, &map, Some(&ts)) else {
                return vec![];
            };
            let parts: Vec<&[u8]> = parts.iter().map(|p| p.as_deref().unwrap_or(body)).collect();
            let mac = hmac(g.algorithm, secret, &parts);
            let encoded = match g.encoding {
                Encoding::Hex => hex::encode(mac),
                Encoding::Base64 => B64.encode(mac),
            };
            headers.push((g.header.clone(), format!("{}{encoded}", g.prefix)));
            headers
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::{HeaderName, HeaderValue};

    fn headers(pairs: &[(String, String)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (k, v) in pairs {
            map.append(
                HeaderName::from_bytes(k.to_ascii_lowercase().as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        map
    }

    fn generic(template: Option<&str>, ts: bool) -> Scheme {
        Scheme {
            generic: Some(GenericHmac {
                header: "X-Acme-Signature".into(),
                algorithm: Algorithm::Sha512,
                encoding: Encoding::Base64,
                prefix: "sha512=".into(),
                timestamp_header: ts.then(|| "X-Acme-Timestamp".into()),
                template: template.map(String::from),
                accept_json_stringify: false,
            }),
            ..Scheme::new(Provider::GenericHmac)
        }
    }

    #[test]
    fn generic_hmac_round_trips_and_checks_its_layout() {
        let secret = b"acme-secret";
        let secrets = [Secret::new(secret)];
        let body = br#"{"event":"x"}"#;
        for (template, ts) in [
            (None, false),
            (Some("{timestamp}.{body}"), true),
            (Some("v1:{header:X-Acme-Id}:{timestamp}:{body}:end"), true),
        ] {
            let s = generic(template, ts);
            let extra = [("X-Acme-Id".to_string(), "abc".to_string())];
            let mut signed = sign(&s, secret, body, 1_000, "", &extra);
            signed.extend(extra);
            let h = headers(&signed);
            assert!(s.verify(&h, body, &secrets, 1_000).is_ok(), "{template:?}");
            assert_eq!(
                s.verify(&h, b"{}", &secrets, 1_000),
                Err(Rejection::BadSignature)
            );
            if ts {
                assert!(matches!(
                    s.verify(&h, body, &secrets, 2_000),
                    Err(Rejection::StaleTimestamp { .. })
                ));
            }
        }
        // The prefix is required, and the encoding is what was configured.
        let s = generic(None, false);
        let sig = B64.encode(hmac(Algorithm::Sha512, secret, &[body]));
        let no_prefix = headers(&[("X-Acme-Signature".into(), sig.clone())]);
        assert!(matches!(
            s.verify(&no_prefix, body, &secrets, 0),
            Err(Rejection::MalformedHeader { .. })
        ));
        let as_hex = headers(&[(
            "X-Acme-Signature".into(),
            format!(
                "sha512={}",
                hex::encode(hmac(Algorithm::Sha512, secret, &[body]))
            ),
        )]);
        assert!(s.verify(&as_hex, body, &secrets, 0).is_err());
    }

    #[test]
    fn generic_layouts_must_sign_the_body() {
        let layout = |template: Option<&str>, ts: Option<&str>| GenericHmac {
            header: "X-Sig".into(),
            algorithm: Algorithm::Sha256,
            encoding: Encoding::Hex,
            prefix: String::new(),
            timestamp_header: ts.map(String::from),
            template: template.map(String::from),
            accept_json_stringify: false,
        };
        for (ok, ts) in [
            (None, None),
            (Some("{body}"), None),
            (Some("v1:{timestamp}:{header:X-Id}:{body}"), Some("X-Ts")),
        ] {
            assert_eq!(layout(ok, ts).problem(), None, "{ok:?}");
        }
        for (template, ts, says) in [
            // A timestamp checked but not signed stops no replay (api `layout`).
            (None, Some("X-Ts"), "timestampHeader is not signed"),
            (
                Some("{body}"),
                Some("X-Ts"),
                "timestampHeader is not signed",
            ),
            (Some("{timestamp}"), Some("X-Ts"), "does not sign {body}"),
            (
                Some("{header:X-Id}.{timestamp}"),
                Some("X-Ts"),
                "does not sign {body}",
            ),
            (Some("{timestamp}.{body}"), None, "set timestampHeader"),
            (Some("{body"), None, "without its }"),
            (Some("{secret}{body}"), None, "{secret} is unknown"),
            (Some("{header:bad name}{body}"), None, "is unknown"),
        ] {
            let problem = layout(template, ts).problem().unwrap_or_default();
            assert!(problem.contains(says), "{template:?}: {problem}");
        }
        let mut bad_header = layout(None, None);
        bad_header.header = "X Sig".into();
        assert!(bad_header.problem().is_some());
        let long = format!("{{body}}{}", "x".repeat(1020));
        assert!(
            layout(Some(&long), None)
                .problem()
                .unwrap_or_default()
                .contains("template is longer than 1024")
        );
        assert_eq!(layout(Some(&long[..1024]), None).problem(), None);
    }

    #[test]
    fn gitlab_token_is_compared_exactly() {
        let s = Scheme::new(Provider::Gitlab);
        let secrets = [Secret::new(b"tok3n")];
        let ok = headers(&[("X-Gitlab-Token".into(), "tok3n".into())]);
        assert!(s.verify(&ok, b"{}", &secrets, 0).is_ok());
        for bad in ["tok3", "tok3n ", "TOK3N", "x"] {
            let h = headers(&[("X-Gitlab-Token".into(), bad.into())]);
            assert_eq!(
                s.verify(&h, b"{}", &secrets, 0),
                Err(Rejection::BadSignature),
                "{bad}"
            );
        }
    }

    #[test]
    fn malformed_headers_are_refused_not_repaired() {
        let s = Scheme::new(Provider::Github);
        let secrets = [Secret::new(b"k")];
        let sig = hex::encode(hmac(Algorithm::Sha256, b"k", &[b"body"]));
        let cases = [
            format!("sha1={sig}"),
            format!("sha256= {sig}"),
            format!("sha256={sig}00"),
            format!("sha256=0x{sig}"),
            "sha256=".to_string(),
            format!("sha256={}", &sig[..63]),
        ];
        for c in cases {
            let h = headers(&[("X-Hub-Signature-256".into(), c.clone())]);
            assert!(s.verify(&h, b"body", &secrets, 0).is_err(), "{c}");
        }
        let twice = headers(&[
            ("X-Hub-Signature-256".into(), format!("sha256={sig}")),
            ("X-Hub-Signature-256".into(), format!("sha256={sig}")),
        ]);
        assert!(matches!(
            s.verify(&twice, b"body", &secrets, 0),
            Err(Rejection::MalformedHeader { .. })
        ));
        let good = headers(&[("X-Hub-Signature-256".into(), format!("sha256={sig}"))]);
        assert!(s.verify(&good, b"body", &secrets, 0).is_ok());
        assert_eq!(s.verify(&good, b"body", &[], 0), Err(Rejection::NoSecret));
    }

    #[test]
    fn opal_timestamp_must_be_plain_seconds() {
        let s = Scheme::new(Provider::Opal);
        let secrets = [Secret::new(b"k")];
        for ts in ["", "-5", "1.5", "1e9", " 100", "0x10"] {
            let sig = hex::encode(hmac(
                Algorithm::Sha256,
                b"k",
                &[format!("v0:{ts}:").as_bytes(), b"b"],
            ));
            let h = headers(&[
                ("X-Opal-Signature".into(), sig),
                ("X-Opal-Request-Timestamp".into(), ts.into()),
            ]);
            assert!(
                matches!(
                    s.verify(&h, b"b", &secrets, 100),
                    Err(Rejection::MalformedHeader { .. }) | Err(Rejection::MissingHeader(_))
                ),
                "{ts:?}"
            );
        }
    }

    /// Headers `provider` signs a delivery with at `ts`, for the body `{}`.
    fn signed_headers(scheme: &Scheme, ts: i64) -> HeaderMap {
        let extra = [("X-Acme-Id".to_string(), "abc".to_string())];
        let mut signed = sign(scheme, b"k", b"{}", ts, "msg_1", &extra);
        signed.extend(extra);
        headers(&signed)
    }

    fn every_scheme() -> Vec<Scheme> {
        Provider::ALL
            .into_iter()
            .filter(|p| *p != Provider::GenericHmac)
            .map(Scheme::new)
            .chain([
                generic(None, false),
                generic(Some("{timestamp}.{body}"), true),
            ])
            .collect()
    }

    #[test]
    fn precheck_passes_what_a_sender_signs_whatever_the_body() {
        for scheme in every_scheme() {
            let h = signed_headers(&scheme, 1_000);
            assert_eq!(scheme.precheck(&h, 1_000), Ok(()), "{:?}", scheme.provider);
            // Within the window on either side, and for schemes without a timestamp, any
            // time.
            assert_eq!(scheme.precheck(&h, 1_300), Ok(()), "{:?}", scheme.provider);
            assert_eq!(scheme.precheck(&h, 700), Ok(()), "{:?}", scheme.provider);
        }
    }

    #[test]
    fn precheck_refuses_a_stale_timestamp_where_the_scheme_signs_one() {
        let stale = |scheme: &Scheme, now| scheme.precheck(&signed_headers(scheme, 1_000), now);
        for scheme in every_scheme() {
            let timed = matches!(
                scheme.provider,
                Provider::Opal | Provider::Slack | Provider::Stripe | Provider::StandardWebhooks
            ) || scheme
                .generic
                .as_ref()
                .is_some_and(|g| g.timestamp_header.is_some());
            for now in [1_301, 699, 1_000_000] {
                let expected = match timed {
                    true => Err(Rejection::StaleTimestamp {
                        tolerance_secs: DEFAULT_TOLERANCE_SECS,
                    }),
                    false => Ok(()),
                };
                assert_eq!(
                    stale(&scheme, now),
                    expected,
                    "{:?} at {now}",
                    scheme.provider
                );
            }
        }
        let narrow = Scheme {
            tolerance_secs: 30,
            ..Scheme::new(Provider::Stripe)
        };
        assert!(stale(&narrow, 1_031).is_err());
        assert_eq!(stale(&narrow, 1_030), Ok(()));
    }

    #[test]
    fn precheck_refuses_missing_and_malformed_headers_as_verify_does() {
        let secrets = [Secret::new(b"k")];
        for scheme in every_scheme() {
            let none = HeaderMap::new();
            let refused = scheme.precheck(&none, 1_000);
            assert!(
                matches!(refused, Err(Rejection::MissingHeader(_))),
                "{:?}: {refused:?}",
                scheme.provider
            );
            assert_eq!(
                refused,
                scheme.verify(&none, b"{}", &secrets, 1_000).map(|_| ())
            );
            // Each header sent, twice: what precheck refuses, verify refuses alike; what it
            // lets through, verify does not refuse for its headers.
            let good = signed_headers(&scheme, 1_000);
            let mut refused_some = false;
            for name in good.keys() {
                let mut twice = good.clone();
                twice.append(name, good[name].clone());
                let full = scheme.verify(&twice, b"{}", &secrets, 1_000).map(|_| ());
                match scheme.precheck(&twice, 1_000) {
                    Err(r) => {
                        refused_some = true;
                        assert_eq!(full, Err(r), "{:?}: {name}", scheme.provider)
                    }
                    Ok(()) => assert!(
                        !matches!(
                            full,
                            Err(Rejection::MissingHeader(_)
                                | Rejection::MalformedHeader { .. }
                                | Rejection::StaleTimestamp { .. })
                        ),
                        "{:?}: {name}: {full:?}",
                        scheme.provider
                    ),
                }
            }
            assert!(refused_some, "{:?}", scheme.provider);
        }
        let github = Scheme::new(Provider::Github);
        for bad in ["sha1=00", "sha256=zz", "sha256=", "0x00"] {
            let h = headers(&[("X-Hub-Signature-256".into(), bad.into())]);
            assert!(
                matches!(
                    github.precheck(&h, 0),
                    Err(Rejection::MalformedHeader { .. })
                ),
                "{bad}"
            );
        }
        let opal = Scheme::new(Provider::Opal);
        let h = headers(&[
            ("X-Opal-Signature".into(), "ab".repeat(32)),
            ("X-Opal-Request-Timestamp".into(), "1e9".into()),
        ]);
        assert!(matches!(
            opal.precheck(&h, 0),
            Err(Rejection::MalformedHeader { .. })
        ));
        let stripe = Scheme::new(Provider::Stripe);
        let h = headers(&[("Stripe-Signature".into(), "v1=00".into())]);
        assert!(matches!(
            stripe.precheck(&h, 0),
            Err(Rejection::MalformedHeader { .. })
        ));
    }

    #[test]
    fn rejection_messages_carry_no_secret_or_signature() {
        let s = Scheme::new(Provider::Membrane);
        let secrets = [Secret::new(b"super-secret-value")];
        let h = headers(&[("X-Signature".into(), "ab".repeat(32))]);
        let err = s.verify(&h, b"{}", &secrets, 0).unwrap_err().to_string();
        assert_eq!(err, "signature does not match");
    }
}
