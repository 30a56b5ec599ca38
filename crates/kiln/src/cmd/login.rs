//! `kiln login HOST`: checks the credentials against the registry, then saves them to Docker's
//! config.json (or its credential helper), where every kiln and docker command finds them.

use std::io::Read;

use anyhow::Context;
use kiln_registry::{credentials, Credentials};

use super::copy::NetArgs;
use crate::Global;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// The registry, e.g. 127.0.0.1:5000 or ghcr.io.
    pub server: String,
    /// User name.
    #[arg(short, long)]
    pub username: String,
    /// Password (prefer --password-stdin: command lines are visible to other users).
    #[arg(short, long, conflicts_with = "password_stdin")]
    pub password: Option<String>,
    /// Read the password from standard input.
    #[arg(long)]
    pub password_stdin: bool,
    #[command(flatten)]
    pub net: NetArgs,
}

pub fn run(a: Args, _g: &Global) -> anyhow::Result<()> {
    let host = normalise_server(&a.server);
    let password = if a.password_stdin {
        let mut s = String::new();
        std::io::stdin().read_to_string(&mut s).context("reading the password from standard input")?;
        s.trim_end_matches(['\n', '\r']).to_string()
    } else if let Some(p) = a.password {
        p
    } else {
        anyhow::bail!("give the password with --password-stdin (or -p/--password)");
    };
    if password.is_empty() {
        anyhow::bail!("the password is empty");
    }
    let creds = Credentials::Basic { username: a.username.clone(), password: password.clone() };
    let client = a.net.client();
    client.verify_login(&host, &creds)?;
    let path = client.options().docker_config.clone();
    credentials::store(&path, &host, &a.username, &password)?;
    println!("Login Succeeded ({host}; credentials saved in {})", path.display());
    Ok(())
}

/// `https://host:5000/v2/` → `host:5000`; Docker Hub's spellings → `docker.io`.
fn normalise_server(s: &str) -> String {
    let s = s.strip_prefix("https://").or_else(|| s.strip_prefix("http://")).unwrap_or(s);
    let host = s.split('/').next().unwrap_or(s);
    match host {
        "index.docker.io" | "registry-1.docker.io" => "docker.io".to_string(),
        h => h.to_string(),
    }
}
