//! The vocabulary of stateful-redis: validated ids, the hash-tagged key layout, the stored
//! record, versions,
//! value codecs, the error type and the configuration schema. It does no I/O.
//!
//! ```
//! use stateful_redis_core::{Envelope, KeyLayout, Namespace, SerdeCodec, validate_entity_id};
//!
//! validate_entity_id("device-42")?;
//! assert!(validate_entity_id("bad{id}").is_err());
//!
//! let keys = KeyLayout::new(&Namespace::new("fleet")?);
//! assert_eq!(keys.state("device-42"), "fleet:{device-42}:s");
//!
//! let envelope = Envelope::new(512 * 1024, None);
//! let stored = envelope.seal(&SerdeCodec::json(), &vec![1, 2, 3])?;
//! let back: Vec<i32> = envelope.open(&SerdeCodec::json(), &stored)?;
//! assert_eq!(back, [1, 2, 3]);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! ## Feature flags
//! - `compression` (default): LZ4 compression of values above a configured size.
//! - `msgpack`: the MessagePack codec ([`SerdeCodec::msgpack`]).

mod codec;
mod config;
mod error;
mod id;
mod keys;
mod record;
mod version;

pub use crate::codec::{
    BytesCodec, COMPRESSED, Codec, CodecError, CodecTimings, Envelope, FORMAT_JSON, FORMAT_MSGPACK, FORMAT_RAW,
    SealError, SerdeCodec, SerdeFormat,
};
pub use crate::config::{
    Aggregation, AlertRule, AlertmanagerConfig, AlertsConfig, BatchConfig, Comparison, ConfigError, ExecutorConfig,
    IdempotencyConfig, LeaseConfig, OtlpProtocol, OverloadPolicy, PoolConfig, PresenceConfig, RedisConfig, RedisUrl,
    RetryConfig, Secret, Severity, StateConfig, TelemetryConfig, WebhookConfig, duration,
};
pub use crate::error::{BoxError, Error, ErrorKind, Result};
pub use crate::id::{
    InvalidId, MAX_ENTITY_ID_LEN, MAX_NAMESPACE_LEN, MAX_STATUS_LEN, MAX_TOKEN_LEN, Namespace, validate_entity_id,
    validate_message_id, validate_owner, validate_status,
};
pub use crate::keys::{
    AUTO_MESSAGES_SUFFIX, AUTO_OUTCOMES_SUFFIX, FENCE_SUFFIX, KeyLayout, LEASE_SUFFIX, MESSAGES_SUFFIX,
    OUTCOMES_SUFFIX, STATE_SUFFIX, hash_tag,
};
pub use crate::record::{EXPIRES, HEADER_LEN, MAX_VERSION, RECORD_FORMAT, Record};
pub use crate::version::{Version, Versioned};
