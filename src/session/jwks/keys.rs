//! The key set of a JWKS source: which keys of a published set are usable
//! (signature keys, asymmetric, of a sane size, fitting the allowed
//! algorithms), and the lookup of a token's key by `kid` and `alg`.

use std::collections::HashMap;

use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, Jwk, KeyOperations, PublicKeyUse};
use jsonwebtoken::{Algorithm, AlgorithmFamily, DecodingKey, DecodingKeyKind};
use serde_json::Value;

/// RSA keys outside this modulus size (bits) are skipped: smaller ones are
/// weak, larger ones the RSA backend refuses.
const RSA_BITS: std::ops::RangeInclusive<usize> = 2048..=4096;

/// The type of a usable key; decides which algorithms it can verify.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum KeyKind {
    Rsa,
    P256,
    P384,
    Ed25519,
}

impl KeyKind {
    pub(super) fn fits(self, alg: Algorithm) -> bool {
        match self {
            KeyKind::Rsa => alg.family() == AlgorithmFamily::Rsa,
            KeyKind::P256 => alg == Algorithm::ES256,
            KeyKind::P384 => alg == Algorithm::ES384,
            KeyKind::Ed25519 => alg == Algorithm::EdDSA,
        }
    }
}

/// One usable verification key from the set.
pub(super) struct Key {
    pub(super) kid: Option<String>,
    /// The key's own `alg`, when the set names one.
    pub(super) alg: Option<Algorithm>,
    pub(super) kind: KeyKind,
    pub(super) key: DecodingKey,
}

impl Key {
    pub(super) fn fits(&self, alg: Algorithm) -> bool {
        self.kind.fits(alg) && self.alg.is_none_or(|a| a == alg)
    }
}

/// A loaded key set. `generation` grows with every successful refresh, so a
/// request can tell whether the set changed while it waited.
pub(super) struct KeySet {
    pub(super) keys: Vec<Key>,
    pub(super) by_kid: HashMap<String, Vec<usize>>,
    pub(super) generation: u64,
}

/// The outcome of looking a token's key up.
pub(super) enum Lookup {
    Found(usize),
    /// No key with this kid (or, without kid, none fitting the alg).
    Missing,
    /// No kid, and several keys fit: refuse rather than guess.
    Ambiguous,
    /// The kid exists but its key cannot verify this alg.
    WrongAlg,
}

impl KeySet {
    pub(super) fn new(keys: Vec<Key>, generation: u64) -> KeySet {
        let mut by_kid: HashMap<String, Vec<usize>> = HashMap::new();
        for (i, k) in keys.iter().enumerate() {
            if let Some(kid) = &k.kid {
                by_kid.entry(kid.clone()).or_default().push(i);
            }
        }
        KeySet {
            keys,
            by_kid,
            generation,
        }
    }

    pub(super) fn find(&self, kid: Option<&str>, alg: Algorithm) -> Lookup {
        match kid {
            Some(kid) => match self.by_kid.get(kid) {
                None => Lookup::Missing,
                Some(ids) => ids
                    .iter()
                    .copied()
                    .find(|&i| self.keys[i].fits(alg))
                    .map_or(Lookup::WrongAlg, Lookup::Found),
            },
            None => {
                let mut fitting = (0..self.keys.len()).filter(|&i| self.keys[i].fits(alg));
                match (fitting.next(), fitting.next()) {
                    (None, _) => Lookup::Missing,
                    (Some(i), None) => Lookup::Found(i),
                    (Some(_), Some(_)) => Lookup::Ambiguous,
                }
            }
        }
    }
}

/// Parses a JWKS document into its usable keys. Keys that cannot be used
/// here (wrong `use`, symmetric, unknown type, disallowed `alg`, malformed)
/// are skipped, not fatal; a document that is not a key set is an error.
pub(super) fn parse_key_set(body: &[u8], allowed: &[Algorithm]) -> Result<Vec<Key>, String> {
    #[derive(serde::Deserialize)]
    struct RawSet {
        keys: Vec<Value>,
    }
    let raw: RawSet = serde_json::from_slice(body).map_err(|e| format!("not a JWK set: {e}"))?;
    let total = raw.keys.len();
    let keys: Vec<Key> = raw
        .keys
        .into_iter()
        .filter_map(|v| serde_json::from_value::<Jwk>(v).ok())
        .filter_map(|jwk| usable_key(&jwk, allowed))
        .collect();
    if keys.len() < total {
        tracing::debug!(
            skipped = total - keys.len(),
            "JWKS keys skipped (not for signing, symmetric, malformed, or another algorithm)"
        );
    }
    Ok(keys)
}

/// The key, if it is a signing key that can verify one of `allowed`.
pub(super) fn usable_key(jwk: &Jwk, allowed: &[Algorithm]) -> Option<Key> {
    let common = &jwk.common;
    if common
        .public_key_use
        .as_ref()
        .is_some_and(|u| *u != PublicKeyUse::Signature)
    {
        return None;
    }
    if common
        .key_operations
        .as_ref()
        .is_some_and(|ops| !ops.contains(&KeyOperations::Verify))
    {
        return None;
    }
    let alg = match common.key_algorithm {
        None => None,
        Some(a) => Some(Algorithm::try_from(a).ok()?),
    };
    if alg.is_some_and(|a| !allowed.contains(&a)) {
        return None;
    }
    let kind = match &jwk.algorithm {
        AlgorithmParameters::RSA(_) => KeyKind::Rsa,
        AlgorithmParameters::EllipticCurve(p) => match p.curve {
            EllipticCurve::P256 => KeyKind::P256,
            EllipticCurve::P384 => KeyKind::P384,
            _ => return None,
        },
        AlgorithmParameters::OctetKeyPair(p) => match p.curve {
            EllipticCurve::Ed25519 => KeyKind::Ed25519,
            _ => return None,
        },
        // Symmetric (`oct`) keys are never used: an HMAC key published in a
        // key set is not a secret.
        _ => return None,
    };
    let probe_alg = match alg {
        Some(a) if kind.fits(a) => a,
        Some(_) => return None,
        None => *allowed.iter().find(|a| kind.fits(**a))?,
    };
    let key = DecodingKey::from_jwk(jwk).ok()?;
    let sane = match (kind, key.kind()) {
        (KeyKind::Rsa, DecodingKeyKind::RsaModulusExponent { n, e }) => {
            RSA_BITS.contains(&bit_length(n))
                && e.last().is_some_and(|b| b & 1 == 1)
                && (2..=33).contains(&bit_length(e))
        }
        (KeyKind::Rsa, _) => false,
        // The Ed25519 verifier expects exactly 32 bytes.
        (KeyKind::Ed25519, _) => key.try_get_as_bytes().is_ok_and(|b| b.len() == 32),
        (KeyKind::P256 | KeyKind::P384, _) => true,
    };
    // Building a verifier parses EC points and Ed25519 keys; a key that does
    // not parse is dropped here rather than failing every token later.
    if !sane || jsonwebtoken::crypto::verify("", b"", &key, probe_alg).is_err() {
        return None;
    }
    Some(Key {
        kid: common.key_id.clone(),
        alg,
        kind,
        key,
    })
}

/// Bits in a big-endian unsigned integer.
pub(super) fn bit_length(be: &[u8]) -> usize {
    match be.iter().position(|&b| b != 0) {
        None => 0,
        Some(i) => (be.len() - i - 1) * 8 + (8 - be[i].leading_zeros() as usize),
    }
}
