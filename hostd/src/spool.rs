//! The host audit spool: every accepted [`HostEvent`] becomes one record of this host's
//! SHA-256 hash chain (`smith_api::chain`), appended durably to segment files in
//! `/var/lib/smith/spool/` until the CA has acknowledged it.
//!
//! Files (directory 0700, files 0600):
//! - `seg-<first seq, 20 digits>.jsonl`: append-only segments, one JSON line per record:
//!   `{"seq","prev_hash","hash","event","received_at","via","id"}`. The first four fields
//!   are the [`AuditRecord`] that is uploaded and hashed (`event` is the exact JSON text
//!   of the `HostEvent`); `received_at`, `via` and `id` (the sender's [`EventId`], absent
//!   for senders of earlier versions) are local metadata. A new segment starts after
//!   [`SEGMENT_RECORDS`] records or [`SEGMENT_BYTES`] bytes.
//! - `acked.json`: `{"acked_through","head_hash"}`, the CA's last acknowledgement,
//!   replaced atomically (write, fsync, rename).
//!
//! Owns: the record format, the chain head, recovery at open (a torn last line is cut
//! and logged; the head is the last complete record, else `acked.json`), group commit
//! ([`SpoolWriter`]: one fsync for every event that arrived while the previous one
//! ran), reading records for upload, deleting segments, and **once-only** appends: an
//! event whose id is among the last [`RECENT_IDS`] spooled is not written again, its
//! earlier seq is returned ([`Spooled::repeat`]). The ids are read back from the newest
//! segments at open (up to [`RECENT_IDS`]), so a repeat after a hostd restart is caught
//! too.
//!
//! Must never: acknowledge an event before it is on disk (fsync), rewrite or "fix" a
//! record once written, delete a segment holding a record the CA has not acknowledged,
//! or delete the newest segment (the writer may be appending to it).

use serde::{Deserialize, Serialize};
use smith_api::chain::{self, AuditAck, AuditRecord, GENESIS};
use smith_proto::event::{EventId, HostEvent};
use std::collections::{HashMap, VecDeque};
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use tracing::{info, warn};

/// A segment holds at most this many records.
pub const SEGMENT_RECORDS: u64 = 10_000;
/// A segment is closed once it is this large.
pub const SEGMENT_BYTES: u64 = 4 << 20;
/// The acknowledgement file.
pub const ACKED_FILE: &str = "acked.json";
/// The spool file of earlier versions (no chain); imported into the chain at open.
pub const LEGACY_FILE: &str = "events.jsonl";
/// Most events written with one fsync.
const MAX_GROUP: usize = 1024;
/// How many of the latest event ids are remembered to drop repeats. A repeat follows
/// its original within seconds (pam_smith's socket budget, then the next pending scan;
/// a restart re-reading sshd's log), so this is a wide margin at ~40 bytes each.
pub const RECENT_IDS: usize = 8192;

/// Bytes of the spool's segments on disk (what the CA has not acknowledged yet, plus
/// segments not pruned yet).
pub fn disk_bytes(dir: &Path) -> u64 {
    segments(dir)
        .map(|segs| {
            segs.iter()
                .filter_map(|(_, p)| fs::metadata(p).ok().map(|m| m.len()))
                .sum()
        })
        .unwrap_or(0)
}

/// One line of a segment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SpoolLine {
    #[serde(flatten)]
    pub record: AuditRecord,
    /// When hostd accepted the event (Unix seconds).
    #[serde(default)]
    pub received_at: u64,
    /// `socket`, `pending` (a file pam_smith left while hostd was down), `sshd-log`.
    #[serde(default)]
    pub via: String,
    /// The sender's id for the event (absent: a sender of an earlier version).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<EventId>,
}

/// An event to append.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewRecord {
    /// The exact JSON text of the `HostEvent` (what is hashed).
    pub text: String,
    pub via: String,
    pub received_at: u64,
    pub id: Option<EventId>,
}

/// Where an appended event is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Spooled {
    pub seq: u64,
    /// The id was already spooled (under `seq`): nothing was written.
    pub repeat: bool,
}

/// The latest [`RECENT_IDS`] event ids and their seqs, oldest forgotten first.
#[derive(Debug, Default)]
struct RecentIds {
    seqs: HashMap<EventId, u64>,
    order: VecDeque<EventId>,
}

impl RecentIds {
    fn get(&self, id: &EventId) -> Option<u64> {
        self.seqs.get(id).copied()
    }
    fn insert(&mut self, id: EventId, seq: u64) {
        if self.seqs.insert(id, seq).is_some() {
            return;
        }
        self.order.push_back(id);
        if self.order.len() > RECENT_IDS {
            if let Some(old) = self.order.pop_front() {
                self.seqs.remove(&old);
            }
        }
    }
    fn len(&self) -> usize {
        self.order.len()
    }
}

/// The `(id, seq)` of each complete line of a segment that has an id, in order.
fn ids_in(lines: &[(usize, &[u8])]) -> Vec<(EventId, u64)> {
    #[derive(Deserialize)]
    struct IdOnly {
        seq: u64,
        #[serde(default)]
        id: Option<EventId>,
    }
    lines
        .iter()
        .filter_map(|(_, l)| serde_json::from_slice::<IdOnly>(l).ok())
        .filter_map(|l| Some((l.id?, l.seq)))
        .collect()
}

/// A spooled record with its event decoded (for status, tests and tools).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpoolRecord {
    pub seq: u64,
    pub via: String,
    pub received_at: u64,
    pub event: HostEvent,
    pub record: AuditRecord,
}

#[derive(Debug, thiserror::Error)]
pub enum SpoolError {
    #[error("{0}")]
    Io(#[from] io::Error),
    #[error(
        "spool segment {file} line {line} is not a valid record ({reason}); it is kept as it \
         is and uploading stops before it: inspect the file"
    )]
    Corrupt {
        file: String,
        line: usize,
        reason: String,
    },
}

/// The CA's last acknowledgement as persisted in `acked.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct AckState {
    pub acked_through: u64,
    pub head_hash: String,
}

/// What [`Spool::open`] found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OpenReport {
    /// Bytes of a torn last line that were cut.
    pub torn_bytes: u64,
    /// Records imported from the legacy `events.jsonl`.
    pub imported: u64,
}

fn seg_name(first_seq: u64) -> String {
    format!("seg-{first_seq:020}.jsonl")
}

fn seg_first_seq(name: &str) -> Option<u64> {
    name.strip_prefix("seg-")?
        .strip_suffix(".jsonl")?
        .parse()
        .ok()
}

/// Segment files as (first seq, path), oldest first.
pub fn segments(dir: &Path) -> io::Result<Vec<(u64, PathBuf)>> {
    let mut out = Vec::new();
    let rd = match fs::read_dir(dir) {
        Ok(rd) => rd,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(out),
        Err(e) => return Err(e),
    };
    for e in rd.flatten() {
        if let Some(first) = e.file_name().to_str().and_then(seg_first_seq) {
            out.push((first, e.path()));
        }
    }
    out.sort();
    Ok(out)
}

fn open_file(path: &Path, create: bool) -> io::Result<File> {
    OpenOptions::new()
        .read(true)
        .append(true)
        .create(create)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(path)
}

/// Reads `acked.json` (absent: nothing acknowledged).
pub fn load_acked(dir: &Path) -> io::Result<AckState> {
    match crate::fsutil::read_optional(&dir.join(ACKED_FILE))? {
        None => Ok(AckState::default()),
        Some(b) => serde_json::from_slice(&b).map_err(|e| {
            io::Error::other(format!(
                "{} is not valid ({e}); fix or remove it (the CA's head is asked again)",
                dir.join(ACKED_FILE).display()
            ))
        }),
    }
}

/// The complete lines of a segment (`(line number, bytes)`), and the length of the
/// complete part.
fn complete_lines(bytes: &[u8]) -> (Vec<(usize, &[u8])>, usize) {
    let complete = bytes
        .iter()
        .rposition(|&b| b == b'\n')
        .map(|i| i + 1)
        .unwrap_or(0);
    let lines = bytes[..complete]
        .split(|&b| b == b'\n')
        .enumerate()
        .filter(|(_, l)| !l.is_empty())
        .map(|(i, l)| (i + 1, l))
        .collect();
    (lines, complete)
}

fn parse_line(file: &Path, line: usize, bytes: &[u8]) -> Result<SpoolLine, SpoolError> {
    serde_json::from_slice(bytes).map_err(|e| SpoolError::Corrupt {
        file: file.display().to_string(),
        line,
        reason: e.to_string(),
    })
}

struct Active {
    first_seq: u64,
    file: File,
    records: u64,
    bytes: u64,
}

/// The spool, owned by one writer (see [`SpoolWriter`]).
pub struct Spool {
    dir: PathBuf,
    host: String,
    head_seq: u64,
    head_hash: [u8; 32],
    active: Option<Active>,
    recent: RecentIds,
}

impl Spool {
    /// Opens the spool of `host` in `dir` (created 0700), recovering the chain head.
    pub fn open(dir: &Path, host: &str) -> Result<(Spool, OpenReport), SpoolError> {
        crate::fsutil::create_dirs(dir, 0o700)?;
        {
            use std::os::unix::fs::PermissionsExt;
            fs::set_permissions(dir, fs::Permissions::from_mode(0o700))?;
        }
        let mut report = OpenReport::default();
        let acked = load_acked(dir)?;
        let (mut head_seq, mut head_hash) = (
            acked.acked_through,
            chain::parse_hash(&acked.head_hash).unwrap_or(GENESIS),
        );
        let mut active = None;
        let mut segs = segments(dir)?;
        let mut recent_ids = Vec::new();
        // Lines looked at for ids (records of earlier versions have none).
        let mut examined = 0;
        if let Some((first, path)) = segs.pop() {
            let mut file = open_file(&path, false)?;
            let mut bytes = Vec::new();
            file.seek(SeekFrom::Start(0))?;
            file.read_to_end(&mut bytes)?;
            let (lines, complete) = complete_lines(&bytes);
            if complete < bytes.len() {
                report.torn_bytes = (bytes.len() - complete) as u64;
                warn!(
                    file = %path.display(),
                    bytes = report.torn_bytes,
                    "cutting a torn last spool line (a crash during a write; that event was never acknowledged)"
                );
                file.set_len(complete as u64)?;
                file.sync_all()?;
            }
            let n = lines.len() as u64;
            recent_ids = ids_in(&lines);
            examined = lines.len();
            if let Some((no, last)) = lines.last() {
                let rec = parse_line(&path, *no, last)?.record;
                head_seq = rec.seq;
                head_hash = chain::parse_hash(&rec.hash).ok_or_else(|| SpoolError::Corrupt {
                    file: path.display().to_string(),
                    line: *no,
                    reason: "hash is not 64 hex digits".into(),
                })?;
            }
            active = Some(Active {
                first_seq: first,
                file,
                records: n,
                bytes: complete as u64,
            });
        }
        // Too few ids in the newest segment (it was just started, or its lines are
        // long): older ones too, best-effort (they are only read for their ids).
        while examined < RECENT_IDS {
            let Some((_, path)) = segs.pop() else { break };
            match fs::read(&path) {
                Ok(bytes) => {
                    let lines = complete_lines(&bytes).0;
                    examined += lines.len();
                    let mut older = ids_in(&lines);
                    older.append(&mut recent_ids);
                    recent_ids = older;
                }
                Err(e) => {
                    warn!(file = %path.display(), error = %e, "cannot read an older spool segment for its event ids; repeats of its events are not recognised");
                    break;
                }
            }
        }
        let mut recent = RecentIds::default();
        for (id, seq) in recent_ids {
            recent.insert(id, seq);
        }
        let mut spool = Spool {
            dir: dir.to_path_buf(),
            host: host.to_string(),
            head_seq,
            head_hash,
            active,
            recent,
        };
        report.imported = spool.import_legacy()?;
        Ok((spool, report))
    }

    /// Imports the unchained `events.jsonl` of earlier versions, then removes it.
    fn import_legacy(&mut self) -> Result<u64, SpoolError> {
        #[derive(Deserialize)]
        struct Legacy {
            #[serde(default)]
            received_at: u64,
            #[serde(default)]
            via: String,
            event: HostEvent,
        }
        let path = self.dir.join(LEGACY_FILE);
        let Some(bytes) = crate::fsutil::read_optional(&path)? else {
            return Ok(0);
        };
        let (lines, _) = complete_lines(&bytes);
        let mut batch = Vec::new();
        for (_, l) in lines {
            if let Ok(r) = serde_json::from_slice::<Legacy>(l) {
                if let Ok(text) = serde_json::to_string(&r.event) {
                    batch.push(NewRecord {
                        text,
                        via: r.via,
                        received_at: r.received_at,
                        id: None,
                    });
                }
            }
        }
        let n = batch.len() as u64;
        if !batch.is_empty() {
            self.append_records(&batch)?;
        }
        fs::remove_file(&path)?;
        info!(
            records = n,
            "imported the unchained spool of an earlier version"
        );
        Ok(n)
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The chain head: (last seq, its hash).
    pub fn head(&self) -> (u64, [u8; 32]) {
        (self.head_seq, self.head_hash)
    }

    /// Appends one event (no id) and fsyncs; returns its sequence number.
    pub fn append(&mut self, event: &HostEvent, via: &str) -> io::Result<u64> {
        let text = serde_json::to_string(event).map_err(io::Error::other)?;
        let done = self.append_records(&[NewRecord {
            text,
            via: via.to_string(),
            received_at: crate::now_unix(),
            id: None,
        }])?;
        Ok(done[0].seq)
    }

    /// Appends events with one fsync, each once per id; returns where each is. On
    /// failure nothing of this call remains on disk.
    pub fn append_records(&mut self, events: &[NewRecord]) -> io::Result<Vec<Spooled>> {
        let mut done = Vec::with_capacity(events.len());
        let (mut seq, mut hash) = (self.head_seq, self.head_hash);
        let mut out = Vec::new();
        // Ids written by this call (a repeat may come in the same group).
        let mut fresh: Vec<(EventId, u64)> = Vec::new();
        for ev in events {
            if let Some(id) = ev.id {
                let known = self
                    .recent
                    .get(&id)
                    .or_else(|| fresh.iter().find(|(f, _)| *f == id).map(|(_, s)| *s));
                if let Some(seq) = known {
                    done.push(Spooled { seq, repeat: true });
                    continue;
                }
            }
            let rec = chain::next_record(&self.host, seq, &hash, ev.text.clone());
            seq = rec.seq;
            hash = chain::parse_hash(&rec.hash).unwrap_or(GENESIS);
            done.push(Spooled { seq, repeat: false });
            if let Some(id) = ev.id {
                fresh.push((id, seq));
            }
            let line = SpoolLine {
                record: rec,
                received_at: ev.received_at,
                via: ev.via.clone(),
                id: ev.id,
            };
            serde_json::to_writer(&mut out, &line).map_err(io::Error::other)?;
            out.push(b'\n');
        }
        if out.is_empty() {
            return Ok(done);
        }
        let rotate = match &self.active {
            None => true,
            Some(a) => a.records >= SEGMENT_RECORDS || a.bytes >= SEGMENT_BYTES,
        };
        if rotate {
            let first = self.head_seq + 1;
            let path = self.dir.join(seg_name(first));
            let file = open_file(&path, true)?;
            crate::fsutil::fsync_dir(&path)?;
            self.active = Some(Active {
                first_seq: first,
                file,
                records: 0,
                bytes: 0,
            });
        }
        let Some(a) = self.active.as_mut() else {
            return Err(io::Error::other("no active spool segment"));
        };
        if let Err(e) = a.file.write_all(&out).and_then(|_| a.file.sync_data()) {
            // Never leave a torn line for the next append.
            let _ = a.file.set_len(a.bytes);
            return Err(e);
        }
        a.records += seq - self.head_seq;
        a.bytes += out.len() as u64;
        self.head_seq = seq;
        self.head_hash = hash;
        for (id, seq) in fresh {
            self.recent.insert(id, seq);
        }
        Ok(done)
    }

    /// How many event ids are remembered (tests, status).
    pub fn recent_ids(&self) -> usize {
        self.recent.len()
    }

    /// First seq of the segment being written (tests).
    pub fn active_segment(&self) -> Option<u64> {
        self.active.as_ref().map(|a| a.first_seq)
    }
}

/// Reads up to `max_records` records (and about `max_bytes` of them) with
/// `seq > after`, in order. Only complete lines are read.
pub fn read_after(
    dir: &Path,
    after: u64,
    max_records: usize,
    max_bytes: usize,
) -> Result<Vec<AuditRecord>, SpoolError> {
    let segs = segments(dir)?;
    let mut out = Vec::new();
    let mut size = 0usize;
    for (i, (_, path)) in segs.iter().enumerate() {
        if let Some((next_first, _)) = segs.get(i + 1) {
            if *next_first <= after + 1 {
                continue;
            }
        }
        let bytes = match fs::read(path) {
            Ok(b) => b,
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(e) => return Err(e.into()),
        };
        let (lines, _) = complete_lines(&bytes);
        for (no, l) in lines {
            let rec = parse_line(path, no, l)?.record;
            if rec.seq <= after {
                continue;
            }
            size += l.len();
            if !out.is_empty() && size > max_bytes {
                return Ok(out);
            }
            out.push(rec);
            if out.len() >= max_records {
                return Ok(out);
            }
        }
    }
    Ok(out)
}

/// Every record with its decoded event, oldest first (status, tests). Unreadable lines
/// are skipped.
pub fn read_all(dir: &Path) -> io::Result<Vec<SpoolRecord>> {
    let mut out = Vec::new();
    for (_, path) in segments(dir)? {
        let bytes = match fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(e) => return Err(e),
        };
        let (lines, _) = complete_lines(&bytes);
        for (_, l) in lines {
            let Ok(line) = serde_json::from_slice::<SpoolLine>(l) else {
                continue;
            };
            let Ok(event) = serde_json::from_str::<HostEvent>(&line.record.event) else {
                continue;
            };
            out.push(SpoolRecord {
                seq: line.record.seq,
                via: line.via,
                received_at: line.received_at,
                event,
                record: line.record,
            });
        }
    }
    Ok(out)
}

/// Persists the CA's acknowledgement (atomically) and deletes every segment whose
/// records are all acknowledged, except the newest. Returns the segments deleted.
pub fn mark_acked(dir: &Path, ack: &AuditAck) -> io::Result<usize> {
    let state = AckState {
        acked_through: ack.acked_through,
        head_hash: ack.head_hash.clone(),
    };
    let bytes = serde_json::to_vec(&state).map_err(io::Error::other)?;
    crate::fsutil::atomic_write(&dir.join(ACKED_FILE), &bytes, 0o600)?;
    prune(dir, ack.acked_through)
}

/// Deletes segments entirely at or below `acked_through`, never the newest.
pub fn prune(dir: &Path, acked_through: u64) -> io::Result<usize> {
    let segs = segments(dir)?;
    let mut deleted = 0;
    for w in segs.windows(2) {
        // Segment w[0] holds seqs first..w[1].first-1.
        if w[1].0 <= acked_through + 1 {
            match fs::remove_file(&w[0].1) {
                Ok(()) => deleted += 1,
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(e),
            }
        }
    }
    if deleted > 0 {
        crate::fsutil::fsync_dir(&dir.join("x"))?;
    }
    Ok(deleted)
}

/// Highest seq in the spool (0 when empty), from the newest segment, else `acked.json`.
pub fn head_seq(dir: &Path) -> io::Result<u64> {
    if let Some((_, path)) = segments(dir)?.pop() {
        let bytes = fs::read(&path)?;
        let (lines, _) = complete_lines(&bytes);
        if let Some((_, l)) = lines.last() {
            if let Ok(line) = serde_json::from_slice::<SpoolLine>(l) {
                return Ok(line.record.seq);
            }
        }
    }
    Ok(load_acked(dir)?.acked_through)
}

/// The record with sequence number `seq`, if still in the spool.
pub fn record_at(dir: &Path, seq: u64) -> Result<Option<AuditRecord>, SpoolError> {
    if seq == 0 {
        return Ok(None);
    }
    Ok(read_after(dir, seq - 1, 1, usize::MAX)?
        .into_iter()
        .next()
        .filter(|r| r.seq == seq))
}

type Reply = mpsc::SyncSender<io::Result<Spooled>>;
/// An event for the writer thread: its JSON text, `via`, id, and where to answer.
type Job = (String, String, Option<EventId>, Reply);

/// Group commit in front of a [`Spool`]: callers block until their event is on disk;
/// events that arrive while a write+fsync runs share the next one.
pub struct SpoolWriter {
    tx: Mutex<Option<mpsc::Sender<Job>>>,
    thread: Mutex<Option<std::thread::JoinHandle<()>>>,
    head: Arc<Mutex<(u64, [u8; 32])>>,
    /// Woken after every write (the uploader waits on it).
    pub written: Arc<tokio::sync::Notify>,
}

impl SpoolWriter {
    pub fn start(spool: Spool) -> io::Result<SpoolWriter> {
        let (tx, rx) = mpsc::channel::<Job>();
        let head = Arc::new(Mutex::new(spool.head()));
        let written = Arc::new(tokio::sync::Notify::new());
        let (h, w) = (head.clone(), written.clone());
        let thread = std::thread::Builder::new()
            .name("smith-spool".into())
            .spawn(move || writer_loop(spool, rx, h, w))?;
        Ok(SpoolWriter {
            tx: Mutex::new(Some(tx)),
            thread: Mutex::new(Some(thread)),
            head,
            written,
        })
    }

    /// Appends `event` (its JSON text) durably, once per `id`; blocks until fsynced.
    pub fn append(&self, event: &HostEvent, via: &str, id: Option<EventId>) -> io::Result<Spooled> {
        let text = serde_json::to_string(event).map_err(io::Error::other)?;
        let (reply, wait) = mpsc::sync_channel(1);
        {
            let guard = self
                .tx
                .lock()
                .map_err(|_| io::Error::other("spool writer lock poisoned"))?;
            let tx = guard
                .as_ref()
                .ok_or_else(|| io::Error::other("the spool writer has stopped"))?;
            tx.send((text, via.to_string(), id, reply))
                .map_err(|_| io::Error::other("the spool writer has stopped"))?;
        }
        wait.recv()
            .map_err(|_| io::Error::other("the spool writer has stopped"))?
    }

    pub fn head(&self) -> (u64, [u8; 32]) {
        self.head.lock().map(|h| *h).unwrap_or((0, GENESIS))
    }

    /// Finishes pending writes and stops the thread.
    pub fn shutdown(&self) {
        if let Ok(mut g) = self.tx.lock() {
            g.take();
        }
        let t = self.thread.lock().ok().and_then(|mut g| g.take());
        if let Some(t) = t {
            let _ = t.join();
        }
    }
}

impl Drop for SpoolWriter {
    fn drop(&mut self) {
        self.shutdown();
    }
}

fn writer_loop(
    mut spool: Spool,
    rx: mpsc::Receiver<Job>,
    head: Arc<Mutex<(u64, [u8; 32])>>,
    written: Arc<tokio::sync::Notify>,
) {
    while let Ok(first) = rx.recv() {
        let mut group = vec![first];
        while group.len() < MAX_GROUP {
            match rx.try_recv() {
                Ok(j) => group.push(j),
                Err(_) => break,
            }
        }
        let now = crate::now_unix();
        let records: Vec<NewRecord> = group
            .iter()
            .map(|(text, via, id, _)| NewRecord {
                text: text.clone(),
                via: via.clone(),
                received_at: now,
                id: *id,
            })
            .collect();
        match spool.append_records(&records) {
            Ok(done) => {
                if let Ok(mut h) = head.lock() {
                    *h = spool.head();
                }
                for ((_, _, _, reply), d) in group.into_iter().zip(done) {
                    let _ = reply.send(Ok(d));
                }
                written.notify_one();
            }
            Err(e) => {
                for (_, _, _, reply) in group {
                    let _ = reply.send(Err(io::Error::new(e.kind(), e.to_string())));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use smith_proto::event::DeniedEvent;

    fn ev(user: &str) -> HostEvent {
        HostEvent::Denied(DeniedEvent {
            user: user.into(),
            service: "sshd".into(),
            rhost: "10.0.0.1".into(),
            reason: "no grant".into(),
            key_id: String::new(),
            at_unix: 1,
        })
    }

    fn verify(dir: &Path, host: &str) -> u64 {
        let recs = read_after(dir, 0, usize::MAX, usize::MAX).unwrap();
        let start = recs.first().map(|r| r.seq - 1).unwrap_or(0);
        let prev = if start == 0 {
            GENESIS
        } else {
            chain::parse_hash(&recs[0].prev_hash).unwrap()
        };
        chain::verify_chain(host, start, prev, &recs).unwrap().0
    }

    #[test]
    fn chain_survives_reopen_and_torn_lines() {
        let d = tempfile::tempdir().unwrap();
        let (mut s, r) = Spool::open(d.path(), "web-1").unwrap();
        assert_eq!(r, OpenReport::default());
        assert_eq!(s.append(&ev("a"), "socket").unwrap(), 1);
        assert_eq!(s.append(&ev("b"), "pending").unwrap(), 2);
        let head = s.head();
        drop(s);
        // A crash in the middle of a write.
        let seg = segments(d.path()).unwrap().pop().unwrap().1;
        let mut f = OpenOptions::new().append(true).open(&seg).unwrap();
        f.write_all(b"{\"seq\":3,\"prev_h").unwrap();
        drop(f);
        let (mut s, r) = Spool::open(d.path(), "web-1").unwrap();
        assert_eq!(r.torn_bytes, 16);
        assert_eq!(s.head(), head);
        assert_eq!(s.append(&ev("c"), "socket").unwrap(), 3);
        let all = read_all(d.path()).unwrap();
        assert_eq!(all.iter().map(|r| r.seq).collect::<Vec<_>>(), vec![1, 2, 3]);
        assert_eq!(all[2].event.user(), "c");
        assert_eq!(all[1].via, "pending");
        assert_eq!(verify(d.path(), "web-1"), 3);
        assert_eq!(crate::fsutil::mode_of(&seg), Some(0o600));
        assert_eq!(crate::fsutil::mode_of(d.path()), Some(0o700));
    }

    #[test]
    fn segments_rotate_and_only_acked_ones_are_deleted() {
        let d = tempfile::tempdir().unwrap();
        let (mut s, _) = Spool::open(d.path(), "h").unwrap();
        // Force small segments by writing past the record limit in two big groups.
        let many: Vec<NewRecord> = (0..SEGMENT_RECORDS)
            .map(|i| NewRecord {
                text: format!("{{\"i\":{i}}}"),
                via: "socket".into(),
                received_at: 1,
                id: None,
            })
            .collect();
        s.append_records(&many).unwrap();
        s.append_records(&many[..5]).unwrap();
        s.append_records(&many[..5]).unwrap();
        let segs = segments(d.path()).unwrap();
        assert_eq!(
            segs.iter().map(|s| s.0).collect::<Vec<_>>(),
            vec![1, SEGMENT_RECORDS + 1]
        );
        let head = s.head();
        // Not everything of the first segment is acked: nothing deleted.
        let h = |seq| {
            hex::encode(
                chain::parse_hash(&record_at(d.path(), seq).unwrap().unwrap().hash).unwrap(),
            )
        };
        let ack = AuditAck {
            acked_through: SEGMENT_RECORDS - 1,
            head_hash: h(SEGMENT_RECORDS - 1),
        };
        assert_eq!(mark_acked(d.path(), &ack).unwrap(), 0);
        let ack = AuditAck {
            acked_through: SEGMENT_RECORDS,
            head_hash: h(SEGMENT_RECORDS),
        };
        assert_eq!(mark_acked(d.path(), &ack).unwrap(), 1);
        // The newest is never deleted, even when fully acked.
        let ack = AuditAck {
            acked_through: head.0,
            head_hash: hex::encode(head.1),
        };
        assert_eq!(mark_acked(d.path(), &ack).unwrap(), 0);
        let batch = read_after(d.path(), SEGMENT_RECORDS, 500, usize::MAX).unwrap();
        assert_eq!(batch.len(), 10);
        assert_eq!(batch[0].seq, SEGMENT_RECORDS + 1);
        drop(s);
        let (s, _) = Spool::open(d.path(), "h").unwrap();
        assert_eq!(s.head(), head);
    }

    #[test]
    fn head_comes_from_acked_when_no_segment_is_left() {
        let d = tempfile::tempdir().unwrap();
        let h = chain::record_hash("h", 7, &GENESIS, "{}");
        mark_acked(
            d.path(),
            &AuditAck {
                acked_through: 7,
                head_hash: hex::encode(h),
            },
        )
        .unwrap();
        let (mut s, _) = Spool::open(d.path(), "h").unwrap();
        assert_eq!(s.head(), (7, h));
        assert_eq!(s.append(&ev("x"), "socket").unwrap(), 8);
        let r = record_at(d.path(), 8).unwrap().unwrap();
        assert_eq!(r.prev_hash, hex::encode(h));
    }

    #[test]
    fn legacy_spool_is_imported_into_the_chain() {
        let d = tempfile::tempdir().unwrap();
        let line =
            serde_json::json!({"seq": 1, "received_at": 5, "via": "socket", "event": ev("old")});
        fs::write(d.path().join(LEGACY_FILE), format!("{line}\n")).unwrap();
        let (s, r) = Spool::open(d.path(), "h").unwrap();
        assert_eq!(r.imported, 1);
        assert_eq!(s.head().0, 1);
        assert!(!d.path().join(LEGACY_FILE).exists());
        assert_eq!(read_all(d.path()).unwrap()[0].event.user(), "old");
    }

    fn rec(i: u64, id: Option<u128>) -> NewRecord {
        NewRecord {
            text: format!("{{\"i\":{i}}}"),
            via: "socket".into(),
            received_at: 1,
            id: id.map(EventId),
        }
    }

    #[test]
    fn an_event_id_is_spooled_once_even_across_a_restart() {
        let d = tempfile::tempdir().unwrap();
        let (mut s, _) = Spool::open(d.path(), "h").unwrap();
        let first = s.append_records(&[rec(1, Some(10)), rec(2, None)]).unwrap();
        assert_eq!(
            first,
            vec![
                Spooled {
                    seq: 1,
                    repeat: false
                },
                Spooled {
                    seq: 2,
                    repeat: false
                }
            ]
        );
        // The same id again, twice within one group, beside a new one and an id-less
        // event (never deduplicated): only the new ones are written.
        let again = s
            .append_records(&[
                rec(1, Some(10)),
                rec(3, Some(11)),
                rec(3, Some(11)),
                rec(2, None),
            ])
            .unwrap();
        assert_eq!(
            again,
            vec![
                Spooled {
                    seq: 1,
                    repeat: true
                },
                Spooled {
                    seq: 3,
                    repeat: false
                },
                Spooled {
                    seq: 3,
                    repeat: true
                },
                Spooled {
                    seq: 4,
                    repeat: false
                }
            ]
        );
        // Nothing at all to write: no write, same head.
        let head = s.head();
        assert_eq!(
            s.append_records(&[rec(1, Some(11))]).unwrap(),
            vec![Spooled {
                seq: 3,
                repeat: true
            }]
        );
        assert_eq!(s.head(), head);
        drop(s);
        // A restart reads the ids back from the segment.
        let (mut s, _) = Spool::open(d.path(), "h").unwrap();
        assert_eq!(s.recent_ids(), 2);
        assert_eq!(
            s.append_records(&[rec(1, Some(10))]).unwrap(),
            vec![Spooled {
                seq: 1,
                repeat: true
            }]
        );
        assert_eq!(
            read_after(d.path(), 0, 10, usize::MAX).unwrap().len(),
            4,
            "one record per id"
        );
        assert_eq!(verify(d.path(), "h"), 4);
        let lines = fs::read_to_string(&segments(d.path()).unwrap()[0].1).unwrap();
        assert!(
            lines.contains(&format!("\"id\":\"{}\"", EventId(10))),
            "{lines}"
        );
    }

    #[test]
    fn remembered_ids_are_bounded_and_read_back_from_the_newest_segments() {
        let d = tempfile::tempdir().unwrap();
        let (mut s, _) = Spool::open(d.path(), "h").unwrap();
        let n = SEGMENT_RECORDS + 3;
        let batch: Vec<NewRecord> = (0..n).map(|i| rec(i, Some(1000 + i as u128))).collect();
        s.append_records(&batch[..SEGMENT_RECORDS as usize])
            .unwrap();
        s.append_records(&batch[SEGMENT_RECORDS as usize..])
            .unwrap();
        assert_eq!(segments(d.path()).unwrap().len(), 2);
        assert_eq!(s.recent_ids(), RECENT_IDS);
        drop(s);
        let (mut s, _) = Spool::open(d.path(), "h").unwrap();
        assert_eq!(s.recent_ids(), RECENT_IDS);
        // The newest ids are known (the 3 of the new segment and the end of the older
        // one); the oldest were forgotten.
        let last = s
            .append_records(&[rec(0, Some(1000 + n as u128 - 1))])
            .unwrap();
        assert!(last[0].repeat);
        let old_seg = s
            .append_records(&[rec(0, Some(1000 + n as u128 - 5))])
            .unwrap();
        assert_eq!(
            old_seg[0],
            Spooled {
                seq: n - 4,
                repeat: true
            }
        );
        let forgotten = s.append_records(&[rec(0, Some(1000))]).unwrap();
        assert!(!forgotten[0].repeat);
    }

    #[test]
    fn the_writer_spools_concurrent_deliveries_of_one_id_once() {
        let d = tempfile::tempdir().unwrap();
        let (s, _) = Spool::open(d.path(), "h").unwrap();
        let w = Arc::new(SpoolWriter::start(s).unwrap());
        let threads: Vec<_> = (0..8)
            .map(|_| {
                let w = w.clone();
                std::thread::spawn(move || {
                    w.append(&ev("dup"), "socket", Some(EventId(42))).unwrap()
                })
            })
            .collect();
        let done: Vec<Spooled> = threads.into_iter().map(|t| t.join().unwrap()).collect();
        assert!(done.iter().all(|d| d.seq == 1), "{done:?}");
        assert_eq!(done.iter().filter(|d| !d.repeat).count(), 1, "{done:?}");
        assert_eq!(w.head().0, 1);
    }

    #[test]
    fn group_commit_writer_orders_and_acknowledges() {
        let d = tempfile::tempdir().unwrap();
        let (s, _) = Spool::open(d.path(), "h").unwrap();
        let w = Arc::new(SpoolWriter::start(s).unwrap());
        let mut threads = Vec::new();
        for t in 0..8 {
            let w = w.clone();
            threads.push(std::thread::spawn(move || {
                (0..25)
                    .map(|i| {
                        w.append(&ev(&format!("u{t}x{i}")), "socket", None)
                            .unwrap()
                            .seq
                    })
                    .collect::<Vec<u64>>()
            }));
        }
        let mut all: Vec<u64> = threads
            .into_iter()
            .flat_map(|t| t.join().unwrap())
            .collect();
        all.sort();
        assert_eq!(all, (1..=200).collect::<Vec<u64>>());
        assert_eq!(w.head().0, 200);
        assert_eq!(verify(d.path(), "h"), 200);
    }
}
