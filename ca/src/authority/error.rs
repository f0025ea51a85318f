//! Why the authority refuses a command: one enum, each variant with its stable
//! [`ErrorCode`] ([`Error::code`]) and a sentence for a person (its `Display`). Adapters
//! map the code to their transport (HTTP statuses in `server/error.rs`, SCIM error types
//! in `scim/`), never the text.

use crate::model::IdError;
use crate::store::{StoreError, WriteError};
use smith_api::ErrorCode;
use smith_proto::{GroupName, HostName, PosixId, UserName};

fn human(secs: u64) -> humantime::FormattedDuration {
    humantime::format_duration(std::time::Duration::from_secs(secs))
}

fn rfc3339(t: u64) -> String {
    humantime::format_rfc3339_seconds(std::time::UNIX_EPOCH + std::time::Duration::from_secs(t))
        .to_string()
}

/// A refused command.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    // Input the authority cannot accept.
    #[error("{0}")]
    InvalidInput(String),
    #[error("gecos must be at most 256 bytes without ':' or control characters")]
    InvalidGecos,
    #[error("shell '{}' must be an absolute path of [A-Za-z0-9/_.+-], at most 256 bytes", .0.escape_debug())]
    InvalidShell(String),
    #[error("{what} must be between {} and {}", human(*.min), human(*.max))]
    InvalidTtl {
        what: &'static str,
        min: u64,
        max: u64,
    },
    #[error("'{}' is not a network in CIDR notation (e.g. 10.0.0.0/8 or 2001:db8::/32)", .0.escape_debug())]
    InvalidCidr(String),
    #[error("at most {0} source CIDRs per grant")]
    TooManyCidrs(usize),
    #[error("{0}")]
    InvalidTimeWindow(crate::timewin::WindowError),
    #[error("at most {0} time windows per grant")]
    TooManyTimeWindows(usize),
    #[error("{0}")]
    InvalidReason(String),
    #[error("{0}")]
    InvalidGrantOption(String),

    // The directory.
    #[error("user '{0}' does not exist; add it with `smith-ca admin user add {0}`")]
    NoSuchUser(UserName),
    #[error("group '{0}' does not exist")]
    NoSuchGroup(GroupName),
    #[error("group '{0}' does not exist; create it with `smith-ca admin group add {0}`")]
    UnknownGroup(GroupName),
    #[error("user '{0}' already exists")]
    UserExists(UserName),
    #[error("group '{name}' already exists with gid {gid}")]
    GroupExists { name: GroupName, gid: PosixId },
    /// A user's private group would collide with a group of that name.
    #[error("'{0}' is a group's name; a user's private group would collide with it")]
    NameIsAGroup(UserName),
    /// A group would collide with a user's private group.
    #[error(
        "'{0}' is a user's name (and so their private group on hosts); pick another group name"
    )]
    NameIsAUser(GroupName),
    #[error("user '{user}' is not a member of group '{group}'")]
    NotAMember { group: GroupName, user: UserName },
    #[error("member '{0}' is not a user here; create the user first")]
    MemberNotAUser(UserName),
    #[error("user '{0}' is disabled")]
    UserDisabled(UserName),
    #[error("{0}")]
    Id(IdError),
    #[error("{attr} cannot change ({current} to {asked}): {what} are fixed at creation")]
    IdImmutable {
        attr: &'static str,
        current: PosixId,
        asked: PosixId,
        what: &'static str,
    },
    #[error("grant {0} does not exist")]
    NoSuchGrant(u64),
    #[error(
        "user '{0}' is bound to another identity of the OpenID Provider (a different 'sub'); \
         ask the admin to check the account"
    )]
    OidcSubjectMismatch(UserName),
    #[error(
        "user '{0}' exists but is not bound to your identity at the OpenID Provider, and a \
         first sign-in never takes over an existing account; ask the admin to bind it \
         (`smith-ca admin user bind {0} --oidc-subject SUB`) or to provision it through SCIM \
         with your IdP id as its externalId"
    )]
    OidcNotBound(UserName),
    #[error("the OIDC subject '{subject}' is already bound to user '{owner}'")]
    BindingTaken { subject: String, owner: UserName },
    #[error(
        "{what} was created by {owner}, not by SCIM: SCIM provisioning may read it but only \
         changes what SCIM created; an admin manages it with `smith-ca admin`"
    )]
    NotScimManaged {
        what: String,
        owner: crate::model::Source,
    },
    #[error(
        "user '{0}' was disabled by an admin: SCIM cannot enable them again; an admin does \
         with `smith-ca admin user enable {0}`"
    )]
    DisabledByAdmin(UserName),
    #[error("id {id} is outside the CA's id range {start}-{end}; SCIM may only use ids of the range (or let the CA pick one)")]
    IdOutOfRange { id: PosixId, start: u32, end: u32 },
    #[error(
        "id {id} belonged to an earlier user named '{name}': a recycled login name gets a new \
         uid (the old one owns the earlier user's files on hosts); only an admin may give it \
         back (`smith-ca admin user add {name} --reuse-uid`)"
    )]
    RecycledId { id: PosixId, name: UserName },
    #[error("group '{group}' has no mapping from IdP group '{idp_group}'")]
    NoSuchMapping { group: GroupName, idp_group: String },
    #[error("no token has the id {0}; see `smith-ca admin token list`")]
    NoSuchToken(String),
    #[error(
        "'{0}' signed in, but is not in the IdP group of this CA's admins (`[oidc] \
         admin_groups` in ca.toml)"
    )]
    NotAnAdmin(UserName),
    #[error("too many certificate requests for '{user}'; retry in {retry_after} s")]
    RateLimited { user: String, retry_after: u64 },

    // Hosts.
    #[error("this is not an enrollment token; get one with `smith-ca admin host token`")]
    NotAnEnrollmentToken,
    #[error("enrollment token already used; get a new one with `smith-ca admin host token`")]
    EnrollmentTokenUsed,
    #[error("enrollment token expired; get a new one with `smith-ca admin host token`")]
    EnrollmentTokenExpired,
    #[error("{0}")]
    Credential(crate::auth::AuthError),
    #[error(
        "a host named '{0}' is already enrolled; remove it first with `smith-ca admin host \
         remove {0}` or pick another name"
    )]
    HostExists(HostName),
    #[error(
        "this enrollment token does not allow the SSH host name '{name}' (it allows: {allowed}); \
         the token was not used: enroll without that name or get a token with `smith-ca admin \
         host token --tags ... --ssh-name {name}`"
    )]
    SshNameNotAllowed { name: HostName, allowed: String },
    #[error(
        "the SSH host name '{name}' belongs to enrolled host '{owner}'; remove that host first \
         (`smith-ca admin host remove {owner}`) or pick another name"
    )]
    SshNameTaken { name: HostName, owner: HostName },
    #[error("at most {0} SSH names per host")]
    TooManySshNames(usize),
    #[error(
        "this enrollment token does not allow the host name '{name}' (it allows: {allowed}){}; \
         the token was not used: enroll with a name it allows (smith-host activate --name) or \
         get a token with `smith-ca admin host token --name {name} ...`",
        if *.ip { "; an IP address is allowed only when a token names it exactly" } else { "" }
    )]
    HostNameNotAllowed {
        name: HostName,
        allowed: String,
        ip: bool,
    },
    #[error(
        "this client certificate of host '{host}' was replaced by a renewal at {}: the host \
         uses its new certificate (if this is the host itself, it lost it: re-enroll with \
         `smith-host activate --token`; if not, someone holds a copy of its key)", rfc3339(*.since)
    )]
    ClientCertSuperseded { host: HostName, since: u64 },
    #[error(
        "refused: host '{0}' renewed with a certificate that a newer one, already in use, \
         replaced: two holders of one host identity; the CA recorded an alert. If this is \
         the real host, re-enroll it (`smith-ca admin host remove`, a new token, \
         `smith-host activate --token`) and rotate its key"
    )]
    HostIdentityForked(HostName),
    #[error("host '{host}' renewed too often in the last minutes; retry in {retry_after} s")]
    RenewTooSoon { host: HostName, retry_after: u64 },
    #[error("at most 8 SSH host keys")]
    TooManyHostKeys,
    #[error("SSH host key: {0}")]
    InvalidHostKey(String),
    #[error("{0}")]
    InvalidCsr(String),
    #[error("no enrolled host is named '{0}'")]
    NoSuchHost(HostName),
    #[error("this endpoint needs the host's mTLS client certificate (from enrollment)")]
    ClientCertRequired,
    #[error(
        "host '{0}' was removed from the CA by an admin: it gets no more policy updates; to \
         bring it back, enroll it again with a new token (`smith-ca admin host token`, then \
         `smith-host activate --token ...`)"
    )]
    HostRemoved(HostName),
    #[error(
        "client certificate expired at {}: it was not renewed in time; re-enroll with \
         smith-host activate --token <token from `smith-ca admin host token`>", rfc3339(*.not_after)
    )]
    ClientCertExpired { not_after: u64 },
    #[error(
        "client certificate is not valid before {}: check this host's clock (the CA's time is {})",
        rfc3339(*.not_before), rfc3339(*.now)
    )]
    ClientCertNotYetValid { not_before: u64, now: u64 },
    #[error("this client certificate was not issued to a host of this CA; enroll again")]
    UnknownHost,
    #[error("the client certificate's name does not match its enrollment")]
    WrongCertName,
    #[error("this client certificate belongs to host '{cert}', not '{}'", .asked.escape_debug())]
    WrongHost { cert: HostName, asked: String },

    // Certificates.
    #[error("this CA issued no certificate with {0}; see `smith-ca admin cert list`")]
    NoSuchCertificate(String),

    // The CA itself.
    #[error("{0}")]
    Write(WriteError),
    /// The CA key that must sign does not sign now (its token is down).
    #[error("the {which} key cannot sign right now ({detail}); retry in a moment")]
    SignerUnavailable { which: &'static str, detail: String },
    #[error("internal error while {0}; the CA's log has the details")]
    Internal(&'static str),
    /// Other replicas kept committing first (a mutation plans again a few times first).
    #[error("other CA replicas are changing the CA at the same time; retry in a moment")]
    Stale,
    /// The shared database holds a change this replica cannot read (a newer release
    /// wrote it): it serves nothing that depends on the policy until upgraded.
    #[error("this CA replica must be upgraded: {0}")]
    UpgradeRequired(String),
}

impl Error {
    /// The stable code of this refusal.
    pub fn code(&self) -> ErrorCode {
        use ErrorCode as C;
        match self {
            Error::InvalidInput(_)
            | Error::TooManyHostKeys
            | Error::TooManySshNames(_)
            | Error::MemberNotAUser(_) => C::InvalidInput,
            Error::InvalidGecos => C::InvalidGecos,
            Error::InvalidShell(_) => C::InvalidShell,
            Error::InvalidTtl { .. } => C::InvalidTtl,
            Error::InvalidCidr(_) | Error::TooManyCidrs(_) => C::InvalidCidr,
            Error::InvalidTimeWindow(_) | Error::TooManyTimeWindows(_) => C::InvalidTimeWindow,
            Error::InvalidReason(_) => C::InvalidReason,
            Error::InvalidGrantOption(_) => C::InvalidGrantOption,
            Error::NoSuchUser(_)
            | Error::NoSuchGroup(_)
            | Error::NoSuchGrant(_)
            | Error::NoSuchHost(_)
            | Error::NoSuchMapping { .. }
            | Error::NoSuchToken(_)
            | Error::NoSuchCertificate(_) => C::NotFound,
            Error::UnknownGroup(_) => C::UnknownGroup,
            Error::UserExists(_) => C::UserExists,
            Error::GroupExists { .. } => C::GroupExists,
            Error::NameIsAGroup(_) | Error::NameIsAUser(_) => C::NameConflict,
            Error::NotAMember { .. } => C::NotAMember,
            Error::UserDisabled(_) => C::UserDisabled,
            Error::OidcSubjectMismatch(_) => C::OidcSubjectMismatch,
            Error::BindingTaken { .. } => C::IdConflict,
            Error::OidcNotBound(_) => C::OidcNotBound,
            Error::NotScimManaged { .. } => C::NotScimManaged,
            Error::DisabledByAdmin(_) => C::DisabledByAdmin,
            Error::IdOutOfRange { .. } => C::IdOutOfRange,
            Error::RecycledId { .. } => C::IdConflict,
            Error::NotAnAdmin(_) => C::OidcNotAdmin,
            Error::RateLimited { .. } => C::RateLimited,
            Error::Id(IdError::InUse { .. }) | Error::IdImmutable { .. } => C::IdConflict,
            Error::Id(IdError::Exhausted { .. }) => C::IdExhausted,
            Error::NotAnEnrollmentToken => C::WrongTokenKind,
            Error::EnrollmentTokenUsed => C::TokenUsed,
            Error::EnrollmentTokenExpired => C::TokenExpired,
            Error::Credential(e) => e.code(),
            Error::HostExists(_) => C::HostExists,
            Error::SshNameNotAllowed { .. } => C::SshNameNotAllowed,
            Error::HostNameNotAllowed { .. } => C::HostNameNotAllowed,
            Error::ClientCertSuperseded { .. } => C::ClientCertSuperseded,
            Error::HostIdentityForked(_) => C::HostIdentityForked,
            Error::RenewTooSoon { .. } => C::RenewTooSoon,
            Error::SshNameTaken { .. } => C::SshNameTaken,
            Error::InvalidHostKey(_) => C::InvalidHostKey,
            Error::InvalidCsr(_) => C::InvalidCsr,
            Error::ClientCertRequired => C::ClientCertRequired,
            Error::HostRemoved(_) => C::HostRemoved,
            Error::ClientCertExpired { .. } => C::ClientCertExpired,
            Error::ClientCertNotYetValid { .. } => C::ClientCertNotYetValid,
            Error::UnknownHost => C::UnknownHost,
            Error::WrongCertName | Error::WrongHost { .. } => C::WrongHost,
            Error::Write(WriteError::Overloaded) => C::Overloaded,
            Error::Write(WriteError::ShuttingDown) => C::ShuttingDown,
            Error::Write(WriteError::Unavailable) | Error::Stale => C::Unavailable,
            Error::Write(WriteError::Failed(_)) | Error::Internal(_) => C::Internal,
            Error::SignerUnavailable { .. } => C::SignerUnavailable,
            Error::UpgradeRequired(_) => C::UpgradeRequired,
        }
    }

    /// An internal failure: logged here with its cause, answered without details.
    pub fn internal(context: &'static str, e: impl std::fmt::Display) -> Error {
        tracing::error!(error = %e, "{context}");
        Error::Internal(context)
    }
}

impl From<StoreError> for Error {
    fn from(e: StoreError) -> Error {
        match e {
            StoreError::Write(
                w @ (WriteError::Overloaded | WriteError::ShuttingDown | WriteError::Unavailable),
            ) => Error::Write(w),
            StoreError::Stale => Error::Stale,
            StoreError::NewerRelease(why) => Error::UpgradeRequired(why),
            StoreError::Unavailable(why) => {
                tracing::warn!(error = %why, "the CA database is unreachable");
                Error::Write(WriteError::Unavailable)
            }
            e => Error::internal("writing to the CA database", e),
        }
    }
}

impl From<WriteError> for Error {
    fn from(e: WriteError) -> Error {
        match e {
            WriteError::Failed(m) => Error::internal("recording durably", m),
            w => Error::Write(w),
        }
    }
}

impl From<IdError> for Error {
    fn from(e: IdError) -> Error {
        Error::Id(e)
    }
}
