//! `--html FILE`: a report as one self-contained web page, for people.
//!
//! The page holds everything inline (CSS, and SVG drawn here in Rust) and asks
//! nothing of the network or of JavaScript: it opens from a CI artifact, a mail
//! attachment or a machine without internet, and a headless browser renders it
//! as is. It shows the live goroutines of each site over the trend window as a
//! chart, the verdicts with their reasons, wait reasons and blocked times per
//! site, and the creation stacks of the live goroutines as a flame graph.
//!
//! Every string of the report (function and file names, wait reasons, the
//! binary's path) comes from the target and is escaped: a Go binary can name a
//! function `<script>` as far as gleak knows.

use std::{collections::BTreeMap, fmt::Write as _, io, path::Path};

use crate::{
    analysis::verdict::{secs, Verdict},
    binary::symbolize::Frame,
    output::{
        format::{
            bytes_in_words, escape_markup as escape, short_path, site_label, truncate, write_atomically,
            BLOCKED_AT_SHOWN,
        },
        report::{Percentiles, Report, SiteReport},
    },
    runtime::debuginfo::FactSources,
};

/// Colours of the chart's series, in the order the sites are charted: Tableau
/// 10's hues, which tell apart and read on white, with its red last: a series in
/// red reads as a leak, whatever its site's verdict.
pub const SERIES_COLORS: [[u8; 3]; 10] = [
    [0x4e, 0x79, 0xa7], // blue
    [0xf2, 0x8e, 0x2b], // orange
    [0x76, 0xb7, 0xb2], // teal
    [0x59, 0xa1, 0x4f], // green
    [0xb0, 0x7a, 0xa1], // purple
    [0x9c, 0x75, 0x5f], // brown
    [0xed, 0xc9, 0x48], // yellow
    [0xff, 0x9d, 0xa7], // pink
    [0xba, 0xb0, 0xac], // grey
    [0xe1, 0x57, 0x59], // red
];

/// Writes the page of `report` to `path` atomically: into a temporary file
/// next to it, then renamed over it, so a browser reloading the page while
/// gleak runs never shows half of it.
pub fn write(report: &Report, path: &Path) -> io::Result<()> {
    write_atomically(path, &render(report))
}

/// The page of `report`: a complete HTML document.
pub fn render(report: &Report) -> String {
    let charted = charted_sites(report);
    let mut out = String::with_capacity(64 * 1024);
    let title = format!(
        "gleak: pid {} {}{}",
        report.pid,
        short_path(&report.binary),
        if report.is_final { "" } else { " (interim)" }
    );
    let _ = write!(
        out,
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n\
         <title>{}</title>\n<style>{STYLE}</style>\n</head>\n<body>\n",
        escape(&title)
    );
    write_header(&mut out, report);
    out.push_str("<section>\n<h2>Live goroutines per site</h2>\n");
    write_chart(&mut out, report, &charted);
    out.push_str("</section>\n<section>\n<h2>Verdicts</h2>\n");
    write_sites_table(&mut out, report, &charted);
    out.push_str("</section>\n<section>\n<h2>Creation stacks of the live goroutines</h2>\n");
    write_flamegraph(&mut out, report);
    out.push_str("</section>\n");
    if report.runtime_facts != FactSources::default() {
        let _ = writeln!(out, "<footer>Runtime facts: {}.</footer>", escape(&report.runtime_facts.to_string()));
    }
    out.push_str("</body>\n</html>\n");
    out
}

const STYLE: &str = "
:root { color-scheme: light; --fg: #1d2330; --muted: #5d6677; --line: #dde1e8; --bg-alt: #f5f7fa; }
* { box-sizing: border-box; }
body { margin: 0 auto; max-width: 1280px; padding: 20px 28px 40px; color: var(--fg); background: #fff;
  font: 14px/1.45 system-ui, -apple-system, 'Segoe UI', Roboto, 'DejaVu Sans', sans-serif; }
h1 { font-size: 22px; margin: 0 0 6px; }
h2 { font-size: 17px; margin: 28px 0 10px; padding-bottom: 4px; border-bottom: 1px solid var(--line); }
code, .mono, td.num { font-family: ui-monospace, 'DejaVu Sans Mono', Menlo, Consolas, monospace; font-size: 12.5px; }
.facts { display: flex; flex-wrap: wrap; gap: 4px 22px; margin: 0; color: var(--muted); }
.facts div { display: flex; gap: 6px; }
.facts dt { font-weight: 600; color: var(--fg); }
.facts dd { margin: 0; overflow-wrap: anywhere; }
.banner { margin: 10px 0 0; padding: 8px 12px; border-radius: 6px; border-left: 4px solid; }
.banner.bad { background: #fdecec; border-color: #c62828; }
.banner.good { background: #e9f6ec; border-color: #2e7d32; }
.banner.note { background: #fff7e0; border-color: #d08c00; }
.chart, .flame { width: 100%; height: auto; display: block; }
.chart text, .flame text { font-family: system-ui, 'DejaVu Sans', sans-serif; }
.legend { list-style: none; padding: 0; margin: 8px 0 0; display: flex; flex-wrap: wrap; gap: 4px 20px; }
.legend li { display: flex; align-items: center; gap: 6px; }
.swatch { display: inline-block; width: 14px; height: 14px; border-radius: 3px; flex: none; }
.empty { color: var(--muted); font-style: italic; }
.hint { color: var(--muted); margin: 0 0 8px; }
table { border-collapse: collapse; width: 100%; }
th, td { text-align: left; vertical-align: top; padding: 6px 8px; border-bottom: 1px solid var(--line); }
th { background: var(--bg-alt); font-weight: 600; white-space: nowrap; }
td.num, th.num { text-align: right; white-space: nowrap; }
td.site { overflow-wrap: anywhere; min-width: 220px; }
td.site .where { color: var(--muted); }
td.site .mono { white-space: nowrap; } /* never a line break inside file:line */
td.why { color: var(--muted); min-width: 260px; }
td.why div + div { margin-top: 3px; }
.verdict { font-weight: 700; white-space: nowrap; }
.verdict.leak { color: #c62828; }
.verdict.suspect { color: #b86e00; }
.verdict.stable { color: #1f6fa8; }
.verdict.ok { color: #2e7d32; }
.reasons { margin: 0; padding: 0; list-style: none; white-space: nowrap; }
.flame rect { stroke: #fff; stroke-width: 0.5; }
.flame g:hover rect { stroke: #1d2330; stroke-width: 1; }
footer { margin-top: 30px; color: var(--muted); font-size: 12px; }
";

// ---------------------------------------------------------------------------
// Header
// ---------------------------------------------------------------------------

fn write_header(out: &mut String, r: &Report) {
    let _ = writeln!(
        out,
        "<header>\n<h1>gleak {} report: pid {}</h1>",
        if r.is_final { "final" } else { "interim" },
        r.pid
    );
    out.push_str("<dl class=\"facts\">\n");
    let mut fact = |name: &str, value: String| {
        let _ = writeln!(out, "<div><dt>{}</dt><dd>{}</dd></div>", escape(name), escape(&value));
    };
    fact("pid", r.pid.to_string() + &r.ns_pid.map(|p| format!(" ({p} in its namespace)")).unwrap_or_default());
    fact("binary", r.binary.clone());
    fact("Go", r.go_version.clone());
    fact("mode", format!("gleak {}", r.mode));
    fact("traced for", seconds(r.elapsed_s));
    let t = &r.totals;
    fact(
        "goroutines",
        format!("{} live ({} from before attach), {} created, {} exited", t.live, t.preexisting, t.created, t.exited),
    );
    fact("lost events", r.lost_events.to_string());
    if r.target_exited {
        fact("target", "exited".into());
    }
    out.push_str("</dl>\n");

    if r.lost_events > 0 {
        banner(
            out,
            "note",
            &format!(
                "{} events lost (recovered from memory: {} creations, {} exits)",
                r.lost_events, r.reconciled_creations, r.reconciled_exits
            ),
        );
    }
    if r.kernel.stack_failed > 0 {
        banner(out, "note", &format!("{} creation stacks not recorded", r.kernel.stack_failed));
    }
    for gap in &r.gaps {
        banner(out, "note", &format!("note: {gap}"));
    }
    if let Some(m) = &r.memory {
        banner(out, if m.time_to_limit_s.is_some() { "bad" } else { "note" }, &m.line());
    }
    if let Some(p) = &r.proof {
        let text = match &p.inconclusive {
            Some(why) => format!("reachability proof inconclusive: {why}"),
            None => format!(
                "reachability proof: {} of {} blocked goroutines can never run again \
                 (heap {}, {} read, {:.0} ms)",
                p.proven,
                p.candidates,
                bytes_in_words(p.heap_bytes),
                bytes_in_words(p.bytes_read),
                finite_or_zero(p.elapsed_ms)
            ),
        };
        banner(out, if p.proven > 0 { "bad" } else { "note" }, &text);
    }
    if let Some(g) = &r.gate {
        let stop = if g.stopped_at_deadline {
            ", command stopped at the deadline"
        } else if g.interrupted {
            ", command interrupted"
        } else {
            ""
        };
        let status = g.command_status.map(|s| format!(", command exited {s}")).unwrap_or_default();
        let text = format!(
            "leak gate {}: {} leaked goroutines (fail on {}){stop}{status}; exit code {}",
            if g.failed { "FAILED" } else { "passed" },
            g.leaked_goroutines,
            g.fail_on.as_str(),
            g.exit_code
        );
        banner(out, if g.failed { "bad" } else { "good" }, &text);
    }
    out.push_str("</header>\n");
}

fn banner(out: &mut String, class: &str, text: &str) {
    let _ = writeln!(out, "<p class=\"banner {class}\">{}</p>", escape(text));
}

// ---------------------------------------------------------------------------
// Chart: live goroutines per site over the trend window
// ---------------------------------------------------------------------------

/// How many sites the chart draws: more lines than colours tell nothing apart.
const CHARTED_SITES: usize = SERIES_COLORS.len();

const CHART_W: f64 = 960.0;
const CHART_H: f64 = 280.0;
const CHART_LEFT: f64 = 64.0;
const CHART_RIGHT: f64 = 20.0;
const CHART_TOP: f64 = 16.0;
const CHART_BOTTOM: f64 = 46.0;

/// Indices (into `report.sites`) of the sites the chart draws, in colour order:
/// leaks first, then suspects, then the rest, each in the report's order
/// (most live first).
fn charted_sites(report: &Report) -> Vec<usize> {
    let mut indices: Vec<usize> =
        (0..report.sites.len()).filter(|&i| !report.sites[i].trend.live_series.is_empty()).collect();
    indices.sort_by_key(|&i| report.sites[i].verdict); // stable: keeps the report's order within a verdict
    indices.truncate(CHARTED_SITES);
    indices
}

/// `SERIES_COLORS[i]` as CSS.
fn series_color(i: usize) -> String {
    let [r, g, b] = SERIES_COLORS[i % SERIES_COLORS.len()];
    format!("#{r:02x}{g:02x}{b:02x}")
}

/// The trend window of a site in seconds, sane whatever the report says: one
/// second per point when it says nothing usable.
fn window_of(s: &SiteReport) -> f64 {
    let w = s.trend.window_s;
    if w.is_finite() && w > 0.0 {
        w
    } else {
        s.trend.live_series.len().saturating_sub(1).max(1) as f64
    }
}

fn write_chart(out: &mut String, report: &Report, charted: &[usize]) {
    let _ = writeln!(
        out,
        "<svg id=\"live-chart\" class=\"chart\" viewBox=\"0 0 {CHART_W} {CHART_H}\" \
         xmlns=\"http://www.w3.org/2000/svg\" role=\"img\" aria-label=\"live goroutines per site over time\">"
    );
    let (plot_w, plot_h) = (CHART_W - CHART_LEFT - CHART_RIGHT, CHART_H - CHART_TOP - CHART_BOTTOM);
    let (x0, y0) = (CHART_LEFT, CHART_TOP + plot_h); // the origin, bottom left
    if charted.is_empty() {
        let _ = writeln!(
            out,
            "<text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"middle\" fill=\"#5d6677\" font-size=\"15\">\
             no goroutines to chart</text>\n</svg>",
            CHART_W / 2.0,
            CHART_H / 2.0
        );
        return;
    }
    let sites: Vec<&SiteReport> = charted.iter().map(|&i| &report.sites[i]).collect();
    // x: seconds before the report, every series ending at 0 (now).
    let span = sites.iter().map(|s| window_of(s)).fold(1.0, f64::max);
    let peak = sites.iter().flat_map(|s| s.trend.live_series.iter().copied()).max().unwrap_or(0);
    let y_step = nice_step(peak.max(1) as f64, 5).max(1.0);
    let y_top = (peak.max(1) as f64 / y_step).ceil() * y_step;
    let x_of = |t: f64| x0 + (t + span) / span * plot_w;
    let y_of = |v: f64| y0 - v / y_top * plot_h;

    // Grid and y axis: counts.
    out.push_str("<g font-size=\"12\" fill=\"#5d6677\">\n");
    for i in 0..=((y_top / y_step).round() as u64).min(20) {
        let v = i as f64 * y_step;
        let y = y_of(v);
        let _ = writeln!(
            out,
            "<line x1=\"{x0:.1}\" y1=\"{y:.1}\" x2=\"{:.1}\" y2=\"{y:.1}\" stroke=\"#e6e9ef\"/>\
             <text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"end\">{}</text>",
            x0 + plot_w,
            x0 - 8.0,
            y + 4.0,
            compact(v)
        );
    }
    // x axis: seconds before the report.
    let x_step = nice_step(span, 6);
    for i in 0..=((span / x_step).floor() as u64).min(20) {
        let t = -(i as f64) * x_step;
        let x = x_of(t);
        let label = if i == 0 { "now".to_string() } else { format!("−{}s", compact(-t)) };
        let _ = writeln!(
            out,
            "<line x1=\"{x:.1}\" y1=\"{y0:.1}\" x2=\"{x:.1}\" y2=\"{:.1}\" stroke=\"#9aa3b2\"/>\
             <text x=\"{x:.1}\" y=\"{:.1}\" text-anchor=\"middle\">{label}</text>",
            y0 + 5.0,
            y0 + 19.0
        );
    }
    let _ = writeln!(
        out,
        "<line x1=\"{x0:.1}\" y1=\"{y0:.1}\" x2=\"{:.1}\" y2=\"{y0:.1}\" stroke=\"#9aa3b2\"/>\
         <line x1=\"{x0:.1}\" y1=\"{CHART_TOP:.1}\" x2=\"{x0:.1}\" y2=\"{y0:.1}\" stroke=\"#9aa3b2\"/>",
        x0 + plot_w
    );
    let _ = writeln!(
        out,
        "<text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"middle\">seconds before this report (traced for {})</text>",
        x0 + plot_w / 2.0,
        CHART_H - 6.0,
        escape(&seconds(report.elapsed_s))
    );
    let _ = writeln!(
        out,
        "<text transform=\"translate(16 {:.1}) rotate(-90)\" text-anchor=\"middle\">live goroutines</text>\n</g>",
        CHART_TOP + plot_h / 2.0
    );

    // One line per site, oldest point at the start of its own window.
    for (i, s) in sites.iter().enumerate() {
        let series = &s.trend.live_series;
        let window = window_of(s);
        let color = series_color(i);
        let point = |k: usize, v: u64| {
            let t = if series.len() < 2 { 0.0 } else { -window + window * k as f64 / (series.len() - 1) as f64 };
            (x_of(t), y_of(v as f64))
        };
        let _ = writeln!(out, "<g><title>{}</title>", escape(&format!("{}: {} live now", site_label(s), s.live)));
        if series.len() >= 2 {
            let points: Vec<String> = series
                .iter()
                .enumerate()
                .map(|(k, &v)| {
                    let (x, y) = point(k, v);
                    format!("{x:.1},{y:.1}")
                })
                .collect();
            let _ = writeln!(
                out,
                "<polyline fill=\"none\" stroke=\"{color}\" stroke-width=\"2.5\" stroke-linejoin=\"round\" \
                 points=\"{}\"/>",
                points.join(" ")
            );
        }
        // The newest point, marked: the only one of a one-point series.
        if let Some(&last) = series.last() {
            let (x, y) = point(series.len() - 1, last);
            let _ = writeln!(out, "<circle cx=\"{x:.1}\" cy=\"{y:.1}\" r=\"3.5\" fill=\"{color}\"/>");
        }
        out.push_str("</g>\n");
    }
    out.push_str("</svg>\n<ul class=\"legend\">\n");
    for (i, s) in sites.iter().enumerate() {
        let _ = writeln!(
            out,
            "<li><span class=\"swatch\" style=\"background:{}\"></span><span>{}</span> \
             <span class=\"verdict {v}\">{v}</span></li>",
            series_color(i),
            escape(&site_label(s)),
            v = s.verdict.as_str()
        );
    }
    out.push_str("</ul>\n");
    let more = report.sites.len().saturating_sub(sites.len());
    if more > 0 {
        let _ = writeln!(out, "<p class=\"empty\">{more} more sites in the table below.</p>");
    }
}

/// A round step (1, 2 or 5 times a power of ten) cutting `range` into about
/// `parts` intervals.
fn nice_step(range: f64, parts: u32) -> f64 {
    if !range.is_finite() || range <= 0.0 {
        return 1.0;
    }
    let raw = range / f64::from(parts.max(1));
    let magnitude = 10f64.powf(raw.log10().floor());
    let step = match raw / magnitude {
        n if n <= 1.0 => 1.0,
        n if n <= 2.0 => 2.0,
        n if n <= 5.0 => 5.0,
        _ => 10.0,
    };
    step * magnitude
}

/// `950`, `12k`, `3.5M`: axis labels that fit.
fn compact(v: f64) -> String {
    let a = v.abs();
    if a >= 1e9 {
        format!("{}G", trim_float(v / 1e9))
    } else if a >= 1e6 {
        format!("{}M", trim_float(v / 1e6))
    } else if a >= 1e4 {
        format!("{}k", trim_float(v / 1e3))
    } else {
        trim_float(v)
    }
}

/// At most one decimal, none when it is zero.
fn trim_float(v: f64) -> String {
    let s = format!("{v:.1}");
    s.strip_suffix(".0").map(str::to_string).unwrap_or(s)
}

// ---------------------------------------------------------------------------
// Verdicts table
// ---------------------------------------------------------------------------

fn write_sites_table(out: &mut String, report: &Report, charted: &[usize]) {
    if report.sites.is_empty() {
        out.push_str("<p class=\"empty\">No goroutines.</p>\n<table id=\"sites\"></table>\n");
        return;
    }
    out.push_str(
        "<table id=\"sites\">\n<thead><tr><th>verdict</th><th>go statement</th><th class=\"num\">live</th>\
         <th class=\"num\">created</th><th class=\"num\">exited</th><th class=\"num\">Δ live</th>\
         <th>waiting on</th><th class=\"num\">blocked for</th><th>why</th></tr></thead>\n<tbody>\n",
    );
    for (i, s) in report.sites.iter().enumerate() {
        let swatch = charted
            .iter()
            .position(|&c| c == i)
            .map(|k| format!("<span class=\"swatch\" style=\"background:{}\"></span> ", series_color(k)))
            .unwrap_or_default();
        let v = s.verdict.as_str();
        let _ = write!(out, "<tr><td class=\"verdict {v}\">{v}</td>");
        let _ = write!(out, "<td class=\"site\">{swatch}<code>{}</code>", escape(&s.function));
        if s.line != 0 {
            let _ = write!(
                out,
                "<br><span class=\"where mono\" title=\"{}\">{}:{}</span>",
                escape(&s.file),
                escape(short_path(&s.file)),
                s.line
            );
        }
        if !s.go_func.is_empty() {
            let _ = write!(out, "<br><span class=\"where\">runs <code>{}</code></span>", escape(&s.go_func));
        }
        out.push_str("</td>");
        let _ = write!(
            out,
            "<td class=\"num\">{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td>",
            s.live, s.created, s.exited
        );
        let delta = i128::from(s.trend.live_end) - i128::from(s.trend.live_start);
        let window = seconds(s.trend.window_s);
        let _ = write!(
            out,
            "<td class=\"num\" title=\"over the last {window}: {} created/s, {} exited/s\">{} in {window}<br>{}/s</td>",
            per_second(s.rates.created_per_s),
            per_second(s.rates.exited_per_s),
            if delta == 0 { "±0".to_string() } else { format!("{delta:+}") },
            change_per_second(s.trend.live_per_s),
        );
        out.push_str("<td><ul class=\"reasons\">");
        if s.wait_reasons.is_empty() {
            out.push_str("<li>-</li>");
        }
        for (reason, n) in by_count(&s.wait_reasons) {
            let _ = write!(out, "<li>{} <b>{n}</b></li>", escape(reason));
        }
        out.push_str("</ul></td>");
        let _ = write!(out, "<td class=\"num\">{}</td>", blocked_for(s.blocked_s));
        let _ = write!(out, "<td class=\"why\"><div>{}</div>", escape(&s.verdict_reason));
        for b in s.blocked_at.iter().take(BLOCKED_AT_SHOWN) {
            let _ = write!(
                out,
                "<div>{} blocked at <code>{}:{}</code> in <code>{}</code> ({})</div>",
                b.goroutines,
                escape(short_path(&b.at.file)),
                b.at.line,
                escape(&b.at.function),
                escape(&b.wait_reason)
            );
        }
        if let Some(w) = &s.wait_objects {
            let _ = write!(out, "<div>{}</div>", escape(&w.summary));
        }
        if s.proven > 0 {
            let _ = write!(out, "<div>{} proven unable to run again</div>", s.proven);
        }
        if let Some(r) = &s.retained {
            let _ = write!(
                out,
                "<div class=\"held\">memory: {} {}</div>",
                escape(&crate::output::report::describe_retained(r)),
                held_series(&r.heap_series)
            );
        }
        if let Some(h) = &s.held_by {
            let _ = write!(out, "<div>held by: <code>{}</code></div>", escape(&h.summary));
        }
        out.push_str("</td></tr>\n");
    }
    out.push_str("</tbody>\n</table>\n");
}

/// Width and height of a site's retained-memory series.
const HELD_W: f64 = 120.0;
const HELD_H: f64 = 24.0;

/// A site's retained heap at each proof of the trend window as a small line
/// (inline SVG, scaled from 0 to its largest value); nothing for fewer than two.
fn held_series(bytes: &[u64]) -> String {
    if bytes.len() < 2 {
        return String::new();
    }
    let max = bytes.iter().copied().max().unwrap_or(0).max(1) as f64;
    let step = HELD_W / (bytes.len() - 1) as f64;
    let points: Vec<String> = bytes
        .iter()
        .enumerate()
        .map(|(i, &b)| format!("{:.1},{:.1}", i as f64 * step, HELD_H - b as f64 / max * (HELD_H - 2.0) - 1.0))
        .collect();
    format!(
        "<svg class=\"held-series\" width=\"{HELD_W}\" height=\"{HELD_H}\" role=\"img\" \
         aria-label=\"retained heap at each proof, up to {}\"><path fill=\"none\" stroke=\"#e15759\" \
         stroke-width=\"1.5\" d=\"M{}\"/></svg>",
        escape(&bytes_in_words(max as u64)),
        points.join(" L")
    )
}

/// Counts busiest first, then by name.
fn by_count(counts: &BTreeMap<String, u64>) -> Vec<(&str, u64)> {
    let mut v: Vec<(&str, u64)> = counts.iter().map(|(k, &n)| (k.as_str(), n)).collect();
    v.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(b.0)));
    v
}

fn blocked_for(p: Option<Percentiles>) -> String {
    match p {
        Some(p) => format!("p50 {}<br>p90 {}<br>max {}", seconds(p.p50), seconds(p.p90), seconds(p.max)),
        None => "-".into(),
    }
}

// ---------------------------------------------------------------------------
// Flame graph of the creation stacks
// ---------------------------------------------------------------------------

const FLAME_W: f64 = 1200.0;
const FRAME_H: f64 = 20.0;
/// Frames drawn per stack at most, the innermost kept: a flame graph of a
/// deeper stack is unreadable, and the layout recurses once per frame.
const MAX_FLAME_DEPTH: usize = 128;
/// Frames narrower than this are not drawn (their parent's width says enough).
const MIN_FRAME_W: f64 = 0.5;
/// Average width of a label character at the labels' font size (12).
const CHAR_W: f64 = 7.0;

/// One frame of the flame graph: the goroutines whose creation stacks went
/// through this frame after the frames below it.
#[derive(Default)]
struct FlameNode {
    live: u64,
    /// The worst verdict of the sites whose goroutines pass here: its colour.
    worst: Option<Verdict>,
    children: BTreeMap<(String, String, u32), FlameNode>,
}

impl FlameNode {
    fn add(&mut self, live: u64, verdict: Verdict) {
        self.live = self.live.saturating_add(live);
        self.worst = Some(self.worst.map_or(verdict, |w| w.min(verdict)));
    }

    /// Adds `live` goroutines created through `stack`, innermost frame first.
    fn insert(&mut self, stack: &[Frame], live: u64, verdict: Verdict) {
        self.add(live, verdict);
        let mut node = self;
        for f in stack.iter().take(MAX_FLAME_DEPTH).rev() {
            node = node.children.entry((f.function.clone(), f.file.clone(), f.line)).or_default();
            node.add(live, verdict);
        }
    }

    fn depth(&self) -> usize {
        1 + self.children.values().map(FlameNode::depth).max().unwrap_or(0)
    }
}

/// The live goroutines of every site by creation stack, rooted at one node.
fn flame_tree(report: &Report) -> FlameNode {
    let mut root = FlameNode::default();
    for s in report.sites.iter().filter(|s| s.live > 0) {
        let mut left = s.live;
        for p in s.paths.iter().filter(|p| p.live > 0 && !p.stack.is_empty()) {
            let live = p.live.min(left);
            root.insert(&p.stack, live, s.verdict);
            left -= live;
        }
        if left == 0 {
            continue;
        }
        // Goroutines without a recorded path: under the site's busiest stack, or
        // its `go` statement alone.
        let site_frame = [Frame { function: s.function.clone(), file: s.file.clone(), line: s.line }];
        let stack = if s.stack.is_empty() { &site_frame[..] } else { &s.stack[..] };
        root.insert(stack, left, s.verdict);
    }
    root
}

fn write_flamegraph(out: &mut String, report: &Report) {
    let root = flame_tree(report);
    let depth = root.depth();
    let height = depth as f64 * FRAME_H + 4.0;
    let _ = writeln!(
        out,
        "<p class=\"hint\">Each box is a frame of the stacks that created the live goroutines, \
         callers below callees; its width is how many live goroutines it created. \
         Red: leaks, amber: suspects. Hover a box for its goroutines.</p>\n\
         <svg id=\"flamegraph\" class=\"flame\" viewBox=\"0 0 {FLAME_W} {height:.0}\" \
         xmlns=\"http://www.w3.org/2000/svg\" role=\"img\" aria-label=\"creation stacks of live goroutines\">"
    );
    if root.live == 0 {
        let _ = writeln!(
            out,
            "<text x=\"{:.0}\" y=\"14\" text-anchor=\"middle\" fill=\"#5d6677\" font-size=\"14\">\
             no live goroutines</text>\n</svg>",
            FLAME_W / 2.0
        );
        return;
    }
    let total = root.live as f64;
    let label = format!("all live goroutines: {}", root.live);
    let root_y = height - 2.0 - FRAME_H;
    write_frame(out, 0.0, root_y, FLAME_W, &label, &label, "#c9ced8");
    write_children(out, &root, 0.0, root_y, total, 1);
    out.push_str("</svg>\n");
}

/// Draws `node`'s children side by side on the row above `y`, from `x`.
fn write_children(out: &mut String, node: &FlameNode, x: f64, y: f64, total: f64, depth: usize) {
    let y = y - FRAME_H;
    let mut x = x;
    for ((function, file, line), child) in &node.children {
        let w = child.live as f64 / total * FLAME_W;
        if w >= MIN_FRAME_W {
            let place = if *line == 0 { file.clone() } else { format!("{file}:{line}") };
            let title = format!(
                "{function} ({place}): {} live goroutines, {:.1}%",
                child.live,
                100.0 * child.live as f64 / total
            );
            let color = frame_color(child.worst, function);
            write_frame(out, x, y, w, function, &title, &color);
            if depth < MAX_FLAME_DEPTH {
                write_children(out, child, x, y, total, depth + 1);
            }
        }
        x += w;
    }
}

/// One frame: a box with a tooltip and, when it fits, its label, cut to the box.
fn write_frame(out: &mut String, x: f64, y: f64, w: f64, label: &str, title: &str, color: &str) {
    let _ = write!(
        out,
        "<g><title>{}</title><rect x=\"{x:.2}\" y=\"{y:.1}\" width=\"{w:.2}\" height=\"{:.1}\" rx=\"2\" fill=\"{color}\"/>",
        escape(title),
        FRAME_H - 1.0
    );
    let fits = ((w - 6.0) / CHAR_W).floor();
    if fits >= 3.0 {
        let _ = write!(
            out,
            "<text x=\"{:.2}\" y=\"{:.1}\" font-size=\"12\" fill=\"#1d2330\">{}</text>",
            x + 3.0,
            y + FRAME_H - 5.5,
            escape(&truncate(label, fits as usize))
        );
    }
    out.push_str("</g>\n");
}

/// Leaks red, suspects amber, the rest cool; the shade varies with the function
/// so that neighbouring frames stand apart.
fn frame_color(worst: Option<Verdict>, function: &str) -> String {
    // FNV-1a: a stable shade per name, whatever the run.
    let hash = function.bytes().fold(0x811c_9dc5_u32, |h, b| (h ^ u32::from(b)).wrapping_mul(0x0100_0193));
    let shade = f64::from(hash % 1000) / 1000.0;
    let (hue, sat, light) = match worst {
        Some(Verdict::Leak) => (0.0 + 12.0 * shade, 75.0, 62.0 + 8.0 * shade),
        Some(Verdict::Suspect) => (32.0 + 10.0 * shade, 90.0, 60.0 + 8.0 * shade),
        _ => (190.0 + 40.0 * shade, 45.0, 70.0 + 8.0 * shade),
    };
    format!("hsl({hue:.0},{sat:.0}%,{light:.0}%)")
}

// ---------------------------------------------------------------------------
// Text
// ---------------------------------------------------------------------------

/// A duration for people; `-` for a value no clock gives (NaN, negative).
fn seconds(s: f64) -> String {
    if s.is_finite() && s >= 0.0 {
        secs(s)
    } else {
        "-".into()
    }
}

fn per_second(rate: f64) -> String {
    if rate.is_finite() {
        format!("{rate:.1}")
    } else {
        "-".into()
    }
}

/// A rate of change: signed.
fn change_per_second(rate: f64) -> String {
    if rate.is_finite() {
        format!("{rate:+.1}")
    } else {
        "-".into()
    }
}

fn finite_or_zero(v: f64) -> f64 {
    if v.is_finite() {
        v
    } else {
        0.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::output::{
        report::ProofReport,
        sample::{frame, leaky_report, report, site},
    };

    /// Written for a look in a browser: `GLEAK_HTML_SAMPLE=/tmp/x.html cargo test -p gleak-userspace html`.
    fn save_sample(page: &str) {
        if let Some(path) = std::env::var_os("GLEAK_HTML_SAMPLE") {
            std::fs::write(path, page).expect("write the sample page");
        }
    }

    #[test]
    fn page_has_chart_table_and_flamegraph() {
        let page = render(&leaky_report());
        save_sample(&page);
        assert!(page.starts_with("<!DOCTYPE html>"), "{page}");
        assert!(page.contains("<meta charset=\"utf-8\">"));
        for id in ["id=\"live-chart\"", "id=\"sites\"", "id=\"flamegraph\""] {
            assert_eq!(page.matches(id).count(), 1, "{id} once:\n{page}");
        }
        // One line per site, in the colours of the legend.
        assert_eq!(page.matches("<polyline").count(), 3, "{page}");
        assert!(page.contains(&format!("stroke=\"{}\"", series_color(0))), "{page}");
        assert!(page.contains("<span>main.handleRequest (src/orders/handler.go:42)</span>"), "legend:\n{page}");
        assert!(page.contains("title=\"/src/orders/handler.go\">src/orders/handler.go:42</span>"), "{page}");
        assert!(page.contains("<td class=\"verdict leak\">leak</td>"), "{page}");
        assert!(page.contains("leak for the test"), "verdict reason:\n{page}");
        assert!(page.contains("chan send <b>50</b>"), "wait reasons:\n{page}");
        assert!(page.contains("p90 8.0s"), "blocked for:\n{page}");
        assert!(page.contains("leak gate FAILED: 50 leaked goroutines"), "{page}");
        assert!(page.contains("50 of 50 blocked goroutines can never run again"), "{page}");
        // Flame graph: the root, the shared caller with every goroutine, each go statement.
        assert!(page.contains("all live goroutines: 62"), "{page}");
        assert!(page.contains("main.main (/src/orders/main.go:88): 62 live goroutines, 100.0%"), "{page}");
        assert!(page.contains("main.handleRequest (/src/orders/handler.go:42): 50 live goroutines"), "{page}");
    }

    #[test]
    fn page_is_self_contained() {
        let page = render(&leaky_report());
        for external in ["<script", "<link", "url(", "src=", "@import", "https://"] {
            assert!(!page.contains(external), "{external:?} in the page:\n{page}");
        }
        // The only URL is SVG's namespace, an identifier nothing fetches.
        let urls: Vec<&str> = page.match_indices("http://").map(|(i, _)| &page[i..i + 26]).collect();
        assert!(urls.iter().all(|u| *u == "http://www.w3.org/2000/svg"), "{urls:?}");
    }

    #[test]
    fn escapes_everything_from_the_target() {
        assert_eq!(escape(r#"a&b<c>"d"'e'"#), "a&amp;b&lt;c&gt;&quot;d&quot;&#39;e&#39;");
        assert_eq!(escape("main.(*T).run·1 — ok"), "main.(*T).run·1 — ok");
        let hostile = "main.(*T).<script>alert(1)</script>";
        let mut r = leaky_report();
        r.binary = "/tmp/<img onerror=x>".into();
        r.gaps = vec!["<b>gap</b>".into()];
        r.memory = Some(crate::output::report::MemoryReport {
            limit_bytes: 96 << 20,
            limit_source: "the cgroup's memory.max",
            limit_cgroup: Some("/<svg onload=x>".into()),
            current_bytes: 40 << 20,
            current_source: "cgroup memory.current",
            growth_bytes_per_s: 1e6,
            window_s: 30.0,
            time_to_limit_s: Some(58.0),
            note: String::new(),
        });
        r.sites[0].function = hostile.into();
        r.sites[0].file = "/src/\"quoted\"/<x>.go".into();
        r.sites[0].verdict_reason = "it's <i>bad</i> & growing".into();
        r.sites[0].wait_reasons.insert("<chan>".into(), 3);
        r.sites[0].paths[0].stack[0].function = hostile.into();
        let page = render(&r);
        for raw in
            ["<script>", "</script>", "<img", "<b>gap", "<i>bad", "<chan>", "<x>.go", "\"quoted\"", "<svg onload"]
        {
            assert!(!page.contains(raw), "{raw:?} unescaped:\n{page}");
        }
        assert!(page.contains("main.(*T).&lt;script&gt;alert(1)&lt;/script&gt;"), "{page}");
        assert!(page.contains("it&#39;s &lt;i&gt;bad&lt;/i&gt; &amp; growing"), "{page}");
        assert!(page.contains("limit (memory.max of /&lt;svg onload=x&gt;) is reached in ~58 s"), "{page}");
    }

    #[test]
    fn empty_report_renders() {
        let mut r = report(Vec::new());
        r.elapsed_s = f64::NAN;
        let page = render(&r);
        for id in ["id=\"live-chart\"", "id=\"sites\"", "id=\"flamegraph\""] {
            assert!(page.contains(id), "{id}:\n{page}");
        }
        assert!(page.contains("no goroutines to chart"), "{page}");
        assert!(page.contains("no live goroutines"), "{page}");
        assert!(!page.contains("<polyline"), "{page}");
        assert_eq!(flame_tree(&r).depth(), 1, "just the root");
        assert!(page.trim_end().ends_with("</html>"));
    }

    /// Short, flat, zero, NaN, huge: the page renders, with finite coordinates.
    #[test]
    fn odd_series_and_numbers_render() {
        let mut one_point = site(Verdict::Suspect, "main.once", "/src/a.go", 5, vec![7]);
        one_point.trend.window_s = f64::NAN;
        let mut zeros = site(Verdict::Ok, "main.gone", "/src/a.go", 9, vec![0, 0, 0]);
        zeros.trend.window_s = 0.0;
        zeros.rates.created_per_s = f64::INFINITY;
        zeros.trend.live_per_s = f64::NAN;
        zeros.blocked_s = Some(Percentiles { p50: f64::NAN, p90: -1.0, p99: 0.0, max: f64::INFINITY });
        let mut huge = site(Verdict::Leak, "main.flood", "/src/a.go", 12, vec![0, u64::MAX / 2, u64::MAX]);
        huge.paths[0].live = u64::MAX;
        huge.live = u64::MAX;
        let mut no_series = site(Verdict::Stable, "main.quiet", "/src/a.go", 20, Vec::new());
        no_series.live = 3;
        let mut r = report(vec![one_point, zeros, huge, no_series]);
        r.totals.live = u64::MAX;
        r.proof = Some(ProofReport {
            candidates: 1,
            proven: 0,
            inconclusive: Some("budget <ran> out".into()),
            heap_bytes: 0,
            bytes_read: 0,
            elapsed_ms: f64::NAN,
        });
        let page = render(&r);
        for unrepresentable in ["NaN", "inf\"", "inf,", "inf ", ">inf", "+inf"] {
            assert!(!page.contains(unrepresentable), "{unrepresentable:?} in the page:\n{page}");
        }
        assert_eq!(page.matches("<polyline").count(), 2, "series of 3 points only:\n{page}");
        assert!(page.contains("main.once (/src/a.go:5)"), "one-point series in the legend:\n{page}");
        assert!(page.contains("budget &lt;ran&gt; out"), "{page}");
    }

    /// Goroutines with no creation stack stand under their `go` statement.
    #[test]
    fn goroutines_without_stacks_are_in_the_flamegraph() {
        let mut bare = site(Verdict::Stable, "main.bare", "/src/a.go", 20, vec![3]);
        bare.paths.clear();
        bare.stack.clear();
        let mut short = site(Verdict::Leak, "main.short", "/src/a.go", 30, vec![5]);
        short.paths[0].live = 2; // 3 of the 5 have no recorded path: under the site's stack
        let page = render(&report(vec![bare, short]));
        assert!(page.contains("main.bare (/src/a.go:20): 3 live goroutines"), "{page}");
        assert!(page.contains("main.short (/src/a.go:30): 5 live goroutines"), "{page}");
        assert!(page.contains("all live goroutines: 8"), "{page}");
    }

    #[test]
    fn many_sites_chart_the_worst_ten() {
        let mut sites: Vec<SiteReport> =
            (0..15).map(|i| site(Verdict::Ok, &format!("main.ok{i}"), "/src/a.go", i + 1, vec![1, 2])).collect();
        sites.push(site(Verdict::Leak, "main.leaky", "/src/a.go", 99, vec![0, 1]));
        let r = report(sites);
        let charted = charted_sites(&r);
        assert_eq!(charted.len(), CHARTED_SITES);
        assert_eq!(r.sites[charted[0]].function, "main.leaky", "leaks come first");
        let page = render(&r);
        assert!(page.contains("6 more sites in the table below"), "{page}");
    }

    #[test]
    fn deep_stacks_are_cut() {
        let mut deep = site(Verdict::Leak, "main.deep", "/src/a.go", 1, vec![1, 2]);
        deep.paths[0].stack = (0..10_000).map(|i| frame(&format!("main.f{i}"), "/src/a.go", i + 1)).collect();
        let page = render(&report(vec![deep]));
        assert_eq!(flame_tree(&report(vec![site(Verdict::Leak, "main.deep", "/src/a.go", 1, vec![2])])).depth(), 3);
        assert!(page.contains("main.f0 ("), "the go statement's frame is kept");
        assert!(!page.contains(&format!("main.f{MAX_FLAME_DEPTH} (")), "outer frames are cut");
    }

    #[test]
    fn axis_steps_are_round() {
        assert_eq!(nice_step(50.0, 5), 10.0);
        assert_eq!(nice_step(7.0, 5), 2.0);
        assert_eq!(nice_step(30.0, 6), 5.0);
        assert_eq!(nice_step(1.0, 5), 0.2);
        assert_eq!(nice_step(f64::NAN, 5), 1.0);
        assert_eq!(nice_step(0.0, 5), 1.0);
        assert_eq!(compact(950.0), "950");
        assert_eq!(compact(12_000.0), "12k");
        assert_eq!(compact(3_500_000.0), "3.5M");
    }

    #[test]
    fn write_replaces_the_page_atomically() {
        let dir = std::env::temp_dir().join(format!("gleak-html-unit-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("report.html");
        std::fs::write(&path, "old").unwrap();
        write(&leaky_report(), &path).unwrap();
        let page = std::fs::read_to_string(&path).unwrap();
        assert!(page.contains("id=\"live-chart\""));
        let left: Vec<_> = std::fs::read_dir(&dir).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(left, ["report.html"], "no temporary file left behind");
        assert!(write(&leaky_report(), &dir.join("missing/report.html")).is_err());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn retained_memory_and_what_holds_a_suspect_are_on_the_page() {
        let mut r = leaky_report();
        r.sites[0].retained = Some(crate::output::report::RetainedReport {
            bytes: 20 << 20,
            heap_bytes: (20 << 20) - 40960,
            objects: 40,
            stack_bytes: 40960,
            goroutines: 20,
            shared_bytes: 0,
            shared_objects: 0,
            bytes_per_s: Some(1048576.0),
            measured_s_ago: 1.0,
            heap_series: vec![1 << 20, 10 << 20, 20 << 20],
        });
        r.sites[1].held_by = Some(crate::output::report::HeldBy {
            root: "main.<registry>".into(),
            hops: Vec::new(),
            wait_object: "channel 0xc000123000".into(),
            goroutines: 8,
            summary: "main.<registry> → channel 0xc000123000".into(),
        });
        let page = render(&r);
        assert!(page.contains("memory: holds 20.0 MiB"), "{page}");
        assert_eq!(page.matches("class=\"held-series\"").count(), 1, "{page}");
        assert!(page.contains("aria-label=\"retained heap at each proof, up to 20.0 MiB\""), "{page}");
        assert!(page.contains("held by: <code>main.&lt;registry&gt; → channel 0xc000123000</code>"), "{page}");
        assert_eq!(held_series(&[5]), "", "one point is no series");
    }
}
