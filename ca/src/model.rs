//! The in-memory policy model: users, groups, memberships, grants, tokens, hosts, the id
//! allocator, the global version and the change log.
//!
//! Owns: the authoritative in-memory copy of everything issuance, authentication and
//! host sync read on their hot paths, and the [`Change`] vocabulary every admin mutation
//! is expressed in. A change is first persisted by [`crate::db::Store::commit`] and only
//! then applied here with [`Model::apply`] (write-through), so the model never holds
//! anything the database does not.
//!
//! Also holds the unexpired certificate revocations and the OpenSSH KRL built from them
//! (rebuilt, expired entries pruned, whenever revocations change or the model loads), so
//! that every host sync hands out the KRL without any work.
//!
//! Must never: touch a store or the network, or be mutated except through
//! [`Model::apply`] after a successful commit (its fields are private: readers get
//! accessors, stores build it with [`Model::restore`]).

use ipnet::IpNet;
use smith_proto::{GroupName, HostName, HostPattern, IdRange, Level, PosixId, Tags, UserName};
use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::sync::Arc;

/// How many versions the in-memory change log keeps; a host further behind gets a full
/// snapshot.
pub const CHANGE_LOG_LEN: usize = 10_000;

/// Who created a user, a group or a membership, and so who may change it: SCIM changes
/// only what SCIM created, an OIDC sign-in only the memberships sign-ins made.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
pub enum Source {
    /// An admin (the admin API).
    Admin,
    /// The IdP's SCIM provisioning.
    Scim,
    /// An engineer's OIDC sign-in (first sign-in provisioning, mapped IdP groups).
    SignIn,
}

impl Source {
    pub fn as_str(self) -> &'static str {
        match self {
            Source::Admin => "admin",
            Source::Scim => "scim",
            Source::SignIn => "signin",
        }
    }
    pub fn parse(s: &str) -> Option<Source> {
        [Source::Admin, Source::Scim, Source::SignIn]
            .into_iter()
            .find(|v| v.as_str() == s)
    }
}

impl std::fmt::Display for Source {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Who disabled a user: an admin's disable is sticky (SCIM cannot undo it).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub enum Disabler {
    Admin,
    Scim,
}

impl Disabler {
    pub fn as_str(self) -> &'static str {
        match self {
            Disabler::Admin => "admin",
            Disabler::Scim => "scim",
        }
    }
    pub fn parse(s: &str) -> Option<Disabler> {
        [Disabler::Admin, Disabler::Scim]
            .into_iter()
            .find(|v| v.as_str() == s)
    }
}

/// The immutable IdP identity a user is bound to: the issuer and the `sub` it gives the
/// person. A login name is only a label: sign-ins are matched on this.
#[derive(Debug, Clone, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub struct OidcBinding {
    /// The issuer URL (`iss`); empty for a binding made before issuers were recorded,
    /// which any issuer matches and the next sign-in completes.
    pub issuer: String,
    pub subject: String,
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct User {
    pub name: UserName,
    pub uid: PosixId,
    /// `Some`: disabled, and by whom.
    pub disabled: Option<Disabler>,
    pub gecos: String,
    pub shell: String,
    pub created_at: u64,
    pub groups: BTreeSet<GroupName>,
    /// The IdP's id for this user (SCIM `externalId`), if provisioned by SCIM. A first
    /// sign-in binds an unbound user only when the token's external-id claim equals it.
    pub external_id: Option<String>,
    /// The IdP identity this user is bound to; a token for the same login name with
    /// another identity is refused.
    pub oidc: Option<OidcBinding>,
    /// Who created the user.
    pub source: Source,
}

impl User {
    pub fn is_disabled(&self) -> bool {
        self.disabled.is_some()
    }
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Group {
    pub name: GroupName,
    pub gid: PosixId,
    pub members: BTreeSet<UserName>,
    pub created_at: u64,
    /// The IdP's id for this group (SCIM `externalId`).
    pub external_id: Option<String>,
    /// Who created the group (SCIM changes only its own groups).
    pub source: Source,
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Grant {
    pub id: u64,
    pub group: GroupName,
    pub selector: Tags,
    pub level: Level,
    pub max_ttl_secs: u64,
    pub source_cidrs: Vec<IpNet>,
    pub require_reason: bool,
    /// Parsed once, when the grant is added or loaded.
    pub time_windows: Vec<crate::timewin::Window>,
    pub created_at: u64,
    /// What certificates issued under this grant carry.
    pub cert: CertRules,
}

/// What a certificate issued under a grant may carry besides the person's own login
/// (stored as JSON with the grant; absent fields take their defaults).
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(default)]
pub struct CertRules {
    /// Shared local accounts the grant allows logging in as (`--login deploy`): never a
    /// reserved name (root), never a Smith user.
    pub logins: Vec<UserName>,
    /// The `permit-*` extensions (agent and X11 forwarding off unless granted).
    pub permits: smith_proto::grants::Permits,
    /// The command sshd runs instead of the one asked for (`force-command`).
    pub force_command: Option<String>,
    /// A sudo grant's command rules (not carried by certificates: hostd renders them as
    /// sudoers rules on the grant's NSS group, pam_smith re-checks them). Stored in the
    /// same JSON column.
    #[serde(skip_serializing_if = "smith_proto::sudorules::SudoRules::is_unrestricted")]
    pub sudo: smith_proto::sudorules::SudoRules,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub enum TokenKind {
    /// The token `smith-ca init` prints: an admin token that expires after a day and is
    /// retired as soon as a named admin exists.
    Bootstrap,
    /// A named admin's token: an IdP sign-in (`smith-ca admin login`) or automation.
    Admin,
    User,
    Enroll,
    /// The IdP's SCIM client: `/scim/v2/...` only.
    Scim,
}

impl TokenKind {
    pub const ALL: [TokenKind; 5] = [
        TokenKind::Bootstrap,
        TokenKind::Admin,
        TokenKind::User,
        TokenKind::Enroll,
        TokenKind::Scim,
    ];
    pub fn as_str(self) -> &'static str {
        match self {
            TokenKind::Bootstrap => "bootstrap",
            TokenKind::Admin => "admin",
            TokenKind::User => "user",
            TokenKind::Enroll => "enroll",
            TokenKind::Scim => "scim",
        }
    }
    pub fn parse(s: &str) -> Option<TokenKind> {
        TokenKind::ALL.into_iter().find(|k| k.as_str() == s)
    }
    /// Whether the token opens the admin API.
    pub fn is_admin(self) -> bool {
        matches!(self, TokenKind::Bootstrap | TokenKind::Admin)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Token {
    pub kind: TokenKind,
    /// The admin's name (`bootstrap` for the bootstrap token), the user name, `scim`, or
    /// the enrollment's intended use.
    pub subject: String,
    /// Enrollment tokens: the tags the host will get.
    pub tags: Option<Tags>,
    pub created_at: u64,
    /// Every token expires.
    pub expires_at: u64,
    /// When it was used up (enrollment tokens, after their last use).
    pub used_at: Option<u64>,
    /// Enrollment tokens: the host names (exact or `*.domain`) a host may take, as its
    /// name and as SSH names.
    pub names: Vec<HostPattern>,
    /// Enrollment tokens: how many hosts may enroll with it (1 for a single-use token).
    pub max_uses: u32,
    /// Enrollment tokens: how many did.
    pub uses: u32,
    /// Who minted it (an [`crate::origin::Origin`] as text).
    pub created_by: String,
    /// `Some`: revoked then (refused from that moment on).
    pub revoked_at: Option<u64>,
}

impl Token {
    /// A bearer token of `kind` for `subject` (no tags, names or uses), minted by
    /// `created_by`.
    pub fn bearer(
        kind: TokenKind,
        subject: &str,
        created_at: u64,
        expires_at: u64,
        created_by: &str,
    ) -> Token {
        Token {
            kind,
            subject: subject.to_string(),
            tags: None,
            created_at,
            expires_at,
            used_at: None,
            names: vec![],
            max_uses: 1,
            uses: 0,
            created_by: created_by.to_string(),
            revoked_at: None,
        }
    }

    /// Whether an enrollment token allows `name`.
    pub fn allows_name(&self, name: &HostName) -> bool {
        self.names.iter().any(|p| p.matches(name))
    }

    /// Whether the token still opens anything at `now` (not revoked, not expired; an
    /// enrollment token also not used up).
    pub fn is_live(&self, now: u64) -> bool {
        self.revoked_at.is_none()
            && self.expires_at > now
            && !(self.kind == TokenKind::Enroll && self.used_at.is_some())
    }
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Host {
    pub id: u64,
    pub name: HostName,
    pub tags: Tags,
    pub enrolled_at: u64,
    pub removed: bool,
    pub cert_serial: String,
    pub cert_not_after: u64,
    /// Extra principals of its SSH host certificates (besides its name), fixed at
    /// enrollment from what the token allowed.
    pub ssh_names: Vec<HostName>,
}

impl Host {
    /// Every principal of the host's SSH host certificates: its name first.
    pub fn principals(&self) -> Vec<HostName> {
        let mut v = vec![self.name.clone()];
        for n in &self.ssh_names {
            if !v.contains(n) {
                v.push(n.clone());
            }
        }
        v
    }
}

/// One revoked user certificate (the `revocations` table, append-only).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Revocation {
    pub serial: u64,
    pub key_id: String,
    pub user: String,
    /// The certificate's own end of validity: after it the entry leaves the KRL.
    pub valid_before: u64,
    /// The user CA key (OpenSSH public key line) that signed the certificate.
    pub ca_key: String,
    pub revoked_at: u64,
    pub reason: String,
    /// How it was asked for.
    pub via: RevokeVia,
}

/// How a revocation was asked for (stored and shown as [`RevokeVia::as_str`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub enum RevokeVia {
    /// An admin, by serial.
    Serial,
    /// An admin, by key ID.
    KeyId,
    /// An admin, every valid certificate of a user.
    User,
    /// The user was disabled by an admin.
    UserDisabled,
    /// The user was deleted by an admin.
    UserDeleted,
    /// SCIM deactivated the user.
    ScimDeactivated,
    /// SCIM deleted the user.
    ScimDeleted,
}

impl RevokeVia {
    pub fn as_str(self) -> &'static str {
        match self {
            RevokeVia::Serial => "serial",
            RevokeVia::KeyId => "key_id",
            RevokeVia::User => "user",
            RevokeVia::UserDisabled => "user_disabled",
            RevokeVia::UserDeleted => "user_deleted",
            RevokeVia::ScimDeactivated => "scim_deactivated",
            RevokeVia::ScimDeleted => "scim_deleted",
        }
    }
    pub fn parse(s: &str) -> Option<RevokeVia> {
        [
            RevokeVia::Serial,
            RevokeVia::KeyId,
            RevokeVia::User,
            RevokeVia::UserDisabled,
            RevokeVia::UserDeleted,
            RevokeVia::ScimDeactivated,
            RevokeVia::ScimDeleted,
        ]
        .into_iter()
        .find(|v| v.as_str() == s)
    }
    /// Whether the user is gone (deleted), not only disabled.
    pub fn is_deletion(self) -> bool {
        matches!(self, RevokeVia::UserDeleted | RevokeVia::ScimDeleted)
    }
}

impl std::fmt::Display for RevokeVia {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An SSH host certificate the host CA signed (recorded so that it can be listed and
/// revoked).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct HostSshCert {
    pub serial: u64,
    pub host_id: u64,
    pub host: HostName,
    pub key_id: String,
    pub principals: Vec<HostName>,
    pub key_fingerprint: String,
    pub valid_after: u64,
    pub valid_before: u64,
    pub issued_at: u64,
}

/// One revoked SSH host certificate (append-only, like user certificate revocations).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct HostCertRevocation {
    pub serial: u64,
    pub host: HostName,
    pub valid_before: u64,
    /// The host CA key (OpenSSH line) that signed it.
    pub ca_key: String,
    pub revoked_at: u64,
    pub reason: String,
    /// `serial`, `host` (an admin, every certificate of a host) or `host_removed`.
    pub via: String,
}

/// An event for the CA's audit chain that changes nothing else.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Alert {
    /// e.g. `host_identity_forked`.
    pub kind: String,
    pub host: Option<HostName>,
    pub detail: String,
    pub at: u64,
}

/// What the model knows of an mTLS client certificate it issued.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct CertRef {
    pub host_id: u64,
    pub issued_at: u64,
    /// When a renewal replaced it (`None`: the host's current certificate).
    pub superseded_at: Option<u64>,
}

/// One mTLS client certificate issued to a host.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct HostCert {
    /// Hex of the certificate's serial number bytes.
    pub serial: String,
    pub not_after: u64,
    pub issued_at: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub enum IdKind {
    User,
    Group,
}

impl IdKind {
    pub fn as_str(self) -> &'static str {
        match self {
            IdKind::User => "user",
            IdKind::Group => "group",
        }
    }
}

/// Which users a policy change affects, for host deltas.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Affected {
    Users(BTreeSet<UserName>),
    /// Hosts must get a full snapshot.
    All,
}

/// Every mutation of the model. Policy changes bump the global version.
///
/// Changes are kept as JSON in a shared database's change log, where replicas of the
/// previous release read them during a rolling upgrade: a new variant, or a field whose
/// absence an older release would read as more access, must raise
/// `store::postgres::LOG_FORMAT` (older replicas then step aside instead of misreading).
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub enum Change {
    /// A user with their memberships (the groups exist, possibly created earlier in the
    /// same batch).
    AddUser(User),
    /// Disables a user (their user tokens are revoked by `RevokeTokens` planned with it).
    DisableUser {
        name: UserName,
        at: u64,
        by: Disabler,
    },
    /// Re-enables a disabled user (the admin, or SCIM for a user SCIM disabled).
    EnableUser {
        name: UserName,
    },
    /// Sets a user's descriptive attributes and identity binding (SCIM updates, OIDC
    /// binding by sign-in or by the admin).
    SetUserAttrs {
        name: UserName,
        gecos: String,
        external_id: Option<String>,
        oidc: Option<OidcBinding>,
    },
    /// Removes a user, their memberships and their user tokens (SCIM `DELETE`: a later
    /// user of the same name must not inherit them). Their id stays allocated to the name
    /// forever; the row is kept, marked deleted.
    DeleteUser {
        name: UserName,
        at: u64,
    },
    AddGroup(Group),
    /// Sets a group's SCIM `externalId`.
    SetGroupExternalId {
        name: GroupName,
        external_id: Option<String>,
    },
    /// Removes a group and its memberships (SCIM `DELETE`; its grants are removed by
    /// `RemoveGrant` changes planned with it). Its gid stays allocated to the name.
    DeleteGroup {
        name: GroupName,
        at: u64,
    },
    AddMember {
        group: GroupName,
        user: UserName,
        at: u64,
        source: Source,
    },
    RemoveMember {
        group: GroupName,
        user: UserName,
    },
    AddGrant(Grant),
    RemoveGrant {
        id: u64,
        at: u64,
    },
    AddToken {
        hash: String,
        token: Token,
    },
    /// Revokes tokens (by hash): refused from then on, kept for the record.
    RevokeTokens {
        hashes: Vec<String>,
        at: u64,
    },
    /// Lets members of the IdP group `idp_group` (its id as the ID token's groups claim
    /// carries it) into `group` at their sign-ins.
    MapGroup {
        idp_group: String,
        group: GroupName,
        at: u64,
    },
    /// Ends a mapping (the memberships sign-ins made through it go with
    /// `RemoveMember` changes planned with it).
    UnmapGroup {
        idp_group: String,
        group: GroupName,
    },
    /// Hands a group to another owner (SCIM's delete of a group holding grants hands it
    /// to the admin instead of deleting the admin's grants).
    SetGroupSource {
        name: GroupName,
        source: Source,
    },
    Enroll {
        token_hash: String,
        at: u64,
        host: Host,
        cert: HostCert,
    },
    HostCert {
        host_id: u64,
        cert: HostCert,
    },
    RemoveHost {
        host_id: u64,
        at: u64,
    },
    /// Replaces a host's tags (an admin's; a host never chooses its own).
    SetHostTags {
        host_id: u64,
        tags: Tags,
    },
    /// Records SSH host certificates the host CA signed (the store keeps them; the model
    /// does not).
    HostSshCerts(Vec<HostSshCert>),
    /// Revokes SSH host certificates (into the host KRL ssh clients refresh).
    RevokeHostCerts(Vec<HostCertRevocation>),
    /// Something an operator must know about (e.g. two holders of one host identity):
    /// recorded in the CA's audit chain only.
    Alert(Alert),
    /// Revokes certificates (they go into the KRL hosts sync). Committed only through
    /// the writer, which appends each to the CA's audit chain in the same transaction.
    Revoke(Vec<Revocation>),
    /// A new epoch: hosts take the next full snapshot whatever their version (the
    /// database went back in time without `smith-ca restore` saying so).
    SetEpoch {
        epoch: String,
    },
    /// Replaces a CA role's keys (a rotation step: see `crate::cakeys`). Policy: hosts
    /// wake and sync the user CA keys they must trust and the host CA key that signs
    /// (they renew host certificates another key signed).
    SetCaKeys {
        role: crate::cakeys::CaRole,
        keys: Vec<crate::cakeys::CaKey>,
    },
}

impl Change {
    /// Whether the change alters what hosts receive (and so bumps the version).
    pub fn is_policy(&self) -> bool {
        matches!(
            self,
            Change::AddUser(_)
                | Change::DisableUser { .. }
                | Change::EnableUser { .. }
                | Change::SetUserAttrs { .. }
                | Change::DeleteUser { .. }
                | Change::AddGroup(_)
                | Change::DeleteGroup { .. }
                | Change::AddMember { .. }
                | Change::RemoveMember { .. }
                | Change::AddGrant(_)
                | Change::RemoveGrant { .. }
                | Change::SetHostTags { .. }
                | Change::Revoke(_)
                | Change::SetCaKeys { .. }
        )
    }

    /// Users whose host entries this change may alter, computed against the model
    /// *before* the change is applied (and, for grants, the group's members then).
    fn affected(&self, m: &Model) -> Affected {
        let mut set = BTreeSet::new();
        match self {
            Change::AddUser(u) => {
                set.insert(u.name.clone());
            }
            Change::DisableUser { name, .. }
            | Change::EnableUser { name }
            | Change::SetUserAttrs { name, .. }
            | Change::DeleteUser { name, .. } => {
                set.insert(name.clone());
            }
            Change::DeleteGroup { name, .. } => {
                if let Some(group) = m.groups.get(name) {
                    set.extend(group.members.iter().cloned());
                }
            }
            Change::AddMember { user, .. } | Change::RemoveMember { user, .. } => {
                set.insert(user.clone());
            }
            Change::AddGrant(g) => {
                if let Some(group) = m.groups.get(&g.group) {
                    set.extend(group.members.iter().cloned());
                }
            }
            Change::RemoveGrant { id, .. } => {
                if let Some(group) = m.grants.get(id).and_then(|g| m.groups.get(&g.group)) {
                    set.extend(group.members.iter().cloned());
                }
            }
            // A host's tags decide which grants apply to it: it needs a full snapshot.
            Change::SetHostTags { .. } => return Affected::All,
            Change::AddGroup(_)
            | Change::SetGroupExternalId { .. }
            | Change::SetGroupSource { .. }
            | Change::MapGroup { .. }
            | Change::UnmapGroup { .. }
            | Change::RevokeTokens { .. }
            | Change::SetEpoch { .. }
            | Change::AddToken { .. }
            | Change::Enroll { .. }
            | Change::HostCert { .. }
            | Change::RemoveHost { .. }
            | Change::HostSshCerts(_)
            | Change::RevokeHostCerts(_)
            | Change::Alert(_)
            // The KRL and the user CA keys are sent whole with every response: no user
            // entry changes.
            | Change::SetCaKeys { .. }
            | Change::Revoke(_) => {}
        }
        Affected::Users(set)
    }
}

/// The CA-wide settings fixed at init.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct Settings {
    pub id_range: IdRange,
    pub sudo_gid: PosixId,
    /// gid of `smith-users` (every Smith user of a host): the last id of the range,
    /// allocated at init (or by migration 11 for CAs made before).
    pub users_gid: PosixId,
}

#[derive(Debug, Clone)]
pub struct Model {
    settings: Settings,
    users: BTreeMap<UserName, User>,
    groups: BTreeMap<GroupName, Group>,
    grants: BTreeMap<u64, Grant>,
    /// By hex SHA-256 of the token.
    tokens: HashMap<String, Token>,
    hosts: BTreeMap<u64, Host>,
    /// Non-removed hosts by name.
    active_hosts: HashMap<HostName, u64>,
    /// Every mTLS client certificate ever issued, by serial hex.
    host_certs: HashMap<String, CertRef>,
    /// Unexpired SSH host certificate revocations by serial.
    host_revoked: BTreeMap<u64, HostCertRevocation>,
    /// The KRL of `host_revoked` (binary, base64), `None` when nothing is revoked.
    host_krl_base64: Option<Arc<str>>,
    /// Allocated ids (users, groups, the reserved sudo gid), never freed.
    ids: HashMap<u32, (IdKind, String)>,
    id_by_name: HashMap<(IdKind, String), u32>,
    /// Allocation cursor: ids below it in the range are never handed out again.
    next_id: u32,
    next_grant_id: u64,
    next_host_id: u64,
    /// Global policy version (persisted, monotonic).
    version: u64,
    /// `(version, affected)` for versions after `log_base`.
    log: VecDeque<(u64, Affected)>,
    /// The change log covers every version in `(log_base, version]`.
    log_base: u64,
    /// Unexpired revocations by serial.
    revoked: BTreeMap<u64, Revocation>,
    /// The KRL of `revoked` (binary, base64), `None` when nothing is revoked.
    krl_base64: Option<Arc<str>>,
    /// Who made each membership: `(group, user)` → source.
    membership_source: HashMap<(GroupName, UserName), Source>,
    /// IdP group id → the CA groups its members join at sign-in.
    idp_groups: BTreeMap<String, BTreeSet<GroupName>>,
    /// This database's epoch: random, new at init and at every restore. Hosts take a full
    /// snapshot from a new epoch whatever its version.
    epoch: String,
    /// CA keys of each role that was ever rotated (`crate::cakeys`).
    ca_keys: crate::cakeys::CaKeySets,
}

/// What a store loads, handed to [`Model::restore`].
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct Restore {
    pub settings: Settings,
    pub version: u64,
    pub next_id: u32,
    pub next_grant_id: u64,
    pub next_host_id: u64,
    /// Every id ever allocated.
    pub ids: Vec<(u32, IdKind, String)>,
    /// Live users and groups, without memberships (those come in `memberships`).
    pub users: Vec<User>,
    pub groups: Vec<Group>,
    pub memberships: Vec<(GroupName, UserName, Source)>,
    pub grants: Vec<Grant>,
    pub tokens: Vec<(String, Token)>,
    pub hosts: Vec<Host>,
    /// Every mTLS client certificate ever issued, by serial hex.
    pub host_certs: Vec<(String, CertRef)>,
    /// Revocations of certificates not yet expired.
    pub revocations: Vec<Revocation>,
    /// Revocations of SSH host certificates not yet expired.
    pub host_revocations: Vec<HostCertRevocation>,
    /// `(IdP group id, CA group)` mappings.
    pub idp_groups: Vec<(String, GroupName)>,
    pub epoch: String,
    /// CA keys of rotated roles.
    pub ca_keys: crate::cakeys::CaKeySets,
}

/// Why an id could not be allocated or used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdError {
    #[error("id {id} is already used by {kind} '{name}'")]
    InUse {
        id: u32,
        kind: &'static str,
        name: String,
    },
    #[error("the id range {start}-{end} is exhausted; no id left to allocate")]
    Exhausted { start: u32, end: u32 },
}

impl Model {
    pub fn empty(settings: Settings) -> Model {
        Model {
            next_id: settings.id_range.start,
            settings,
            users: BTreeMap::new(),
            groups: BTreeMap::new(),
            grants: BTreeMap::new(),
            tokens: HashMap::new(),
            hosts: BTreeMap::new(),
            active_hosts: HashMap::new(),
            host_certs: HashMap::new(),
            host_revoked: BTreeMap::new(),
            host_krl_base64: None,
            ids: HashMap::new(),
            id_by_name: HashMap::new(),
            next_grant_id: 1,
            next_host_id: 1,
            version: 0,
            log: VecDeque::new(),
            log_base: 0,
            revoked: BTreeMap::new(),
            krl_base64: None,
            membership_source: HashMap::new(),
            idp_groups: BTreeMap::new(),
            epoch: String::new(),
            ca_keys: BTreeMap::new(),
        }
    }

    /// The model a store loaded: derived indexes rebuilt, the change log empty (hosts
    /// behind the loaded version get a full snapshot), the KRL built as of `now`.
    pub fn restore(r: Restore, now: u64) -> Model {
        let mut m = Model::empty(r.settings);
        for (id, kind, name) in &r.ids {
            m.note_id(*id, *kind, name);
        }
        m.next_id = m.next_id.max(r.next_id);
        m.next_grant_id = r.next_grant_id;
        m.next_host_id = r.next_host_id;
        m.version = r.version;
        m.log_base = r.version;
        for g in r.groups {
            m.groups.insert(g.name.clone(), g);
        }
        for u in r.users {
            m.users.insert(u.name.clone(), u);
        }
        for (g, u, source) in r.memberships {
            if let (Some(group), Some(user)) = (m.groups.get_mut(&g), m.users.get_mut(&u)) {
                group.members.insert(u.clone());
                user.groups.insert(g.clone());
                m.membership_source.insert((g, u), source);
            }
        }
        for (idp, g) in r.idp_groups {
            m.idp_groups.entry(idp).or_default().insert(g);
        }
        m.epoch = r.epoch;
        m.ca_keys = r.ca_keys;
        for g in r.grants {
            m.grants.insert(g.id, g);
        }
        m.tokens.extend(r.tokens);
        for h in r.hosts {
            if !h.removed {
                m.active_hosts.insert(h.name.clone(), h.id);
            }
            m.hosts.insert(h.id, h);
        }
        m.host_certs.extend(r.host_certs);
        for rev in r.revocations {
            m.revoked.insert(rev.serial, rev);
        }
        for rev in r.host_revocations {
            m.host_revoked.insert(rev.serial, rev);
        }
        m.rebuild_krl(now);
        m.rebuild_host_krl(now);
        m
    }

    /// What [`Model::restore`] needs to give this model back (sorted, so that equal
    /// models export equal values): a store's snapshot.
    pub fn export(&self) -> Restore {
        let mut ids: Vec<(u32, IdKind, String)> = self
            .ids
            .iter()
            .map(|(id, (k, n))| (*id, *k, n.clone()))
            .collect();
        ids.sort_by_key(|(id, _, _)| *id);
        let mut memberships: Vec<(GroupName, UserName, Source)> = self
            .groups
            .values()
            .flat_map(|g| {
                g.members.iter().map(|u| {
                    let source = self
                        .membership_source
                        .get(&(g.name.clone(), u.clone()))
                        .copied()
                        .unwrap_or(Source::Admin);
                    (g.name.clone(), u.clone(), source)
                })
            })
            .collect();
        memberships.sort();
        let mut tokens: Vec<(String, Token)> = self
            .tokens
            .iter()
            .map(|(h, t)| (h.clone(), t.clone()))
            .collect();
        tokens.sort_by(|a, b| a.0.cmp(&b.0));
        let mut host_certs: Vec<(String, CertRef)> = self
            .host_certs
            .iter()
            .map(|(s, c)| (s.clone(), *c))
            .collect();
        host_certs.sort_by(|a, b| a.0.cmp(&b.0));
        Restore {
            settings: self.settings.clone(),
            version: self.version,
            next_id: self.next_id,
            next_grant_id: self.next_grant_id,
            next_host_id: self.next_host_id,
            ids,
            users: self
                .users
                .values()
                .map(|u| User {
                    groups: BTreeSet::new(),
                    ..u.clone()
                })
                .collect(),
            groups: self
                .groups
                .values()
                .map(|g| Group {
                    members: BTreeSet::new(),
                    ..g.clone()
                })
                .collect(),
            memberships,
            grants: self.grants.values().cloned().collect(),
            tokens,
            hosts: self.hosts.values().cloned().collect(),
            host_certs,
            revocations: self.revoked.values().cloned().collect(),
            host_revocations: self.host_revoked.values().cloned().collect(),
            idp_groups: self
                .idp_groups
                .iter()
                .flat_map(|(idp, gs)| gs.iter().map(move |g| (idp.clone(), g.clone())))
                .collect(),
            epoch: self.epoch.clone(),
            ca_keys: self.ca_keys.clone(),
        }
    }

    /// A copy as a fresh load would give it (the change log empty).
    pub fn reloaded(&self) -> Model {
        let mut m = self.clone();
        m.log.clear();
        m.log_base = m.version;
        m
    }

    pub fn settings(&self) -> &Settings {
        &self.settings
    }
    /// This database's epoch (see the field).
    pub fn epoch(&self) -> &str {
        &self.epoch
    }
    /// Who made `user`'s membership in `group` (`None`: not a member).
    pub fn membership_source(&self, group: &GroupName, user: &UserName) -> Option<Source> {
        if !self
            .groups
            .get(group)
            .is_some_and(|g| g.members.contains(user))
        {
            return None;
        }
        Some(
            self.membership_source
                .get(&(group.clone(), user.clone()))
                .copied()
                .unwrap_or(Source::Admin),
        )
    }
    /// IdP group id → the CA groups it maps to.
    pub fn idp_groups(&self) -> &BTreeMap<String, BTreeSet<GroupName>> {
        &self.idp_groups
    }
    /// The CA groups the IdP groups `ids` map to.
    pub fn mapped_groups<'a>(
        &'a self,
        ids: impl IntoIterator<Item = &'a str>,
    ) -> BTreeSet<GroupName> {
        ids.into_iter()
            .filter_map(|i| self.idp_groups.get(i))
            .flatten()
            .filter(|g| self.groups.contains_key(*g))
            .cloned()
            .collect()
    }
    /// Whether some IdP group maps to `group`.
    pub fn is_mapped(&self, group: &GroupName) -> bool {
        self.idp_groups.values().any(|s| s.contains(group))
    }
    pub fn users(&self) -> &BTreeMap<UserName, User> {
        &self.users
    }
    pub fn user(&self, name: &UserName) -> Option<&User> {
        self.users.get(name)
    }
    pub fn groups(&self) -> &BTreeMap<GroupName, Group> {
        &self.groups
    }
    pub fn group(&self, name: &GroupName) -> Option<&Group> {
        self.groups.get(name)
    }
    pub fn grants(&self) -> &BTreeMap<u64, Grant> {
        &self.grants
    }
    /// A token by the hex SHA-256 of its text.
    pub fn token(&self, hash: &str) -> Option<&Token> {
        self.tokens.get(hash)
    }
    pub fn tokens(&self) -> &HashMap<String, Token> {
        &self.tokens
    }
    pub fn hosts(&self) -> &BTreeMap<u64, Host> {
        &self.hosts
    }
    pub fn host(&self, id: u64) -> Option<&Host> {
        self.hosts.get(&id)
    }
    /// The enrolled (not removed) host of that name.
    pub fn active_host(&self, name: &HostName) -> Option<&Host> {
        self.active_hosts
            .get(name)
            .and_then(|id| self.hosts.get(id))
    }
    pub fn active_host_count(&self) -> usize {
        self.active_hosts.len()
    }
    /// The host an mTLS client certificate (serial hex) was issued to.
    pub fn host_of_cert(&self, serial: &str) -> Option<&Host> {
        self.host_certs
            .get(serial)
            .and_then(|c| self.hosts.get(&c.host_id))
    }
    /// What the model knows of an mTLS client certificate (serial hex).
    pub fn host_cert(&self, serial: &str) -> Option<CertRef> {
        self.host_certs.get(serial).copied()
    }
    /// Unexpired SSH host certificate revocations by serial.
    pub fn host_revoked(&self) -> &BTreeMap<u64, HostCertRevocation> {
        &self.host_revoked
    }
    /// The KRL of revoked SSH host certificates (base64), `None` when nothing is revoked.
    pub fn host_krl_base64(&self) -> Option<&Arc<str>> {
        self.host_krl_base64.as_ref()
    }
    pub fn next_id(&self) -> u32 {
        self.next_id
    }
    pub fn next_grant_id(&self) -> u64 {
        self.next_grant_id
    }
    pub fn next_host_id(&self) -> u64 {
        self.next_host_id
    }
    pub fn version(&self) -> u64 {
        self.version
    }
    /// Unexpired revocations by serial.
    pub fn revoked(&self) -> &BTreeMap<u64, Revocation> {
        &self.revoked
    }
    /// The KRL hosts sync (base64), `None` when nothing is revoked.
    pub fn krl_base64(&self) -> Option<&Arc<str>> {
        self.krl_base64.as_ref()
    }
    /// The keys of a rotated CA role (empty: never rotated).
    pub fn ca_keys(&self, role: crate::cakeys::CaRole) -> &[crate::cakeys::CaKey] {
        self.ca_keys.get(&role).map(Vec::as_slice).unwrap_or(&[])
    }
    /// Every rotated role's keys (what a store persists).
    pub fn ca_key_sets(&self) -> &crate::cakeys::CaKeySets {
        &self.ca_keys
    }
    /// The KRL sections of a revocation: the key it names, and every published key of
    /// its role (serials are unique across a role's keys, so listing a revoked serial
    /// under each key revokes nothing else, and stays right whichever key signed it).
    fn krl_keys<'a>(&'a self, role: crate::cakeys::CaRole, named: &'a str) -> Vec<&'a str> {
        let mut out = vec![named];
        for k in self.ca_keys(role) {
            if k.public != named {
                out.push(k.public.as_str());
            }
        }
        out
    }
    /// Who owns an allocated id.
    pub fn id_owner(&self, id: u32) -> Option<&(IdKind, String)> {
        self.ids.get(&id)
    }

    /// Rebuilds the KRL from the unexpired revocations (expired ones are dropped here:
    /// sshd refuses an expired certificate anyway, and the KRL stays small). The KRL's
    /// version is the model's.
    pub fn rebuild_krl(&mut self, now: u64) {
        self.revoked.retain(|_, r| r.valid_before > now);
        let entries: Vec<(u64, &str)> = self
            .revoked
            .values()
            .flat_map(|r| {
                self.krl_keys(crate::cakeys::CaRole::User, &r.ca_key)
                    .into_iter()
                    .map(move |k| (r.serial, k))
            })
            .collect();
        let entries = entries.into_iter();
        if let Some(krl) = encode_krl(
            entries,
            self.version,
            now,
            "smith-ca revoked user certificates",
        ) {
            self.krl_base64 = krl;
        }
    }

    /// Rebuilds the KRL of revoked SSH host certificates, like [`Model::rebuild_krl`].
    pub fn rebuild_host_krl(&mut self, now: u64) {
        self.host_revoked.retain(|_, r| r.valid_before > now);
        let entries: Vec<(u64, &str)> = self
            .host_revoked
            .values()
            .flat_map(|r| {
                self.krl_keys(crate::cakeys::CaRole::Host, &r.ca_key)
                    .into_iter()
                    .map(move |k| (r.serial, k))
            })
            .collect();
        let entries = entries.into_iter();
        if let Some(krl) = encode_krl(
            entries,
            self.version,
            now,
            "smith-ca revoked host certificates",
        ) {
            self.host_krl_base64 = krl;
        }
    }

    /// The id `name` was last allocated (a deleted user's or group's id stays theirs).
    pub fn previous_id(&self, kind: IdKind, name: &str) -> Option<PosixId> {
        self.id_by_name
            .get(&(kind, name.to_string()))
            .and_then(|p| PosixId::new(*p as u64).ok())
    }

    /// Records an id as allocated (used while loading and when applying changes).
    fn note_id(&mut self, id: u32, kind: IdKind, name: &str) {
        self.ids.insert(id, (kind, name.to_string()));
        self.id_by_name.insert((kind, name.to_string()), id);
        // smith-users sits at the end of the range on purpose: it does not move the
        // allocation cursor (allocation skips it when it gets there).
        if self.settings.id_range.contains(id)
            && id >= self.next_id
            && id != self.settings.users_gid.get()
        {
            self.next_id = id.saturating_add(1);
        }
    }

    /// The id for a new user or group: `requested` if free, else for a group the one
    /// its name had before, else the next free id of the range. A user's name never gets
    /// its previous uid back implicitly (a recycled login name is another person: their
    /// files on hosts must not be the predecessor's); asking for it explicitly is what
    /// [`Model::previous_id`] is for, and only an admin may (the authority's rule).
    pub fn allocate_id(
        &self,
        kind: IdKind,
        name: &str,
        requested: Option<PosixId>,
    ) -> Result<PosixId, IdError> {
        self.allocate_id_with(kind, name, requested, &[])
    }

    /// [`Model::allocate_id`], also treating `taken` (ids planned in the same change) as
    /// used.
    pub fn allocate_id_with(
        &self,
        kind: IdKind,
        name: &str,
        requested: Option<PosixId>,
        taken: &[u32],
    ) -> Result<PosixId, IdError> {
        if let Some(req) = requested {
            if taken.contains(&req.get()) {
                return Err(IdError::InUse {
                    id: req.get(),
                    kind: "planned",
                    name: "another name in the same request".into(),
                });
            }
        }
        let previous = self.previous_id(kind, name).map(PosixId::get);
        if let Some(req) = requested {
            if let Some((k, n)) = self.ids.get(&req.get()) {
                if previous != Some(req.get()) {
                    return Err(IdError::InUse {
                        id: req.get(),
                        kind: k.as_str(),
                        name: n.clone(),
                    });
                }
            }
            return Ok(req);
        }
        if kind == IdKind::Group {
            if let Some(prev) = previous.and_then(|p| PosixId::new(p as u64).ok()) {
                return Ok(prev);
            }
        }
        let range = self.settings.id_range;
        let mut id = self.next_id.max(range.start);
        while id <= range.end {
            if !self.ids.contains_key(&id) && !taken.contains(&id) {
                if let Ok(p) = PosixId::new(id as u64) {
                    return Ok(p);
                }
            }
            id += 1;
        }
        Err(IdError::Exhausted {
            start: range.start,
            end: range.end,
        })
    }

    /// Applies committed changes; bumps the version to `new_version` when any is a policy
    /// change.
    pub fn apply(&mut self, changes: &[Change], new_version: Option<u64>) {
        let mut affected = Affected::Users(BTreeSet::new());
        let mut revocations = false;
        let mut host_revocations = false;
        for c in changes {
            revocations |= matches!(c, Change::Revoke(_));
            host_revocations |= matches!(c, Change::RevokeHostCerts(_));
            if let Change::SetCaKeys { role, .. } = c {
                revocations |= *role == crate::cakeys::CaRole::User;
                host_revocations |= *role == crate::cakeys::CaRole::Host;
            }
            if c.is_policy() {
                if let (Affected::Users(acc), Affected::Users(more)) =
                    (&mut affected, c.affected(self))
                {
                    acc.extend(more);
                } else {
                    affected = Affected::All;
                }
            }
            self.apply_one(c);
        }
        if let Some(v) = new_version {
            self.version = v;
            self.log.push_back((v, affected));
            while self.log.len() > CHANGE_LOG_LEN {
                if let Some((old, _)) = self.log.pop_front() {
                    self.log_base = old;
                }
            }
        }
        let now = || {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or(0)
        };
        if revocations {
            self.rebuild_krl(now());
        }
        if host_revocations {
            self.rebuild_host_krl(now());
        }
    }

    fn apply_one(&mut self, c: &Change) {
        match c {
            Change::AddUser(u) => {
                self.note_id(u.uid.get(), IdKind::User, u.name.as_str());
                for g in &u.groups {
                    if let Some(group) = self.groups.get_mut(g) {
                        group.members.insert(u.name.clone());
                        self.membership_source
                            .insert((g.clone(), u.name.clone()), u.source);
                    }
                }
                self.users.insert(u.name.clone(), u.clone());
            }
            Change::DisableUser { name, by, .. } => {
                if let Some(u) = self.users.get_mut(name) {
                    u.disabled = Some(*by);
                }
            }
            Change::EnableUser { name } => {
                if let Some(u) = self.users.get_mut(name) {
                    u.disabled = None;
                }
            }
            Change::SetUserAttrs {
                name,
                gecos,
                external_id,
                oidc,
            } => {
                if let Some(u) = self.users.get_mut(name) {
                    u.gecos = gecos.clone();
                    u.external_id = external_id.clone();
                    u.oidc = oidc.clone();
                }
            }
            Change::DeleteUser { name, .. } => {
                if let Some(u) = self.users.remove(name) {
                    for g in &u.groups {
                        if let Some(group) = self.groups.get_mut(g) {
                            group.members.remove(name);
                        }
                        self.membership_source.remove(&(g.clone(), name.clone()));
                    }
                }
                self.tokens
                    .retain(|_, t| !(t.kind == TokenKind::User && t.subject == name.as_str()));
            }
            Change::AddGroup(g) => {
                self.note_id(g.gid.get(), IdKind::Group, g.name.as_str());
                self.groups.insert(g.name.clone(), g.clone());
            }
            Change::SetGroupExternalId { name, external_id } => {
                if let Some(g) = self.groups.get_mut(name) {
                    g.external_id = external_id.clone();
                }
            }
            Change::DeleteGroup { name, .. } => {
                if let Some(g) = self.groups.remove(name) {
                    for member in &g.members {
                        if let Some(u) = self.users.get_mut(member) {
                            u.groups.remove(name);
                        }
                        self.membership_source
                            .remove(&(name.clone(), member.clone()));
                    }
                }
                for set in self.idp_groups.values_mut() {
                    set.remove(name);
                }
                self.idp_groups.retain(|_, set| !set.is_empty());
            }
            Change::SetGroupSource { name, source } => {
                if let Some(g) = self.groups.get_mut(name) {
                    g.source = *source;
                }
            }
            Change::AddMember {
                group,
                user,
                source,
                ..
            } => {
                if let Some(g) = self.groups.get_mut(group) {
                    g.members.insert(user.clone());
                    // Adding an existing membership makes it the adder's.
                    self.membership_source
                        .insert((group.clone(), user.clone()), *source);
                }
                if let Some(u) = self.users.get_mut(user) {
                    u.groups.insert(group.clone());
                }
            }
            Change::RemoveMember { group, user } => {
                if let Some(g) = self.groups.get_mut(group) {
                    g.members.remove(user);
                }
                if let Some(u) = self.users.get_mut(user) {
                    u.groups.remove(group);
                }
                self.membership_source
                    .remove(&(group.clone(), user.clone()));
            }
            Change::MapGroup {
                idp_group, group, ..
            } => {
                self.idp_groups
                    .entry(idp_group.clone())
                    .or_default()
                    .insert(group.clone());
            }
            Change::UnmapGroup { idp_group, group } => {
                if let Some(set) = self.idp_groups.get_mut(idp_group) {
                    set.remove(group);
                    if set.is_empty() {
                        self.idp_groups.remove(idp_group);
                    }
                }
            }
            Change::AddGrant(g) => {
                self.next_grant_id = self.next_grant_id.max(g.id + 1);
                if let Some(gid) = g.cert.sudo.gid {
                    let name = smith_proto::sudorules::rule_group(g.id);
                    self.note_id(gid, IdKind::Group, &name);
                }
                self.grants.insert(g.id, g.clone());
            }
            Change::RemoveGrant { id, .. } => {
                self.grants.remove(id);
            }
            Change::AddToken { hash, token } => {
                self.tokens.insert(hash.clone(), token.clone());
            }
            Change::RevokeTokens { hashes, at } => {
                for h in hashes {
                    if let Some(t) = self.tokens.get_mut(h) {
                        t.revoked_at.get_or_insert(*at);
                    }
                }
            }
            Change::Enroll {
                token_hash,
                at,
                host,
                cert,
            } => {
                if let Some(t) = self.tokens.get_mut(token_hash) {
                    t.uses = t.uses.saturating_add(1);
                    if t.uses >= t.max_uses {
                        t.used_at = Some(*at);
                    }
                }
                self.next_host_id = self.next_host_id.max(host.id + 1);
                self.active_hosts.insert(host.name.clone(), host.id);
                self.host_certs.insert(
                    cert.serial.clone(),
                    CertRef {
                        host_id: host.id,
                        issued_at: cert.issued_at,
                        superseded_at: None,
                    },
                );
                self.hosts.insert(host.id, host.clone());
            }
            Change::HostCert { host_id, cert } => {
                if let Some(h) = self.hosts.get_mut(host_id) {
                    if let Some(prev) = self.host_certs.get_mut(&h.cert_serial) {
                        prev.superseded_at.get_or_insert(cert.issued_at);
                    }
                    h.cert_serial = cert.serial.clone();
                    h.cert_not_after = cert.not_after;
                }
                self.host_certs.insert(
                    cert.serial.clone(),
                    CertRef {
                        host_id: *host_id,
                        issued_at: cert.issued_at,
                        superseded_at: None,
                    },
                );
            }
            Change::SetHostTags { host_id, tags } => {
                if let Some(h) = self.hosts.get_mut(host_id) {
                    h.tags = tags.clone();
                }
            }
            Change::HostSshCerts(_) | Change::Alert(_) => {}
            Change::RevokeHostCerts(list) => {
                for r in list {
                    self.host_revoked.insert(r.serial, r.clone());
                }
            }
            Change::RemoveHost { host_id, .. } => {
                if let Some(h) = self.hosts.get_mut(host_id) {
                    h.removed = true;
                    self.active_hosts.remove(&h.name);
                }
            }
            Change::Revoke(list) => {
                for r in list {
                    self.revoked.insert(r.serial, r.clone());
                }
            }
            Change::SetEpoch { epoch } => {
                self.epoch = epoch.clone();
            }
            Change::SetCaKeys { role, keys } => {
                self.ca_keys.insert(*role, keys.clone());
            }
        }
    }

    /// The users changed since `since`, or `None` when the log does not reach back that
    /// far (or a change affected everything): the host needs a full snapshot.
    pub fn changed_since(&self, since: u64) -> Option<BTreeSet<UserName>> {
        if since < self.log_base || since > self.version {
            return None;
        }
        let mut out = BTreeSet::new();
        for (v, a) in self.log.iter().rev() {
            if *v <= since {
                break;
            }
            match a {
                Affected::All => return None,
                Affected::Users(u) => out.extend(u.iter().cloned()),
            }
        }
        Some(out)
    }

    /// Grants held by a user through their groups (disabled users hold none).
    pub fn grants_of<'a>(&'a self, user: &'a User) -> impl Iterator<Item = &'a Grant> + 'a {
        self.grants
            .values()
            .filter(move |g| !user.is_disabled() && user.groups.contains(&g.group))
    }

    /// The hashes of `user`'s live user tokens.
    pub fn live_user_tokens(&self, user: &UserName, now: u64) -> Vec<String> {
        let mut v: Vec<String> = self
            .tokens
            .iter()
            .filter(|(_, t)| {
                t.kind == TokenKind::User && t.subject == user.as_str() && t.is_live(now)
            })
            .map(|(h, _)| h.clone())
            .collect();
        v.sort();
        v
    }
}

/// The base64 KRL of `(serial, signing CA key line)` entries, one section per CA key:
/// `Some(None)` when there is nothing to revoke, `None` when it cannot be encoded (the
/// caller keeps the previous KRL rather than dropping revocations).
fn encode_krl<'a>(
    entries: impl Iterator<Item = (u64, &'a str)>,
    version: u64,
    now: u64,
    comment: &str,
) -> Option<Option<Arc<str>>> {
    let mut sections: BTreeMap<&str, crate::krl::CaRevocations> = BTreeMap::new();
    for (serial, ca_key) in entries {
        if !sections.contains_key(ca_key) {
            match ssh_key::PublicKey::from_openssh(ca_key) {
                Ok(k) => {
                    sections.insert(ca_key, crate::krl::CaRevocations::new(k));
                }
                Err(e) => {
                    tracing::error!(serial, error = %e, "revocation names an unreadable CA key; left out of the KRL");
                    continue;
                }
            }
        }
        if let Some(s) = sections.get_mut(ca_key) {
            s.serials.insert(serial);
        }
    }
    let krl = crate::krl::Krl {
        version,
        generated_at: now,
        comment: comment.into(),
        sections: sections.into_values().collect(),
    };
    if krl.is_empty() {
        return Some(None);
    }
    match krl.encode() {
        Ok(b) => {
            use base64::Engine;
            Some(Some(Arc::from(
                base64::engine::general_purpose::STANDARD.encode(b),
            )))
        }
        Err(e) => {
            tracing::error!(error = %e, "cannot encode a KRL; hosts and clients keep the previous one");
            None
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub fn settings() -> Settings {
        Settings {
            id_range: IdRange::new(200000, 200010).unwrap(),
            sudo_gid: PosixId::new(200000).unwrap(),
            users_gid: PosixId::new(299999).unwrap(),
        }
    }

    #[test]
    fn krl_holds_unexpired_revocations_only_and_follows_the_version() {
        use base64::Engine;
        let ca = crate::sshca::generate(crate::sshca::CaAlgorithm::Ed25519, "ca").unwrap();
        let ca_key = ca.public_key().to_openssh().unwrap();
        let rev = |serial: u64, valid_before: u64| Revocation {
            serial,
            key_id: format!("smith:alice:{serial}"),
            user: "alice".into(),
            valid_before,
            ca_key: ca_key.clone(),
            revoked_at: 1,
            reason: "test".into(),
            via: RevokeVia::Serial,
        };
        let mut m = model();
        assert!(m.krl_base64.is_none());
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs();
        m.apply(
            &[Change::Revoke(vec![rev(7, now + 3600), rev(8, now - 1)])],
            Some(5),
        );
        assert_eq!(m.version, 5);
        // The expired one is pruned; the KRL names serial 7 only, version 5.
        assert_eq!(m.revoked.keys().copied().collect::<Vec<_>>(), vec![7]);
        let krl = base64::engine::general_purpose::STANDARD
            .decode(m.krl_base64.as_deref().unwrap())
            .unwrap();
        assert_eq!(&krl[..8], crate::krl::MAGIC);
        assert_eq!(&krl[12..20], &5u64.to_be_bytes());
        assert!(krl.windows(8).any(|w| w == 7u64.to_be_bytes()));
        assert!(!krl.windows(8).any(|w| w == 8u64.to_be_bytes()));
        // Once everything has expired, no KRL at all (hosts write an empty file).
        m.rebuild_krl(now + 7200);
        assert!(m.krl_base64.is_none() && m.revoked.is_empty());
    }

    pub fn model() -> Model {
        let mut m = Model::empty(settings());
        m.note_id(200000, IdKind::Group, "smith-sudo");
        m
    }

    fn un(s: &str) -> UserName {
        UserName::new(s).unwrap()
    }

    pub fn user(m: &Model, name: &str) -> User {
        User {
            name: un(name),
            uid: m.allocate_id(IdKind::User, name, None).unwrap(),
            disabled: None,
            gecos: String::new(),
            shell: "/bin/bash".into(),
            created_at: 1,
            groups: BTreeSet::new(),
            external_id: None,
            oidc: None,
            source: Source::Admin,
        }
    }

    #[test]
    fn allocation_skips_used_ids_and_never_reuses() {
        let mut m = model();
        let a = user(&m, "alice");
        assert_eq!(a.uid.get(), 200001);
        m.apply(&[Change::AddUser(a)], Some(1));
        // An admin-set id ahead of the cursor is skipped later.
        let g = Group {
            name: GroupName::new("dev").unwrap(),
            gid: m
                .allocate_id(IdKind::Group, "dev", Some(PosixId::new(200002).unwrap()))
                .unwrap(),
            members: BTreeSet::new(),
            created_at: 1,
            external_id: None,
            source: Source::Admin,
        };
        m.apply(&[Change::AddGroup(g)], Some(2));
        assert_eq!(user(&m, "bob").uid.get(), 200003);
        // A user's name keeps its id on record, but a new user of that name gets a new
        // one unless it asks for the old one; a group's name gets its id back.
        assert_eq!(m.previous_id(IdKind::User, "alice").unwrap().get(), 200001);
        assert_eq!(
            m.allocate_id(IdKind::User, "alice", None).unwrap().get(),
            200003
        );
        assert_eq!(
            m.allocate_id(IdKind::User, "alice", Some(PosixId::new(200001).unwrap()))
                .unwrap()
                .get(),
            200001
        );
        assert_eq!(
            m.allocate_id(IdKind::Group, "dev", None).unwrap().get(),
            200002
        );
        assert!(matches!(
            m.allocate_id(IdKind::User, "carol", Some(PosixId::new(200001).unwrap())),
            Err(IdError::InUse { .. })
        ));
        // Exhaustion is an error, not a wrap-around.
        for i in 0..8 {
            let u = user(&m, &format!("u{i}"));
            m.apply(&[Change::AddUser(u)], Some(3 + i));
        }
        assert!(matches!(
            m.allocate_id(IdKind::User, "zed", None),
            Err(IdError::Exhausted { .. })
        ));
    }

    #[test]
    fn change_log_tracks_affected_users() {
        let mut m = model();
        let g = Group {
            name: GroupName::new("dev").unwrap(),
            gid: m.allocate_id(IdKind::Group, "dev", None).unwrap(),
            members: BTreeSet::new(),
            created_at: 1,
            external_id: None,
            source: Source::Admin,
        };
        m.apply(&[Change::AddGroup(g)], Some(1));
        let mut a = user(&m, "alice");
        a.groups.insert(GroupName::new("dev").unwrap());
        m.apply(&[Change::AddUser(a)], Some(2));
        let b = user(&m, "bob");
        m.apply(&[Change::AddUser(b)], Some(3));
        let grant = Grant {
            id: 1,
            group: GroupName::new("dev").unwrap(),
            selector: Tags::parse("env=dev").unwrap(),
            level: Level::Ssh,
            max_ttl_secs: 3600,
            source_cidrs: vec![],
            require_reason: false,
            time_windows: vec![],
            created_at: 1,
            cert: Default::default(),
        };
        m.apply(&[Change::AddGrant(grant)], Some(4));
        let names =
            |s: BTreeSet<UserName>| s.into_iter().map(|u| u.into_string()).collect::<Vec<_>>();
        assert_eq!(names(m.changed_since(3).unwrap()), vec!["alice"]);
        assert_eq!(names(m.changed_since(2).unwrap()), vec!["alice", "bob"]);
        assert!(m.changed_since(4).unwrap().is_empty());
        assert!(m.changed_since(5).is_none(), "unknown future version");
        m.log_base = 2;
        assert!(m.changed_since(1).is_none(), "log does not reach back");
    }
}
