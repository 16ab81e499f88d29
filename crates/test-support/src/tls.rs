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
