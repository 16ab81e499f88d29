//! The divan micro-benchmarks: runs them and reads their table (time and allocations per iteration).

use std::process::Stdio;

use anyhow::{Context as _, bail};

use super::Plan;
use crate::cmd;

/// One divan benchmark: the median time and what it allocates per iteration.
#[derive(Debug, Clone)]
pub(super) struct Micro {
    pub(super) name: String,
    pub(super) fastest_ns: f64,
    pub(super) median_ns: f64,
    /// Allocations (alloc + grow) per iteration, median.
    pub(super) allocs: Option<f64>,
    /// Bytes allocated (alloc + grow) per iteration, median.
    pub(super) alloc_bytes: Option<f64>,
}

/// Divan's output and what was parsed from it.
#[derive(Debug)]
pub(super) struct MicroReport {
    pub(super) command: String,
    pub(super) table: String,
    pub(super) benchmarks: Vec<Micro>,
}

pub(super) fn micro(plan: Plan) -> anyhow::Result<MicroReport> {
    let mut bench = cmd::cargo();
    bench.args([
        "bench",
        "-p",
        "stateful-redis-benches",
        "--bench",
        "micro",
        "--",
        "--color",
        "never",
    ]);
    if plan.quick {
        bench.args(["--sample-count", "30"]);
    }
    // Shown as `cargo …`: the full path of the toolchain's cargo says nothing to a reader.
    let command = std::iter::once("cargo".to_owned())
        .chain(bench.get_args().map(cmd::quote))
        .collect::<Vec<_>>()
        .join(" ");
    eprintln!("$ {command}");
    bench.current_dir(cmd::project_root()?).stderr(Stdio::inherit());
    let out = bench.output().with_context(|| format!("failed to start `{command}`"))?;
    if !out.status.success() {
        bail!("command failed: `{command}` ({})", out.status);
    }
    let table = String::from_utf8_lossy(&out.stdout).into_owned();
    let benchmarks = parse_divan(&table);
    if benchmarks.is_empty() {
        bail!("found no benchmark in divan's output:\n{table}");
    }
    Ok(MicroReport {
        command,
        table,
        benchmarks,
    })
}

/// Reads divan's tree table: a row per benchmark (`├─ name  fastest │ slowest │ median │ …`), then
/// counter rows (`alloc:`, `grow:`, …) each followed by a count row and a bytes row.
fn parse_divan(table: &str) -> Vec<Micro> {
    let mut out: Vec<Micro> = Vec::new();
    // The counter being read and how many of its value rows were seen.
    let mut counter = String::new();
    let mut row = 0;
    for line in table.lines() {
        let line = line.trim_start_matches(['│', '├', '╰', '─', ' ']).trim_end();
        let cells: Vec<&str> = line.split('│').map(str::trim).collect();
        let [first, _slowest, median, ..] = cells.as_slice() else {
            continue;
        };
        if let Some(label) = first.strip_suffix(':') {
            counter = label.to_owned();
            row = 0;
            continue;
        }
        let words: Vec<&str> = first.split_whitespace().collect();
        match words.as_slice() {
            // A benchmark row: name, fastest value and unit.
            [name, value, unit] if cells.len() >= 6 => {
                if let (Some(fastest), Some(median)) = (nanos(value, unit), parse_time(median)) {
                    out.push(Micro {
                        name: (*name).to_owned(),
                        fastest_ns: fastest,
                        median_ns: median,
                        allocs: None,
                        alloc_bytes: None,
                    });
                    counter.clear();
                }
            }
            // A counter's count row, then its bytes row.
            _ if !counter.is_empty() => {
                row += 1;
                let Some(bench) = out.last_mut() else { continue };
                if counter != "alloc" && counter != "grow" {
                    continue;
                }
                let value = if row == 1 {
                    median.parse::<f64>().ok()
                } else {
                    parse_bytes(median)
                };
                let slot = if row == 1 {
                    &mut bench.allocs
                } else {
                    &mut bench.alloc_bytes
                };
                if let Some(value) = value {
                    *slot = Some(slot.unwrap_or(0.0) + value);
                }
            }
            _ => {}
        }
    }
    out
}

/// `"26.6 ns"` in nanoseconds.
fn parse_time(cell: &str) -> Option<f64> {
    let (value, unit) = cell.split_once(' ')?;
    nanos(value, unit)
}

fn nanos(value: &str, unit: &str) -> Option<f64> {
    let factor = match unit {
        "ps" => 1e-3,
        "ns" => 1.0,
        "µs" | "us" => 1e3,
        "ms" => 1e6,
        "s" => 1e9,
        _ => return None,
    };
    Some(value.parse::<f64>().ok()? * factor)
}

/// `"152 B"`, `"1.5 KB"` in bytes.
fn parse_bytes(cell: &str) -> Option<f64> {
    let (value, unit) = cell.split_once(' ')?;
    let factor = match unit {
        "B" => 1.0,
        "KB" => 1e3,
        "MB" => 1e6,
        "KiB" => 1024.0,
        "MiB" => 1024.0 * 1024.0,
        _ => return None,
    };
    Some(value.parse::<f64>().ok()? * factor)
}

/// Divan's samples stand in for repetitions: (median − fastest) / median.
pub(super) fn spread_micro(m: &Micro) -> f64 {
    if m.median_ns > 0.0 {
        (m.median_ns - m.fastest_ns) / m.median_ns
    } else {
        0.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_divan_table() {
        let table = "\
Timer precision: 20 ns
micro                    fastest       │ slowest       │ median        │ mean          │ samples │ iters
├─ key_state             26 ns         │ 63.57 ns      │ 26.6 ns       │ 28.05 ns      │ 100     │ 3200
│                        max alloc:    │               │               │               │         │
│                          1           │ 1             │ 1             │ 1             │         │
│                          15 B        │ 15 B          │ 15 B          │ 15 B          │         │
│                        alloc:        │               │               │               │         │
│                          1           │ 1             │ 1             │ 1             │         │
│                          15 B        │ 15 B          │ 15 B          │ 15 B          │         │
├─ parse_write_reply     69.1 ns       │ 658 ns        │ 70.04 ns      │ 75.85 ns      │ 100     │ 3200
│                        dealloc:      │               │               │               │         │
│                          1           │ 1             │ 1             │ 1             │         │
│                          112 B       │ 112 B         │ 112 B         │ 112 B         │         │
╰─ write_command         307.5 ns      │ 11.28 µs      │ 1.327 µs      │ 454.1 ns      │ 100     │ 100
                         alloc:        │               │               │               │         │
                           2           │ 3             │ 2             │ 2.01          │         │
                           72 B        │ 80 B          │ 72 B          │ 72.08 B       │         │
                         grow:         │               │               │               │         │
                           5           │ 8             │ 5             │ 5.03          │         │
                           372 B       │ 428 B         │ 372 B         │ 372.5 B       │         │
";
        let parsed = parse_divan(table);
        let names: Vec<&str> = parsed.iter().map(|m| m.name.as_str()).collect();
        assert_eq!(names, ["key_state", "parse_write_reply", "write_command"]);
        assert_eq!(parsed[0].median_ns, 26.6);
        assert_eq!(parsed[0].allocs, Some(1.0));
        assert_eq!(parsed[0].alloc_bytes, Some(15.0));
        assert_eq!(parsed[1].allocs, None);
        assert_eq!(parsed[2].median_ns, 1327.0);
        assert_eq!(parsed[2].fastest_ns, 307.5);
        assert_eq!(parsed[2].allocs, Some(7.0));
        assert_eq!(parsed[2].alloc_bytes, Some(444.0));
    }
}
