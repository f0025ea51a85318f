//! Module arguments (`account required pam_smith.so level=sudo ...`).
//!
//! Owns: the argument names, their defaults, and refusing anything unknown (a typo such
//! as `levle=sudo` must not silently weaken a check: the caller then denies every
//! non-local user and logs the error).
//!
//! Must never: accept a relative path (the module runs with someone else's cwd).

use smith_proto::paths;
use smith_proto::Level;
use std::path::PathBuf;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// The cache file hostd writes (`cache=PATH`).
    pub cache: PathBuf,
    /// hostd's socket (`socket=PATH`).
    pub socket: PathBuf,
    /// Where events go when hostd is unreachable (`pending=PATH`).
    pub pending: PathBuf,
    /// Local accounts (`passwd=PATH`), read directly, never through NSS.
    pub passwd: PathBuf,
    /// Homes are created only as `home_base/<user>` (`home_base=PATH`).
    pub home_base: PathBuf,
    /// Copied into new homes (`skel=PATH`).
    pub skel: PathBuf,
    /// Level the account phase requires (`level=ssh|sudo`). `sudo` also records each
    /// invocation as a sudo audit event.
    pub level: Level,
    /// Extra LOG_DEBUG messages (`debug`).
    pub debug: bool,
    /// Do not create home directories (`nohome`).
    pub no_home: bool,
    /// Refuse non-local users once hostd's last successful sync is older than this
    /// (`max_age=DURATION`, e.g. `8h`; seconds without a unit). Unset by default: a dead
    /// daemon or CA must not lock anyone out (issue 14, D11).
    pub max_age_secs: Option<u64>,
    /// hostd's sync status file, read for `max_age=` (`sync_status=PATH`).
    pub sync_status: PathBuf,
    /// The principals files hostd keeps, one per login name (`principals=DIR`): what
    /// may log in as whom here now.
    pub principals: PathBuf,
    /// Where open sessions are recorded for sudo (`sessions=DIR`).
    pub sessions: PathBuf,
    /// hostd's rules of rule-limited sudo grants (`sudo_rules=PATH`).
    pub sudo_rules: PathBuf,
    /// Where processes are looked up (always `/proc` in the module; tests move it).
    pub proc_root: PathBuf,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            cache: PathBuf::from(paths::CACHE_FILE),
            socket: PathBuf::from(paths::SOCKET),
            pending: PathBuf::from(paths::PENDING_DIR),
            passwd: PathBuf::from("/etc/passwd"),
            home_base: PathBuf::from("/home"),
            skel: PathBuf::from("/etc/skel"),
            level: Level::Ssh,
            debug: false,
            no_home: false,
            max_age_secs: None,
            sync_status: PathBuf::from(paths::SYNC_STATUS_FILE),
            principals: PathBuf::from(paths::PRINCIPALS_DIR),
            sessions: PathBuf::from(paths::SESSIONS_DIR),
            sudo_rules: PathBuf::from(paths::SUDO_RULES_FILE),
            proc_root: PathBuf::from("/proc"),
        }
    }
}

fn abs_path(key: &str, v: &str) -> Result<PathBuf, String> {
    let p = PathBuf::from(v);
    if !p.is_absolute() || v.contains('\0') {
        return Err(format!("{key}={v:?}: an absolute path is required"));
    }
    // `home_base=/home/` and `/home` mean the same.
    let trimmed = v.trim_end_matches('/');
    Ok(PathBuf::from(if trimmed.is_empty() {
        "/"
    } else {
        trimmed
    }))
}

/// `30`, `90s`, `15m`, `8h`, `2d`.
fn duration_secs(key: &str, v: &str) -> Result<u64, String> {
    let (num, mult) = match v.char_indices().last() {
        Some((i, 's')) => (&v[..i], 1),
        Some((i, 'm')) => (&v[..i], 60),
        Some((i, 'h')) => (&v[..i], 3600),
        Some((i, 'd')) => (&v[..i], 86_400),
        _ => (v, 1),
    };
    match num.parse::<u64>() {
        Ok(n) if n > 0 => Ok(n.saturating_mul(mult)),
        _ => Err(format!(
            "{key}={v:?}: a positive duration is required (e.g. 3600, 90m, 8h, 2d)"
        )),
    }
}

impl Config {
    /// Parses the module arguments.
    pub fn parse<'a>(args: impl IntoIterator<Item = &'a str>) -> Result<Config, String> {
        let mut c = Config::default();
        for a in args {
            let (k, v) = match a.split_once('=') {
                Some((k, v)) => (k, Some(v)),
                None => (a, None),
            };
            match (k, v) {
                ("cache", Some(v)) => c.cache = abs_path(k, v)?,
                ("socket", Some(v)) => c.socket = abs_path(k, v)?,
                ("pending", Some(v)) => c.pending = abs_path(k, v)?,
                ("passwd", Some(v)) => c.passwd = abs_path(k, v)?,
                ("home_base", Some(v)) => c.home_base = abs_path(k, v)?,
                ("skel", Some(v)) => c.skel = abs_path(k, v)?,
                ("level", Some(v)) => c.level = v.parse()?,
                ("max_age", Some(v)) => c.max_age_secs = Some(duration_secs(k, v)?),
                ("sync_status", Some(v)) => c.sync_status = abs_path(k, v)?,
                ("principals", Some(v)) => c.principals = abs_path(k, v)?,
                ("sessions", Some(v)) => c.sessions = abs_path(k, v)?,
                ("sudo_rules", Some(v)) => c.sudo_rules = abs_path(k, v)?,
                ("debug", None) => c.debug = true,
                ("nohome", None) => c.no_home = true,
                _ => {
                    return Err(format!(
                        "unknown argument {a:?} (known: cache=PATH socket=PATH pending=PATH passwd=PATH home_base=PATH skel=PATH level=ssh|sudo max_age=DURATION sync_status=PATH principals=DIR sessions=DIR debug nohome)"
                    ))
                }
            }
        }
        Ok(c)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_the_contract_paths() {
        let c = Config::parse([]).unwrap();
        assert_eq!(c.cache, PathBuf::from("/var/lib/smith/nss.cache"));
        assert_eq!(c.socket, PathBuf::from("/run/smith/hostd.sock"));
        assert_eq!(c.pending, PathBuf::from("/var/lib/smith/pending"));
        assert_eq!(c.home_base, PathBuf::from("/home"));
        assert_eq!(c.skel, PathBuf::from("/etc/skel"));
        assert_eq!(c.level, Level::Ssh);
        assert!(!c.debug);
    }

    #[test]
    fn parses_every_argument() {
        let c = Config::parse([
            "level=sudo",
            "debug",
            "cache=/tmp/c",
            "socket=/tmp/s",
            "home_base=/srv/home/",
            "skel=/tmp/skel",
            "pending=/tmp/p",
            "passwd=/tmp/passwd",
            "nohome",
            "max_age=8h",
            "sync_status=/tmp/s.json",
        ])
        .unwrap();
        assert_eq!(c.max_age_secs, Some(8 * 3600));
        assert_eq!(
            Config::parse(["max_age=90"]).unwrap().max_age_secs,
            Some(90)
        );
        assert_eq!(c.level, Level::Sudo);
        assert!(c.debug && c.no_home);
        assert_eq!(c.home_base, PathBuf::from("/srv/home"));
        assert_eq!(c.cache, PathBuf::from("/tmp/c"));
    }

    #[test]
    fn refuses_unknown_or_bad_arguments() {
        for bad in [
            "levle=sudo",
            "level=admin",
            "level",
            "home_base=home",
            "cache=",
            "debug=1",
            "max_age=0",
            "max_age=soon",
            "max_age=5y",
        ] {
            assert!(Config::parse([bad]).is_err(), "{bad}");
        }
    }
}
