//! The sudo audit record: what a Smith user asked sudo to run.
//!
//! In sudo's PAM stack (`account required pam_smith.so level=sudo`), the account phase
//! runs inside the sudo process after sudoers accepted the command, with `PAM_USER` =
//! the invoking user. The command line is read from `/proc/self/cmdline` (sudo's own
//! argv: the process environment or PAM items are not trusted for this), the target user
//! from its `-u`/`--user` option (default `root`), the cwd from `getcwd`.
//!
//! Owns: parsing sudo's argv (options with and without arguments, `--`, bundled short
//! options) and quoting the command so the record is unambiguous.
//!
//! Must never: fail the sudo invocation (an unparsable argv gives a best-effort record),
//! or record anything for local users (the caller filters).

/// What sudo was asked to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SudoCommand {
    pub target: String,
    /// The command and its arguments, shell-quoted where needed (e.g. `id -u`);
    /// `<shell>` for `sudo -s`/`sudo -i` without a command.
    pub command: String,
}

/// Short options that take an argument (sudo 1.9).
const SHORT_WITH_ARG: &[u8] = b"CDgpRrtTUuc";
/// Long options that take an argument.
const LONG_WITH_ARG: &[&str] = &[
    "close-from",
    "chdir",
    "group",
    "host",
    "prompt",
    "chroot",
    "role",
    "type",
    "command-timeout",
    "other-user",
    "user",
    "login-class",
];

/// Words of a command line, each quoted where needed, joined by spaces.
pub fn quote_words<'a>(words: impl IntoIterator<Item = &'a str>) -> String {
    words.into_iter().map(quote).collect::<Vec<_>>().join(" ")
}

fn quote(arg: &str) -> String {
    let plain = !arg.is_empty()
        && arg
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_./=:,+@%-".contains(&b));
    if plain {
        arg.to_string()
    } else {
        format!("'{}'", arg.replace('\'', "'\\''"))
    }
}

/// Parses sudo's argv (including argv[0]).
pub fn parse_argv(argv: &[String]) -> SudoCommand {
    let mut target = "root".to_string();
    let mut shell = false;
    let mut i = 1;
    while i < argv.len() {
        let a = argv[i].as_str();
        if a == "--" {
            i += 1;
            break;
        }
        if let Some(long) = a.strip_prefix("--") {
            let (name, inline) = match long.split_once('=') {
                Some((n, v)) => (n, Some(v.to_string())),
                None => (long, None),
            };
            let value = if LONG_WITH_ARG.contains(&name) {
                match inline {
                    Some(v) => Some(v),
                    None => {
                        i += 1;
                        argv.get(i).cloned()
                    }
                }
            } else {
                None
            };
            match name {
                "user" => target = value.unwrap_or(target),
                "shell" | "login" => shell = true,
                _ => {}
            }
            i += 1;
            continue;
        }
        if a.len() > 1 && a.starts_with('-') {
            let bytes = &a.as_bytes()[1..];
            for (k, &c) in bytes.iter().enumerate() {
                if SHORT_WITH_ARG.contains(&c) {
                    let rest = &a[1 + k + 1..];
                    let value = if rest.is_empty() {
                        i += 1;
                        argv.get(i).cloned()
                    } else {
                        Some(rest.to_string())
                    };
                    if c == b'u' {
                        target = value.unwrap_or(target);
                    }
                    break;
                }
                if c == b's' || c == b'i' {
                    shell = true;
                }
            }
            i += 1;
            continue;
        }
        break;
    }
    let rest = argv.get(i..).unwrap_or(&[]);
    let command = if rest.is_empty() && shell {
        "<shell>".to_string()
    } else {
        quote_words(rest.iter().map(String::as_str))
    };
    SudoCommand { target, command }
}

/// Reads this process's argv.
pub fn own_argv() -> Vec<String> {
    std::fs::read("/proc/self/cmdline")
        .map(|b| split_cmdline(&b))
        .unwrap_or_default()
}

/// `/proc/PID/cmdline`: every argument followed by a NUL. Only the final terminator is
/// dropped: an empty argument is an argument (D12: `sudo rm -rf '' /tmp/x` used to be
/// recorded as `rm -rf /tmp/x`).
pub fn split_cmdline(b: &[u8]) -> Vec<String> {
    let b = b.strip_suffix(&[0]).unwrap_or(b);
    if b.is_empty() {
        return Vec::new();
    }
    b.split(|&c| c == 0)
        .map(|s| String::from_utf8_lossy(s).into_owned())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// D12 (review experiment E7): the empty argument is kept and shown as `''`.
    #[test]
    fn empty_arguments_are_recorded() {
        let argv = split_cmdline(b"sudo\0rm\0-rf\0\0/tmp/x\0");
        assert_eq!(argv, ["sudo", "rm", "-rf", "", "/tmp/x"]);
        assert_eq!(parse_argv(&argv).command, "rm -rf '' /tmp/x");
        assert_eq!(split_cmdline(b""), Vec::<String>::new());
        assert_eq!(split_cmdline(b"sudo\0\0"), ["sudo", ""]);
    }

    fn p(args: &[&str]) -> SudoCommand {
        let v: Vec<String> = args.iter().map(|s| s.to_string()).collect();
        parse_argv(&v)
    }

    #[test]
    fn targets_and_commands() {
        assert_eq!(
            p(&["sudo", "-n", "id", "-u"]),
            SudoCommand {
                target: "root".into(),
                command: "id -u".into()
            }
        );
        assert_eq!(
            p(&["sudo", "-u", "www-data", "ls", "/srv"]).target,
            "www-data"
        );
        assert_eq!(p(&["sudo", "-nuwww-data", "ls"]).target, "www-data");
        assert_eq!(
            p(&["sudo", "-nu", "deploy", "ls"]),
            SudoCommand {
                target: "deploy".into(),
                command: "ls".into()
            }
        );
        assert_eq!(
            p(&["sudo", "--user=app", "--", "-weird"]),
            SudoCommand {
                target: "app".into(),
                command: "-weird".into()
            }
        );
        assert_eq!(p(&["sudo", "--user", "app", "true"]).target, "app");
        assert_eq!(p(&["sudo", "-i"]).command, "<shell>");
        assert_eq!(
            p(&["sudo", "-g", "adm", "-p", "pw:", "cat", "/var/log/syslog"]).command,
            "cat /var/log/syslog"
        );
        assert_eq!(
            p(&["sudo", "sh", "-c", "echo 'hi' > /x"]).command,
            r#"sh -c 'echo '\''hi'\'' > /x'"#
        );
        assert_eq!(p(&["sudo"]).command, "");
        assert_eq!(p(&[]).target, "root");
        assert_eq!(
            p(&["sudo", "-u"]).target,
            "root",
            "missing value keeps the default"
        );
    }
}
