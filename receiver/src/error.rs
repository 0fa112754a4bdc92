use std::path::PathBuf;

/// Everything that can go wrong in the receiver.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The config file (the contract with the operator) cannot be read or is invalid.
    #[error(transparent)]
    Contract(#[from] hookwarden_api::Error),
    #[error("invalid receiver config: {0}")]
    Config(String),
    #[error("cannot read secret file {path}: {reason}")]
    SecretFile { path: PathBuf, reason: String },
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        addr: std::net::SocketAddr,
        source: std::io::Error,
    },
    #[error("cannot send: {0}")]
    Send(String),
    #[error("cannot configure a Kubernetes client")]
    KubeClient(#[source] kube::Error),
    #[error("no randomness for this replica's identity in the writer election: {0}")]
    Random(String),
}

impl Error {
    /// A short, stable label for metrics and logs.
    pub fn metric_label(&self) -> &'static str {
        match self {
            Error::Contract(hookwarden_api::Error::ReadConfig { .. }) => "read_config",
            Error::Contract(hookwarden_api::Error::Config(_)) => "config",
            Error::Config(_) => "config",
            Error::SecretFile { .. } => "secret_file",
            Error::Listen { .. } => "listen",
            Error::Send(_) => "send",
            Error::KubeClient(_) => "kube_client",
            Error::Random(_) => "random",
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
