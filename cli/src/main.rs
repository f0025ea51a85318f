//! `smith`: the engineer's CLI. `smith login` signs in with the CA's OpenID Provider,
//! `smith cert` gets a short-lived OpenSSH certificate into the ssh-agent (for a scope,
//! or for one host), `smith hosts` lists the hosts one may reach, `smith ssh` runs ssh
//! with a certificate that fits the host, `smith config show` prints the effective
//! configuration and `smith config ssh` sets OpenSSH up. See cli/README.md.

#![forbid(unsafe_code)]

mod agent;
mod cert;
mod config;
mod ensure;
mod hostkrl;
mod hostlist;
mod hosts;
mod login;
mod sshconfig;
mod sshwrap;
mod state;
mod target;

use smith_login::{keyring, oidc};

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
Sign in first with `smith login` (your company's identity provider; the ID token stays \
in your kernel keyring, never in a file), or use a token from your admin.\n\n\
Configuration: --ca-url/SMITH_CA_URL, --ca-fingerprint/SMITH_CA_FINGERPRINT (the CA's \
TLS root, pinned), --token/SMITH_TOKEN (a token from your admin; it wins over a sign-in), \
--profile/SMITH_PROFILE (several sign-ins side by side). `ca_url` and `ca_fingerprint` \
may also live in ~/.config/smith/config.toml.\n\n\
Exit codes: 0 success, 1 error, 2 usage, 3 the CA refused the request."
)]
struct Cli {
    /// The CA's URL, e.g. https://ca.example.com:8443; repeat it (or give a comma
    /// separated list) for a CA with several replicas, preferred first: each request
    /// goes to the first that answers [env: SMITH_CA_URL=URL1,URL2]
    #[arg(long, global = true, value_delimiter = ',')]
    ca_url: Vec<String>,
    /// SHA256:... fingerprint of the CA's TLS root [env: SMITH_CA_FINGERPRINT]
    #[arg(long, global = true)]
    ca_fingerprint: Option<String>,
    /// Your bearer token [env: SMITH_TOKEN]
    #[arg(long, global = true)]
    token: Option<String>,
    /// Sign-in profile: several identities can be signed in at once, one per profile
    /// [env: SMITH_PROFILE] [default: default]
    #[arg(long, global = true)]
    profile: Option<String>,
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

fn parse_wait(s: &str) -> Result<Duration, String> {
    humantime::parse_duration(s).map_err(|e| format!("'{s}' is not a duration like 5m: {e}"))
}

/// What a certificate request says (shared by `cert` and `login --cert`).
#[derive(clap::Args, Debug)]
struct CertFlags {
    /// Hosts you want to reach, as tags `k=v,...` (a host must have all of them).
    /// Default: empty, wherever your grants allow (with --ensure: the last request's).
    #[arg(long, value_parser = Tags::parse)]
    scope: Option<Tags>,
    /// How long the certificate should live; policy may clip it. Default: 1h (with
    /// --ensure: the last request's).
    #[arg(long, value_parser = parse_ttl)]
    ttl: Option<Duration>,
    /// Why you need access (recorded; some grants require it).
    #[arg(long)]
    reason: Option<String>,
    /// Also write PATH (private key, 0600), PATH.pub and PATH-cert.pub. Without it the
    /// private key never touches disk.
    #[arg(long)]
    out: Option<PathBuf>,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Sign in with your identity provider (the one the CA names). Opens a browser (or
    /// prints the URL) for the authorization code flow with PKCE and a loopback redirect;
    /// --device signs in from a machine without a browser. The ID token is kept in your
    /// kernel keyring (never a file) until it expires; `smith cert` then uses it. Where
    /// the provider issues a refresh token (the CA's scopes include offline_access), it is
    /// kept beside it and `smith cert` renews the ID token without the browser until the
    /// provider refuses or the sign-in is older than the CA accepts (default 12h).
    Login {
        /// Use the device flow: print a URL and a code to enter on any other device.
        #[arg(long)]
        device: bool,
        /// Print the sign-in URL instead of opening a browser (also the default without
        /// DISPLAY/WAYLAND_DISPLAY).
        #[arg(long)]
        no_browser: bool,
        /// How long to wait for the browser to come back.
        #[arg(long, value_parser = parse_wait, default_value = "5m")]
        timeout: Duration,
        /// Get a certificate right away with the cert flags below, keeping the token in
        /// memory only (for machines without a usable keyring).
        #[arg(long)]
        cert: bool,
        #[command(flatten)]
        flags: CertFlags,
        /// Print the sign-in (or, with --cert, the certificate) as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Forget this profile's sign-in (the tokens in the kernel keyring), revoking its
    /// refresh token at the provider.
    Logout,
    /// Get a certificate for a fresh key and add both to the ssh-agent. Uses --token /
    /// SMITH_TOKEN if set, else your `smith login` sign-in.
    ///
    /// With --ensure: do nothing (and touch no network) if the agent already holds a
    /// certificate from this CA, for the same scope, valid for at least --min-valid
    /// more; otherwise get one with the scope, TTL and reason of your last `smith cert`
    /// (remembered per profile in the config directory, no secrets), or the flags given.
    /// With --ensure --host: the same for the certificate that fits that host (what the
    /// ~/.ssh/config block of `smith config ssh` runs before ssh connects; a reason
    /// comes from --reason, SMITH_REASON, or the terminal). Exits non-zero on failure
    /// (ssh then goes on without a new certificate).
    Cert {
        #[command(flatten)]
        flags: CertFlags,
        /// Only get a certificate if the agent has no fitting one.
        #[arg(long)]
        ensure: bool,
        /// With --ensure: how long the certificate in the agent must still be valid.
        #[arg(long, value_parser = parse_wait, default_value = "5m", requires = "ensure")]
        min_valid: Duration,
        /// Print nothing on success (errors still go to stderr, briefly).
        #[arg(long)]
        quiet: bool,
        /// Print the result as JSON.
        #[arg(long, conflicts_with = "ensure")]
        json: bool,
        /// A certificate for exactly your grants that fit HOST (its enrolled name, an SSH
        /// name, or a unique short name), instead of a --scope. For tools that do not
        /// read ~/.ssh/config (Packer, Ansible with paramiko): `smith cert --host web-1`,
        /// then the tool uses the agent. With --ensure, only when the agent holds no
        /// certificate that fits HOST (the block of `smith config ssh` runs
        /// `--ensure --host=%h --login=%r`); a host Smith does not manage is left alone.
        #[arg(long, value_name = "HOST", conflicts_with = "scope")]
        host: Option<String>,
        /// With --host: the login you will use there (default: your own; a shared login
        /// such as deploy needs a grant that allows it).
        #[arg(long, value_name = "LOGIN", requires = "host")]
        login: Option<String>,
        /// With --ensure --host: the port ssh connects to (ssh's %p).
        #[arg(long, requires = "host", hide = true)]
        port: Option<String>,
        /// With --ensure --host: ssh's HostKeyAlias (%k), which names the host first when
        /// it is exactly an enrolled name.
        #[arg(long, requires = "host", hide = true)]
        host_key_alias: Option<String>,
    },
    /// The hosts you may reach: names, tags, level, the grants (and their conditions)
    /// you reach them through, and whether the agent holds a certificate for each. Also
    /// keeps the list that the check before each ssh connection decides from.
    Hosts {
        /// Print the list as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Run ssh after making sure the agent holds a certificate that fits the host, as
    /// the block of `smith config ssh` does before each connection (use either). A host
    /// Smith does not manage is reached untouched.
    #[command(
        override_usage = "smith ssh [-l LOGIN] [-p PORT] [-o OPTION]... [LOGIN@]HOST [COMMAND]..."
    )]
    Ssh {
        /// The login on the host (as ssh -l).
        #[arg(short = 'l', value_name = "LOGIN")]
        login: Option<String>,
        /// The port (as ssh -p).
        #[arg(short = 'p', value_name = "PORT")]
        port: Option<u16>,
        /// An ssh option (as ssh -o), repeatable.
        #[arg(short = 'o', value_name = "OPTION")]
        option: Vec<String>,
        /// [LOGIN@]HOST.
        destination: String,
        /// The command to run there (default: a shell).
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        command: Vec<String>,
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
    /// Set up OpenSSH for Smith: trust the CA's host certificates and renew your
    /// certificate before connecting.
    ///
    /// Fetches the host CA keys (GET /v1/ca/host-keys, pinned TLS) and writes in
    /// ~/.ssh/known_hosts one `@cert-authority PATTERNS KEY smith-ca <CA URL>` line per
    /// key, so ssh verifies Smith hosts by their host certificates (no "trust this host
    /// key?" prompt, and StrictHostKeyChecking=yes works). Appends to ~/.ssh/config a
    /// block between `# BEGIN smith` and `# END smith`: `Match host PATTERNS ... exec
    /// "smith cert --ensure --quiet --host='%h' --login='%r' ..."`, which makes sure,
    /// before ssh connects, that your agent holds a certificate for exactly your grants
    /// that fit that host as that login (offline when it does; hosts Smith does not
    /// manage are left alone). Running it again changes nothing; no other line is
    /// touched; --remove takes them out.
    Ssh {
        /// Host patterns (ssh_config PATTERNS: *.example.com, 10.0.0.*, !bastion);
        /// repeatable or comma-separated. Default: `ssh_hosts` in the config file, else *.
        #[arg(long = "hosts", value_name = "PATTERN")]
        hosts: Vec<String>,
        /// Show what would change; change nothing.
        #[arg(long)]
        dry_run: bool,
        /// Remove Smith's lines from ~/.ssh/known_hosts and ~/.ssh/config.
        #[arg(long)]
        remove: bool,
        #[arg(long)]
        json: bool,
    },
}

fn cert_args(f: CertFlags, json: bool, quiet: bool) -> cert::CertArgs {
    cert::CertArgs {
        scope: f.scope.unwrap_or_default(),
        host: None,
        ttl: f.ttl.unwrap_or(Duration::from_secs(3600)),
        reason: f.reason,
        out: f.out,
        json,
        quiet,
    }
}

fn run(cli: Cli) -> anyhow::Result<()> {
    let cfg = config::resolve(config::Flags {
        ca_url: (!cli.ca_url.is_empty()).then(|| cli.ca_url.join(",")),
        ca_fingerprint: cli.ca_fingerprint,
        token: cli.token,
        profile: cli.profile,
    })?;
    match cli.cmd {
        Cmd::Login {
            device,
            no_browser,
            timeout,
            cert,
            flags,
            json,
        } => login::run(
            &cfg,
            login::LoginArgs {
                device,
                no_browser,
                timeout,
                json,
                cert: cert.then(|| cert_args(flags, json, false)),
            },
        ),
        Cmd::Logout => login::logout(&cfg),
        Cmd::Cert {
            flags,
            ensure: true,
            min_valid,
            quiet,
            host,
            login,
            port,
            host_key_alias,
            ..
        } => {
            if flags.out.is_some() {
                anyhow::bail!("--ensure works with the ssh-agent only, not --out");
            }
            ensure::run(
                &cfg,
                ensure::EnsureArgs {
                    min_valid,
                    quiet,
                    target: host.map(|host| target::SshTarget {
                        host,
                        login,
                        port,
                        host_key_alias,
                    }),
                    scope: flags.scope,
                    ttl: flags.ttl,
                    reason: flags.reason,
                },
            )
        }
        Cmd::Cert {
            flags,
            json,
            quiet,
            host,
            login,
            ..
        } => {
            let login = login
                .map(|l| {
                    smith_proto::UserName::new(&l)
                        .map_err(|e| anyhow::anyhow!("--login '{}': {e}", l.escape_debug()))
                })
                .transpose()?;
            let cred = cfg.credential()?;
            let mut args = cert_args(flags, json, quiet);
            args.host = host.map(|host| cert::HostAsk { host, login });
            cert::run(&cfg, args, &cred)
        }
        Cmd::Hosts { json } => hosts::run(&cfg, json),
        Cmd::Ssh {
            login,
            port,
            option,
            destination,
            command,
        } => sshwrap::run(
            &cfg,
            sshwrap::SshArgs {
                login,
                port,
                options: option,
                destination,
                command,
            },
        ),
        Cmd::Config(ConfigCmd::Ssh {
            hosts,
            dry_run,
            remove,
            json,
        }) => sshconfig::run(
            &cfg,
            sshconfig::SshArgs {
                hosts,
                dry_run,
                remove,
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
                "profile         {:<50} ({})",
                cfg.profile(),
                cfg.profile.source
            );
            println!("sign-in         {}", login::status(&cfg));
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
