use std::path::PathBuf;

/// What can go wrong reading or writing the contract's files.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot read config file {path}: {source}")]
    ReadConfig {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("invalid receiver config: {0}")]
    Config(String),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
