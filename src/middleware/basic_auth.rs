//! `basic_auth`: 401 with `WWW-Authenticate` unless the request carries a
//! user and password from an htpasswd file (bcrypt entries, as written by
//! `htpasswd -B`). bcrypt is deliberately slow, so a successful check is
//! remembered by a keyed hash of the header (never the password itself) in
//! a small bounded cache. Credentials are never logged.

use std::collections::{HashMap, HashSet};
use std::hash::BuildHasher;
use std::path::Path;
use std::sync::{Arc, Mutex};

use base64::Engine;
use http::header::{self, HeaderValue};
use http::{Request, Response, StatusCode};

use super::{Ctx, DefinitionError, Env, Flow, Middleware, State, Step};
use crate::body::plain_response;
use crate::body::{RequestBody, ResponseBody};
use crate::config::{MiddlewareSpec, RawMiddleware};

const CACHE_LIMIT: usize = 10_000;

pub struct BasicAuth {
    users: Arc<HashMap<String, String>>,
    /// Checked for unknown users (see [`verify`]).
    decoy: Arc<str>,
    /// bcrypt runs on blocking threads, a few at a time, so a flood of bad
    /// passwords cannot starve the proxy's workers.
    bcrypt_slots: tokio::sync::Semaphore,
    challenge: HeaderValue,
    verified: Mutex<HashSet<u64>>,
    hasher: std::collections::hash_map::RandomState,
}

impl std::fmt::Debug for BasicAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print hashes or users.
        f.debug_struct("BasicAuth").field("users", &self.users.len()).finish()
    }
}

/// The `[middleware.NAME]` definition of `type = "basic_auth"`; its
/// htpasswd path is relative to the config file.
pub(super) fn compile(spec: &MiddlewareSpec, _: &Env<'_>) -> Result<Arc<dyn Middleware>, DefinitionError> {
    let RawMiddleware::BasicAuth { htpasswd, realm } = &spec.kind else {
        return Err(super::not_mine("basic_auth").into());
    };
    Ok(Arc::new(BasicAuth::load(&spec.resolve(htpasswd), realm.as_deref())?))
}

impl BasicAuth {
    /// A `basic_auth` with the users of the htpasswd file at `path`.
    pub fn load(path: &Path, realm: Option<&str>) -> Result<Self, DefinitionError> {
        let users = Self::users(path).map_err(|m| DefinitionError::at("htpasswd", m))?;
        let realm = realm.unwrap_or("Restricted").replace('"', "");
        let challenge = HeaderValue::from_str(&format!("Basic realm=\"{realm}\", charset=\"UTF-8\""))
            .map_err(|_| DefinitionError::at("realm", format!("invalid realm {realm:?}")))?;
        let decoy = Arc::from(decoy_hash(&users)?);
        Ok(BasicAuth {
            decoy,
            users: Arc::new(users),
            bcrypt_slots: tokio::sync::Semaphore::new(2),
            challenge,
            verified: Mutex::new(HashSet::new()),
            hasher: Default::default(),
        })
    }

    /// The users of the htpasswd file at `path`, by name.
    fn users(path: &Path) -> Result<HashMap<String, String>, String> {
        let text =
            std::fs::read_to_string(path).map_err(|e| format!("cannot read htpasswd file {}: {e}", path.display()))?;
        let mut users = HashMap::new();
        for (i, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let (user, hash) =
                line.split_once(':').ok_or_else(|| format!("{}:{}: expected USER:HASH", path.display(), i + 1))?;
            if !(hash.starts_with("$2y$") || hash.starts_with("$2b$") || hash.starts_with("$2a$")) {
                return Err(format!(
                    "{}:{}: user {user:?} does not have a bcrypt hash; create entries with `htpasswd -B`",
                    path.display(),
                    i + 1
                ));
            }
            users.insert(user.to_string(), hash.to_string());
        }
        if users.is_empty() {
            return Err(format!("htpasswd file {} has no users", path.display()));
        }
        Ok(users)
    }

    fn refusal(&self) -> Response<ResponseBody> {
        let mut r = plain_response(StatusCode::UNAUTHORIZED, "401 Unauthorized\n");
        r.headers_mut().insert(header::WWW_AUTHENTICATE, self.challenge.clone());
        r
    }

    /// Whether this `Authorization` value passed the check recently.
    fn remembered(&self, key: u64) -> bool {
        self.verified.lock().map(|s| s.contains(&key)).unwrap_or(false)
    }

    /// The bcrypt check, on a blocking thread; a success is remembered.
    async fn check(&self, key: u64, value: HeaderValue) -> bool {
        let Ok(_slot) = self.bcrypt_slots.acquire().await else { return false };
        let users = Arc::clone(&self.users);
        let decoy = Arc::clone(&self.decoy);
        let given = value.as_bytes().to_vec();
        let ok = tokio::task::spawn_blocking(move || verify(&users, &decoy, &given)).await.unwrap_or(false);
        if ok {
            if let Ok(mut s) = self.verified.lock() {
                if s.len() >= CACHE_LIMIT {
                    s.clear();
                }
                s.insert(key);
            }
        }
        ok
    }
}

impl Middleware for BasicAuth {
    fn reads_files(&self) -> bool {
        true
    }

    /// A remembered `Authorization` passes at once; an unknown one waits
    /// for bcrypt.
    fn on_request<'a>(&'a self, req: &'a mut Request<RequestBody>, _: &'a Ctx<'_>) -> Step<'a> {
        let mut lines = req.headers().get_all(header::AUTHORIZATION).iter();
        let Some(value) = lines.next() else {
            return Flow::Answer(self.refusal()).into();
        };
        // One field, one credential (as nginx refuses a second line): with
        // two, this checks one while the upstream may read the other.
        if lines.next().is_some() {
            return Flow::Answer(plain_response(StatusCode::BAD_REQUEST, "400 two Authorization headers\n")).into();
        }
        let key = self.hasher.hash_one(value.as_bytes());
        if self.remembered(key) {
            return Flow::Continue(State::Skip).into();
        }
        let value = value.clone();
        Step::Wait(Box::pin(async move {
            if self.check(key, value).await {
                Flow::Continue(State::Skip)
            } else {
                Flow::Answer(self.refusal())
            }
        }))
    }
}

/// Whether `value` names a user of `users` with the right password. An
/// unknown user is checked against `decoy`, a hash of the same cost, so a
/// wrong password takes as long for a user that does not exist as for one
/// that does, and the time tells nobody which names are real.
fn verify(users: &HashMap<String, String>, decoy: &str, value: &[u8]) -> bool {
    // The scheme is case-insensitive (RFC 9110 11.1).
    let Some(b64) = value.get(..6).filter(|s| s.eq_ignore_ascii_case(b"basic ")).map(|_| &value[6..]) else {
        return false;
    };
    let Ok(decoded) = base64::engine::general_purpose::STANDARD.decode(b64.trim_ascii()) else { return false };
    let Ok(decoded) = String::from_utf8(decoded) else { return false };
    let Some((user, password)) = decoded.split_once(':') else { return false };
    match users.get(user) {
        Some(hash) => bcrypt::verify(password, hash).unwrap_or(false),
        None => {
            let _ = bcrypt::verify(password, decoy);
            false
        }
    }
}

/// A bcrypt hash of a random password at the highest cost in `users`.
fn decoy_hash(users: &HashMap<String, String>) -> Result<String, String> {
    let cost = users.values().filter_map(|h| h.get(4..6)?.parse::<u32>().ok()).max().unwrap_or(bcrypt::DEFAULT_COST);
    let mut secret = [0u8; 16];
    let seed = std::collections::hash_map::RandomState::new().hash_one(std::time::SystemTime::now());
    secret[..8].copy_from_slice(&seed.to_le_bytes());
    bcrypt::hash(secret, cost.clamp(4, 31)).map_err(|e| format!("cannot make the decoy hash: {e}"))
}
