//! The webhook and Alertmanager notifiers of a build without the `http` feature: none. A
//! configuration that names one is refused, and their targets cannot exist.

use serde_json::Value;
use stateful_redis_core::{AlertmanagerConfig, ConfigError, WebhookConfig};

/// No target can be built without the `http` feature.
#[derive(Debug)]
pub(crate) enum Target {}

impl Target {
    pub(crate) fn webhook(_: &WebhookConfig) -> Result<Self, ConfigError> {
        Err(without_http("alerts.webhook"))
    }

    pub(crate) fn alertmanager(_: &AlertmanagerConfig) -> Result<Self, ConfigError> {
        Err(without_http("alerts.alertmanager"))
    }

    pub(crate) fn retries(&self) -> u32 {
        match *self {}
    }

    pub(crate) async fn post(&self, _: &Value) -> Result<(), String> {
        match *self {}
    }
}

fn without_http(field: &str) -> ConfigError {
    ConfigError::new(
        field,
        "<redacted>",
        "stateful-redis-alert was built without the `http` feature (`alert-http` of \
         stateful-redis): only the log notifier is available",
    )
}
