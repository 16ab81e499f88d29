//! The report: ratios and targets from the medians, written as report.json and report.md.

use std::fmt::Write as _;
use std::path::Path;
use std::process::Command;

use serde_json::{Value, json};

use super::cases::Group;
use super::cost::Cost;
use super::divan::{MicroReport, spread_micro};
use super::server::Pinning;
use super::stats::{CaseResult, METRICS, Stat, metric, stat};
use super::{CONCURRENCY, ENTITIES, Plan, VALUE_SIZE};

/// The targets of the batching issue: executor put throughput at least this times `redis-benchmark -P16`.
const TARGET_THROUGHPUT_VS_P16: f64 = 1.0;
/// Executor put client CPU at most this many seconds per 100k operations.
const TARGET_CPU_PER_100K: f64 = 0.15;
/// Single-caller executor put p50 at most this times `redis-benchmark -c1 -P1`'s.
const TARGET_SINGLE_P50_VS_RB: f64 = 1.2;

#[derive(Debug)]
pub(super) struct Report<'a> {
    pub(super) plan: Plan,
    pub(super) created: u64,
    pub(super) machine: Value,
    pub(super) micro: MicroReport,
    pub(super) results: Vec<CaseResult<'a>>,
    pub(super) elapsed_s: f64,
}

/// A figure of one case divided by that of another, per round.
#[derive(Debug)]
pub(super) struct Ratio {
    pub(super) id: &'static str,
    pub(super) label: &'static str,
    pub(super) higher_better: bool,
    pub(super) stat: Option<Stat>,
    pub(super) runs: Vec<f64>,
}

/// The ids of the ratios the targets use.
const THROUGHPUT_RATIO: &str = "executor_put_vs_redis_benchmark_p16";
const SINGLE_P50_RATIO: &str = "single_caller_p50_vs_redis_benchmark_c1_p1";
const SERVER_CPU_RATIO: &str = "executor_put_vs_minimal_script_server_cpu";
const READ_CPU_RATIO: &str = "executor_get_vs_redis_benchmark_get_server_cpu";
const TELEMETRY_RATIO: &str = "executor_put_telemetry_on_vs_off_executor_cpu";

/// The telemetry issue's target: a put with telemetry recorded costs the executor's thread at
/// most this times one without (an SDK's export runs on threads of its own, the application's).
const TARGET_TELEMETRY_ON_VS_OFF: f64 = 1.03;

/// The server-cost targets: executor put server CPU per 100k operations at most this many s,
const TARGET_SERVER_CPU_PER_100K: f64 = 0.30;
/// and at most this times the minimal versioned put script's;
const TARGET_SERVER_CPU_VS_MINIMAL: f64 = 0.62;
/// put throughput at least this times `redis-benchmark -P 16` of the minimal script;
const TARGET_THROUGHPUT_VS_MINIMAL: f64 = 1.5;
/// a record at most this times the bytes of its value as a plain string;
const TARGET_RECORD_VS_PLAIN: f64 = 1.25;
/// a read at most this times the server CPU of `redis-benchmark` of the same `GET`.
const TARGET_READ_VS_GET: f64 = 1.0;

/// A target of the issue: a figure, its limit and whether it was met.
#[derive(Debug)]
struct Target {
    id: &'static str,
    label: &'static str,
    value: Option<f64>,
    limit: f64,
    at_least: bool,
    unit: &'static str,
}

impl Target {
    fn met(&self) -> Option<bool> {
        self.value.map(|v| {
            if self.at_least {
                v >= self.limit
            } else {
                v <= self.limit
            }
        })
    }
}

impl Report<'_> {
    fn result(&self, id: &str) -> Option<&CaseResult<'_>> {
        self.results.iter().find(|r| r.case.id == id)
    }

    pub(super) fn median(&self, id: &str, metric: &str) -> Option<f64> {
        self.result(id)?.median(metric)
    }

    /// `metric` of case `of` divided by that of case `to`, round by round: the rounds interleave, so
    /// a ratio of one round compares runs made under the same conditions.
    fn ratio_runs(&self, of: &str, to: &str, name: &str) -> Vec<f64> {
        let (Some(of), Some(to)) = (self.result(of), self.result(to)) else {
            return Vec::new();
        };
        of.samples
            .iter()
            .zip(&to.samples)
            .filter_map(|(a, b)| {
                let (a, b) = (metric(a, name)?, metric(b, name)?);
                (b != 0.0).then(|| a / b)
            })
            .collect()
    }

    /// The executor's figures relative to the baselines'.
    pub(super) fn ratios(&self) -> Vec<Ratio> {
        let ratio = |id, label, of, to, name, higher_better| {
            let runs = self.ratio_runs(of, to, name);
            Ratio {
                id,
                label,
                higher_better,
                stat: stat(&runs),
                runs,
            }
        };
        let put = "executor-put";
        vec![
            ratio(
                "executor_put_vs_redis_benchmark_p16",
                "executor put / redis-benchmark -P 16: ops/s",
                put,
                "redis-benchmark-P16",
                "ops_per_sec",
                true,
            ),
            ratio(
                "executor_put_alone_vs_redis_benchmark_p16",
                "executor put, one EVALSHA per call / redis-benchmark -P 16: ops/s",
                "executor-put-alone",
                "redis-benchmark-P16",
                "ops_per_sec",
                true,
            ),
            ratio(
                "executor_put_vs_redis_benchmark_p1",
                "executor put / redis-benchmark -P 1: ops/s",
                put,
                "redis-benchmark-P1",
                "ops_per_sec",
                true,
            ),
            ratio(
                "executor_put_vs_plain_shared",
                "executor put / plain shared: ops/s",
                put,
                "plain-shared",
                "ops_per_sec",
                true,
            ),
            ratio(
                "executor_put_vs_plain_pipeline16",
                "executor put / plain pipeline16: ops/s",
                put,
                "plain-pipeline16",
                "ops_per_sec",
                true,
            ),
            ratio(
                "executor_put_telemetry_on_vs_off",
                "executor put, telemetry on / off: ops/s",
                "executor-put-otel",
                put,
                "ops_per_sec",
                true,
            ),
            ratio(
                "executor_put_telemetry_on_vs_off_client_cpu",
                "executor put, telemetry on / off: client CPU (process, start-up and export included)",
                "executor-put-otel",
                put,
                "client_cpu_s_per_100k",
                false,
            ),
            ratio(
                TELEMETRY_RATIO,
                "executor put, telemetry on / off: CPU of the executor's thread (the recording cost)",
                "executor-put-otel",
                put,
                "executor_cpu_s_per_100k",
                false,
            ),
            ratio(
                "executor_put_vs_redis_benchmark_p16_client_cpu",
                "executor put / redis-benchmark -P 16: client CPU",
                put,
                "redis-benchmark-P16",
                "client_cpu_s_per_100k",
                false,
            ),
            ratio(
                "executor_put_vs_plain_pipeline16_client_cpu",
                "executor put / plain pipeline16: client CPU",
                put,
                "plain-pipeline16",
                "client_cpu_s_per_100k",
                false,
            ),
            ratio(
                "executor_put_vs_plain_shared_client_cpu",
                "executor put / plain shared: client CPU",
                put,
                "plain-shared",
                "client_cpu_s_per_100k",
                false,
            ),
            ratio(
                "executor_put_vs_minimal_script_p16",
                "executor put / redis-benchmark -P 16 of the minimal versioned put: ops/s",
                put,
                "redis-benchmark-minimal-P16",
                "ops_per_sec",
                true,
            ),
            ratio(
                SERVER_CPU_RATIO,
                "executor put / minimal versioned put script: server CPU",
                put,
                "redis-benchmark-minimal-P16",
                "server_cpu_s_per_100k",
                false,
            ),
            ratio(
                "executor_cas_vs_minimal_script_server_cpu",
                "executor cas / minimal versioned put script: server CPU",
                "executor-cas",
                "redis-benchmark-minimal-P16",
                "server_cpu_s_per_100k",
                false,
            ),
            ratio(
                "executor_update_vs_minimal_script_server_cpu",
                "executor update (get + cas) / minimal versioned put script: server CPU",
                "executor-update",
                "redis-benchmark-minimal-P16",
                "server_cpu_s_per_100k",
                false,
            ),
            ratio(
                READ_CPU_RATIO,
                "executor get / redis-benchmark -P 16 GET: server CPU",
                "executor-get",
                "redis-benchmark-get-P16",
                "server_cpu_s_per_100k",
                false,
            ),
            ratio(
                SINGLE_P50_RATIO,
                "single-caller executor put / redis-benchmark -c 1 -P 1: p50",
                "executor-put-c1",
                "redis-benchmark-c1-P1",
                "p50_us",
                false,
            ),
        ]
    }

    fn ratio(&self, id: &str) -> Option<f64> {
        self.ratios().into_iter().find(|r| r.id == id)?.stat.map(|s| s.median)
    }

    /// What recording telemetry adds to a put, relative: the micro-benchmark of everything
    /// telemetry does for a pipeline of 25 (a steady figure), per put, over the CPU the
    /// executor's thread spends per put in the `executor-put` runs. The runs with telemetry on
    /// and off give the same ratio directly ([`TELEMETRY_RATIO`]), but two runs on a shared
    /// machine differ by more than the 3 % asked.
    fn telemetry_cost(&self) -> Option<f64> {
        let per_pipeline = self
            .micro
            .benchmarks
            .iter()
            .find(|b| b.name == "telemetry_pipeline_25")?;
        let cpu_ns = self.median("executor-put", "executor_cpu_s_per_100k")? * 1e4;
        (cpu_ns > 0.0).then(|| 1.0 + per_pipeline.median_ns / 25.0 / cpu_ns)
    }

    fn targets(&self) -> Vec<Target> {
        vec![
            Target {
                id: "throughput_vs_redis_benchmark_p16",
                label: "executor put throughput / redis-benchmark -P 16",
                value: self.ratio(THROUGHPUT_RATIO),
                limit: TARGET_THROUGHPUT_VS_P16,
                at_least: true,
                unit: "×",
            },
            Target {
                id: "client_cpu_s_per_100k",
                label: "executor put client CPU per 100k operations",
                value: self.median("executor-put", "client_cpu_s_per_100k"),
                limit: TARGET_CPU_PER_100K,
                at_least: false,
                unit: " s",
            },
            Target {
                id: "single_caller_p50_vs_redis_benchmark",
                label: "single-caller put p50 / redis-benchmark -c 1 -P 1 p50",
                value: self.ratio(SINGLE_P50_RATIO),
                limit: TARGET_SINGLE_P50_VS_RB,
                at_least: false,
                unit: "×",
            },
            Target {
                id: "telemetry_recording_cost",
                label: "put with telemetry recorded / without: the executor thread's CPU per put plus \
                        `telemetry_pipeline_25` / 25, over the former",
                value: self.telemetry_cost(),
                limit: TARGET_TELEMETRY_ON_VS_OFF,
                at_least: false,
                unit: "×",
            },
        ]
    }

    pub(super) fn to_json(&self) -> Value {
        let cases: serde_json::Map<String, Value> = self
            .results
            .iter()
            .map(|r| {
                let runs: Vec<Value> = r
                    .samples
                    .iter()
                    .map(|s| {
                        json!({
                            "ops": s.ops,
                            "ops_per_sec": s.ops_per_sec,
                            "p50_us": s.p50_us,
                            "p99_us": s.p99_us,
                            "errors": s.errors,
                            "conflicts": s.conflicts,
                            "wall_s": s.wall_s,
                            "client_cpu_s": s.client_cpu_s,
                            "client_cpu_s_per_100k": s.client_cpu_per_100k(),
                            "server_cpu_s": s.server_cpu_s,
                            "server_cpu_s_per_100k": s.server_cpu_per_100k(),
                            "executor_cpu_s": s.executor_cpu_s,
                        })
                    })
                    .collect();
                let mut median = serde_json::Map::new();
                let mut spread = serde_json::Map::new();
                for (name, ..) in METRICS {
                    if let Some(stat) = r.stat(name) {
                        median.insert((*name).to_owned(), json!(stat.median));
                        spread.insert((*name).to_owned(), json!(stat.spread));
                    }
                }
                let case = json!({
                    "label": r.case.label,
                    "group": match r.case.group { Group::Throughput => "throughput", Group::SingleCaller => "single_caller" },
                    "command": r.case.shown,
                    "latency_per": r.case.client.latency_per(),
                    "runs": runs,
                    "median": median,
                    "spread": spread,
                });
                (r.case.id.to_owned(), case)
            })
            .collect();
        let micro: serde_json::Map<String, Value> = self
            .micro
            .benchmarks
            .iter()
            .map(|m| {
                (
                    m.name.clone(),
                    json!({
                        "median_ns": m.median_ns,
                        "fastest_ns": m.fastest_ns,
                        "spread": spread_micro(m),
                        "allocs_per_iter": m.allocs,
                        "alloc_bytes_per_iter": m.alloc_bytes,
                    }),
                )
            })
            .collect();
        let ratios: serde_json::Map<String, Value> = self
            .ratios()
            .into_iter()
            .map(|r| {
                let ratio = json!({
                    "label": r.label,
                    "higher_better": r.higher_better,
                    "median": r.stat.map(|s| s.median),
                    "spread": r.stat.map(|s| s.spread),
                    "runs": r.runs,
                });
                (r.id.to_owned(), ratio)
            })
            .collect();
        let targets: serde_json::Map<String, Value> = self
            .targets()
            .into_iter()
            .map(|t| {
                (
                    t.id.to_owned(),
                    json!({ "label": t.label, "value": t.value, "limit": t.limit,
                            "at_least": t.at_least, "met": t.met() }),
                )
            })
            .collect();
        json!({
            "schema": 1,
            "created_unix": self.created,
            "elapsed_s": self.elapsed_s,
            "machine": self.machine,
            "settings": {
                "quick": self.plan.quick,
                "repetitions": self.plan.rounds,
                "ops": self.plan.ops,
                "single_caller_ops": self.plan.single_ops,
                "concurrency": CONCURRENCY,
                "entities": ENTITIES,
                "value_size": VALUE_SIZE,
                "value": "0x03 followed by value_size bytes 'v' (BytesCodec's stored form)",
            },
            "micro": { "command": self.micro.command, "benchmarks": micro, "table": self.micro.table },
            "cases": cases,
            "ratios": ratios,
            "targets": targets,
        })
    }

    pub(super) fn markdown(&self, sha: &str, comparison: Option<&str>) -> String {
        let mut md = String::new();
        let m = &self.machine;
        let plan = self.plan;
        let _ = writeln!(md, "# stateful-redis benchmark report\n");
        let _ = writeln!(
            md,
            "{} UTC, commit {}{}, {} CPUs, redis-server {}. {} run: {} repetition{} in interleaved rounds, \
             medians shown; spread is (max − min) / median over the repetitions. {:.0} s in all.\n",
            utc(self.created),
            m["git_commit"].as_str().unwrap_or("?"),
            if m["git_dirty"].as_bool() == Some(true) {
                " (uncommitted changes)"
            } else {
                ""
            },
            m["nproc"],
            m["redis_server"].as_str().unwrap_or("?"),
            if plan.quick { "Quick" } else { "Full" },
            plan.rounds,
            if plan.rounds == 1 { "" } else { "s" },
            self.elapsed_s,
        );
        let _ = writeln!(
            md,
            "Every client runs against the same redis-server in this run, which starts empty (`FLUSHALL`) \
             before each run. {} The absolute numbers are noisy; the ratios between clients are the figures to \
             read.\n",
            match (m["pinning"]["server"].as_str(), m["pinning"]["clients"].as_str()) {
                (Some(server), Some(clients)) => format!(
                    "The server runs on CPU {server} and every client on CPU {clients} (`taskset -c`), so that \
                     a client never takes the server's core."
                ),
                _ => "The server and the clients share the machine's CPUs (not pinned).".to_owned(),
            }
        );

        let _ = writeln!(md, "## Targets\n");
        let _ = writeln!(md, "| Target | Value | Limit | |\n|---|---:|---:|---|");
        for t in self.targets() {
            let _ = writeln!(
                md,
                "| {} | {} | {} {:.2}{} | {} |",
                t.label,
                // Three digits: a value rounded onto its limit would read as met.
                t.value.map_or("–".to_owned(), |v| format!("{v:.3}{}", t.unit)),
                if t.at_least { "≥" } else { "≤" },
                t.limit,
                t.unit,
                match t.met() {
                    Some(true) => "met",
                    Some(false) => "**not met**",
                    None => "no figure",
                }
            );
        }

        let _ = writeln!(
            md,
            "\n## Ratios\n\nThe figures to read: each is taken within one round (the rounds interleave the \
             clients), then the median over the rounds is shown.\n"
        );
        let _ = writeln!(md, "| Ratio | Median | spread |\n|---|---:|---:|");
        for r in self.ratios() {
            let _ = writeln!(
                md,
                "| {} | {} | {} |",
                r.label,
                fmt_ratio(r.stat.map(|s| s.median)),
                r.stat.map_or("–".to_owned(), |s| format!("{:.1}%", s.spread * 100.0)),
            );
        }

        let _ = writeln!(
            md,
            "\n## Throughput\n\n{CONCURRENCY} concurrent callers, {} operations per run, {ENTITIES} entities, \
             {VALUE_SIZE}-byte values. Every client does the executor's put on the server (`EVALSHA` of \
             write.lua), except `cas` and `update`. The executor sends the calls of a pipeline as one \
             bundle, one `EVALSHA` of its `many` script (`batch.calls_per_bundle`), which applies them one by one, each \
             atomic and answered on its own; \"one EVALSHA per call\" turns that off and sends them as \
             redis-benchmark does.\n",
            plan.ops
        );
        self.case_table(&mut md, Group::Throughput);
        let _ = writeln!(
            md,
            "\nLatency is per request for redis-benchmark (with `-P 16`, from the pipeline's send), per \
             command for plain shared, per pipeline of 16 for plain pipeline16, and per operation for the \
             executor. CPU is user + system seconds per 100 000 operations: the client's from its rusage, \
             the server's from /proc."
        );

        let _ = writeln!(
            md,
            "\n## Single caller\n\nOne caller, one request at a time, {} operations per run.\n",
            plan.single_ops
        );
        self.case_table(&mut md, Group::SingleCaller);
        md.push('\n');

        let _ = writeln!(
            md,
            "## Micro-benchmarks\n\nDivan, one thread; allocations are counted by divan's allocation profiler \
             (alloc + grow per iteration).\n"
        );
        let _ = writeln!(
            md,
            "| Benchmark | Median | Fastest | Allocations | Bytes |\n|---|---:|---:|---:|---:|"
        );
        for b in &self.micro.benchmarks {
            let _ = writeln!(
                md,
                "| {} | {} | {} | {} | {} |",
                b.name,
                fmt_ns(b.median_ns),
                fmt_ns(b.fastest_ns),
                b.allocs.map_or("0".to_owned(), |a| format!("{a}")),
                b.alloc_bytes.map_or("0".to_owned(), |a| format!("{a}")),
            );
        }
        if let Some(crowd) = self.micro.benchmarks.iter().find(|b| b.name == "executor_put_25") {
            let _ = writeln!(
                md,
                "\nAllocations per put, when 25 share a pipeline (`executor_put_25` / 25, the connection's \
                 reader included): **{:.2}** ({:.0} bytes). `executor_put` is one put alone, whose pipeline's \
                 own allocations it does not share.",
                crowd.allocs.unwrap_or(0.0) / 25.0,
                crowd.alloc_bytes.unwrap_or(0.0) / 25.0,
            );
        }

        match comparison {
            Some(comparison) => md.push_str(comparison),
            None => {
                let _ = writeln!(md, "\n## Compared with the previous report\n\nNo previous report.");
            }
        }

        let _ = writeln!(
            md,
            "\n## Commands\n\n`$VALUE` is the byte 0x03 (`BytesCodec`'s format byte) followed by {VALUE_SIZE} × \
             `v`; write.lua is loaded as {sha}.\n\n```sh\n{}",
            self.micro.command
        );
        for r in &self.results {
            let _ = writeln!(md, "{}", r.case.shown);
        }
        let _ = writeln!(md, "```");
        md
    }

    fn cost_targets(&self, cost: &Cost) -> Vec<Target> {
        let mut targets = vec![
            Target {
                id: "server_cpu_s_per_100k",
                label: "executor put server CPU per 100k operations",
                value: self.median("executor-put", "server_cpu_s_per_100k"),
                limit: TARGET_SERVER_CPU_PER_100K,
                at_least: false,
                unit: " s",
            },
            Target {
                id: "server_cpu_vs_minimal_script",
                label: "executor put server CPU / minimal versioned put script's",
                value: self.ratio(SERVER_CPU_RATIO),
                limit: TARGET_SERVER_CPU_VS_MINIMAL,
                at_least: false,
                unit: "×",
            },
            Target {
                id: "throughput_vs_minimal_script_p16",
                label: "executor put throughput / redis-benchmark -P 16 of the minimal script",
                value: self.ratio("executor_put_vs_minimal_script_p16"),
                limit: TARGET_THROUGHPUT_VS_MINIMAL,
                at_least: true,
                unit: "×",
            },
            Target {
                id: "read_server_cpu_vs_get",
                label: "executor get server CPU / redis-benchmark -P 16 GET's",
                value: self.ratio(READ_CPU_RATIO),
                limit: TARGET_READ_VS_GET,
                at_least: false,
                unit: "×",
            },
        ];
        for &(size, record, plain) in &cost.records {
            targets.push(Target {
                id: if size == 100 {
                    "record_vs_plain_100b"
                } else {
                    "record_vs_plain_1kib"
                },
                label: if size == 100 {
                    "bytes per entity / plain string, 100 B value"
                } else {
                    "bytes per entity / plain string, 1 KiB value"
                },
                value: Some(record / plain),
                limit: TARGET_RECORD_VS_PLAIN,
                at_least: false,
                unit: "×",
            });
        }
        targets
    }

    /// The server's cost per operation and per entity, as JSON.
    pub(super) fn server_cost_json(&self, cost: &Cost) -> Value {
        let cpu: serde_json::Map<String, Value> = self
            .results
            .iter()
            .filter_map(|r| Some((r.case.id.to_owned(), json!(r.median("server_cpu_s_per_100k")?))))
            .collect();
        json!({
            "server_cpu_s_per_100k": cpu,
            "records": cost.records.iter().map(|&(size, record, plain)| json!({
                "value_bytes": size, "record_bytes": record, "plain_string_bytes": plain,
            })).collect::<Vec<_>>(),
            "lease_bytes": cost.lease,
            "message_id_bytes": cost.message_id,
            "targets": self.cost_targets(cost).iter().map(|t| json!({
                "id": t.id, "value": t.value, "limit": t.limit, "met": t.met(),
            })).collect::<Vec<_>>(),
        })
    }

    /// The "Server cost" section of report.md.
    pub(super) fn server_cost_markdown(&self, cost: &Cost) -> String {
        let mut md = String::from(
            "\n## Server cost\n\nWhat Redis spends, which sets how many entities one server (or cluster \
             shard) serves: its CPU per 100k operations of each client (`/proc` of the pinned \
             `redis-server`, medians of the rounds), and `MEMORY USAGE` per entity.\n\n\
             | client | server CPU s/100k |\n|---|---:|\n",
        );
        for r in &self.results {
            if let Some(cpu) = r.median("server_cpu_s_per_100k") {
                let _ = writeln!(md, "| {} | {cpu:.3} |", r.case.label);
            }
        }
        let _ = writeln!(
            md,
            "\n| value | record bytes | plain string bytes | ratio |\n|---|---:|---:|---:|"
        );
        for &(size, record, plain) in &cost.records {
            let _ = writeln!(md, "| {size} B | {record:.0} | {plain:.0} | {:.2} |", record / plain);
        }
        let _ = writeln!(
            md,
            "\nA lease (its key and the fence counter): {:.0} bytes. A remembered message id: {:.0} bytes.\n",
            cost.lease, cost.message_id
        );
        let _ = writeln!(md, "| target | value | limit | met |\n|---|---:|---:|---|");
        for t in self.cost_targets(cost) {
            let value = t.value.map_or("–".to_owned(), |v| format!("{v:.2}{}", t.unit));
            let met = match t.met() {
                Some(true) => "yes",
                Some(false) => "not met",
                None => "–",
            };
            let _ = writeln!(md, "| {} | {value} | {}{} | {met} |", t.label, t.limit, t.unit);
        }
        md
    }

    fn case_table(&self, md: &mut String, group: Group) {
        let _ = writeln!(
            md,
            "| Client | ops/s | spread | p50 µs | p99 µs | client CPU s/100k | server CPU s/100k | conflicts |\n\
             |---|---:|---:|---:|---:|---:|---:|---:|"
        );
        for r in self.results.iter().filter(|r| r.case.group == group) {
            let conflicts: Vec<f64> = r
                .samples
                .iter()
                .filter_map(|s| Some(s.conflicts? as f64 / s.ops.max(1) as f64))
                .collect();
            let conflicts = stat(&conflicts);
            let fmt = |name: &str, digits: usize| r.median(name).map_or("–".to_owned(), |v| format!("{v:.digits$}"));
            let _ = writeln!(
                md,
                "| {} | {} | {} | {} | {} | {} | {} | {} |",
                r.case.label,
                fmt("ops_per_sec", 0),
                r.stat("ops_per_sec")
                    .map_or("–".to_owned(), |s| format!("{:.1}%", s.spread * 100.0)),
                fmt("p50_us", 0),
                fmt("p99_us", 0),
                fmt("client_cpu_s_per_100k", 3),
                fmt("server_cpu_s_per_100k", 3),
                conflicts.map_or("–".to_owned(), |s| format!("{:.0}%", s.median * 100.0)),
            );
        }
    }
}

fn fmt_ratio(value: Option<f64>) -> String {
    value.map_or("–".to_owned(), |v| format!("{v:.2}×"))
}

fn fmt_ns(ns: f64) -> String {
    if ns >= 1e6 {
        format!("{:.2} ms", ns / 1e6)
    } else if ns >= 1e3 {
        format!("{:.2} µs", ns / 1e3)
    } else {
        format!("{ns:.1} ns")
    }
}

/// Machine and source facts for the report.
pub(super) fn machine(root: &Path, redis_version: &str, pinning: Option<&Pinning>) -> Value {
    let git = |args: &[&str]| {
        Command::new("git")
            .args(args)
            .current_dir(root)
            .output()
            .ok()
            .filter(|out| out.status.success())
            .map(|out| String::from_utf8_lossy(&out.stdout).trim().to_owned())
    };
    let cpu_model = std::fs::read_to_string("/proc/cpuinfo").ok().and_then(|info| {
        info.lines()
            .find_map(|line| line.strip_prefix("model name"))
            .map(|rest| rest.trim_start_matches([' ', '\t', ':']).to_owned())
    });
    json!({
        "nproc": std::thread::available_parallelism().map_or(0, std::num::NonZero::get),
        "cpu_model": cpu_model,
        "os": std::env::consts::OS,
        "redis_server": redis_version,
        "git_commit": git(&["rev-parse", "HEAD"]),
        "git_dirty": git(&["status", "--porcelain"]).map(|s| !s.is_empty()),
        "pinning": pinning.map(|p| json!({ "server": p.server, "clients": p.clients })),
    })
}

/// `YYYY-MM-DD HH:MM` of a Unix time (civil-from-days, proleptic Gregorian).
pub(super) fn utc(secs: u64) -> String {
    let days = (secs / 86_400) as i64;
    let (hour, minute) = ((secs % 86_400) / 3600, (secs % 3600) / 60);
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!("{year:04}-{month:02}-{day:02} {hour:02}:{minute:02}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_utc() {
        assert_eq!(utc(0), "1970-01-01 00:00");
        assert_eq!(utc(1_709_251_200), "2024-03-01 00:00");
    }
}
