//! The report: a JSON document, a Markdown table and an SVG plot.

use crate::stats::RunSummary;
use serde::Serialize;
use std::fmt::Write;

/// One target's figures at one rate divided by `direct-rr`'s at the same rate (below 1 is
/// better for latencies, above 1 is better for throughput).
#[derive(Debug, Clone, Serialize)]
pub struct Ratio {
    /// Target name.
    pub target: String,
    /// Rate.
    pub rate: f64,
    /// p90 TTFT / direct-rr's p90 TTFT.
    pub ttft_p90: Option<f64>,
    /// p90 end-to-end / direct-rr's.
    pub e2e_p90: Option<f64>,
    /// Output tokens/s / direct-rr's.
    pub output_tokens_per_s: Option<f64>,
}

/// Everything a run produced.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// The command line that produced it.
    pub command: String,
    /// Workload name and parameters.
    pub workload: serde_json::Value,
    /// Server pool, driver and schedule settings.
    pub settings: serde_json::Value,
    /// Latencies are simulated seconds: wall-clock time measured by the client divided by the
    /// time scale.
    pub units: String,
    /// One summary per (rate, target), rates ascending, targets in the order given.
    pub results: Vec<RunSummary>,
    /// Ratios to `direct-rr` (when it ran) for every other target.
    pub ratios: Vec<Ratio>,
}

fn div(a: Option<f64>, b: Option<f64>) -> Option<f64> {
    match (a, b) {
        (Some(a), Some(b)) if b > 0.0 => Some(a / b),
        _ => None,
    }
}

/// Ratios of every target to `direct-rr` at the same rate.
pub fn ratios(results: &[RunSummary]) -> Vec<Ratio> {
    let mut out = Vec::new();
    for r in results.iter().filter(|r| r.target != "direct-rr") {
        let Some(base) = results
            .iter()
            .find(|b| b.target == "direct-rr" && b.rate == r.rate)
        else {
            continue;
        };
        out.push(Ratio {
            target: r.target.clone(),
            rate: r.rate,
            ttft_p90: div(r.ttft.p90, base.ttft.p90),
            e2e_p90: div(r.e2e.p90, base.e2e.p90),
            output_tokens_per_s: div(Some(r.output_tokens_per_s), Some(base.output_tokens_per_s)),
        });
    }
    out
}

fn secs(v: Option<f64>) -> String {
    match v {
        None => "–".into(),
        Some(v) if v < 1.0 => format!("{v:.3}"),
        Some(v) if v < 100.0 => format!("{v:.2}"),
        Some(v) => format!("{v:.0}"),
    }
}

fn ms(v: Option<f64>) -> String {
    v.map_or("–".into(), |v| format!("{:.1}", v * 1e3))
}

fn times(v: Option<f64>) -> String {
    v.map_or("–".into(), |v| format!("{v:.2}×"))
}

/// The Markdown table of `report`: one row per (rate, target).
pub fn markdown(report: &Report) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "`{}`\n", report.command);
    let _ = writeln!(
        out,
        "Workload `{}`; latencies in simulated seconds (TPOT in simulated ms); ratios are to `direct-rr` at the same rate.\n",
        report.workload["name"].as_str().unwrap_or("?")
    );
    out.push_str(
        "| rate (req/s) | target | done/sent | req/s | out tok/s | TTFT p50 | TTFT p90 | TTFT p99 | TPOT p50 | TPOT p90 | TPOT p99 | e2e p50 | e2e p90 | e2e p99 | 429 | errors | cached | TTFT p90 ×rr | e2e p90 ×rr | tok/s ×rr |\n",
    );
    out.push_str(
        "|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n",
    );
    for r in &report.results {
        let ratio = report
            .ratios
            .iter()
            .find(|x| x.target == r.target && x.rate == r.rate);
        let errors: usize = r.errors.values().sum::<usize>() + r.in_flight_cap_hits;
        let _ = writeln!(
            out,
            "| {} | {} | {}/{} | {:.2} | {:.0} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
            r.rate,
            r.target,
            r.completed,
            r.sent,
            r.throughput_rps,
            r.output_tokens_per_s,
            secs(r.ttft.p50),
            secs(r.ttft.p90),
            secs(r.ttft.p99),
            ms(r.tpot.p50),
            ms(r.tpot.p90),
            ms(r.tpot.p99),
            secs(r.e2e.p50),
            secs(r.e2e.p90),
            secs(r.e2e.p99),
            r.rejected_429,
            errors,
            r.cached_prompt_share
                .map_or("–".into(), |c| format!("{:.0}%", c * 100.0)),
            times(ratio.and_then(|x| x.ttft_p90)),
            times(ratio.and_then(|x| x.e2e_p90)),
            times(ratio.and_then(|x| x.output_tokens_per_s)),
        );
    }
    let lag = report
        .results
        .iter()
        .filter_map(|r| r.send_lag_p99_ms)
        .fold(0.0, f64::max);
    let _ = writeln!(
        out,
        "\nLargest p99 send lag: {lag:.1} wall ms (how late the driver sent requests; large values mean the machine could not keep up)."
    );
    out
}

const COLORS: [&str; 8] = [
    "#7f7f7f", "#1f77b4", "#2ca02c", "#d62728", "#9467bd", "#ff7f0e", "#8c564b", "#e377c2",
];

/// XML-escapes text for SVG.
fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// One line chart (as an SVG group at `dx`): `value` of each result against its rate, one line
/// per target; returns false if there is nothing to draw.
fn chart(
    out: &mut String,
    results: &[RunSummary],
    targets: &[String],
    value: impl Fn(&RunSummary) -> Option<f64>,
    title: &str,
    dx: f64,
) {
    let (w, h, l, r, t, b) = (560.0, 400.0, 70.0, 20.0, 40.0, 50.0);
    let mut rates: Vec<f64> = results.iter().map(|x| x.rate).collect();
    rates.sort_by(f64::total_cmp);
    rates.dedup();
    let vals: Vec<f64> = results.iter().filter_map(&value).collect();
    let max = vals.iter().copied().fold(0.0, f64::max);
    // A round tick step (1, 2 or 5 times a power of ten) giving about five gridlines.
    let raw = if max > 0.0 { max / 5.0 } else { 1.0 };
    let mag = 10f64.powf(raw.log10().floor());
    let step = [1.0, 2.0, 5.0, 10.0]
        .iter()
        .map(|m| m * mag)
        .find(|s| *s >= raw)
        .unwrap_or(10.0 * mag);
    let ticks = ((max / step).ceil() as usize).max(1);
    let top = step * ticks as f64;
    let (rmin, rmax) = (
        rates.first().copied().unwrap_or(0.0),
        rates.last().copied().unwrap_or(1.0),
    );
    let span = if rmax > rmin { rmax - rmin } else { 1.0 };
    let x = |rate: f64| {
        if rates.len() <= 1 {
            dx + l + (w - l - r) / 2.0
        } else {
            dx + l + 20.0 + (w - l - r - 40.0) * (rate - rmin) / span
        }
    };
    let y = |v: f64| t + (h - t - b) * (1.0 - v / top);
    let _ = writeln!(
        out,
        r#"<text x="{:.1}" y="22" text-anchor="middle" font-size="15">{}</text>"#,
        dx + w / 2.0,
        esc(title)
    );
    let _ = writeln!(
        out,
        r#"<line x1="{:.1}" y1="{}" x2="{:.1}" y2="{}" stroke="black"/>"#,
        dx + l,
        h - b,
        dx + w - r,
        h - b
    );
    let _ = writeln!(
        out,
        r#"<line x1="{:.1}" y1="{t}" x2="{:.1}" y2="{}" stroke="black"/>"#,
        dx + l,
        dx + l,
        h - b
    );
    let _ = writeln!(
        out,
        r#"<text x="{:.1}" y="{}" text-anchor="middle">rate (requests per simulated second)</text>"#,
        dx + (l + w - r) / 2.0,
        h - 12.0
    );
    let mid = (t + h - b) / 2.0;
    let _ = writeln!(
        out,
        r#"<text x="{:.1}" y="{mid}" text-anchor="middle" transform="rotate(-90 {:.1} {mid})">simulated seconds</text>"#,
        dx + 16.0,
        dx + 16.0
    );
    let decimals = if step >= 1.0 {
        0
    } else {
        (-step.log10().floor()) as usize
    };
    for k in 0..=ticks {
        let v = step * k as f64;
        let _ = writeln!(
            out,
            r##"<line x1="{:.1}" y1="{:.1}" x2="{:.1}" y2="{:.1}" stroke="#ddd"/>"##,
            dx + l - 4.0,
            y(v),
            dx + w - r,
            y(v)
        );
        let _ = writeln!(
            out,
            r#"<text x="{:.1}" y="{:.1}" text-anchor="end">{v:.decimals$}</text>"#,
            dx + l - 6.0,
            y(v) + 4.0
        );
    }
    for rate in &rates {
        let _ = writeln!(
            out,
            r#"<text x="{:.1}" y="{}" text-anchor="middle">{rate}</text>"#,
            x(*rate),
            h - b + 18.0
        );
    }
    for (j, name) in targets.iter().enumerate() {
        let c = COLORS[j % COLORS.len()];
        let mut pts: Vec<(f64, f64)> = results
            .iter()
            .filter(|s| &s.target == name)
            .filter_map(|s| value(s).map(|v| (x(s.rate), y(v))))
            .collect();
        pts.sort_by(|a, b| a.0.total_cmp(&b.0));
        if pts.len() > 1 {
            let line: Vec<String> = pts.iter().map(|(a, b)| format!("{a:.1},{b:.1}")).collect();
            let _ = writeln!(
                out,
                r#"<polyline fill="none" stroke="{c}" stroke-width="2" points="{}"/>"#,
                line.join(" ")
            );
        }
        for (px, py) in &pts {
            let _ = writeln!(
                out,
                r#"<circle cx="{px:.1}" cy="{py:.1}" r="4" fill="{c}"/>"#
            );
        }
    }
}

/// An SVG with two charts side by side: p90 time to first token and p90 end-to-end latency
/// against the rate, one line per target, and a legend below. Hand-written SVG in the style of
/// `benches/peers/peers.py` (no plotting dependency).
pub fn svg(report: &Report) -> String {
    let mut targets: Vec<String> = Vec::new();
    for r in &report.results {
        if !targets.contains(&r.target) {
            targets.push(r.target.clone());
        }
    }
    let legend_h = 22.0 * targets.len() as f64 + 20.0;
    let (w, h) = (1120.0, 400.0 + legend_h);
    let mut out = String::new();
    let _ = writeln!(
        out,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" viewBox="0 0 {w} {h}" font-family="sans-serif" font-size="12">"#
    );
    let _ = writeln!(out, r#"<rect width="{w}" height="{h}" fill="white"/>"#);
    let workload = report.workload["name"].as_str().unwrap_or("?");
    chart(
        &mut out,
        &report.results,
        &targets,
        |r| r.ttft.p90,
        &format!("p90 time to first token ({workload})"),
        0.0,
    );
    chart(
        &mut out,
        &report.results,
        &targets,
        |r| r.e2e.p90,
        &format!("p90 end-to-end latency ({workload})"),
        560.0,
    );
    for (j, name) in targets.iter().enumerate() {
        let c = COLORS[j % COLORS.len()];
        let ly = 410.0 + 22.0 * j as f64;
        let _ = writeln!(
            out,
            r#"<line x1="90" y1="{ly}" x2="110" y2="{ly}" stroke="{c}" stroke-width="2"/>"#
        );
        let _ = writeln!(
            out,
            r#"<text x="116" y="{:.1}">{}</text>"#,
            ly + 4.0,
            esc(name)
        );
    }
    out.push_str("</svg>\n");
    out
}
