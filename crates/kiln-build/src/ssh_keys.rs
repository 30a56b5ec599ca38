//! `--ssh ID=KEY[,KEY…]`: an ssh agent of kiln's own that serves private key files, as buildx
//! serves them, so a build needs no `ssh-agent` on the machine.
//!
//! The model: the keys are read once, when the flags are parsed (OpenSSH's `openssh-key-v1`
//! format, unencrypted; Ed25519, the key type `ssh-keygen` makes by default); an agent listens on
//! a socket in a private directory (0700) under the system's temp dir for as long as the build
//! holds it, and each `RUN --mount=type=ssh` forwards to that socket exactly as it forwards to a
//! real agent (`ssh.rs`). It speaks the two requests a client needs (draft-miller-ssh-agent):
//! list identities (11 → 12) and sign (13 → 14); anything else, including adding or removing
//! keys, is answered with failure (5). What it cannot serve is refused by name when the flags
//! are read: an encrypted key (no passphrase prompt in CI), another key type, another format.

use std::io::{self, Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::thread::JoinHandle;

use base64::Engine as _;

/// Why a key file cannot be served.
#[derive(Debug, thiserror::Error)]
pub enum SshKeyError {
    #[error("--ssh {id}: cannot read the key {}", path.display())]
    Read {
        id: String,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("--ssh {id}: {} is not an OpenSSH private key ({what}); kiln reads `ssh-keygen`'s openssh-key-v1 files", path.display())]
    Format { id: String, path: PathBuf, what: &'static str },
    #[error("--ssh {id}: {} is encrypted with a passphrase, which kiln cannot ask for; load it into an agent (ssh-add) and pass --ssh {id}=$SSH_AUTH_SOCK", path.display())]
    Encrypted { id: String, path: PathBuf },
    #[error("--ssh {id}: {} is an {kind} key; kiln's own agent serves ssh-ed25519 keys only: load it into an agent (ssh-add) and pass --ssh {id}=$SSH_AUTH_SOCK", path.display())]
    KeyType { id: String, path: PathBuf, kind: String },
    #[error("--ssh {id}: cannot start kiln's ssh agent")]
    Start {
        id: String,
        #[source]
        source: io::Error,
    },
}

/// One Ed25519 key, ready to sign.
struct Key {
    /// The public key blob: string "ssh-ed25519", string pub.
    blob: Vec<u8>,
    comment: String,
    pair: ring::signature::Ed25519KeyPair,
}

impl std::fmt::Debug for Key {
    // Never the private key.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Key(ssh-ed25519 {})", self.comment)
    }
}

/// A running agent; stops and removes its directory when the last handle goes.
pub struct KeyAgent {
    dir: PathBuf,
    socket: PathBuf,
    listener: UnixListener,
    accept: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for KeyAgent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "KeyAgent({})", self.socket.display())
    }
}

impl KeyAgent {
    /// Reads `paths` and starts serving them for `id`.
    pub fn start(id: &str, paths: &[&str]) -> Result<KeyAgent, SshKeyError> {
        let keys: Vec<Key> = paths.iter().map(|p| load(id, Path::new(p))).collect::<Result<_, _>>()?;
        let start = |source| SshKeyError::Start { id: id.to_string(), source };
        static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("kiln-ssh-{}-{n}", std::process::id()));
        std::fs::create_dir(&dir).map_err(start)?;
        std::fs::set_permissions(&dir, std::os::unix::fs::PermissionsExt::from_mode(0o700)).map_err(start)?;
        let d = std::fs::File::open(&dir).map_err(start)?;
        // Bound through the descriptor: a deep temp dir must not hit the 108-byte socket path limit.
        let listener = UnixListener::bind(format!("/proc/self/fd/{}/agent", d.as_raw_fd())).map_err(start)?;
        let accepting = listener.try_clone().map_err(start)?;
        let keys = Arc::new(keys);
        let accept = std::thread::Builder::new()
            .name("kiln-ssh-keys".into())
            .spawn(move || {
                for client in accepting.incoming() {
                    let Ok(client) = client else { break };
                    let keys = keys.clone();
                    let _ = std::thread::Builder::new().name("kiln-ssh-keys-client".into()).spawn(move || serve(client, &keys));
                }
            })
            .map_err(start)?;
        Ok(KeyAgent { socket: dir.join("agent"), dir, listener, accept: Some(accept) })
    }

    /// Where clients connect.
    pub fn socket(&self) -> &Path {
        &self.socket
    }
}

impl Drop for KeyAgent {
    fn drop(&mut self) {
        // SAFETY: a plain syscall on a descriptor this value owns; it wakes the blocked accept(2).
        unsafe { libc::shutdown(self.listener.as_raw_fd(), libc::SHUT_RDWR) };
        if let Some(t) = self.accept.take() {
            let _ = t.join();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A reader over an ssh wire-format buffer.
struct Wire<'a>(&'a [u8]);

impl<'a> Wire<'a> {
    fn u32(&mut self) -> Option<u32> {
        let (head, rest) = self.0.split_at_checked(4)?;
        self.0 = rest;
        Some(u32::from_be_bytes(head.try_into().ok()?))
    }

    fn string(&mut self) -> Option<&'a [u8]> {
        let n = self.u32()? as usize;
        let (s, rest) = self.0.split_at_checked(n)?;
        self.0 = rest;
        Some(s)
    }
}

fn put_string(out: &mut Vec<u8>, s: &[u8]) {
    out.extend_from_slice(&(s.len() as u32).to_be_bytes());
    out.extend_from_slice(s);
}

const MAGIC: &[u8] = b"openssh-key-v1\0";

fn load(id: &str, path: &Path) -> Result<Key, SshKeyError> {
    let text = std::fs::read_to_string(path).map_err(|source| SshKeyError::Read { id: id.into(), path: path.into(), source })?;
    let format = |what| SshKeyError::Format { id: id.into(), path: path.into(), what };
    let body: String = text
        .lines()
        .skip_while(|l| l.trim() != "-----BEGIN OPENSSH PRIVATE KEY-----")
        .skip(1)
        .take_while(|l| l.trim() != "-----END OPENSSH PRIVATE KEY-----")
        .map(str::trim)
        .collect();
    if body.is_empty() {
        return Err(format("no BEGIN OPENSSH PRIVATE KEY block"));
    }
    let raw = base64::engine::general_purpose::STANDARD.decode(body).map_err(|_| format("the block is not base64"))?;
    let rest = raw.strip_prefix(MAGIC).ok_or_else(|| format("no openssh-key-v1 header"))?;
    let mut w = Wire(rest);
    let cipher = w.string().ok_or_else(|| format("truncated"))?;
    let _kdf = w.string().ok_or_else(|| format("truncated"))?;
    let _kdf_options = w.string().ok_or_else(|| format("truncated"))?;
    if cipher != b"none" {
        return Err(SshKeyError::Encrypted { id: id.into(), path: path.into() });
    }
    if w.u32() != Some(1) {
        return Err(format("it holds more than one key"));
    }
    let _public = w.string().ok_or_else(|| format("truncated"))?;
    let mut private = Wire(w.string().ok_or_else(|| format("truncated"))?);
    let (c1, c2) = (private.u32(), private.u32());
    if c1.is_none() || c1 != c2 {
        return Err(format("its check numbers differ"));
    }
    let kind = private.string().ok_or_else(|| format("truncated"))?;
    if kind != b"ssh-ed25519" {
        return Err(SshKeyError::KeyType { id: id.into(), path: path.into(), kind: String::from_utf8_lossy(kind).into_owned() });
    }
    let public = private.string().filter(|p| p.len() == 32).ok_or_else(|| format("a bad ed25519 public key"))?;
    let secret = private.string().filter(|s| s.len() == 64).ok_or_else(|| format("a bad ed25519 private key"))?;
    let comment = String::from_utf8_lossy(private.string().unwrap_or_default()).into_owned();
    let pair = ring::signature::Ed25519KeyPair::from_seed_and_public_key(&secret[..32], public)
        .map_err(|_| format("its public key does not match its private key"))?;
    let mut blob = Vec::new();
    put_string(&mut blob, b"ssh-ed25519");
    put_string(&mut blob, public);
    Ok(Key { blob, comment, pair })
}

const FAILURE: u8 = 5;
const REQUEST_IDENTITIES: u8 = 11;
const IDENTITIES_ANSWER: u8 = 12;
const SIGN_REQUEST: u8 = 13;
const SIGN_RESPONSE: u8 = 14;

/// Answers one request (its type byte and contents).
fn answer(request: &[u8], keys: &[Key]) -> Vec<u8> {
    let mut out = Vec::new();
    match request.split_first() {
        Some((&REQUEST_IDENTITIES, _)) => {
            out.push(IDENTITIES_ANSWER);
            out.extend_from_slice(&(keys.len() as u32).to_be_bytes());
            for k in keys {
                put_string(&mut out, &k.blob);
                put_string(&mut out, k.comment.as_bytes());
            }
        }
        Some((&SIGN_REQUEST, rest)) => {
            let mut w = Wire(rest);
            let (Some(blob), Some(data)) = (w.string(), w.string()) else { return vec![FAILURE] };
            let Some(key) = keys.iter().find(|k| k.blob == blob) else { return vec![FAILURE] };
            let sig = key.pair.sign(data);
            let mut signature = Vec::new();
            put_string(&mut signature, b"ssh-ed25519");
            put_string(&mut signature, sig.as_ref());
            out.push(SIGN_RESPONSE);
            put_string(&mut out, &signature);
        }
        _ => out.push(FAILURE),
    }
    out
}

/// Serves one client until it closes; requests bigger than 256 KiB end the connection.
fn serve(mut client: UnixStream, keys: &[Key]) {
    loop {
        let mut len = [0u8; 4];
        if client.read_exact(&mut len).is_err() {
            return;
        }
        let n = u32::from_be_bytes(len) as usize;
        if n == 0 || n > 256 << 10 {
            return;
        }
        let mut request = vec![0u8; n];
        if client.read_exact(&mut request).is_err() {
            return;
        }
        let reply = answer(&request, keys);
        let mut msg = (reply.len() as u32).to_be_bytes().to_vec();
        msg.extend_from_slice(&reply);
        if client.write_all(&msg).is_err() {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An unencrypted openssh-key-v1 file for the RFC 8032 test key 1 (built here, not copied).
    fn key_file(cipher: &str, kind: &str) -> String {
        let seed: [u8; 32] = core::array::from_fn(|i| i as u8);
        let pair = ring::signature::Ed25519KeyPair::from_seed_unchecked(&seed).unwrap();
        let public = ring::signature::KeyPair::public_key(&pair).as_ref().to_vec();
        let mut pubblob = Vec::new();
        put_string(&mut pubblob, kind.as_bytes());
        put_string(&mut pubblob, &public);
        let mut private = Vec::new();
        private.extend_from_slice(&7u32.to_be_bytes());
        private.extend_from_slice(&7u32.to_be_bytes());
        put_string(&mut private, kind.as_bytes());
        put_string(&mut private, &public);
        let mut secret = seed.to_vec();
        secret.extend_from_slice(&public);
        put_string(&mut private, &secret);
        put_string(&mut private, b"kiln@test");
        let mut raw = MAGIC.to_vec();
        put_string(&mut raw, cipher.as_bytes());
        put_string(&mut raw, b"none");
        put_string(&mut raw, b"");
        raw.extend_from_slice(&1u32.to_be_bytes());
        put_string(&mut raw, &pubblob);
        put_string(&mut raw, &private);
        let b64 = base64::engine::general_purpose::STANDARD.encode(raw);
        format!("-----BEGIN OPENSSH PRIVATE KEY-----\n{b64}\n-----END OPENSSH PRIVATE KEY-----\n")
    }

    #[test]
    fn keys_are_read_and_what_cannot_be_served_is_named() {
        let t = tempfile::tempdir().unwrap();
        let good = t.path().join("k");
        std::fs::write(&good, key_file("none", "ssh-ed25519")).unwrap();
        let k = load("gh", &good).unwrap();
        assert_eq!(k.comment, "kiln@test");
        let enc = t.path().join("enc");
        std::fs::write(&enc, key_file("aes256-ctr", "ssh-ed25519")).unwrap();
        assert!(matches!(load("gh", &enc), Err(SshKeyError::Encrypted { .. })));
        let rsa = t.path().join("rsa");
        std::fs::write(&rsa, key_file("none", "ssh-rsa")).unwrap();
        let e = load("gh", &rsa).unwrap_err().to_string();
        assert!(e.contains("is an ssh-rsa key; kiln's own agent serves ssh-ed25519 keys only"), "{e}");
        let pem = t.path().join("pem");
        std::fs::write(&pem, "-----BEGIN RSA PRIVATE KEY-----\nAAAA\n-----END RSA PRIVATE KEY-----\n").unwrap();
        assert!(load("gh", &pem).unwrap_err().to_string().contains("no BEGIN OPENSSH PRIVATE KEY block"));
        assert!(matches!(load("gh", &t.path().join("none")), Err(SshKeyError::Read { .. })));
    }

    #[test]
    fn the_agent_lists_and_signs_and_refuses_the_rest() {
        let t = tempfile::tempdir().unwrap();
        let path = t.path().join("k");
        std::fs::write(&path, key_file("none", "ssh-ed25519")).unwrap();
        let agent = KeyAgent::start("gh", &[path.to_str().unwrap()]).unwrap();
        let mut c = UnixStream::connect(agent.socket()).unwrap();
        let ask = |c: &mut UnixStream, req: &[u8]| -> Vec<u8> {
            c.write_all(&(req.len() as u32).to_be_bytes()).unwrap();
            c.write_all(req).unwrap();
            let mut len = [0u8; 4];
            c.read_exact(&mut len).unwrap();
            let mut r = vec![0u8; u32::from_be_bytes(len) as usize];
            c.read_exact(&mut r).unwrap();
            r
        };
        let ids = ask(&mut c, &[REQUEST_IDENTITIES]);
        assert_eq!(ids[0], IDENTITIES_ANSWER);
        let mut w = Wire(&ids[1..]);
        assert_eq!(w.u32(), Some(1));
        let blob = w.string().unwrap().to_vec();
        assert_eq!(w.string(), Some(&b"kiln@test"[..]));
        let mut sign = vec![SIGN_REQUEST];
        put_string(&mut sign, &blob);
        put_string(&mut sign, b"data to sign");
        sign.extend_from_slice(&0u32.to_be_bytes());
        let r = ask(&mut c, &sign);
        assert_eq!(r[0], SIGN_RESPONSE);
        let mut sig = Wire(Wire(&r[1..]).string().unwrap());
        assert_eq!(sig.string(), Some(&b"ssh-ed25519"[..]));
        let raw = sig.string().unwrap();
        let public = &blob[blob.len() - 32..];
        ring::signature::UnparsedPublicKey::new(&ring::signature::ED25519, public).verify(b"data to sign", raw).unwrap();
        assert_eq!(ask(&mut c, &[17]), [FAILURE], "adding keys (and anything else) fails");
        let dir = agent.socket().parent().unwrap().to_path_buf();
        drop(c);
        drop(agent);
        assert!(!dir.exists(), "the agent's directory goes with it");
    }
}
