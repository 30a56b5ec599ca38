//! Credentials from Docker's `config.json`, credential helpers, and `kiln login`.
//!
//! Lookup order for a registry host, as Docker does it: `credHelpers[host]`, then `credsStore`, then
//! the inline `auths` entry. The file is read again on every authentication, so that a `kiln login`
//! (or a CI step refreshing the file) during a long transfer is picked up by the next 401.

use std::collections::BTreeMap;
use std::fs;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use base64::Engine as _;

use crate::error::{RegistryError, Result};

/// What to authenticate with. `Debug` never shows secrets.
#[derive(Clone, PartialEq, Eq, Default)]
pub enum Credentials {
    #[default]
    Anonymous,
    Basic {
        username: String,
        password: String,
    },
    /// An OAuth2 refresh token (`identitytoken` in config.json) exchanged for access tokens.
    IdentityToken {
        username: String,
        token: String,
    },
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Credentials::Anonymous => f.write_str("Anonymous"),
            Credentials::Basic { username, .. } => {
                f.debug_struct("Basic").field("username", username).field("password", &"<redacted>").finish()
            }
            Credentials::IdentityToken { username, .. } => {
                f.debug_struct("IdentityToken").field("username", username).field("token", &"<redacted>").finish()
            }
        }
    }
}

impl Credentials {
    pub fn basic_header(&self) -> Option<String> {
        match self {
            Credentials::Basic { username, password } => {
                Some(format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(format!("{username}:{password}"))))
            }
            _ => None,
        }
    }
}

/// Where Docker's client configuration lives: `$DOCKER_CONFIG/config.json`, else `~/.docker/config.json`.
pub fn default_config_path() -> PathBuf {
    if let Some(d) = std::env::var_os("DOCKER_CONFIG").filter(|v| !v.is_empty()) {
        return PathBuf::from(d).join("config.json");
    }
    let home = std::env::var_os("HOME").unwrap_or_else(|| "/root".into());
    PathBuf::from(home).join(".docker/config.json")
}

#[derive(Debug, Default, serde::Deserialize)]
struct ConfigFile {
    #[serde(default)]
    auths: BTreeMap<String, AuthEntry>,
    #[serde(default, rename = "credsStore")]
    creds_store: Option<String>,
    #[serde(default, rename = "credHelpers")]
    cred_helpers: BTreeMap<String, String>,
}

#[derive(Default, serde::Deserialize)]
struct AuthEntry {
    #[serde(default)]
    auth: Option<String>,
    #[serde(default)]
    username: Option<String>,
    #[serde(default)]
    password: Option<String>,
    #[serde(default)]
    identitytoken: Option<String>,
}

impl std::fmt::Debug for AuthEntry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AuthEntry(<redacted>)")
    }
}

/// The hostnames a registry may be filed under in config.json. Docker Hub has several spellings.
fn host_aliases(host: &str) -> Vec<String> {
    match host {
        "docker.io" | "index.docker.io" | "registry-1.docker.io" => {
            vec!["https://index.docker.io/v1/".into(), "index.docker.io".into(), "docker.io".into(), "registry-1.docker.io".into()]
        }
        h => vec![h.to_string()],
    }
}

/// Reduces a config.json key (`https://host:5000/v1/`, `host:5000`) to `host:port`.
fn normalise_key(key: &str) -> &str {
    let k = key.strip_prefix("https://").or_else(|| key.strip_prefix("http://")).unwrap_or(key);
    k.split('/').next().unwrap_or(k)
}

/// Reads credentials for `host` from the config file at `path` (missing file = anonymous).
pub fn lookup(path: &Path, host: &str) -> Result<Credentials> {
    let cfg = match fs::read(path) {
        Ok(b) => serde_json::from_slice::<ConfigFile>(&b).map_err(|e| RegistryError::Credentials {
            registry: host.to_string(),
            message: format!("{} is not valid JSON ({e}); fix or remove it", path.display()),
        })?,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => ConfigFile::default(),
        Err(e) => {
            return Err(RegistryError::Credentials { registry: host.to_string(), message: format!("cannot read {}: {e}", path.display()) })
        }
    };
    let aliases = host_aliases(host);
    for a in &aliases {
        if let Some(helper) = cfg.cred_helpers.iter().find(|(k, _)| normalise_key(k) == normalise_key(a)).map(|(_, v)| v) {
            return helper_get(helper, host, a);
        }
    }
    if let Some(store) = &cfg.creds_store {
        let got = helper_get(store, host, &aliases[0])?;
        if got != Credentials::Anonymous {
            return Ok(got);
        }
    }
    for a in &aliases {
        if let Some(entry) = cfg.auths.iter().find(|(k, _)| normalise_key(k) == normalise_key(a)).map(|(_, v)| v) {
            return entry_credentials(entry, host, path);
        }
    }
    Ok(Credentials::Anonymous)
}

fn entry_credentials(e: &AuthEntry, host: &str, path: &Path) -> Result<Credentials> {
    let (mut user, mut pass) = (e.username.clone(), e.password.clone());
    if let Some(a) = e.auth.as_deref().filter(|a| !a.is_empty()) {
        let bad = || RegistryError::Credentials {
            registry: host.to_string(),
            message: format!("the `auth` entry in {} is not base64 of USER:PASSWORD; run kiln login {host} again", path.display()),
        };
        let raw = base64::engine::general_purpose::STANDARD.decode(a.trim()).map_err(|_| bad())?;
        let s = String::from_utf8(raw).map_err(|_| bad())?;
        let (u, p) = s.split_once(':').ok_or_else(bad)?;
        user = Some(u.to_string());
        pass = Some(p.to_string());
    }
    if let Some(t) = e.identitytoken.as_deref().filter(|t| !t.is_empty()) {
        return Ok(Credentials::IdentityToken { username: user.unwrap_or_default(), token: t.to_string() });
    }
    match (user, pass) {
        (Some(u), Some(p)) if !u.is_empty() => Ok(Credentials::Basic { username: u, password: p }),
        _ => Ok(Credentials::Anonymous),
    }
}

#[derive(serde::Deserialize)]
struct HelperAnswer {
    #[serde(rename = "Username", default)]
    username: String,
    #[serde(rename = "Secret", default)]
    secret: String,
}

/// Runs `docker-credential-NAME get` with the server URL on stdin.
fn helper_get(name: &str, host: &str, server: &str) -> Result<Credentials> {
    let prog = format!("docker-credential-{name}");
    let err = |m: String| RegistryError::Credentials { registry: host.to_string(), message: m };
    let mut child = Command::new(&prog)
        .arg("get")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| err(format!("cannot run credential helper {prog} ({e}); install it or remove it from config.json")))?;
    if let Some(mut stdin) = child.stdin.take() {
        // The helper may exit without reading; a broken pipe here is then not our error.
        let _ = stdin.write_all(server.as_bytes());
    }
    let mut out = String::new();
    if let Some(mut so) = child.stdout.take() {
        so.read_to_string(&mut out).map_err(|e| err(format!("reading from {prog}: {e}")))?;
    }
    let status = child.wait().map_err(|e| err(format!("waiting for {prog}: {e}")))?;
    if !status.success() {
        // Helpers answer "credentials not found" with a failure exit: that means anonymous.
        tracing::debug!(helper = %prog, "credential helper has no credentials for {host}");
        return Ok(Credentials::Anonymous);
    }
    let a: HelperAnswer =
        serde_json::from_str(out.trim()).map_err(|e| err(format!("{prog} printed something that is not its JSON answer ({e})")))?;
    if a.secret.is_empty() {
        return Ok(Credentials::Anonymous);
    }
    if a.username == "<token>" {
        return Ok(Credentials::IdentityToken { username: String::new(), token: a.secret });
    }
    Ok(Credentials::Basic { username: a.username, password: a.secret })
}

/// Stores `username`/`password` for `host`: through the configured helper when there is one, else
/// inline in `auths` (base64), writing the file atomically with mode 0600 and keeping every other field.
pub fn store(path: &Path, host: &str, username: &str, password: &str) -> Result<()> {
    let err = |m: String| RegistryError::Credentials { registry: host.to_string(), message: m };
    let mut doc: serde_json::Value = match fs::read(path) {
        Ok(b) => serde_json::from_slice(&b).map_err(|e| err(format!("{} is not valid JSON ({e}); fix or remove it", path.display())))?,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => serde_json::json!({}),
        Err(e) => return Err(err(format!("cannot read {}: {e}", path.display()))),
    };
    let obj = doc.as_object_mut().ok_or_else(|| err(format!("{} is not a JSON object", path.display())))?;
    let helper =
        obj.get("credHelpers").and_then(|h| h.get(host)).or_else(|| obj.get("credsStore")).and_then(|v| v.as_str()).map(str::to_string);
    if let Some(h) = helper {
        return helper_store(&h, host, username, password);
    }
    let auths = obj.entry("auths").or_insert_with(|| serde_json::json!({}));
    let auths = auths.as_object_mut().ok_or_else(|| err(format!("`auths` in {} is not an object", path.display())))?;
    let enc = base64::engine::general_purpose::STANDARD.encode(format!("{username}:{password}"));
    auths.insert(host.to_string(), serde_json::json!({ "auth": enc }));
    let bytes = serde_json::to_vec_pretty(&doc).map_err(|e| err(e.to_string()))?;
    write_private_atomic(path, &bytes).map_err(|e| err(format!("cannot write {}: {e}", path.display())))
}

fn helper_store(name: &str, host: &str, username: &str, password: &str) -> Result<()> {
    let prog = format!("docker-credential-{name}");
    let err = |m: String| RegistryError::Credentials { registry: host.to_string(), message: m };
    let mut child = Command::new(&prog)
        .arg("store")
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| err(format!("cannot run credential helper {prog} ({e})")))?;
    let body = serde_json::json!({"ServerURL": host, "Username": username, "Secret": password});
    if let Some(mut stdin) = child.stdin.take() {
        stdin.write_all(body.to_string().as_bytes()).map_err(|e| err(format!("writing to {prog}: {e}")))?;
    }
    let st = child.wait().map_err(|e| err(format!("waiting for {prog}: {e}")))?;
    if !st.success() {
        return Err(err(format!("{prog} store failed ({st})")));
    }
    Ok(())
}

/// Temp file beside the target, mode 0600 from creation, fsync, rename, fsync the directory.
fn write_private_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        fs::create_dir_all(dir)?;
    }
    kiln_oci::atomic::write_with_mode(path, bytes, kiln_oci::atomic::Durability::Synced, 0o600)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn reads_auth_username_password_and_identity_token() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("config.json");
        let b64 = base64::engine::general_purpose::STANDARD.encode("alice:s3:cret");
        fs::write(
            &p,
            format!(
                r#"{{"auths":{{"https://127.0.0.1:5000/v1/":{{"auth":"{b64}"}},
                 "other:1":{{"username":"bob","password":"pw"}},
                 "tok:2":{{"auth":"{b64}","identitytoken":"refresh"}},
                 "https://index.docker.io/v1/":{{"username":"hub","password":"x"}}}},
                 "HttpHeaders":{{"X":"y"}}}}"#
            ),
        )
        .unwrap();
        assert_eq!(lookup(&p, "127.0.0.1:5000").unwrap(), Credentials::Basic { username: "alice".into(), password: "s3:cret".into() });
        assert_eq!(lookup(&p, "other:1").unwrap(), Credentials::Basic { username: "bob".into(), password: "pw".into() });
        assert_eq!(lookup(&p, "tok:2").unwrap(), Credentials::IdentityToken { username: "alice".into(), token: "refresh".into() });
        assert!(matches!(lookup(&p, "docker.io").unwrap(), Credentials::Basic { .. }));
        assert_eq!(lookup(&p, "nowhere").unwrap(), Credentials::Anonymous);
        assert_eq!(lookup(&d.path().join("missing.json"), "x").unwrap(), Credentials::Anonymous);
    }

    #[test]
    fn bad_base64_names_registry_and_fix() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("config.json");
        fs::write(&p, r#"{"auths":{"h:1":{"auth":"!!!"}}}"#).unwrap();
        let e = lookup(&p, "h:1").unwrap_err().to_string();
        assert!(e.contains("h:1") && e.contains("kiln login"), "{e}");
    }

    #[test]
    fn debug_is_redacted() {
        let c = Credentials::Basic { username: "u".into(), password: "hunter2".into() };
        let s = format!("{c:?}");
        assert!(!s.contains("hunter2") && s.contains("<redacted>"), "{s}");
        let t = Credentials::IdentityToken { username: "u".into(), token: "tok123".into() };
        assert!(!format!("{t:?}").contains("tok123"));
    }

    #[test]
    fn store_keeps_other_fields_and_is_private() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("sub/config.json");
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        fs::write(&p, r#"{"HttpHeaders":{"X":"y"},"auths":{"a:1":{"auth":"eDp5"}}}"#).unwrap();
        store(&p, "127.0.0.1:9", "me", "pw").unwrap();
        let v: serde_json::Value = serde_json::from_slice(&fs::read(&p).unwrap()).unwrap();
        assert_eq!(v["HttpHeaders"]["X"], "y");
        assert_eq!(v["auths"]["a:1"]["auth"], "eDp5");
        assert_eq!(lookup(&p, "127.0.0.1:9").unwrap(), Credentials::Basic { username: "me".into(), password: "pw".into() });
        let mode = fs::metadata(&p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
    }

    #[test]
    fn credential_helper_is_run() {
        let d = tempfile::tempdir().unwrap();
        let bin = d.path().join("docker-credential-kilntest");
        fs::write(
            &bin,
            "#!/bin/sh\nread server\nif [ \"$1\" = get ] && [ \"$server\" = helped:5 ]; then echo '{\"ServerURL\":\"helped:5\",\"Username\":\"<token>\",\"Secret\":\"idtok\"}'; exit 0; fi\necho 'credentials not found'; exit 1\n",
        )
        .unwrap();
        fs::set_permissions(&bin, fs::Permissions::from_mode(0o755)).unwrap();
        let p = d.path().join("config.json");
        fs::write(&p, r#"{"credHelpers":{"helped:5":"kilntest"}}"#).unwrap();
        // The helper is found through PATH, as Docker does; only this test's process sees the change.
        let path = format!("{}:{}", d.path().display(), std::env::var("PATH").unwrap_or_default());
        std::env::set_var("PATH", path);
        assert_eq!(lookup(&p, "helped:5").unwrap(), Credentials::IdentityToken { username: String::new(), token: "idtok".into() });
        fs::write(&p, r#"{"credsStore":"kilntest","auths":{"other:1":{"username":"u","password":"p"}}}"#).unwrap();
        // The store has nothing for other:1, so the inline entry is used.
        assert!(matches!(lookup(&p, "other:1").unwrap(), Credentials::Basic { .. }));
    }
}
