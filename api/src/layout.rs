//! The layout of a `generic-hmac` sender's signature: which header, which hash, which
//! encoding and what is signed. Types and their checks only; verification is the
//! receiver's.

use serde::{Deserialize, Serialize};

/// Whether `name` is a valid HTTP header name (RFC 9110 `token`: letters, digits and
/// ``!#$%&'*+-.^_`|~``). Written out rather than taken from the `http` crate so that this
/// crate stays free of HTTP libraries; the receiver parses the same names with `http`.
pub fn is_header_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

/// HMAC hash functions.
#[derive(Serialize, Deserialize, schemars::JsonSchema, Clone, Copy, Debug, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Algorithm {
    Sha256,
    Sha512,
    /// Only when asked for by name: SHA-1 HMAC is still sound, but senders should move on.
    Sha1,
}

/// How a signature is written in its header.
#[derive(Serialize, Deserialize, schemars::JsonSchema, Clone, Copy, Debug, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Encoding {
    Hex,
    Base64,
}

/// A sender that signs with an HMAC in some other layout.
#[derive(Serialize, Deserialize, schemars::JsonSchema, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct GenericHmac {
    /// The header carrying the signature, e.g. `X-Signature`.
    #[schemars(length(max = 256))]
    pub header: String,
    pub algorithm: Algorithm,
    pub encoding: Encoding,
    /// A prefix before the signature in the header, e.g. `sha256=`.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    #[schemars(length(max = 256))]
    pub prefix: String,
    /// A header carrying the signing time in Unix seconds; when set, deliveries outside the
    /// replay window are refused, and `template` must sign it (`{timestamp}`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 256))]
    pub timestamp_header: Option<String>,
    /// What is signed. `{body}` is the raw body, `{timestamp}` the timestamp header's value,
    /// `{header:Name}` any header's value; it must contain `{body}`. Default `{body}`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 1024))]
    pub template: Option<String>,
    /// Also accept a signature over `JSON.stringify` of the parsed body in place of
    /// `{body}`, for senders whose code signs `JSON.stringify(req.body)` rather than the
    /// bytes they send. Tried only when the raw body's signature does not match and the
    /// body is JSON; a body that gives an object key twice is then refused (400), and what
    /// is recorded is the form that was verified. Default false.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub accept_json_stringify: bool,
}

impl GenericHmac {
    /// What is wrong with this layout, naming the field, if anything. A template must sign
    /// the body: a signature that does not cover it would let anyone who saw one delivery
    /// send any body.
    pub fn problem(&self) -> Option<String> {
        // The bounds of the Webhook CRD's schema.
        let too_long = [
            ("header", self.header.len(), 256),
            ("prefix", self.prefix.len(), 256),
            (
                "timestampHeader",
                self.timestamp_header.as_ref().map_or(0, String::len),
                256,
            ),
            (
                "template",
                self.template.as_ref().map_or(0, String::len),
                1024,
            ),
        ]
        .into_iter()
        .find(|(_, len, max)| len > max);
        if let Some((field, _, max)) = too_long {
            return Some(format!("{field} is longer than {max} characters"));
        }
        let valid_header = is_header_name;
        if self.header.trim().is_empty() {
            return Some("header is empty; name the signature header".into());
        }
        if !valid_header(&self.header) {
            return Some(format!(
                "header {:?} is not a valid header name",
                self.header
            ));
        }
        if let Some(th) = &self.timestamp_header
            && !valid_header(th)
        {
            return Some(format!("timestampHeader {th:?} is not a valid header name"));
        }
        let template = self.template.as_deref().unwrap_or("{body}");
        // A timestamp checked against the replay window but not signed stops nothing: a
        // captured delivery replays with a fresh header.
        if self.timestamp_header.is_some() && !template.contains("{timestamp}") {
            return Some(
                "timestampHeader is not signed: put {timestamp} in template (e.g. \
                 {timestamp}.{body}), or remove timestampHeader"
                    .into(),
            );
        }
        let mut signs_body = false;
        let mut rest = template;
        while let Some(start) = rest.find('{') {
            let Some(end) = rest[start..].find('}').map(|e| start + e) else {
                return Some("template has a { without its }".into());
            };
            match &rest[start + 1..end] {
                "body" => signs_body = true,
                "timestamp" if self.timestamp_header.is_none() => {
                    return Some("template uses {timestamp}; set timestampHeader".into());
                }
                "timestamp" => {}
                t if t.strip_prefix("header:").is_some_and(valid_header) => {}
                t => {
                    return Some(format!(
                        "template placeholder {{{t}}} is unknown; use {{body}}, {{timestamp}} or {{header:Name}}"
                    ));
                }
            }
            rest = &rest[end + 1..];
        }
        (!signs_body)
            .then(|| "template does not sign {body}; a signature must cover the body".into())
    }
}
