//! The verdict: the figures of a [`WorkflowReport`] said in plain words.
//!
//! It answers the question a maintainer asks when one job keeps showing red: is it broken, or is it
//! just slow enough to be the one a newer push cancels?

use crate::analyze::{FailureScope, JobStats, WorkflowReport};

pub(crate) fn plural(n: usize, one: &str, many: &str) -> String {
    format!("{n} {}", if n == 1 { one } else { many })
}

fn pct(part: usize, whole: usize) -> String {
    if whole == 0 {
        return "0%".into();
    }
    format!("{:.0}%", part as f64 * 100.0 / whole as f64)
}

/// Format a ratio like `2.6×`.
pub fn ratio(r: f64) -> String {
    format!("{r:.1}×")
}

pub(crate) fn verdict(w: &WorkflowReport) -> Vec<String> {
    let mut out = Vec::new();
    if w.runs_with_jobs == 0 {
        out.push(format!(
            "No jobs were found for any of the {}, so only run conclusions can be counted; fetch the jobs of each run (`gh api repos/OWNER/REPO/actions/runs/ID/jobs`).",
            plural(w.runs, "run", "runs")
        ));
        return out;
    }
    let ran: Vec<&JobStats> = w.jobs.iter().filter(|j| j.runs > j.skipped).collect();
    let Some(worst) = ran.iter().copied().max_by(|a, b| a.red_marks().cmp(&b.red_marks()).then_with(|| b.name.cmp(&a.name))) else {
        out.push("Every job was skipped in every run.".into());
        return out;
    };
    let red = worst.red_marks();
    let tied: Vec<&JobStats> = ran.iter().copied().filter(|j| red > 0 && j.red_marks() == red).collect();
    if tied.len() > 2 {
        // No job stands out: naming one would mislead.
        let fails: usize = tied.iter().map(|j| j.failure + j.timed_out).sum();
        let cancels: usize = tied.iter().map(|j| j.cancelled.total).sum();
        let names: Vec<&str> = tied.iter().take(5).map(|j| j.label.as_str()).collect();
        let more = tied.len().saturating_sub(names.len());
        out.push(format!(
            "No single job stands out: {} jobs have {} each ({}{}); together {} and {}.",
            tied.len(),
            plural(red, "red mark", "red marks"),
            names.join(", "),
            if more > 0 { format!(" and {more} more") } else { String::new() },
            plural(fails, "failure", "failures"),
            plural(cancels, "cancellation", "cancellations"),
        ));
    } else if red == 0 {
        out.push(format!("No red marks: every job of the {} succeeded or was skipped.", plural(w.runs_with_jobs, "run", "runs")));
    } else {
        let fails = worst.failure + worst.timed_out;
        let mut s = if worst.cancelled.total * 2 > red {
            format!("{}'s red marks are mostly cancellations ({} of {red})", worst.label, worst.cancelled.total)
        } else {
            format!("{}'s red marks are mostly failures ({} of {red})", worst.label, fails)
        };
        // Compare with the calmest sibling: the one cancelled least often.
        let reference = ran
            .iter()
            .copied()
            .filter(|j| j.name != worst.name)
            .min_by(|a, b| a.cancel_rate.total_cmp(&b.cancel_rate).then_with(|| a.name.cmp(&b.name)));
        if let Some(r) = reference {
            if let (Some(wd), Some(rd)) = (&worst.duration, &r.duration) {
                if rd.median > 0 && wd.median * 10 > rd.median * 11 {
                    let longer = ((wd.median as f64 / rd.median as f64 - 1.0) * 100.0).round();
                    s.push_str(&format!(
                        "; {} takes {longer:.0}% longer than {} (median {} s vs {} s)",
                        worst.label, r.label, wd.median, rd.median
                    ));
                    if worst.cancelled.total > 0 && worst.cancelled_while_sibling_succeeded * 2 >= worst.cancelled.total {
                        s.push_str(", so it is the job still running when a newer push cancels the run");
                    }
                }
            }
        }
        s.push('.');
        out.push(s);

        if let Some(cr) = &w.cancel_ratio {
            let most = w.job(&cr.most);
            let least = w.job(&cr.least);
            if let (Some(m), Some(l)) = (most, least) {
                let head = match cr.ratio {
                    Some(x) => format!("The cancel ratio is {}", ratio(x)),
                    None => format!("{} is cancelled, {} never", m.label, l.label),
                };
                out.push(format!(
                    "{head}: {} is cancelled in {} of {} runs ({}), {} in {} of {} ({}).",
                    m.label,
                    m.cancelled.total,
                    m.runs,
                    pct(m.cancelled.total, m.runs),
                    l.label,
                    l.cancelled.total,
                    l.runs,
                    pct(l.cancelled.total, l.runs)
                ));
                let n = w.pair(&m.label, &l.label);
                out.push(format!("In {} {} was cancelled while {} succeeded.", plural(n, "run", "runs"), m.label, l.label));
            }
        }
        if worst.cancelled.total > 0 {
            let c = &worst.cancelled;
            let parts: Vec<String> = [
                (c.superseded, "superseded by a newer run"),
                (c.manual, "cancelled by hand"),
                (c.before_start, "cancelled before they started"),
                (c.fail_fast, "stopped by fail-fast after a sibling failed"),
                (c.unknown, "of unknown cause"),
            ]
            .iter()
            .filter(|(n, _)| *n > 0)
            .map(|(n, what)| format!("{n} {what}"))
            .collect();
            out.push(format!("{}'s cancellations: {}.", worst.label, parts.join(", ")));
        }
    }

    let code: Vec<String> = w.failures.iter().filter(|f| f.scope == FailureScope::EveryJob).map(|f| f.run.label()).collect();
    if !code.is_empty() {
        let width = w.failures.iter().find(|f| f.scope == FailureScope::EveryJob).map_or(0, |f| f.jobs_in_run);
        let all = match width {
            1 => "its only job".to_string(),
            2 => "both jobs".to_string(),
            n => format!("all {n} jobs"),
        };
        out.push(format!(
            "{} hit every job of the run: a code failure ({all}): run {}.",
            plural(code.len(), "failure", "failures"),
            code.join(", ")
        ));
    }
    let single: Vec<String> = w
        .failures
        .iter()
        .filter(|f| f.scope == FailureScope::OneJob)
        .map(|f| format!("{} in run {}", f.failed_jobs.join(", "), f.run.label()))
        .collect();
    if !single.is_empty() {
        out.push(format!(
            "{} hit one job only ({}): look at that job's runner or platform, or a flaky test, before the code.",
            plural(single.len(), "failure", "failures"),
            single.join("; ")
        ));
    }
    let some: Vec<String> = w
        .failures
        .iter()
        .filter(|f| f.scope == FailureScope::SomeJobs)
        .map(|f| format!("run {}: {} of {} jobs ({})", f.run.label(), f.failed_jobs.len(), f.jobs_in_run, f.failed_jobs.join(", ")))
        .collect();
    if !some.is_empty() {
        out.push(format!("{} hit some jobs but not all: {}.", plural(some.len(), "failure", "failures"), some.join("; ")));
    }
    if !w.runs_missing_jobs.is_empty() {
        let ids: Vec<String> = w.runs_missing_jobs.iter().take(10).map(|r| r.id.to_string()).collect();
        let more = w.runs_missing_jobs.len().saturating_sub(ids.len());
        out.push(format!(
            "{} of {} have no jobs in the input (run ids {}{}); they count in the run totals but not in the job figures.",
            w.runs_missing_jobs.len(),
            plural(w.runs, "run", "runs"),
            ids.join(", "),
            if more > 0 { format!(" and {more} more") } else { String::new() }
        ));
    }
    out
}
