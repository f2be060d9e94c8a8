use super::*;
use rcgen::{CertificateParams, KeyPair};

/// A self-signed certificate for `names` (PEM) and its key (PEM).
fn self_signed(names: &[&str]) -> (String, String) {
    let key = KeyPair::generate().unwrap();
    let params =
        CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>()).unwrap();
    let cert = params.self_signed(&key).unwrap();
    (cert.pem(), key.serialize_pem())
}

fn ck(names: &[&str]) -> CertifiedKey {
    let (c, k) = self_signed(names);
    certified_key(c.as_bytes(), k.as_bytes()).unwrap()
}

fn first_cert(ck: &CertifiedKey) -> Vec<u8> {
    ck.end_entity_cert().unwrap().to_vec()
}

#[test]
fn a_matching_pair_loads() {
    let (c, k) = self_signed(&["chat.acme.example"]);
    let ck = certified_key(c.as_bytes(), k.as_bytes()).unwrap();
    assert_eq!(ck.cert.len(), 1);
}

#[test]
fn bad_pairs_are_refused_with_a_reason() {
    let (c1, _) = self_signed(&["a.example"]);
    let (_, k2) = self_signed(&["b.example"]);
    assert_eq!(
        certified_key(c1.as_bytes(), k2.as_bytes()).err(),
        Some(CertError::KeyMismatch)
    );
    assert_eq!(
        certified_key(b"not pem at all", k2.as_bytes()).err(),
        Some(CertError::NoCertificate)
    );
    // The key file given as the certificate, and the other way round.
    assert_eq!(
        certified_key(k2.as_bytes(), k2.as_bytes()).err(),
        Some(CertError::NoCertificate)
    );
    assert_eq!(
        certified_key(c1.as_bytes(), c1.as_bytes()).err(),
        Some(CertError::NoKey)
    );
    let broken = c1.replace("-----END CERTIFICATE-----", "");
    assert_eq!(
        certified_key(broken.as_bytes(), k2.as_bytes()).err(),
        Some(CertError::MalformedPem)
    );
    let garbage_key = "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n";
    assert_eq!(
        certified_key(c1.as_bytes(), garbage_key.as_bytes()).err(),
        Some(CertError::UnusableKey)
    );
}

#[test]
fn error_messages_hold_no_key_material() {
    let (c, k) = self_signed(&["a.example"]);
    let (_, other) = self_signed(&["b.example"]);
    for e in [
        certified_key(c.as_bytes(), other.as_bytes()).unwrap_err(),
        certified_key(k.as_bytes(), k.as_bytes()).unwrap_err(),
    ] {
        let msg = e.to_string();
        for line in k
            .lines()
            .chain(other.lines())
            .filter(|l| !l.starts_with("-----"))
        {
            assert!(!msg.contains(line), "{msg}");
        }
    }
}

#[test]
fn host_names_parse() {
    assert_eq!(
        HostName::parse("Chat.Acme.Example"),
        Ok(HostName::Exact("chat.acme.example".into()))
    );
    assert_eq!(
        HostName::parse("*.acme.example"),
        Ok(HostName::Wildcard("acme.example".into()))
    );
    for bad in [
        "",
        "*",
        "a.*.example",
        "127.0.0.1",
        "bad name",
        "*.*.example",
    ] {
        assert!(HostName::parse(bad).is_err(), "{bad}");
    }
}

#[test]
fn sni_selects_exact_then_wildcard_then_default() {
    let default = ck(&["default.example"]);
    let acme = ck(&["chat.acme.example"]);
    let wild = ck(&["*.globex.example"]);
    let (d, a, w) = (first_cert(&default), first_cert(&acme), first_cert(&wild));
    let mut set = CertSet::new(default);
    assert!(set
        .add(&[HostName::parse("chat.acme.example").unwrap()], acme)
        .is_empty());
    assert!(set
        .add(&[HostName::parse("*.globex.example").unwrap()], wild)
        .is_empty());
    assert_eq!(set.count(), 3);
    let pick = |n: Option<&str>| first_cert(&set.select(n));
    assert_eq!(pick(Some("chat.acme.example")), a);
    assert_eq!(pick(Some("CHAT.acme.example")), a);
    assert_eq!(pick(Some("chat.acme.example.")), a);
    assert_eq!(pick(Some("eu.globex.example")), w);
    // A wildcard covers one label only, and not the bare parent.
    assert_eq!(pick(Some("a.eu.globex.example")), d);
    assert_eq!(pick(Some("globex.example")), d);
    assert_eq!(pick(Some("unknown.example")), d);
    assert_eq!(pick(None), d);
}

#[test]
fn a_host_claimed_twice_is_reported() {
    let mut set = CertSet::new(ck(&["d.example"]));
    let h = HostName::parse("a.example").unwrap();
    assert!(set
        .add(std::slice::from_ref(&h), ck(&["a.example"]))
        .is_empty());
    assert_eq!(
        set.add(std::slice::from_ref(&h), ck(&["a.example"])),
        vec![h]
    );
}

#[test]
fn coverage_is_checked_against_the_certificate() {
    let c = ck(&["chat.acme.example", "*.globex.example"]);
    for ok in ["chat.acme.example", "*.globex.example", "eu.globex.example"] {
        assert_eq!(
            check_covers(&c, &HostName::parse(ok).unwrap()),
            Ok(()),
            "{ok}"
        );
    }
    assert_eq!(
        check_covers(&c, &HostName::parse("other.example").unwrap()),
        Err(CertError::NameNotCovered("other.example".into()))
    );
    // A certificate for a few names under acme.example does not cover *.acme.example.
    assert_eq!(
        check_covers(&c, &HostName::parse("*.acme.example").unwrap()),
        Err(CertError::NameNotCovered("*.acme.example".into()))
    );
}

#[test]
fn ca_bundles_hold_certificates_only() {
    let (c1, k1) = self_signed(&["ca1.example"]);
    let (c2, _) = self_signed(&["ca2.example"]);
    assert_eq!(check_ca_bundle(format!("{c1}{c2}").as_bytes()), Ok(2));
    assert_eq!(
        check_ca_bundle(format!("{c1}{k1}").as_bytes()),
        Err(CertError::NotACertificate("private key"))
    );
    assert_eq!(check_ca_bundle(b""), Err(CertError::NoCertificate));
    let junk = "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n";
    assert_eq!(
        check_ca_bundle(junk.as_bytes()),
        Err(CertError::BadTrustAnchor(1))
    );
}
