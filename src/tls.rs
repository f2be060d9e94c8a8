//! TLS on the client-facing listener: certificates loaded from PEM, chosen
//! by SNI, swapped on SIGHUP; and the upstream's optional CA bundle.
//!
//! [`CertSet`] is one validated set of certificates (a default and any
//! number of SNI entries); [`CertStore`] is what rustls asks for a
//! certificate during each handshake, and holds the current set behind an
//! `ArcSwap` so that a reload changes the certificate of new handshakes
//! without touching open connections. Loading never prints key material:
//! errors say what is wrong with a file, never what is in it.
//!
//! What is not here: the listener itself (pingora's, built in `server.rs`
//! with TLS 1.2 and 1.3 only), ALPN (`h2` and `http/1.1`, also there), and
//! the upstream's TLS client (pingora's connector; see [`check_ca_bundle`]).

use std::collections::HashMap;
use std::sync::Arc;

use arc_swap::ArcSwap;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::{PemObject, SectionKind};
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert, ResolvesServerCertUsingSni};
use rustls::sign::CertifiedKey;

/// What is wrong with a certificate, key or CA bundle. The messages name
/// no content of the files.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CertError {
    #[error("no CERTIFICATE block in the PEM (use file:PATH to read a file)")]
    NoCertificate,
    #[error("malformed PEM")]
    MalformedPem,
    #[error("malformed PEM")]
    MalformedKeyPem,
    #[error("no private key block in the PEM (PRIVATE KEY, RSA PRIVATE KEY or EC PRIVATE KEY; encrypted keys are not supported)")]
    NoKey,
    #[error("the private key cannot be used (not an RSA, ECDSA or Ed25519 key, or malformed)")]
    UnusableKey,
    #[error("the private key does not match the certificate (the first certificate of the chain must be the server's own)")]
    KeyMismatch,
    #[error("the first certificate is not valid X.509")]
    BadCertificate,
    #[error("\"{0}\" is not a valid DNS name (or *.name)")]
    BadHostName(String),
    #[error("the certificate does not cover \"{0}\"")]
    NameNotCovered(String),
    #[error("holds a {0} block; a CA bundle holds CERTIFICATE blocks only")]
    NotACertificate(&'static str),
    #[error("certificate {0} of the bundle cannot be used as a trust anchor")]
    BadTrustAnchor(usize),
}

impl CertError {
    /// The problem is with the private key (else with the certificate).
    pub fn is_about_key(&self) -> bool {
        matches!(
            self,
            CertError::MalformedKeyPem
                | CertError::NoKey
                | CertError::UnusableKey
                | CertError::KeyMismatch
        )
    }
}

/// The crypto provider pingora's listener and connector use (ring).
fn provider() -> CryptoProvider {
    rustls::crypto::ring::default_provider()
}

/// Parses a PEM certificate chain (server certificate first, then its
/// intermediates) and a PEM private key into a key rustls can serve, after
/// checking that the key belongs to the first certificate.
pub fn certified_key(cert_pem: &[u8], key_pem: &[u8]) -> Result<CertifiedKey, CertError> {
    let chain = CertificateDer::pem_slice_iter(cert_pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|_| CertError::MalformedPem)?;
    if chain.is_empty() {
        return Err(CertError::NoCertificate);
    }
    let key = PrivateKeyDer::from_pem_slice(key_pem).map_err(|e| match e {
        rustls::pki_types::pem::Error::NoItemsFound => CertError::NoKey,
        _ => CertError::MalformedKeyPem,
    })?;
    let provider = provider();
    let signing = provider
        .key_provider
        .load_private_key(key)
        .map_err(|_| CertError::UnusableKey)?;
    let ck = CertifiedKey::new(chain, signing);
    match ck.keys_match() {
        Ok(()) => Ok(ck),
        Err(rustls::Error::InconsistentKeys(rustls::InconsistentKeys::KeyMismatch)) => {
            Err(CertError::KeyMismatch)
        }
        // The ring keys always know their public key; "unknown" cannot
        // happen with them, and would not be a reason to refuse.
        Err(rustls::Error::InconsistentKeys(rustls::InconsistentKeys::Unknown)) => Ok(ck),
        Err(_) => Err(CertError::BadCertificate),
    }
}

/// A host name of an SNI entry: `chat.acme.example` (exact) or
/// `*.acme.example` (any one label in front of `acme.example`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HostName {
    Exact(String),
    Wildcard(String),
}

impl HostName {
    /// Parses and lowercases a configured host name.
    pub fn parse(s: &str) -> Result<HostName, CertError> {
        let lower = s.to_ascii_lowercase();
        let (wildcard, name) = match lower.strip_prefix("*.") {
            Some(rest) => (true, rest.to_string()),
            None => (false, lower),
        };
        let valid = rustls::pki_types::DnsName::try_from(name.as_str()).is_ok()
            && name.parse::<std::net::IpAddr>().is_err()
            && !name.contains('*');
        if !valid {
            return Err(CertError::BadHostName(s.to_string()));
        }
        Ok(if wildcard {
            HostName::Wildcard(name)
        } else {
            HostName::Exact(name)
        })
    }

    /// A name this entry must serve, to check the certificate against: the
    /// name itself, or for `*.x` a name of the form `<label>.x` (a
    /// certificate for `*.x` covers it; one for a few names under `x` does
    /// not, and would fail handshakes for the others).
    fn probe(&self) -> String {
        match self {
            HostName::Exact(n) => n.clone(),
            HostName::Wildcard(n) => format!("sni-probe.{n}"),
        }
    }
}

/// Checks that `ck`'s certificate is valid for `host` (the server catching
/// its own misconfiguration; clients check again).
pub fn check_covers(ck: &CertifiedKey, host: &HostName) -> Result<(), CertError> {
    let mut probe = ResolvesServerCertUsingSni::new();
    probe
        .add(&host.probe(), ck.clone())
        .map_err(|_| match host {
            HostName::Exact(n) => CertError::NameNotCovered(n.clone()),
            HostName::Wildcard(n) => CertError::NameNotCovered(format!("*.{n}")),
        })
}

/// One validated set of listener certificates.
#[derive(Debug, Clone)]
pub struct CertSet {
    default: Arc<CertifiedKey>,
    exact: HashMap<String, Arc<CertifiedKey>>,
    wildcard: HashMap<String, Arc<CertifiedKey>>,
    entries: usize,
}

impl CertSet {
    /// A set with only the default certificate (served for every name).
    pub fn new(default: CertifiedKey) -> CertSet {
        CertSet {
            default: Arc::new(default),
            exact: HashMap::new(),
            wildcard: HashMap::new(),
            entries: 1,
        }
    }

    /// Serves `ck` for each of `hosts`. Returns the hosts that an earlier
    /// entry already claimed (the first entry keeps them).
    pub fn add(&mut self, hosts: &[HostName], ck: CertifiedKey) -> Vec<HostName> {
        let ck = Arc::new(ck);
        let mut taken = Vec::new();
        for h in hosts {
            let (map, name) = match h {
                HostName::Exact(n) => (&mut self.exact, n),
                HostName::Wildcard(n) => (&mut self.wildcard, n),
            };
            if map.contains_key(name) {
                taken.push(h.clone());
            } else {
                map.insert(name.clone(), Arc::clone(&ck));
            }
        }
        self.entries += 1;
        taken
    }

    /// Certificates in the set (the default and one per SNI entry).
    pub fn count(&self) -> usize {
        self.entries
    }

    /// The certificate for a handshake: an exact name, else a wildcard one
    /// label up, else the default (no SNI, unknown names, IP addresses).
    pub fn select(&self, server_name: Option<&str>) -> Arc<CertifiedKey> {
        let Some(name) = server_name else {
            return Arc::clone(&self.default);
        };
        // rustls hands over SNI names lowercased already; lowercase anyway
        // (without allocating in the usual case).
        let lower;
        let name = if name.bytes().any(|b| b.is_ascii_uppercase()) {
            lower = name.to_ascii_lowercase();
            lower.as_str()
        } else {
            name
        };
        let name = name.strip_suffix('.').unwrap_or(name);
        if let Some(ck) = self.exact.get(name) {
            return Arc::clone(ck);
        }
        if let Some((_, parent)) = name.split_once('.') {
            if let Some(ck) = self.wildcard.get(parent) {
                return Arc::clone(ck);
            }
        }
        Arc::clone(&self.default)
    }
}

/// The listener's certificate resolver: the current [`CertSet`], replaced
/// whole on reload. Handshakes in progress keep the set they started with.
#[derive(Debug)]
pub struct CertStore(ArcSwap<CertSet>);

impl CertStore {
    pub fn new(set: CertSet) -> CertStore {
        CertStore(ArcSwap::from_pointee(set))
    }

    /// Serves `set` to every handshake from now on.
    pub fn replace(&self, set: CertSet) {
        self.0.store(Arc::new(set));
    }
}

impl ResolvesServerCert for CertStore {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.0.load().select(hello.server_name()))
    }
}

/// Checks a PEM CA bundle the way the upstream connector will load it
/// (pingora refuses a bundle holding anything but certificates, and panics
/// on one it cannot load, so everything is checked here first): only
/// CERTIFICATE blocks, at least one, each usable as a trust anchor.
/// Returns how many certificates it holds.
pub fn check_ca_bundle(pem: &[u8]) -> Result<usize, CertError> {
    let mut store = rustls::RootCertStore::empty();
    let mut rest: &[u8] = pem;
    let mut n = 0;
    loop {
        match rustls::pki_types::pem::from_buf(&mut rest) {
            Ok(Some((SectionKind::Certificate, der))) => {
                n += 1;
                store
                    .add(CertificateDer::from(der))
                    .map_err(|_| CertError::BadTrustAnchor(n))?;
            }
            Ok(Some((kind, _))) => return Err(CertError::NotACertificate(kind_name(kind))),
            Ok(None) => break,
            Err(_) => return Err(CertError::MalformedPem),
        }
    }
    if n == 0 {
        return Err(CertError::NoCertificate);
    }
    Ok(n)
}

fn kind_name(kind: SectionKind) -> &'static str {
    match kind {
        SectionKind::Certificate => "CERTIFICATE",
        SectionKind::PublicKey => "PUBLIC KEY",
        SectionKind::RsaPrivateKey | SectionKind::PrivateKey | SectionKind::EcPrivateKey => {
            "private key"
        }
        SectionKind::Crl => "X509 CRL",
        SectionKind::Csr => "CERTIFICATE REQUEST",
        _ => "non-certificate",
    }
}

#[cfg(test)]
mod tests;
