//! A minimal ssh-agent client (draft-miller-ssh-agent): just enough to add an Ed25519
//! key with its certificate and a lifetime constraint, to list identities, and to remove
//! the certificates a new one replaces (same CA, same scope: the agent holds several
//! Smith certificates, dev and prod, never two for one scope).
//!
//! Must never: write key material anywhere but the agent socket, or wait forever on a
//! stuck agent (socket timeouts).

use ssh_key::private::Ed25519Keypair;
use ssh_key::Certificate;
use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

const SSH_AGENT_FAILURE: u8 = 5;
const SSH_AGENT_SUCCESS: u8 = 6;
const SSH2_AGENTC_REQUEST_IDENTITIES: u8 = 11;
const SSH2_AGENT_IDENTITIES_ANSWER: u8 = 12;
const SSH2_AGENTC_REMOVE_IDENTITY: u8 = 18;
const SSH2_AGENTC_ADD_ID_CONSTRAINED: u8 = 25;
const SSH_AGENT_CONSTRAIN_LIFETIME: u8 = 1;
const MAX_REPLY: usize = 256 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error("cannot connect to the ssh-agent at {path}: {source}")]
    Connect {
        path: String,
        source: std::io::Error,
    },
    #[error("talking to the ssh-agent failed: {0}")]
    Io(#[from] std::io::Error),
    #[error("the ssh-agent refused the key (does it support certificates and lifetimes?)")]
    Refused,
    #[error("the ssh-agent sent an unexpected answer (message type {0})")]
    Protocol(u8),
    #[error("cannot encode the certificate: {0}")]
    Encode(String),
}

fn put_u32(b: &mut Vec<u8>, v: u32) {
    b.extend_from_slice(&v.to_be_bytes());
}

fn put_string(b: &mut Vec<u8>, s: &[u8]) {
    put_u32(b, s.len() as u32);
    b.extend_from_slice(s);
}

pub struct Agent {
    stream: UnixStream,
}

impl Agent {
    pub fn connect(path: &Path) -> Result<Agent, AgentError> {
        let stream = UnixStream::connect(path).map_err(|e| AgentError::Connect {
            path: path.display().to_string(),
            source: e,
        })?;
        stream.set_read_timeout(Some(Duration::from_secs(10)))?;
        stream.set_write_timeout(Some(Duration::from_secs(10)))?;
        Ok(Agent { stream })
    }

    fn call(&mut self, msg: &[u8]) -> Result<Vec<u8>, AgentError> {
        let mut frame = Vec::with_capacity(msg.len() + 4);
        put_string(&mut frame, msg);
        self.stream.write_all(&frame)?;
        let mut len = [0u8; 4];
        self.stream.read_exact(&mut len)?;
        let len = u32::from_be_bytes(len) as usize;
        if len == 0 || len > MAX_REPLY {
            return Err(AgentError::Protocol(0));
        }
        let mut reply = vec![0u8; len];
        self.stream.read_exact(&mut reply)?;
        Ok(reply)
    }

    /// Adds `key` with `cert`, to be forgotten by the agent after `lifetime_secs`.
    pub fn add_certificate(
        &mut self,
        key: &Ed25519Keypair,
        cert: &Certificate,
        comment: &str,
        lifetime_secs: u32,
    ) -> Result<(), AgentError> {
        let blob = cert
            .to_bytes()
            .map_err(|e| AgentError::Encode(e.to_string()))?;
        let mut msg = vec![SSH2_AGENTC_ADD_ID_CONSTRAINED];
        put_string(&mut msg, cert.algorithm().to_certificate_type().as_bytes());
        put_string(&mut msg, &blob);
        put_string(&mut msg, key.public.0.as_slice());
        let secret = zeroize::Zeroizing::new(key.to_bytes());
        put_string(&mut msg, secret.as_slice());
        put_string(&mut msg, comment.as_bytes());
        msg.push(SSH_AGENT_CONSTRAIN_LIFETIME);
        put_u32(&mut msg, lifetime_secs);
        let reply = self.call(&msg);
        // Scrub our copy of the message, which holds the private key.
        zeroize::Zeroize::zeroize(&mut msg);
        match reply?.first() {
            Some(&SSH_AGENT_SUCCESS) => Ok(()),
            Some(&SSH_AGENT_FAILURE) => Err(AgentError::Refused),
            Some(&t) => Err(AgentError::Protocol(t)),
            None => Err(AgentError::Protocol(0)),
        }
    }

    /// Removes the identity whose public blob (for a certificate: the certificate) is
    /// `blob`.
    pub fn remove(&mut self, blob: &[u8]) -> Result<(), AgentError> {
        let mut msg = vec![SSH2_AGENTC_REMOVE_IDENTITY];
        put_string(&mut msg, blob);
        match self.call(&msg)?.first() {
            Some(&SSH_AGENT_SUCCESS) => Ok(()),
            Some(&SSH_AGENT_FAILURE) => Err(AgentError::Refused),
            Some(&t) => Err(AgentError::Protocol(t)),
            None => Err(AgentError::Protocol(0)),
        }
    }

    /// Removes every other user certificate of `new`'s CA key with `new`'s scope: `new`
    /// replaces them. (One the agent already forgot is no error.)
    pub fn remove_replaced(&mut self, new: &Certificate) -> Result<(), AgentError> {
        let ids = self.identities()?;
        let keys = [new.signature_key().clone()];
        let blob = new
            .to_bytes()
            .map_err(|e| AgentError::Encode(e.to_string()))?;
        for (b, c) in user_certs(&ids, &keys) {
            if b != blob && scope_of(&c) == scope_of(new) {
                match self.remove(&b) {
                    Ok(()) | Err(AgentError::Refused) => {}
                    Err(e) => return Err(e),
                }
            }
        }
        Ok(())
    }

    /// Number of identities the agent holds.
    #[allow(dead_code)]
    pub fn count(&mut self) -> Result<u32, AgentError> {
        Ok(self.identities()?.len() as u32)
    }

    /// The identities the agent holds: (public key or certificate blob, comment).
    pub fn identities(&mut self) -> Result<Vec<(Vec<u8>, String)>, AgentError> {
        let reply = self.call(&[SSH2_AGENTC_REQUEST_IDENTITIES])?;
        if reply.first() != Some(&SSH2_AGENT_IDENTITIES_ANSWER) {
            return Err(AgentError::Protocol(reply.first().copied().unwrap_or(0)));
        }
        let mut r = &reply[1..];
        let bad = || AgentError::Protocol(SSH2_AGENT_IDENTITIES_ANSWER);
        let take_u32 = |r: &mut &[u8]| -> Option<u32> {
            let (n, rest) = r.split_first_chunk::<4>()?;
            *r = rest;
            Some(u32::from_be_bytes(*n))
        };
        let take_string = |r: &mut &[u8]| -> Option<Vec<u8>> {
            let n = take_u32(r)? as usize;
            if r.len() < n {
                return None;
            }
            let (v, rest) = r.split_at(n);
            *r = rest;
            Some(v.to_vec())
        };
        let n = take_u32(&mut r).ok_or_else(bad)?;
        let mut out = Vec::new();
        for _ in 0..n {
            let blob = take_string(&mut r).ok_or_else(bad)?;
            let comment = take_string(&mut r).ok_or_else(bad)?;
            out.push((blob, String::from_utf8_lossy(&comment).into_owned()));
        }
        Ok(out)
    }
}

/// The user certificates among `identities` signed by one of `ca_keys`, with their blobs.
pub fn user_certs(
    identities: &[(Vec<u8>, String)],
    ca_keys: &[ssh_key::public::KeyData],
) -> Vec<(Vec<u8>, Certificate)> {
    identities
        .iter()
        .filter_map(|(blob, _)| Some((blob.clone(), Certificate::from_bytes(blob).ok()?)))
        .filter(|(_, c)| c.cert_type().is_user() && ca_keys.contains(c.signature_key()))
        .collect()
}

/// A Smith certificate's scope (`scope@smith`; none = the empty scope); `None` when the
/// extension does not parse.
pub fn scope_of(c: &Certificate) -> Option<smith_proto::Tags> {
    match c.extensions().get(smith_proto::sshcert::SCOPE_EXTENSION) {
        Some(s) => smith_proto::Tags::parse(s).ok(),
        None => Some(smith_proto::Tags::default()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::rngs::OsRng;
    use ssh_key::certificate::{Builder, CertType};
    use ssh_key::{Algorithm, PrivateKey};
    use std::os::unix::net::UnixListener;

    /// A fake agent records the request: the certificate type, blob, key and the lifetime
    /// constraint must be exactly what the protocol says.
    #[test]
    fn add_sends_certificate_key_and_lifetime_constraint() {
        let dir = tempfile::tempdir().unwrap();
        let sock = dir.path().join("a.sock");
        let listener = UnixListener::bind(&sock).unwrap();
        let server = std::thread::spawn(move || {
            let (mut s, _) = listener.accept().unwrap();
            let mut len = [0u8; 4];
            s.read_exact(&mut len).unwrap();
            let mut msg = vec![0u8; u32::from_be_bytes(len) as usize];
            s.read_exact(&mut msg).unwrap();
            s.write_all(&[0, 0, 0, 1, SSH_AGENT_SUCCESS]).unwrap();
            msg
        });
        let ca = PrivateKey::random(&mut OsRng, Algorithm::Ed25519).unwrap();
        let key = PrivateKey::random(&mut OsRng, Algorithm::Ed25519).unwrap();
        let mut b = Builder::new_with_random_nonce(
            &mut OsRng,
            key.public_key().key_data().clone(),
            0,
            u64::MAX / 2,
        )
        .unwrap();
        b.cert_type(CertType::User)
            .unwrap()
            .valid_principal("alice")
            .unwrap();
        let cert = b.sign(&ca).unwrap();
        let kp = key.key_data().ed25519().unwrap();
        Agent::connect(&sock)
            .unwrap()
            .add_certificate(kp, &cert, "smith:alice:1", 3600)
            .unwrap();
        let msg = server.join().unwrap();
        assert_eq!(msg[0], SSH2_AGENTC_ADD_ID_CONSTRAINED);
        let mut r = &msg[1..];
        let take = |r: &mut &[u8]| {
            let n = u32::from_be_bytes([r[0], r[1], r[2], r[3]]) as usize;
            let v = r[4..4 + n].to_vec();
            *r = &r[4 + n..];
            v
        };
        assert_eq!(take(&mut r), b"ssh-ed25519-cert-v01@openssh.com");
        assert_eq!(take(&mut r), cert.to_bytes().unwrap());
        assert_eq!(take(&mut r), kp.public.0.to_vec());
        assert_eq!(take(&mut r), kp.to_bytes().to_vec());
        assert_eq!(take(&mut r), b"smith:alice:1");
        assert_eq!(r, &[SSH_AGENT_CONSTRAIN_LIFETIME, 0, 0, 0x0e, 0x10]);
    }
}
