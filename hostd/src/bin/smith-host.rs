//! `smith-host`: enroll and manage a Smith host. See the `smith_hostd` library.

use clap::{Parser, Subcommand};
use smith_hostd::activate::{self, ActivateError, ActivateOptions, DeactivateOptions};
use smith_hostd::config::{self, Resolved};
use std::path::PathBuf;
use std::process::ExitCode;

/// Enroll this host with a Smith CA and manage it.
///
/// A Smith host accepts SSH certificates from the Smith user CA, resolves Smith users
/// through NSS (`passwd: files smith`) and checks their grants in PAM, all from a local
/// snapshot that smith-hostd keeps in sync with the CA. Local accounts are never
/// affected.
#[derive(Parser, Debug)]
#[command(name = "smith-host", version)]
struct Cli {
    /// Relocate every path under DIR (tests, private mount namespaces), e.g.
    /// `--root /tmp/h1` uses /tmp/h1/etc/smith/host.toml.
    #[arg(long, global = true, value_name = "DIR")]
    root: Option<PathBuf>,
    /// Configuration file. Default: ROOT/etc/smith/host.toml.
    #[arg(long, global = true, value_name = "PATH")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Enroll this host and configure sshd, NSS and PAM for Smith.
    ///
    /// Pins the CA's TLS root by fingerprint, proves the one-time token, gets an mTLS
    /// client certificate for this host, then writes /etc/smith/{host.key,host.crt,
    /// ca.crt,host.toml}, the user CA keys and KRL, the sshd drop-in, `smith` in
    /// nsswitch.conf and the pam_smith lines in /etc/pam.d/{sshd,sudo}, recording the
    /// original of every file so `deactivate` can restore it. If anything fails before
    /// the files are written, nothing changes. On an enrolled host it needs no token
    /// and only re-asserts the files (running it twice changes nothing). A host the CA
    /// refuses (removed, client certificate expired) enrolls again with `--token T`
    /// alone: the CA URL, fingerprint and name default to the current ones.
    ///
    /// Check Smith packages before installing them, on this host and the next (README,
    /// "Verify before installing"): in the directory with the packages, the project's
    /// release key saved as smith-allowed-signers, `ssh-keygen -Y verify -f
    /// smith-allowed-signers -I release@smith -n smith-release -s SHA256SUMS.sig <
    /// SHA256SUMS`, then `sha256sum -c SHA256SUMS`.
    Activate {
        /// The CA's URL, e.g. https://ca.example.com:8443. Repeat it (or give a comma
        /// separated list) for a CA with several replicas, preferred first: hostd moves to
        /// the next when the one it uses dies or hangs, and back to the first when it
        /// answers again (host.toml `ca_urls`).
        #[arg(
            long = "ca",
            value_name = "URL",
            env = "SMITH_CA_URL",
            value_delimiter = ','
        )]
        ca_url: Vec<String>,
        /// One-time enrollment token (`smith-ca admin host token --tags ...`).
        #[arg(
            long,
            value_name = "TOKEN",
            env = "SMITH_ENROLL_TOKEN",
            hide_env_values = true
        )]
        token: Option<String>,
        /// Fingerprint of the CA's TLS root (printed by `smith-ca init`), SHA256:...
        #[arg(long, value_name = "SHA256:...", env = "SMITH_CA_FINGERPRINT")]
        ca_fingerprint: Option<String>,
        /// Name to enroll as (a lowercase DNS name). Default: the system host name.
        #[arg(long, value_name = "NAME")]
        name: Option<String>,
        /// Do not reload sshd nor start smith-hostd; print the commands instead (hosts
        /// without systemd, test fleets).
        #[arg(long)]
        no_start: bool,
        /// Base of Smith users' home directories (default: /home).
        #[arg(long, value_name = "DIR")]
        home_base: Option<String>,
        /// Another name for this host's SSH host certificates, besides the host name
        /// (repeatable), e.g. web.example.com. The enrollment token must allow each one
        /// (`smith-ca admin host token --ssh-name NAME`), so a host cannot claim another
        /// host's name. Clients then connect with `ssh NAME` (or `-o HostKeyAlias=NAME`)
        /// without a TOFU prompt.
        #[arg(long = "ssh-name", value_name = "NAME")]
        ssh_names: Vec<String>,
        /// Print the result as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Undo `activate`: stop the daemon, restore every file byte for byte (or remove
    /// only Smith's lines from files changed since), remove what Smith created.
    Deactivate {
        /// Do not stop smith-hostd nor reload sshd; print the commands instead.
        #[arg(long)]
        no_stop: bool,
        #[arg(long)]
        json: bool,
    },
    /// Show enrollment, sync and daemon state.
    Status {
        #[arg(long)]
        json: bool,
    },
    /// Check everything a working Smith host needs; exits 1 if a check fails.
    Doctor {
        #[arg(long)]
        json: bool,
    },
    /// End removals smith-hostd held instead of carrying out: processes of users who
    /// lost access in a sync from a new CA epoch (a CA restored from a backup) or in a
    /// mass removal (more than `removal_hold_percent` of the users at once). `status`
    /// lists them; each one ended is recorded in the audit trail. Users who still have
    /// access here and local accounts are never touched.
    Terminate {
        /// The users whose held removals to carry out.
        #[arg(required_unless_present = "held", conflicts_with = "held")]
        users: Vec<String>,
        /// Every held removal.
        #[arg(long)]
        held: bool,
        #[arg(long)]
        json: bool,
    },
    /// Sync now: signal the running daemon (SIGUSR1), or sync once in-process when it
    /// is not running.
    Sync {
        #[arg(long)]
        json: bool,
    },
    /// sshd's AuthorizedPrincipalsCommand (`principals %u %k %i %s`): prints USER if
    /// the certificate may log in as USER on this host, else nothing. Always exits 0.
    Principals {
        /// The login name (%u).
        user: String,
        /// The certificate, base64 (%k).
        #[arg(allow_hyphen_values = true)]
        cert: String,
        /// Key ID (%i), informational (read from the certificate).
        #[arg(allow_hyphen_values = true)]
        key_id: Option<String>,
        /// Serial (%s), informational.
        #[arg(allow_hyphen_values = true)]
        serial: Option<String>,
        /// Anything else sshd passes (a key ID with spaces splits into several).
        #[arg(trailing_var_arg = true, allow_hyphen_values = true, hide = true)]
        rest: Vec<String>,
    },
}

fn resolve(cli: &Cli) -> Result<Resolved, String> {
    config::resolve(cli.root.as_deref(), cli.config.as_deref()).map_err(|e| e.to_string())
}

fn print_json<T: serde::Serialize>(v: &T) {
    match serde_json::to_string_pretty(v) {
        Ok(s) => println!("{s}"),
        Err(e) => eprintln!("smith-host: cannot encode JSON: {e}"),
    }
}

fn fail(msg: &str) -> ExitCode {
    eprintln!("smith-host: {msg}");
    ExitCode::FAILURE
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            // sshd's principals command must print nothing and exit 0 on any doubt.
            if std::env::args().nth(1).is_some()
                && std::env::args().any(|a| a == "principals")
                && !std::env::args().any(|a| a == "--help" || a == "-h")
            {
                eprintln!("smith-host principals: bad arguments; refusing");
                return ExitCode::SUCCESS;
            }
            e.exit();
        }
    };
    if let Cmd::Principals { user, cert, .. } = &cli.cmd {
        // Fast path: no runtime, no logging setup, nothing printed on doubt.
        let paths = match resolve(&cli) {
            Ok(r) => r.paths,
            Err(_) => smith_hostd::paths::HostPaths::under(
                cli.root.as_deref().unwrap_or(std::path::Path::new("/")),
            ),
        };
        if let Some(name) = smith_hostd::principals::run(&paths, user, cert) {
            println!("{name}");
        }
        return ExitCode::SUCCESS;
    }
    smith_hostd::logging::init_cli();
    let resolved = match resolve(&cli) {
        Ok(r) => r,
        Err(e) => return fail(&e),
    };
    match cli.cmd {
        Cmd::Activate {
            ca_url,
            token,
            ca_fingerprint,
            name,
            no_start,
            home_base,
            ssh_names,
            json,
        } => {
            let opts = ActivateOptions {
                ssh_names,
                ca_urls: ca_url,
                token,
                ca_fingerprint,
                name,
                no_start,
                home_base,
            };
            match activate::activate(&resolved.paths, resolved.config.as_ref(), &opts) {
                Ok(r) => {
                    if json {
                        print_json(&r);
                    } else {
                        print_activate(&r);
                    }
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("smith-host activate: {e}");
                    match e {
                        ActivateError::Usage(_) => ExitCode::from(2),
                        _ => ExitCode::FAILURE,
                    }
                }
            }
        }
        Cmd::Deactivate { no_stop, json } => {
            match activate::deactivate(&resolved.paths, &DeactivateOptions { no_stop }) {
                Ok(r) => {
                    if json {
                        print_json(&r);
                    } else if !r.was_active {
                        println!(
                            "This host is not activated (no {}); nothing to do.",
                            resolved.paths.manifest.display()
                        );
                    } else {
                        println!("Smith deactivated.");
                        for a in &r.actions {
                            println!("  {a}");
                        }
                        for f in &r.undo.restored {
                            println!("  restored  {f}");
                        }
                        for f in &r.undo.cleaned {
                            println!("  cleaned   {f}");
                        }
                        for f in &r.undo.removed {
                            println!("  removed   {f}");
                        }
                        for w in &r.undo.warnings {
                            eprintln!("warning: {w}");
                        }
                        for n in &r.next_steps {
                            println!("next: {n}");
                        }
                    }
                    ExitCode::SUCCESS
                }
                Err(e) => fail(&format!("deactivate: {e}")),
            }
        }
        Cmd::Status { json } => {
            let s = smith_hostd::status::gather(&resolved);
            if json {
                print_json(&s);
            } else {
                print!("{}", smith_hostd::status::render(&s));
            }
            ExitCode::SUCCESS
        }
        Cmd::Doctor { json } => {
            let checks = smith_hostd::doctor::run(&resolved);
            if json {
                print_json(&checks);
            } else {
                print!("{}", smith_hostd::doctor::render(&checks));
            }
            if checks
                .iter()
                .any(|c| c.level == smith_hostd::doctor::Level::Fail)
            {
                ExitCode::FAILURE
            } else {
                ExitCode::SUCCESS
            }
        }
        Cmd::Sync { json } => match smith_hostd::oneshot::sync(&resolved) {
            Ok(r) => {
                if json {
                    print_json(&r);
                } else {
                    println!("{}", r.message);
                }
                ExitCode::SUCCESS
            }
            Err(e) => fail(&format!("sync: {e}")),
        },
        Cmd::Terminate { users, held, json } => {
            match smith_hostd::terminate::run(&resolved, &users, held) {
                Ok(r) => {
                    if json {
                        print_json(&r);
                    } else {
                        print!("{}", smith_hostd::terminate::render(&r));
                    }
                    if r.not_held.is_empty() {
                        ExitCode::SUCCESS
                    } else {
                        ExitCode::FAILURE
                    }
                }
                Err(e) => fail(&format!("terminate: {e}")),
            }
        }
        Cmd::Principals { .. } => ExitCode::SUCCESS,
    }
}

fn print_activate(r: &activate::ActivateReport) {
    if r.reenrolled {
        println!(
            "Enrolled {} again with {}.",
            r.host_name,
            r.ca_urls.join(", ")
        );
    }
    for c in &r.ssh_host_certs {
        println!("  SSH host certificate: {c}");
    }
    if r.already_enrolled {
        println!(
            "{} is already enrolled with {}; files re-asserted.",
            r.host_name,
            r.ca_urls.join(", ")
        );
    } else {
        println!(
            "Enrolled {} with {} (tags: {}).",
            r.host_name,
            r.ca_urls.join(", "),
            r.tags.as_deref().unwrap_or("none")
        );
        println!("  CA root pinned: {}", r.root_fingerprint);
        println!(
            "  client certificate valid until {}",
            smith_hostd::status::when(r.client_cert_not_after)
        );
    }
    if r.changed.is_empty() {
        println!("  no file changed");
    }
    for f in &r.changed {
        println!("  wrote     {f}");
    }
    for a in &r.actions {
        println!("  {a}");
    }
    for w in &r.warnings {
        eprintln!("warning: {w}");
    }
    if !r.next_steps.is_empty() {
        println!("Next steps:");
        for n in &r.next_steps {
            println!("  {n}");
        }
    }
}
