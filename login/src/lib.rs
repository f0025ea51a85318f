//! `smith-login`: signing in with the company's OpenID Provider from a terminal, for
//! `smith login` (engineers) and `smith-ca admin login` (named admins): one flow, so an
//! admin signs in exactly as an engineer does.
//!
//! - [`oidc`]: discovery, the authorization code flow with PKCE (S256) and a loopback
//!   redirect (RFC 8252), and the device flow (RFC 8628), ending with an ID token and,
//!   where the provider issues one, a refresh token; the renewal with it (bounded);
//! - [`keyring`]: where a sign-in (or an admin's session token) is kept, never a file:
//!   a [`keyring::SecretStore`], on Linux the kernel keyring;
//! - [`session`]: a kept sign-in in use: the ID token while fresh, else renewed with the
//!   refresh token without the browser (once for concurrent runs), the sign-in ended
//!   when the provider refuses.
//!
//! Must never: print or log a token, write one to disk, or listen anywhere but loopback.

#![forbid(unsafe_code)]

pub mod keyring;
pub mod oidc;
pub mod session;
