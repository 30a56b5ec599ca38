//! Serving a generated history the way the API would: pages of runs with Link headers, jobs,
//! annotations, ETags and 304s.

#![allow(dead_code)]

use std::sync::Arc;

use kiln_ci::synth::Synth;

use super::server::{Resp, Server};

pub fn etag_of(body: &[u8]) -> String {
    let mut h: u64 = 1469598103934665603;
    for b in body {
        h = (h ^ u64::from(*b)).wrapping_mul(1099511628211);
    }
    format!("W/\"{h:x}\"")
}

/// Serve a generated history with pages of 25 runs, ETags and 304s.
pub fn synth_server(s: Synth) -> Server {
    let s = Arc::new(s);
    Server::start(move |req, base| {
        let path = req.path().to_string();
        let body = if path == "/repos/o/r/actions/workflows/ci.yml/runs" {
            let page: usize = req.query("page").and_then(|p| p.parse().ok()).unwrap_or(1);
            let body = s.runs_page(page, 25).to_string();
            let mut r = Resp::json(body);
            if page < s.pages(25) {
                r = r.header("Link", format!("<{base}{path}?per_page=25&page={}>; rel=\"next\"", page + 1));
            }
            r
        } else if let Some(id) = path.strip_prefix("/repos/o/r/actions/runs/").and_then(|p| p.strip_suffix("/jobs")) {
            Resp::json(s.jobs_page(id.parse().unwrap_or(0)).to_string())
        } else if let Some(id) = path.strip_prefix("/repos/o/r/check-runs/").and_then(|p| p.strip_suffix("/annotations")) {
            Resp::json(s.annotations_of(id.parse().unwrap_or(0)).to_string())
        } else {
            return Resp::status(404, r#"{"message":"Not Found"}"#);
        };
        let etag = etag_of(&body.body);
        if req.header("if-none-match") == Some(etag.as_str()) {
            return Resp { status: 304, headers: body.headers, body: vec![] }.header("ETag", etag);
        }
        body.header("ETag", etag)
    })
}
