use std::path::PathBuf;

use clap::{Parser, Subcommand};
use hookwarden_receiver::config::{CONFIG_FILE_NAME, ReceiverConfig};
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
        #[arg(long, env = "HOOKWARDEN_CONFIG", default_value_os_t = PathBuf::from("/etc/hookwarden").join(CONFIG_FILE_NAME))]
        config: PathBuf,
    },
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    telemetry::init(cli.log_format, "info,tower_http=info");
    match cli.command {
        Command::Run { config } => {
            let config = ReceiverConfig::load(&config)?;
            hookwarden_receiver::server::serve(config).await?;
        }
    }
    Ok(())
}
