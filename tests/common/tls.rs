//! TLS helpers for tests: a throwaway CA that issues leaf certificates at run
//! time (rcgen), PEM files for the gateway's config, HTTPS clients that
//! trust the CA, and a raw handshake that reports which certificate the
//! server chose and which ALPN protocol it picked.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose};
use tokio_rustls::rustls::client::danger::{
    HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier,
};
use tokio_rustls::rustls::pki_types::{
    CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName, UnixTime,
};
use tokio_rustls::rustls::{self, ClientConfig, DigitallySignedStruct, SignatureScheme};

/// A CA generated for one test, its certificate written as PEM to a temp dir
/// (where the leaf files of [`TestCa::write_leaf`] go too).
pub struct TestCa {
    issuer: Issuer<'static, KeyPair>,
    pem: String,
    pem_path: PathBuf,
    dir: tempfile::TempDir,
}

/// A leaf certificate: its DER (to compare with what a server sent), PEM
/// and private key PEM.
pub struct Leaf {
    pub der: Vec<u8>,
    pub cert_pem: String,
    pub key_pem: String,
    key_der: Vec<u8>,
}

impl Leaf {
    /// (chain, key) for a rustls server.
    pub fn rustls_pair(&self) -> (Vec<CertificateDer<'static>>, PrivateKeyDer<'static>) {
        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(self.key_der.clone()));
        (vec![CertificateDer::from(self.der.clone())], key)
    }
}

impl TestCa {
    pub fn new() -> TestCa {
        let key = KeyPair::generate().expect("generate CA key");
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        // A name of its own: two CAs of one test must not look like each
        // other's issuer.
        static N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        params.distinguished_name.push(
            DnType::CommonName,
            format!("stream-gateway test CA {} {n}", std::process::id()),
        );
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let cert = params.self_signed(&key).expect("self-sign CA");
        let dir = tempfile::Builder::new()
            .prefix("stream-gateway-tls-")
            .tempdir()
            .expect("create temp dir");
        let pem_path = dir.path().join("ca.pem");
        std::fs::write(&pem_path, cert.pem()).expect("write ca.pem");
        TestCa {
            issuer: Issuer::new(params, key),
            pem: cert.pem(),
            pem_path,
            dir,
        }
    }

    /// The CA certificate's PEM file (for `SSL_CERT_FILE` or `upstream.ca`).
    pub fn pem_path(&self) -> &str {
        path_str(&self.pem_path)
    }

    /// The CA certificate (PEM).
    pub fn pem(&self) -> &str {
        &self.pem
    }

    /// The temp dir the CA and leaf files live in.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// A leaf for `sans` (IP literals become IP SANs, the rest DNS SANs),
    /// valid from 1975 to 4096 (rcgen's default) unless `validity` says
    /// otherwise.
    pub fn issue(&self, sans: &[&str], validity: Option<(i32, i32)>) -> Leaf {
        let key = KeyPair::generate().expect("generate leaf key");
        let mut params =
            CertificateParams::new(sans.iter().map(|s| s.to_string()).collect::<Vec<_>>())
                .expect("leaf params");
        params
            .distinguished_name
            .push(DnType::CommonName, sans.first().copied().unwrap_or("leaf"));
        if let Some((from, to)) = validity {
            params.not_before = rcgen::date_time_ymd(from, 1, 1);
            params.not_after = rcgen::date_time_ymd(to, 1, 1);
        }
        let cert = params
            .signed_by(&key, &self.issuer)
            .expect("sign leaf certificate");
        Leaf {
            der: cert.der().to_vec(),
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
            key_der: key.serialize_der(),
        }
    }

    /// A leaf whose only SAN is `san`: (chain, private key) for a rustls server.
    pub fn leaf(&self, san: &str) -> (Vec<CertificateDer<'static>>, PrivateKeyDer<'static>) {
        self.issue(&[san], None).rustls_pair()
    }

    /// Writes `leaf` as `<stem>.pem` (certificate) and `<stem>.key` in the
    /// CA's temp dir (replacing earlier files); returns both paths.
    pub fn write_leaf(&self, stem: &str, leaf: &Leaf) -> (String, String) {
        let cert = self.dir.path().join(format!("{stem}.pem"));
        let key = self.dir.path().join(format!("{stem}.key"));
        std::fs::write(&cert, &leaf.cert_pem).expect("write leaf certificate");
        std::fs::write(&key, &leaf.key_pem).expect("write leaf key");
        (path_str(&cert).to_string(), path_str(&key).to_string())
    }

    /// A reqwest client trusting only this CA. `h1_only`: offers only
    /// `http/1.1` in ALPN; otherwise `h2` and `http/1.1` (ALPN decides).
    /// `resolve` pins host names to an address (for SNI tests).
    pub fn https_client(&self, h1_only: bool, resolve: &[(&str, SocketAddr)]) -> reqwest::Client {
        let mut b = reqwest::Client::builder()
            .no_proxy()
            .use_rustls_tls()
            .tls_built_in_root_certs(false)
            .add_root_certificate(
                reqwest::Certificate::from_pem(self.pem.as_bytes()).expect("CA certificate"),
            )
            .timeout(Duration::from_secs(10));
        if h1_only {
            b = b.http1_only();
        }
        for (name, addr) in resolve {
            b = b.resolve(name, *addr);
        }
        b.build().expect("build HTTPS client")
    }

    /// A rustls client config trusting only this CA, offering `alpn`.
    pub fn client_config(&self, alpn: &[&str]) -> Arc<ClientConfig> {
        let mut roots = rustls::RootCertStore::empty();
        for c in rustls_pemfile_certs(&self.pem) {
            roots.add(c).expect("add CA root");
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut config = ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("TLS versions")
            .with_root_certificates(roots)
            .with_no_client_auth();
        config.alpn_protocols = alpn.iter().map(|p| p.as_bytes().to_vec()).collect();
        Arc::new(config)
    }
}

fn rustls_pemfile_certs(pem: &str) -> Vec<CertificateDer<'static>> {
    use rustls::pki_types::pem::PemObject;
    CertificateDer::pem_slice_iter(pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .expect("parse PEM certificates")
}

fn path_str(p: &Path) -> &str {
    p.to_str().expect("temp path is UTF-8")
}

/// What a handshake with the gateway showed.
#[derive(Debug)]
pub struct Served {
    /// DER of the certificate the server sent first (its own).
    pub cert: Vec<u8>,
    /// The ALPN protocol the server picked, if any.
    pub alpn: Option<String>,
    /// "TLSv1_3" or "TLSv1_2".
    pub version: String,
}

/// Accepts any certificate and remembers the server's (SNI tests only:
/// an unknown name gets the default certificate, which does not cover it).
#[derive(Debug)]
struct Recorder {
    seen: Mutex<Option<Vec<u8>>>,
    provider: Arc<rustls::crypto::CryptoProvider>,
}

impl ServerCertVerifier for Recorder {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        *self.seen.lock().unwrap() = Some(end_entity.to_vec());
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// Handshakes with `addr` sending `sni` (`None`: no SNI, as for an IP
/// address) and offering `alpn`; returns what the server chose. Any
/// certificate is accepted: this looks at the choice, not at trust.
pub async fn handshake(
    addr: SocketAddr,
    sni: Option<&str>,
    alpn: &[&str],
    versions: &[&'static rustls::SupportedProtocolVersion],
) -> Result<Served, String> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let recorder = Arc::new(Recorder {
        seen: Mutex::new(None),
        provider: Arc::clone(&provider),
    });
    let mut config = ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(versions)
        .map_err(|e| e.to_string())?
        .dangerous()
        .with_custom_certificate_verifier(recorder.clone())
        .with_no_client_auth();
    config.alpn_protocols = alpn.iter().map(|p| p.as_bytes().to_vec()).collect();
    let name = match sni {
        Some(n) => ServerName::try_from(n.to_string()).map_err(|e| e.to_string())?,
        None => ServerName::IpAddress(addr.ip().into()),
    };
    let tcp = tokio::net::TcpStream::connect(addr)
        .await
        .map_err(|e| e.to_string())?;
    let tls = tokio::time::timeout(
        Duration::from_secs(10),
        tokio_rustls::TlsConnector::from(Arc::new(config)).connect(name, tcp),
    )
    .await
    .map_err(|_| "handshake timed out".to_string())?
    .map_err(|e| e.to_string())?;
    let (_, conn) = tls.get_ref();
    let alpn = conn
        .alpn_protocol()
        .map(|p| String::from_utf8_lossy(p).into_owned());
    let version = conn
        .protocol_version()
        .map(|v| format!("{v:?}"))
        .unwrap_or_default();
    let cert = recorder
        .seen
        .lock()
        .unwrap()
        .clone()
        .ok_or("no certificate seen")?;
    Ok(Served {
        cert,
        alpn,
        version,
    })
}

/// The server's certificate for `sni` over TLS 1.3 with ALPN `h2` and
/// `http/1.1` (panics if the handshake fails).
pub async fn served_cert(addr: SocketAddr, sni: Option<&str>) -> Vec<u8> {
    handshake(addr, sni, &["h2", "http/1.1"], &[&rustls::version::TLS13])
        .await
        .unwrap_or_else(|e| panic!("TLS handshake with {addr} (SNI {sni:?}) failed: {e}"))
        .cert
}
