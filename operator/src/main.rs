use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use anyhow::Context as _;
use clap::{Args, Parser, Subcommand};
use hookwarden_operator::admission::{self, InjectorConfig};
use hookwarden_operator::run;
use hookwarden_operator::runtime::leader::{self, LeaseConfig};
use hookwarden_operator::runtime::metrics::{self, Health, Metrics};
use hookwarden_operator::webhook::children::ReceiverDefaults;
use hookwarden_operator::webhook::controller::Config;
use hookwarden_operator::webhook::guardrails::Guardrails;
use hookwarden_process::telemetry::{self, LogFormat};
use tracing::{error, info};

#[derive(Parser)]
#[command(
    name = "hookwarden-operator",
    version,
    about = "Runs hookwarden receivers for Webhook resources"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Reconcile Webhooks until SIGTERM.
    Run(Box<RunArgs>),
    /// Print a CustomResourceDefinition as YAML: `webhooks` (default) or `receiverpools`.
    Crd {
        #[arg(default_value = "webhooks", value_parser = ["webhooks", "receiverpools"])]
        plural: String,
    },
    /// Print the Webhook API reference as Markdown, generated from the CRD's schema.
    Reference,
}

#[derive(Args)]
struct RunArgs {
    /// Watch only these namespaces, comma-separated (default: all namespaces). The operator
    /// then needs its rights in these namespaces only.
    #[arg(
        long = "namespaces",
        env = "HOOKWARDEN_WATCH_NAMESPACES",
        value_delimiter = ','
    )]
    namespaces: Vec<String>,
    /// The receiver image the operator deploys.
    #[arg(long, env = "HOOKWARDEN_RECEIVER_IMAGE", default_value = concat!("ghcr.io/hookwarden/hookwarden-receiver:", env!("CARGO_PKG_VERSION")))]
    receiver_image: String,
    /// Pull policy of the receiver image.
    #[arg(
        long,
        env = "HOOKWARDEN_RECEIVER_IMAGE_PULL_POLICY",
        default_value = "IfNotPresent"
    )]
    receiver_image_pull_policy: String,
    /// Pull secrets for the receiver image, comma-separated, used for Webhooks that name
    /// none of their own; each must exist in the Webhook's namespace.
    #[arg(
        long,
        env = "HOOKWARDEN_RECEIVER_IMAGE_PULL_SECRETS",
        value_delimiter = ','
    )]
    receiver_image_pull_secrets: Vec<String>,
    /// Receiver images that a Webhook's `spec.receiver.image` or a ReceiverPool's
    /// `spec.image` may name besides `--receiver-image`, comma-separated; a pattern ending
    /// in `*` allows every image with that prefix. Default: none.
    #[arg(
        long,
        env = "HOOKWARDEN_ALLOWED_RECEIVER_IMAGES",
        value_delimiter = ','
    )]
    allowed_receiver_images: Vec<String>,
    /// Ingress annotations a Webhook's `spec.ingress.annotations` may set, comma-separated;
    /// a pattern ending in `*` allows every key with that prefix. Default: none.
    #[arg(
        long,
        env = "HOOKWARDEN_ALLOWED_INGRESS_ANNOTATIONS",
        value_delimiter = ','
    )]
    allowed_ingress_annotations: Vec<String>,
    /// Hosts a `forward` sink of a pooled Webhook may reach besides the Services of its own
    /// namespace, comma-separated; `*.example.com` allows every name under example.com.
    /// Default: none.
    #[arg(long, env = "HOOKWARDEN_ALLOWED_FORWARD_HOSTS", value_delimiter = ',')]
    allowed_forward_hosts: Vec<String>,
    /// Elect a leader among replicas through a Lease (disable only for a single local run).
    #[arg(long, env = "HOOKWARDEN_LEADER_ELECT", default_value_t = true, action = clap::ArgAction::Set)]
    leader_elect: bool,
    /// Name of the leader-election Lease.
    #[arg(long, default_value = "hookwarden-operator")]
    lease_name: String,
    /// The operator's own namespace: its leader-election Lease, admission webhook Service
    /// and certificate Secret.
    #[arg(long, env = "POD_NAMESPACE", default_value = "hookwarden-system")]
    lease_namespace: String,
    /// This replica's identity in the election and in Events.
    #[arg(long, env = "POD_NAME")]
    identity: Option<String>,
    /// Address of /healthz, /readyz and /metrics.
    #[arg(long, env = "HOOKWARDEN_METRICS_ADDR", default_value = "0.0.0.0:8080")]
    metrics_addr: SocketAddr,
    /// Serve the pod admission webhook that injects `spec.sidecar` receivers (every
    /// replica serves it; disable only for a local run without it).
    #[arg(long, env = "HOOKWARDEN_SIDECAR_INJECTOR", default_value_t = true, action = clap::ArgAction::Set)]
    sidecar_injector: bool,
    /// Address of the admission webhook (HTTPS).
    #[arg(long, env = "HOOKWARDEN_INJECTOR_ADDR", default_value = "0.0.0.0:9443")]
    injector_addr: SocketAddr,
    /// The Service, in the operator's namespace, in front of the admission webhook.
    #[arg(long, default_value = "hookwarden-operator-webhook")]
    injector_service: String,
    /// The Secret, in the operator's namespace, the webhook's certificate is kept in.
    #[arg(long, default_value = "hookwarden-operator-webhook-tls")]
    injector_secret: String,
    /// The MutatingWebhookConfiguration the operator writes.
    #[arg(long, default_value = "hookwarden-operator")]
    injector_configuration: String,
    /// A ClusterRole to own that configuration, so that it is deleted with the release.
    #[arg(long)]
    injector_owner: Option<String>,
    /// Days a generated webhook CA and certificate are valid (renewed with a third left).
    #[arg(long, default_value_t = 365)]
    injector_cert_days: u64,
    /// Log format.
    #[arg(long, env = "HOOKWARDEN_LOG_FORMAT", value_enum, default_value_t)]
    log_format: LogFormat,
    /// Log filter: a level (`info`, `debug`, ...) or tracing directives
    /// (`info,hookwarden_operator=debug`). `RUST_LOG` wins when set.
    #[arg(long, env = "HOOKWARDEN_LOG_LEVEL", default_value = "info")]
    log_level: String,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Command::Crd { plural } => {
            match plural.as_str() {
                "receiverpools" => print!("{}", hookwarden_operator::pool_crd_yaml()?),
                _ => print!("{}", hookwarden_operator::crd_yaml()?),
            }
            Ok(())
        }
        Command::Reference => {
            print!("{}", hookwarden_operator::crd_reference()?);
            Ok(())
        }
        Command::Run(args) => run(*args).await,
    }
}

async fn run(args: RunArgs) -> anyhow::Result<()> {
    let filter = format!("{},kube_lease_manager=warn", args.log_level);
    let _logs = telemetry::init(args.log_format, &filter);
    let client = kube::Client::try_default()
        .await
        .context("cannot configure a Kubernetes client")?;
    let identity = args
        .identity
        .clone()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_else(|| "hookwarden-operator".into());

    let metrics = Arc::new(Metrics::default());
    let started = Arc::new(AtomicBool::new(false));
    let injecting = Arc::new(AtomicBool::new(!args.sidecar_injector));
    let health = Health {
        metrics: metrics.clone(),
        started: started.clone(),
        injecting: injecting.clone(),
    };
    let listener = tokio::net::TcpListener::bind(args.metrics_addr)
        .await
        .with_context(|| format!("cannot listen on {}", args.metrics_addr))?;
    tokio::spawn(async move {
        if let Err(error) = axum::serve(listener, metrics::app(health)).await {
            error!(%error, "metrics server stopped");
        }
    });

    client
        .apiserver_version()
        .await
        .context("cannot reach the Kubernetes API server")?;
    started.store(true, Ordering::Relaxed);

    let config = Config {
        namespaces: args
            .namespaces
            .iter()
            .map(|ns| ns.trim().to_string())
            .filter(|ns| !ns.is_empty())
            .collect(),
        receiver: ReceiverDefaults {
            image: args.receiver_image.clone(),
            image_pull_policy: args.receiver_image_pull_policy.clone(),
            image_pull_secrets: args
                .receiver_image_pull_secrets
                .iter()
                .map(|s| s.trim().to_string())
                .filter(|s| !s.is_empty())
                .collect(),
            guardrails: Guardrails {
                images: listed(&args.allowed_receiver_images),
                ingress_annotations: listed(&args.allowed_ingress_annotations),
                forward_hosts: listed(&args.allowed_forward_hosts),
            },
        },
        instance: Some(identity.clone()),
    };

    let mut injector_task = None;
    if args.sidecar_injector {
        let injector = InjectorConfig {
            addr: args.injector_addr,
            service: args.injector_service.clone(),
            namespace: args.lease_namespace.clone(),
            secret: args.injector_secret.clone(),
            configuration: args.injector_configuration.clone(),
            owner: args.injector_owner.clone(),
            validity: std::time::Duration::from_secs(args.injector_cert_days.max(1) * 86_400),
            namespaces: config.namespaces.clone(),
        };
        let (client, defaults, metrics) =
            (client.clone(), config.receiver.clone(), metrics.clone());
        injector_task = Some(tokio::spawn(async move {
            if let Err(error) = admission::run(
                client,
                injector,
                defaults,
                metrics,
                injecting,
                shutdown_signal(),
            )
            .await
            {
                error!(%error, "admission webhook stopped");
            }
        }));
    }

    let result = control(&args, client, config, metrics, identity).await;
    // On SIGTERM, the admission webhook drains before the process ends (not when the
    // Lease was lost: the process restarts at once then).
    if result.is_ok()
        && let Some(task) = injector_task
    {
        let _ = task.await;
    }
    result
}

/// The controller: at once without leader election, else once this replica leads, until
/// SIGTERM or the Lease is lost.
async fn control(
    args: &RunArgs,
    client: kube::Client,
    config: Config,
    metrics: Arc<Metrics>,
    identity: String,
) -> anyhow::Result<()> {
    if !args.leader_elect {
        info!("leader election disabled");
        // The only replica reconciles: it leads, and the metric says so (alerts read it).
        metrics.leader.set(1);
        run::run(client, config, metrics, shutdown_signal()).await;
        return Ok(());
    }

    let lease = LeaseConfig {
        name: args.lease_name.clone(),
        namespace: args.lease_namespace.clone(),
        identity,
    };
    let channel = leader::join(client.clone(), &lease).await?;
    let leading = metrics.leader.clone();
    let term = leader::lead(
        channel,
        &leading,
        |stop| run::run(client, config, metrics, stop),
        shutdown_signal(),
    )
    .await;
    if term != leader::Term::NeverLed {
        // The Lease is being released; give that a moment to land before the process ends,
        // so that another replica takes over at once.
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    }
    match term {
        leader::Term::Shutdown => Ok(()),
        leader::Term::NeverLed => {
            anyhow::bail!("leader election ended before this replica could lead")
        }
        leader::Term::Lost => anyhow::bail!(
            "lost the leader Lease; exiting so that a fresh replica rejoins the election"
        ),
    }
}

async fn shutdown_signal() {
    hookwarden_process::shutdown_signal().await;
    info!("shutdown requested");
}

/// A comma-separated list's entries, trimmed, without empty ones.
fn listed(values: &[String]) -> Vec<String> {
    values
        .iter()
        .map(|v| v.trim().to_string())
        .filter(|v| !v.is_empty())
        .collect()
}
