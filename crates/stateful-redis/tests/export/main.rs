//! OTLP export over TLS, and the Prometheus endpoint.

mod prometheus;
mod tls;
