//! `[server.tls]`, `server.h2c` and `upstream.ca`: certificate files read,
//! parsed and checked (key matches certificate, SNI names covered) at load,
//! so that `check`, start-up and a SIGHUP reload all refuse a broken file
//! with one line per problem. Lines name keys and files, never their
//! contents.

use std::path::Path;

use super::Problems;
use crate::config::file::{SniSection, TlsSection};
use crate::config::secret::resolve;
use crate::config::ListenerTls;
use crate::tls::{self, CertSet, HostName};

/// Loads one certificate/key pair; problems are reported under `at.cert`
/// or `at.key`.
fn pair(
    at: &str,
    cert: &str,
    key: &str,
    base_dir: &Path,
    p: &mut Problems,
) -> Option<rustls::sign::CertifiedKey> {
    let cert_pem = resolve(cert, base_dir).map_err(|e| p.add(format!("{at}.cert: {e}")));
    let key_pem = resolve(key, base_dir).map_err(|e| p.add(format!("{at}.key: {e}")));
    let (cert_pem, key_pem) = (cert_pem.ok()?, key_pem.ok()?);
    match tls::certified_key(cert_pem.expose(), key_pem.expose()) {
        Ok(ck) => Some(ck),
        Err(e) if e.is_about_key() => {
            p.add(format!("{at}.key: {e}"));
            None
        }
        Err(e) => {
            p.add(format!("{at}.cert: {e}"));
            None
        }
    }
}

fn sni_entry(
    i: usize,
    s: &SniSection,
    base_dir: &Path,
    p: &mut Problems,
) -> Option<(Vec<HostName>, rustls::sign::CertifiedKey)> {
    let at = format!("server.tls.sni[{i}]");
    let names = s.hosts.clone().into_vec();
    if names.is_empty() {
        p.add(format!("{at}.hosts: list at least one host name"));
    }
    let mut hosts = Vec::new();
    for n in &names {
        match HostName::parse(n) {
            Ok(h) => hosts.push(h),
            Err(e) => p.add(format!("{at}.hosts: {e}")),
        }
    }
    let ck = pair(&at, &s.cert, &s.key, base_dir, p)?;
    for h in &hosts {
        if let Err(e) = tls::check_covers(&ck, h) {
            p.add(format!("{at}.cert: {e}"));
        }
    }
    Some((hosts, ck))
}

/// `[server.tls]` into the listener's certificates.
pub(super) fn listener(
    t: &TlsSection,
    h2c: bool,
    base_dir: &Path,
    p: &mut Problems,
) -> Option<ListenerTls> {
    if h2c {
        p.add("server.h2c: only for a plain listener; with [server.tls], HTTP/2 is chosen by ALPN (server.tls.h2)");
    }
    let default = pair("server.tls", &t.cert, &t.key, base_dir, p);
    let entries: Vec<_> = t
        .sni
        .iter()
        .enumerate()
        .map(|(i, s)| sni_entry(i, s, base_dir, p))
        .collect();
    let mut certs = CertSet::new(default?);
    for (i, e) in entries.into_iter().enumerate() {
        let (hosts, ck) = e?;
        for h in certs.add(&hosts, ck) {
            let name = match h {
                HostName::Exact(n) => n,
                HostName::Wildcard(n) => format!("*.{n}"),
            };
            p.add(format!(
                "server.tls.sni[{i}].hosts: \"{name}\" is listed by an earlier entry"
            ));
        }
    }
    Some(ListenerTls {
        certs,
        h2: t.h2.unwrap_or(true),
    })
}

/// `upstream.ca` into the absolute path of a checked CA bundle.
pub(super) fn upstream_ca(
    reference: &str,
    https: bool,
    base_dir: &Path,
    p: &mut Problems,
) -> Option<String> {
    if !https {
        p.add("upstream.ca: only for an https:// upstream");
    }
    let Some(path) = reference.strip_prefix("file:") else {
        p.add("upstream.ca: must be file:PATH (a PEM bundle of CA certificates)");
        return None;
    };
    let full = base_dir.join(path);
    // pingora's connector reads the file by path when it starts.
    let full = std::path::absolute(&full).unwrap_or(full);
    let pem = std::fs::read(&full)
        .map_err(|e| {
            p.add(format!(
                "upstream.ca: cannot read file {}: {e}",
                full.display()
            ))
        })
        .ok()?;
    if let Err(e) = tls::check_ca_bundle(&pem) {
        p.add(format!("upstream.ca: {}: {e}", full.display()));
        return None;
    }
    match full.to_str() {
        Some(s) => Some(s.to_string()),
        None => {
            p.add("upstream.ca: the path is not UTF-8");
            None
        }
    }
}
