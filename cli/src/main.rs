//! `smith`: the engineer's CLI. `smith cert` gets a short-lived OpenSSH certificate into
//! the ssh-agent; `smith config show` prints the effective configuration. See
//! cli/README.md.

mod agent;
mod cert;
mod config;

use clap::{Parser, Subcommand};
use smith_proto::Tags;
use std::path::PathBuf;
use std::time::Duration;

#[derive(Parser, Debug)]
#[command(
    name = "smith",
    version,
    about = "Short-lived SSH certificates from the Smith CA",
    long_about = "Short-lived SSH certificates from the Smith CA.\n\n\
`smith cert --scope env=prod --ttl 60m --reason INC-42` asks the CA for a certificate \
valid on hosts tagged env=prod for 60 minutes and puts it, with a fresh private key that \
never touches disk, into your ssh-agent. Then plain `ssh`, `rsync` or `ansible` work.\n\n\
Configuration: --ca-url/SMITH_CA_URL, --ca-fingerprint/SMITH_CA_FINGERPRINT (the CA's \
TLS root, pinned), --token/SMITH_TOKEN (from your admin). `ca_url` and `ca_fingerprint` \
may also live in ~/.config/smith/config.toml.\n\n\
Exit codes: 0 success, 1 error, 2 usage, 3 the CA refused the request."
)]
struct Cli {
    /// The CA's URL, e.g. https://ca.example.com:8443 [env: SMITH_CA_URL]
    #[arg(long, global = true)]
    ca_url: Option<String>,
    /// SHA256:... fingerprint of the CA's TLS root [env: SMITH_CA_FINGERPRINT]
    #[arg(long, global = true)]
    ca_fingerprint: Option<String>,
    /// Your bearer token [env: SMITH_TOKEN]
    #[arg(long, global = true)]
    token: Option<String>,
    #[command(subcommand)]
    cmd: Cmd,
}

fn parse_ttl(s: &str) -> Result<Duration, String> {
    let d = humantime::parse_duration(s)
        .map_err(|e| format!("'{s}' is not a duration like 30m, 1h or 8h: {e}"))?;
    if d < Duration::from_secs(60) {
        return Err("a certificate lives at least 1m".into());
    }
    Ok(d)
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Get a certificate for a fresh key and add both to the ssh-agent.
    Cert {
        /// Hosts you want to reach, as tags `k=v,...` (a host must have all of them).
        /// Empty: wherever your grants allow.
        #[arg(long, value_parser = Tags::parse, default_value = "")]
        scope: Tags,
        /// How long the certificate should live; policy may clip it.
        #[arg(long, value_parser = parse_ttl, default_value = "1h")]
        ttl: Duration,
        /// Why you need access (recorded; some grants require it).
        #[arg(long)]
        reason: Option<String>,
        /// Also write PATH (private key, 0600), PATH.pub and PATH-cert.pub. Without it the
        /// private key never touches disk.
        #[arg(long)]
        out: Option<PathBuf>,
        /// Print the result as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Configuration.
    #[command(subcommand)]
    Config(ConfigCmd),
}

#[derive(Subcommand, Debug)]
enum ConfigCmd {
    /// Show the effective configuration and where each value comes from.
    Show {
        #[arg(long)]
        json: bool,
    },
}

fn run(cli: Cli) -> anyhow::Result<()> {
    let cfg = config::resolve(config::Flags {
        ca_url: cli.ca_url,
        ca_fingerprint: cli.ca_fingerprint,
        token: cli.token,
    })?;
    match cli.cmd {
        Cmd::Cert {
            scope,
            ttl,
            reason,
            out,
            json,
        } => cert::run(
            &cfg,
            cert::CertArgs {
                scope,
                ttl,
                reason,
                out,
                json,
            },
        ),
        Cmd::Config(ConfigCmd::Show { json }) => {
            if json {
                println!("{}", serde_json::to_string_pretty(&cfg)?);
                return Ok(());
            }
            let show = |name: &str, s: &config::Setting| {
                println!(
                    "{name:<15} {:<50} ({})",
                    s.value.as_deref().unwrap_or("-"),
                    s.source
                );
            };
            println!(
                "config file     {}",
                cfg.config_file.as_deref().unwrap_or("(none)")
            );
            show("ca_url", &cfg.ca_url);
            show("ca_fingerprint", &cfg.ca_fingerprint);
            println!(
                "token           {:<50} ({})",
                if cfg.token.value.is_some() {
                    "(set, hidden)"
                } else {
                    "-"
                },
                cfg.token_source
            );
            println!(
                "ssh-agent       {}",
                cfg.ssh_auth_sock
                    .as_deref()
                    .unwrap_or("(SSH_AUTH_SOCK not set)")
            );
            Ok(())
        }
    }
}

fn main() {
    let cli = Cli::parse();
    if let Err(e) = run(cli) {
        let code = if e.downcast_ref::<cert::Denied>().is_some() {
            cert::EXIT_DENIED
        } else {
            1
        };
        eprintln!("smith: {e:#}");
        std::process::exit(code);
    }
}
