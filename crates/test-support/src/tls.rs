//! A throwaway certificate authority and a server certificate it signed, for TLS test servers.

use std::fs;
use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, Certificate, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair, KeyUsagePurpose,
};

/// The certificate files of one TLS server, written into its temporary directory.
#[derive(Debug)]
pub(crate) struct TlsFiles {
    /// PEM of the CA certificate, for the root store of clients.
    pub(crate) ca_cert_pem: Vec<u8>,
    /// Where `ca_cert_pem` is written (`tls-ca-cert-file`, and `--cacert` for redis-cli).
    pub(crate) ca_cert_path: PathBuf,
    /// The server certificate (`tls-cert-file`).
    pub(crate) cert_path: PathBuf,
    /// The server's private key, PKCS#8 PEM (`tls-key-file`).
    pub(crate) key_path: PathBuf,
}

/// Generates a fresh CA and a server certificate for `127.0.0.1` and `localhost` signed by it, and
/// writes them into `dir`.
pub(crate) fn write_files(dir: &Path) -> TlsFiles {
    let (ca, ca_key) = new_ca();
    let (server, server_key) = new_server_cert(&ca, &ca_key);

    let files = TlsFiles {
        ca_cert_pem: ca.pem().into_bytes(),
        ca_cert_path: dir.join("ca.crt"),
        cert_path: dir.join("server.crt"),
        key_path: dir.join("server.key"),
    };
    write(&files.ca_cert_path, &files.ca_cert_pem);
    write(&files.cert_path, server.pem().as_bytes());
    write(&files.key_path, server_key.serialize_pem().as_bytes());
    files
}

fn new_ca() -> (Certificate, KeyPair) {
    let mut params = CertificateParams::default();
    // The default validity (1975 to 4096) is fine for a CA that lives as long as one test.
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params
        .distinguished_name
        .push(DnType::CommonName, "stateful-redis test CA");
    params.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
    ];
    let key = KeyPair::generate().expect("generate the test CA key");
    let cert = params.self_signed(&key).expect("self-sign the test CA certificate");
    (cert, key)
}

fn new_server_cert(ca: &Certificate, ca_key: &KeyPair) -> (Certificate, KeyPair) {
    // `CertificateParams::new` turns "127.0.0.1" into an IP address SAN and "localhost" into a DNS SAN.
    let mut params = CertificateParams::new(vec!["127.0.0.1".to_owned(), "localhost".to_owned()])
        .expect("valid subject alternative names");
    // A subject distinct from the CA's, or OpenSSL may take the leaf for self-issued.
    params
        .distinguished_name
        .push(DnType::CommonName, "stateful-redis test server");
    params.use_authority_key_identifier_extension = true;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    let key = KeyPair::generate().expect("generate the test server key");
    let cert = params
        .signed_by(&key, ca, ca_key)
        .expect("sign the test server certificate with the test CA");
    (cert, key)
}

fn write(path: &Path, contents: &[u8]) {
    fs::write(path, contents).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
}

/// A throwaway CA and a server certificate for `127.0.0.1` and `localhost` that it signed,
/// written into a temporary directory of their own (removed on drop): for TLS test servers
/// (OTLP receivers, webhooks, an Alertmanager) and the clients that must trust them.
#[derive(Debug)]
pub struct TestCa {
    dir: PathBuf,
    files: TlsFiles,
}

impl TestCa {
    /// Generates a fresh CA and server certificate. Installs ring as the process's rustls
    /// provider, as an application with TLS servers of its own does: the build has two
    /// providers (ring, and reqwest's aws-lc-rs), so rustls cannot pick one by itself.
    pub fn new() -> TestCa {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let dir = crate::create_temp_dir();
        let files = write_files(&dir);
        TestCa { dir, files }
    }

    /// The CA certificate's PEM file: what a client is told to trust.
    pub fn ca_path(&self) -> &Path {
        &self.files.ca_cert_path
    }

    /// The CA certificate, PEM.
    pub fn ca_pem(&self) -> &[u8] {
        &self.files.ca_cert_pem
    }

    /// The server certificate's PEM file.
    pub fn cert_path(&self) -> &Path {
        &self.files.cert_path
    }

    /// The server's private key, a PKCS#8 PEM file.
    pub fn key_path(&self) -> &Path {
        &self.files.key_path
    }

    /// The server certificate, PEM.
    pub fn cert_pem(&self) -> Vec<u8> {
        read(&self.files.cert_path)
    }

    /// The server's private key, PEM.
    pub fn key_pem(&self) -> Vec<u8> {
        read(&self.files.key_path)
    }

    /// A rustls client configuration (ring) that trusts this CA only.
    pub fn client_config(&self) -> std::sync::Arc<rustls::ClientConfig> {
        use rustls::pki_types::CertificateDer;
        use rustls::pki_types::pem::PemObject as _;
        let mut roots = rustls::RootCertStore::empty();
        for cert in CertificateDer::pem_slice_iter(self.ca_pem()) {
            roots
                .add(cert.expect("the test CA is PEM"))
                .expect("the test CA is a valid root");
        }
        let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("TLS 1.2 and 1.3 with ring")
            .with_root_certificates(roots)
            .with_no_client_auth();
        std::sync::Arc::new(config)
    }

    /// A rustls server configuration (ring) with the server certificate and key, offering
    /// `alpn` (such as `h2` for gRPC; empty for none).
    pub fn server_config(&self, alpn: &[&[u8]]) -> std::sync::Arc<rustls::ServerConfig> {
        use rustls::pki_types::pem::PemObject as _;
        use rustls::pki_types::{CertificateDer, PrivateKeyDer};
        let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&self.cert_pem())
            .collect::<Result<_, _>>()
            .expect("the test server certificate is PEM");
        let key = PrivateKeyDer::from_pem_slice(&self.key_pem()).expect("the test server key is PEM");
        let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
        let mut config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("TLS 1.2 and 1.3 with ring")
            .with_no_client_auth()
            .with_single_cert(certs, key)
            .expect("the test server certificate and key match");
        config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        std::sync::Arc::new(config)
    }
}

impl Default for TestCa {
    fn default() -> Self {
        TestCa::new()
    }
}

impl Drop for TestCa {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.dir);
    }
}

fn read(path: &Path) -> Vec<u8> {
    fs::read(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
}
