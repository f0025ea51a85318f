//! The local socket protocol between hostd (`/run/smith/hostd.sock`) and its clients
//! (nss_smith's fallback path, pam_smith, `smith-host`).
//!
//! A frame is a big-endian `u32` payload length (at most [`MAX_FRAME`]) followed by the
//! payload: protocol version ([`PROTOCOL_VERSION`]), a message kind, then the fields.
//! Integers are big-endian, strings are a `u32` length and bytes (at most
//! [`MAX_STRING`]). One request, one response, per frame; a connection may carry many.
//!
//! The same encoding of a [`HostEvent`] is used for the pending-event files pam_smith
//! writes when hostd is unreachable. An event travels with its [`EventId`] (request kind
//! [`RQ_EVENT_ID`]; a pending file's name ends in it, see [`pending_file_id`]) so that
//! hostd spools it once however often it is delivered. The request kind without an id
//! is still read (senders of earlier versions), and pending files keep the one format
//! every version reads.

use crate::event::{
    AccessEndedEvent, DeniedEvent, EventId, HostEvent, SessionEvent, SessionPhase, SshdLoginEvent,
    SudoEvent,
};
use std::fmt;
use std::io::{self, Read, Write};

pub const PROTOCOL_VERSION: u8 = 1;
/// Largest frame payload accepted, both ways.
pub const MAX_FRAME: usize = 64 * 1024;
/// Largest string field.
pub const MAX_STRING: usize = 16 * 1024;
/// Most members or gids in one response.
pub const MAX_LIST: usize = 8192;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WireError {
    Truncated,
    TooLarge(usize),
    BadVersion(u8),
    BadKind(u8),
    BadUtf8,
    TrailingBytes,
}

impl fmt::Display for WireError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            WireError::Truncated => write!(f, "message is truncated"),
            WireError::TooLarge(n) => write!(f, "message field or frame too large ({n})"),
            WireError::BadVersion(v) => write!(
                f,
                "protocol version {v} is not supported (this side speaks {PROTOCOL_VERSION})"
            ),
            WireError::BadKind(k) => write!(f, "unknown message kind {k}"),
            WireError::BadUtf8 => write!(f, "string field is not UTF-8"),
            WireError::TrailingBytes => write!(f, "unexpected bytes after the message"),
        }
    }
}

impl std::error::Error for WireError {}

impl From<WireError> for io::Error {
    fn from(e: WireError) -> io::Error {
        io::Error::new(io::ErrorKind::InvalidData, e)
    }
}

/// A user as returned over the socket.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WireUser {
    pub name: String,
    pub uid: u32,
    pub gid: u32,
    pub gecos: String,
    pub dir: String,
    pub shell: String,
    /// 1 = ssh, 2 = sudo (see [`crate::Level`]).
    pub level: u8,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WireGroup {
    pub name: String,
    pub gid: u32,
    pub members: Vec<String>,
}

// A request lives on the stack for one exchange; boxing the event (the large variant)
// would only add an allocation inside pam_smith's host process.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request {
    Ping,
    UserByName(String),
    UserByUid(u32),
    GroupByName(String),
    GroupByGid(u32),
    /// Supplementary gids of a user, answered by [`Response::Gids`] (which does not say
    /// whose: kept for modules of earlier versions).
    GroupsOfUser(String),
    /// Supplementary gids of a user, answered by [`Response::GidsOf`], which names the
    /// user it answers for (issue 14, D13: an answer is bound to its question).
    GidsOf(String),
    /// Record an audit event; accepted only from root peers. `id` makes a repeated
    /// delivery of the same event a no-op (`None`: a sender of an earlier version).
    Event {
        id: Option<EventId>,
        event: HostEvent,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Response {
    Pong {
        snapshot_version: u64,
        users: u32,
        last_sync_unix: u64,
    },
    /// `None`: authoritative miss.
    User(Option<WireUser>),
    Group(Option<WireGroup>),
    Gids(Option<Vec<u32>>),
    /// The answer to [`Request::GidsOf`]: `gids` is `None` for an authoritative miss.
    GidsOf {
        user: String,
        gids: Option<Vec<u32>>,
    },
    /// The event is durably in hostd's spool under this sequence number.
    Ack(u64),
    Error {
        code: ErrorCode,
        message: String,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorCode {
    /// hostd has no snapshot yet: callers must treat this as "unavailable".
    Unavailable = 1,
    /// The peer may not make this request (non-root asking to record an event).
    PermissionDenied = 2,
    BadRequest = 3,
    Internal = 4,
}

impl ErrorCode {
    fn from_u8(v: u8) -> ErrorCode {
        match v {
            1 => ErrorCode::Unavailable,
            2 => ErrorCode::PermissionDenied,
            3 => ErrorCode::BadRequest,
            _ => ErrorCode::Internal,
        }
    }
}

// --- encoding primitives ---------------------------------------------------------------

#[derive(Default)]
pub struct Enc {
    buf: Vec<u8>,
}

impl Enc {
    fn new(kind: u8) -> Enc {
        Enc {
            buf: vec![PROTOCOL_VERSION, kind],
        }
    }
    fn u8(&mut self, v: u8) -> &mut Self {
        self.buf.push(v);
        self
    }
    fn u32(&mut self, v: u32) -> &mut Self {
        self.buf.extend_from_slice(&v.to_be_bytes());
        self
    }
    fn u64(&mut self, v: u64) -> &mut Self {
        self.buf.extend_from_slice(&v.to_be_bytes());
        self
    }
    /// Strings longer than [`MAX_STRING`] are cut at a char boundary (audit fields such
    /// as a command line may be long; the protocol bound must hold).
    fn str(&mut self, s: &str) -> &mut Self {
        let mut end = s.len().min(MAX_STRING);
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        self.u32(end as u32);
        self.buf.extend_from_slice(&s.as_bytes()[..end]);
        self
    }
    fn opt_u64(&mut self, v: Option<u64>) -> &mut Self {
        match v {
            Some(x) => self.u8(1).u64(x),
            None => self.u8(0),
        }
    }
    fn id(&mut self, id: EventId) -> &mut Self {
        self.buf.extend_from_slice(&id.0.to_be_bytes());
        self
    }
    fn finish(self) -> Vec<u8> {
        self.buf
    }
}

pub struct Dec<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Dec<'a> {
    /// Checks the version byte and returns the decoder and the message kind.
    fn open(buf: &'a [u8]) -> Result<(Dec<'a>, u8), WireError> {
        if buf.len() < 2 {
            return Err(WireError::Truncated);
        }
        if buf[0] != PROTOCOL_VERSION {
            return Err(WireError::BadVersion(buf[0]));
        }
        Ok((Dec { buf, pos: 2 }, buf[1]))
    }
    fn take(&mut self, n: usize) -> Result<&'a [u8], WireError> {
        let end = self.pos.checked_add(n).ok_or(WireError::Truncated)?;
        let s = self.buf.get(self.pos..end).ok_or(WireError::Truncated)?;
        self.pos = end;
        Ok(s)
    }
    fn u8(&mut self) -> Result<u8, WireError> {
        Ok(self.take(1)?[0])
    }
    fn u32(&mut self) -> Result<u32, WireError> {
        let s = self.take(4)?;
        Ok(u32::from_be_bytes([s[0], s[1], s[2], s[3]]))
    }
    fn u64(&mut self) -> Result<u64, WireError> {
        let s = self.take(8)?;
        let mut a = [0u8; 8];
        a.copy_from_slice(s);
        Ok(u64::from_be_bytes(a))
    }
    fn str(&mut self) -> Result<String, WireError> {
        let n = self.u32()? as usize;
        if n > MAX_STRING {
            return Err(WireError::TooLarge(n));
        }
        let s = self.take(n)?;
        String::from_utf8(s.to_vec()).map_err(|_| WireError::BadUtf8)
    }
    fn opt_u64(&mut self) -> Result<Option<u64>, WireError> {
        match self.u8()? {
            0 => Ok(None),
            _ => Ok(Some(self.u64()?)),
        }
    }
    fn opt_u32(&mut self) -> Result<Option<u32>, WireError> {
        match self.opt_u64()? {
            None => Ok(None),
            Some(v) => u32::try_from(v)
                .map(Some)
                .map_err(|_| WireError::TooLarge(usize::MAX)),
        }
    }
    fn id(&mut self) -> Result<EventId, WireError> {
        let mut a = [0u8; 16];
        a.copy_from_slice(self.take(16)?);
        Ok(EventId(u128::from_be_bytes(a)))
    }
    fn list_len(&mut self) -> Result<usize, WireError> {
        let n = self.u32()? as usize;
        if n > MAX_LIST {
            return Err(WireError::TooLarge(n));
        }
        Ok(n)
    }
    fn end(self) -> Result<(), WireError> {
        if self.pos == self.buf.len() {
            Ok(())
        } else {
            Err(WireError::TrailingBytes)
        }
    }
}

// --- events ------------------------------------------------------------------------------

const EV_SESSION: u8 = 1;
const EV_SUDO: u8 = 2;
const EV_DENIED: u8 = 3;
const EV_SSHD: u8 = 4;
const EV_ACCESS_ENDED: u8 = 5;

fn enc_event(e: &mut Enc, ev: &HostEvent) {
    match ev {
        HostEvent::Session(s) => {
            e.u8(EV_SESSION)
                .u8(match s.phase {
                    SessionPhase::Open => 0,
                    SessionPhase::Close => 1,
                })
                .str(&s.user)
                .str(&s.service)
                .str(&s.rhost)
                .str(&s.tty)
                .u32(s.pid)
                .str(&s.key_id)
                .opt_u64(s.serial)
                .u64(s.at_unix)
                .opt_u64(s.duration_secs);
        }
        HostEvent::Sudo(s) => {
            e.u8(EV_SUDO)
                .str(&s.user)
                .str(&s.target)
                .str(&s.command)
                .str(&s.cwd)
                .str(&s.tty)
                .u8(s.allowed as u8)
                .str(&s.reason)
                .u32(s.pid)
                .str(&s.key_id)
                .u64(s.at_unix);
        }
        HostEvent::Denied(s) => {
            e.u8(EV_DENIED)
                .str(&s.user)
                .str(&s.service)
                .str(&s.rhost)
                .str(&s.reason)
                .str(&s.key_id)
                .u64(s.at_unix);
        }
        HostEvent::Sshd(s) => {
            e.u8(EV_SSHD)
                .u8(s.accepted as u8)
                .str(&s.user)
                .str(&s.rhost)
                .str(&s.method)
                .str(&s.key_type)
                .str(&s.fingerprint)
                .str(&s.key_id)
                .opt_u64(s.serial)
                .str(&s.ca_fingerprint)
                .u64(s.at_unix);
        }
        HostEvent::AccessEnded(s) => {
            e.u8(EV_ACCESS_ENDED)
                .str(&s.user)
                .opt_u64(s.uid.map(u64::from))
                .str(&s.scope)
                .str(&s.action)
                .str(&s.reason)
                .str(&s.method)
                .u32(s.processes)
                .u32(s.survivors)
                .opt_u64(s.session_pid.map(u64::from))
                .str(&s.key_id)
                .str(&s.by)
                .u64(s.at_unix);
        }
    }
}

fn dec_event(d: &mut Dec<'_>) -> Result<HostEvent, WireError> {
    Ok(match d.u8()? {
        EV_SESSION => HostEvent::Session(SessionEvent {
            phase: if d.u8()? == 0 {
                SessionPhase::Open
            } else {
                SessionPhase::Close
            },
            user: d.str()?,
            service: d.str()?,
            rhost: d.str()?,
            tty: d.str()?,
            pid: d.u32()?,
            key_id: d.str()?,
            serial: d.opt_u64()?,
            at_unix: d.u64()?,
            duration_secs: d.opt_u64()?,
        }),
        EV_SUDO => HostEvent::Sudo(SudoEvent {
            user: d.str()?,
            target: d.str()?,
            command: d.str()?,
            cwd: d.str()?,
            tty: d.str()?,
            allowed: d.u8()? != 0,
            reason: d.str()?,
            pid: d.u32()?,
            key_id: d.str()?,
            at_unix: d.u64()?,
        }),
        EV_DENIED => HostEvent::Denied(DeniedEvent {
            user: d.str()?,
            service: d.str()?,
            rhost: d.str()?,
            reason: d.str()?,
            key_id: d.str()?,
            at_unix: d.u64()?,
        }),
        EV_SSHD => HostEvent::Sshd(SshdLoginEvent {
            accepted: d.u8()? != 0,
            user: d.str()?,
            rhost: d.str()?,
            method: d.str()?,
            key_type: d.str()?,
            fingerprint: d.str()?,
            key_id: d.str()?,
            serial: d.opt_u64()?,
            ca_fingerprint: d.str()?,
            at_unix: d.u64()?,
        }),
        EV_ACCESS_ENDED => HostEvent::AccessEnded(AccessEndedEvent {
            user: d.str()?,
            uid: d.opt_u32()?,
            scope: d.str()?,
            action: d.str()?,
            reason: d.str()?,
            method: d.str()?,
            processes: d.u32()?,
            survivors: d.u32()?,
            session_pid: d.opt_u32()?,
            key_id: d.str()?,
            by: d.str()?,
            at_unix: d.u64()?,
        }),
        k => return Err(WireError::BadKind(k)),
    })
}

/// The pending-file kind: version, kind, event.
pub const PENDING: u8 = 0xEE;

/// Encodes an event alone (the pending-file format, [`PENDING`]).
pub fn encode_event(ev: &HostEvent) -> Vec<u8> {
    let mut e = Enc::new(PENDING);
    enc_event(&mut e, ev);
    e.finish()
}

pub fn decode_event(buf: &[u8]) -> Result<HostEvent, WireError> {
    let (mut d, kind) = Dec::open(buf)?;
    if kind != PENDING {
        return Err(WireError::BadKind(kind));
    }
    let ev = dec_event(&mut d)?;
    d.end()?;
    Ok(ev)
}

/// The event id at the end of a pending file's name, `<ns>-<pid>-<id: 32 hex>.evt`
/// (`None` for the names of earlier versions, which end in 16 random hex digits).
pub fn pending_file_id(name: &str) -> Option<EventId> {
    name.strip_suffix(".evt")?.rsplit('-').next()?.parse().ok()
}

// --- requests and responses ----------------------------------------------------------------

const RQ_PING: u8 = 1;
const RQ_USER_NAME: u8 = 2;
const RQ_USER_UID: u8 = 3;
const RQ_GROUP_NAME: u8 = 4;
const RQ_GROUP_GID: u8 = 5;
const RQ_GROUPS_OF: u8 = 6;
/// An event without an id (senders of earlier versions).
pub const RQ_EVENT: u8 = 7;
/// An event with its 16-byte id.
pub const RQ_EVENT_ID: u8 = 8;
const RQ_GIDS_OF: u8 = 9;

impl Request {
    pub fn encode(&self) -> Vec<u8> {
        match self {
            Request::Ping => Enc::new(RQ_PING).finish(),
            Request::UserByName(n) => {
                let mut e = Enc::new(RQ_USER_NAME);
                e.str(n);
                e.finish()
            }
            Request::UserByUid(u) => {
                let mut e = Enc::new(RQ_USER_UID);
                e.u32(*u);
                e.finish()
            }
            Request::GroupByName(n) => {
                let mut e = Enc::new(RQ_GROUP_NAME);
                e.str(n);
                e.finish()
            }
            Request::GroupByGid(g) => {
                let mut e = Enc::new(RQ_GROUP_GID);
                e.u32(*g);
                e.finish()
            }
            Request::GroupsOfUser(n) => {
                let mut e = Enc::new(RQ_GROUPS_OF);
                e.str(n);
                e.finish()
            }
            Request::GidsOf(n) => {
                let mut e = Enc::new(RQ_GIDS_OF);
                e.str(n);
                e.finish()
            }
            Request::Event { id, event } => {
                let mut e = match id {
                    Some(id) => {
                        let mut e = Enc::new(RQ_EVENT_ID);
                        e.id(*id);
                        e
                    }
                    None => Enc::new(RQ_EVENT),
                };
                enc_event(&mut e, event);
                e.finish()
            }
        }
    }

    pub fn decode(buf: &[u8]) -> Result<Request, WireError> {
        let (mut d, kind) = Dec::open(buf)?;
        let r = match kind {
            RQ_PING => Request::Ping,
            RQ_USER_NAME => Request::UserByName(d.str()?),
            RQ_USER_UID => Request::UserByUid(d.u32()?),
            RQ_GROUP_NAME => Request::GroupByName(d.str()?),
            RQ_GROUP_GID => Request::GroupByGid(d.u32()?),
            RQ_GROUPS_OF => Request::GroupsOfUser(d.str()?),
            RQ_GIDS_OF => Request::GidsOf(d.str()?),
            RQ_EVENT => Request::Event {
                id: None,
                event: dec_event(&mut d)?,
            },
            RQ_EVENT_ID => {
                let id = d.id()?;
                Request::Event {
                    id: Some(id),
                    event: dec_event(&mut d)?,
                }
            }
            k => return Err(WireError::BadKind(k)),
        };
        d.end()?;
        Ok(r)
    }
}

const RS_PONG: u8 = 1;
const RS_USER: u8 = 2;
const RS_GROUP: u8 = 3;
const RS_GIDS: u8 = 4;
const RS_ACK: u8 = 5;
const RS_ERROR: u8 = 6;
const RS_GIDS_OF: u8 = 7;

fn enc_gids(e: &mut Enc, g: &Option<Vec<u32>>) {
    match g {
        None => {
            e.u8(0);
        }
        Some(g) => {
            let n = g.len().min(MAX_LIST);
            e.u8(1).u32(n as u32);
            for x in &g[..n] {
                e.u32(*x);
            }
        }
    }
}

fn dec_gids(d: &mut Dec<'_>) -> Result<Option<Vec<u32>>, WireError> {
    Ok(match d.u8()? {
        0 => None,
        _ => {
            let n = d.list_len()?;
            let mut v = Vec::with_capacity(n);
            for _ in 0..n {
                v.push(d.u32()?);
            }
            Some(v)
        }
    })
}

impl Response {
    pub fn encode(&self) -> Vec<u8> {
        match self {
            Response::Pong {
                snapshot_version,
                users,
                last_sync_unix,
            } => {
                let mut e = Enc::new(RS_PONG);
                e.u64(*snapshot_version).u32(*users).u64(*last_sync_unix);
                e.finish()
            }
            Response::User(u) => {
                let mut e = Enc::new(RS_USER);
                match u {
                    None => {
                        e.u8(0);
                    }
                    Some(u) => {
                        e.u8(1)
                            .str(&u.name)
                            .u32(u.uid)
                            .u32(u.gid)
                            .str(&u.gecos)
                            .str(&u.dir)
                            .str(&u.shell)
                            .u8(u.level);
                    }
                }
                e.finish()
            }
            Response::Group(g) => {
                let mut e = Enc::new(RS_GROUP);
                match g {
                    None => {
                        e.u8(0);
                    }
                    Some(g) => {
                        let n = g.members.len().min(MAX_LIST);
                        e.u8(1).str(&g.name).u32(g.gid).u32(n as u32);
                        for m in &g.members[..n] {
                            e.str(m);
                        }
                    }
                }
                e.finish()
            }
            Response::Gids(g) => {
                let mut e = Enc::new(RS_GIDS);
                enc_gids(&mut e, g);
                e.finish()
            }
            Response::GidsOf { user, gids } => {
                let mut e = Enc::new(RS_GIDS_OF);
                e.str(user);
                enc_gids(&mut e, gids);
                e.finish()
            }
            Response::Ack(seq) => {
                let mut e = Enc::new(RS_ACK);
                e.u64(*seq);
                e.finish()
            }
            Response::Error { code, message } => {
                let mut e = Enc::new(RS_ERROR);
                e.u8(*code as u8).str(message);
                e.finish()
            }
        }
    }

    pub fn decode(buf: &[u8]) -> Result<Response, WireError> {
        let (mut d, kind) = Dec::open(buf)?;
        let r = match kind {
            RS_PONG => Response::Pong {
                snapshot_version: d.u64()?,
                users: d.u32()?,
                last_sync_unix: d.u64()?,
            },
            RS_USER => Response::User(match d.u8()? {
                0 => None,
                _ => Some(WireUser {
                    name: d.str()?,
                    uid: d.u32()?,
                    gid: d.u32()?,
                    gecos: d.str()?,
                    dir: d.str()?,
                    shell: d.str()?,
                    level: d.u8()?,
                }),
            }),
            RS_GROUP => Response::Group(match d.u8()? {
                0 => None,
                _ => {
                    let name = d.str()?;
                    let gid = d.u32()?;
                    let n = d.list_len()?;
                    let mut members = Vec::with_capacity(n);
                    for _ in 0..n {
                        members.push(d.str()?);
                    }
                    Some(WireGroup { name, gid, members })
                }
            }),
            RS_GIDS => Response::Gids(dec_gids(&mut d)?),
            RS_GIDS_OF => {
                let user = d.str()?;
                Response::GidsOf {
                    user,
                    gids: dec_gids(&mut d)?,
                }
            }
            RS_ACK => Response::Ack(d.u64()?),
            RS_ERROR => Response::Error {
                code: ErrorCode::from_u8(d.u8()?),
                message: d.str()?,
            },
            k => return Err(WireError::BadKind(k)),
        };
        d.end()?;
        Ok(r)
    }
}

// --- framing -------------------------------------------------------------------------------

/// Writes one frame (length prefix + payload) in a single `write_all`.
pub fn write_frame<W: Write>(w: &mut W, payload: &[u8]) -> io::Result<()> {
    if payload.len() > MAX_FRAME {
        return Err(WireError::TooLarge(payload.len()).into());
    }
    let mut buf = Vec::with_capacity(4 + payload.len());
    buf.extend_from_slice(&(payload.len() as u32).to_be_bytes());
    buf.extend_from_slice(payload);
    w.write_all(&buf)
}

/// Reads one frame; refuses frames over [`MAX_FRAME`] before allocating.
pub fn read_frame<R: Read>(r: &mut R) -> io::Result<Vec<u8>> {
    let mut len = [0u8; 4];
    r.read_exact(&mut len)?;
    let n = u32::from_be_bytes(len) as usize;
    if n > MAX_FRAME {
        return Err(WireError::TooLarge(n).into());
    }
    let mut buf = vec![0u8; n];
    r.read_exact(&mut buf)?;
    Ok(buf)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn events() -> Vec<HostEvent> {
        vec![
            HostEvent::Session(SessionEvent {
                phase: SessionPhase::Open,
                user: "alice".into(),
                service: "sshd".into(),
                rhost: "10.0.0.1".into(),
                tty: "ssh".into(),
                pid: 42,
                key_id: "smith:alice:abc".into(),
                serial: Some(7),
                at_unix: 1,
                duration_secs: None,
            }),
            HostEvent::Sudo(SudoEvent {
                user: "oscar".into(),
                target: "root".into(),
                command: "/usr/bin/id -u".into(),
                cwd: "/home/oscar".into(),
                tty: "/dev/pts/0".into(),
                allowed: true,
                reason: String::new(),
                pid: 9,
                key_id: String::new(),
                at_unix: 2,
            }),
            HostEvent::Denied(DeniedEvent {
                user: "alice".into(),
                service: "sudo".into(),
                rhost: String::new(),
                reason: "no sudo grant".into(),
                key_id: String::new(),
                at_unix: 3,
            }),
            HostEvent::Sshd(SshdLoginEvent {
                accepted: true,
                user: "root".into(),
                rhost: "10.0.0.9".into(),
                method: "publickey".into(),
                key_type: "ED25519".into(),
                fingerprint: "SHA256:abc".into(),
                key_id: String::new(),
                serial: None,
                ca_fingerprint: String::new(),
                at_unix: 4,
            }),
        ]
    }

    #[test]
    fn requests_roundtrip() {
        let mut reqs = vec![
            Request::Ping,
            Request::UserByName("alice".into()),
            Request::UserByUid(200001),
            Request::GroupByName("dev".into()),
            Request::GroupByGid(5),
            Request::GroupsOfUser("alice".into()),
            Request::GidsOf("alice".into()),
        ];
        for (i, event) in events().into_iter().enumerate() {
            let id = (i % 2 == 0).then_some(EventId(u128::MAX - i as u128));
            reqs.push(Request::Event { id, event });
        }
        for r in reqs {
            assert_eq!(Request::decode(&r.encode()).unwrap(), r);
        }
    }

    #[test]
    fn responses_roundtrip() {
        let rs = vec![
            Response::Pong {
                snapshot_version: 3,
                users: 2,
                last_sync_unix: 9,
            },
            Response::User(None),
            Response::User(Some(WireUser {
                name: "alice".into(),
                uid: 1,
                gid: 1,
                gecos: "A".into(),
                dir: "/home/alice".into(),
                shell: "/bin/sh".into(),
                level: 1,
            })),
            Response::Group(Some(WireGroup {
                name: "dev".into(),
                gid: 4,
                members: vec!["a".into(), "b".into()],
            })),
            Response::Group(None),
            Response::Gids(Some(vec![1, 2, 3])),
            Response::Gids(None),
            Response::GidsOf {
                user: "alice".into(),
                gids: Some(vec![4, 5]),
            },
            Response::GidsOf {
                user: "bob".into(),
                gids: None,
            },
            Response::Ack(77),
            Response::Error {
                code: ErrorCode::PermissionDenied,
                message: "root only".into(),
            },
        ];
        for r in rs {
            assert_eq!(Response::decode(&r.encode()).unwrap(), r);
        }
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        assert!(Request::decode(&[]).is_err());
        assert_eq!(Request::decode(&[9, 1]), Err(WireError::BadVersion(9)));
        assert_eq!(Request::decode(&[1, 99]), Err(WireError::BadKind(99)));
        assert_eq!(
            Request::decode(&[1, 2, 0xff, 0xff, 0xff, 0xff]),
            Err(WireError::TooLarge(u32::MAX as usize))
        );
        assert_eq!(Request::decode(&[1, 1, 0]), Err(WireError::TrailingBytes));
        for event in events() {
            let id = Some(EventId(7));
            let bytes = Request::Event { id, event }.encode();
            for cut in 0..bytes.len() {
                assert!(Request::decode(&bytes[..cut]).is_err());
            }
        }
    }

    #[test]
    fn long_fields_are_cut_to_the_bound() {
        let mut ev = events().remove(1);
        if let HostEvent::Sudo(s) = &mut ev {
            s.command = "é".repeat(MAX_STRING);
        }
        let bytes = encode_event(&ev);
        match decode_event(&bytes).unwrap() {
            HostEvent::Sudo(s) => assert!(s.command.len() <= MAX_STRING),
            _ => panic!(),
        }
    }

    #[test]
    fn pending_files_decode_and_their_names_carry_the_id() {
        for ev in events() {
            let bytes = encode_event(&ev);
            assert_eq!(bytes[1], PENDING);
            assert_eq!(decode_event(&bytes).unwrap(), ev);
            for cut in 0..bytes.len() {
                assert!(decode_event(&bytes[..cut]).is_err());
            }
        }
        assert_eq!(
            decode_event(&[PROTOCOL_VERSION, RQ_EVENT_ID]),
            Err(WireError::BadKind(RQ_EVENT_ID))
        );
        let id = EventId(0xfeed_0000_0000_0000_0000_0000_0000_0001);
        assert_eq!(
            pending_file_id(&format!("1795663749000000000-4242-{id}.evt")),
            Some(id)
        );
        // Names of earlier versions and hostile ones: no id.
        for name in [
            "1795663749000000000-4242-0123456789abcdef.evt",
            "1-2-3.evt",
            &format!("1-2-{id}.tmp"),
            &format!(".1-2-{id}.evt.tmp"),
            "evt",
            "",
        ] {
            assert_eq!(pending_file_id(name), None, "{name}");
        }
    }

    #[test]
    fn frames() {
        let mut v = Vec::new();
        write_frame(&mut v, b"hello").unwrap();
        assert_eq!(read_frame(&mut &v[..]).unwrap(), b"hello");
        let big = (MAX_FRAME as u32 + 1).to_be_bytes();
        assert!(read_frame(&mut &big[..]).is_err());
        assert!(write_frame(&mut Vec::new(), &vec![0; MAX_FRAME + 1]).is_err());
    }
}
