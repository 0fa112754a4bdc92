//! Signing secrets, read from files (mounted Secrets) and re-read while running so that a
//! rotated Secret reaches a running receiver through the kubelet's volume refresh.

use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock, RwLock};
use std::time::Duration;

use hmac::{Hmac, KeyInit};
use sha2::Sha256;

use crate::error::{Error, Result};

/// The key of a Standard Webhooks secret: base64 after an optional `whsec_`.
pub(crate) fn whsec_key(secret: &[u8]) -> Option<Vec<u8>> {
    use base64::Engine;
    let text = std::str::from_utf8(secret).ok()?;
    base64::engine::general_purpose::STANDARD
        .decode(text.strip_prefix("whsec_").unwrap_or(text))
        .ok()
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
}

impl Secret {
    pub fn new(bytes: &[u8]) -> Self {
        Secret(Arc::new(SecretInner {
            bytes: bytes.into(),
            sha256: OnceLock::new(),
            whsec_sha256: OnceLock::new(),
        }))
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
    files: Arc<[PathBuf]>,
    state: Arc<RwLock<SecretState>>,
}

impl SecretStore {
    /// Reads every file once. A missing file is not fatal: the receiver starts unready
    /// and says why, and becomes ready once the file appears.
    pub fn new(files: Vec<PathBuf>) -> Self {
        let store = SecretStore {
            files: files.into(),
            state: Arc::new(RwLock::new(SecretState::Unavailable("not read yet".into()))),
        };
        store.reload();
        store
    }

    /// Re-reads every file; returns whether the state changed.
    pub fn reload(&self) -> bool {
        let next = match self
            .files
            .iter()
            .map(|p| read_secret_file(p))
            .collect::<Result<Vec<_>>>()
        {
            Ok(secrets) => SecretState::Loaded(Arc::<[Secret]>::from(secrets)),
            Err(e) => SecretState::Unavailable(e.to_string()),
        };
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
        let store = SecretStore::new(vec![p.clone()]);
        assert!(matches!(store.current(), SecretState::Unavailable(r) if r.contains("not found")));
        std::fs::write(&p, "one").unwrap();
        assert!(store.reload());
        assert!(matches!(store.current(), SecretState::Loaded(s) if s[0].expose() == b"one"));
        assert!(!store.reload());
        std::fs::remove_file(&p).unwrap();
        assert!(store.reload());
        assert!(matches!(store.current(), SecretState::Unavailable(_)));
    }
}
