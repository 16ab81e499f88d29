//! Micro-benchmarks of the client-side work of one write: the key, the stored envelope, the
//! `EVALSHA` command and the reply parsing. Run with `cargo bench -p stateful-redis-benches --bench
//! micro`; `cargo xtask bench` runs them and puts the medians into its report.
//!
//! Divan's allocation profiler counts allocations per iteration (the `alloc` rows of the table).
//! `executor_put` runs one whole `put` through the executor (queue, pipeline, script, reply) on a
//! redis-server it starts, so its allocation count is the client's per operation, end to end.

use std::hint::black_box;

use bytes::Bytes;
use divan::Bencher;
use redis::Value;
use stateful_redis_core::{BytesCodec, Envelope, KeyLayout, Namespace, SerdeCodec};
use stateful_redis_scripts::{Invocation as _, Write, WriteOp};

#[global_allocator]
static ALLOC: divan::AllocProfiler = divan::AllocProfiler::system();

/// Bytes of the value written, as in `stateful-redis load` and `cargo xtask bench`.
const VALUE_SIZE: usize = 100;

fn main() {
    divan::main();
}

/// The envelope of the executor's defaults: 512 KiB limit, no compression.
fn envelope() -> Envelope {
    Envelope::new(512 * 1024, None)
}

/// `KeyLayout::state`: the hash-tagged key of an entity's state.
#[divan::bench]
fn key_state(bencher: Bencher<'_, '_>) {
    let keys = KeyLayout::new(&Namespace::new("load").expect("a valid namespace"));
    bencher.bench_local(|| keys.state(black_box("e12345")));
}

/// `Envelope::seal` of a 100-character string with `SerdeCodec::json()`.
#[divan::bench]
fn seal_json(bencher: Bencher<'_, '_>) {
    let (envelope, codec) = (envelope(), SerdeCodec::json());
    let value = "v".repeat(VALUE_SIZE);
    bencher.bench_local(|| envelope.seal(&codec, black_box(&value)).expect("seals"));
}

/// `Envelope::open` of what [`seal_json`] stores.
#[divan::bench]
fn open_json(bencher: Bencher<'_, '_>) {
    let (envelope, codec) = (envelope(), SerdeCodec::json());
    let stored = envelope.seal(&codec, &"v".repeat(VALUE_SIZE)).expect("seals");
    bencher.bench_local(|| -> String { envelope.open(&codec, black_box(&stored)).expect("opens") });
}

/// `Envelope::seal` of 100 raw bytes with `BytesCodec`.
#[divan::bench]
fn seal_bytes(bencher: Bencher<'_, '_>) {
    let envelope = envelope();
    let value = Bytes::from(vec![b'v'; VALUE_SIZE]);
    bencher.bench_local(|| envelope.seal(&BytesCodec, black_box(&value)).expect("seals"));
}

/// `Envelope::open` of what [`seal_bytes`] stores.
#[divan::bench]
fn open_bytes(bencher: Bencher<'_, '_>) {
    let envelope = envelope();
    let stored = envelope
        .seal(&BytesCodec, &Bytes::from(vec![b'v'; VALUE_SIZE]))
        .expect("seals");
    bencher.bench_local(|| -> Bytes { envelope.open(&BytesCodec, black_box(&stored)).expect("opens") });
}

/// The `EVALSHA` command of a put as the executor makes it (`Write::packed`): the RESP bytes
/// its pipeline copies onto the wire.
#[divan::bench]
fn write_command(bencher: Bencher<'_, '_>) {
    let data = stored_bytes();
    bencher.bench_local(|| Write::new(black_box("load:{e12345}:s"), WriteOp::Put, Some(black_box(&data))).packed());
}

/// The same through a `redis::Cmd` (`Write::command`, then encoded), as the redis-rs
/// connections send it: the cost the packed command saves.
#[divan::bench]
fn write_command_redis_rs(bencher: Bencher<'_, '_>) {
    let data = stored_bytes();
    bencher.bench_local(|| {
        Write::new(black_box("load:{e12345}:s"), WriteOp::Put, Some(black_box(&data)))
            .command()
            .get_packed_command()
    });
}

/// `Write::parse` of the reply `[1, 7]` (applied at version 7); building the reply is not timed.
#[divan::bench]
fn parse_write_reply(bencher: Bencher<'_, '_>) {
    let data = stored_bytes();
    let call = Write::new("load:{e12345}:s", WriteOp::Put, Some(&data));
    bencher
        .with_inputs(|| Value::Array(vec![Value::Int(1), Value::Int(7)]))
        .bench_local_values(|reply| call.parse(reply).expect("parses"));
}

/// `Write::parse` of the reply `7`: how write.lua answers an applied put on its hot path.
#[divan::bench]
fn parse_write_reply_int(bencher: Bencher<'_, '_>) {
    let data = stored_bytes();
    let call = Write::new("load:{e12345}:s", WriteOp::Put, Some(&data));
    bencher.bench_local(|| call.parse(black_box(Value::Int(7))).expect("parses"));
}

/// A stored raw value: the format byte 0x03, then 100 bytes.
fn stored_bytes() -> Vec<u8> {
    let mut data = vec![stateful_redis_core::FORMAT_RAW];
    data.resize(VALUE_SIZE + 1, b'v');
    data
}

/// One read of the monotonic clock: `monitor_record` includes one (for the rate's second);
/// in the executor that read also gives the operation's duration, which it needs anyway.
#[divan::bench]
fn clock_read() -> std::time::Instant {
    std::time::Instant::now()
}

/// Recording one operation in the PerformanceMonitor (latency histogram, count, rate), from
/// one thread and from two at once on the same operation (contention). Includes one clock
/// read (see `clock_read`).
#[divan::bench(threads = [1, 2])]
fn monitor_record(bencher: Bencher<'_, '_>) {
    static MONITOR: std::sync::LazyLock<stateful_redis_metrics::PerformanceMonitor> =
        std::sync::LazyLock::new(stateful_redis_metrics::PerformanceMonitor::default);
    let monitor = &*MONITOR;
    bencher.bench(|| {
        monitor.record(
            stateful_redis_metrics::Operation::Put,
            black_box(std::time::Duration::from_micros(250)),
            None,
        )
    });
}

/// The telemetry of `otel-setup` over OTLP/HTTP to a port where nothing listens, with a
/// metrics interval of an hour: no export runs on this thread during a benchmark (a span
/// export fails on the SDK's own threads). `traces`: whether spans are made too.
fn telemetry(monitor: stateful_redis_metrics::PerformanceMonitor, traces: bool) -> stateful_redis_otel::Telemetry {
    let mut config = stateful_redis_core::TelemetryConfig::default();
    config.enabled = true;
    config.protocol = Some(stateful_redis_core::OtlpProtocol::HttpProtobuf);
    config.endpoint = Some("http://127.0.0.1:9".into());
    config.metrics_interval = Some(std::time::Duration::from_secs(3600));
    config.traces = traces;
    let sources = stateful_redis_otel::Sources::new(monitor, "127.0.0.1", 6379);
    stateful_redis_otel::Telemetry::start(&config, sources).expect("telemetry")
}

/// Recording one operation in OpenTelemetry's `db.client.operation.duration` (a bound
/// histogram series, bound on first use), from one thread and from two at once. This is what
/// telemetry adds to each operation besides the monitor's record above.
#[divan::bench(threads = [1, 2])]
fn otel_record(bencher: Bencher<'_, '_>) {
    static TELEMETRY: std::sync::LazyLock<stateful_redis_otel::Telemetry> =
        std::sync::LazyLock::new(|| telemetry(stateful_redis_metrics::PerformanceMonitor::default(), false));
    let telemetry = &*TELEMETRY;
    bencher.bench(|| {
        telemetry.record(
            stateful_redis_metrics::Operation::Put,
            black_box(std::time::Duration::from_micros(250)),
            None,
        )
    });
}

/// What the executor records for one finished operation, telemetry off (the monitor only) and
/// on (the monitor, then `db.client.operation.duration` through the SDK of `otel-setup`, whose
/// series are bound): the "recording cost, telemetry on / off" figure. Both read the clock once.
#[divan::bench(args = ["off", "on"], threads = [1, 2], sample_size = 1000)]
fn record_operation(bencher: Bencher<'_, '_>, mode: &str) {
    static MONITOR: std::sync::LazyLock<stateful_redis_metrics::PerformanceMonitor> =
        std::sync::LazyLock::new(stateful_redis_metrics::PerformanceMonitor::default);
    let monitor = &*MONITOR;
    let on = (mode == "on").then(|| telemetry(monitor.clone(), false));
    let started = std::time::Instant::now();
    if let Some(t) = &on {
        // The series is bound on its first record: not part of the steady cost.
        t.record(stateful_redis_metrics::Operation::Put, std::time::Duration::ZERO, None);
    }
    bencher.bench(|| {
        let operation = stateful_redis_metrics::Operation::Put;
        let duration = monitor.record_since(operation, black_box(started), None);
        if let Some(t) = &on {
            t.record(operation, duration, None);
        }
    });
}

/// Calls per pipeline in [`telemetry_pipeline_25`] (and puts in [`executor_put_25`]).
const CROWD: usize = 25;

/// Everything telemetry adds to one pipeline of 25 puts whose callers are in no span (as
/// `stateful-redis load` makes them), with traces on at the default sampling ratio: each
/// caller's context looked at, the pipeline's spans (a root, sampled by the ratio; the calls'
/// spans under it when it is), their end, the batch size and queue wait, and each operation's
/// duration. Divided by 25, the recording cost of one put, which `cargo xtask bench` sets
/// beside the executor thread's CPU per put.
#[divan::bench(sample_size = 200)]
fn telemetry_pipeline_25(bencher: Bencher<'_, '_>) {
    use stateful_redis_metrics::{Operation, Stage};
    static TELEMETRY: std::sync::LazyLock<stateful_redis_otel::Telemetry> =
        std::sync::LazyLock::new(|| telemetry(stateful_redis_metrics::PerformanceMonitor::default(), true));
    let t = &*TELEMETRY;
    let waited = std::time::Duration::from_micros(40);
    // Bound on first use: not part of the steady cost.
    t.record(Operation::Put, waited, None);
    bencher.bench(|| {
        let traces: [Option<stateful_redis_otel::OpTrace>; CROWD] =
            std::array::from_fn(|_| stateful_redis_otel::OpTrace::capture());
        let spans = t.pipeline(traces.iter().map(|trace| ("write", Operation::Put, trace.as_ref())));
        t.record_batch(CROWD);
        t.record_stage(Stage::QueueWait, waited);
        if let Some(spans) = spans {
            spans.finish((0..CROWD).map(|_| None));
        }
        for _ in 0..CROWD {
            t.record(Operation::Put, black_box(std::time::Duration::from_micros(250)), None);
        }
    });
}

/// An executor on a throw-away redis-server, on a current-thread runtime (so every allocation
/// of an operation, the connection's reader task included, happens on this thread and is
/// counted), with a handle, a 100-byte value and 1000 entity ids.
struct PutBench {
    // Fields drop in this order: the handle and the executor before their runtime, and the
    // server last.
    handle: stateful_redis::StateHandle<Bytes, BytesCodec>,
    executor: stateful_redis::StatefulExecutor,
    runtime: tokio::runtime::Runtime,
    value: Bytes,
    ids: Vec<String>,
    _server: stateful_redis_test_support::RedisServer,
}

impl PutBench {
    /// `None` (and a note) when there is no redis-server to run against.
    fn start(bench: &str) -> Option<Self> {
        if !stateful_redis_test_support::redis_server_available() {
            eprintln!("{bench}: no redis-server on PATH, skipped");
            return None;
        }
        let server = stateful_redis_test_support::RedisServer::start();
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a runtime");
        let executor = runtime
            .block_on(stateful_redis::StatefulExecutor::builder().url(server.url()).build())
            .expect("connect");
        let handle = executor
            .state_with_codec::<Bytes, _>("bench", BytesCodec)
            .expect("a valid namespace");
        Some(Self {
            runtime,
            executor,
            handle,
            value: Bytes::from(vec![b'v'; VALUE_SIZE]),
            ids: (0..1000).map(|i| format!("e{i}")).collect(),
            _server: server,
        })
    }
}

impl Drop for PutBench {
    fn drop(&mut self) {
        self.runtime.block_on(self.executor.shutdown());
    }
}

/// One `put` of a 100-byte value through the whole executor on a real redis-server.
#[divan::bench]
fn executor_put(bencher: Bencher<'_, '_>) {
    let Some(b) = PutBench::start("executor_put") else {
        return;
    };
    let mut i = 0usize;
    bencher.bench_local(|| {
        i = (i + 1) % b.ids.len();
        b.runtime.block_on(b.handle.put(&b.ids[i], &b.value)).expect("put")
    });
}

/// 25 puts at once through the executor (one pipeline), per iteration: divided by 25, what one
/// put costs when it shares its pipeline, as it does under load. `cargo xtask bench` reports
/// the allocations per put from it.
#[divan::bench]
fn executor_put_25(bencher: Bencher<'_, '_>) {
    let Some(b) = PutBench::start("executor_put_25") else {
        return;
    };
    let mut i = 0usize;
    bencher.bench_local(|| {
        i = (i + CROWD) % b.ids.len();
        let puts = b.ids[i..].iter().take(CROWD).map(|id| b.handle.put(id, &b.value));
        b.runtime.block_on(futures_util::future::join_all(puts))
    });
}
