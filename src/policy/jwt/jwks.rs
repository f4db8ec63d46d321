//! JWKS key sets for `jwt-validation`: fetched over HTTP(S), turned into
//! verification keys bound to their algorithms, refreshed on a TTL and on
//! an unknown `kid` (rate-limited), the last good keys kept when a fetch
//! fails.

use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, Jwk};
use jsonwebtoken::{Algorithm, DecodingKey};
use serde_json::Value;
use std::str::FromStr;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

/// A verification key with the algorithms it may verify.
#[derive(Clone)]
pub(super) struct Key {
    pub(super) kid: Option<String>,
    pub(super) algorithms: Vec<Algorithm>,
    pub(super) key: DecodingKey,
}

/// One JWKS URL and the keys last fetched from it.
pub(super) struct KeySet {
    pub(super) url: String,
    pub(super) algorithms: Vec<Algorithm>,
    pub(super) timeout: Duration,
    pub(super) min_refresh: Duration,
    pub(super) ttl: Duration,
    pub(super) keys: RwLock<Option<(Arc<Vec<Key>>, Instant)>>,
    /// One fetch at a time; holds when the last attempt started.
    pub(super) fetching: tokio::sync::Mutex<Option<Instant>>,
}

impl KeySet {
    pub(super) fn current(&self) -> Option<(Arc<Vec<Key>>, Instant)> {
        self.keys.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Fetch the set (unless another fetch just did, or `rate_limited` and
    /// the last attempt is younger than `min_refresh`). Failures keep the
    /// last good keys.
    pub(super) async fn refresh(&self, rate_limited: bool) {
        let asked = Instant::now();
        let mut last = self.fetching.lock().await;
        if let Some(at) = *last {
            if at >= asked || (rate_limited && at.elapsed() < self.min_refresh) {
                return; // someone fetched while we waited, or too soon
            }
        }
        *last = Some(Instant::now());
        match self.fetch().await {
            Ok(keys) => {
                log::info!(
                    "jwt-validation: fetched {} keys from {}",
                    keys.len(),
                    self.url
                );
                *self.keys.write().unwrap_or_else(|e| e.into_inner()) =
                    Some((Arc::new(keys), Instant::now()));
            }
            Err(e) => log::warn!(
                "jwt-validation: cannot fetch keys from {} ({e}); {}",
                self.url,
                if self.current().is_some() {
                    "keeping the last good keys"
                } else {
                    "no keys yet: tokens for this set get 503"
                }
            ),
        }
    }

    async fn fetch(&self) -> Result<Vec<Key>, String> {
        let client = reqwest::Client::builder()
            .timeout(self.timeout)
            .connect_timeout(self.timeout)
            .build()
            .map_err(|e| e.to_string())?;
        let resp = client
            .get(&self.url)
            .header("accept", "application/json")
            .send()
            .await
            .map_err(|e| e.to_string())?;
        if !resp.status().is_success() {
            return Err(format!("status {}", resp.status()));
        }
        let body = resp.bytes().await.map_err(|e| e.to_string())?;
        let doc: Value = serde_json::from_slice(&body).map_err(|e| format!("not JSON: {e}"))?;
        let Some(list) = doc.get("keys").and_then(Value::as_array) else {
            return Err("no `keys` array".into());
        };
        Ok(list
            .iter()
            .filter_map(|k| {
                let jwk: Jwk = serde_json::from_value(k.clone()).ok()?;
                jwk_key(&jwk, &self.algorithms)
            })
            .collect())
    }
}

/// A JWK as a verification key, limited to the set's algorithms (and to
/// the key's own `alg` when it names one). Symmetric keys only when the set
/// allows an HS algorithm; encryption keys never.
fn jwk_key(jwk: &Jwk, allowed: &[Algorithm]) -> Option<Key> {
    if matches!(
        jwk.common.public_key_use,
        Some(jsonwebtoken::jwk::PublicKeyUse::Encryption)
    ) {
        return None;
    }
    let family: Vec<Algorithm> = match &jwk.algorithm {
        AlgorithmParameters::RSA(_) => super::config::RSA.to_vec(),
        AlgorithmParameters::EllipticCurve(p) => match p.curve {
            EllipticCurve::P256 => vec![Algorithm::ES256],
            EllipticCurve::P384 => vec![Algorithm::ES384],
            _ => return None,
        },
        AlgorithmParameters::OctetKeyPair(_) => vec![Algorithm::EdDSA],
        AlgorithmParameters::OctetKey(_) => {
            vec![Algorithm::HS256, Algorithm::HS384, Algorithm::HS512]
        }
    };
    let own = jwk
        .common
        .key_algorithm
        .and_then(|a| Algorithm::from_str(&format!("{a:?}")).ok());
    let algorithms: Vec<Algorithm> = family
        .into_iter()
        .filter(|a| allowed.contains(a) && own.is_none_or(|o| o == *a))
        .collect();
    if algorithms.is_empty() {
        return None;
    }
    Some(Key {
        kid: jwk.common.key_id.clone(),
        algorithms,
        key: DecodingKey::from_jwk(jwk).ok()?,
    })
}
