//! The store conformance suite: the [`Store`] contract as executable checks, run against
//! every store (`run_all` from each store's tests). A store that passes can stand in for
//! another; a behaviour only one store has is not part of the contract.

use super::{
    CertQuery, CertRow, Commit, Counters, DecisionRow, HostCertQuery, HostCertSelector, InitMeta,
    Record, Selector, Store, StoreError,
};
use crate::audit::{Filter, CA_CHAIN};
use crate::model::{
    Change, Grant, Group, Host, HostCert, HostSshCert, IdKind, Model, Revocation, RevokeVia, Token,
    TokenKind, User,
};
use crate::origin::Origin;
use smith_api::chain::{self, AuditRecord, GENESIS};
use smith_api::ErrorCode;
use smith_proto::{GroupName, HostName, HostPattern, IdRange, Level, PosixId, Tags, UserName};
use std::collections::BTreeSet;

const NOW: u64 = 1_800_000_000;

/// One check of the contract.
type Check = fn(&dyn Store);

/// Runs every check, each on a fresh store from `fresh` (not yet initialized).
pub fn run_all(fresh: impl Fn() -> Box<dyn Store>) {
    let checks: &[(&str, Check)] = &[
        ("initialize", initialize),
        ("commit_then_load_round_trips", commit_then_load_round_trips),
        (
            "deleted_names_come_back_with_their_ids",
            deleted_names_come_back_with_their_ids,
        ),
        (
            "a_refused_commit_leaves_nothing_behind",
            a_refused_commit_leaves_nothing_behind,
        ),
        (
            "records_are_chained_and_listed",
            records_are_chained_and_listed,
        ),
        (
            "a_serial_or_request_id_is_recorded_once",
            a_serial_or_request_id_is_recorded_once,
        ),
        ("revocations", revocations),
        (
            "audit_uploads_continue_the_chain",
            audit_uploads_continue_the_chain,
        ),
        (
            "liveness_and_out_of_band_inputs",
            liveness_and_out_of_band_inputs,
        ),
        (
            "every_commit_is_in_the_ca_chain",
            every_commit_is_in_the_ca_chain,
        ),
        (
            "people_and_credentials_round_trip",
            people_and_credentials_round_trip,
        ),
        (
            "a_recycled_name_takes_a_new_id",
            a_recycled_name_takes_a_new_id,
        ),
        (
            "retention_prunes_old_rows_only",
            retention_prunes_old_rows_only,
        ),
        (
            "reusable_tokens_count_their_uses",
            reusable_tokens_count_their_uses,
        ),
        (
            "host_identity_and_host_certificates",
            host_identity_and_host_certificates,
        ),
        ("ca_keys_round_trip", ca_keys_round_trip),
    ];
    for (name, check) in checks {
        let store = fresh();
        store
            .initialize(&InitMeta {
                id_range: IdRange::new(200000, 299999).unwrap(),
                user_ca_algorithm: "ed25519",
                admin_token_hash: "admin-hash",
                now: NOW,
                epoch: "0123456789abcdef0123456789abcdef",
                bootstrap_ttl: super::BOOTSTRAP_TTL_SECS,
            })
            .unwrap_or_else(|e| panic!("{name}: initialize: {e}"));
        eprintln!("conformance: {name}");
        check(store.as_ref());
        store.shutdown();
    }
}

fn un(s: &str) -> UserName {
    UserName::new(s).unwrap()
}
fn gn(s: &str) -> GroupName {
    GroupName::new(s).unwrap()
}

fn load(s: &dyn Store) -> Model {
    s.load(NOW).unwrap().model
}

/// Commits `changes` (bumping the version when `policy`) and returns the model after.
fn commit(s: &dyn Store, changes: Vec<Change>) -> Result<Model, StoreError> {
    commit_as(s, changes, Origin::admin(), "conformance")
}

/// [`commit`] with an origin and a text.
fn commit_as(
    s: &dyn Store,
    changes: Vec<Change>,
    origin: Origin,
    what: &str,
) -> Result<Model, StoreError> {
    let m = load(s);
    let nv = changes
        .iter()
        .any(Change::is_policy)
        .then_some(m.version() + 1);
    s.commit(Commit {
        counters: Counters::of(&m),
        changes,
        new_version: nv,
        origin,
        what: what.into(),
        now: NOW,
    })?;
    Ok(load(s))
}

fn ca_records(s: &dyn Store, kind: &str) -> Vec<crate::audit::Entry> {
    s.audit_list(&Filter {
        host: Some(CA_CHAIN.into()),
        kind: Some(kind.into()),
        user: None,
        since: None,
        limit: 1000,
    })
    .unwrap()
}

fn user(m: &Model, name: &str, groups: &[&str]) -> User {
    User {
        name: un(name),
        uid: m.allocate_id(IdKind::User, name, None).unwrap(),
        disabled: None,
        gecos: format!("{name} gecos"),
        shell: "/bin/bash".into(),
        created_at: NOW,
        groups: groups.iter().map(|g| gn(g)).collect(),
        external_id: Some(format!("ext-{name}")),
        oidc: Some(crate::model::OidcBinding {
            issuer: "https://idp.example".into(),
            subject: format!("sub-{name}"),
        }),
        source: crate::model::Source::Scim,
    }
}

fn group(m: &Model, name: &str) -> Group {
    Group {
        name: gn(name),
        gid: m.allocate_id(IdKind::Group, name, None).unwrap(),
        members: BTreeSet::new(),
        created_at: NOW,
        external_id: None,
        source: crate::model::Source::Admin,
    }
}

fn initialize(s: &dyn Store) {
    assert!(s.is_initialized().unwrap());
    let l = s.load(NOW).unwrap();
    let m = &l.model;
    assert_eq!(m.version(), 1);
    assert_eq!(l.last_serial, 0);
    assert_eq!(m.settings().sudo_gid.get(), 200000);
    assert_eq!(m.settings().users_gid.get(), 299999);
    assert_eq!(
        m.id_owner(200000),
        Some(&(IdKind::Group, smith_proto::names::SUDO_GROUP.to_string()))
    );
    assert_eq!(
        m.id_owner(299999),
        Some(&(IdKind::Group, smith_proto::names::USERS_GROUP.to_string()))
    );
    assert_eq!(m.next_id(), 200001);
    let t = m.token("admin-hash").expect("the bootstrap admin token");
    assert_eq!(t.kind, TokenKind::Bootstrap);
    assert_eq!(
        t.expires_at,
        NOW + super::BOOTSTRAP_TTL_SECS,
        "it lives a day"
    );
    assert_eq!(m.epoch(), "0123456789abcdef0123456789abcdef");
    assert!(m.users().is_empty() && m.groups().is_empty() && m.hosts().is_empty());
    assert!(m.krl_base64().is_none());
}

fn commit_then_load_round_trips(s: &dyn Store) {
    let m = load(s);
    let dev = group(&m, "dev");
    let m = commit(s, vec![Change::AddGroup(dev)]).unwrap();
    let alice = user(&m, "alice", &["dev"]);
    let mut m = commit(s, vec![Change::AddUser(alice.clone())]).unwrap();
    let grant = Grant {
        id: m.next_grant_id(),
        group: gn("dev"),
        selector: Tags::parse("env=dev").unwrap(),
        level: Level::Sudo,
        max_ttl_secs: 3600,
        source_cidrs: vec!["10.0.0.0/8".parse().unwrap()],
        require_reason: true,
        time_windows: vec![
            crate::timewin::Window::parse("mon-fri 09:00-18:00 Europe/Paris").unwrap(),
        ],
        created_at: NOW,
        cert: crate::model::CertRules {
            logins: vec![UserName::new("deploy").unwrap()],
            permits: smith_proto::grants::Permits {
                agent_forwarding: true,
                ..Default::default()
            },
            force_command: Some("/usr/bin/uptime".into()),
            sudo: smith_proto::sudorules::SudoRules {
                commands: vec![smith_proto::sudorules::SudoCommand::parse(
                    "/usr/bin/systemctl restart nginx",
                )
                .unwrap()],
                run_as: vec![UserName::new("postgres").unwrap()],
                gid: Some(
                    m.allocate_id(
                        crate::model::IdKind::Group,
                        &smith_proto::sudorules::rule_group(m.next_grant_id()),
                        None,
                    )
                    .unwrap()
                    .get(),
                ),
            },
        },
    };
    let host = Host {
        id: m.next_host_id(),
        name: HostName::new("web-1").unwrap(),
        tags: Tags::parse("env=dev").unwrap(),
        enrolled_at: NOW,
        removed: false,
        cert_serial: "0a0b".into(),
        cert_not_after: NOW + 86400,
        ssh_names: vec![HostName::new("web-1.example.com").unwrap()],
    };
    let enroll = Token {
        kind: TokenKind::Enroll,
        subject: "host enrollment".into(),
        tags: Some(Tags::parse("env=dev").unwrap()),
        created_at: NOW,
        expires_at: NOW + 3600,
        used_at: None,
        names: vec![
            HostPattern::parse("web-1").unwrap(),
            HostPattern::parse("*.example.com").unwrap(),
        ],
        max_uses: 1,
        uses: 0,
        created_by: "conformance".into(),
        revoked_at: None,
    };
    commit(
        s,
        vec![
            Change::AddGrant(grant.clone()),
            Change::AddToken {
                hash: "enroll-hash".into(),
                token: enroll,
            },
        ],
    )
    .unwrap();
    commit(
        s,
        vec![Change::Enroll {
            token_hash: "enroll-hash".into(),
            at: NOW,
            host: host.clone(),
            cert: HostCert {
                serial: "0a0b".into(),
                not_after: NOW + 86400,
                issued_at: NOW,
            },
        }],
    )
    .unwrap();
    m = commit(
        s,
        vec![Change::HostCert {
            host_id: host.id,
            cert: HostCert {
                serial: "0c0d".into(),
                not_after: NOW + 2 * 86400,
                issued_at: NOW + 10,
            },
        }],
    )
    .unwrap();
    // What was committed is what loads, with the derived indexes.
    let a = m.user(&un("alice")).unwrap();
    assert_eq!(a, &alice);
    assert!(m.group(&gn("dev")).unwrap().members.contains(&un("alice")));
    assert_eq!(m.grants().get(&grant.id), Some(&grant));
    // The grant's sudo group keeps its gid: allocated, never handed out again.
    let sudo_gid = grant.cert.sudo.gid.unwrap();
    assert!(
        m.id_owner(sudo_gid).is_some(),
        "gid {sudo_gid} not allocated"
    );
    assert_eq!(
        m.grants().get(&grant.id).unwrap().time_windows[0].to_string(),
        "mon-fri 09:00-18:00 Europe/Paris"
    );
    assert_eq!(m.token("enroll-hash").unwrap().used_at, Some(NOW));
    let h = m.active_host(&HostName::new("web-1").unwrap()).unwrap();
    assert_eq!(
        (h.cert_serial.as_str(), h.cert_not_after),
        ("0c0d", NOW + 2 * 86400)
    );
    assert_eq!(h.ssh_names, host.ssh_names);
    assert_eq!(m.host_of_cert("0a0b").map(|h| h.id), Some(host.id));
    assert_eq!(m.host_of_cert("0c0d").map(|h| h.id), Some(host.id));
    assert_eq!(m.next_grant_id(), grant.id + 1);
    assert_eq!(m.next_host_id(), host.id + 1);
    // The grant's sudo group took the id after alice's.
    assert_eq!(m.next_id(), alice.uid.get() + 2);
    // Only policy changes bump the version: group, user, grant+token (the token alone
    // would not), enroll and host cert do not.
    assert_eq!(m.version(), 4);
    // Removals.
    m = commit(
        s,
        vec![
            Change::RemoveMember {
                group: gn("dev"),
                user: un("alice"),
            },
            Change::RemoveGrant {
                id: grant.id,
                at: NOW,
            },
            Change::RemoveHost {
                host_id: host.id,
                at: NOW,
            },
        ],
    )
    .unwrap();
    assert!(m.user(&un("alice")).unwrap().groups.is_empty());
    assert!(m.grants().is_empty());
    assert!(m.active_host(&HostName::new("web-1").unwrap()).is_none());
    assert!(m.host(host.id).unwrap().removed);
    m = commit(
        s,
        vec![Change::DisableUser {
            name: un("alice"),
            at: NOW,
            by: crate::model::Disabler::Admin,
        }],
    )
    .unwrap();
    assert!(m.user(&un("alice")).unwrap().is_disabled());
    m = commit(s, vec![Change::EnableUser { name: un("alice") }]).unwrap();
    assert!(!m.user(&un("alice")).unwrap().is_disabled());
}

fn deleted_names_come_back_with_their_ids(s: &dyn Store) {
    let m = load(s);
    let dev = group(&m, "dev");
    let alice = User {
        uid: m
            .allocate_id_with(IdKind::User, "alice", None, &[dev.gid.get()])
            .unwrap(),
        ..user(&m, "alice", &["dev"])
    };
    commit(
        s,
        vec![
            Change::AddGroup(dev.clone()),
            Change::AddUser(alice.clone()),
        ],
    )
    .unwrap();
    commit(
        s,
        vec![Change::AddToken {
            hash: "alice-token".into(),
            token: Token::bearer(TokenKind::User, "alice", NOW, NOW + 60, "conformance"),
        }],
    )
    .unwrap();
    let m = commit(
        s,
        vec![
            Change::DeleteUser {
                name: un("alice"),
                at: NOW,
            },
            Change::DeleteGroup {
                name: gn("dev"),
                at: NOW,
            },
        ],
    )
    .unwrap();
    assert!(m.users().is_empty() && m.groups().is_empty());
    assert!(
        m.token("alice-token").is_none(),
        "a deleted user's tokens go"
    );
    // The names may come back with the same ids (an admin's explicit reuse for a user),
    // without their old memberships.
    assert_eq!(m.previous_id(IdKind::User, "alice"), Some(alice.uid));
    assert_eq!(m.allocate_id(IdKind::Group, "dev", None).unwrap(), dev.gid);
    let mut again = alice.clone();
    again.groups.clear();
    let m = commit(
        s,
        vec![Change::AddGroup(dev.clone()), Change::AddUser(again)],
    )
    .unwrap();
    let a = m.user(&un("alice")).unwrap();
    assert_eq!((a.uid, a.disabled, a.groups.len()), (alice.uid, None, 0));
    assert!(m.group(&gn("dev")).unwrap().members.is_empty());
    // A live row is never overwritten by an add.
    let err = commit(s, vec![Change::AddUser(alice)]).unwrap_err();
    assert!(matches!(err, StoreError::Conflict(_)), "{err}");
}

fn a_refused_commit_leaves_nothing_behind(s: &dyn Store) {
    let before = load(s);
    // A group that is fine and a user whose uid is the reserved sudo gid: all or nothing.
    let g = Group {
        gid: PosixId::new(200005).unwrap(),
        ..group(&before, "dev")
    };
    let u = User {
        uid: PosixId::new(200000).unwrap(),
        ..user(&before, "alice", &[])
    };
    let err = commit(s, vec![Change::AddGroup(g), Change::AddUser(u)]).unwrap_err();
    assert!(err.to_string().contains("already allocated"), "{err}");
    let after = load(s);
    assert!(after.groups().is_empty() && after.users().is_empty());
    assert_eq!(after.version(), before.version());
    assert_eq!(after.next_id(), before.next_id());
    // An enrollment token is used once.
    commit(
        s,
        vec![Change::AddToken {
            hash: "t".into(),
            token: Token {
                tags: Some(Tags::default()),
                ..Token::bearer(
                    TokenKind::Enroll,
                    "host enrollment",
                    NOW,
                    NOW + 60,
                    "conformance",
                )
            },
        }],
    )
    .unwrap();
    let enroll = |name: &str, id: u64| Change::Enroll {
        token_hash: "t".into(),
        at: NOW,
        host: Host {
            id,
            name: HostName::new(name).unwrap(),
            tags: Tags::default(),
            enrolled_at: NOW,
            removed: false,
            cert_serial: format!("{id:02x}"),
            cert_not_after: NOW + 60,
            ssh_names: vec![],
        },
        cert: HostCert {
            serial: format!("{id:02x}"),
            not_after: NOW + 60,
            issued_at: NOW,
        },
    };
    commit(s, vec![enroll("a", 1)]).unwrap();
    assert!(matches!(
        commit(s, vec![enroll("b", 2)]).unwrap_err(),
        StoreError::Conflict(_)
    ));
    assert!(load(s).active_host(&HostName::new("b").unwrap()).is_none());
}

fn decision(user: &str, allowed: bool) -> DecisionRow {
    DecisionRow {
        at: NOW,
        user: user.into(),
        allowed,
        reason: if allowed {
            "issued".into()
        } else {
            "no grant".into()
        },
        scope: "env=dev".into(),
        requested_ttl_secs: 3600,
        source_ip: "10.0.0.1".into(),
        grant_ids: vec![1],
    }
}

fn cert(serial: u64, user: &str, valid_before: u64) -> CertRow {
    CertRow {
        serial,
        key_id: format!("smith:{user}:{serial:020}"),
        principals: vec![user.into()],
        scope: "env=dev".into(),
        valid_after: NOW - 300,
        valid_before,
        request_id: format!("{serial:020}"),
        public_key_fp: "SHA256:x".into(),
    }
}

fn record(s: &dyn Store, user: &str, c: Option<CertRow>) -> Result<u64, super::WriteError> {
    let allowed = c.is_some();
    let p = s.record(Record {
        decision: decision(user, allowed),
        cert: c,
    });
    p.blocking_recv()
        .map_err(|_| super::WriteError::ShuttingDown)?
}

fn records_are_chained_and_listed(s: &dyn Store) {
    let a = record(s, "alice", Some(cert(1, "alice", NOW + 3600))).unwrap();
    let b = record(s, "bob", None).unwrap();
    let c = record(s, "alice", Some(cert(7, "alice", NOW + 3600))).unwrap();
    assert!(a < b && b < c, "decision ids increase: {a} {b} {c}");
    let l = s.load(NOW).unwrap();
    assert_eq!(l.last_serial, 7, "the serial high-water mark");
    let ds = s.decisions(2, None).unwrap();
    assert_eq!(
        ds.iter().map(|d| d.id).collect::<Vec<_>>(),
        vec![b, c],
        "the last two, oldest first"
    );
    let alice = s.decisions(10, Some(&un("alice"))).unwrap();
    assert_eq!(alice.len(), 2);
    assert_eq!(
        (alice[1].serial, alice[1].key_id.as_deref()),
        (Some(7), Some(cert(7, "alice", 0).key_id.as_str()))
    );
    assert!(!s.decisions(10, Some(&un("bob"))).unwrap()[0].allowed);
    // Certificates newest first; each decision has its @ca record, and the chain verifies.
    let all = s
        .certs(&CertQuery {
            user: None,
            valid_only: false,
            limit: 10,
            now: NOW,
        })
        .unwrap();
    assert_eq!(all.iter().map(|c| c.serial).collect::<Vec<_>>(), vec![7, 1]);
    assert_eq!(all[0].user, "alice");
    let head = s.audit_head(CA_CHAIN).unwrap();
    assert_eq!(head.0, 3);
    let v = s.audit_verify().unwrap();
    assert!(v.ok && v.records == 3, "{v:?}");
    let entries = s
        .audit_list(&Filter {
            kind: None,
            host: Some(CA_CHAIN.into()),
            user: Some("alice".into()),
            since: None,
            limit: 100,
        })
        .unwrap();
    assert_eq!(entries.len(), 2);
    assert_eq!(entries[0].kind, crate::audit::DECISION_KIND);
    assert_eq!(entries[1].event["serial"].as_u64(), Some(7));
}

fn a_serial_or_request_id_is_recorded_once(s: &dyn Store) {
    record(s, "alice", Some(cert(5, "alice", NOW + 60))).unwrap();
    assert!(record(s, "alice", Some(cert(5, "alice", NOW + 60))).is_err());
    let mut other = cert(6, "alice", NOW + 60);
    other.request_id = cert(5, "alice", 0).request_id;
    assert!(record(s, "alice", Some(other)).is_err());
    // The refused ones left no certificate behind.
    let all = s
        .certs(&CertQuery {
            user: Some(un("alice")),
            valid_only: false,
            limit: 10,
            now: NOW,
        })
        .unwrap();
    assert_eq!(all.iter().map(|c| c.serial).collect::<Vec<_>>(), vec![5]);
}

fn revocations(s: &dyn Store) {
    record(s, "alice", Some(cert(1, "alice", NOW + 3600))).unwrap();
    record(s, "alice", Some(cert(2, "alice", NOW - 1))).unwrap();
    record(s, "alice", Some(cert(3, "alice", NOW + 3600))).unwrap();
    record(s, "bob", Some(cert(4, "bob", NOW + 3600))).unwrap();
    assert!(s.cert_plan(&Selector::Serial(99), NOW).unwrap().is_none());
    assert!(s
        .cert_plan(&Selector::KeyId("nope".into()), NOW)
        .unwrap()
        .is_none());
    let p = s
        .cert_plan(&Selector::User(un("alice")), NOW)
        .unwrap()
        .unwrap();
    assert_eq!(
        (
            p.revoke.iter().map(|c| c.serial).collect::<Vec<_>>(),
            p.expired.clone()
        ),
        (vec![1, 3], vec![2])
    );
    let ca_key = crate::sshca::generate(crate::sshca::CaAlgorithm::Ed25519, "ca")
        .unwrap()
        .public_key()
        .to_openssh()
        .unwrap();
    let rev = |c: &smith_api::IssuedCert, via: RevokeVia| Revocation {
        serial: c.serial,
        key_id: c.key_id.clone(),
        user: c.user.clone(),
        valid_before: c.valid_before,
        ca_key: ca_key.clone(),
        revoked_at: NOW,
        reason: "lost laptop".into(),
        via,
    };
    let r1 = rev(&p.revoke[0], RevokeVia::Serial);
    let m = commit(s, vec![Change::Revoke(vec![r1.clone()])]).unwrap();
    assert_eq!(m.revoked().keys().copied().collect::<Vec<_>>(), vec![1]);
    assert!(m.krl_base64().is_some());
    let p = s
        .cert_plan(&Selector::User(un("alice")), NOW)
        .unwrap()
        .unwrap();
    assert_eq!(p.already_revoked, vec![1]);
    assert_eq!(
        s.valid_certs_of(&un("alice"), NOW)
            .unwrap()
            .iter()
            .map(|c| c.serial)
            .collect::<Vec<_>>(),
        vec![3]
    );
    let bob = s
        .cert_plan(&Selector::KeyId(cert(4, "bob", 0).key_id), NOW)
        .unwrap()
        .unwrap();
    assert_eq!(bob.revoke[0].user, "bob");
    // The whole key ID must match, not the request id alone.
    let mut wrong = cert(4, "bob", 0).key_id;
    wrong = wrong.replace("bob", "alice");
    assert!(s.cert_plan(&Selector::KeyId(wrong), NOW).unwrap().is_none());
    // Listing shows the revocation; `valid` leaves revoked and expired out.
    let listed = s
        .certs(&CertQuery {
            user: Some(un("alice")),
            valid_only: false,
            limit: 10,
            now: NOW,
        })
        .unwrap();
    assert_eq!(
        listed.iter().map(|c| c.serial).collect::<Vec<_>>(),
        vec![3, 2, 1]
    );
    let info = listed[2].revoked.as_ref().unwrap();
    assert_eq!(
        (info.reason.as_str(), info.via.as_str()),
        ("lost laptop", "serial")
    );
    let valid = s
        .certs(&CertQuery {
            user: None,
            valid_only: true,
            limit: 10,
            now: NOW,
        })
        .unwrap();
    assert_eq!(
        valid.iter().map(|c| c.serial).collect::<Vec<_>>(),
        vec![4, 3]
    );
    // A serial is revoked once; the refused commit changes nothing.
    assert!(matches!(
        commit(s, vec![Change::Revoke(vec![r1])]).unwrap_err(),
        StoreError::Conflict(_) | StoreError::Sql(_) | StoreError::Write(_)
    ));
    // The revocation has its @ca record after the decisions' records; the chain verifies.
    let ca = s
        .audit_list(&Filter {
            kind: None,
            host: Some(CA_CHAIN.into()),
            user: None,
            since: None,
            limit: 100,
        })
        .unwrap();
    // ... followed by the change's own record.
    let (rev, change) = (&ca[ca.len() - 2], &ca[ca.len() - 1]);
    assert_eq!(
        (
            rev.kind.as_str(),
            rev.event["serial"].as_u64(),
            rev.event["via"].as_str()
        ),
        ("cert_revocation", Some(1), Some("serial"))
    );
    assert_eq!(change.kind, crate::audit::CHANGE_KIND);
    assert!(s.audit_verify().unwrap().ok);
    // A load after the certificate expired leaves it out of the KRL.
    let later = s.load(NOW + 7200).unwrap().model;
    assert!(later.revoked().is_empty() && later.krl_base64().is_none());
}

fn host_records(host: &str, from: u64, n: u64, head: [u8; 32]) -> Vec<AuditRecord> {
    let mut out = Vec::new();
    let mut prev = (from - 1, head);
    for seq in from..from + n {
        let r = chain::next_record(
            host,
            prev.0,
            &prev.1,
            format!(
                "{{\"type\":\"sudo\",\"user\":\"oscar\",\"at_unix\":{},\"command\":\"id {seq}\"}}",
                NOW + seq
            ),
        );
        prev = (r.seq, chain::parse_hash(&r.hash).unwrap());
        out.push(r);
    }
    out
}

fn upload(s: &dyn Store, host: &str, records: Vec<AuditRecord>) -> crate::audit::AuditOutcome {
    s.audit_upload(host.into(), records)
        .blocking_recv()
        .unwrap()
        .unwrap()
}

fn audit_uploads_continue_the_chain(s: &dyn Store) {
    let first = host_records("web-1", 1, 3, GENESIS);
    let ack = upload(s, "web-1", first.clone()).unwrap();
    assert_eq!(ack.acked_through, 3);
    let head = s.audit_head("web-1").unwrap();
    assert_eq!(head.0, 3);
    assert_eq!(hex::encode(head.1), ack.head_hash);
    // A replay of stored records, and a batch with a gap, are refused and recorded.
    let replay = upload(s, "web-1", first[1..].to_vec()).unwrap_err();
    assert_eq!(replay.code, ErrorCode::AuditReplay);
    let gap = host_records("web-1", 5, 1, head.1);
    let broken = upload(s, "web-1", gap).unwrap_err();
    assert_eq!(broken.code, ErrorCode::AuditChainBroken);
    let rej = s.audit_rejections(10).unwrap();
    assert_eq!(
        rej.iter().map(|r| r.code.as_str()).collect::<Vec<_>>(),
        vec!["audit_replay", "audit_chain_broken"]
    );
    assert_eq!(s.audit_rejections(1).unwrap()[0].code, "audit_chain_broken");
    // What follows the head is taken; another host's chain is its own.
    upload(s, "web-1", host_records("web-1", 4, 2, head.1)).unwrap();
    upload(s, "db-1", host_records("db-1", 1, 1, GENESIS)).unwrap();
    let v = s.audit_verify().unwrap();
    assert!(v.ok, "{v:?}");
    assert_eq!(
        v.chains
            .iter()
            .map(|c| (c.host.as_str(), c.records))
            .collect::<Vec<_>>(),
        vec![("db-1", 1), ("web-1", 5)]
    );
    // Listing: chain order per host, hosts by name; a limit keeps the most recent.
    let all = s
        .audit_list(&Filter {
            kind: None,
            host: None,
            user: Some("oscar".into()),
            since: None,
            limit: 100,
        })
        .unwrap();
    assert_eq!(
        all.iter()
            .map(|e| (e.host.as_str(), e.seq))
            .collect::<Vec<_>>(),
        vec![
            ("db-1", 1),
            ("web-1", 1),
            ("web-1", 2),
            ("web-1", 3),
            ("web-1", 4),
            ("web-1", 5)
        ]
    );
    assert_eq!(all[1].kind, "sudo");
    assert_eq!(all[1].event["command"].as_str(), Some("id 1"));
    let since = s
        .audit_list(&Filter {
            kind: None,
            host: Some("web-1".into()),
            user: None,
            since: Some(NOW + 4),
            limit: 100,
        })
        .unwrap();
    assert_eq!(since.iter().map(|e| e.seq).collect::<Vec<_>>(), vec![4, 5]);
    let one = s
        .audit_list(&Filter {
            kind: None,
            host: Some("web-1".into()),
            user: None,
            since: None,
            limit: 1,
        })
        .unwrap();
    assert_eq!(one.len(), 1);
}

fn liveness_and_out_of_band_inputs(s: &dyn Store) {
    let m = load(s);
    let alice = user(&m, "alice", &[]);
    commit(s, vec![Change::AddUser(alice)]).unwrap();
    commit(
        s,
        vec![Change::DisableUser {
            name: un("alice"),
            at: NOW + 5,
            by: crate::model::Disabler::Admin,
        }],
    )
    .unwrap();
    record(s, "alice", Some(cert(9, "alice", NOW + 60))).unwrap();
    let m = commit(
        s,
        vec![Change::AddToken {
            hash: "t".into(),
            token: Token {
                tags: Some(Tags::default()),
                ..Token::bearer(
                    TokenKind::Enroll,
                    "host enrollment",
                    NOW,
                    NOW + 60,
                    "conformance",
                )
            },
        }],
    )
    .unwrap();
    let id = m.next_host_id();
    commit(
        s,
        vec![Change::Enroll {
            token_hash: "t".into(),
            at: NOW,
            host: Host {
                id,
                name: HostName::new("web-1").unwrap(),
                tags: Tags::default(),
                enrolled_at: NOW,
                removed: false,
                cert_serial: "01".into(),
                cert_not_after: NOW + 60,
                ssh_names: vec![],
            },
            cert: HostCert {
                serial: "01".into(),
                not_after: NOW + 60,
                issued_at: NOW,
            },
        }],
    )
    .unwrap();
    s.host_seen(id, NOW + 1, Some(3));
    s.host_seen(id, NOW + 2, None);
    let event = format!(
        "{{\"type\":\"sshd\",\"user\":\"alice\",\"at_unix\":{},\"serial\":9,\"key_id\":\"x\"}}",
        NOW + 10
    );
    let r = chain::next_record("web-1", 0, &GENESIS, event);
    upload(s, "web-1", vec![r]).unwrap();
    // A commit after them orders the fire-and-forget liveness before the load.
    commit(
        s,
        vec![Change::AddToken {
            hash: "x".into(),
            token: Token::bearer(TokenKind::Scim, "scim", NOW, NOW + 60, "conformance"),
        }],
    )
    .unwrap();
    let l = s.load(NOW).unwrap();
    assert_eq!(l.liveness.get(&id), Some(&(Some(NOW + 2), Some(3))));
    let o = s.oob_inputs().unwrap();
    assert_eq!(o.sshd_events.len(), 1);
    assert_eq!(o.sshd_events[0].0, "web-1");
    assert_eq!(o.issued.get(&9).map(|i| i.user.as_str()), Some("alice"));
    assert_eq!(o.disabled.get("alice"), Some(&(NOW + 5)));
}

fn token(kind: TokenKind, subject: &str) -> Token {
    Token {
        kind,
        subject: subject.into(),
        tags: None,
        created_at: NOW,
        expires_at: NOW + 3600,
        used_at: None,
        names: vec![],
        max_uses: 1,
        uses: 0,
        created_by: "admin alice from 10.0.0.9".into(),
        revoked_at: None,
    }
}

fn every_commit_is_in_the_ca_chain(s: &dyn Store) {
    let m = load(s);
    let dev = group(&m, "dev");
    // A policy change by a named admin, from an address, with a token.
    let origin = Origin::named_admin("alice")
        .from_addr("10.0.0.9".parse().unwrap())
        .with_token("0123456789abcdef");
    commit_as(s, vec![Change::AddGroup(dev)], origin, "group add dev").unwrap();
    // A change that hosts do not see (no new version) is recorded too.
    commit_as(
        s,
        vec![Change::AddToken {
            hash: "u-hash".into(),
            token: token(TokenKind::Scim, "scim"),
        }],
        Origin::scim(),
        "scim token",
    )
    .unwrap();
    // A refused commit leaves no record.
    let before = ca_records(s, crate::audit::CHANGE_KIND).len();
    let m = load(s);
    assert!(commit(s, vec![Change::AddGroup(group(&m, "dev"))]).is_err());
    let changes = ca_records(s, crate::audit::CHANGE_KIND);
    assert_eq!(
        changes.len(),
        before,
        "nothing recorded for a refused commit"
    );
    let first = &changes[changes.len() - 2];
    assert_eq!(first.event["origin"], "admin");
    assert_eq!(first.event["actor"], "alice");
    assert_eq!(first.event["source"], "10.0.0.9");
    assert_eq!(first.event["token_id"], "0123456789abcdef");
    assert_eq!(first.event["what"], "group add dev");
    assert_eq!(first.event["version"].as_u64(), Some(2));
    assert_eq!(first.user, "alice", "the actor is the record's user column");
    let second = &changes[changes.len() - 1];
    assert_eq!(
        (
            second.event["origin"].as_str(),
            second.event["version"].is_null()
        ),
        (Some("scim"), true)
    );
    // `--user` on the chain finds what an actor did.
    let by_alice = s
        .audit_list(&Filter {
            host: Some(CA_CHAIN.into()),
            kind: None,
            user: Some("alice".into()),
            since: None,
            limit: 100,
        })
        .unwrap();
    assert_eq!(by_alice.len(), 1);
    let v = s.audit_verify().unwrap();
    assert!(v.ok, "{v:?}");
}

fn people_and_credentials_round_trip(s: &dyn Store) {
    let m = load(s);
    let ops = group(&m, "ops");
    let m = commit(s, vec![Change::AddGroup(ops.clone())]).unwrap();
    let bob = User {
        source: crate::model::Source::SignIn,
        ..user(&m, "bob", &[])
    };
    commit(s, vec![Change::AddUser(bob.clone())]).unwrap();
    let m = commit(
        s,
        vec![
            Change::AddMember {
                group: gn("ops"),
                user: un("bob"),
                at: NOW,
                source: crate::model::Source::SignIn,
            },
            Change::MapGroup {
                idp_group: "9f2c-ops guid".into(),
                group: gn("ops"),
                at: NOW,
            },
            Change::SetGroupSource {
                name: gn("ops"),
                source: crate::model::Source::Scim,
            },
            Change::AddToken {
                hash: "bob-hash".into(),
                token: token(TokenKind::User, "bob"),
            },
            Change::AddToken {
                hash: "ci-hash".into(),
                token: token(TokenKind::Admin, "ci"),
            },
        ],
    )
    .unwrap();
    let mut expected = bob.clone();
    expected.groups.insert(gn("ops"));
    assert_eq!(m.user(&un("bob")).unwrap(), &expected);
    assert_eq!(
        m.membership_source(&gn("ops"), &un("bob")),
        Some(crate::model::Source::SignIn)
    );
    assert_eq!(
        m.group(&gn("ops")).unwrap().source,
        crate::model::Source::Scim
    );
    assert!(m.idp_groups()["9f2c-ops guid"].contains(&gn("ops")));
    assert_eq!(m.token("ci-hash").unwrap(), &token(TokenKind::Admin, "ci"));
    // Disabled by SCIM, the binding changed, tokens revoked, a mapping ended.
    let m = commit(
        s,
        vec![
            Change::DisableUser {
                name: un("bob"),
                at: NOW,
                by: crate::model::Disabler::Scim,
            },
            Change::SetUserAttrs {
                name: un("bob"),
                gecos: "Bob".into(),
                external_id: Some("00u-bob".into()),
                oidc: Some(crate::model::OidcBinding {
                    issuer: "https://other.example".into(),
                    subject: "b-2".into(),
                }),
            },
            Change::RevokeTokens {
                hashes: vec!["bob-hash".into()],
                at: NOW + 1,
            },
            Change::UnmapGroup {
                idp_group: "9f2c-ops guid".into(),
                group: gn("ops"),
            },
        ],
    )
    .unwrap();
    let b = m.user(&un("bob")).unwrap();
    assert_eq!(b.disabled, Some(crate::model::Disabler::Scim));
    assert_eq!(b.oidc.as_ref().unwrap().issuer, "https://other.example");
    assert_eq!(b.external_id.as_deref(), Some("00u-bob"));
    assert_eq!(m.token("bob-hash").unwrap().revoked_at, Some(NOW + 1));
    assert!(m.idp_groups().is_empty());
    // An admin's add of an existing membership makes it the admin's.
    let m = commit(
        s,
        vec![Change::AddMember {
            group: gn("ops"),
            user: un("bob"),
            at: NOW,
            source: crate::model::Source::Admin,
        }],
    )
    .unwrap();
    assert_eq!(
        m.membership_source(&gn("ops"), &un("bob")),
        Some(crate::model::Source::Admin)
    );
    // Deleting the group takes its mappings.
    commit(
        s,
        vec![Change::MapGroup {
            idp_group: "x".into(),
            group: gn("ops"),
            at: NOW,
        }],
    )
    .unwrap();
    let m = commit(
        s,
        vec![Change::DeleteGroup {
            name: gn("ops"),
            at: NOW,
        }],
    )
    .unwrap();
    assert!(m.idp_groups().is_empty());
}

/// CA key sets (issue 23's rotations): each role's keys come back as committed, a later
/// set replaces the earlier one, roles are independent.
fn ca_keys_round_trip(s: &dyn Store) {
    use crate::cakeys::{CaKey, CaKeyState, CaRole};
    assert!(load(s).ca_keys(CaRole::User).is_empty());
    let key = |public: &str, state| CaKey {
        source: format!("file:{public}"),
        public: format!("ssh-ed25519 {public} c"),
        state,
        added_at: NOW,
        added_version: 2,
        signing_since: Some(NOW - 1),
        switch_at: None,
        retire_at: Some(NOW + 60),
        stale_after: None,
    };
    let user = vec![
        key("AAAA1", CaKeyState::Signing),
        CaKey {
            source: "pkcs11:token=t;object=o?module-path=/m.so&pin-source=/p".into(),
            signing_since: None,
            retire_at: None,
            switch_at: Some(NOW + 5),
            stale_after: Some(3600),
            ..key("AAAA2", CaKeyState::Next)
        },
    ];
    let m = commit(
        s,
        vec![Change::SetCaKeys {
            role: CaRole::User,
            keys: user.clone(),
        }],
    )
    .unwrap();
    assert_eq!(m.ca_keys(CaRole::User), user.as_slice());
    assert_eq!(load(s).ca_keys(CaRole::User), user.as_slice());
    let host = vec![
        key("AAAA3", CaKeyState::Retiring),
        key("AAAA4", CaKeyState::Signing),
    ];
    commit(
        s,
        vec![Change::SetCaKeys {
            role: CaRole::Host,
            keys: host.clone(),
        }],
    )
    .unwrap();
    let after = vec![user[1].clone()];
    commit(
        s,
        vec![Change::SetCaKeys {
            role: CaRole::User,
            keys: after.clone(),
        }],
    )
    .unwrap();
    let m = load(s);
    assert_eq!(m.ca_keys(CaRole::User), after.as_slice());
    let mut got = m.ca_keys(CaRole::Host).to_vec();
    got.sort_by(|a, b| a.public.cmp(&b.public));
    assert_eq!(got, host);
}

fn a_recycled_name_takes_a_new_id(s: &dyn Store) {
    let m = load(s);
    let carol = user(&m, "carol", &[]);
    commit(s, vec![Change::AddUser(carol.clone())]).unwrap();
    let m = commit(
        s,
        vec![
            Change::DisableUser {
                name: un("carol"),
                at: NOW,
                by: crate::model::Disabler::Scim,
            },
            Change::DeleteUser {
                name: un("carol"),
                at: NOW,
            },
        ],
    )
    .unwrap();
    let again = user(&m, "carol", &[]);
    assert_ne!(
        again.uid, carol.uid,
        "a new user of the name gets a new uid"
    );
    let m = commit(s, vec![Change::AddUser(again.clone())]).unwrap();
    assert_eq!(m.user(&un("carol")).unwrap().uid, again.uid);
    assert_eq!(m.previous_id(IdKind::User, "carol"), Some(again.uid));
    // The old uid stays allocated to the old carol: nobody else takes it.
    assert_eq!(
        m.id_owner(carol.uid.get()),
        Some(&(IdKind::User, "carol".to_string()))
    );
    let dave = User {
        uid: carol.uid,
        ..user(&m, "dave", &[])
    };
    assert!(commit(s, vec![Change::AddUser(dave)]).is_err());
}

fn retention_prunes_old_rows_only(s: &dyn Store) {
    let mut old = decision("alice", true);
    old.at = NOW - 1000;
    s.record(Record {
        decision: old,
        cert: Some(cert(1, "alice", NOW - 900)),
    })
    .blocking_recv()
    .unwrap()
    .unwrap();
    record(s, "alice", Some(cert(2, "alice", NOW + 3600))).unwrap();
    assert_eq!(
        s.prune(None, None, 10, NOW).unwrap(),
        super::Pruned::default()
    );
    let p = s.prune(Some(NOW - 500), Some(NOW - 500), 10, NOW).unwrap();
    assert_eq!((p.decisions, p.certificates), (1, 1));
    assert_eq!(s.decisions(10, None).unwrap().len(), 1);
    let certs = s
        .certs(&CertQuery {
            user: None,
            valid_only: false,
            limit: 10,
            now: NOW,
        })
        .unwrap();
    assert_eq!(certs.iter().map(|c| c.serial).collect::<Vec<_>>(), vec![2]);
    // Nothing left to prune: no record; the chain keeps every decision's record.
    assert_eq!(
        s.prune(Some(NOW - 500), Some(NOW - 500), 10, NOW).unwrap(),
        super::Pruned::default()
    );
    assert_eq!(ca_records(s, "retention").len(), 1);
    assert_eq!(ca_records(s, crate::audit::DECISION_KIND).len(), 2);
    assert!(s.audit_verify().unwrap().ok);
    assert_eq!(s.load(NOW).unwrap().last_serial, 2, "serials never go back");
}

fn enroll_token(uses: u32, names: &[&str]) -> Change {
    Change::AddToken {
        hash: "reusable".into(),
        token: Token {
            tags: Some(Tags::parse("env=prod").unwrap()),
            names: names
                .iter()
                .map(|n| HostPattern::parse(n).unwrap())
                .collect(),
            max_uses: uses,
            ..Token::bearer(
                TokenKind::Enroll,
                "host enrollment",
                NOW,
                NOW + 3600,
                "conformance",
            )
        },
    }
}

fn enroll_change(m: &Model, token: &str, name: &str, serial: &str) -> (Change, Host) {
    let host = Host {
        id: m.next_host_id(),
        name: HostName::new(name).unwrap(),
        tags: Tags::parse("env=prod").unwrap(),
        enrolled_at: NOW,
        removed: false,
        cert_serial: serial.into(),
        cert_not_after: NOW + 86400,
        ssh_names: vec![],
    };
    (
        Change::Enroll {
            token_hash: token.into(),
            at: NOW,
            host: host.clone(),
            cert: HostCert {
                serial: serial.into(),
                not_after: NOW + 86400,
                issued_at: NOW,
            },
        },
        host,
    )
}

fn reusable_tokens_count_their_uses(s: &dyn Store) {
    let mut m = commit(s, vec![enroll_token(3, &["*.prod.example.com"])]).unwrap();
    for i in 0..3 {
        let (c, _) = enroll_change(
            &m,
            "reusable",
            &format!("web-{i}.prod.example.com"),
            &format!("0{i}"),
        );
        m = commit(s, vec![c]).unwrap();
        let t = m.token("reusable").unwrap();
        assert_eq!(t.uses, i + 1);
        assert_eq!(t.used_at.is_some(), i == 2, "used up after the third");
    }
    let (c, _) = enroll_change(&m, "reusable", "web-9.prod.example.com", "09");
    assert!(matches!(
        commit(s, vec![c]).unwrap_err(),
        StoreError::Conflict(_)
    ));
    let m = load(s);
    assert_eq!(
        m.token("reusable").unwrap().names[0].to_string(),
        "*.prod.example.com"
    );
    assert!(m
        .active_host(&HostName::new("web-9.prod.example.com").unwrap())
        .is_none());
}

fn host_identity_and_host_certificates(s: &dyn Store) {
    let m = commit(s, vec![enroll_token(1, &["web-1"])]).unwrap();
    let (c, host) = enroll_change(&m, "reusable", "web-1", "0a");
    let ssh = |serial: u64, valid_before: u64| HostSshCert {
        serial,
        host_id: host.id,
        host: host.name.clone(),
        key_id: "smith-host:web-1".into(),
        principals: vec![host.name.clone()],
        key_fingerprint: format!("SHA256:{serial}"),
        valid_after: NOW - 300,
        valid_before,
        issued_at: NOW,
    };
    commit(
        s,
        vec![
            c,
            Change::HostSshCerts(vec![ssh(11, NOW + 3600), ssh(12, NOW - 1)]),
        ],
    )
    .unwrap();
    // A renewal supersedes the previous client certificate; the new one is current.
    let m = commit(
        s,
        vec![
            Change::HostCert {
                host_id: host.id,
                cert: HostCert {
                    serial: "0b".into(),
                    not_after: NOW + 2 * 86400,
                    issued_at: NOW + 50,
                },
            },
            Change::HostSshCerts(vec![ssh(13, NOW + 7200)]),
        ],
    )
    .unwrap();
    assert_eq!(m.host_cert("0a").unwrap().superseded_at, Some(NOW + 50));
    assert_eq!(m.host_cert("0b").unwrap().superseded_at, None);
    assert_eq!(m.host_cert("0b").unwrap().issued_at, NOW + 50);
    assert_eq!(m.host_of_cert("0a").unwrap().cert_serial, "0b");
    // Host certificates: listed newest first (by issue time), by host, valid only.
    let q = |valid_only| HostCertQuery {
        host: Some(host.name.clone()),
        valid_only,
        limit: 10,
        now: NOW,
    };
    let all = s.host_certs(&q(false)).unwrap();
    assert_eq!(all.len(), 3);
    assert_eq!(all[0].serial, 13);
    assert_eq!(all[0].principals, vec!["web-1"]);
    let valid: Vec<u64> = s
        .host_certs(&q(true))
        .unwrap()
        .iter()
        .map(|c| c.serial)
        .collect();
    assert_eq!(valid, vec![13, 11]);
    let plan = s
        .host_cert_plan(HostCertSelector::Host(host.id), NOW)
        .unwrap()
        .unwrap();
    assert_eq!(
        plan.revoke.iter().map(|c| c.serial).collect::<Vec<_>>(),
        vec![11, 13]
    );
    assert_eq!(plan.expired, vec![12]);
    assert!(s
        .host_cert_plan(HostCertSelector::Serial(99), NOW)
        .unwrap()
        .is_none());
    // Revoked: in the host KRL, listed as revoked, once only, with a @ca record.
    let ca_key = crate::sshca::generate(crate::sshca::CaAlgorithm::Ed25519, "hostca")
        .unwrap()
        .public_key()
        .to_openssh()
        .unwrap();
    let rev = crate::model::HostCertRevocation {
        serial: 11,
        host: host.name.clone(),
        valid_before: NOW + 3600,
        ca_key,
        revoked_at: NOW,
        reason: "key leaked".into(),
        via: "serial".into(),
    };
    let m = commit(s, vec![Change::RevokeHostCerts(vec![rev.clone()])]).unwrap();
    assert_eq!(
        m.host_revoked().keys().copied().collect::<Vec<_>>(),
        vec![11]
    );
    assert!(m.host_krl_base64().is_some());
    let valid: Vec<u64> = s
        .host_certs(&q(true))
        .unwrap()
        .iter()
        .map(|c| c.serial)
        .collect();
    assert_eq!(valid, vec![13]);
    let plan = s
        .host_cert_plan(HostCertSelector::Serial(11), NOW)
        .unwrap()
        .unwrap();
    assert_eq!(plan.already_revoked, vec![11]);
    assert!(commit(s, vec![Change::RevokeHostCerts(vec![rev])]).is_err());
    // Tags and alerts.
    let m = commit(
        s,
        vec![Change::SetHostTags {
            host_id: host.id,
            tags: Tags::parse("env=dev").unwrap(),
        }],
    )
    .unwrap();
    assert_eq!(m.host(host.id).unwrap().tags.to_string(), "env=dev");
    commit(
        s,
        vec![Change::Alert(crate::model::Alert {
            kind: "host_identity_forked".into(),
            host: Some(host.name.clone()),
            detail: "two holders".into(),
            at: NOW,
        })],
    )
    .unwrap();
    let ca = s
        .audit_list(&Filter {
            host: Some(CA_CHAIN.into()),
            kind: None,
            user: None,
            since: None,
            limit: 100,
        })
        .unwrap();
    // Every commit is in the chain as a change record too; these are the others.
    let kinds: Vec<&str> = ca
        .iter()
        .map(|e| e.kind.as_str())
        .filter(|k| *k != crate::audit::CHANGE_KIND)
        .collect();
    assert_eq!(kinds, vec!["host_cert_revocation", "alert"]);
    let alert = ca.iter().find(|e| e.kind == "alert").unwrap();
    assert_eq!(alert.event["kind"].as_str(), Some("host_identity_forked"));
    assert!(s.audit_verify().unwrap().ok);
    // After their certificates expire, revocations leave the KRL.
    assert!(s
        .load(NOW + 3601)
        .unwrap()
        .model
        .host_krl_base64()
        .is_none());
}
