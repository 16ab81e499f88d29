//! Prometheus only, no collector: the executor serves its metrics at `/metrics`
//! (`telemetry.prometheus_listen`, feature `prometheus`) under the names the shipped dashboard
//! and rules query, and nothing goes over OTLP.
//!
//! Run it with `cargo run -p stateful-redis --features prometheus --example prometheus
//! [REDIS_URL]`; without a URL (argument or `REDIS_URL`) it starts a throw-away
//! `redis-server` of its own. In a service, point a scrape job at the address:
//!
//! ```yaml
//! scrape_configs:
//!   - job_name: billing            # the dashboard's `job`
//!     static_configs:
//!       - targets: ['10.0.0.7:9464']
//! ```

#![allow(clippy::print_stdout, reason = "an example shows what it does on stdout")]

mod common;

use std::io::{Read as _, Write as _};

use stateful_redis::StatefulExecutor;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let redis = common::Redis::given_or_started()?;
    let mut config = redis.config();
    // A service would take a fixed port, such as 0.0.0.0:9464; here a free one of 127.0.0.1.
    let addr = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?;
    config.telemetry.enabled = true;
    config.telemetry.prometheus_listen = Some(addr);
    let executor = StatefulExecutor::builder().config(config).build().await?;

    let counters = executor.state::<u64>(&common::namespace("counters"))?;
    for i in 0..100u64 {
        counters.put(&format!("c{}", i % 10), &i).await?;
    }

    // What Prometheus gets on each scrape.
    let text = tokio::task::spawn_blocking(move || -> std::io::Result<String> {
        let mut stream = std::net::TcpStream::connect(addr)?;
        write!(stream, "GET /metrics HTTP/1.0\r\nHost: {addr}\r\n\r\n")?;
        let mut response = String::new();
        stream.read_to_string(&mut response)?;
        Ok(response)
    })
    .await??;
    let ours: Vec<&str> = text
        .lines()
        .filter(|l| l.starts_with("stateful_redis_operations_total") || l.contains("_seconds_count{"))
        .collect();
    println!("http://{addr}/metrics serves, among others:\n{}", ours.join("\n"));
    assert!(text.starts_with("HTTP/1.0 200"), "{text}");
    assert!(
        ours.iter().any(
            |l| l.starts_with("stateful_redis_operations_total{") && l.contains("stateful_redis_operation=\"put\"")
        ),
        "{text}"
    );
    // Prometheus only: nothing is exported over OTLP, so nothing fails there.
    assert_eq!(executor.telemetry_export_errors(), Some((0, 0)));

    executor.shutdown().await;
    Ok(())
}
