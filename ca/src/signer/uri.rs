//! PKCS#11 URIs (RFC 7512) naming a CA key in a token, and where its PIN comes from.
//!
//! `pkcs11:token=smith;object=smith-user-ca?module-path=/usr/lib/softhsm/libsofthsm2.so&pin-source=file:/etc/smith/hsm-pin`
//!
//! Path attributes (`;`-separated): `token` (the token's label) or `serial`, `object`
//! (the key's label, required), `id` (its `CKA_ID`, percent-encoded bytes, optional),
//! `type` (`private`, ignored). Query attributes (`&`-separated): `module-path` (the
//! PKCS#11 library), `pin-source` (`file:/abs/path`, `/abs/path`, or
//! `credential:NAME` for a systemd credential, `$CREDENTIALS_DIRECTORY/NAME`),
//! `max-sessions`. `module-path` and `pin-source` are also accepted among the path
//! attributes, as step-ca writes them.
//!
//! Must never: accept a PIN inside the URI (`pin-value`): the URI is written to
//! `ca.toml` and shown in logs; the PIN lives in a file or a credential only.

use std::fmt;
use std::path::{Path, PathBuf};

/// Where the token's user PIN is read from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PinSource {
    /// A file (its first line; trailing newline ignored).
    File(PathBuf),
    /// A systemd credential (`LoadCredential=NAME:...`), read from
    /// `$CREDENTIALS_DIRECTORY/NAME`.
    Credential(String),
}

/// A parsed `pkcs11:` URI.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pkcs11Uri {
    pub token: Option<String>,
    pub serial: Option<String>,
    pub object: String,
    pub id: Option<Vec<u8>>,
    pub module_path: PathBuf,
    pub pin_source: PinSource,
    /// Most sessions kept open for signing (default 8).
    pub max_sessions: usize,
    /// The URI as given.
    text: String,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UriError {
    #[error("'{0}' is not a PKCS#11 URI: it must start with pkcs11:")]
    NotPkcs11(String),
    #[error("the PKCS#11 URI has a malformed attribute '{0}' (expected name=value)")]
    Malformed(String),
    #[error("the PKCS#11 URI has a bad percent-encoding in '{0}'")]
    BadEncoding(String),
    #[error("the PKCS#11 URI names no {0}; add {0}=... (e.g. pkcs11:token=smith;object=smith-user-ca?module-path=/usr/lib/softhsm/libsofthsm2.so&pin-source=file:/etc/smith/hsm-pin)")]
    Missing(&'static str),
    #[error("the PKCS#11 URI carries a PIN (pin-value): put the PIN in a file (pin-source=file:/etc/smith/hsm-pin, mode 0400) or a systemd credential (pin-source=credential:NAME), never in the URI")]
    PinInUri,
    #[error("the PKCS#11 URI attribute '{0}' is not supported here")]
    Unsupported(String),
    #[error("pin-source '{0}' must be file:/ABSOLUTE/PATH, /ABSOLUTE/PATH or credential:NAME")]
    BadPinSource(String),
    #[error("module-path '{0}' must be an absolute path to the PKCS#11 library")]
    BadModulePath(String),
    #[error("max-sessions '{0}' must be a number from 1 to 256")]
    BadMaxSessions(String),
}

fn decode(s: &str) -> Result<Vec<u8>, UriError> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let hex = s
                .get(i + 1..i + 3)
                .ok_or_else(|| UriError::BadEncoding(s.to_string()))?;
            let v =
                u8::from_str_radix(hex, 16).map_err(|_| UriError::BadEncoding(s.to_string()))?;
            out.push(v);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    Ok(out)
}

fn decode_text(s: &str) -> Result<String, UriError> {
    String::from_utf8(decode(s)?).map_err(|_| UriError::BadEncoding(s.to_string()))
}

impl Pkcs11Uri {
    pub fn parse(text: &str) -> Result<Pkcs11Uri, UriError> {
        let text = text.trim();
        let rest = text
            .strip_prefix("pkcs11:")
            .ok_or_else(|| UriError::NotPkcs11(text.to_string()))?;
        let (path, query) = match rest.split_once('?') {
            Some((p, q)) => (p, q),
            None => (rest, ""),
        };
        let mut token = None;
        let mut serial = None;
        let mut object = None;
        let mut id = None;
        let mut module = None;
        let mut pin = None;
        let mut max_sessions = 8;
        let attrs = path
            .split(';')
            .chain(query.split('&'))
            .filter(|a| !a.is_empty());
        for a in attrs {
            let (k, v) = a
                .split_once('=')
                .ok_or_else(|| UriError::Malformed(a.to_string()))?;
            match k {
                "token" => token = Some(decode_text(v)?),
                "serial" => serial = Some(decode_text(v)?),
                "object" => object = Some(decode_text(v)?),
                "id" => id = Some(decode(v)?),
                "type" => {}
                "module-path" => module = Some(decode_text(v)?),
                "pin-source" => pin = Some(decode_text(v)?),
                "pin-value" => return Err(UriError::PinInUri),
                "max-sessions" => {
                    max_sessions = v
                        .parse::<usize>()
                        .ok()
                        .filter(|n| (1..=256).contains(n))
                        .ok_or_else(|| UriError::BadMaxSessions(v.to_string()))?
                }
                other => return Err(UriError::Unsupported(other.to_string())),
            }
        }
        if token.is_none() && serial.is_none() {
            return Err(UriError::Missing("token"));
        }
        let object = object.ok_or(UriError::Missing("object"))?;
        let module = module.ok_or(UriError::Missing("module-path"))?;
        if !Path::new(&module).is_absolute() {
            return Err(UriError::BadModulePath(module));
        }
        let pin = pin.ok_or(UriError::Missing("pin-source"))?;
        let pin_source = if let Some(name) = pin.strip_prefix("credential:") {
            if name.is_empty() || name.contains('/') {
                return Err(UriError::BadPinSource(pin));
            }
            PinSource::Credential(name.to_string())
        } else {
            let p = pin.strip_prefix("file:").unwrap_or(&pin);
            // file:///abs and file:/abs both name /abs.
            let p = p.strip_prefix("//").unwrap_or(p);
            if !Path::new(p).is_absolute() {
                return Err(UriError::BadPinSource(pin));
            }
            PinSource::File(PathBuf::from(p))
        };
        Ok(Pkcs11Uri {
            token,
            serial,
            object,
            id,
            module_path: PathBuf::from(module),
            pin_source,
            max_sessions,
            text: text.to_string(),
        })
    }

    /// Whether `s` looks like a PKCS#11 URI (as opposed to a file).
    pub fn is_uri(s: &str) -> bool {
        s.trim_start().starts_with("pkcs11:")
    }

    /// The URI as written (it holds no secret).
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// The token as people name it.
    pub fn token_name(&self) -> String {
        match (&self.token, &self.serial) {
            (Some(t), _) => format!("token '{t}'"),
            (None, Some(s)) => format!("token with serial {s}"),
            (None, None) => "the token".into(),
        }
    }
}

impl fmt::Display for Pkcs11Uri {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_documented_shape() {
        let u = Pkcs11Uri::parse(
            "pkcs11:token=smith;object=smith-user-ca?module-path=/usr/lib/softhsm/libsofthsm2.so&pin-source=file:/etc/smith/hsm-pin",
        )
        .unwrap();
        assert_eq!(u.token.as_deref(), Some("smith"));
        assert_eq!(u.object, "smith-user-ca");
        assert_eq!(
            u.module_path,
            PathBuf::from("/usr/lib/softhsm/libsofthsm2.so")
        );
        assert_eq!(u.pin_source, PinSource::File("/etc/smith/hsm-pin".into()));
        assert_eq!(u.max_sessions, 8);
        // step-ca's shape: module-path among the path attributes; percent-encoding.
        let u = Pkcs11Uri::parse(
            "pkcs11:module-path=/m.so;token=my%20token;object=ca;id=%01%02?pin-source=credential:hsm-pin&max-sessions=4",
        )
        .unwrap();
        assert_eq!(u.token.as_deref(), Some("my token"));
        assert_eq!(u.id, Some(vec![1, 2]));
        assert_eq!(u.pin_source, PinSource::Credential("hsm-pin".into()));
        assert_eq!(u.max_sessions, 4);
    }

    #[test]
    fn refuses_pins_in_the_uri_and_missing_parts() {
        let base = "pkcs11:token=t;object=o?module-path=/m.so&pin-source=/p";
        assert!(Pkcs11Uri::parse(base).is_ok());
        for (bad, want) in [
            ("file:/x", UriError::NotPkcs11("file:/x".into())),
            (
                "pkcs11:token=t;object=o?module-path=/m.so&pin-value=1234",
                UriError::PinInUri,
            ),
            (
                "pkcs11:object=o?module-path=/m.so&pin-source=/p",
                UriError::Missing("token"),
            ),
            (
                "pkcs11:token=t?module-path=/m.so&pin-source=/p",
                UriError::Missing("object"),
            ),
            (
                "pkcs11:token=t;object=o?pin-source=/p",
                UriError::Missing("module-path"),
            ),
            (
                "pkcs11:token=t;object=o?module-path=/m.so",
                UriError::Missing("pin-source"),
            ),
            (
                "pkcs11:token=t;object=o?module-path=m.so&pin-source=/p",
                UriError::BadModulePath("m.so".into()),
            ),
            (
                "pkcs11:token=t;object=o?module-path=/m.so&pin-source=pin.txt",
                UriError::BadPinSource("pin.txt".into()),
            ),
            (
                "pkcs11:token=t;object=o%zz?module-path=/m.so&pin-source=/p",
                UriError::BadEncoding("o%zz".into()),
            ),
        ] {
            assert_eq!(Pkcs11Uri::parse(bad), Err(want), "{bad}");
        }
    }
}
