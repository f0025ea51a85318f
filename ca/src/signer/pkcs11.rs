//! CA keys inside a PKCS#11 token (an HSM, SoftHSM, a cloud HSM's client library).
//!
//! A [`TokenKey`] is one private key object on one token, named by a [`Pkcs11Uri`]. It
//! signs through a pool of sessions (a `cryptoki` session is `Send`, not `Sync`: each
//! signature takes one out of the pool and puts it back). ECDSA P-256 always (the token
//! signs the SHA-256 digest with raw `CKM_ECDSA`, its `r||s` answer is re-encoded as the
//! two mpints OpenSSH wants); Ed25519 where the token offers `CKM_EDDSA`.
//!
//! Failures: a signature that fails drops its session and is tried once more on a fresh
//! session (a session left in `CKR_OPERATION_ACTIVE` or invalidated by a device error is
//! never reused). When that fails too, the library is finalized and initialized again
//! (at most once a second: a token that was taken away and brought back is only seen by
//! a new `C_Initialize`) and the signature is tried a last time; still failing, the key
//! is marked down ([`TokenKey::down`]) and the caller gets [`TokenError::Unavailable`].
//! Every later signature, and [`TokenKey::probe`] (readiness), tries again, so a token
//! that comes back is used again without a restart.
//!
//! One library context per module path in the process ([`Module`]): PKCS#11 allows one
//! `C_Initialize` per library, so the user CA and host CA keys of one token share it.
//! Signatures hold the module's read lock; re-initialization takes its write lock, so no
//! signature is under way in a library being finalized. Sessions are opened without
//! close-on-drop and closed only while their own context generation is current (a stale
//! handle could otherwise close another key's new session).
//!
//! Must never: sign with a key whose signature does not verify under the CA's published
//! key (checked on every new session), keep the PIN anywhere but this process's memory,
//! or hand out a signature the token did not make.

use super::uri::{PinSource, Pkcs11Uri};
use cryptoki::context::{CInitializeArgs, CInitializeFlags, Pkcs11};
use cryptoki::error::RvError;
use cryptoki::mechanism::eddsa::{EddsaParams, EddsaSignatureScheme};
use cryptoki::mechanism::{Mechanism, MechanismType};
use cryptoki::object::{Attribute, AttributeType, KeyType, ObjectClass, ObjectHandle};
use cryptoki::session::{Session, UserType};
use cryptoki::slot::Slot;
use cryptoki::types::AuthPin;
use sha2::Digest;
use ssh_key::public::{EcdsaPublicKey, Ed25519PublicKey, KeyData};
use ssh_key::{Algorithm, EcdsaCurve, Signature};
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, OnceLock, RwLock};
use std::time::{Duration, Instant};
use zeroize::Zeroizing;

/// Least time between two re-initializations of a library.
const REINIT_EVERY: Duration = Duration::from_secs(1);
/// How long a readiness probe's answer is reused.
const PROBE_EVERY: Duration = Duration::from_secs(1);

/// `CKA_EC_PARAMS` of P-256 (the DER OID 1.2.840.10045.3.1.7).
const P256_PARAMS: &[u8] = &[0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07];
/// `CKA_EC_PARAMS` of Ed25519 as SoftHSM 2.6 writes it: the PrintableString "edwards25519".
const ED25519_PARAMS_NAME: &[u8] = b"\x13\x0cedwards25519";
/// `CKA_EC_PARAMS` of Ed25519 as the OID 1.3.101.112 (PKCS#11 3.1 tokens).
const ED25519_PARAMS_OID: &[u8] = &[0x06, 0x03, 0x2b, 0x65, 0x70];

#[derive(Debug, Clone, thiserror::Error)]
pub enum TokenError {
    #[error("cannot load the PKCS#11 module {path}: {detail}\nhint: install it (Debian: apt-get install softhsm2) or fix module-path in the URI")]
    Module { path: PathBuf, detail: String },
    #[error("cannot read the PIN of {token}: {detail}")]
    Pin { token: String, detail: String },
    #[error("{token} is not present in {module}\nhint: list tokens with `pkcs11-tool --module {module} -L` (or `softhsm2-util --show-slots`)")]
    NoToken { token: String, module: String },
    #[error("{token} refused the PIN: {detail}")]
    Login { token: String, detail: String },
    #[error("no private key labelled '{object}' on {token}\nhint: `smith-ca init --user-ca URI` generates it; `pkcs11-tool --module M -O` lists the objects")]
    NoKey { object: String, token: String },
    #[error("{count} private keys labelled '{object}' on {token}: add id=... to the URI")]
    AmbiguousKey {
        object: String,
        token: String,
        count: usize,
    },
    #[error("the key '{object}' on {token} is not ECDSA P-256 or Ed25519 ({detail})")]
    UnsupportedKey {
        object: String,
        token: String,
        detail: String,
    },
    #[error("{token} does not offer {what}")]
    NoMechanism { token: String, what: &'static str },
    #[error("the key '{object}' on {token} is not the published CA key {published}: its signature does not verify under it\nhint: the URI names another key, or the token was replaced; fix the URI in ca.toml or restore the token")]
    WrongKey {
        object: String,
        token: String,
        published: String,
    },
    #[error("the token of {key} is unavailable: {detail}")]
    Unavailable { key: String, detail: String },
    #[error("{0}")]
    Token(String),
}

impl TokenError {
    /// A stable code for scripts and logs.
    pub fn code(&self) -> &'static str {
        match self {
            TokenError::Module { .. } => "hsm_module",
            TokenError::Pin { .. } => "hsm_pin",
            TokenError::NoToken { .. } => "hsm_no_token",
            TokenError::Login { .. } => "hsm_login",
            TokenError::NoKey { .. } => "hsm_no_key",
            TokenError::AmbiguousKey { .. } => "hsm_ambiguous_key",
            TokenError::UnsupportedKey { .. } => "hsm_unsupported_key",
            TokenError::NoMechanism { .. } => "hsm_no_mechanism",
            TokenError::WrongKey { .. } => "hsm_wrong_key",
            TokenError::Unavailable { .. } => "signer_unavailable",
            TokenError::Token(_) => "hsm_error",
        }
    }
}

fn token_err(e: cryptoki::error::Error) -> TokenError {
    TokenError::Token(e.to_string())
}

/// The algorithms a token key may have.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenAlg {
    EcdsaP256,
    Ed25519,
}

impl TokenAlg {
    pub fn as_str(self) -> &'static str {
        match self {
            TokenAlg::EcdsaP256 => "ecdsa-p256",
            TokenAlg::Ed25519 => "ed25519",
        }
    }
}

/// One PKCS#11 library loaded in this process.
struct Module {
    path: PathBuf,
    state: RwLock<ModState>,
}

struct ModState {
    /// `None` while the library could not be initialized.
    ctx: Option<Pkcs11>,
    /// Bumped at each (re-)initialization: sessions of older ones are dead.
    generation: u64,
    initialized_at: Instant,
    /// Why the last initialization failed.
    error: Option<String>,
}

fn init_ctx(path: &std::path::Path) -> Result<Pkcs11, String> {
    let ctx = Pkcs11::new(path).map_err(|e| e.to_string())?;
    match ctx.initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK)) {
        Ok(()) | Err(cryptoki::error::Error::Pkcs11(RvError::CryptokiAlreadyInitialized, _)) => {
            Ok(ctx)
        }
        Err(e) => Err(e.to_string()),
    }
}

fn modules() -> &'static Mutex<HashMap<PathBuf, Arc<Module>>> {
    static M: OnceLock<Mutex<HashMap<PathBuf, Arc<Module>>>> = OnceLock::new();
    M.get_or_init(|| Mutex::new(HashMap::new()))
}

impl Module {
    /// The process's context of the library at `path`, initialized on first use.
    fn get(path: &std::path::Path) -> Result<Arc<Module>, TokenError> {
        let mut all = modules().lock().unwrap_or_else(|e| e.into_inner());
        if let Some(m) = all.get(path) {
            return Ok(m.clone());
        }
        if !path.exists() {
            return Err(TokenError::Module {
                path: path.to_path_buf(),
                detail: "no such file".into(),
            });
        }
        let ctx = init_ctx(path).map_err(|detail| TokenError::Module {
            path: path.to_path_buf(),
            detail,
        })?;
        let m = Arc::new(Module {
            path: path.to_path_buf(),
            state: RwLock::new(ModState {
                ctx: Some(ctx),
                generation: 1,
                initialized_at: Instant::now(),
                error: None,
            }),
        });
        all.insert(path.to_path_buf(), m.clone());
        Ok(m)
    }

    /// Finalizes and initializes the library again, unless someone already did since
    /// `seen` or it was done less than [`REINIT_EVERY`] ago. True when it was done.
    fn reinit(&self, seen: u64) -> bool {
        let mut st = self.state.write().unwrap_or_else(|e| e.into_inner());
        if st.generation != seen || st.initialized_at.elapsed() < REINIT_EVERY {
            return false;
        }
        if let Some(old) = st.ctx.take() {
            // Every session of this generation dies here; pooled ones are forgotten
            // without a close (their handles mean nothing to the next generation).
            let _ = old.finalize();
        }
        st.generation += 1;
        st.initialized_at = Instant::now();
        match init_ctx(&self.path) {
            Ok(c) => {
                st.ctx = Some(c);
                st.error = None;
                tracing::info!(module = %self.path.display(), generation = st.generation, "PKCS#11 library initialized again");
            }
            Err(e) => {
                tracing::warn!(module = %self.path.display(), error = %e, "PKCS#11 library cannot be initialized");
                st.error = Some(e);
            }
        }
        true
    }
}

/// A session of the pool, with the key's handle in it.
struct Pooled {
    session: Session,
    key: ObjectHandle,
    generation: u64,
}

#[derive(Default)]
struct Health {
    /// Since when, and why, signing fails.
    down: Option<(Instant, String)>,
    last_probe: Option<Instant>,
}

/// A CA key in a token (see the module doc).
pub struct TokenKey {
    uri: Pkcs11Uri,
    module: Arc<Module>,
    pin: Zeroizing<String>,
    public: KeyData,
    alg: TokenAlg,
    idle: Mutex<Vec<Pooled>>,
    health: Mutex<Health>,
}

/// Reads the PIN `src` names.
pub fn read_pin(uri: &Pkcs11Uri) -> Result<Zeroizing<String>, TokenError> {
    let err = |detail: String| TokenError::Pin {
        token: uri.token_name(),
        detail,
    };
    let path = match &uri.pin_source {
        PinSource::File(p) => p.clone(),
        PinSource::Credential(name) => {
            let dir = std::env::var_os("CREDENTIALS_DIRECTORY").ok_or_else(|| {
                err(format!(
                    "pin-source=credential:{name} but CREDENTIALS_DIRECTORY is not set \
                     (run under systemd with LoadCredential={name}:/path/to/pin)"
                ))
            })?;
            PathBuf::from(dir).join(name)
        }
    };
    let text = Zeroizing::new(
        std::fs::read_to_string(&path).map_err(|e| err(format!("{}: {e}", path.display())))?,
    );
    let pin = Zeroizing::new(text.trim_end_matches(['\n', '\r']).to_string());
    if pin.is_empty() {
        return Err(err(format!("{} is empty", path.display())));
    }
    Ok(pin)
}

/// The DER OCTET STRING around a `CKA_EC_POINT`, removed (some tokens give it bare).
fn unwrap_ec_point(v: &[u8]) -> &[u8] {
    if v.first() == Some(&0x04) && v.len() >= 2 {
        let (len, hdr) = match v[1] {
            n if n < 0x80 => (n as usize, 2),
            0x81 if v.len() >= 3 => (v[2] as usize, 3),
            _ => return v,
        };
        if hdr + len == v.len() {
            return &v[hdr..];
        }
    }
    v
}

/// The OpenSSH public key of a token's EC or Edwards public key object.
fn key_data_of(params: &[u8], point: &[u8]) -> Result<(TokenAlg, KeyData), String> {
    let raw = unwrap_ec_point(point);
    if params == P256_PARAMS {
        let k = EcdsaPublicKey::from_sec1_bytes(raw).map_err(|e| format!("EC point: {e}"))?;
        Ok((TokenAlg::EcdsaP256, KeyData::Ecdsa(k)))
    } else if params == ED25519_PARAMS_NAME || params == ED25519_PARAMS_OID {
        let b: [u8; 32] = raw
            .try_into()
            .map_err(|_| format!("Ed25519 point of {} bytes", raw.len()))?;
        Ok((TokenAlg::Ed25519, KeyData::Ed25519(Ed25519PublicKey(b))))
    } else {
        Err(format!("curve parameters {}", hex::encode(params)))
    }
}

/// An OpenSSH mpint of a positive big-endian integer.
fn put_mpint(out: &mut Vec<u8>, bytes: &[u8]) {
    super::put_mpint(out, bytes)
}

/// A session on `uri`'s token, logged in.
fn open_session(ctx: &Pkcs11, uri: &Pkcs11Uri, pin: &str) -> Result<(Session, Slot), TokenError> {
    let slot = find_slot(ctx, uri)?;
    let session = ctx.open_rw_session_no_drop(slot).map_err(token_err)?;
    match session.login(UserType::User, Some(&AuthPin::new(pin.into()))) {
        Ok(()) | Err(cryptoki::error::Error::Pkcs11(RvError::UserAlreadyLoggedIn, _)) => {}
        Err(e) => {
            let _ = session.close();
            return Err(TokenError::Login {
                token: uri.token_name(),
                detail: e.to_string(),
            });
        }
    }
    Ok((session, slot))
}

fn find_slot(ctx: &Pkcs11, uri: &Pkcs11Uri) -> Result<Slot, TokenError> {
    for slot in ctx.get_slots_with_token().map_err(token_err)? {
        let Ok(info) = ctx.get_token_info(slot) else {
            continue;
        };
        let label_ok = uri
            .token
            .as_deref()
            .is_none_or(|t| info.label().trim_end() == t);
        let serial_ok = uri
            .serial
            .as_deref()
            .is_none_or(|s| info.serial_number().trim_end() == s);
        if label_ok && serial_ok {
            return Ok(slot);
        }
    }
    Err(TokenError::NoToken {
        token: uri.token_name(),
        module: uri.module_path.display().to_string(),
    })
}

fn key_template(uri: &Pkcs11Uri, class: ObjectClass) -> Vec<Attribute> {
    let mut t = vec![
        Attribute::Class(class),
        Attribute::Label(uri.object.as_bytes().to_vec()),
    ];
    if let Some(id) = &uri.id {
        t.push(Attribute::Id(id.clone()));
    }
    t
}

fn find_one(
    session: &Session,
    uri: &Pkcs11Uri,
    class: ObjectClass,
) -> Result<Option<ObjectHandle>, TokenError> {
    let found = session
        .find_objects(&key_template(uri, class))
        .map_err(token_err)?;
    match found.len() {
        0 => Ok(None),
        1 => Ok(Some(found[0])),
        n => Err(TokenError::AmbiguousKey {
            object: uri.object.clone(),
            token: uri.token_name(),
            count: n,
        }),
    }
}

fn private_key(session: &Session, uri: &Pkcs11Uri) -> Result<ObjectHandle, TokenError> {
    find_one(session, uri, ObjectClass::PRIVATE_KEY)?.ok_or_else(|| TokenError::NoKey {
        object: uri.object.clone(),
        token: uri.token_name(),
    })
}

/// The public key of `uri`'s key pair, read from its public key object.
fn public_of(session: &Session, uri: &Pkcs11Uri) -> Result<(TokenAlg, KeyData), TokenError> {
    let unsupported = |detail: String| TokenError::UnsupportedKey {
        object: uri.object.clone(),
        token: uri.token_name(),
        detail,
    };
    let h = find_one(session, uri, ObjectClass::PUBLIC_KEY)?.ok_or_else(|| {
        unsupported("no public key object with that label beside the private key".into())
    })?;
    let attrs = session
        .get_attributes(h, &[AttributeType::EcParams, AttributeType::EcPoint])
        .map_err(token_err)?;
    let mut params = None;
    let mut point = None;
    for a in attrs {
        match a {
            Attribute::EcParams(p) => params = Some(p),
            Attribute::EcPoint(p) => point = Some(p),
            _ => {}
        }
    }
    match (params, point) {
        (Some(params), Some(point)) => key_data_of(&params, &point).map_err(unsupported),
        _ => Err(unsupported("not an EC or Edwards key".into())),
    }
}

fn mechanisms(ctx: &Pkcs11, slot: Slot) -> Vec<MechanismType> {
    ctx.get_mechanism_list(slot).unwrap_or_default()
}

fn raw_sign(
    session: &Session,
    key: ObjectHandle,
    alg: TokenAlg,
    msg: &[u8],
) -> Result<Vec<u8>, cryptoki::error::Error> {
    match alg {
        TokenAlg::EcdsaP256 => {
            // No hash-and-sign mechanism on every token: hash here, sign the digest.
            let digest = sha2::Sha256::digest(msg);
            session.sign(&Mechanism::Ecdsa, key, &digest)
        }
        TokenAlg::Ed25519 => session.sign(
            &Mechanism::Eddsa(EddsaParams::new(EddsaSignatureScheme::Pure)),
            key,
            msg,
        ),
    }
}

/// An OpenSSH signature from the token's raw answer.
fn ssh_signature(alg: TokenAlg, raw: &[u8]) -> Result<Signature, String> {
    match alg {
        TokenAlg::EcdsaP256 => {
            if raw.len() != 64 {
                return Err(format!("ECDSA P-256 signature of {} bytes", raw.len()));
            }
            let (r, s) = raw.split_at(32);
            let mut data = Vec::with_capacity(2 * (4 + 33));
            put_mpint(&mut data, r);
            put_mpint(&mut data, s);
            Signature::new(
                Algorithm::Ecdsa {
                    curve: EcdsaCurve::NistP256,
                },
                data,
            )
            .map_err(|e| e.to_string())
        }
        TokenAlg::Ed25519 => {
            if raw.len() != 64 {
                return Err(format!("Ed25519 signature of {} bytes", raw.len()));
            }
            Signature::new(Algorithm::Ed25519, raw.to_vec()).map_err(|e| e.to_string())
        }
    }
}

/// Signs a fixed message and checks it verifies under `public`.
fn check_key(
    session: &Session,
    key: ObjectHandle,
    alg: TokenAlg,
    public: &KeyData,
    uri: &Pkcs11Uri,
) -> Result<(), TokenError> {
    let msg = b"smith: the token key is the published CA key";
    let raw = raw_sign(session, key, alg, msg).map_err(token_err)?;
    let sig = ssh_signature(alg, &raw).map_err(TokenError::Token)?;
    signature::Verifier::verify(public, msg, &sig).map_err(|_| TokenError::WrongKey {
        object: uri.object.clone(),
        token: uri.token_name(),
        published: public.fingerprint(ssh_key::HashAlg::Sha256).to_string(),
    })
}

fn alg_of(public: &KeyData) -> Option<TokenAlg> {
    match public {
        KeyData::Ed25519(_) => Some(TokenAlg::Ed25519),
        KeyData::Ecdsa(EcdsaPublicKey::NistP256(_)) => Some(TokenAlg::EcdsaP256),
        _ => None,
    }
}

/// What [`find_or_generate`] did.
#[derive(Debug, Clone)]
pub struct OnToken {
    pub public: KeyData,
    pub alg: TokenAlg,
    /// False when the key was already on the token.
    pub generated: bool,
}

/// The key `uri` names, generated on the token with `alg` if it is not there yet
/// (`smith-ca init`). The private half is sensitive and not extractable.
pub fn find_or_generate(uri: &Pkcs11Uri, alg: TokenAlg) -> Result<OnToken, TokenError> {
    let pin = read_pin(uri)?;
    let module = Module::get(&uri.module_path)?;
    let st = module.state.read().unwrap_or_else(|e| e.into_inner());
    let ctx = st.ctx.as_ref().ok_or_else(|| TokenError::Module {
        path: uri.module_path.clone(),
        detail: st.error.clone().unwrap_or_default(),
    })?;
    let (session, slot) = open_session(ctx, uri, &pin)?;
    let result = (|| {
        if find_one(&session, uri, ObjectClass::PRIVATE_KEY)?.is_some() {
            let (alg, public) = public_of(&session, uri)?;
            return Ok(OnToken {
                public,
                alg,
                generated: false,
            });
        }
        let mechs = mechanisms(ctx, slot);
        let (gen, params, key_type, sign_mech, what) = match alg {
            TokenAlg::EcdsaP256 => (
                Mechanism::EccKeyPairGen,
                P256_PARAMS.to_vec(),
                KeyType::EC,
                MechanismType::ECDSA,
                "CKM_ECDSA (ECDSA P-256)",
            ),
            TokenAlg::Ed25519 => (
                Mechanism::EccEdwardsKeyPairGen,
                ED25519_PARAMS_NAME.to_vec(),
                KeyType::EC_EDWARDS,
                MechanismType::EDDSA,
                "CKM_EDDSA (Ed25519); use ecdsa-p256",
            ),
        };
        if !mechs.contains(&sign_mech) {
            return Err(TokenError::NoMechanism {
                token: uri.token_name(),
                what,
            });
        }
        let id = match &uri.id {
            Some(id) => id.clone(),
            None => {
                let mut id = vec![0u8; 8];
                rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, &mut id);
                id
            }
        };
        let label = uri.object.as_bytes().to_vec();
        let public_t = vec![
            Attribute::Token(true),
            Attribute::Private(false),
            Attribute::KeyType(key_type),
            Attribute::Verify(true),
            Attribute::EcParams(params),
            Attribute::Label(label.clone()),
            Attribute::Id(id.clone()),
        ];
        let private_t = vec![
            Attribute::Token(true),
            Attribute::Private(true),
            Attribute::Sensitive(true),
            Attribute::Extractable(false),
            Attribute::KeyType(key_type),
            Attribute::Sign(true),
            // A CA key signs and does nothing else.
            Attribute::Decrypt(false),
            Attribute::Unwrap(false),
            Attribute::Derive(false),
            Attribute::Label(label),
            Attribute::Id(id),
        ];
        session
            .generate_key_pair(&gen, &public_t, &private_t)
            .map_err(token_err)?;
        let (alg, public) = public_of(&session, uri)?;
        Ok(OnToken {
            public,
            alg,
            generated: true,
        })
    })();
    let _ = session.close();
    result
}

impl TokenKey {
    /// Opens the key `uri` names and checks it is `published` (a signature made in the
    /// token verifies under it).
    pub fn open(uri: &Pkcs11Uri, published: &KeyData) -> Result<TokenKey, TokenError> {
        let alg = alg_of(published).ok_or_else(|| TokenError::UnsupportedKey {
            object: uri.object.clone(),
            token: uri.token_name(),
            detail: format!("the published key is {}", published.algorithm()),
        })?;
        let key = TokenKey {
            uri: uri.clone(),
            module: Module::get(&uri.module_path)?,
            pin: read_pin(uri)?,
            public: published.clone(),
            alg,
            idle: Mutex::new(Vec::new()),
            health: Mutex::new(Health::default()),
        };
        // The first session checks the key (and proves the PIN): refuse to start on a
        // token that is not the one the CA publishes.
        let st = key.module.state.read().unwrap_or_else(|e| e.into_inner());
        let pooled = key.new_session(&st)?;
        drop(st);
        key.put_back(pooled);
        Ok(key)
    }

    pub fn uri(&self) -> &Pkcs11Uri {
        &self.uri
    }

    pub fn public(&self) -> &KeyData {
        &self.public
    }

    pub fn alg(&self) -> TokenAlg {
        self.alg
    }

    /// Since when and why signing fails (`None`: it works, as far as the last
    /// signature or probe knows).
    pub fn down(&self) -> Option<(Duration, String)> {
        let h = self.health.lock().unwrap_or_else(|e| e.into_inner());
        h.down.as_ref().map(|(t, why)| (t.elapsed(), why.clone()))
    }

    /// A session of the current generation, checked against the published key.
    fn new_session(&self, st: &ModState) -> Result<Pooled, TokenError> {
        let ctx = st.ctx.as_ref().ok_or_else(|| {
            TokenError::Token(format!(
                "the PKCS#11 library is not initialized ({})",
                st.error.as_deref().unwrap_or("unknown error")
            ))
        })?;
        let (session, _) = open_session(ctx, &self.uri, &self.pin)?;
        let checked = private_key(&session, &self.uri).and_then(|key| {
            check_key(&session, key, self.alg, &self.public, &self.uri).map(|()| key)
        });
        match checked {
            Ok(key) => Ok(Pooled {
                session,
                key,
                generation: st.generation,
            }),
            Err(e) => {
                let _ = session.close();
                Err(e)
            }
        }
    }

    fn put_back(&self, p: Pooled) {
        let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        if idle.len() < self.uri.max_sessions {
            idle.push(p);
        } else {
            drop(idle);
            let _ = p.session.close();
        }
    }

    /// One try: a pooled session (or a new one), then once more on a new session.
    /// Returns the generation it ran in, for [`Module::reinit`].
    fn try_sign(&self, msg: &[u8]) -> Result<Vec<u8>, (u64, TokenError)> {
        let st = self.module.state.read().unwrap_or_else(|e| e.into_inner());
        let generation = st.generation;
        let pooled = loop {
            let p = self.idle.lock().unwrap_or_else(|e| e.into_inner()).pop();
            match p {
                // Sessions of a finalized generation are forgotten, never closed.
                Some(p) if p.generation != generation => continue,
                other => break other,
            }
        };
        if let Some(p) = pooled {
            match raw_sign(&p.session, p.key, self.alg, msg) {
                Ok(sig) => {
                    self.put_back(p);
                    return Ok(sig);
                }
                Err(e) => {
                    tracing::warn!(key = %self.uri, error = %e, "signing in the token failed; reopening the session");
                    let _ = p.session.close();
                }
            }
        }
        let p = match self.new_session(&st) {
            Ok(p) => p,
            Err(e) => return Err((generation, e)),
        };
        match raw_sign(&p.session, p.key, self.alg, msg) {
            Ok(sig) => {
                self.put_back(p);
                Ok(sig)
            }
            Err(e) => {
                let _ = p.session.close();
                Err((generation, token_err(e)))
            }
        }
    }

    /// Signs `msg` (see the module doc for what happens on failure).
    pub fn sign(&self, msg: &[u8]) -> Result<Signature, TokenError> {
        let raw = match self.try_sign(msg) {
            Ok(raw) => raw,
            Err((generation, e)) => {
                let again = if self.module.reinit(generation) {
                    self.try_sign(msg).map_err(|(_, e)| e)
                } else {
                    Err(e)
                };
                match again {
                    Ok(raw) => raw,
                    Err(e) => return Err(self.mark_down(e)),
                }
            }
        };
        let sig =
            ssh_signature(self.alg, &raw).map_err(|e| self.mark_down(TokenError::Token(e)))?;
        self.mark_up();
        Ok(sig)
    }

    fn mark_down(&self, e: TokenError) -> TokenError {
        let detail = e.to_string();
        let mut h = self.health.lock().unwrap_or_else(|e| e.into_inner());
        if h.down.is_none() {
            tracing::error!(key = %self.uri, error = %detail, code = e.code(), "the CA key's token is unavailable: issuance answers 503 until it is back");
            h.down = Some((Instant::now(), detail.clone()));
        }
        TokenError::Unavailable {
            key: self.uri.to_string(),
            detail,
        }
    }

    fn mark_up(&self) {
        let mut h = self.health.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((since, _)) = h.down.take() {
            tracing::info!(key = %self.uri, down_for = ?since.elapsed(), "the CA key's token is back");
        }
    }

    /// Readiness: signs a test message at most once a second (answers from the last
    /// probe in between), so that a token that went away is noticed, and one that came
    /// back is used again, without any certificate being asked for.
    pub fn probe(&self) -> Result<(), TokenError> {
        {
            let mut h = self.health.lock().unwrap_or_else(|e| e.into_inner());
            let fresh = h.last_probe.is_some_and(|t| t.elapsed() < PROBE_EVERY);
            if fresh {
                return match &h.down {
                    Some((_, why)) => Err(TokenError::Unavailable {
                        key: self.uri.to_string(),
                        detail: why.clone(),
                    }),
                    None => Ok(()),
                };
            }
            h.last_probe = Some(Instant::now());
        }
        self.sign(b"smith: readiness probe").map(|_| ())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ec_points_are_unwrapped_from_their_octet_string() {
        let raw = [7u8; 32];
        let mut wrapped = vec![0x04, 0x20];
        wrapped.extend_from_slice(&raw);
        assert_eq!(unwrap_ec_point(&wrapped), raw);
        assert_eq!(unwrap_ec_point(&raw), raw);
        let (alg, k) = key_data_of(ED25519_PARAMS_NAME, &wrapped).unwrap();
        assert_eq!(alg, TokenAlg::Ed25519);
        assert_eq!(k, KeyData::Ed25519(Ed25519PublicKey(raw)));
        assert!(key_data_of(ED25519_PARAMS_OID, &wrapped).is_ok());
        assert!(key_data_of(&[0x06, 0x01, 0x00], &wrapped).is_err());
        // A P-256 point: 65 bytes, wrapped as 04 41 04...
        let ca = crate::sshca::generate(crate::sshca::CaAlgorithm::EcdsaP256, "x").unwrap();
        let KeyData::Ecdsa(p) = ca.public_key().key_data() else {
            unreachable!()
        };
        let sec1 = p.as_sec1_bytes().to_vec();
        let mut w = vec![0x04, 0x41];
        w.extend_from_slice(&sec1);
        let (alg, k) = key_data_of(P256_PARAMS, &w).unwrap();
        assert_eq!(alg, TokenAlg::EcdsaP256);
        assert_eq!(&k, ca.public_key().key_data());
        assert_eq!(key_data_of(P256_PARAMS, &sec1).unwrap().1, k);
    }
}
