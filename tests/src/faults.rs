//! The fault matrix (issue 18): one fleet host under each external fault, each of five
//! operations measured, and each cell run again with the protection it tests switched
//! off, so that a green cell cannot be green by accident.
//!
//! The fleet: a real CA, host `web-1` (`env=prod`) with real sshd, smith-hostd, sudo and
//! the NSS/PAM modules, and four engineers whose certificates are in their ssh-agents:
//!
//! - alice: group `dev`, an `ssh` grant on `env=prod`: allowed to log in;
//! - oscar: group `ops`, a `sudo` grant on `env=prod`: allowed to log in and sudo;
//! - carol: groups `dev` and `stage`, holding a certificate issued for `env=stage` only:
//!   served on web-1 (her `dev` grant), refused there by grant binding (her certificate
//!   names the `stage` grant, which does not cover web-1);
//! - mallory: removed from `dev` before the matrix starts (synced), still holding a
//!   certificate issued while she was in it: refused, and not resolvable on web-1.
//!
//! The operations ([`Op`]) are real calls: `ssh` logins from the LAN (from the host's own
//! loopback while its network is cut), `sudo -n` in a login, `getent`/`id` inside the
//! host, and `pamtester` through the host's real `sudo` PAM stack (an audit record per
//! refusal). Every record an operation made is looked for at the CA (`audit list`) once
//! the fault is over: one marker per record, so a record that never arrives is *lost*
//! and one that arrives twice is *repeated*.
//!
//! Counts per cell ([`Figures`]): lockouts (an allowed user refused), admissions
//! (anyone else let in, or a call that should fail succeeding), the slowest call, calls
//! over [`SLOW`], records lost and repeated. A cell is green when all counts are 0; its
//! protection-off run ([`Switch`]) must count at least one failure.
//!
//! One fleet serves every cell: after each run [`Matrix::settle`] restores the host (CA
//! up, link up, hostd and sshd running on the real clock, the files a switch moved put
//! back, every audit record acknowledged) before the next fault.
//!
//! Must never: count a call as passed when it could not be made (a setup failure is an
//! error, not a green cell), or touch anything outside the fleet.

use crate::cmd::{outcome, wait_for, Outcome, DEFAULT_TIMEOUT};
use crate::fleet::{Client, Fleet, Host};
use anyhow::{bail, ensure, Context, Result};
use serde_json::Value;
use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;
use std::process::Command;
use std::time::{Duration, Instant};

/// What the table shows, for the head of `tests/FAULTS.md`.
pub const ABOUT: &str = "\
One fleet (`smith_tests::faults`): a real CA and host `web-1` (`env=prod`) with real sshd, \
smith-hostd, sudo, glibc and the NSS/PAM modules, `/var/lib/smith` on a 16 MiB tmpfs. \
alice has an `ssh` grant there, oscar a `sudo` grant; carol is served there but holds a \
certificate for another grant (`env=stage`); mallory was removed before the matrix and \
still holds a certificate. Each fault is injected from outside; under it, the calls are \
real: `ssh` logins (alice; carol and mallory), `sudo -n` in a login (oscar allowed, alice \
refused), `getent passwd alice`, `id -Gn oscar`, `getent passwd mallory`, and three \
refusals through the host's `sudo` PAM stack (`pamtester`). Every audit record those \
calls made carries a marker and is looked for at the CA (`smith-ca admin audit list`) \
once the host has settled.\n\n\
Columns: **lockouts** (an allowed user or lookup refused), **admissions** (anyone or \
anything else let through), the **slowest call** and the calls over 1 s, audit records \
**lost** (of those expected) and **repeated**. Each cell is then run once more with the \
protection it tests switched off (last columns; the switches are listed below the \
table): that run must count at least one failure, so a green cell cannot be green by \
accident. `cargo xtask test` runs the hostd-frozen and cache-corrupted rows \
(`tests/tests/faults.rs`).";

/// A call slower than this counts as a failure (the budget).
pub const SLOW: Duration = Duration::from_secs(1);
/// How long a record may take to reach the CA once the host has settled (every record
/// spooled and acknowledged, no pending file left).
const DELIVERY: Duration = Duration::from_secs(10);
/// The host under test.
const HOST: &str = "web-1";
/// libfaketime (its build for multi-threaded programs: hostd runs tokio), from Debian's
/// `libfaketime` (installed by `cargo xtask deps`).
pub const LIBFAKETIME: &str = "/usr/lib/x86_64-linux-gnu/faketime/libfaketimeMT.so.1";
/// The skew of [`Fault::ClockSkew`].
const SKEW: &str = "-1h";

/// An external fault, injected by the fleet, never by the product.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Fault {
    HostdKilled,
    HostdFrozen,
    CaDown,
    NetworkCut,
    CacheCorrupted,
    DiskFull,
    ClockSkew,
    SshdRestarted,
}

pub const FAULTS: [Fault; 8] = [
    Fault::HostdKilled,
    Fault::HostdFrozen,
    Fault::CaDown,
    Fault::NetworkCut,
    Fault::CacheCorrupted,
    Fault::DiskFull,
    Fault::ClockSkew,
    Fault::SshdRestarted,
];

impl Fault {
    /// Short name (also the `--fault` filter of `cargo xtask faults`).
    pub fn slug(self) -> &'static str {
        match self {
            Fault::HostdKilled => "hostd-killed",
            Fault::HostdFrozen => "hostd-frozen",
            Fault::CaDown => "ca-down",
            Fault::NetworkCut => "network-cut",
            Fault::CacheCorrupted => "cache-corrupted",
            Fault::DiskFull => "disk-full",
            Fault::ClockSkew => "clock-skew",
            Fault::SshdRestarted => "sshd-restarted",
        }
    }

    pub fn from_slug(s: &str) -> Option<Fault> {
        FAULTS.iter().copied().find(|f| f.slug() == s)
    }

    /// What the fleet does.
    pub fn what(self) -> &'static str {
        match self {
            Fault::HostdKilled => "SIGKILL to smith-hostd; the calls run while it is dead, then it is started again",
            Fault::HostdFrozen => "SIGSTOP to smith-hostd (socket open, nobody answering); SIGCONT after the calls",
            Fault::CaDown => "smith-ca stopped; started again after the calls",
            Fault::NetworkCut => "`ip link set <veth> down` on the host's link to the LAN (CA unreachable; engineers log in over the host's loopback); link up after",
            Fault::CacheCorrupted => "/var/lib/smith/nss.cache overwritten in place (64 random bytes mid-file) and truncated to 3/4, hostd running",
            Fault::DiskFull => "/var/lib/smith (a 16 MiB tmpfs for the whole matrix) filled to the last block, and a change at the CA that hostd must write; the filler removed after",
            Fault::ClockSkew => "hostd and sshd restarted under libfaketime, clock 1 h behind (FAKETIME=-1h); restarted on the real clock after",
            Fault::SshdRestarted => "the listening sshd stopped (SIGTERM, open sessions kept, as `systemctl restart ssh`) and started again; a session open across the restart",
        }
    }
}

/// An operation measured under a fault.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Op {
    /// alice (ssh grant) logs in: `ssh alice@web-1`.
    Allow,
    /// carol (certificate for another grant) and mallory (removed) try to log in.
    Refuse,
    /// oscar runs `sudo -n` (allowed); alice runs `sudo -n` (refused).
    Sudo,
    /// `getent passwd alice`, `id -Gn oscar` (has `smith-sudo`), `getent passwd mallory`.
    Getent,
    /// Refusals through the host's `sudo` PAM stack (`pamtester`) and oscar's `sudo`:
    /// each record at the CA once.
    Audit,
}

pub const OPS: [Op; 5] = [Op::Allow, Op::Refuse, Op::Sudo, Op::Getent, Op::Audit];

impl Op {
    pub fn name(self) -> &'static str {
        match self {
            Op::Allow => "allowed login",
            Op::Refuse => "refused login",
            Op::Sudo => "sudo",
            Op::Getent => "getent",
            Op::Audit => "audit delivery",
        }
    }
}

/// The expected outcome of `op` under `fault`.
pub fn expected(fault: Fault, op: Op) -> &'static str {
    use Fault::*;
    use Op::*;
    match (fault, op) {
        (ClockSkew, Allow) => "alice refused: sshd (and pam_smith) on a clock 1 h behind see her fresh certificate as not yet valid",
        (ClockSkew, Sudo) => "oscar cannot log in (certificate not yet valid on the host's clock), so no sudo; alice's sudo refused",
        (ClockSkew, Getent) => "served from the cache (hostd cannot sync: the CA's TLS certificate is not yet valid for it; it keeps its snapshot)",
        (ClockSkew, Audit) => "records wait in the spool (no upload with the CA's TLS certificate not yet valid) and arrive once after the clock is right",
        (CacheCorrupted, Allow | Sudo) => "allowed: pam_smith refuses the damaged cache and asks hostd; hostd rewrites the cache within 5 s",
        (CacheCorrupted, Getent) => "answered: nss_smith refuses the damaged cache and asks hostd's socket",
        (DiskFull, Allow | Sudo | Getent) => "unchanged: hostd's failed writes keep the old files (atomic replacement) and are retried",
        (DiskFull, Audit) => "hostd cannot spool and pam_smith's pending file cannot be written: the event goes to the spare queue /run/smith/pending, spooled once when space returns",
        (HostdKilled, Audit) => "records queued by pam_smith as pending files, spooled once when hostd is back",
        (HostdFrozen, Audit) => "pam_smith waits its 300 ms budget once and queues a pending copy, the next events are queued at once (quiet file); hostd thawed records each event once (event ids)",
        (HostdFrozen, Allow | Sudo | Getent) => "from the files hostd wrote; no call waits on the frozen daemon beyond its budget",
        (CaDown | NetworkCut, Audit) => "records stay in the spool until the CA acknowledges them; delivered once after",
        (SshdRestarted, Allow) => "allowed by the new sshd (the trust and principals files are in place); a session open across the restart keeps running",
        (SshdRestarted, Sudo) => "oscar's sudo allowed in a new login and in his session open across the restart (each record once); alice's refused",
        (_, Allow) => "allowed, from the cache and principals files of the last sync",
        (_, Refuse) => "refused (grant binding, removal), as at the last sync",
        (_, Sudo) => "oscar's sudo allowed, alice's refused, as at the last sync",
        (_, Getent) => "served from the cache of the last sync; mallory unknown",
        (_, Audit) => "each record at the CA once",
    }
}

/// How a cell's protection is switched off for its second run. Each is the smallest
/// change that takes that one protection away; most are done from outside the product
/// (what the host would be left with without the protection), two are product options.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Switch {
    /// Host state only in the daemon: the cache file and principals files moved away
    /// and hostd unavailable (already dead, else SIGSTOP so it neither answers nor
    /// rewrites them) while the calls run.
    StateOnlyInDaemon,
    /// Grant binding off: carol's principals file also lists the `stage` grant her
    /// certificate names (what hosts listed before grant-bound certificates).
    GrantBindingOff,
    /// pam_smith cannot queue: `/var/lib/smith/pending` and the spare `/run/smith/pending`
    /// replaced by files while hostd is unreachable.
    NoPendingQueue,
    /// Event ids off: pending copies renamed the way pam_smith named them before event
    /// ids (16 hex digits, no id), so hostd cannot tell a copy from a new event.
    NoEventIds,
    /// The snapshot expires: pam_smith's real `max_age=1` option on sshd's and sudo's
    /// account lines (refuse once the last sync is over 1 s old).
    SnapshotExpires,
    /// The spool does not wait for acknowledgement: unacknowledged spool segments
    /// deleted while the CA is out of reach.
    SpoolNotKept,
    /// No fallback from a damaged cache: hostd held (SIGSTOP) while the cache is damaged,
    /// and `getent` run with nss_smith's real `SMITH_NSS_BYPASS=1` (cache only).
    NoFallback,
    /// Writes not atomic: the cache and alice's and oscar's principals files truncated
    /// to zero, as a writer that truncates before writing leaves them on a full disk
    /// (hostd held so it does not repair them).
    WritesNotAtomic,
    /// The validity check not on the host's clock: sshd started without the skew (hostd
    /// still skewed).
    ValidityClockOff,
    /// sshd's trust file not kept in place: `/etc/ssh/smith_user_ca.pub` missing when
    /// sshd starts again.
    TrustFileMissing,
}

impl Switch {
    pub fn name(self) -> &'static str {
        match self {
            Switch::StateOnlyInDaemon => "state only in the daemon",
            Switch::GrantBindingOff => "grant binding off",
            Switch::NoPendingQueue => "no pending queue",
            Switch::NoEventIds => "no event ids",
            Switch::SnapshotExpires => "snapshot expires (max_age=1)",
            Switch::SpoolNotKept => "spool not kept until acked",
            Switch::NoFallback => "no fallback from a damaged cache",
            Switch::WritesNotAtomic => "writes not atomic",
            Switch::ValidityClockOff => "validity not on the host clock",
            Switch::TrustFileMissing => "trust file missing at sshd start",
        }
    }

    pub fn what(self) -> &'static str {
        match self {
            Switch::StateOnlyInDaemon => "the cache file and the principals files moved away while the calls run, hostd dead or held with SIGSTOP (so the modules have only the daemon to ask, and it does not rewrite them)",
            Switch::GrantBindingOff => "carol's principals file also lists the `stage` grant her certificate names (a host without grant binding lists every grant of the user); under the clock skew, sshd also runs on the real clock (its not-yet-valid check would refuse her first)",
            Switch::NoPendingQueue => "/var/lib/smith/pending and the spare /run/smith/pending replaced by files while hostd is unreachable (dead, else held with SIGSTOP): pam_smith cannot queue",
            Switch::NoEventIds => "pam_smith's pending copies renamed without their event id (the naming of pam_smith before event ids) while hostd is frozen",
            Switch::SnapshotExpires => "pam_smith's own `max_age=1` on the sshd and sudo account lines (a host that stops trusting its snapshot once the CA is gone)",
            Switch::SpoolNotKept => "the unacknowledged spool segments deleted while the CA is out of reach (a spool that drops records before the CA has them)",
            Switch::NoFallback => "hostd held (SIGSTOP) while the cache is damaged, and getent with nss_smith's `SMITH_NSS_BYPASS=1` (cache only)",
            Switch::WritesNotAtomic => "the cache and alice's and oscar's principals files truncated to 0 bytes (what a writer that truncates first leaves on a full disk), hostd held so it does not repair them",
            Switch::ValidityClockOff => "sshd started on the real clock while hostd runs 1 h behind (the certificate's validity checked on a clock where it is valid)",
            Switch::TrustFileMissing => "/etc/ssh/smith_user_ca.pub moved away before sshd starts again (a trust file not replaced atomically)",
        }
    }
}

/// The switch each cell's protection-off run uses.
pub fn switch_for(fault: Fault, op: Op) -> Switch {
    use Fault::*;
    use Op::*;
    match (fault, op) {
        (_, Refuse) => Switch::GrantBindingOff,
        (HostdKilled, Audit) => Switch::NoPendingQueue,
        (HostdFrozen, Audit) => Switch::NoEventIds,
        (CaDown | NetworkCut, Allow | Sudo) => Switch::SnapshotExpires,
        (CaDown | NetworkCut | ClockSkew, Audit) => Switch::SpoolNotKept,
        (CacheCorrupted, Allow | Sudo | Getent) => Switch::NoFallback,
        (DiskFull, Allow | Sudo | Getent) => Switch::WritesNotAtomic,
        (CacheCorrupted | DiskFull | SshdRestarted, Audit) => Switch::NoPendingQueue,
        (ClockSkew, Allow | Sudo) => Switch::ValidityClockOff,
        (SshdRestarted, Allow | Sudo) => Switch::TrustFileMissing,
        (_, Allow | Sudo | Getent) => Switch::StateOnlyInDaemon,
    }
}

/// One run's counts for one operation.
#[derive(Debug, Clone, Default)]
pub struct Figures {
    pub calls: u32,
    pub lockouts: u32,
    pub admissions: u32,
    pub slowest: Duration,
    pub slowest_call: String,
    /// Calls over [`SLOW`].
    pub slow: u32,
    pub expected_records: u32,
    pub lost: u32,
    pub repeated: u32,
    /// What went wrong, one line each (for the log).
    pub notes: Vec<String>,
}

impl Figures {
    /// Lockouts + admissions + slow calls + records lost or repeated.
    pub fn failures(&self) -> u32 {
        self.lockouts + self.admissions + self.slow + self.lost + self.repeated
    }

    fn timed(&mut self, what: &str, took: Duration) {
        self.calls += 1;
        if took > self.slowest {
            self.slowest = took;
            self.slowest_call = what.to_string();
        }
        if took > SLOW {
            self.slow += 1;
            self.notes.push(format!("{what} took {took:.2?}"));
        }
    }

    fn lockout(&mut self, what: &str, o: &Outcome) {
        self.lockouts += 1;
        self.notes.push(format!("LOCKOUT {what}: {}", brief(o)));
    }

    fn admission(&mut self, what: &str, o: &Outcome) {
        self.admissions += 1;
        self.notes.push(format!("ADMISSION {what}: {}", brief(o)));
    }
}

fn brief(o: &Outcome) -> String {
    let mut s = format!("exit {:?} {} {}", o.code, o.stdout.trim(), o.stderr.trim());
    s.truncate(300);
    s.replace('\n', " | ")
}

/// A cell of the table: its protected run and its protection-off run.
#[derive(Debug, Clone)]
pub struct Cell {
    pub fault: Fault,
    pub op: Op,
    pub on: Figures,
    pub off: Option<Figures>,
}

impl Cell {
    pub fn green(&self) -> bool {
        self.on.failures() == 0
    }
    /// The protection-off run counted a failure (or was not run).
    pub fn can_fail(&self) -> bool {
        self.off.as_ref().is_none_or(|f| f.failures() > 0)
    }
}

/// The shared fleet and its engineers.
pub struct Matrix {
    pub fleet: Fleet,
    alice: Client,
    oscar: Client,
    carol: Client,
    mallory: Client,
    /// The principal carol's certificate carries for the `stage` grant.
    carol_stage_principal: String,
    runs: u32,
    /// CA changes made during disk-full runs (each needs a new name).
    changes: u32,
}

fn cert(c: &Client, scope: &str) -> Result<()> {
    c.run(&["ssh-add", "-D"])?;
    c.smith(&[
        "cert", "--scope", scope, "--ttl", "6h", "--reason", "faults",
    ])?
    .ok()
    .with_context(|| format!("smith cert for {}", c.who))?;
    Ok(())
}

fn json(o: &Outcome) -> Result<Value> {
    serde_json::from_str(o.out()).with_context(|| format!("not JSON: {o}"))
}

impl Matrix {
    /// The CA, web-1 (with `/var/lib/smith` on a 16 MiB tmpfs), the four engineers with
    /// their certificates, mallory removed and synced.
    pub fn new() -> Result<Matrix> {
        ensure!(
            std::path::Path::new(LIBFAKETIME).exists(),
            "{LIBFAKETIME} is missing: install Debian's libfaketime (`cargo xtask deps`)"
        );
        let mut fleet = Fleet::new("faults")?;
        fleet.start_ca()?;
        for args in [
            vec!["group", "add", "dev"],
            vec!["group", "add", "ops"],
            vec!["group", "add", "stage"],
            vec!["user", "add", "alice", "--groups", "dev"],
            vec!["user", "add", "oscar", "--groups", "ops"],
            vec!["user", "add", "carol", "--groups", "dev,stage"],
            vec!["user", "add", "mallory", "--groups", "dev"],
        ] {
            fleet.admin_ok(&args)?;
        }
        fleet.grant("dev", "env=prod", "ssh", &[])?;
        fleet.grant("ops", "env=prod", "sudo", &[])?;
        let stage = fleet.grant("stage", "env=stage", "ssh", &[])?;
        let stage_id = stage["id"]
            .as_u64()
            .with_context(|| format!("grant id in {stage}"))?;
        fleet.add_host(HOST, "env=prod")?;
        // /var/lib/smith on a small tmpfs for the whole matrix (the disk-full fault fills
        // it); hostd restarted so that its own mount namespace sees it.
        {
            let h = fleet.host_mut(HOST);
            h.kill_hostd();
            h.sh("mode=$(stat -c %a /var/lib/smith)
                 mkdir -p /run/faults-under
                 mount --bind /var/lib/smith /run/faults-under
                 mount -t tmpfs -o size=16m,mode=$mode tmpfs /var/lib/smith
                 cp -a /run/faults-under/. /var/lib/smith/
                 umount /run/faults-under")?
                .ok()
                .context("a tmpfs at /var/lib/smith")?;
            h.start_hostd()?;
        }
        let alice = fleet.engineer("alice")?;
        let oscar = fleet.engineer("oscar")?;
        let carol = fleet.engineer("carol")?;
        let mallory = fleet.engineer("mallory")?;
        cert(&alice, "env=prod")?;
        cert(&oscar, "env=prod")?;
        cert(&carol, "env=stage")?;
        cert(&mallory, "env=prod")?;
        let web = fleet.host(HOST);
        wait_for(
            "mallory logs in before her removal",
            DEFAULT_TIMEOUT,
            || Ok(mallory.ssh("mallory", web, "true")?.success().then_some(())),
        )?;
        fleet.admin_ok(&["group", "remove-member", "dev", "mallory"])?;
        let web = fleet.host(HOST);
        wait_for("mallory's removal on web-1", DEFAULT_TIMEOUT, || {
            Ok((!web.exec(&["getent", "passwd", "mallory"])?.success()).then_some(()))
        })?;
        let mut m = Matrix {
            fleet,
            alice,
            oscar,
            carol,
            mallory,
            carol_stage_principal: format!("smith-grant:{stage_id}:ssh:carol"),
            runs: 0,
            changes: 0,
        };
        m.settle()?;
        // The matrix measures something: without a fault every operation passes.
        let base = m.run(None, &OPS, None)?;
        for (op, f) in &base {
            ensure!(
                f.failures() == 0,
                "without any fault, {} fails: {:?}",
                op.name(),
                f.notes
            );
        }
        Ok(m)
    }

    fn web(&self) -> &Host {
        self.fleet.host(HOST)
    }

    fn web_mut(&mut self) -> &mut Host {
        self.fleet.host_mut(HOST)
    }

    fn status(&self) -> Result<Value> {
        json(&self.web().exec(&["smith-host", "status", "--json"])?)
    }

    fn signal_hostd(&self, sig: i32) -> Result<()> {
        let pid = self.web().hostd_pid()?;
        // SAFETY: kill(2) on the pid of a smith-hostd this fleet started (checked by name).
        let r = unsafe { libc::kill(pid as i32, sig) };
        ensure!(r == 0, "kill({pid}, {sig}) failed");
        Ok(())
    }

    /// Holds hostd (SIGSTOP) if it runs; used by switches that must keep it from
    /// answering or repairing.
    fn hold_hostd(&self) -> Result<()> {
        if self.web().hostd.is_some() {
            self.signal_hostd(libc::SIGSTOP)?;
        }
        Ok(())
    }

    fn veth(&self) -> String {
        // The fleet names the host `sm<id>-h<i>` and its LAN end `v<id>h<i>`.
        self.web().ns.replacen("sm", "v", 1).replacen("-h", "h", 1)
    }

    /// Runs `ops` under `fault` (none: the baseline), with `switch` taking one
    /// protection away. Restores the host afterwards.
    pub fn run(
        &mut self,
        fault: Option<Fault>,
        ops: &[Op],
        switch: Option<Switch>,
    ) -> Result<BTreeMap<Op, Figures>> {
        self.runs += 1;
        let mark = format!("fm{}x{}", self.runs, std::process::id() % 10_000);
        let r = self.run_inner(fault, ops, switch, &mark);
        let settled = self.settle();
        let figs = r?;
        settled.context("restoring the host after the run")?;
        Ok(figs)
    }

    fn run_inner(
        &mut self,
        fault: Option<Fault>,
        ops: &[Op],
        switch: Option<Switch>,
        mark: &str,
    ) -> Result<BTreeMap<Op, Figures>> {
        // Switches that must be in place before the fault.
        if switch == Some(Switch::SnapshotExpires) {
            self.web()
                .sh("for f in sshd sudo; do cp -p /etc/pam.d/$f /run/faults-pam-$f; \
                     sed -i -E 's/^(account[[:space:]]+required[[:space:]]+pam_smith\\.so.*) # smith$/\\1 max_age=1 # smith/' /etc/pam.d/$f; \
                     grep -q 'max_age=1' /etc/pam.d/$f; done")?
                .ok()
                .context("max_age=1 on the account lines")?;
        }

        // The fault.
        let mut figs: BTreeMap<Op, Figures> = BTreeMap::new();
        let mut records: Vec<(Op, String)> = Vec::new();
        let mut via_console = false;
        let mut spanning: Option<(std::process::Child, Op, String)> = None;
        match fault {
            None => {}
            Some(Fault::HostdKilled) => self.web_mut().kill_hostd(),
            Some(Fault::HostdFrozen) => self.signal_hostd(libc::SIGSTOP)?,
            Some(Fault::CaDown) => self.fleet.stop_ca(),
            Some(Fault::NetworkCut) => {
                let (lan, veth) = (self.fleet.lan_ns.clone(), self.veth());
                run_sh(&format!("ip -n {lan} link set {veth} down"))?;
                via_console = true;
            }
            Some(Fault::CacheCorrupted) => {
                if switch == Some(Switch::NoFallback) {
                    self.hold_hostd()?;
                }
                self.web()
                    .sh("c=/var/lib/smith/nss.cache
                         size=$(stat -c %s $c)
                         dd if=/dev/urandom of=$c bs=1 count=64 seek=$((size / 2)) conv=notrunc status=none
                         truncate -s $((size * 3 / 4)) $c")?
                    .ok()
                    .context("damaging the cache")?;
            }
            Some(Fault::DiskFull) => {
                let before = self
                    .web()
                    .hostd_log()
                    .matches("No space left on device")
                    .count();
                self.web()
                    .sh("dd if=/dev/zero of=/var/lib/smith/.faults-filler bs=4k status=none 2>/dev/null || true
                         test \"$(stat -f -c %a /var/lib/smith)\" = 0")?
                    .ok()
                    .context("filling /var/lib/smith")?;
                // A change hostd must write (state, cache, principals) on the full disk.
                self.changes += 1;
                self.fleet
                    .admin_ok(&["group", "add", &format!("full{}", self.changes)])?;
                self.fleet.admin_ok(&[
                    "group",
                    "add-member",
                    &format!("full{}", self.changes),
                    "alice",
                ])?;
                // The fault bites: hostd fails to write that change.
                let web = self.fleet.host(HOST);
                wait_for(
                    "hostd's writes to fail on the full disk",
                    Duration::from_secs(20),
                    || {
                        Ok(
                            (web.hostd_log().matches("No space left on device").count() > before)
                                .then_some(()),
                        )
                    },
                )?;
            }
            Some(Fault::ClockSkew) => {
                let env = [
                    ("LD_PRELOAD", LIBFAKETIME),
                    ("FAKETIME", SKEW),
                    ("DONT_FAKE_MONOTONIC", "1"),
                ];
                let h = self.web_mut();
                h.kill_hostd();
                h.start_hostd_env(&env)?;
                stop_sshd(h)?;
                // Both refuse carol under the skew: grant binding's run takes the
                // validity check away too (documented with the switch).
                if matches!(
                    switch,
                    Some(Switch::ValidityClockOff | Switch::GrantBindingOff)
                ) {
                    h.start_sshd()?;
                } else {
                    h.start_sshd_env(&env)?;
                }
            }
            Some(Fault::SshdRestarted) => {
                // oscar's session, open across the restart, runs a sudo after it.
                let span_op = [Op::Sudo, Op::Audit].into_iter().find(|o| ops.contains(o));
                if let Some(op) = span_op {
                    let m = format!("{mark}-span");
                    let mut s = self.oscar.ssh_command(
                        "oscar",
                        self.fleet.host(HOST),
                        &format!(
                            "while [ ! -e /tmp/{mark}.go ]; do sleep 0.1; done; \
                             sudo -n echo {m} > /tmp/{m}.out 2>&1; sleep 600"
                        ),
                        &[],
                    );
                    s.stdin(std::process::Stdio::null())
                        .stdout(std::process::Stdio::null())
                        .stderr(std::process::Stdio::null());
                    spanning = Some((s.spawn()?, op, m));
                    let web = self.fleet.host(HOST);
                    wait_for(
                        "oscar's session before the restart",
                        DEFAULT_TIMEOUT,
                        || {
                            Ok(web
                                .exec(&["pgrep", "-u", "oscar", "-f", &format!("{mark}.go")])?
                                .success()
                                .then_some(()))
                        },
                    )?;
                }
                let h = self.web_mut();
                stop_sshd(h)?;
                if switch == Some(Switch::TrustFileMissing) {
                    h.sh("mv /etc/ssh/smith_user_ca.pub /run/faults-user-ca.pub")?
                        .ok()?;
                }
                h.start_sshd()?;
                if let Some((_, op, m)) = &spanning {
                    h.sh(&format!("touch /tmp/{mark}.go"))?.ok()?;
                    let out = format!("/tmp/{m}.out");
                    let t0 = Instant::now();
                    let got = wait_for(
                        "oscar's sudo in the spanning session",
                        Duration::from_secs(20),
                        || {
                            let o = h.exec(&["cat", &out])?;
                            Ok((o.success() && !o.stdout.is_empty()).then_some(o))
                        },
                    );
                    let f = figs.entry(*op).or_default();
                    f.timed(
                        "oscar's sudo in a session open across the restart",
                        t0.elapsed(),
                    );
                    match got {
                        Ok(o) if o.out() == m.as_str() => {}
                        Ok(o) => f.lockout("oscar's sudo in a session open across the restart", &o),
                        Err(e) => {
                            f.lockouts += 1;
                            f.notes
                                .push(format!("LOCKOUT oscar's session across the restart: {e:#}"));
                        }
                    }
                    records.push((*op, m.clone()));
                }
            }
        }

        // Switches applied under the fault, before the calls.
        match switch {
            // After the fault: a hostd started by it rewrites the principals files.
            Some(Switch::GrantBindingOff) => {
                let line = self.carol_stage_principal.clone();
                self.web()
                    .sh(&format!(
                        "cp -p /var/lib/smith/principals/carol /run/faults-carol
                         echo '{line}' >> /var/lib/smith/principals/carol"
                    ))?
                    .ok()?;
            }
            Some(Switch::StateOnlyInDaemon) => {
                self.hold_hostd()?;
                self.web()
                    .sh("mkdir -p /run/faults-state
                         mv /var/lib/smith/nss.cache /var/lib/smith/principals /run/faults-state/")?
                    .ok()?;
            }
            Some(Switch::NoPendingQueue) => {
                // hostd must be unreachable for pam_smith to need its queue.
                self.hold_hostd()?;
                self.web()
                    .sh("for q in /var/lib/smith/pending /run/smith/pending; do
                           s=/run/faults-q$(echo $q | tr / -)
                           rm -rf $s; mv $q $s 2>/dev/null || mkdir -p $s
                           : > $q
                         done")?
                    .ok()?;
            }
            Some(Switch::WritesNotAtomic) => {
                self.hold_hostd()?;
                self.web()
                    .sh("mkdir -p /run/faults-state
                         cp -a /var/lib/smith/nss.cache /var/lib/smith/principals /run/faults-state/
                         : > /var/lib/smith/nss.cache
                         : > /var/lib/smith/principals/alice
                         : > /var/lib/smith/principals/oscar")?
                    .ok()?;
            }
            Some(Switch::SnapshotExpires) => std::thread::sleep(Duration::from_millis(2100)),
            _ => {}
        }

        // The calls.
        // What is expected is the protected outcome, whatever the switch.
        let fresh_certs_valid = fault != Some(Fault::ClockSkew);
        for &op in ops {
            let mut f = figs.remove(&op).unwrap_or_default();
            match op {
                Op::Allow => {
                    for i in 0..2 {
                        let (o, t) = self.login(
                            &self.alice,
                            "alice",
                            &format!("echo {mark}-in{i}"),
                            via_console,
                        )?;
                        f.timed("alice's login", t);
                        let ok = o.success() && o.out().ends_with(&format!("{mark}-in{i}"));
                        match (ok, fresh_certs_valid) {
                            (false, true) => f.lockout("alice's login", &o),
                            (true, false) => {
                                f.admission("alice's login with a not-yet-valid certificate", &o)
                            }
                            _ => {}
                        }
                    }
                }
                Op::Refuse => {
                    for who in [&self.carol, &self.mallory] {
                        let (o, t) = self.login(who, &who.who, "true", via_console)?;
                        f.timed(&format!("{}'s login", who.who), t);
                        if o.success() {
                            f.admission(&format!("{}'s login", who.who), &o);
                        }
                    }
                }
                Op::Sudo => {
                    let m = format!("{mark}-so");
                    let (o, t) = self.login(
                        &self.oscar,
                        "oscar",
                        &format!("sudo -n echo {m}"),
                        via_console,
                    )?;
                    f.timed("oscar's login + sudo", t);
                    let ok = o.success() && o.out().ends_with(&m);
                    match (ok, fresh_certs_valid) {
                        (false, true) => f.lockout("oscar's sudo", &o),
                        (true, false) => {
                            f.admission("oscar's sudo with a not-yet-valid certificate", &o)
                        }
                        _ => {}
                    }
                    if o.code != Some(255) {
                        records.push((op, m));
                    }
                    let m = format!("{mark}-sa");
                    let (o, t) = self.login(
                        &self.alice,
                        "alice",
                        &format!("sudo -n echo {m}"),
                        via_console,
                    )?;
                    f.timed("alice's login + sudo", t);
                    if o.success() {
                        f.admission("alice's sudo", &o);
                    }
                    if o.code != Some(255) {
                        records.push((op, m));
                    }
                }
                Op::Getent => {
                    let bypass = switch == Some(Switch::NoFallback);
                    let t0 = Instant::now();
                    let o = self.in_host(&["getent", "passwd", "alice"], bypass)?;
                    f.timed("getent passwd alice", t0.elapsed());
                    if !o.success() || !o.out().starts_with("alice:") {
                        f.lockout("getent passwd alice", &o);
                    }
                    let t0 = Instant::now();
                    let o = self.in_host(&["id", "-Gn", "oscar"], bypass)?;
                    f.timed("id -Gn oscar", t0.elapsed());
                    if !o.success() || !o.out().split_whitespace().any(|g| g == "smith-sudo") {
                        f.lockout("id -Gn oscar (smith-sudo)", &o);
                    }
                    let t0 = Instant::now();
                    let o = self.in_host(&["getent", "passwd", "mallory"], bypass)?;
                    f.timed("getent passwd mallory", t0.elapsed());
                    if o.success() {
                        f.admission("getent passwd mallory", &o);
                    }
                }
                Op::Audit => {
                    for i in 0..3 {
                        let m = format!("{mark}-pt{i}");
                        let t0 = Instant::now();
                        let o = self.in_host(
                            &[
                                "pamtester",
                                "-I",
                                &format!("tty={m}"),
                                "sudo",
                                "alice",
                                "acct_mgmt",
                            ],
                            false,
                        )?;
                        f.timed("pamtester sudo alice acct_mgmt", t0.elapsed());
                        if o.success() {
                            f.admission("alice through sudo's PAM stack", &o);
                        }
                        records.push((op, m));
                    }
                }
            }
            figs.insert(op, f);
        }

        // Switches applied after the calls, before the fault ends.
        match switch {
            Some(Switch::NoEventIds) => {
                // Pending copies pam_smith left while hostd was frozen, renamed the way
                // earlier versions named them (no id in the name).
                let o = self.web().sh(
                    "n=0; for f in /var/lib/smith/pending/*.evt; do [ -e \"$f\" ] || continue
                       b=$(basename \"$f\" .evt); new=\"${b%-*}-$(head -c 8 /dev/urandom | od -An -tx1 | tr -d ' \\n').evt\"
                       mv \"$f\" \"/var/lib/smith/pending/$new\"; n=$((n+1)); done; echo $n",
                )?;
                ensure!(o.success(), "{o}");
            }
            Some(Switch::SpoolNotKept) => {
                // Then hostd starts again from its last acknowledgement (a running one
                // would keep appending to the deleted segment).
                self.web()
                    .sh("rm -f /var/lib/smith/spool/seg-*.jsonl")?
                    .ok()?;
                let h = self.web_mut();
                h.kill_hostd();
                h.start_hostd()?;
            }
            _ => {}
        }

        // The fault ends.
        match fault {
            None => {}
            Some(Fault::HostdKilled) => {}
            Some(Fault::HostdFrozen) => self.signal_hostd(libc::SIGCONT)?,
            Some(Fault::CaDown) => {}
            Some(Fault::NetworkCut) => {
                let (lan, veth) = (self.fleet.lan_ns.clone(), self.veth());
                run_sh(&format!("ip -n {lan} link set {veth} up"))?;
            }
            Some(Fault::CacheCorrupted) => {}
            Some(Fault::DiskFull) => {
                self.web().sh("rm -f /var/lib/smith/.faults-filler")?.ok()?;
            }
            Some(Fault::ClockSkew) => {
                let h = self.web_mut();
                h.kill_hostd();
                stop_sshd(h)?;
            }
            Some(Fault::SshdRestarted) => {
                if let Some((mut s, op, _)) = spanning.take() {
                    // The session spanning the restart must still run.
                    if s.try_wait()?.is_some() {
                        let f = figs.entry(op).or_default();
                        f.lockouts += 1;
                        f.notes
                            .push("LOCKOUT oscar's session ended with sshd's restart".into());
                    }
                    let _ = s.kill();
                    let _ = s.wait();
                }
            }
        }
        // Undo the switches' file moves now (settle does the rest).
        self.undo_switch_files()?;
        self.settle()?;

        // Delivery.
        if !records.is_empty() {
            self.count_records(&records, &mut figs)?;
        }
        Ok(figs)
    }

    /// `ssh user@web-1 CMD` from the LAN, or over the host's loopback from inside its
    /// network namespace (`via_console`, while its link is down). Timed.
    fn login(
        &self,
        c: &Client,
        user: &str,
        command: &str,
        via_console: bool,
    ) -> Result<(Outcome, Duration)> {
        let cmd = if via_console {
            let mut k = Command::new("ip");
            k.args(["netns", "exec", &self.web().ns, "ssh"])
                .env("HOME", &c.home)
                .env("SSH_AUTH_SOCK", &c.agent_sock)
                .args([
                    "-o",
                    "BatchMode=yes",
                    "-o",
                    "StrictHostKeyChecking=no",
                    "-o",
                    "UserKnownHostsFile=/dev/null",
                    "-o",
                    "LogLevel=ERROR",
                    "-o",
                    "ConnectTimeout=10",
                ])
                .arg(format!("{user}@127.0.0.1"))
                .arg(command);
            k
        } else {
            c.ssh_command(user, self.web(), command, &[])
        };
        let t0 = Instant::now();
        let o = outcome(cmd, DEFAULT_TIMEOUT)?;
        Ok((o, t0.elapsed()))
    }

    /// A command inside web-1 (`bypass`: with `SMITH_NSS_BYPASS=1`).
    fn in_host(&self, argv: &[&str], bypass: bool) -> Result<Outcome> {
        let mut c = self.web().cmd(argv[0]);
        c.args(&argv[1..]);
        if bypass {
            c.env("SMITH_NSS_BYPASS", "1");
        }
        outcome(c, DEFAULT_TIMEOUT)
    }

    /// Puts back what a switch moved (idempotent).
    fn undo_switch_files(&mut self) -> Result<()> {
        self.web()
            .sh("if [ -d /run/faults-state ]; then
                   for f in nss.cache principals; do
                     if [ -e /run/faults-state/$f ]; then rm -rf /var/lib/smith/$f; mv /run/faults-state/$f /var/lib/smith/$f; fi
                   done
                   rmdir /run/faults-state 2>/dev/null || rm -rf /run/faults-state
                 fi
                 for q in /var/lib/smith/pending /run/smith/pending; do
                   s=/run/faults-q$(echo $q | tr / -)
                   if [ -d $s ]; then rm -rf $q; mv $s $q; fi
                 done
                 if [ -e /run/faults-carol ]; then mv /run/faults-carol /var/lib/smith/principals/carol; fi
                 for f in sshd sudo; do
                   if [ -e /run/faults-pam-$f ]; then mv /run/faults-pam-$f /etc/pam.d/$f; fi
                 done
                 if [ -e /run/faults-user-ca.pub ]; then mv /run/faults-user-ca.pub /etc/ssh/smith_user_ca.pub; fi")?
            .ok()
            .context("undoing the switch")?;
        Ok(())
    }

    /// Restores the host: CA and link up, hostd running (not frozen, real clock), sshd
    /// running, every switch undone, the cache valid, every record acknowledged.
    pub fn settle(&mut self) -> Result<()> {
        self.undo_switch_files()?;
        let (lan, veth) = (self.fleet.lan_ns.clone(), self.veth());
        run_sh(&format!("ip -n {lan} link set {veth} up"))?;
        let ca_running = self
            .fleet
            .ca
            .as_mut()
            .and_then(|c| c.process.as_mut())
            .is_some_and(|p| p.is_running());
        if !ca_running {
            self.fleet.restart_ca()?;
        }
        // pam_smith's quiet file of the last fault would make the next run's first
        // events skip the socket.
        self.web()
            .sh("rm -f /var/lib/smith/.faults-filler /run/smith/hostd-quiet")?
            .ok()?;
        {
            let h = self.web_mut();
            let hostd_ok = h.hostd.as_mut().is_some_and(|b| b.is_running());
            if hostd_ok {
                if let Ok(pid) = h.hostd_pid() {
                    // SAFETY: kill(2) on a smith-hostd this fleet started.
                    unsafe { libc::kill(pid as i32, libc::SIGCONT) };
                }
            } else {
                h.kill_hostd();
                h.start_hostd()?;
            }
            let sshd_ok = h.sshd.as_mut().is_some_and(|b| b.is_running());
            if !sshd_ok {
                h.sshd.take();
                h.start_sshd()?;
            }
        }
        // The cache valid again (hostd repairs a damaged one; restarted if it does not
        // within 20 s), a sync since, everything acknowledged.
        let settled = |m: &Matrix| -> Result<(bool, bool)> {
            let st = m.status()?;
            let cache_ok = st["cache"]["valid"] == true;
            let pending_files = m
                .web()
                .sh("ls /var/lib/smith/pending /run/smith/pending 2>/dev/null || true")?
                .out()
                .lines()
                .any(|l| l.ends_with(".evt"));
            let ok = st["daemon_reachable"] == true
                && cache_ok
                && st["last_sync_error"].is_null()
                && st["audit"]["pending"].as_u64() == Some(0)
                && !pending_files;
            Ok((ok, cache_ok))
        };
        let t0 = Instant::now();
        let mut restarted = false;
        loop {
            let (ok, cache_ok) = settled(self).unwrap_or((false, true));
            if ok {
                return Ok(());
            }
            if !cache_ok && !restarted && t0.elapsed() > Duration::from_secs(20) {
                eprintln!("faults: web-1's cache still damaged after 20 s: restarting hostd");
                let h = self.web_mut();
                h.kill_hostd();
                h.start_hostd()?;
                restarted = true;
            }
            if t0.elapsed() > Duration::from_secs(120) {
                bail!("web-1 did not settle within 120 s: {}", self.status()?);
            }
            std::thread::sleep(Duration::from_millis(250));
        }
    }

    /// Waits for every expected record at the CA, then counts the lost and repeated.
    fn count_records(
        &self,
        records: &[(Op, String)],
        figs: &mut BTreeMap<Op, Figures>,
    ) -> Result<()> {
        let count = || -> Result<HashMap<String, u32>> {
            let trail = self.fleet.trail(HOST)?;
            let mut seen: HashMap<String, u32> = HashMap::new();
            for r in trail.iter().filter(|r| r["kind"] == "sudo") {
                let e = &r["event"];
                let hay = format!(
                    "{} {}",
                    e["command"].as_str().unwrap_or(""),
                    e["tty"].as_str().unwrap_or("")
                );
                for (_, m) in records {
                    if hay.split([' ', '/']).any(|w| w == m) {
                        *seen.entry(m.clone()).or_default() += 1;
                    }
                }
            }
            Ok(seen)
        };
        let deadline = Instant::now() + DELIVERY;
        let mut seen = count()?;
        while records.iter().any(|(_, m)| !seen.contains_key(m)) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(500));
            seen = count()?;
        }
        // A late copy (a pending scan every 3 s) would show as a repeat.
        std::thread::sleep(Duration::from_secs(4));
        let seen = count()?;
        for (op, m) in records {
            let f = figs.entry(*op).or_default();
            f.expected_records += 1;
            match seen.get(m).copied().unwrap_or(0) {
                0 => {
                    f.lost += 1;
                    f.notes.push(format!("LOST record {m}"));
                }
                1 => {}
                n => {
                    f.repeated += n - 1;
                    f.notes.push(format!("REPEATED record {m} ×{n}"));
                }
            }
        }
        Ok(())
    }
}

/// Stops the listening sshd as `systemctl restart` would (SIGTERM to the main process
/// only: open sessions stay), and waits for it to be gone.
fn stop_sshd(h: &mut Host) -> Result<()> {
    let Ok(pid) = h.sshd_pid() else {
        h.sshd.take();
        return Ok(());
    };
    // SAFETY: kill(2) on the sshd this fleet started (checked by name).
    unsafe { libc::kill(pid as i32, libc::SIGTERM) };
    let bg = h.sshd.as_mut().context("sshd")?;
    wait_for("sshd to stop", Duration::from_secs(10), || {
        Ok((!bg.is_running()).then_some(()))
    })?;
    h.sshd.take();
    Ok(())
}

fn run_sh(script: &str) -> Result<Outcome> {
    let mut c = Command::new("/bin/sh");
    c.arg("-ec").arg(script);
    outcome(c, DEFAULT_TIMEOUT)?.ok()
}

/// Runs the given cells: one protected run per fault (all its operations at once),
/// then one protection-off run per cell. `progress` gets a line per run.
pub fn run_cells(
    m: &mut Matrix,
    cells: &[(Fault, Op)],
    with_off: bool,
    progress: &mut dyn FnMut(&str),
) -> Result<Vec<Cell>> {
    let mut by_fault: BTreeMap<Fault, Vec<Op>> = BTreeMap::new();
    for &(f, op) in cells {
        by_fault.entry(f).or_default().push(op);
    }
    let mut out = Vec::new();
    for (fault, ops) in by_fault {
        let t0 = Instant::now();
        let on = m
            .run(Some(fault), &ops, None)
            .with_context(|| format!("fault {}", fault.slug()))?;
        progress(&format!(
            "{}: {} in {:.1?}",
            fault.slug(),
            ops.iter()
                .map(|op| format!("{} {}", op.name(), summary(&on[op])))
                .collect::<Vec<_>>()
                .join("; "),
            t0.elapsed()
        ));
        for op in &ops {
            for n in &on[op].notes {
                progress(&format!("  {}/{}: {n}", fault.slug(), op.name()));
            }
        }
        for op in ops {
            let off = if with_off {
                let sw = switch_for(fault, op);
                let t0 = Instant::now();
                let r = m.run(Some(fault), &[op], Some(sw)).with_context(|| {
                    format!(
                        "fault {} / {} with {} off",
                        fault.slug(),
                        op.name(),
                        sw.name()
                    )
                })?;
                let f = r.get(&op).cloned().unwrap_or_default();
                progress(&format!(
                    "{} / {} with {}: {} in {:.1?}",
                    fault.slug(),
                    op.name(),
                    sw.name(),
                    summary(&f),
                    t0.elapsed()
                ));
                for n in &f.notes {
                    progress(&format!("  (off) {n}"));
                }
                Some(f)
            } else {
                None
            };
            out.push(Cell {
                fault,
                op,
                on: on.get(&op).cloned().unwrap_or_default(),
                off,
            });
        }
    }
    Ok(out)
}

fn summary(f: &Figures) -> String {
    format!(
        "L{} A{} slow{} lost{} rep{} max {:.0?}",
        f.lockouts, f.admissions, f.slow, f.lost, f.repeated, f.slowest
    )
}

fn ms(d: Duration) -> String {
    format!("{} ms", d.as_millis())
}

/// The markdown table of `cells`, then the faults, expectations and switches it uses.
pub fn table(cells: &[Cell]) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "| fault | operation | lockouts | admissions | slowest call | calls > 1 s | records lost | repeated | | protection switched off | off: lockouts / admissions / > 1 s / lost / repeated |"
    );
    let _ = writeln!(s, "|---|---|---:|---:|---:|---:|---:|---:|---|---|---|");
    for c in cells {
        let f = &c.on;
        let verdict = if c.green() { "ok" } else { "**FAIL**" };
        let off = match &c.off {
            Some(o) => format!(
                "{} / {} / {} / {} / {}{}",
                o.lockouts,
                o.admissions,
                o.slow,
                o.lost,
                o.repeated,
                if o.failures() == 0 {
                    " **(0: cannot fail?)**"
                } else {
                    ""
                }
            ),
            None => "not run".into(),
        };
        let _ = writeln!(
            s,
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
            c.fault.slug(),
            c.op.name(),
            f.lockouts,
            f.admissions,
            ms(f.slowest),
            f.slow,
            if f.expected_records > 0 || c.op == Op::Audit {
                format!("{} of {}", f.lost, f.expected_records)
            } else {
                "–".into()
            },
            if f.expected_records > 0 || c.op == Op::Audit {
                f.repeated.to_string()
            } else {
                "–".into()
            },
            verdict,
            switch_for(c.fault, c.op).name(),
            off
        );
    }
    let mut faults: Vec<Fault> = cells.iter().map(|c| c.fault).collect();
    faults.dedup();
    let _ = writeln!(s, "\n### Faults and expected outcomes\n");
    for f in faults {
        let _ = writeln!(s, "- **{}**: {}", f.slug(), f.what());
        for c in cells.iter().filter(|c| c.fault == f) {
            let _ = writeln!(s, "  - {}: {}", c.op.name(), expected(f, c.op));
        }
    }
    let _ = writeln!(s, "\n### Protections switched off\n");
    let mut seen = Vec::new();
    for c in cells {
        let sw = switch_for(c.fault, c.op);
        if !seen.contains(&sw) {
            seen.push(sw);
            let _ = writeln!(s, "- **{}**: {}", sw.name(), sw.what());
        }
    }
    s
}

/// Fails unless every cell is green and every protection-off run counted a failure.
pub fn verdict(cells: &[Cell]) -> Result<()> {
    let red: Vec<String> = cells
        .iter()
        .filter(|c| !c.green())
        .map(|c| format!("{} / {}: {:?}", c.fault.slug(), c.op.name(), c.on.notes))
        .collect();
    let blind: Vec<String> = cells
        .iter()
        .filter(|c| !c.can_fail())
        .map(|c| {
            format!(
                "{} / {} with {} off counted nothing",
                c.fault.slug(),
                c.op.name(),
                switch_for(c.fault, c.op).name()
            )
        })
        .collect();
    if !red.is_empty() || !blind.is_empty() {
        bail!(
            "cells failing:\n{}\nprotection-off runs that counted nothing:\n{}",
            red.join("\n"),
            blind.join("\n")
        );
    }
    Ok(())
}
