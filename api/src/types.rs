//! Request and response bodies of the CA's HTTPS API (`/v1/...`), shared by the CA
//! (server side), `smith-ca admin`, `smith` and `smith-host` (client side).
//!
//! Endpoints (all JSON; errors are [`ErrorBody`] with a fitting HTTP status; the paths are
//! constants in [`crate::endpoints`], and [`crate::client::ApiClient`] has one typed
//! method per endpoint):
//!
//! | method & path | auth | body → response |
//! |---|---|---|
//! | `GET /v1/health` | none | → [`Health`] |
//! | `GET /v1/ca/user-keys` | none | → [`CaKeys`] (OpenSSH lines of the user CA keys) |
//! | `GET /v1/ca/host-keys` | none | → [`CaKeys`] (host CA, for `@cert-authority`) |
//! | `GET /v1/ca/user-krl` | none | → the binary OpenSSH KRL of revoked user certificates (empty when none) |
//! | `GET /v1/ca/tls-root` | none | → [`TlsRoot`] |
//! | `GET /v1/auth/config` | none | → [`AuthConfig`] (the OpenID Provider `smith login` uses; 404 `oidc_not_configured` without one) |
//! | `POST /v1/certs/user` | user token / OIDC ID token | [`CertRequest`] → [`CertResponse`] |
//! | `POST /v1/certs/host` | user token / OIDC ID token | [`HostCertRequest`] → [`HostCertResponse`] (a certificate for exactly the grants that fit one host; 404 `no_such_host`, 409 `ambiguous_host`, 403 `no_matching_grant`) |
//! | `POST /v1/user/hosts` | user token / OIDC ID token | [`HostsRequest`] → [`HostsResponse`] (the hosts the caller's grants cover) |
//! | `GET /v1/admin/users` | admin | → `Vec<`[`UserInfo`]`>` |
//! | `POST /v1/admin/users` | admin | [`UserAdd`] → [`UserInfo`] |
//! | `POST /v1/admin/users/{name}/disable` | admin | → [`UserInfo`] (also revokes the user's still-valid certificates) |
//! | `POST /v1/admin/users/{name}/token` | admin | [`TokenRequest`] → [`TokenResponse`] |
//! | `GET /v1/admin/groups` | admin | → `Vec<`[`GroupInfo`]`>` |
//! | `POST /v1/admin/groups` | admin | [`GroupAdd`] → [`GroupInfo`] |
//! | `POST /v1/admin/groups/{name}/members` | admin | [`MemberChange`] → [`GroupInfo`] |
//! | `DELETE /v1/admin/groups/{name}/members/{user}` | admin | → [`GroupInfo`] |
//! | `GET /v1/admin/grants` | admin | → `Vec<`[`GrantInfo`]`>` |
//! | `POST /v1/admin/grants` | admin | [`GrantAdd`] → [`GrantInfo`] |
//! | `DELETE /v1/admin/grants/{id}` | admin | → [`GrantInfo`] |
//! | `POST /v1/admin/hosts/tokens` | admin | [`HostTokenRequest`] or [`HostTokenRequestNamed`] → [`TokenResponse`] |
//! | `GET /v1/admin/hosts` | admin | → `Vec<`[`HostInfo`]`>` |
//! | `DELETE /v1/admin/hosts/{name}` | admin | → [`HostInfo`] |
//! | `POST /v1/admin/scim/token` | admin | [`TokenRequest`] → [`TokenResponse`] (a SCIM bearer token) |
//! | `GET /v1/admin/decisions?limit=N&user=U` | admin | → `Vec<`[`Decision`]`>` (oldest first, the last `limit`, default 100) |
//! | `GET /v1/admin/certs?user=U&valid=true&limit=N` | admin | → `Vec<`[`IssuedCert`]`>` (newest first; `valid`: not expired and not revoked) |
//! | `POST /v1/admin/certs/revoke` | admin | [`RevokeRequest`] → [`RevokeResponse`] (exactly one of serial, key_id, user) |
//! | `POST /v1/hosts/enroll` | enrollment token in body | [`EnrollRequest`] or [`EnrollRequestNamed`] → [`EnrollResponse`] |
//! | `POST /v1/host/renew` | mTLS | [`RenewRequest`] → [`EnrollResponse`] (new client certificate; SSH host certificates for `ssh_host_keys`) |
//! | `GET /v1/host/sync?since=V&wait=S&host=H` | mTLS | → `SyncResponse` (200) or 204 when nothing changed within `wait` seconds |
//! | `POST /v1/host/audit` | mTLS | [`crate::chain::AuditBatch`] → [`crate::chain::AuditAck`]; 409 `audit_chain_broken` (gap, reordering, altered record: the message names the seq) or `audit_replay` (every record already stored) |
//! | `GET /v1/host/audit/head` | mTLS | → [`crate::chain::AuditAck`] (the CA's head of this host's chain) |
//! | `GET /v1/admin/audit?host=H&user=U&since=UNIX&limit=N` | admin | → audit records in chain order per host (host `@ca`: issuance decisions); see ca/README.md |
//! | `GET /v1/admin/audit/verify` | admin | → every chain recomputed from the database, first broken record |
//! | `GET /v1/admin/audit/rejections?limit=N` | admin | → rejected uploads |
//! | `GET /v1/admin/audit/out-of-band?window_secs=S&threshold=N` | admin | → sshd logins that did not go through Smith |
//! | `/scim/v2/...` | SCIM token | SCIM 2.0 (RFC 7643/7644) `Users`, `Groups`, `ServiceProviderConfig`, `ResourceTypes`, `Schemas`; SCIM error bodies (see ca/README.md) |
//!
//! The mTLS endpoints refuse a removed host with 403 `host_removed`, and an expired or
//! not-yet-valid client certificate (let through the TLS handshake so that the CA can say
//! so) with 401 `client_cert_expired` / `client_cert_not_yet_valid`. Enrollment refuses
//! an SSH name the token does not allow with 403 `ssh_name_not_allowed` and one another
//! enrolled host has with 409 `ssh_name_taken` (the token is not used up).

use serde::{Deserialize, Serialize};
use smith_proto::grants::Permits;
use smith_proto::sudorules::SudoRules;
use smith_proto::{GroupName, HostName, HostPattern, Level, PosixId, Tags, UserName};

/// Every non-2xx response carries this body.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ErrorBody {
    /// Stable machine-readable code, e.g. `not_found`, `invalid_name`, `no_matching_grant`.
    pub code: String,
    /// A sentence for a person, saying what to do next where possible.
    pub error: String,
}

/// `GET /v1/auth/config`: what `smith login` needs to sign in with the CA's OpenID
/// Provider, so that engineers configure only the CA URL.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct AuthConfig {
    /// The OpenID Provider's issuer URL (exactly the `iss` of its ID tokens).
    pub issuer: String,
    /// The public (native) client `smith login` uses.
    pub client_id: String,
    /// Scopes to ask for, e.g. `["openid", "profile", "groups"]`.
    pub scopes: Vec<String>,
    /// The claims the CA maps to the login name and the groups (for display).
    #[serde(default)]
    pub username_claim: Option<String>,
    #[serde(default)]
    pub groups_claim: Option<String>,
    /// How long a sign-in at the provider lasts for this CA (`[oidc] max_sign_in_age`):
    /// ID tokens whose `auth_time` is older are refused, however they were renewed.
    /// `smith login` asks the provider for `max_age` of this many seconds (so it signs
    /// the person in again when its own session is older) and keeps a refresh token no
    /// longer. Absent from older CAs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_sign_in_age_secs: Option<u64>,
}

/// `GET /v1/health` (public). The version and counters only for the admin token: an
/// anonymous caller learns that the CA is up, not what it runs.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Health {
    pub status: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    /// Credentials refused before authentication since the CA started (forged or
    /// replayed tokens: counted, never recorded as decisions).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rejected_credentials: Option<u64>,
    /// CA keys that cannot sign now (`role: why`), e.g. an HSM that is down: the status
    /// is then `signer_unavailable` and the answer a 503, so that load balancers drain
    /// this CA.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub unavailable_signers: Vec<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct CaKeys {
    /// OpenSSH public key lines.
    pub keys: Vec<String>,
    /// Host CA keys only: the host name patterns the CA certifies hosts for (what
    /// enrollment tokens allow and enrolled hosts' names), for `@cert-authority` lines.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub patterns: Vec<String>,
}

/// `GET /v1/ca/host-krl` (public): the OpenSSH KRL of revoked SSH host certificates, for
/// ssh clients' `RevokedHostKeys`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct HostKrl {
    /// Base64 of the binary KRL; `None` when nothing is revoked (write an empty file).
    pub krl_base64: Option<std::sync::Arc<str>>,
    /// Unix seconds the list was built.
    pub generated_at: u64,
}

/// `GET /v1/ca/tls-root` (public): the CA's TLS root certificate.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct TlsRoot {
    pub root_pem: String,
}

// --- users, groups, grants -----------------------------------------------------------------

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct UserAdd {
    pub name: UserName,
    #[serde(default)]
    pub groups: Vec<GroupName>,
    /// Set by the admin (or the IdP); else allocated from the CA's range.
    #[serde(default)]
    pub uid: Option<PosixId>,
    #[serde(default)]
    pub gecos: Option<String>,
    #[serde(default)]
    pub shell: Option<String>,
    /// Create (in the same transaction) any of `groups` that does not exist yet, instead
    /// of refusing with 404.
    #[serde(default)]
    pub create_groups: bool,
    /// A recycled login name gets a new uid; `true`: give it the uid the name had (the
    /// same person is back).
    #[serde(default)]
    pub reuse_uid: bool,
    /// Bind the user to this IdP `sub` (with the CA's configured issuer).
    #[serde(default)]
    pub oidc_subject: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct UserInfo {
    pub name: UserName,
    pub uid: PosixId,
    pub groups: Vec<GroupName>,
    pub disabled: bool,
    pub gecos: String,
    pub shell: String,
    pub created_at: u64,
    /// Who disabled the user (`admin` or `scim`).
    #[serde(default)]
    pub disabled_by: Option<String>,
    /// Who created the user (`admin`, `scim`, `signin`).
    #[serde(default)]
    pub source: Option<String>,
    /// The IdP identity the user is bound to.
    #[serde(default)]
    pub oidc_issuer: Option<String>,
    #[serde(default)]
    pub oidc_subject: Option<String>,
    /// SCIM's `externalId`.
    #[serde(default)]
    pub external_id: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq, Default)]
pub struct TokenRequest {
    /// Token lifetime in seconds; the CA's default when absent.
    #[serde(default)]
    pub ttl_secs: Option<u64>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct TokenResponse {
    pub token: String,
    /// Unix seconds.
    pub expires_at: u64,
    /// The token's public id (`smith-ca admin token list`, `token revoke ID`).
    #[serde(default)]
    pub id: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct GroupAdd {
    pub name: GroupName,
    #[serde(default)]
    pub gid: Option<PosixId>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct GroupInfo {
    pub name: GroupName,
    pub gid: PosixId,
    pub members: Vec<UserName>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct MemberChange {
    pub user: UserName,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct GrantAdd {
    pub group: GroupName,
    /// Hosts covered: every pair must be among a host's tags.
    pub selector: Tags,
    pub level: Level,
    /// Longest certificate this grant allows, in seconds.
    pub max_ttl_secs: u64,
    /// If non-empty, a request must come from one of these networks and the certificate
    /// carries them as `source-address`.
    #[serde(default)]
    pub source_cidrs: Vec<String>,
    #[serde(default)]
    pub require_reason: bool,
    /// Time windows, e.g. `mon-fri 09:00-18:00 Europe/Paris`; empty = always.
    #[serde(default)]
    pub time_windows: Vec<String>,
    /// Shared local accounts certificates under this grant may log in as (`deploy`).
    #[serde(default)]
    pub logins: Vec<UserName>,
    /// The `permit-*` extensions of certificates under this grant (default: pty and
    /// port forwarding; no agent or X11 forwarding, no user rc).
    #[serde(default)]
    pub permits: Permits,
    /// A command sshd runs instead of whatever is asked (`force-command`).
    #[serde(default)]
    pub force_command: Option<String>,
    /// A sudo grant limited to these commands (`/usr/bin/systemctl restart nginx`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub sudo_commands: Vec<String>,
    /// ...run as these users (default root).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub sudo_as: Vec<UserName>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct GrantInfo {
    pub id: u64,
    pub group: GroupName,
    pub selector: Tags,
    pub level: Level,
    pub max_ttl_secs: u64,
    pub source_cidrs: Vec<String>,
    pub require_reason: bool,
    pub time_windows: Vec<String>,
    pub created_at: u64,
    #[serde(default)]
    pub logins: Vec<UserName>,
    #[serde(default)]
    pub permits: Permits,
    #[serde(default)]
    pub force_command: Option<String>,
    /// A sudo grant's command rules (empty: every command, as anyone).
    #[serde(default, skip_serializing_if = "SudoRules::is_unrestricted")]
    pub sudo: SudoRules,
}

// --- certificates ----------------------------------------------------------------------------

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct CertRequest {
    /// The public key to sign, one OpenSSH line (`ssh-ed25519 AAAA... comment`).
    pub public_key: String,
    /// Hosts the engineer wants to reach (`k=v,...`); empty = wherever a grant allows.
    #[serde(default)]
    pub scope: Tags,
    /// Requested validity in seconds; clipped to the matching grants' maximum.
    pub ttl_secs: u64,
    #[serde(default)]
    pub reason: Option<String>,
    /// With an OIDC ID token as the bearer: the `nonce` the client sent in its
    /// authorization request. It must equal the token's `nonce` claim; a token with a
    /// nonce and a request without one (or the reverse) is refused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub oidc_nonce: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct CertResponse {
    /// The certificate, one OpenSSH line (`ssh-ed25519-cert-v01@openssh.com AAAA...`).
    pub certificate: String,
    pub serial: u64,
    pub key_id: String,
    pub principals: Vec<String>,
    pub scope: Tags,
    /// Unix seconds.
    pub valid_after: u64,
    pub valid_before: u64,
    /// Set when the requested TTL was clipped.
    #[serde(default)]
    pub clipped_to_secs: Option<u64>,
}

// --- host-aware certificates (see [`crate::reach`]) ---------------------------------------

/// `POST /v1/certs/host`: "what may I have for this host as this login". The CA maps
/// `host` onto an enrolled host ([`crate::reach::resolve`]) and signs `public_key` under
/// exactly the caller's grants that fit it ([`ReachableHost::grants_for`]), with their
/// conditions (reason, source, time windows) checked as for [`CertRequest`].
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct HostCertRequest {
    /// The public key to sign, one OpenSSH line.
    pub public_key: String,
    /// The host's name as typed (an enrolled name, an SSH name, a unique short name).
    pub host: String,
    /// The login to be used there (ssh's `%r`); the caller's own when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub login: Option<UserName>,
    /// Requested validity in seconds; clipped to the fitting grants' maximum.
    pub ttl_secs: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// As in [`CertRequest`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub oidc_nonce: Option<String>,
}

/// The answer to [`HostCertRequest`]: the certificate (its `scope` is the union of the
/// fitting grants' selectors), the host it is for, how the name matched it, and the
/// login it was asked for.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct HostCertResponse {
    #[serde(flatten)]
    pub cert: CertResponse,
    pub host: ReachableHost,
    pub matched: crate::reach::Matched,
    pub login: UserName,
}

/// `POST /v1/user/hosts`: the hosts the caller may reach.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct HostsRequest {
    /// As in [`CertRequest`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub oidc_nonce: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct HostsResponse {
    /// Who the list is for (the caller's login name).
    pub user: UserName,
    /// Every enrolled host (not removed) one of the caller's grants covers, by name.
    pub hosts: Vec<ReachableHost>,
    /// The user CA keys (OpenSSH lines), so that a client recognises this CA's
    /// certificates in its agent without asking again.
    pub user_ca_keys: Vec<String>,
    /// Unix seconds.
    pub generated_at: u64,
}

/// An enrolled host the caller's grants cover.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ReachableHost {
    pub name: HostName,
    /// Its other SSH names (host certificate principals).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ssh_names: Vec<HostName>,
    pub tags: Tags,
    /// The highest level of the grants below.
    pub level: Level,
    /// The logins these grants allow there: the caller's own first, then shared ones.
    pub logins: Vec<UserName>,
    /// The scope of the certificate for the caller's own login there.
    pub scope: Tags,
    /// The caller's grants that cover the host, by id.
    pub grants: Vec<HostGrant>,
}

/// One grant through which a host is reached, with its conditions.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct HostGrant {
    pub id: u64,
    /// The group that holds it.
    pub group: GroupName,
    pub selector: Tags,
    pub level: Level,
    /// Shared logins it allows (besides the caller's own).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub logins: Vec<UserName>,
    #[serde(default)]
    pub require_reason: bool,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub source_cidrs: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub time_windows: Vec<String>,
    pub max_ttl_secs: u64,
}

/// One recorded issuance decision.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Decision {
    pub id: u64,
    pub at: u64,
    pub user: String,
    pub allowed: bool,
    pub reason: String,
    pub scope: String,
    pub requested_ttl_secs: u64,
    pub serial: Option<u64>,
    pub key_id: Option<String>,
    pub source: String,
}

// --- hosts -----------------------------------------------------------------------------------

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct HostTokenRequest {
    pub tags: Tags,
    pub ttl_secs: u64,
}

/// [`HostTokenRequest`] with the host names a host enrolled with this token may take:
/// `names` (exact names and `*.domain` patterns; at least one: a token that names no host
/// is refused), `ssh_names` (exact names, the same as `names` entries, kept for older
/// clients), and `uses` (how many hosts may enroll with it, default 1). A host's own name
/// and every SSH name it asks for must be covered; nothing else is ever certified.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct HostTokenRequestNamed {
    #[serde(flatten)]
    pub request: HostTokenRequest,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ssh_names: Vec<HostName>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub names: Vec<HostPattern>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uses: Option<u32>,
}

/// Body of `POST /v1/admin/hosts/{name}/tags`: the host's new tags (replacing the old).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct HostTagsRequest {
    pub tags: Tags,
}

/// One SSH host certificate the host CA signed.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct HostCertInfo {
    pub serial: u64,
    pub host: HostName,
    pub key_id: String,
    pub principals: Vec<String>,
    /// `SHA256:...` of the certified host key.
    pub key_fingerprint: String,
    pub valid_after: u64,
    pub valid_before: u64,
    pub issued_at: u64,
    #[serde(default)]
    pub revoked: Option<RevocationInfo>,
}

/// Body of `POST /v1/admin/hosts/certs/revoke`: exactly one of `serial` and `host`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct HostCertRevokeRequest {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub serial: Option<u64>,
    /// Every still-valid host certificate of this host.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<HostName>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct HostCertRevokeResponse {
    pub revoked: Vec<HostCertInfo>,
    pub already_revoked: Vec<u64>,
    pub expired: Vec<u64>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct HostInfo {
    pub name: HostName,
    pub tags: Tags,
    pub enrolled_at: u64,
    pub last_seen: Option<u64>,
    pub synced_version: Option<u64>,
    pub removed: bool,
    /// Principals of the host's SSH host certificates (its name first).
    #[serde(default)]
    pub ssh_names: Vec<HostName>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct EnrollRequest {
    /// The single-use enrollment token from `smith-ca admin host token`.
    pub token: String,
    pub host_name: HostName,
    /// PEM PKCS#10 request for the host's mTLS client key; the CA sets the subject.
    pub csr_pem: String,
    /// The host's SSH host public keys (OpenSSH lines) to be certified by the host CA.
    #[serde(default)]
    pub ssh_host_keys: Vec<String>,
}

/// [`EnrollRequest`] with extra principals for the SSH host certificates (the host name
/// is always one): the same JSON object with one more key, `ssh_names`. Each must be
/// allowed by the enrollment token (`smith-ca admin host token --ssh-name NAME`), else
/// the enrollment is refused (403 `ssh_name_not_allowed`) and the token is not used up.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct EnrollRequestNamed {
    #[serde(flatten)]
    pub request: EnrollRequest,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ssh_names: Vec<HostName>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct EnrollResponse {
    pub host_name: HostName,
    pub tags: Tags,
    /// PEM client certificate for mTLS.
    pub client_cert_pem: String,
    /// PEM of the CA's TLS root (what the host pins from now on).
    pub root_pem: String,
    /// Unix seconds.
    pub client_cert_not_after: u64,
    pub user_ca_keys: Vec<String>,
    /// OpenSSH host certificates for `ssh_host_keys`, same order.
    #[serde(default)]
    pub ssh_host_certs: Vec<String>,
}

/// Body of `POST /v1/host/renew`: a fresh key's CSR; the CA keeps the host's name.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct RenewRequest {
    pub csr_pem: String,
    /// SSH host public keys to certify again (same principals as at enrollment); the
    /// response's `ssh_host_certs` are in the same order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ssh_host_keys: Vec<String>,
}

// --- certificates issued, revocation -----------------------------------------------------

/// `POST /v1/admin/certs/revoke`: exactly one selector.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq, Default)]
pub struct RevokeRequest {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub serial: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_id: Option<String>,
    /// Every still-valid certificate of this user.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<UserName>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// A revocation as recorded.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct RevocationInfo {
    /// Unix seconds.
    pub revoked_at: u64,
    pub reason: String,
    /// How it was asked for: `serial`, `key_id`, `user`, `user_disabled`, `user_deleted`,
    /// `scim_deactivated`, `scim_deleted`.
    pub via: String,
}

/// One certificate the CA issued.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct IssuedCert {
    pub serial: u64,
    pub key_id: String,
    pub user: String,
    pub principals: Vec<String>,
    /// The requested scope (`k=v,...`; empty = wherever a grant allows).
    pub scope: String,
    pub valid_after: u64,
    pub valid_before: u64,
    pub issued_at: u64,
    #[serde(default)]
    pub revoked: Option<RevocationInfo>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct RevokeResponse {
    /// Certificates revoked by this request.
    pub revoked: Vec<IssuedCert>,
    /// Matching certificates that were revoked before (nothing changed for them).
    pub already_revoked: Vec<u64>,
    /// Matching certificates that had expired already (nothing to revoke).
    pub expired: Vec<u64>,
    /// The CA's policy version after the change (hosts get the new KRL with it).
    pub version: u64,
}

// --- queries (the GET parameters the client sends) ----------------------------------------

/// `GET /v1/host/sync?since=V&wait=S&host=H&epoch=E`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq, Default)]
pub struct SyncQuery {
    /// The host's version; 0 asks for a full snapshot.
    #[serde(default)]
    pub since: u64,
    /// Long poll: answer 204 if nothing changed within this many seconds.
    #[serde(default)]
    pub wait: u64,
    /// The host's own name (checked against its client certificate).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<HostName>,
    /// The CA epoch of `since` (a CA of another epoch answers a full snapshot).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub epoch: Option<String>,
    /// Heartbeat: while the long poll waits, the CA answers `200` at once with the
    /// `smith-beat` header and sends a space every `beat` seconds, then the snapshot
    /// (JSON) or `null` when nothing changed. A client tells a hung replica from a long
    /// poll by the silence. CAs before it ignore the parameter (204 as before).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub beat: Option<u64>,
}

/// `GET /v1/admin/decisions?limit=N&user=U`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq, Default)]
pub struct DecisionQuery {
    /// The last `limit` decisions (the CA's default: 100).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<UserName>,
}

/// `GET /v1/admin/certs?limit=N&user=U&valid=true`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq, Default)]
pub struct CertQuery {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<UserName>,
    /// Only certificates not expired and not revoked.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub valid: bool,
}

/// `GET /v1/admin/hosts/certs?host=H&valid=true&limit=N`: SSH host certificates.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq, Default)]
pub struct HostCertQuery {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<HostName>,
    /// Only certificates not expired and not revoked.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub valid: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit: Option<u32>,
}

/// `GET /v1/admin/audit?limit=N&user=U&host=H&since=UNIX`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq, Default)]
pub struct AuditQuery {
    /// The most recently stored `limit` records (the CA's default: 1000).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    /// A host's chain, or `@ca` for the CA's issuance decisions.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
    /// Events at or after this time (Unix seconds).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub since: Option<u64>,
}

/// `GET /v1/admin/audit/rejections?limit=N`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq, Default)]
pub struct RejectionQuery {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit: Option<u32>,
}

/// `GET /v1/admin/audit/out-of-band?window_secs=S&threshold=N`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq, Default)]
pub struct OutOfBandQuery {
    /// Failed attempts within this window count towards a hot spot.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub window_secs: Option<u64>,
    /// Failures (one host and source, or one host and user) that make a hot spot.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub threshold: Option<u64>,
}

// --- the audit trail (admin) -----------------------------------------------------------------

/// One stored audit record, as `GET /v1/admin/audit` lists it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct AuditEntry {
    pub host: String,
    pub seq: u64,
    pub kind: String,
    pub user: String,
    /// Event time (the host's clock; the CA's for `@ca`).
    pub at_unix: u64,
    /// When the CA stored it.
    pub received_at: u64,
    pub hash: String,
    /// The event as recorded (parsed from the exact JSON text that was hashed).
    pub event: serde_json::Value,
}

/// One chain's verification result.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct AuditChainReport {
    pub host: String,
    pub records: u64,
    pub head_seq: u64,
    pub head_hash: String,
}

/// The first broken record found in a chain.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct AuditBreak {
    pub host: String,
    pub seq: u64,
    pub reason: String,
}

/// `GET /v1/admin/audit/verify`: every chain recomputed from the CA's database.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct AuditVerifyReport {
    pub ok: bool,
    pub records: u64,
    pub chains: Vec<AuditChainReport>,
    /// The first broken record (hosts in name order, records in seq order).
    pub first_break: Option<AuditBreak>,
    /// Every chain with a break (its first break).
    pub breaks: Vec<AuditBreak>,
}

/// One rejected audit upload (`GET /v1/admin/audit/rejections`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct AuditRejection {
    pub id: u64,
    pub host: String,
    pub seq: u64,
    /// `audit_chain_broken` or `audit_replay` (see [`crate::ErrorCode`]).
    pub code: String,
    pub reason: String,
    pub at: u64,
    pub first_seq: u64,
    pub last_seq: u64,
    pub records: u64,
}

/// One login sshd recorded that did not go through Smith
/// (`GET /v1/admin/audit/out-of-band`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct OutOfBandFinding {
    pub kind: String,
    pub host: String,
    /// The record (for `failed_attempts`, the last one of the hot spot).
    pub seq: u64,
    pub at_unix: u64,
    pub user: String,
    pub rhost: String,
    pub method: String,
    pub key_id: String,
    pub serial: Option<u64>,
    pub fingerprint: String,
    /// A sentence for a person.
    pub detail: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn named_requests_are_the_same_object_with_one_more_key() {
        let plain = HostTokenRequest {
            tags: Tags::parse("env=prod").unwrap(),
            ttl_secs: 60,
        };
        let named = HostTokenRequestNamed {
            request: plain.clone(),
            ssh_names: vec![HostName::new("web.example.com").unwrap()],
            names: vec![],
            uses: None,
        };
        let v = serde_json::to_value(&named).unwrap();
        assert_eq!(v["tags"], "env=prod");
        assert_eq!(v["ssh_names"][0], "web.example.com");
        // An old client's body is a valid named request without names, and the reverse.
        let back: HostTokenRequestNamed =
            serde_json::from_value(serde_json::to_value(&plain).unwrap()).unwrap();
        assert!(back.ssh_names.is_empty() && back.request == plain);
        let old: HostTokenRequest = serde_json::from_value(v).unwrap();
        assert_eq!(old, plain);
        let bad =
            serde_json::json!({"tags": "env=prod", "ttl_secs": 60, "ssh_names": ["no/slash"]});
        assert!(serde_json::from_value::<HostTokenRequestNamed>(bad).is_err());
        // A renewal without host keys is what older hosts send.
        let r: RenewRequest = serde_json::from_str(r#"{"csr_pem":"x"}"#).unwrap();
        assert!(r.ssh_host_keys.is_empty());
    }
}
