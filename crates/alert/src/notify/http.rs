//! The HTTP side of the webhook and Alertmanager notifiers (the `http` feature): their
//! targets, checked when the configuration is, and one post to them over reqwest.

use std::fmt;
use std::time::Duration;

use reqwest::header::{HeaderMap, HeaderName, HeaderValue};
use serde_json::Value;
use stateful_redis_core::{AlertmanagerConfig, ConfigError, Error, Secret, WebhookConfig};

/// Where one notifier posts.
pub(crate) struct Target {
    /// The whole URL posted to (a webhook's may carry a token).
    url: Secret,
    /// Values marked sensitive.
    headers: HeaderMap,
    timeout: Duration,
    retries: u32,
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
        plain_http("alerts.webhook.url", webhook.url.expose())?;
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
        })
    }

    /// The Alertmanager's alerts endpoint (API v2).
    pub(crate) fn alertmanager(alertmanager: &AlertmanagerConfig) -> Result<Self, ConfigError> {
        plain_http("alerts.alertmanager.url", &alertmanager.url)?;
        let endpoint = format!("{}/api/v2/alerts", alertmanager.url.trim().trim_end_matches('/'));
        Ok(Self {
            url: Secret::new(endpoint),
            headers: HeaderMap::new(),
            timeout: alertmanager.timeout,
            retries: alertmanager.retries,
        })
    }

    /// Retries after a failed post.
    pub(crate) fn retries(&self) -> u32 {
        self.retries
    }
}

/// Refuses `https://` (and anything but `http://`): this build has no TLS.
fn plain_http(field: &str, text: &str) -> Result<(), ConfigError> {
    match url::Url::parse(text) {
        Ok(url) if url.scheme() == "http" => Ok(()),
        Ok(url) => Err(ConfigError::new(
            field,
            format!("{}://…", url.scheme()),
            "only http:// URLs are supported for now (no TLS in this build)",
        )),
        Err(_) => Err(ConfigError::new(field, "<redacted>", "not a URL")),
    }
}

/// The HTTP client every notifier posts with.
#[derive(Debug)]
pub(crate) struct Client(reqwest::Client);

impl Client {
    pub(crate) fn new() -> Result<Self, Error> {
        let client = reqwest::Client::builder().build().map_err(|e| Error::Connection {
            message: format!("cannot build the HTTP client: {}", e.without_url()),
            source: None,
        })?;
        Ok(Self(client))
    }

    /// Posts `body` as JSON once; the error never holds the URL.
    pub(crate) async fn post(&self, target: &Target, body: &Value) -> Result<(), String> {
        let sent = self
            .0
            .post(target.url.expose())
            .timeout(target.timeout)
            .headers(target.headers.clone())
            .json(body)
            .send()
            .await;
        match sent {
            Ok(response) if response.status().is_success() => Ok(()),
            Ok(response) => Err(format!("HTTP status {}", response.status())),
            Err(error) => Err(describe(error)),
        }
    }
}

/// A request error without its URL, which may carry a token.
fn describe(error: reqwest::Error) -> String {
    if error.is_timeout() {
        "timed out".to_owned()
    } else if error.is_connect() {
        "could not connect".to_owned()
    } else {
        error.without_url().to_string()
    }
}
