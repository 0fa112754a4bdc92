//! Signing secrets, read from files (mounted Secrets) and re-read while running so that a
//! rotated Secret reaches a running receiver through the kubelet's volume refresh.

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use crate::error::{Error, Result};

/// One signing secret. Its bytes never reach `Debug`, logs or responses.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(Arc<[u8]>);

impl Secret {
    pub fn new(bytes: &[u8]) -> Self {
        Secret(Arc::from(bytes))
    }

    pub fn expose(&self) -> &[u8] {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Secret(<{} bytes redacted>)", self.0.len())
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
        *state = next;
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
