use std::io::Read;
use std::path::PathBuf;

use anyhow::Context as _;
use clap::{Args, Parser, Subcommand};
use hookwarden_receiver::config::{CONFIG_FILE_NAME, Provider, ReceiverConfig};
use hookwarden_receiver::secrets::{read_secret_file, whpk_of, whsk_of};
use hookwarden_receiver::signature::{GenericHmac, Scheme, sign};
use hookwarden_receiver::telemetry::{self, LogFormat};

#[derive(Parser)]
#[command(
    name = "hookwarden-receiver",
    version,
    about = "Verifies signed webhook deliveries"
)]
struct Cli {
    /// Log format.
    #[arg(
        long,
        global = true,
        env = "HOOKWARDEN_LOG_FORMAT",
        value_enum,
        default_value_t
    )]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve deliveries as the config file says.
    Run {
        /// The receiver config file (as rendered by the operator).
        #[arg(long, env = "HOOKWARDEN_CONFIG", default_value_os_t = PathBuf::from(hookwarden_api::names::CONFIG_DIR).join(CONFIG_FILE_NAME))]
        config: PathBuf,
        /// This pod's name (in a cluster).
        #[arg(long, env = "POD_NAME")]
        pod_name: Option<String>,
        #[command(flatten)]
        election: ElectionArgs,
        #[command(flatten)]
        budget: BudgetArgs,
    },
    /// Serve many Webhooks as the pool's configuration says, following its changes without
    /// a restart: in a cluster, the ConfigMap `--config-map` (key `pool.yaml`) and the
    /// Secrets it names, watched through the API; outside one, `--config FILE` and
    /// `--secrets-dir DIR` (`DIR/<secret>/<key>`).
    Pool(PoolArgs),
    /// Print the headers a sender would set for the body on stdin.
    Sign(SignArgs),
    /// Sign a body as a sender would and POST it to URL; exits non-zero unless answered 2xx.
    Send {
        /// Where to deliver, e.g. http://10.96.12.34/opal.
        url: String,
        #[command(flatten)]
        sign: SignArgs,
        /// Read the body from this file instead of stdin.
        #[arg(long)]
        body_file: Option<PathBuf>,
        /// Content-Type of the body.
        #[arg(long, default_value = "application/json")]
        content_type: String,
    },
    /// Make a Standard Webhooks ed25519 key pair: writes the secret key (`whsk_`, for the
    /// sender and `sign`) to a new file and prints the public key (`whpk_`, for the
    /// receiver's Secret).
    Keypair {
        /// The file to create for the secret key (mode 0600; an existing file is kept).
        #[arg(long)]
        secret_file: PathBuf,
    },
}

/// The election of the replica that writes the ConfigMap sinks (in a cluster; the operator
/// passes it).
#[derive(Args)]
struct ElectionArgs {
    /// The receiver Deployment whose replicas elect the writer of their ConfigMap sinks,
    /// on its Lease `<deployment>-writer`; the others hand it their deliveries to Webhooks
    /// with a ConfigMap sink, at its address among the endpoints of the Service of the same
    /// name.
    #[arg(long)]
    writer_election: Option<String>,
}

impl ElectionArgs {
    /// The election, if the operator asked for one, of pod `pod` in `namespace`.
    fn election(
        self,
        namespace: &str,
        pod: Option<String>,
    ) -> anyhow::Result<Option<hookwarden_receiver::handoff::Election>> {
        let Some(deployment) = self.writer_election else {
            return Ok(None);
        };
        Ok(Some(hookwarden_receiver::handoff::Election {
            namespace: namespace.to_string(),
            deployment,
            pod: pod.ok_or_else(|| {
                anyhow::anyhow!("--writer-election needs --pod-name (or POD_NAME)")
            })?,
        }))
    }
}

/// How many bytes of delivery bodies the pod holds in memory at once, over every Webhook
/// it serves; a delivery past it is answered 503 with `Retry-After: 1`.
#[derive(Args)]
struct BudgetArgs {
    /// The container's memory limit in bytes (the downward API's `resourceFieldRef:
    /// limits.memory`); the budget is a quarter of it. Without it (or
    /// --body-budget-bytes), 32 MiB.
    #[arg(long, env = "HOOKWARDEN_MEMORY_LIMIT_BYTES", value_parser = clap::value_parser!(u64).range(1..))]
    memory_limit_bytes: Option<u64>,
    /// The budget itself, in bytes (wins over --memory-limit-bytes).
    #[arg(long, env = "HOOKWARDEN_BODY_BUDGET_BYTES", value_parser = clap::value_parser!(u64).range(1..))]
    body_budget_bytes: Option<u64>,
}

impl BudgetArgs {
    fn bytes(&self) -> u64 {
        hookwarden_receiver::server::budget_bytes(self.memory_limit_bytes, self.body_budget_bytes)
    }
}

#[derive(Args)]
struct PoolArgs {
    /// The pool's namespace (in a cluster).
    #[arg(long, env = "POD_NAMESPACE")]
    namespace: Option<String>,
    /// The ConfigMap holding the pool's configuration (in a cluster).
    #[arg(long, conflicts_with = "config")]
    config_map: Option<String>,
    /// The ConfigMap this pod reports what it serves into, under its own name (in a
    /// cluster).
    #[arg(long, conflicts_with = "config")]
    served_config_map: Option<String>,
    /// This pod's name: its key in the served ConfigMap (in a cluster).
    #[arg(long, env = "POD_NAME")]
    pod_name: Option<String>,
    /// The pool's configuration file, re-read when it changes (outside a cluster).
    #[arg(long, requires = "secrets_dir")]
    config: Option<PathBuf>,
    /// Where the signing secrets are, as Secret volumes: `DIR/<secret>/<key>` (with
    /// `--config`).
    #[arg(long, requires = "config")]
    secrets_dir: Option<PathBuf>,
    /// Write what is served (the served report, JSON) to this file (with `--config`).
    #[arg(long, requires = "config")]
    served_file: Option<PathBuf>,
    /// Where deliveries and health checks are served.
    #[arg(long, default_value_t = std::net::SocketAddr::from(([0, 0, 0, 0], hookwarden_receiver::config::DEFAULT_PORT)))]
    listen: std::net::SocketAddr,
    /// Where metrics are served.
    #[arg(long, default_value_t = std::net::SocketAddr::from(([0, 0, 0, 0], hookwarden_receiver::config::DEFAULT_METRICS_PORT)))]
    metrics_listen: std::net::SocketAddr,
    #[command(flatten)]
    election: ElectionArgs,
    #[command(flatten)]
    budget: BudgetArgs,
}

impl PoolArgs {
    fn options(self) -> anyhow::Result<hookwarden_receiver::pool::PoolOptions> {
        use hookwarden_receiver::pool::{PoolOptions, Source};
        let election = match &self.namespace {
            Some(namespace) => self.election.election(namespace, self.pod_name.clone())?,
            None => None,
        };
        let source = match (self.config, self.secrets_dir) {
            (Some(config), Some(secrets_dir)) => Source::Files {
                config,
                secrets_dir,
                served_file: self.served_file,
            },
            _ => {
                let missing = |what: &str| {
                    anyhow::anyhow!("pool: {what} is needed (or --config FILE --secrets-dir DIR)")
                };
                Source::Cluster {
                    namespace: self.namespace.ok_or_else(|| missing("--namespace"))?,
                    config_map: self.config_map.ok_or_else(|| missing("--config-map"))?,
                    served_config_map: self
                        .served_config_map
                        .ok_or_else(|| missing("--served-config-map"))?,
                    pod_name: self
                        .pod_name
                        .ok_or_else(|| missing("--pod-name (or POD_NAME)"))?,
                }
            }
        };
        Ok(PoolOptions {
            listen: self.listen,
            metrics_listen: self.metrics_listen,
            election,
            body_budget: self.budget.bytes(),
            ..PoolOptions::new(source)
        })
    }
}

#[derive(Args)]
struct SignArgs {
    /// The sender's scheme: opal, membrane, github, slack, stripe, standard-webhooks, shopify,
    /// gitlab, generic-hmac.
    #[arg(long, value_parser = parse_provider)]
    provider: Provider,
    /// File holding the signing secret (for standard-webhooks, a `whsec_` secret signs
    /// `v1`, a `whsk_` secret key `v1a`).
    #[arg(long)]
    secret_file: PathBuf,
    /// Signing time in Unix seconds (default: now).
    #[arg(long)]
    timestamp: Option<i64>,
    /// Delivery id, for schemes that carry one (default: derived from the time).
    #[arg(long)]
    id: Option<String>,
    /// For generic-hmac: the layout, as YAML or JSON (header, algorithm, encoding, ...).
    #[arg(long)]
    generic_hmac: Option<PathBuf>,
    /// Extra headers, `Name: value`, sent and available to a generic template.
    #[arg(long = "header", value_parser = parse_header)]
    headers: Vec<(String, String)>,
}

fn parse_provider(s: &str) -> Result<Provider, String> {
    Provider::parse(s).ok_or_else(|| {
        let known: Vec<&str> = Provider::ALL.iter().map(|p| p.as_str()).collect();
        format!("unknown provider {s:?}; one of {}", known.join(", "))
    })
}

fn parse_header(s: &str) -> Result<(String, String), String> {
    let (k, v) = s.split_once(':').ok_or("expected `Name: value`")?;
    Ok((k.trim().to_string(), v.trim().to_string()))
}

impl SignArgs {
    fn headers_for(&self, body: &[u8]) -> anyhow::Result<Vec<(String, String)>> {
        let secret = read_secret_file(&self.secret_file)?;
        let generic: Option<GenericHmac> = match &self.generic_hmac {
            Some(path) => {
                let text = std::fs::read_to_string(path)
                    .with_context(|| format!("cannot read {}", path.display()))?;
                Some(serde_saphyr::from_str(&text).context("invalid generic-hmac layout")?)
            }
            None => None,
        };
        if self.provider == Provider::GenericHmac && generic.is_none() {
            anyhow::bail!("--provider generic-hmac needs --generic-hmac FILE");
        }
        let now = self.timestamp.unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_secs() as i64)
                .unwrap_or_default()
        });
        let id = self.id.clone().unwrap_or_else(|| format!("msg_{now}"));
        let scheme = Scheme {
            generic,
            ..Scheme::new(self.provider)
        };
        let mut headers = sign(&scheme, secret.expose(), body, now, &id, &self.headers);
        headers.extend(self.headers.iter().cloned());
        Ok(headers)
    }
}

fn read_body(file: Option<&PathBuf>) -> anyhow::Result<Vec<u8>> {
    match file {
        Some(f) => std::fs::read(f).with_context(|| format!("cannot read {}", f.display())),
        None => {
            let mut body = Vec::new();
            std::io::stdin().read_to_end(&mut body)?;
            Ok(body)
        }
    }
}

/// Creates `path` readable by its owner only, refusing to replace a file.
fn write_new_private(path: &std::path::Path, bytes: &[u8]) -> anyhow::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("cannot create {}", path.display()))?;
    file.write_all(bytes)?;
    Ok(())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Run {
            config,
            pod_name,
            election,
            budget,
        } => {
            let _logs = telemetry::init(cli.log_format, "info");
            let config = ReceiverConfig::load(&config)?;
            let election = election.election(&config.webhook.namespace, pod_name)?;
            hookwarden_receiver::server::serve(config, election, budget.bytes()).await?;
        }
        Command::Pool(args) => {
            let _logs = telemetry::init(cli.log_format, "info");
            let options = args.options()?;
            hookwarden_receiver::pool::run(options, hookwarden_receiver::server::shutdown_signal())
                .await?;
        }
        Command::Sign(args) => {
            let body = read_body(None)?;
            for (k, v) in args.headers_for(&body)? {
                println!("{k}: {v}");
            }
        }
        Command::Keypair { secret_file } => {
            let mut seed = [0u8; 32];
            getrandom::fill(&mut seed).map_err(|e| anyhow::anyhow!("no randomness: {e}"))?;
            let key = ed25519_dalek::SigningKey::from_bytes(&seed);
            write_new_private(&secret_file, whsk_of(&key).as_bytes())?;
            println!("{}", whpk_of(&key));
        }
        Command::Send {
            url,
            sign,
            body_file,
            content_type,
        } => {
            let body = read_body(body_file.as_ref())?;
            let mut headers = sign.headers_for(&body)?;
            headers.push(("Content-Type".into(), content_type));
            let answer = hookwarden_receiver::client::post(&url, &headers, body).await?;
            println!("{} {}", answer.status, answer.body.trim_end());
            if !(200..300).contains(&answer.status) {
                std::process::exit(1);
            }
        }
    }
    Ok(())
}
