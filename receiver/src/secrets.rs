//! Signing secrets, read from files (mounted Secrets) and re-read while running so that a
//! rotated Secret reaches a running receiver through the kubelet's volume refresh; or, in
//! a pool that reads Secrets through the API, handed to the store as they change
//! ([`SecretStore::pushed`]).

use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock, RwLock};
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use ed25519_dalek::{SigningKey, VerifyingKey};
use hmac::{Hmac, KeyInit};
use sha2::Sha256;

use crate::config::Provider;
use crate::error::{Error, Result};

/// The key of a Standard Webhooks secret: base64 after an optional `whsec_`.
pub(crate) fn whsec_key(secret: &[u8]) -> Option<Vec<u8>> {
    let text = std::str::from_utf8(secret).ok()?;
    B64.decode(text.strip_prefix("whsec_").unwrap_or(text)).ok()
}

/// The key of a Standard Webhooks public key: `whpk_` + base64 of the 32 bytes of an
/// ed25519 public key.
pub(crate) fn whpk_key(secret: &[u8]) -> Option<VerifyingKey> {
    let encoded = secret.strip_prefix(b"whpk_")?;
    let bytes: [u8; 32] = B64.decode(encoded).ok()?.try_into().ok()?;
    VerifyingKey::from_bytes(&bytes).ok()
}

/// The key of a Standard Webhooks secret key: `whsk_` + base64 of the ed25519 seed (32
/// bytes), or of the seed and its public key (64 bytes, as libsodium keeps a secret key;
/// the public half must then be the seed's).
pub fn whsk_key(secret: &[u8]) -> Option<SigningKey> {
    let bytes = B64.decode(secret.strip_prefix(b"whsk_")?).ok()?;
    let seed: [u8; 32] = bytes.get(..32)?.try_into().ok()?;
    let key = SigningKey::from_bytes(&seed);
    match bytes.len() {
        32 => Some(key),
        64 if bytes[32..] == key.verifying_key().to_bytes() => Some(key),
        _ => None,
    }
}

/// The `whpk_` form of the public key of `key`.
pub fn whpk_of(key: &SigningKey) -> String {
    format!("whpk_{}", B64.encode(key.verifying_key().to_bytes()))
}

/// The `whsk_` form of `key` (its seed).
pub fn whsk_of(key: &SigningKey) -> String {
    format!("whsk_{}", B64.encode(key.to_bytes()))
}

/// What is wrong with `secret` as a signing secret of a `provider` Webhook, if anything.
/// The message names the kind of key, never its bytes.
pub fn problem(provider: Provider, secret: &[u8]) -> Option<&'static str> {
    if provider != Provider::StandardWebhooks {
        return None;
    }
    if secret.starts_with(b"whsk_") {
        return Some(
            "holds a Standard Webhooks secret key (whsk_), which only the sender should hold; \
             give the receiver its public key (whpk_)",
        );
    }
    if secret.starts_with(b"whpk_") && whpk_key(secret).is_none() {
        return Some("holds a whpk_ key that is not base64 of an ed25519 public key (32 bytes)");
    }
    None
}

/// One signing secret. Its bytes never reach `Debug`, logs or responses.
///
/// It also keeps its HMAC-SHA256 key state, prepared once: most senders sign with
/// HMAC-SHA256, and preparing the key is a quarter of the cost of checking a small delivery.
#[derive(Clone)]
pub struct Secret(Arc<SecretInner>);

struct SecretInner {
    bytes: Box<[u8]>,
    /// HMAC-SHA256 keyed with the bytes.
    sha256: OnceLock<Hmac<Sha256>>,
    /// HMAC-SHA256 keyed with the `whsec_` base64 key the bytes spell (Standard Webhooks);
    /// `None` when they spell none.
    whsec_sha256: OnceLock<Option<Hmac<Sha256>>>,
    /// The ed25519 public key the bytes spell as `whpk_` (Standard Webhooks' asymmetric
    /// signatures); `None` when they spell none.
    whpk: OnceLock<Option<VerifyingKey>>,
}

impl Secret {
    pub fn new(bytes: &[u8]) -> Self {
        Secret(Arc::new(SecretInner {
            bytes: bytes.into(),
            sha256: OnceLock::new(),
            whsec_sha256: OnceLock::new(),
            whpk: OnceLock::new(),
        }))
    }

    /// The ed25519 public key this secret is (`whpk_...`), if it is one.
    pub fn ed25519(&self) -> Option<&VerifyingKey> {
        self.0.whpk.get_or_init(|| whpk_key(&self.0.bytes)).as_ref()
    }

    pub fn expose(&self) -> &[u8] {
        &self.0.bytes
    }

    /// HMAC-SHA256 keyed with this secret, ready for the message; with `whsec`, keyed with
    /// the Standard Webhooks key it spells instead (`None` when it spells none).
    pub fn hmac_sha256(&self, whsec: bool) -> Option<Hmac<Sha256>> {
        let key = |k: &[u8]| Hmac::<Sha256>::new_from_slice(k).ok();
        if whsec {
            self.0
                .whsec_sha256
                .get_or_init(|| whsec_key(&self.0.bytes).as_deref().and_then(key))
                .clone()
        } else {
            // HMAC takes keys of any length, so this never fails.
            self.0
                .sha256
                .get_or_init(|| {
                    key(&self.0.bytes).unwrap_or_else(|| unreachable!("HMAC keys of any length"))
                })
                .clone()
                .into()
        }
    }
}

impl PartialEq for Secret {
    fn eq(&self, other: &Self) -> bool {
        self.0.bytes == other.0.bytes
    }
}

impl Eq for Secret {}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Secret(<{} bytes redacted>)", self.0.bytes.len())
    }
}

/// Reads one secret file. Surrounding whitespace (a trailing newline from `echo`) is not
/// part of the secret; an empty file is an error, never an empty key.
pub fn read_secret_file(path: &Path) -> Result<Secret> {
    let bytes = std::fs::read(path).map_err(|e| Error::SecretFile {
        path: path.to_owned(),
        reason: e.kind().to_string(),
    })?;
    let trimmed = bytes.trim_ascii();
    if trimmed.is_empty() {
        return Err(Error::SecretFile {
            path: path.to_owned(),
            reason: "the file is empty".into(),
        });
    }
    Ok(Secret::new(trimmed))
}

/// The state of the secrets as last read: either every file read, or why not.
#[derive(Debug, Clone)]
pub enum SecretState {
    /// Shared, so that a request takes the current secrets without copying them.
    Loaded(Arc<[Secret]>),
    Unavailable(String),
}

/// The active secrets, shared by request handlers and refreshed in the background.
#[derive(Clone, Debug)]
pub struct SecretStore {
    provider: Provider,
    /// The files re-read by [`SecretStore::reload`]; `None` for a store whose secrets are
    /// handed to it ([`SecretStore::set`]).
    files: Option<Arc<[PathBuf]>>,
    state: Arc<RwLock<SecretState>>,
}

impl SecretStore {
    /// Reads every file once. A missing file is not fatal: the receiver starts unready
    /// and says why, and becomes ready once the file appears.
    /// Each secret must suit `provider` (see `problem`).
    pub fn new(provider: Provider, files: Vec<PathBuf>) -> Self {
        let store = SecretStore {
            provider,
            files: Some(files.into()),
            state: Arc::new(RwLock::new(SecretState::Unavailable("not read yet".into()))),
        };
        store.reload();
        store
    }

    /// A store whose secrets are handed to it ([`SecretStore::set`]), unavailable until
    /// then.
    pub fn pushed(provider: Provider) -> Self {
        SecretStore {
            provider,
            files: None,
            state: Arc::new(RwLock::new(SecretState::Unavailable("not read yet".into()))),
        }
    }

    /// Takes `secrets` (each with where it came from, for messages), or why there are none;
    /// each must suit the provider (see `problem`). Returns whether the state changed.
    pub fn set(&self, secrets: std::result::Result<Vec<(String, Secret)>, String>) -> bool {
        let next = match secrets.and_then(|secrets| {
            secrets
                .into_iter()
                .map(
                    |(from, secret)| match problem(self.provider, secret.expose()) {
                        Some(reason) => Err(format!("{from} {reason}")),
                        None => Ok(secret),
                    },
                )
                .collect::<std::result::Result<Vec<_>, String>>()
        }) {
            Ok(secrets) => SecretState::Loaded(Arc::<[Secret]>::from(secrets)),
            Err(why) => SecretState::Unavailable(why),
        };
        self.replace(next)
    }

    /// Re-reads every file; returns whether the state changed. A store whose secrets are
    /// handed to it has nothing to re-read.
    pub fn reload(&self) -> bool {
        let Some(files) = &self.files else {
            return false;
        };
        let next = match files
            .iter()
            .map(|p| {
                let secret = read_secret_file(p)?;
                match problem(self.provider, secret.expose()) {
                    Some(reason) => Err(Error::SecretFile {
                        path: p.clone(),
                        reason: reason.into(),
                    }),
                    None => Ok(secret),
                }
            })
            .collect::<Result<Vec<_>>>()
        {
            Ok(secrets) => SecretState::Loaded(Arc::<[Secret]>::from(secrets)),
            Err(e) => SecretState::Unavailable(e.to_string()),
        };
        self.replace(next)
    }

    fn replace(&self, next: SecretState) -> bool {
        let mut state = match self.state.write() {
            Ok(guard) => guard,
            Err(poisoned) => poisoned.into_inner(),
        };
        let changed = !same_state(&state, &next);
        if changed {
            *state = next;
        }
        changed
    }

    pub fn current(&self) -> SecretState {
        match self.state.read() {
            Ok(guard) => guard.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    /// Re-reads the files every `period`, logging transitions (never the secrets).
    pub async fn refresh_every(self, period: Duration) {
        let mut tick = tokio::time::interval(period);
        loop {
            tick.tick().await;
            if self.reload() {
                match self.current() {
                    SecretState::Loaded(s) => {
                        tracing::info!(secrets = s.len(), "signing secrets loaded")
                    }
                    SecretState::Unavailable(reason) => {
                        tracing::warn!(%reason, "signing secrets unavailable; refusing deliveries")
                    }
                }
            }
        }
    }
}

fn same_state(a: &SecretState, b: &SecretState) -> bool {
    match (a, b) {
        (SecretState::Loaded(x), SecretState::Loaded(y)) => x == y,
        (SecretState::Unavailable(x), SecretState::Unavailable(y)) => x == y,
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trims_and_rejects_empty() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("s");
        std::fs::write(&p, "topsecret\n").unwrap();
        assert_eq!(read_secret_file(&p).unwrap().expose(), b"topsecret");
        std::fs::write(&p, "  \n").unwrap();
        let err = read_secret_file(&p).unwrap_err().to_string();
        assert!(err.contains("empty"), "{err}");
    }

    #[test]
    fn debug_never_shows_the_secret() {
        let s = Secret::new(b"hunter2");
        assert!(!format!("{s:?}").contains("hunter2"));
    }

    #[test]
    fn store_follows_the_files() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("s");
        let store = SecretStore::new(Provider::Membrane, vec![p.clone()]);
        assert!(matches!(store.current(), SecretState::Unavailable(r) if r.contains("not found")));
        std::fs::write(&p, "one").unwrap();
        assert!(store.reload());
        assert!(matches!(store.current(), SecretState::Loaded(s) if s[0].expose() == b"one"));
        assert!(!store.reload());
        std::fs::remove_file(&p).unwrap();
        assert!(store.reload());
        assert!(matches!(store.current(), SecretState::Unavailable(_)));
    }

    #[test]
    fn a_pushed_store_takes_what_it_is_given_and_checks_it() {
        let store = SecretStore::pushed(Provider::StandardWebhooks);
        assert!(matches!(store.current(), SecretState::Unavailable(r) if r == "not read yet"));
        assert!(!store.reload());
        let key = SigningKey::from_bytes(&[3; 32]);
        let public = Secret::new(whpk_of(&key).as_bytes());
        assert!(store.set(Ok(vec![("Secret a key k".into(), public.clone())])));
        assert!(matches!(store.current(), SecretState::Loaded(s) if s[..] == [public.clone()]));
        assert!(!store.set(Ok(vec![("Secret a key k".into(), public)])));
        let private = whsk_of(&key);
        assert!(store.set(Ok(vec![(
            "Secret a key k".into(),
            Secret::new(private.as_bytes())
        )])));
        let SecretState::Unavailable(why) = store.current() else {
            panic!("a whsk_ key was taken");
        };
        assert!(
            why.starts_with("Secret a key k holds") && !why.contains(&private[5..]),
            "{why}"
        );
        assert!(store.set(Err("Secret a not found".into())));
        assert!(
            matches!(store.current(), SecretState::Unavailable(r) if r == "Secret a not found")
        );
    }

    #[test]
    fn a_standard_webhooks_receiver_takes_public_keys_not_secret_keys() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("s");
        let key = SigningKey::from_bytes(&[7; 32]);
        let store = |text: &str| {
            std::fs::write(&p, text).unwrap();
            SecretStore::new(Provider::StandardWebhooks, vec![p.clone()]).current()
        };
        let public = whpk_of(&key);
        assert!(
            matches!(store(&public), SecretState::Loaded(s) if s[0].ed25519() == Some(&key.verifying_key()))
        );
        assert!(
            matches!(store("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"), SecretState::Loaded(s) if s[0].ed25519().is_none())
        );
        let secret = whsk_of(&key);
        let SecretState::Unavailable(why) = store(&secret) else {
            panic!("a whsk_ key was taken");
        };
        assert!(
            why.contains("whpk_") && !why.contains(&secret[5..]),
            "{why}"
        );
        let SecretState::Unavailable(why) = store("whpk_AAAA") else {
            panic!("a short whpk_ key was taken");
        };
        assert!(why.contains("32 bytes"), "{why}");
        // Other schemes take any bytes.
        std::fs::write(&p, &secret).unwrap();
        assert!(matches!(
            SecretStore::new(Provider::Github, vec![p.clone()]).current(),
            SecretState::Loaded(_)
        ));
    }

    #[test]
    fn secret_keys_are_a_seed_or_a_seed_and_its_public_key() {
        let key = SigningKey::from_bytes(&[9; 32]);
        let seed = whsk_of(&key);
        assert_eq!(
            whsk_key(seed.as_bytes()).map(|k| k.to_bytes()),
            Some([9; 32])
        );
        let mut pair = key.to_bytes().to_vec();
        pair.extend(key.verifying_key().to_bytes());
        let pair = format!("whsk_{}", B64.encode(&pair));
        assert_eq!(
            whsk_key(pair.as_bytes()).map(|k| k.to_bytes()),
            Some([9; 32])
        );
        let mut wrong = key.to_bytes().to_vec();
        wrong.extend([0; 32]);
        assert!(whsk_key(format!("whsk_{}", B64.encode(&wrong)).as_bytes()).is_none());
        assert!(whsk_key(b"whsk_AAAA").is_none());
        assert!(whpk_key(whpk_of(&key).as_bytes()).is_some());
    }
}
