//! The HTTP side of the webhook and Alertmanager notifiers (the `http` feature): their
//! targets, checked when the configuration is, and one post to them over reqwest (TLS by
//! rustls, with the target's own CA file when one is set).

use std::fmt;
use std::path::Path;
use std::time::Duration;

use reqwest::header::{HeaderMap, HeaderName, HeaderValue};
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject as _;
use serde_json::Value;
use stateful_redis_core::{AlertmanagerConfig, ConfigError, Secret, WebhookConfig};

/// Where one notifier posts.
pub(crate) struct Target {
    /// The whole URL posted to (a webhook's may carry a token).
    url: Secret,
    /// Values marked sensitive.
    headers: HeaderMap,
    timeout: Duration,
    retries: u32,
    /// Its own client: its TLS roots are the target's.
    client: reqwest::Client,
    /// The setting a TLS failure points to, such as `alerts.webhook.ca_file`.
    ca_field: &'static str,
}

impl fmt::Debug for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let headers: Vec<&str> = self.headers.keys().map(HeaderName::as_str).collect();
        f.debug_struct("Target")
            .field("url", &self.url)
            .field("headers", &headers)
            .field("timeout", &self.timeout)
            .field("retries", &self.retries)
            .finish()
    }
}

impl Target {
    /// The webhook's target.
    pub(crate) fn webhook(webhook: &WebhookConfig) -> Result<Self, ConfigError> {
        http_or_https("alerts.webhook.url", webhook.url.expose())?;
        let mut headers = HeaderMap::new();
        for (key, secret) in &webhook.headers {
            let name = HeaderName::from_bytes(key.as_bytes())
                .map_err(|_| ConfigError::new("alerts.webhook.headers", key, "not a valid header name"))?;
            let mut value = HeaderValue::from_str(secret.expose()).map_err(|_| {
                ConfigError::new(
                    format!("alerts.webhook.headers.{key}"),
                    "<redacted>",
                    "not a valid header value",
                )
            })?;
            value.set_sensitive(true);
            headers.insert(name, value);
        }
        Ok(Self {
            url: webhook.url.clone(),
            headers,
            timeout: webhook.timeout,
            retries: webhook.retries,
            client: client("alerts.webhook.ca_file", webhook.ca_file.as_deref())?,
            ca_field: "alerts.webhook.ca_file",
        })
    }

    /// The Alertmanager's alerts endpoint (API v2).
    pub(crate) fn alertmanager(alertmanager: &AlertmanagerConfig) -> Result<Self, ConfigError> {
        http_or_https("alerts.alertmanager.url", &alertmanager.url)?;
        let endpoint = format!("{}/api/v2/alerts", alertmanager.url.trim().trim_end_matches('/'));
        Ok(Self {
            url: Secret::new(endpoint),
            headers: HeaderMap::new(),
            timeout: alertmanager.timeout,
            retries: alertmanager.retries,
            client: client("alerts.alertmanager.ca_file", alertmanager.ca_file.as_deref())?,
            ca_field: "alerts.alertmanager.ca_file",
        })
    }

    /// Retries after a failed post.
    pub(crate) fn retries(&self) -> u32 {
        self.retries
    }
}

/// Refuses anything but `http://` and `https://`.
fn http_or_https(field: &str, text: &str) -> Result<(), ConfigError> {
    match url::Url::parse(text) {
        Ok(url) if matches!(url.scheme(), "http" | "https") => Ok(()),
        Ok(url) => Err(ConfigError::new(
            field,
            format!("{}://…", url.scheme()),
            "must be an http:// or https:// URL",
        )),
        Err(_) => Err(ConfigError::new(field, "<redacted>", "not a URL")),
    }
}

/// A client over rustls with the process's default crypto provider (reqwest's own, aws-lc-rs,
/// when the application installed none): trusting only the CA file's certificates when one is
/// given, else the system's roots.
fn client(field: &str, ca_file: Option<&Path>) -> Result<reqwest::Client, ConfigError> {
    let mut builder = reqwest::Client::builder().tls_backend_rustls();
    if let Some(path) = ca_file {
        let pem = read_ca(field, path)?;
        let certs = reqwest::Certificate::from_pem_bundle(&pem)
            .map_err(|e| ConfigError::new(field, path.display(), format!("is not a PEM file of certificates: {e}")))?;
        builder = builder.tls_certs_only(certs);
    }
    builder
        .build()
        .map_err(|e| ConfigError::new(field, "-", format!("cannot build the HTTP client: {e}")))
}

/// The PEM text of a CA file that holds at least one certificate a root store takes; else a
/// config error naming `field` and the path.
fn read_ca(field: &str, path: &Path) -> Result<Vec<u8>, ConfigError> {
    let bad = |reason: String| ConfigError::new(field, path.display(), reason);
    let pem = std::fs::read(path).map_err(|e| bad(format!("cannot read the CA file: {e}")))?;
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| bad(format!("is not a PEM file of certificates: {e}")))?;
    if certs.is_empty() {
        return Err(bad("holds no PEM certificate (-----BEGIN CERTIFICATE-----)".to_owned()));
    }
    let mut roots = rustls::RootCertStore::empty();
    for cert in certs {
        roots
            .add(cert)
            .map_err(|e| bad(format!("holds a certificate that is not a valid CA certificate: {e}")))?;
    }
    Ok(pem)
}

impl Target {
    /// Posts `body` as JSON once; the error never holds the URL.
    pub(crate) async fn post(&self, body: &Value) -> Result<(), String> {
        let sent = self
            .client
            .post(self.url.expose())
            .timeout(self.timeout)
            .headers(self.headers.clone())
            .json(body)
            .send()
            .await;
        match sent {
            Ok(response) if response.status().is_success() => Ok(()),
            Ok(response) => Err(format!("HTTP status {}", response.status())),
            Err(error) => Err(describe(error, self.ca_field)),
        }
    }
}

/// A request error without its URL, which may carry a token; a TLS failure says so, and
/// what to set.
fn describe(error: reqwest::Error, ca_field: &str) -> String {
    if let Some(tls) = tls_error(&error) {
        return match tls {
            // No trusted issuer, or an issuer of that name whose key did not sign it.
            rustls::Error::InvalidCertificate(
                rustls::CertificateError::UnknownIssuer | rustls::CertificateError::BadSignature,
            ) => format!("TLS: certificate not trusted: set {ca_field} to the PEM file of its CA"),
            rustls::Error::InvalidCertificate(
                rustls::CertificateError::NotValidForName | rustls::CertificateError::NotValidForNameContext { .. },
            ) => "TLS: the certificate does not name the URL's host".to_owned(),
            rustls::Error::InvalidCertificate(cause) => format!("TLS: certificate refused: {cause}"),
            rustls::Error::InvalidMessage(_) => {
                "TLS: handshake failed: the server did not answer in TLS (is it serving https?)".to_owned()
            }
            other => format!("TLS: handshake failed: {other}"),
        };
    }
    if error.is_timeout() {
        "timed out".to_owned()
    } else if error.is_connect() {
        "could not connect".to_owned()
    } else {
        error.without_url().to_string()
    }
}

/// The rustls error behind a request error, if any. hyper wraps it in `io::Error`s, whose
/// `source` skips what they wrap: those are opened with `get_ref`.
fn tls_error(error: &reqwest::Error) -> Option<&rustls::Error> {
    let mut next: Option<&(dyn std::error::Error + 'static)> = Some(error);
    while let Some(e) = next {
        if let Some(tls) = e.downcast_ref::<rustls::Error>() {
            return Some(tls);
        }
        next = match e.downcast_ref::<std::io::Error>() {
            Some(io) => io.get_ref().map(|inner| inner as &(dyn std::error::Error + 'static)),
            None => e.source(),
        };
    }
    None
}
