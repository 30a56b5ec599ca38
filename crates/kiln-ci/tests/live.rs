//! The live client against a local server that replays pages: recorded ones from
//! ../shared/fixtures/github-api, and generated ones.

mod support;

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use kiln_ci::live::{Fetcher, LiveConfig, Token};
use kiln_ci::synth::Synth;
use kiln_ci::{analyze, render, Format, LiveError, Options, Timestamp};
use serde_json::Value;
use support::replay::synth_server;
use support::server::{Resp, Server};

fn fixture(name: &str) -> Vec<u8> {
    let p = PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../../../shared/fixtures/github-api")).join(name);
    std::fs::read(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

fn config(base: &str) -> LiveConfig {
    LiveConfig {
        api_url: base.to_string(),
        repo: "o/r".into(),
        workflow: "ci.yml".into(),
        token: Some(Token::new("test-token")),
        since: None,
        limit: None,
        etag_dir: None,
        save_dir: None,
        max_wait: Duration::from_secs(60),
    }
}

fn run_ids_in(name: &str) -> Vec<u64> {
    let v: Value = serde_json::from_slice(&fixture(name)).unwrap();
    v["workflow_runs"].as_array().unwrap().iter().map(|r| r["id"].as_u64().unwrap()).collect()
}

const RUN_PAGES: [&str; 4] = [
    "octokit.rb__ActionsWorkflowRuns.repository_workflow_runs.auto-paginates_the_results__0.json",
    "octokit.rb__ActionsWorkflowRuns.repository_workflow_runs.auto-paginates_the_results__1.json",
    "octokit.rb__ActionsWorkflowRuns.repository_workflow_runs.auto-paginates_the_results__2.json",
    "cascade__runs_failure.json",
];
const JOB_PAGES: [&str; 2] = [
    "octokit.rb__ActionsWorkflowJobs.workflow_run_attempt_jobs.auto-paginates_the_results__0.json",
    "octokit.rb__ActionsWorkflowJobs.workflow_run_attempt_jobs.auto-paginates_the_results__1.json",
];

#[test]
fn replays_recorded_pages_following_link_headers() {
    let first_octokit_run = run_ids_in(RUN_PAGES[0])[0];
    let server = Server::start(move |req, base| {
        let page: usize = req.query("page").and_then(|p| p.parse().ok()).unwrap_or(1);
        let path = req.path().to_string();
        if path == "/repos/o/r/actions/workflows/ci.yml/runs" {
            let mut r = Resp::json(fixture(RUN_PAGES[page - 1]));
            if page < RUN_PAGES.len() {
                r = r.header(
                    "Link",
                    format!("<{base}{path}?per_page=100&page={}>; rel=\"next\", <{base}{path}?page=4>; rel=\"last\"", page + 1),
                );
            }
            return r;
        }
        if path == "/repos/o/r/actions/runs/34616832399/jobs" {
            return Resp::json(fixture("cascade__run_jobs.json"));
        }
        if path == format!("/repos/o/r/actions/runs/{first_octokit_run}/jobs") {
            let mut r = Resp::json(fixture(JOB_PAGES[page - 1]));
            if page == 1 {
                r = r.header("Link", format!("<{base}{path}?per_page=100&filter=latest&page=2>; rel=\"next\""));
            }
            return r;
        }
        if path.ends_with("/jobs") {
            return Resp::json(r#"{"total_count":0,"jobs":[]}"#);
        }
        Resp::status(404, r#"{"message":"Not Found"}"#)
    });
    let mut f = Fetcher::new(config(&server.base)).unwrap();
    let history = f.fetch().expect("fetch");

    let mut want: Vec<u64> = RUN_PAGES.iter().flat_map(|p| run_ids_in(p)).collect();
    want.sort_unstable();
    let mut got: Vec<u64> = history.runs.iter().map(|r| r.id).collect();
    got.sort_unstable();
    assert_eq!(got, want);
    assert_eq!(history.jobs.len(), 18 + 2);

    let reqs = server.requests();
    let targets: Vec<&str> = reqs.iter().map(|r| r.target.as_str()).collect();
    for p in 2..=4 {
        assert!(targets.iter().any(|t| t.contains("/runs?") && t.ends_with(&format!("page={p}"))), "{targets:#?}");
    }
    assert!(targets.iter().any(|t| t.contains(&format!("{first_octokit_run}/jobs")) && t.ends_with("page=2")));
    // No job was cancelled, so no annotations were asked for.
    assert!(!targets.iter().any(|t| t.contains("annotations")));
    assert!(reqs.iter().all(|r| r.header("authorization") == Some("Bearer test-token")));
    // 4 run pages; jobs: cascade 1 page, the first octokit run 2, the other two 1 each.
    assert_eq!(f.stats.pages, 4 + 1 + 2 + 1 + 1);

    let report = analyze(&history, &Options::default());
    let cascade = report.workflows.iter().find(|w| w.workflow.contains("cascade")).unwrap();
    assert_eq!(cascade.jobs.len(), 18);
    // The recorded octokit job pages belong to another run id than the one asked for: kiln keeps
    // the body's word and reports those jobs as unplaced, rather than dropping them.
    assert_eq!(report.orphan_jobs.len(), 1);
    assert_eq!(report.orphan_jobs[0].jobs, 2);
    let octokit = report.workflows.iter().find(|w| w.workflow.contains("workflow.yml")).unwrap();
    assert_eq!(octokit.runs_missing_jobs.len(), 3);
}

#[test]
fn live_report_equals_directory_report_and_second_fetch_is_all_304() {
    let s = Synth::two_arch(21);
    let dir = tempfile::tempdir().unwrap();
    s.write_dir(dir.path(), 30).unwrap();
    let from_dir = analyze(&kiln_ci::read_dir(dir.path()).unwrap(), &Options::default());

    let server = synth_server(s.clone());
    let cache = tempfile::tempdir().unwrap();
    let save = tempfile::tempdir().unwrap();
    let mut cfg = config(&server.base);
    cfg.etag_dir = Some(cache.path().join("etags"));
    cfg.save_dir = Some(save.path().to_path_buf());

    let mut first = Fetcher::new(cfg.clone()).unwrap();
    let live = analyze(&first.fetch().unwrap(), &Options::default());
    assert_eq!(first.stats.not_modified, 0);
    // 3 run pages, 64 job pages, and annotations for every cancelled job (5 + 13).
    assert_eq!(first.stats.requests, 3 + 64 + 18);
    assert_eq!(render(&live, Format::Json), render(&from_dir, Format::Json));
    let w = &live.workflows[0];
    assert_eq!(w.cancel_ratio.as_ref().unwrap().ratio, Some(2.6));
    assert_eq!(w.pair("arm64", "amd64"), s.ledger.cancelled_while_sibling_succeeded.len());
    assert!(std::fs::read_dir(cache.path().join("etags")).unwrap().count() >= 85);

    // Second time round every request is conditional and answered 304 from the cache on disk.
    let mut second = Fetcher::new(cfg.clone()).unwrap();
    let again = analyze(&second.fetch().unwrap(), &Options::default());
    assert_eq!(second.stats.requests, first.stats.requests);
    assert_eq!(second.stats.not_modified, second.stats.requests);
    assert_eq!(render(&again, Format::Json), render(&live, Format::Json));
    let conditional = server.requests().iter().filter(|r| r.header("if-none-match").is_some()).count();
    assert_eq!(conditional, second.stats.requests);

    // What --save wrote reads back as a directory and gives the same report.
    let saved = analyze(&kiln_ci::read_dir(save.path()).unwrap(), &Options::default());
    assert_eq!(render(&saved, Format::Json), render(&live, Format::Json));

    // --limit asks for fewer runs and stops paginating.
    let mut cfg = config(&server.base);
    cfg.limit = Some(10);
    let mut limited = Fetcher::new(cfg).unwrap();
    let h = limited.fetch().unwrap();
    assert_eq!(h.runs.len(), 10);
    let newest: Vec<u64> = s.run_ids().into_iter().rev().take(10).collect();
    assert!(h.runs.iter().all(|r| newest.contains(&r.id)));
}

#[test]
fn rate_limit_with_a_distant_reset_stops_with_the_reset_time() {
    let reset = Timestamp::now().0 + 3600;
    let server = Server::start(move |_, _| {
        Resp::status(403, r#"{"message":"API rate limit exceeded for 127.0.0.1.","documentation_url":"https://docs.github.com/rest"}"#)
            .header("x-ratelimit-limit", "60")
            .header("x-ratelimit-remaining", "0")
            .header("x-ratelimit-reset", reset.to_string())
    });
    let slept = Arc::new(Mutex::new(Vec::new()));
    let s2 = slept.clone();
    let mut f = Fetcher::new(config(&server.base)).unwrap().with_sleeper(move |d| s2.lock().unwrap().push(d));
    let err = f.fetch().unwrap_err();
    assert!(matches!(err, LiveError::RateLimited { status: 403, .. }), "{err}");
    let msg = err.to_string();
    assert!(msg.contains("rate limit") && msg.contains("HTTP 403") && msg.contains("resets at"), "{msg}");
    assert!(msg.contains("/actions/workflows/ci.yml/runs"), "{msg}");
    assert!(msg.contains("--max-wait") && msg.contains("GITHUB_TOKEN"), "{msg}");
    assert!(slept.lock().unwrap().is_empty(), "must not sit out an hour");
    assert_eq!(server.requests().len(), 1, "must not retry into the limit");
}

#[test]
fn rate_limit_with_a_near_reset_is_waited_out() {
    let s = Synth::two_arch(4);
    let inner = synth_server(s);
    let inner_base = inner.base.clone();
    let hits = Arc::new(Mutex::new(0usize));
    let h2 = hits.clone();
    // A front server: the first runs request and the first jobs request are refused, once each.
    let server = Server::start(move |req, base| {
        let mut n = h2.lock().unwrap();
        *n += 1;
        let first_runs = *n == 1;
        let first_jobs = *n == 3;
        drop(n);
        if first_runs {
            return Resp::status(403, r#"{"message":"API rate limit exceeded"}"#)
                .header("x-ratelimit-remaining", "0")
                .header("x-ratelimit-reset", (Timestamp::now().0 + 2).to_string());
        }
        if first_jobs {
            return Resp::status(429, r#"{"message":"You have exceeded a secondary rate limit"}"#).header("retry-after", "1");
        }
        // Relay to the synthetic server.
        let url = format!("{inner_base}{}", req.target);
        match ureq::get(&url).call() {
            Ok(r) => {
                let link = r.header("link").map(String::from);
                let mut resp = Resp::json(r.into_string().unwrap_or_default());
                if let Some(l) = link {
                    // Keep following through this front server.
                    resp = resp.header("Link", l.replace(&inner_base, base));
                }
                resp
            }
            Err(e) => Resp::status(502, &e.to_string()),
        }
    });
    let slept = Arc::new(Mutex::new(Vec::new()));
    let s2 = slept.clone();
    let mut f = Fetcher::new(config(&server.base)).unwrap().with_sleeper(move |d| s2.lock().unwrap().push(d));
    let history = f.fetch().expect("waits out both limits");
    assert_eq!(history.runs.len(), 64);
    assert_eq!(f.stats.rate_limit_waits, 2);
    let slept = slept.lock().unwrap();
    assert_eq!(slept.len(), 2);
    assert!(slept[0] >= Duration::from_secs(1) && slept[0] <= Duration::from_secs(60));
    assert_eq!(slept[1], Duration::from_secs(1), "retry-after is obeyed");
}

#[test]
fn http_errors_say_what_to_do() {
    let server = Server::start(|req, _| match req.header("authorization") {
        Some("Bearer good") => Resp::status(404, r#"{"message":"Not Found","documentation_url":"x"}"#),
        _ => Resp::status(401, r#"{"message":"Bad credentials","documentation_url":"x"}"#),
    });
    let mut cfg = config(&server.base);
    cfg.token = Some(Token::new("bad"));
    let msg = Fetcher::new(cfg.clone()).unwrap().fetch().unwrap_err().to_string();
    assert!(msg.contains("HTTP 401") && msg.contains("Bad credentials") && msg.contains("GITHUB_TOKEN"), "{msg}");
    cfg.token = Some(Token::new("good"));
    let msg = Fetcher::new(cfg.clone()).unwrap().fetch().unwrap_err().to_string();
    assert!(msg.contains("HTTP 404") && msg.contains("--workflow"), "{msg}");
    cfg.repo = "just-a-name".into();
    let msg = Fetcher::new(cfg).err().unwrap().to_string();
    assert!(msg.contains("OWNER/NAME"), "{msg}");
    // Nothing listening: a transport error naming the URL.
    let dead = format!("http://{}", std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap());
    let msg = Fetcher::new(config(&dead)).unwrap().fetch().unwrap_err().to_string();
    assert!(msg.contains(&dead) && msg.contains("--api-url"), "{msg}");
}
