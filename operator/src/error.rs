/// Everything that can go wrong in the operator. Messages never carry a secret value.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("Kubernetes API: {0}")]
    Kube(#[from] kube::Error),
    #[error("object has no {0}")]
    MissingObjectKey(&'static str),
    #[error("cannot render the receiver config: {0}")]
    Render(String),
    #[error("cannot generate a signing secret: the system random source failed")]
    Random,
    #[error("leader election: {0}")]
    Lease(#[from] kube_lease_manager::LeaseManagerError),
    #[error("cannot serialize: {0}")]
    Serialize(#[from] serde_json::Error),
    #[error("cannot render YAML: {0}")]
    Yaml(String),
    #[error("metrics server: {0}")]
    Http(#[from] std::io::Error),
    /// The object of a child's name exists and is not the owner's: left as it is (see
    /// `apply`).
    #[error("{0}")]
    NotOwned(NotOwned),
}

/// An object of a child's name that the operator did not create for this owner.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NotOwned {
    pub kind: String,
    pub name: String,
    /// Its controller (`Kind/name`), if it has one.
    pub controller: Option<String>,
}

impl std::fmt::Display for NotOwned {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let NotOwned { kind, name, .. } = self;
        match &self.controller {
            Some(c) => write!(f, "{kind} {name:?} exists and is controlled by {c}"),
            None => write!(
                f,
                "{kind} {name:?} exists and was not created by hookwarden for it"
            ),
        }
    }
}

impl Error {
    /// A short, stable label for metrics.
    pub fn metric_label(&self) -> &'static str {
        match self {
            Error::Kube(_) => "kube",
            Error::MissingObjectKey(_) => "missing_object_key",
            Error::Render(_) => "render",
            Error::Random => "random",
            Error::Lease(_) => "lease",
            Error::Serialize(_) => "serialize",
            Error::Yaml(_) => "yaml",
            Error::Http(_) => "http",
            Error::NotOwned(_) => "not_owned",
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
