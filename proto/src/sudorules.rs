//! Command rules of a `sudo` grant (issue 17): which commands, as which users.
//!
//! A sudo grant without rules allows everything (`ALL`), as before. With rules, hostd
//! renders one sudoers line for the grant's own NSS group (`smith-sudo-<grant id>`,
//! whose gid the CA allocated), and pam_smith's sudo approval re-checks the command
//! sudo resolved against the rules of the grants the login's certificate carries.
//!
//! A command is an absolute path, optionally followed by arguments; without arguments
//! any arguments are allowed, with them exactly those (sudoers' own meaning). Only
//! characters that need no escaping in sudoers are accepted, so a rule renders as it
//! reads and can never inject sudoers syntax (`,`, `:`, `=`, `\`, `!`, `(`, spaces in an
//! argument, ... are refused with the reason).
//!
//! Must never: render a line visudo would read differently from the rule, or match a
//! command the rule does not name.

use crate::names::UserName;
use std::fmt;

/// Most commands one grant may list.
pub const MAX_COMMANDS: usize = 32;
/// Most run-as users one grant may list.
pub const MAX_RUN_AS: usize = 16;
/// Longest command text.
pub const MAX_COMMAND_LEN: usize = 1024;

/// One allowed command.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct SudoCommand {
    /// Absolute path.
    pub path: String,
    /// `None`: any arguments. `Some`: exactly these.
    #[cfg_attr(
        feature = "serde",
        serde(default, skip_serializing_if = "Option::is_none")
    )]
    pub args: Option<Vec<String>>,
}

fn path_char(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"._+/-".contains(&b)
}

fn arg_char(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"._+/@%-".contains(&b)
}

impl SudoCommand {
    /// `/usr/bin/systemctl restart nginx`: the path, then each argument.
    pub fn parse(text: &str) -> Result<SudoCommand, String> {
        if text.len() > MAX_COMMAND_LEN {
            return Err(format!("a sudo command is at most {MAX_COMMAND_LEN} bytes"));
        }
        let mut words = text.split_ascii_whitespace();
        let path = words
            .next()
            .ok_or_else(|| "a sudo command cannot be empty".to_string())?;
        if !path.starts_with('/')
            || !path.bytes().all(path_char)
            || path.split('/').any(|seg| seg == "..")
            || path.ends_with('/')
        {
            return Err(format!(
                "'{}' is not an absolute path of letters, digits and ._+-/ (sudo rules name \
                 the program by its full path, e.g. /usr/bin/systemctl)",
                path.escape_debug()
            ));
        }
        let args: Vec<String> = words.map(str::to_string).collect();
        if let Some(bad) = args.iter().find(|a| !a.bytes().all(arg_char)) {
            return Err(format!(
                "argument '{}' has a character sudoers would read as syntax; arguments may \
                 hold letters, digits and ._+/@%-",
                bad.escape_debug()
            ));
        }
        Ok(SudoCommand {
            path: path.to_string(),
            args: (!args.is_empty()).then_some(args),
        })
    }

    /// Whether running `path` with `args` is this command.
    pub fn matches(&self, path: &str, args: &[String]) -> bool {
        self.path == path
            && match &self.args {
                None => true,
                Some(want) => want.as_slice() == args,
            }
    }
}

impl fmt::Display for SudoCommand {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.path)?;
        for a in self.args.iter().flatten() {
            write!(f, " {a}")?;
        }
        Ok(())
    }
}

/// A sudo grant's rules. Empty: everything, as anyone.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(default))]
pub struct SudoRules {
    #[cfg_attr(feature = "serde", serde(skip_serializing_if = "Vec::is_empty"))]
    pub commands: Vec<SudoCommand>,
    /// Users the commands may run as; empty: root only.
    #[cfg_attr(feature = "serde", serde(skip_serializing_if = "Vec::is_empty"))]
    pub run_as: Vec<UserName>,
    /// gid of the grant's NSS group `smith-sudo-<id>` (allocated by the CA when the grant
    /// has rules).
    #[cfg_attr(feature = "serde", serde(skip_serializing_if = "Option::is_none"))]
    pub gid: Option<u32>,
}

impl SudoRules {
    /// No rule: the grant allows every command as anyone.
    pub fn is_unrestricted(&self) -> bool {
        self.commands.is_empty() && self.run_as.is_empty()
    }

    /// The users commands may run as (`root` when none is listed).
    pub fn targets(&self) -> Vec<&str> {
        if self.run_as.is_empty() {
            vec!["root"]
        } else {
            self.run_as.iter().map(UserName::as_str).collect()
        }
    }

    /// Whether running `path args` as `target` is allowed.
    pub fn allows(&self, target: &str, path: &str, args: &[String]) -> bool {
        if self.is_unrestricted() {
            return true;
        }
        self.targets().contains(&target)
            && (self.commands.is_empty() || self.commands.iter().any(|c| c.matches(path, args)))
    }

    /// The sudoers line for members of `group`.
    pub fn sudoers_line(&self, group: &str) -> String {
        if self.is_unrestricted() {
            return format!("%{group} ALL=(ALL:ALL) NOPASSWD: ALL");
        }
        let cmds = if self.commands.is_empty() {
            "ALL".to_string()
        } else {
            self.commands
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(", ")
        };
        format!(
            "%{group} ALL=({}) NOPASSWD: {cmds}",
            self.targets().join(", ")
        )
    }
}

/// The rules file (`paths::SUDO_RULES_FILE`): one block per rule-limited grant,
/// `grant ID`, then `as USER` and `command PATH [ARG...]` lines. A grant that is not in
/// the file has no rules.
pub fn render_file<'a>(grants: impl IntoIterator<Item = (u64, &'a SudoRules)>) -> String {
    let mut s =
        String::from("# Written by smith-hostd: the command rules of sudo grants. Do not edit.\n");
    for (id, r) in grants {
        if r.is_unrestricted() {
            continue;
        }
        s.push_str(&format!("grant {id}\n"));
        for u in &r.run_as {
            s.push_str(&format!("as {u}\n"));
        }
        for c in &r.commands {
            s.push_str(&format!("command {c}\n"));
        }
    }
    s
}

/// Reads [`render_file`]'s format back. A line that does not parse makes the whole
/// grant's rules `None`-like: the grant is kept with no command allowed (never wider).
pub fn parse_file(text: &str) -> std::collections::BTreeMap<u64, SudoRules> {
    let mut out = std::collections::BTreeMap::new();
    let mut cur: Option<(u64, SudoRules, bool)> = None;
    let flush = |cur: &mut Option<(u64, SudoRules, bool)>,
                 out: &mut std::collections::BTreeMap<u64, SudoRules>| {
        if let Some((id, mut r, broken)) = cur.take() {
            if broken {
                // Nothing matches a command that is not an absolute path.
                r.commands = vec![SudoCommand {
                    path: String::new(),
                    args: Some(Vec::new()),
                }];
            }
            out.insert(id, r);
        }
    };
    for line in text.lines() {
        if line.starts_with('#') || line.trim().is_empty() {
            continue;
        }
        let (k, v) = line.split_once(' ').unwrap_or((line, ""));
        match k {
            "grant" => {
                flush(&mut cur, &mut out);
                if let Ok(id) = v.parse() {
                    cur = Some((id, SudoRules::default(), false));
                }
            }
            "as" => {
                if let Some((_, r, broken)) = cur.as_mut() {
                    match UserName::new(v) {
                        Ok(u) => r.run_as.push(u),
                        Err(_) => *broken = true,
                    }
                }
            }
            "command" => {
                if let Some((_, r, broken)) = cur.as_mut() {
                    match SudoCommand::parse(v) {
                        Ok(c) => r.commands.push(c),
                        Err(_) => *broken = true,
                    }
                }
            }
            _ => {
                if let Some((_, _, broken)) = cur.as_mut() {
                    *broken = true;
                }
            }
        }
    }
    flush(&mut cur, &mut out);
    out
}

/// The NSS group of a sudo grant with rules.
pub fn rule_group(grant_id: u64) -> String {
    format!("{}-{grant_id}", crate::names::SUDO_GROUP)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_parse_strictly_and_match_as_sudoers_does() {
        let c = SudoCommand::parse("/usr/bin/systemctl restart nginx").unwrap();
        assert_eq!(c.to_string(), "/usr/bin/systemctl restart nginx");
        let args = |a: &[&str]| a.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert!(c.matches("/usr/bin/systemctl", &args(&["restart", "nginx"])));
        assert!(!c.matches("/usr/bin/systemctl", &args(&["stop", "nginx"])));
        assert!(!c.matches("/usr/bin/systemctl", &args(&["restart", "nginx", "x"])));
        let any = SudoCommand::parse("/usr/bin/id").unwrap();
        assert!(any.matches("/usr/bin/id", &args(&["-u"])));
        assert!(!any.matches("/bin/id", &[]));
        for bad in [
            "",
            "systemctl restart",
            "/usr/bin/../bin/sh",
            "/usr/bin/x, ALL",
            "/usr/bin/x a,b",
            "/usr/bin/x a:b",
            "/usr/bin/x a=b",
            "/usr/bin/x a\\b",
            "/usr/bin/x !a",
            "/usr/bin/x (a)",
            "/usr/bin/x\u{7}",
            "/usr/bin/",
        ] {
            assert!(SudoCommand::parse(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn rules_render_one_sudoers_line_and_allow_what_it_says() {
        let r = SudoRules {
            commands: vec![SudoCommand::parse("/usr/bin/systemctl restart nginx").unwrap()],
            run_as: vec![UserName::new("postgres").unwrap()],
            gid: Some(200_100),
        };
        assert_eq!(
            r.sudoers_line("smith-sudo-7"),
            "%smith-sudo-7 ALL=(postgres) NOPASSWD: /usr/bin/systemctl restart nginx"
        );
        let a = vec!["restart".to_string(), "nginx".to_string()];
        assert!(r.allows("postgres", "/usr/bin/systemctl", &a));
        assert!(!r.allows("root", "/usr/bin/systemctl", &a));
        assert!(!r.allows("postgres", "/usr/bin/id", &[]));
        let only_cmd = SudoRules {
            commands: vec![SudoCommand::parse("/usr/bin/id").unwrap()],
            ..Default::default()
        };
        assert_eq!(
            only_cmd.sudoers_line("g"),
            "%g ALL=(root) NOPASSWD: /usr/bin/id"
        );
        assert!(only_cmd.allows("root", "/usr/bin/id", &[]));
        assert!(SudoRules::default().allows("anyone", "/bin/sh", &[]));
        assert_eq!(rule_group(7), "smith-sudo-7");
        let file = render_file([(7, &r), (8, &SudoRules::default()), (9, &only_cmd)]);
        let back = parse_file(&file);
        assert_eq!(back.len(), 2);
        assert_eq!(back[&7].commands, r.commands);
        assert_eq!(back[&7].run_as, r.run_as);
        assert_eq!(back[&9].commands, only_cmd.commands);
        // A damaged block allows nothing rather than everything.
        let damaged = parse_file("grant 3\ncommand /usr/bin/id\ncommand bad, ALL\n");
        assert!(!damaged[&3].allows("root", "/usr/bin/id", &[]));
        assert!(!damaged[&3].is_unrestricted());
    }
}
