//! Generating signing secrets.

use base64::Engine;
use hookwarden_api::config::Provider;

use crate::error::{Error, Result};

/// Bytes of randomness in a generated signing secret.
pub const SECRET_BYTES: usize = 32;

/// A new random signing secret in the form `provider`'s senders expect: `whsec_` and
/// base64 for Standard Webhooks, lowercase hex otherwise.
pub fn generate(provider: Provider) -> Result<String> {
    let mut bytes = [0u8; SECRET_BYTES];
    getrandom::fill(&mut bytes).map_err(|_| Error::Random)?;
    Ok(encode(provider, &bytes))
}

fn encode(provider: Provider, bytes: &[u8]) -> String {
    match provider {
        Provider::StandardWebhooks => format!(
            "whsec_{}",
            base64::engine::general_purpose::STANDARD.encode(bytes)
        ),
        _ => hex::encode(bytes),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_are_long_and_distinct() {
        let a = generate(Provider::Opal).unwrap();
        let b = generate(Provider::Opal).unwrap();
        assert_eq!(a.len(), 2 * SECRET_BYTES);
        assert!(a.chars().all(|c| c.is_ascii_hexdigit()));
        assert_ne!(a, b);
    }

    #[test]
    fn standard_webhooks_secrets_use_whsec() {
        let s = generate(Provider::StandardWebhooks).unwrap();
        let raw = s.strip_prefix("whsec_").unwrap();
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(raw)
            .unwrap();
        assert_eq!(decoded.len(), SECRET_BYTES);
    }
}
