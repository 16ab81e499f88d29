//! Opening connections: the client (URL, TLS roots, timeouts) and the hooks run on every new connection.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use redis::aio::MultiplexedConnection;
use redis::{AsyncConnectionConfig, Client, RedisResult};
use stateful_redis_core::{ConfigError, Error, RedisConfig};

use crate::error::map_redis_error;

/// A boxed future, as returned by [`ConnectHook::on_connect`].
pub type HookFuture<'a> = Pin<Box<dyn Future<Output = RedisResult<()>> + Send + 'a>>;

/// Work done on every new connection before it serves anyone, such as loading scripts.
///
/// A failing hook is logged and the connection is used anyway: the work it prepares
/// must also heal on demand (scripts do, through `NOSCRIPT` recovery).
pub trait ConnectHook: Send + Sync + 'static {
    /// Runs on a freshly opened connection.
    fn on_connect<'a>(&'a self, conn: &'a mut MultiplexedConnection) -> HookFuture<'a>;

    /// The same work as plain commands, for the pool's direct pipeline links, which send
    /// them on every new connection (errors are logged).
    fn on_connect_commands(&self) -> Vec<redis::Cmd> {
        Vec::new()
    }

    /// Called after a direct link ran [`on_connect_commands`](Self::on_connect_commands)
    /// and every one succeeded.
    fn on_connect_commands_done(&self) {}
}

/// Opens connections with the configured URL, TLS roots and timeouts, then runs the hooks.
#[derive(Clone)]
pub(crate) struct Connector {
    client: Client,
    config: AsyncConnectionConfig,
    pub(crate) hooks: Arc<[Arc<dyn ConnectHook>]>,
    pub(crate) response_timeout: std::time::Duration,
    pub(crate) connect_timeout: std::time::Duration,
    /// A `rediss://` URL: a failed handshake may mean a plaintext server.
    tls: bool,
}

impl fmt::Debug for Connector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The client's connection info holds the password: show nothing of it.
        f.debug_struct("Connector")
            .field("hooks", &self.hooks.len())
            .field("response_timeout", &self.response_timeout)
            .finish_non_exhaustive()
    }
}

impl Connector {
    /// The server's address, as the `tracing` spans name it (no credentials).
    pub(crate) fn server(&self) -> &redis::ConnectionAddr {
        self.client.get_connection_info().addr()
    }
    pub(crate) fn new(config: &RedisConfig, hooks: Vec<Arc<dyn ConnectHook>>) -> Result<Self, Error> {
        config.validate()?;
        let url = config.url.expose();
        if config.url.is_tls() {
            // redis-rs builds rustls without a crypto provider; install ring unless the
            // application installed one already (then this is a no-op).
            let _ = rustls::crypto::ring::default_provider().install_default();
        }
        let client = match &config.tls_ca_file {
            Some(path) => {
                let root = std::fs::read(path).map_err(|e| {
                    ConfigError::new("redis.tls_ca_file", path.display(), format!("cannot read it: {e}"))
                })?;
                let certs = redis::TlsCertificates {
                    client_tls: None,
                    root_cert: Some(root),
                };
                #[allow(
                    clippy::disallowed_methods,
                    reason = "the pool is the one place that opens connections"
                )]
                Client::build_with_tls(url, certs)
            }
            #[allow(
                clippy::disallowed_methods,
                reason = "the pool is the one place that opens connections"
            )]
            None => Client::open(url),
        }
        .map_err(|e| ConfigError::new("redis.url", config.url.redacted(), e.to_string()))?;
        let async_config = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(config.connect_timeout))
            .set_response_timeout(Some(config.response_timeout));
        Ok(Self {
            client,
            config: async_config,
            hooks: hooks.into(),
            response_timeout: config.response_timeout,
            connect_timeout: config.connect_timeout,
            tls: config.url.is_tls(),
        })
    }

    /// Opens one multiplexed connection and runs every hook on it.
    pub(crate) async fn open(&self) -> Result<MultiplexedConnection, Error> {
        let connecting = self.client.get_multiplexed_async_connection_with_config(&self.config);
        // The driver applies the connect timeout per address; bound the whole handshake too.
        let mut conn = match tokio::time::timeout(self.connect_timeout + self.response_timeout, connecting).await {
            Ok(Err(e)) if self.tls && not_tls(&e) => return Err(plaintext_server(&e.to_string())),
            Ok(result) => result.map_err(|e| map_redis_error(e, self.response_timeout))?,
            Err(_) if self.tls => {
                return Err(plaintext_server(&format!(
                    "no TLS reply within {:?}",
                    self.connect_timeout + self.response_timeout
                )));
            }
            Err(_) => {
                return Err(Error::Timeout {
                    operation: "connect to Redis",
                    after: self.connect_timeout,
                });
            }
        };
        for hook in self.hooks.iter() {
            if let Err(e) = hook.on_connect(&mut conn).await {
                tracing::warn!(error = %e, "connect hook failed; continuing (it heals on demand)");
            }
        }
        Ok(conn)
    }
}

/// Whether a failed `rediss://` handshake looks like a server that does not speak TLS: it
/// sent no TLS reply in time (Redis waits for the end of the "command" the ClientHello looks
/// like), hung up, or sent something that is not TLS. Refused connections and certificate
/// errors are not that, and keep their own messages.
fn not_tls(err: &redis::RedisError) -> bool {
    if err.is_timeout() {
        return true;
    }
    let mut source: Option<&(dyn std::error::Error + 'static)> = std::error::Error::source(err);
    while let Some(cause) = source {
        if let Some(io) = cause.downcast_ref::<std::io::Error>() {
            return match io.kind() {
                std::io::ErrorKind::UnexpectedEof
                | std::io::ErrorKind::ConnectionReset
                | std::io::ErrorKind::ConnectionAborted => true,
                std::io::ErrorKind::InvalidData => io
                    .get_ref()
                    .and_then(|e| e.downcast_ref::<rustls::Error>())
                    .is_some_and(|e| {
                        matches!(
                            e,
                            rustls::Error::InvalidMessage(_)
                                | rustls::Error::InappropriateMessage { .. }
                                | rustls::Error::InappropriateHandshakeMessage { .. }
                        )
                    }),
                _ => false,
            };
        }
        source = cause.source();
    }
    false
}

/// The error for a `rediss://` URL whose server does not answer in TLS.
fn plaintext_server(detail: &str) -> Error {
    Error::Connection {
        message: format!("TLS handshake failed: is the server plaintext? use redis:// ({detail})"),
        source: None,
    }
}
