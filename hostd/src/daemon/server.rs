//! The local socket server (`/run/smith/hostd.sock`): framed `smith_proto::wire`
//! requests answered from the in-memory cache bytes (the same data as the cache file).
//!
//! Owns: the socket file (directory 0755, socket 0666: every process that resolves
//! users may ask), per-connection limits (5 s to deliver each frame, bounded frame
//! size, at most [`MAX_CONNECTIONS`] at once, of which one uid may hold at most
//! [`PER_UID`] and the last [`ROOT_RESERVED`] are root's: issue 14, L10 — one local user
//! could hold every slot with a `Ping` every 4 s, and pam_smith's audit events then
//! went to pending files) and the rule that only root peers (`SO_PEERCRED`) may record
//! audit events.
//!
//! Must never: let one slow or hostile client delay another, allocate a frame larger
//! than `wire::MAX_FRAME`, or answer "not found" when it has no data (that is
//! `ErrorCode::Unavailable`).

use super::Shared;
use smith_proto::cache::{CacheView, GroupEntry, UserEntry};
use smith_proto::wire::{self, ErrorCode, Request, Response, WireGroup, WireUser};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::watch;
use tracing::{debug, warn};

/// Most connections served at once; more are closed immediately.
pub const MAX_CONNECTIONS: usize = 256;
/// Most connections one non-root uid may hold at once.
pub const PER_UID: usize = 32;
/// Slots only root may use (pam_smith's audit events, smith-host).
pub const ROOT_RESERVED: usize = 64;

/// Who holds the socket's connection slots.
#[derive(Debug, Default)]
pub struct Slots {
    total: usize,
    by_uid: std::collections::HashMap<u32, usize>,
}

impl Slots {
    /// Takes a slot for `uid` (`None`: the peer's credentials are unknown, counted as
    /// an unprivileged uid of its own). `false`: refused.
    pub fn take(&mut self, uid: Option<u32>) -> bool {
        let key = uid.unwrap_or(u32::MAX);
        let mine = self.by_uid.get(&key).copied().unwrap_or(0);
        let ok = if key == 0 {
            self.total < MAX_CONNECTIONS
        } else {
            self.total < MAX_CONNECTIONS - ROOT_RESERVED && mine < PER_UID
        };
        if ok {
            self.total += 1;
            *self.by_uid.entry(key).or_default() += 1;
        }
        ok
    }

    pub fn give_back(&mut self, uid: Option<u32>) {
        let key = uid.unwrap_or(u32::MAX);
        self.total = self.total.saturating_sub(1);
        if let Some(n) = self.by_uid.get_mut(&key) {
            *n -= 1;
            if *n == 0 {
                self.by_uid.remove(&key);
            }
        }
    }
}

/// A taken slot, given back on drop.
struct Slot {
    slots: Arc<std::sync::Mutex<Slots>>,
    uid: Option<u32>,
}

impl Drop for Slot {
    fn drop(&mut self) {
        if let Ok(mut s) = self.slots.lock() {
            s.give_back(self.uid);
        }
    }
}
/// Time a client has to deliver each request frame (also the idle timeout).
pub const FRAME_TIMEOUT: Duration = Duration::from_secs(5);
/// Time to write a response.
pub const WRITE_TIMEOUT: Duration = Duration::from_secs(5);

/// Creates the directory (0755) and binds the socket (0666), replacing a stale socket
/// file left by a previous run.
pub fn bind(path: &Path) -> std::io::Result<UnixListener> {
    if let Some(dir) = path.parent() {
        crate::fsutil::create_dirs(dir, 0o755)?;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755))?;
    }
    match std::fs::symlink_metadata(path) {
        Ok(m) => {
            use std::os::unix::fs::FileTypeExt;
            if m.file_type().is_socket() {
                std::fs::remove_file(path)?;
            } else {
                return Err(std::io::Error::other(format!(
                    "{} exists and is not a socket; remove it",
                    path.display()
                )));
            }
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    let listener = UnixListener::bind(path)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o666))?;
    Ok(listener)
}

pub async fn serve(
    listener: UnixListener,
    shared: Arc<Shared>,
    mut shutdown: watch::Receiver<bool>,
) {
    let slots = Arc::new(std::sync::Mutex::new(Slots::default()));
    let mut refused: u64 = 0;
    loop {
        tokio::select! {
            r = listener.accept() => match r {
                Ok((stream, _)) => {
                    let uid = stream.peer_cred().ok().map(|c| c.uid());
                    let taken = slots.lock().map(|mut s| s.take(uid)).unwrap_or(false);
                    if taken {
                        let slot = Slot { slots: slots.clone(), uid };
                        let shared = shared.clone();
                        tokio::spawn(async move {
                            handle_connection(stream, shared).await;
                            drop(slot);
                        });
                    } else {
                        refused += 1;
                        if refused.is_power_of_two() {
                            warn!(refused, peer_uid = ?uid, limit = MAX_CONNECTIONS, per_uid = PER_UID, "too many socket connections; closing new ones");
                        }
                        drop(stream);
                    }
                }
                Err(e) => {
                    warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            },
            _ = shutdown.changed() => return,
        }
    }
}

enum FrameRead {
    Frame(Vec<u8>),
    /// Clean end of stream between frames.
    Closed,
    TooLarge(usize),
    Failed,
}

async fn read_frame(stream: &mut UnixStream) -> FrameRead {
    let mut len = [0u8; 4];
    match stream.read_exact(&mut len).await {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return FrameRead::Closed,
        Err(_) => return FrameRead::Failed,
    }
    let n = u32::from_be_bytes(len) as usize;
    if n > wire::MAX_FRAME {
        return FrameRead::TooLarge(n);
    }
    let mut buf = vec![0u8; n];
    match stream.read_exact(&mut buf).await {
        Ok(_) => FrameRead::Frame(buf),
        Err(_) => FrameRead::Failed,
    }
}

async fn write_response(stream: &mut UnixStream, resp: &Response) -> bool {
    let mut payload = resp.encode();
    if payload.len() > wire::MAX_FRAME {
        // e.g. a group with thousands of members: clients read the cache file instead.
        payload = error(
            ErrorCode::Internal,
            "answer too large for the socket protocol; read the cache file",
        )
        .encode();
    }
    let mut buf = Vec::with_capacity(4 + payload.len());
    buf.extend_from_slice(&(payload.len() as u32).to_be_bytes());
    buf.extend_from_slice(&payload);
    matches!(
        tokio::time::timeout(WRITE_TIMEOUT, stream.write_all(&buf)).await,
        Ok(Ok(()))
    )
}

fn error(code: ErrorCode, message: impl Into<String>) -> Response {
    Response::Error {
        code,
        message: message.into(),
    }
}

async fn handle_connection(mut stream: UnixStream, shared: Arc<Shared>) {
    let cred = stream.peer_cred().ok();
    let peer_uid = cred.map(|c| c.uid());
    let peer_pid = cred
        .and_then(|c| c.pid())
        .and_then(|p| u32::try_from(p).ok());
    loop {
        let frame = match tokio::time::timeout(FRAME_TIMEOUT, read_frame(&mut stream)).await {
            Err(_) => {
                debug!("closing an idle or slow socket client");
                return;
            }
            Ok(FrameRead::Closed) | Ok(FrameRead::Failed) => return,
            Ok(FrameRead::TooLarge(n)) => {
                let _ = write_response(
                    &mut stream,
                    &error(
                        ErrorCode::BadRequest,
                        format!("frame of {n} bytes is too large"),
                    ),
                )
                .await;
                return;
            }
            Ok(FrameRead::Frame(f)) => f,
        };
        let (resp, keep) = match Request::decode(&frame) {
            Ok(req) => (answer(req, peer_uid, peer_pid, &shared).await, true),
            Err(e) => (error(ErrorCode::BadRequest, e.to_string()), false),
        };
        if !write_response(&mut stream, &resp).await || !keep {
            return;
        }
    }
}

fn wire_user(u: &UserEntry<'_>) -> WireUser {
    let s = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
    WireUser {
        name: s(u.name),
        uid: u.uid,
        gid: u.gid,
        gecos: s(u.gecos),
        dir: s(u.dir),
        shell: s(u.shell),
        level: u.level.map(|l| l as u8).unwrap_or(0),
    }
}

fn wire_group(g: &GroupEntry<'_>) -> Option<WireGroup> {
    let mut members = Vec::with_capacity(g.members.len());
    for m in g.members.iter() {
        members.push(String::from_utf8_lossy(m.ok()?).into_owned());
    }
    Some(WireGroup {
        name: String::from_utf8_lossy(g.name).into_owned(),
        gid: g.gid,
        members,
    })
}

/// Answers a lookup from `cache` (the bytes of a valid cache file).
pub fn lookup(cache: &[u8], req: &Request) -> Response {
    let view = match CacheView::parse(cache) {
        Ok(v) => v,
        Err(e) => return error(ErrorCode::Internal, format!("cache is invalid: {e}")),
    };
    let internal = |e: smith_proto::cache::CacheError| error(ErrorCode::Internal, e.to_string());
    match req {
        Request::UserByName(n) => match view.user_by_name(n.as_bytes()) {
            Ok(u) => Response::User(u.as_ref().map(wire_user)),
            Err(e) => internal(e),
        },
        Request::UserByUid(uid) => match view.user_by_uid(*uid) {
            Ok(u) => Response::User(u.as_ref().map(wire_user)),
            Err(e) => internal(e),
        },
        Request::GroupByName(n) => match view.group_by_name(n.as_bytes()) {
            Ok(None) => Response::Group(None),
            Ok(Some(g)) => match wire_group(&g) {
                Some(g) => Response::Group(Some(g)),
                None => error(ErrorCode::Internal, "corrupt group members"),
            },
            Err(e) => internal(e),
        },
        Request::GroupByGid(gid) => match view.group_by_gid(*gid) {
            Ok(None) => Response::Group(None),
            Ok(Some(g)) => match wire_group(&g) {
                Some(g) => Response::Group(Some(g)),
                None => error(ErrorCode::Internal, "corrupt group members"),
            },
            Err(e) => internal(e),
        },
        Request::GroupsOfUser(n) => match view.user_by_name(n.as_bytes()) {
            Ok(u) => Response::Gids(u.map(|u| u.gids.iter().collect())),
            Err(e) => internal(e),
        },
        Request::GidsOf(n) => match view.user_by_name(n.as_bytes()) {
            Ok(u) => Response::GidsOf {
                user: n.clone(),
                gids: u.map(|u| u.gids.iter().collect()),
            },
            Err(e) => internal(e),
        },
        Request::Ping | Request::Event { .. } => error(ErrorCode::BadRequest, "not a lookup"),
    }
}

async fn answer(
    req: Request,
    peer_uid: Option<u32>,
    peer_pid: Option<u32>,
    shared: &Arc<Shared>,
) -> Response {
    let served = match shared.served.read() {
        Ok(s) => s.clone(),
        Err(_) => return error(ErrorCode::Internal, "internal lock poisoned"),
    };
    match req {
        Request::Ping => {
            let (version, users) = served
                .cache
                .as_deref()
                .and_then(|b| {
                    CacheView::parse(b)
                        .ok()
                        .map(|v| (v.snapshot_version(), v.n_users()))
                })
                .unwrap_or((0, 0));
            Response::Pong {
                snapshot_version: version,
                users,
                last_sync_unix: served.last_sync_unix,
            }
        }
        Request::Event { id, event } => {
            if peer_uid != Some(0) {
                warn!(peer_uid = ?peer_uid, "refused an audit event from a non-root client");
                return error(
                    ErrorCode::PermissionDenied,
                    "only root may record audit events",
                );
            }
            let sh = shared.clone();
            match tokio::task::spawn_blocking(move || {
                super::events::accept(&sh, &event, "socket", peer_pid, id)
            })
            .await
            {
                Ok(Ok(seq)) => Response::Ack(seq),
                Ok(Err(e)) => error(ErrorCode::Internal, format!("cannot spool the event: {e}")),
                Err(_) => error(ErrorCode::Internal, "cannot spool the event"),
            }
        }
        lookup_req => match served.cache {
            Some(cache) => lookup(&cache, &lookup_req),
            None => error(
                ErrorCode::Unavailable,
                "smith-hostd has no snapshot yet (not synced with the CA)",
            ),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::Slots;

    /// L10: one local user holding connections (a `Ping` every 4 s on each) cannot take
    /// the socket from others, nor from root. Before, the 256 slots were shared by all.
    #[test]
    fn one_uid_cannot_take_every_slot() {
        let mut s = Slots::default();
        let mallory = Some(1000);
        let taken = (0..1000).filter(|_| s.take(mallory)).count();
        assert_eq!(taken, super::PER_UID);
        // Other users still get in, up to the share root keeps for itself.
        let mut others = 0;
        for uid in 1001..2000 {
            if s.take(Some(uid)) {
                others += 1;
            }
        }
        assert_eq!(
            super::PER_UID + others,
            super::MAX_CONNECTIONS - super::ROOT_RESERVED
        );
        // Root (pam_smith's audit events, smith-host) still has its reserved slots.
        for _ in 0..super::ROOT_RESERVED {
            assert!(s.take(Some(0)));
        }
        assert!(!s.take(Some(0)), "the whole socket is full");
        s.give_back(Some(0));
        assert!(s.take(Some(0)), "a slot given back is free again");
        // Peers whose credentials are unknown are capped like one user.
        let mut s = Slots::default();
        assert_eq!((0..100).filter(|_| s.take(None)).count(), super::PER_UID);
    }

    use super::*;

    #[test]
    fn lookups_answer_from_cache_bytes() {
        let (c, _) = crate::view::build_contents(
            &crate::view::tests::state(),
            &crate::local::LocalAccounts::default(),
            "/home",
            1,
            1,
        );
        let bytes = smith_proto::cache::build(&c).unwrap();
        match lookup(&bytes, &Request::UserByName("oscar".into())) {
            Response::User(Some(u)) => {
                assert_eq!((u.uid, u.level, u.dir.as_str()), (200002, 2, "/home/oscar"))
            }
            r => panic!("{r:?}"),
        }
        assert_eq!(
            lookup(&bytes, &Request::UserByName("nobody-here".into())),
            Response::User(None)
        );
        match lookup(&bytes, &Request::GroupByName("smith-sudo".into())) {
            Response::Group(Some(g)) => assert_eq!(g.members, vec!["oscar".to_string()]),
            r => panic!("{r:?}"),
        }
        assert_eq!(
            lookup(&bytes, &Request::GroupsOfUser("oscar".into())),
            Response::Gids(Some(vec![200000, 200011]))
        );
        match lookup(&bytes, &Request::GroupByGid(200001)) {
            Response::Group(Some(g)) => assert_eq!(g.name, "alice"),
            r => panic!("{r:?}"),
        }
        assert!(matches!(
            lookup(b"garbage", &Request::UserByUid(200001)),
            Response::Error { .. }
        ));
    }
}
