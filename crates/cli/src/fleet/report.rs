//! `--report DIR`: report.json (the summary and the timeline) and report.html, one
//! self-contained page whose charts are inline SVG (no script, style sheet or font is fetched).

use std::fmt::Write as _;
use std::path::Path;

use anyhow::Context;

use super::Summary;
use super::instance::Fleet;
use super::sample::{Mark, Timeline};

const COLOURS: [&str; 8] = [
    "#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#17becf",
];

/// Writes both files into `dir` (created if missing).
pub(crate) fn write(dir: &Path, summary: &Summary, timeline: &Timeline, fleet: &Fleet) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let json = serde_json::json!({ "summary": summary, "timeline": timeline });
    std::fs::write(dir.join("report.json"), serde_json::to_string_pretty(&json)?)?;
    std::fs::write(dir.join("report.html"), html(summary, timeline, fleet))?;
    Ok(())
}

/// One line of a chart.
pub(crate) struct Series<'a> {
    pub(crate) name: &'a str,
    pub(crate) points: Vec<(f64, f64)>,
}

/// Text for HTML and SVG.
fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// A line chart with one line per series, vertical marks and a legend, as an `<svg>`.
pub(crate) fn line_chart(id: &str, title: &str, unit: &str, series: &[Series<'_>], marks: &[Mark]) -> String {
    let (w, h, left, right, top, bottom) = (900.0, 260.0, 60.0, 160.0, 30.0, 30.0);
    let (pw, ph) = (w - left - right, h - top - bottom);
    let t_max = series
        .iter()
        .flat_map(|s| s.points.iter().map(|p| p.0))
        .chain(marks.iter().map(|m| m.t))
        .fold(1.0_f64, f64::max);
    let y_max = series
        .iter()
        .flat_map(|s| s.points.iter().map(|p| p.1))
        .fold(0.0_f64, f64::max)
        .max(1e-9)
        * 1.1;
    let x = |t: f64| left + t / t_max * pw;
    let y = |v: f64| top + ph - v / y_max * ph;
    let mut svg = String::new();
    let _ = write!(
        svg,
        r#"<svg id="{id}" class="chart" xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {w} {h}" width="{w}" height="{h}" role="img"><title>{}</title>"#,
        escape(title)
    );
    let _ = write!(svg, r#"<text x="{left}" y="18" class="title">{}</text>"#, escape(title));
    let _ = write!(
        svg,
        r##"<rect x="{left}" y="{top}" width="{pw}" height="{ph}" fill="none" stroke="#999"/>"##
    );
    for k in 0..=4 {
        let v = y_max * f64::from(k) / 4.0;
        let _ = write!(
            svg,
            r##"<text x="{}" y="{:.1}" class="axis" text-anchor="end">{}</text><line x1="{left}" x2="{}" y1="{:.1}" y2="{:.1}" stroke="#eee"/>"##,
            left - 4.0,
            y(v) + 4.0,
            short(v),
            left + pw,
            y(v),
            y(v)
        );
    }
    let _ = write!(
        svg,
        r#"<text x="{}" y="{}" class="axis" text-anchor="end">{:.0} s</text><text x="{left}" y="{}" class="axis">0 s</text><text x="8" y="{}" class="axis">{}</text>"#,
        left + pw,
        h - 10.0,
        t_max,
        h - 10.0,
        top - 6.0,
        escape(unit)
    );
    for m in marks {
        let _ = write!(
            svg,
            r##"<line class="mark" x1="{0:.1}" x2="{0:.1}" y1="{top}" y2="{1}" stroke="#555" stroke-dasharray="4 3"><title>{2:.1} s: {3}</title></line>"##,
            x(m.t),
            top + ph,
            m.t,
            escape(&m.what)
        );
    }
    for (n, s) in series.iter().enumerate() {
        let colour = COLOURS[n % COLOURS.len()];
        let points: Vec<String> = s
            .points
            .iter()
            .map(|&(t, v)| format!("{:.1},{:.1}", x(t), y(v)))
            .collect();
        let _ = write!(
            svg,
            r#"<polyline class="series" data-name="{}" data-points="{}" fill="none" stroke="{colour}" stroke-width="1.8" points="{}"/>"#,
            escape(s.name),
            s.points.len(),
            points.join(" ")
        );
        let ly = top + 14.0 * n as f64 + 8.0;
        let _ = write!(
            svg,
            r#"<rect x="{}" y="{}" width="10" height="10" fill="{colour}"/><text x="{}" y="{}" class="legend">{}</text>"#,
            left + pw + 10.0,
            ly - 8.0,
            left + pw + 24.0,
            ly + 1.0,
            escape(s.name)
        );
    }
    svg.push_str("</svg>");
    svg
}

/// Bars of the intervals each alert spent pending (amber) and firing (red).
fn alert_chart(timeline: &Timeline) -> String {
    let t_max = timeline.samples.last().map_or(1.0, |s| s.t).max(1.0);
    let mut rows: Vec<String> = timeline
        .samples
        .iter()
        .flat_map(|s| s.alerts.iter().map(|a| format!("{} ({})", a.rule, a.instance)))
        .collect();
    rows.sort();
    rows.dedup();
    let (w, left, right, row_h, top) = (900.0, 330.0, 20.0, 20.0, 30.0);
    let h = top + row_h * rows.len().max(1) as f64 + 24.0;
    let pw = w - left - right;
    let mut svg = format!(
        r#"<svg id="alerts" class="chart" xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {w} {h}" width="{w}" height="{h}" role="img"><title>Alerts pending and firing</title><text x="8" y="18" class="title">Alerts: pending (amber) and firing (red)</text>"#
    );
    if rows.is_empty() {
        let _ = write!(
            svg,
            r#"<text x="8" y="{}" class="axis">no alert was pending or firing</text>"#,
            top + 14.0
        );
    }
    let step = timeline
        .samples
        .windows(2)
        .map(|p| p[1].t - p[0].t)
        .fold(1.0_f64, f64::min)
        .max(0.1);
    for (r, name) in rows.iter().enumerate() {
        let y = top + row_h * r as f64;
        let _ = write!(
            svg,
            r#"<text x="8" y="{:.1}" class="axis">{}</text>"#,
            y + 14.0,
            escape(name)
        );
        for s in &timeline.samples {
            if let Some(a) = s
                .alerts
                .iter()
                .find(|a| format!("{} ({})", a.rule, a.instance) == *name)
            {
                let colour = if a.state == "firing" { "#d62728" } else { "#ffb000" };
                let _ = write!(
                    svg,
                    r#"<rect class="interval" data-state="{}" x="{:.1}" y="{:.1}" width="{:.1}" height="{}" fill="{colour}"><title>{:.0} s: {}</title></rect>"#,
                    a.state,
                    left + s.t / t_max * pw,
                    y + 3.0,
                    (step / t_max * pw).max(1.0),
                    row_h - 6.0,
                    s.t,
                    a.state
                );
            }
        }
    }
    let _ = write!(
        svg,
        r#"<text x="{left}" y="{:.1}" class="axis">0 s</text><text x="{}" y="{:.1}" class="axis" text-anchor="end">{t_max:.0} s</text></svg>"#,
        h - 6.0,
        left + pw,
        h - 6.0
    );
    svg
}

fn short(v: f64) -> String {
    if v >= 10_000.0 {
        format!("{:.0}k", v / 1000.0)
    } else if v >= 100.0 {
        format!("{v:.0}")
    } else {
        format!("{v:.2}")
    }
}

/// The page.
pub(crate) fn html(summary: &Summary, timeline: &Timeline, fleet: &Fleet) -> String {
    let samples = &timeline.samples;
    let mut ops: Vec<&str> = samples.iter().flat_map(|s| s.rates.keys().copied()).collect();
    ops.sort_unstable();
    ops.dedup();
    let mut throughput = vec![Series {
        name: "total",
        points: samples.iter().map(|s| (s.t, s.total_rate)).collect(),
    }];
    for op in &ops {
        throughput.push(Series {
            name: op,
            points: samples
                .iter()
                .map(|s| (s.t, s.rates.get(op).copied().unwrap_or(0.0)))
                .collect(),
        });
    }
    let latency = [
        Series {
            name: "p50",
            points: samples.iter().map(|s| (s.t, s.p50_ms)).collect(),
        },
        Series {
            name: "p99",
            points: samples.iter().map(|s| (s.t, s.p99_ms)).collect(),
        },
    ];
    let ownership: Vec<Series<'_>> = fleet
        .names
        .iter()
        .enumerate()
        .map(|(n, name)| Series {
            name,
            points: samples
                .iter()
                .map(|s| (s.t, s.instances.get(n).map_or(0.0, |i| i.held as f64)))
                .collect(),
        })
        .chain(std::iter::once(Series {
            name: "active (presence)",
            points: samples
                .iter()
                .filter_map(|s| s.active_devices.map(|a| (s.t, a as f64)))
                .collect(),
        }))
        .collect();
    let mut page = String::from(
        r#"<!doctype html><html lang="en"><head><meta charset="utf-8"><title>stateful-redis fleet report</title><style>
body{font-family:system-ui,sans-serif;margin:24px;color:#222;max-width:960px}
table{border-collapse:collapse;margin:8px 0}td,th{border:1px solid #ccc;padding:3px 8px;text-align:left;font-size:14px}
.pass{color:#2ca02c;font-weight:bold}.fail{color:#d62728;font-weight:bold}
svg .title{font-size:14px;font-weight:bold}svg .axis,svg .legend{font-size:11px}
</style></head><body>"#,
    );
    let verdict = if summary.passed { "PASSED" } else { "FAILED" };
    let _ = write!(
        page,
        r#"<h1>Fleet run: <span id="verdict" class="{}">{verdict}</span></h1><p>{} devices, {} driver instances, {:.1} s on {} ({}), lease ttl {} ms: {} operations, {:.0} per second{}.</p>"#,
        if summary.passed { "pass" } else { "fail" },
        summary.devices,
        summary.instances,
        summary.duration_s,
        escape(&summary.redis),
        summary.topology,
        summary.lease_ttl_ms,
        summary.ops,
        summary.ops_per_sec,
        summary
            .ops_per_cpu_sec
            .map(|c| format!(", {c:.0} per CPU second of the client"))
            .unwrap_or_default()
    );
    if let (Some(p50), Some(max)) = (summary.takeover_p50_ms, summary.takeover_max_ms) {
        let _ = write!(
            page,
            "<p>Takeovers: {} devices; from the dead holder's lease expiry to the new owner's first fenced write p50 {p50} ms, max {max} ms.</p>",
            summary.takeovers
        );
    }
    page.push_str("<h2>Verification</h2><table id=\"checks\"><tr><th>check</th><th>result</th><th>detail</th></tr>");
    for c in &summary.checks {
        let _ = write!(
            page,
            r#"<tr><td>{}</td><td class="{}">{}</td><td>{}</td></tr>"#,
            escape(c.name),
            if c.passed { "pass" } else { "fail" },
            if c.passed { "pass" } else { "FAIL" },
            escape(&c.detail)
        );
    }
    page.push_str("</table><h2>Over time</h2><p>Dashed lines: the run's events (hover for what happened).</p>");
    page.push_str(&line_chart(
        "throughput",
        "Throughput",
        "ops/s",
        &throughput,
        &timeline.marks,
    ));
    page.push_str(&line_chart("latency", "Latency", "ms", &latency, &timeline.marks));
    page.push_str(&line_chart(
        "ownership",
        "Leases held per instance",
        "devices",
        &ownership,
        &timeline.marks,
    ));
    page.push_str(&alert_chart(timeline));
    if let Some(last) = samples.last() {
        page.push_str(
            "<h2>Instances</h2><table id=\"instances\"><tr><th>instance</th><th>state</th><th>held</th>\
             <th>acquired</th><th>lost</th><th>taken over</th><th>fenced</th></tr>",
        );
        for i in &last.instances {
            let _ = write!(
                page,
                "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                escape(&i.name),
                i.life.name(),
                i.held,
                i.acquired,
                i.lost,
                i.taken_over,
                i.fenced
            );
        }
        page.push_str("</table>");
    }
    page.push_str("<h2>Events</h2><table id=\"events\"><tr><th>t</th><th>event</th></tr>");
    for m in &timeline.marks {
        let _ = write!(page, "<tr><td>{:.1} s</td><td>{}</td></tr>", m.t, escape(&m.what));
    }
    page.push_str("</table><h2>Advisor</h2>");
    if summary.suggestions.is_empty() {
        page.push_str("<p id=\"suggestions\">No suggestions.</p>");
    } else {
        page.push_str(
            "<table id=\"suggestions\"><tr><th>area</th><th>finding</th><th>evidence</th><th>change</th></tr>",
        );
        for s in &summary.suggestions {
            let evidence: Vec<String> = s.evidence.iter().map(|(k, v)| format!("{k} = {v:.3}")).collect();
            let _ = write!(
                page,
                "<tr><td>{:?}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                s.area,
                escape(&s.finding),
                escape(&evidence.join(", ")),
                escape(&s.change)
            );
        }
        page.push_str("</table>");
    }
    if !summary.errors.is_empty() {
        page.push_str("<h2>Errors by kind</h2><table>");
        for (k, n) in &summary.errors {
            let _ = write!(page, "<tr><td>{}</td><td>{n}</td></tr>", escape(k));
        }
        page.push_str("</table>");
    }
    page.push_str("</body></html>\n");
    page
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_line_chart_is_one_svg_with_its_points_marks_and_escaped_names() {
        let series = [Series {
            name: "a<b",
            points: vec![(0.0, 1.0), (1.0, 3.0), (2.0, 2.0)],
        }];
        let marks = [Mark {
            t: 1.5,
            what: "driver-1 killed & gone".into(),
        }];
        let svg = line_chart("x", "Throughput", "ops/s", &series, &marks);
        assert!(svg.starts_with("<svg id=\"x\"") && svg.ends_with("</svg>"), "{svg}");
        assert_eq!(svg.matches("<polyline").count(), 1);
        assert!(svg.contains(r#"data-points="3""#), "{svg}");
        assert!(svg.contains("a&lt;b") && !svg.contains("a<b"), "{svg}");
        assert!(svg.contains("killed &amp; gone"), "{svg}");
        assert_eq!(svg.matches("class=\"mark\"").count(), 1);
    }

    #[test]
    fn an_empty_chart_still_draws() {
        let svg = line_chart("x", "Nothing", "ms", &[], &[]);
        assert!(svg.contains("</svg>") && !svg.contains("NaN"), "{svg}");
    }
}
