//! Renderers: a terminal table, Markdown for a PR comment, JSON for tools, and a self-contained
//! HTML page whose charts are inline SVG (no scripts, no network).

use std::fmt::Write as _;

use crate::analyze::{DurationStats, JobStats, Outcome, Report, WorkflowReport};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Table,
    Markdown,
    Json,
    Html,
}

impl std::str::FromStr for Format {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "table" => Ok(Format::Table),
            "markdown" | "md" => Ok(Format::Markdown),
            "json" => Ok(Format::Json),
            "html" => Ok(Format::Html),
            other => Err(format!("unknown format `{other}`; use table, markdown, json or html")),
        }
    }
}

pub fn render(report: &Report, format: Format) -> String {
    match format {
        Format::Table => table(report),
        Format::Markdown => markdown(report),
        Format::Json => json(report),
        Format::Html => html(report),
    }
}

pub fn json(report: &Report) -> String {
    // Serialising plain structs with string keys cannot fail; an empty object is a safe fallback.
    let mut s = serde_json::to_string_pretty(report).unwrap_or_else(|_| "{}".into());
    s.push('\n');
    s
}

fn secs(d: &Option<DurationStats>, f: impl Fn(&DurationStats) -> i64) -> String {
    d.as_ref().map_or("-".into(), |d| format!("{} s", f(d)))
}

fn cancel_detail(j: &JobStats) -> String {
    let c = &j.cancelled;
    let parts: Vec<String> = [(c.superseded, "sup"), (c.manual, "man"), (c.before_start, "pre"), (c.fail_fast, "ff"), (c.unknown, "?")]
        .iter()
        .filter(|(n, _)| *n > 0)
        .map(|(n, k)| format!("{n} {k}"))
        .collect();
    if parts.is_empty() {
        c.total.to_string()
    } else {
        format!("{} ({})", c.total, parts.join(", "))
    }
}

const HEAD: [&str; 13] =
    ["job", "runs", "ok", "fail", "t/o", "skip", "cancelled", "cancel%", "median", "p90", "max", "queue p50", "cxl, sib ok"];

fn row(j: &JobStats) -> Vec<String> {
    vec![
        j.label.clone(),
        j.runs.to_string(),
        j.success.to_string(),
        j.failure.to_string(),
        j.timed_out.to_string(),
        j.skipped.to_string(),
        cancel_detail(j),
        format!("{:.1}%", j.cancel_rate * 100.0),
        secs(&j.duration, |d| d.median),
        secs(&j.duration, |d| d.p90),
        secs(&j.duration, |d| d.max),
        secs(&j.queue, |d| d.median),
        j.cancelled_while_sibling_succeeded.to_string(),
    ]
}

fn runs_line(w: &WorkflowReport) -> String {
    let by: Vec<String> = w.runs_by_conclusion.iter().map(|(k, v)| format!("{v} {k}")).collect();
    let span = match (w.first_run, w.last_run) {
        (Some(a), Some(b)) => format!(", {} .. {}", a.date(), b.date()),
        _ => String::new(),
    };
    format!("{} ({}){span}; {} with jobs", crate::verdict::plural(w.runs, "run", "runs"), by.join(", "), w.runs_with_jobs)
}

pub fn table(report: &Report) -> String {
    let mut out = String::new();
    for w in &report.workflows {
        let _ = writeln!(out, "workflow {}: {}", w.workflow, runs_line(w));
        if !w.jobs.is_empty() {
            let rows: Vec<Vec<String>> = w.jobs.iter().map(row).collect();
            let widths: Vec<usize> = (0..HEAD.len())
                .map(|i| rows.iter().map(|r| r[i].chars().count()).chain([HEAD[i].chars().count()]).max().unwrap_or(0))
                .collect();
            let line = |cells: Vec<String>| -> String {
                let mut l = String::new();
                for (i, c) in cells.iter().enumerate() {
                    let pad = widths[i].saturating_sub(c.chars().count());
                    if i == 0 {
                        l.push_str(c);
                        l.push_str(&" ".repeat(pad));
                    } else {
                        l.push_str("  ");
                        l.push_str(&" ".repeat(pad));
                        l.push_str(c);
                    }
                }
                l.trim_end().to_string()
            };
            let _ = writeln!(out, "  {}", line(HEAD.iter().map(|s| s.to_string()).collect()));
            for r in rows {
                let _ = writeln!(out, "  {}", line(r));
            }
        }
        for v in &w.verdict {
            let _ = writeln!(out, "  * {v}");
        }
        out.push('\n');
    }
    if report.workflows.is_empty() {
        out.push_str("no runs in the input (after --since / --limit / --workflow)\n");
    }
    tail_notes(report, &mut out, "");
    let _ = writeln!(out, "legend: {LEGEND}");
    out
}

const LEGEND: &str = "sup = superseded by a newer run, man = cancelled by hand, pre = cancelled before it started, \
ff = fail-fast after a sibling failed, ? = unknown cause; durations are of successful runs; \
cxl, sib ok = runs where the job was cancelled while a sibling job succeeded";

fn tail_notes(report: &Report, out: &mut String, bullet: &str) {
    if !report.orphan_jobs.is_empty() {
        let list: Vec<String> =
            report.orphan_jobs.iter().map(|o| format!("run {} ({})", o.run_id, crate::verdict::plural(o.jobs, "job", "jobs"))).collect();
        let _ = writeln!(out, "{bullet}jobs whose run is not in the input (not counted): {}", list.join(", "));
    }
    if !report.notes.is_empty() {
        let _ = writeln!(out, "{bullet}files not used ({}):", report.notes.len());
        for n in &report.notes {
            let _ = writeln!(out, "{bullet}  {}: {}", n.file, n.reason);
        }
    }
}

fn md_escape(s: &str) -> String {
    s.replace('|', "\\|").replace('<', "&lt;").replace('>', "&gt;")
}

pub fn markdown(report: &Report) -> String {
    let mut out = String::from("# CI report\n\n");
    for w in &report.workflows {
        let _ = writeln!(out, "## `{}`\n\n{}\n", md_escape(&w.workflow), runs_line(w));
        if !w.jobs.is_empty() {
            let _ = writeln!(out, "| {} |", HEAD.join(" | "));
            let _ = writeln!(out, "|{}", " --- |".repeat(HEAD.len()));
            for j in &w.jobs {
                let cells: Vec<String> = row(j).iter().map(|c| md_escape(c)).collect();
                let _ = writeln!(out, "| {} |", cells.join(" | "));
            }
            let _ = writeln!(out, "\n<sub>{}</sub>\n", md_escape(LEGEND));
        }
        for v in &w.verdict {
            let _ = writeln!(out, "- {}", md_escape(v));
        }
        if !w.runs_missing_jobs.is_empty() {
            let _ = writeln!(out, "\n<details><summary>{} runs without jobs</summary>\n", w.runs_missing_jobs.len());
            for r in &w.runs_missing_jobs {
                let _ = writeln!(out, "- run {} ({}, {}, {})", r.id, r.label(), r.conclusion, r.created_at);
            }
            out.push_str("\n</details>\n");
        }
        out.push('\n');
    }
    if report.workflows.is_empty() {
        out.push_str("No runs in the input.\n\n");
    }
    tail_notes(report, &mut out, "- ");
    out
}

fn esc(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

const PALETTE: [&str; 8] = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#17becf", "#8c564b", "#e377c2"];

pub fn html(report: &Report) -> String {
    let mut out = String::from(
        "<!doctype html>\n<html><head><meta charset=\"utf-8\"><title>kiln ci-report</title>\n<style>\
body{font-family:system-ui,sans-serif;margin:2em;color:#222}table{border-collapse:collapse}\
td,th{border:1px solid #ccc;padding:.25em .6em;text-align:right}td:first-child,th:first-child{text-align:left}\
svg{background:#fafafa;border:1px solid #ddd;margin:.5em 0}.legend span{margin-right:1.5em}\
</style></head><body>\n<h1>CI report</h1>\n",
    );
    for w in &report.workflows {
        let _ = writeln!(out, "<h2>{}</h2>\n<p>{}</p>", esc(&w.workflow), esc(&runs_line(w)));
        if !w.jobs.is_empty() {
            out.push_str("<table><tr>");
            for h in HEAD {
                let _ = write!(out, "<th>{}</th>", esc(h));
            }
            out.push_str("</tr>\n");
            for j in &w.jobs {
                out.push_str("<tr>");
                for c in row(j) {
                    let _ = write!(out, "<td>{}</td>", esc(&c));
                }
                out.push_str("</tr>\n");
            }
            let _ = writeln!(out, "</table>\n<p><small>{}</small></p>", esc(LEGEND));
        }
        out.push_str("<ul>\n");
        for v in &w.verdict {
            let _ = writeln!(out, "<li>{}</li>", esc(v));
        }
        out.push_str("</ul>\n");
        if w.jobs.iter().any(|j| j.points.iter().any(|p| p.seconds.is_some())) {
            out.push_str("<div class=\"legend\">");
            for (i, j) in w.jobs.iter().enumerate() {
                let _ = write!(out, "<span style=\"color:{}\">&#9632; {}</span>", PALETTE[i % PALETTE.len()], esc(&j.label));
            }
            out.push_str("<span>&#9675; successful run &#215; cancelled &#9650; failed</span></div>\n");
            out.push_str(&duration_chart(w));
            out.push_str(&histogram(w));
        }
    }
    if report.workflows.is_empty() {
        out.push_str("<p>No runs in the input.</p>\n");
    }
    let mut notes = String::new();
    tail_notes(report, &mut notes, "");
    if !notes.is_empty() {
        let _ = writeln!(out, "<pre>{}</pre>", esc(&notes));
    }
    out.push_str("</body></html>\n");
    out
}

const W: f64 = 900.0;
const H: f64 = 300.0;
const PAD: f64 = 50.0;

/// Each job's wall time per run against the run's creation time.
fn duration_chart(w: &WorkflowReport) -> String {
    let pts: Vec<(usize, &crate::analyze::Point, i64)> =
        w.jobs.iter().enumerate().flat_map(|(i, j)| j.points.iter().filter_map(move |p| p.seconds.map(|s| (i, p, s)))).collect();
    let (Some(t0), Some(t1)) = (pts.iter().map(|p| p.1.at.0).min(), pts.iter().map(|p| p.1.at.0).max()) else {
        return String::new();
    };
    let ymax = pts.iter().map(|p| p.2).max().unwrap_or(1).max(1) as f64 * 1.1;
    let span = (t1 - t0).max(1) as f64;
    let x = |t: i64| PAD + (t - t0) as f64 / span * (W - 2.0 * PAD);
    let y = |s: i64| H - PAD + -(s as f64 / ymax) * (H - 2.0 * PAD);
    let mut s = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{W}\" height=\"{H}\" viewBox=\"0 0 {W} {H}\" role=\"img\" aria-label=\"job duration over time\">\n<text x=\"{PAD}\" y=\"20\" font-size=\"14\">duration per run (s) over time</text>\n"
    );
    axes(&mut s, ymax);
    let _ = writeln!(
        s,
        "<text x=\"{PAD}\" y=\"{}\" font-size=\"11\">{}</text><text x=\"{}\" y=\"{}\" font-size=\"11\" text-anchor=\"end\">{}</text>",
        H - PAD + 18.0,
        ts_date(t0),
        W - PAD,
        H - PAD + 18.0,
        ts_date(t1)
    );
    for (i, j) in w.jobs.iter().enumerate() {
        let color = PALETTE[i % PALETTE.len()];
        let line: Vec<String> = j
            .points
            .iter()
            .filter(|p| p.outcome == Outcome::Success)
            .filter_map(|p| p.seconds.map(|v| format!("{:.1},{:.1}", x(p.at.0), y(v))))
            .collect();
        if line.len() > 1 {
            let _ = writeln!(s, "<polyline fill=\"none\" stroke=\"{color}\" stroke-opacity=\"0.5\" points=\"{}\"/>", line.join(" "));
        }
        for p in &j.points {
            let Some(v) = p.seconds else { continue };
            let (cx, cy) = (x(p.at.0), y(v));
            let title = format!("{} run {}: {} s, {}", j.label, p.run_id, v, outcome_word(&p.outcome));
            match p.outcome {
                Outcome::Success => {
                    let _ = writeln!(
                        s,
                        "<circle cx=\"{cx:.1}\" cy=\"{cy:.1}\" r=\"3\" fill=\"none\" stroke=\"{color}\"><title>{}</title></circle>",
                        esc(&title)
                    );
                }
                Outcome::Cancelled(_) => {
                    let _ = writeln!(
                        s,
                        "<path d=\"M{:.1},{:.1}l6,6m0,-6l-6,6\" stroke=\"{color}\"><title>{}</title></path>",
                        cx - 3.0,
                        cy - 3.0,
                        esc(&title)
                    );
                }
                _ => {
                    let _ =
                        writeln!(s, "<path d=\"M{cx:.1},{:.1}l4,7h-8z\" fill=\"{color}\"><title>{}</title></path>", cy - 4.0, esc(&title));
                }
            }
        }
    }
    s.push_str("</svg>\n");
    s
}

fn ts_date(t: i64) -> String {
    crate::time::Timestamp(t).date()
}

fn outcome_word(o: &Outcome) -> String {
    match o {
        Outcome::Success => "success".into(),
        Outcome::Failure => "failure".into(),
        Outcome::TimedOut => "timed out".into(),
        Outcome::Skipped => "skipped".into(),
        Outcome::Cancelled(k) => {
            format!("cancelled ({})", serde_json::to_value(k).ok().and_then(|v| v.as_str().map(String::from)).unwrap_or_default())
        }
        Outcome::Other(s) => s.clone(),
        Outcome::InProgress => "in progress".into(),
    }
}

fn axes(s: &mut String, ymax: f64) {
    let _ = writeln!(
        s,
        "<line x1=\"{PAD}\" y1=\"{b}\" x2=\"{r}\" y2=\"{b}\" stroke=\"#888\"/><line x1=\"{PAD}\" y1=\"{PAD}\" x2=\"{PAD}\" y2=\"{b}\" stroke=\"#888\"/>",
        b = H - PAD,
        r = W - PAD
    );
    for k in 0..=4 {
        let v = ymax * k as f64 / 4.0;
        let yy = H - PAD - (H - 2.0 * PAD) * k as f64 / 4.0;
        let _ = writeln!(s, "<text x=\"{}\" y=\"{:.1}\" font-size=\"10\" text-anchor=\"end\">{:.0}</text>", PAD - 4.0, yy + 3.0, v);
    }
}

/// Successful durations of every job, binned together so the jobs' shapes can be compared.
fn histogram(w: &WorkflowReport) -> String {
    let per_job: Vec<Vec<i64>> =
        w.jobs.iter().map(|j| j.points.iter().filter(|p| p.outcome == Outcome::Success).filter_map(|p| p.seconds).collect()).collect();
    let all: Vec<i64> = per_job.iter().flatten().copied().collect();
    let (Some(lo), Some(hi)) = (all.iter().min().copied(), all.iter().max().copied()) else {
        return String::new();
    };
    const BINS: usize = 20;
    let width = ((hi - lo) as f64 / BINS as f64).max(1.0);
    let mut counts = vec![vec![0usize; BINS]; per_job.len()];
    for (i, v) in per_job.iter().enumerate() {
        for d in v {
            let b = (((d - lo) as f64 / width) as usize).min(BINS - 1);
            counts[i][b] += 1;
        }
    }
    let cmax = counts.iter().flatten().copied().max().unwrap_or(1).max(1) as f64;
    let mut s = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{W}\" height=\"{H}\" viewBox=\"0 0 {W} {H}\" role=\"img\" aria-label=\"histogram of successful durations\">\n<text x=\"{PAD}\" y=\"20\" font-size=\"14\">successful durations (s): runs per bin</text>\n"
    );
    axes(&mut s, cmax);
    let slot = (W - 2.0 * PAD) / BINS as f64;
    let bar = slot / per_job.len().max(1) as f64;
    for (i, row) in counts.iter().enumerate() {
        let color = PALETTE[i % PALETTE.len()];
        for (b, c) in row.iter().enumerate() {
            if *c == 0 {
                continue;
            }
            let h = *c as f64 / cmax * (H - 2.0 * PAD);
            let from = lo as f64 + b as f64 * width;
            let _ = writeln!(
                s,
                "<rect x=\"{:.1}\" y=\"{:.1}\" width=\"{:.1}\" height=\"{h:.1}\" fill=\"{color}\" fill-opacity=\"0.7\"><title>{}: {c} runs of {:.0}-{:.0} s</title></rect>",
                PAD + b as f64 * slot + i as f64 * bar,
                H - PAD - h,
                bar.max(1.0),
                esc(&w.jobs[i].label),
                from,
                from + width
            );
        }
    }
    for k in [0usize, BINS / 2, BINS] {
        let _ = writeln!(
            s,
            "<text x=\"{:.1}\" y=\"{}\" font-size=\"10\" text-anchor=\"middle\">{:.0}</text>",
            PAD + k as f64 * slot,
            H - PAD + 14.0,
            lo as f64 + k as f64 * width
        );
    }
    s.push_str("</svg>\n");
    s
}
