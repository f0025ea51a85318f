//! The stable error codes of the CA's API, shared by the server (which chooses them) and
//! every client (which branches on them).
//!
//! On the wire an error is an [`crate::ErrorBody`] `{code, error}`; `code` is one of the
//! strings below. Clients parse it with [`ErrorCode::parse`] and compare enum values,
//! never strings. A code this build does not know (a newer CA) parses as
//! [`ErrorCode::Unrecognized`]; the raw text stays available for display.
//!
//! Must never: change the wire string of an existing code (older clients branch on it),
//! or reuse one for another meaning. Add new codes at the end of their group.

use std::fmt;

macro_rules! error_codes {
    ($( $(#[$doc:meta])* $variant:ident = $wire:literal, )*) => {
        /// A stable, machine-readable error code (see the module doc).
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        #[non_exhaustive]
        pub enum ErrorCode {
            $( $(#[$doc])* $variant, )*
            /// A code this build does not know (sent by a newer CA).
            Unrecognized,
        }

        impl ErrorCode {
            /// Every known code (not [`ErrorCode::Unrecognized`]).
            pub const ALL: &'static [ErrorCode] = &[ $( ErrorCode::$variant, )* ];

            /// The wire string.
            pub fn as_str(self) -> &'static str {
                match self {
                    $( ErrorCode::$variant => $wire, )*
                    ErrorCode::Unrecognized => "unrecognized",
                }
            }

            /// The code for a wire string; unknown strings are [`ErrorCode::Unrecognized`].
            pub fn parse(s: &str) -> ErrorCode {
                match s {
                    $( $wire => ErrorCode::$variant, )*
                    _ => ErrorCode::Unrecognized,
                }
            }
        }
    };
}

error_codes! {
    // Requests the CA cannot read.
    /// The body, query or path is malformed or out of bounds.
    InvalidInput = "invalid_input",
    /// The body is larger than the endpoint accepts.
    TooLarge = "too_large",
    /// The body is not `application/json`.
    UnsupportedMediaType = "unsupported_media_type",
    /// The body did not arrive in time.
    RequestTimeout = "request_timeout",
    /// No such endpoint.
    NotFound = "not_found",
    /// The endpoint does not take that method.
    MethodNotAllowed = "method_not_allowed",
    /// A user, group or host name is not valid.
    InvalidName = "invalid_name",
    InvalidGecos = "invalid_gecos",
    InvalidShell = "invalid_shell",
    InvalidTtl = "invalid_ttl",
    InvalidCidr = "invalid_cidr",
    InvalidTimeWindow = "invalid_time_window",
    InvalidReason = "invalid_reason",
    /// A grant's shared login, permit or force-command is not valid.
    InvalidGrantOption = "invalid_grant_option",
    InvalidPublicKey = "invalid_public_key",
    InvalidCsr = "invalid_csr",
    InvalidHostKey = "invalid_host_key",

    // Credentials.
    /// No bearer token.
    MissingToken = "missing_token",
    /// The bearer token is not known to this CA.
    InvalidToken = "invalid_token",
    TokenExpired = "token_expired",
    /// A single-use (enrollment) token was already used.
    TokenUsed = "token_used",
    /// The endpoint needs the admin token.
    AdminOnly = "admin_only",
    /// Only users get certificates (an admin, enrollment or SCIM token was sent).
    NotAUser = "not_a_user",
    /// An enrollment needs an enrollment token.
    WrongTokenKind = "wrong_token_kind",
    /// The token was revoked (by an admin, by a disable, or the bootstrap token once a
    /// named admin exists).
    TokenRevoked = "token_revoked",
    /// Too many requests from this principal; retry later.
    RateLimited = "rate_limited",

    // Host identity (mTLS).
    ClientCertRequired = "client_cert_required",
    ClientCertExpired = "client_cert_expired",
    ClientCertNotYetValid = "client_cert_not_yet_valid",
    /// The client certificate was not issued to a host of this CA.
    UnknownHost = "unknown_host",
    /// The client certificate names another host.
    WrongHost = "wrong_host",
    /// The host was removed by an admin.
    HostRemoved = "host_removed",
    /// A host of that name is already enrolled.
    HostExists = "host_exists",
    SshNameNotAllowed = "ssh_name_not_allowed",
    SshNameTaken = "ssh_name_taken",
    /// The enrollment token does not allow that host name.
    HostNameNotAllowed = "host_name_not_allowed",
    /// The client certificate was replaced by a renewal (after a short overlap).
    ClientCertSuperseded = "client_cert_superseded",
    /// A renewal from a replaced certificate while its successor is in use: two holders
    /// of one host identity.
    HostIdentityForked = "host_identity_forked",
    /// The host renewed a moment ago.
    RenewTooSoon = "renew_too_soon",

    // Directory.
    UserExists = "user_exists",
    GroupExists = "group_exists",
    UnknownUser = "unknown_user",
    UnknownGroup = "unknown_group",
    NotAMember = "not_a_member",
    /// A user and a group (a user's private group) would share a name.
    NameConflict = "name_conflict",
    /// The uid or gid is already allocated.
    IdConflict = "id_conflict",
    /// The id range has no id left.
    IdExhausted = "id_exhausted",
    UserDisabled = "user_disabled",
    /// SCIM may only change what SCIM created (users, groups, memberships).
    NotScimManaged = "not_scim_managed",
    /// An admin disabled this user: SCIM cannot enable them again.
    DisabledByAdmin = "disabled_by_admin",
    /// The uid or gid is outside the CA's id range (SCIM may only use the range).
    IdOutOfRange = "id_out_of_range",

    // Issuance.
    NoMatchingGrant = "no_matching_grant",
    /// Grants cover the scope but their conditions (source, reason, window) failed.
    ConditionFailed = "condition_failed",
    /// The grants a request matched cannot share one certificate (different forced
    /// commands, too many principals): ask with a narrower `--scope`.
    GrantsConflict = "grants_conflict",
    /// A certificate for a host (`smith cert --host`): the name matches no enrolled host
    /// (see `smith_api::reach` for how names match).
    NoSuchHost = "no_such_host",
    /// A certificate for a host: the name matches several enrolled hosts; use the full name.
    AmbiguousHost = "ambiguous_host",

    // OIDC sign-in.
    OidcNotConfigured = "oidc_not_configured",
    OidcUnavailable = "oidc_unavailable",
    OidcMalformed = "oidc_malformed",
    OidcBadAlgorithm = "oidc_bad_algorithm",
    OidcWrongIssuer = "oidc_wrong_issuer",
    OidcUnknownKey = "oidc_unknown_key",
    OidcBadSignature = "oidc_bad_signature",
    OidcWrongAudience = "oidc_wrong_audience",
    OidcExpired = "oidc_expired",
    OidcNotYetValid = "oidc_not_yet_valid",
    OidcNonceMismatch = "oidc_nonce_mismatch",
    OidcInvalidUsername = "oidc_invalid_username",
    OidcSubjectMismatch = "oidc_subject_mismatch",
    OidcSignInFailed = "oidc_sign_in_failed",
    /// The login name belongs to an account not bound to this IdP identity (no binding
    /// by the admin or by SCIM's externalId): a first sign-in never takes it over.
    OidcNotBound = "oidc_not_bound",
    /// The ID token was issued longer ago than the CA accepts (`iat`).
    OidcTokenTooOld = "oidc_token_too_old",
    /// The signed-in person is not in the IdP group of the CA's admins.
    OidcNotAdmin = "oidc_not_admin",
    /// The person signed in at the IdP (the ID token's `auth_time`, else its `iat`) longer
    /// ago than the CA accepts (`max_sign_in_age`), however fresh the token: a renewal
    /// with a refresh token does not extend a sign-in; sign in again.
    OidcSignInTooOld = "oidc_sign_in_too_old",

    // Audit uploads.
    AuditChainBroken = "audit_chain_broken",
    AuditReplay = "audit_replay",

    // The CA itself.
    /// Too many pending records; retry in a moment.
    Overloaded = "overloaded",
    ShuttingDown = "shutting_down",
    /// The CA cannot serve this now (its store is unavailable).
    Unavailable = "unavailable",
    /// The CA key that would sign this is unavailable (its HSM or token is down); retry
    /// later. Readiness fails meanwhile.
    SignerUnavailable = "signer_unavailable",
    /// This CA replica cannot read a change a newer release wrote to the shared database
    /// (a rolling upgrade in progress): another replica serves; upgrade this one.
    UpgradeRequired = "upgrade_required",
    /// An internal error; the CA's log has the details.
    Internal = "internal",
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl serde::Serialize for ErrorCode {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> serde::Deserialize<'de> for ErrorCode {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        Ok(ErrorCode::parse(&s))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;

    #[test]
    fn wire_strings_are_unique_snake_case_and_round_trip() {
        let mut seen = BTreeSet::new();
        for c in ErrorCode::ALL {
            let s = c.as_str();
            assert!(seen.insert(s), "{s} used twice");
            assert!(
                s.bytes().all(|b| b.is_ascii_lowercase() || b == b'_'),
                "{s}"
            );
            assert_eq!(ErrorCode::parse(s), *c);
            let json = serde_json::to_string(c).unwrap();
            assert_eq!(serde_json::from_str::<ErrorCode>(&json).unwrap(), *c);
        }
        assert_eq!(ErrorCode::parse("from_a_newer_ca"), ErrorCode::Unrecognized);
    }
    /// The wire strings are a contract with every deployed client: this list changes
    /// only by additions.
    #[test]
    fn wire_strings_are_stable() {
        let golden = [
            "invalid_input",
            "too_large",
            "unsupported_media_type",
            "request_timeout",
            "not_found",
            "method_not_allowed",
            "invalid_name",
            "invalid_gecos",
            "invalid_shell",
            "invalid_ttl",
            "invalid_cidr",
            "invalid_time_window",
            "invalid_reason",
            "invalid_grant_option",
            "invalid_public_key",
            "invalid_csr",
            "invalid_host_key",
            "missing_token",
            "invalid_token",
            "token_expired",
            "token_used",
            "admin_only",
            "not_a_user",
            "wrong_token_kind",
            "token_revoked",
            "rate_limited",
            "client_cert_required",
            "client_cert_expired",
            "client_cert_not_yet_valid",
            "unknown_host",
            "wrong_host",
            "host_removed",
            "host_exists",
            "ssh_name_not_allowed",
            "ssh_name_taken",
            "host_name_not_allowed",
            "client_cert_superseded",
            "host_identity_forked",
            "renew_too_soon",
            "user_exists",
            "group_exists",
            "unknown_user",
            "unknown_group",
            "not_a_member",
            "name_conflict",
            "id_conflict",
            "id_exhausted",
            "user_disabled",
            "not_scim_managed",
            "disabled_by_admin",
            "id_out_of_range",
            "no_matching_grant",
            "condition_failed",
            "grants_conflict",
            "no_such_host",
            "ambiguous_host",
            "oidc_not_configured",
            "oidc_unavailable",
            "oidc_malformed",
            "oidc_bad_algorithm",
            "oidc_wrong_issuer",
            "oidc_unknown_key",
            "oidc_bad_signature",
            "oidc_wrong_audience",
            "oidc_expired",
            "oidc_not_yet_valid",
            "oidc_nonce_mismatch",
            "oidc_invalid_username",
            "oidc_subject_mismatch",
            "oidc_sign_in_failed",
            "oidc_not_bound",
            "oidc_token_too_old",
            "oidc_not_admin",
            "oidc_sign_in_too_old",
            "audit_chain_broken",
            "audit_replay",
            "overloaded",
            "shutting_down",
            "unavailable",
            "signer_unavailable",
            "upgrade_required",
            "internal",
        ];
        let now: Vec<&str> = ErrorCode::ALL.iter().map(|c| c.as_str()).collect();
        assert_eq!(now, golden);
    }
}
