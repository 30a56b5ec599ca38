//! Step inputs: what goes into a cache key, under which name, and how it is encoded.
//!
//! This module is the one owner of the key vocabulary. The build engine names every input of a step
//! with an [`Input`]; a record stores them as `name → value` strings (readable in the registry
//! format); [`crate::explain`] reads the names back through [`Input::parse`], so an explanation can
//! only speak of inputs that builds really record.
//!
//! The key is `sha256` over one canonical byte string ([`StepInputs::key`]):
//!
//! ```text
//! kiln-cache-v2\n
//! <netstring(parent key)>
//! <netstring(name)><netstring(value)>      for each input, sorted by name (bytes)
//! ```
//!
//! A netstring is `<byte length in decimal>:<bytes>,`. Every variable part is length-prefixed, so
//! no value can imitate a separator and the encoding is injective without any escaping. Values that
//! have structure (an argv, a typed instruction, a mount) are written with [`Canon`], which uses the
//! same netstrings. Changing any of this changes every key: bump [`KEY_VERSION`] when you do.

use std::collections::BTreeMap;
use std::fmt;

use kiln_oci::Digest;

/// The first line of every key's preimage. Version 1 hashed `Debug` output; version 2 is this module.
pub const KEY_VERSION: &str = "kiln-cache-v2";

/// One named input of a step.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Input {
    /// `instruction`: the typed instruction after ARG/ENV expansion, in canonical text.
    Instruction,
    /// `platform`: `os/arch[/variant]` the step builds for.
    Platform,
    /// `run`: RUN's argv ([`list`]), SHELL applied and heredocs inlined.
    Run,
    /// `env:NAME`: a variable RUN's process sees that the image's ENV (or a stage ENV) set.
    Env(String),
    /// `arg:NAME`: a variable RUN's process sees that a build ARG set (and ENV did not).
    Arg(String),
    /// `user`: USER in force.
    User,
    /// `workdir`: WORKDIR in force.
    Workdir,
    /// `mount:N`: RUN's N-th `--mount`, typed and expanded, in canonical text.
    Mount(usize),
    /// `mount:N:content`: digest of the context listing a bind mount without `from=` reads.
    MountContent(usize),
    /// `mount:N:from`: the key (stage) or layer chain id (image) a mount's `from=` reads.
    MountFrom(usize),
    /// `src:N:PATH`: digest of a COPY/ADD source from the context (its listing, [`Canon`]) or, for
    /// an ADD URL, of the download. `PATH` is the context path or the URL.
    Source(usize, String),
    /// `src:N`: a COPY `--from` source path (the content is in [`Input::CopyFrom`]).
    FromPath(usize),
    /// `heredoc:N`: a COPY heredoc source: its file name and the digest of its body.
    Heredoc(usize),
    /// `from`: the layer chain id of the stage or image COPY `--from` reads.
    CopyFrom,
    /// `link`: the key of a `COPY --link` layer, made without a parent; the only input of the
    /// step's place in its chain.
    Link,
}

impl Input {
    /// The name records store.
    pub fn name(&self) -> String {
        match self {
            Input::Instruction => "instruction".into(),
            Input::Platform => "platform".into(),
            Input::Run => "run".into(),
            Input::Env(k) => format!("env:{k}"),
            Input::Arg(k) => format!("arg:{k}"),
            Input::User => "user".into(),
            Input::Workdir => "workdir".into(),
            Input::Mount(i) => format!("mount:{i}"),
            Input::MountContent(i) => format!("mount:{i}:content"),
            Input::MountFrom(i) => format!("mount:{i}:from"),
            Input::Source(i, p) => format!("src:{i}:{p}"),
            Input::FromPath(i) => format!("src:{i}"),
            Input::Heredoc(i) => format!("heredoc:{i}"),
            Input::CopyFrom => "from".into(),
            Input::Link => "link".into(),
        }
    }

    /// The input a record's name stands for; `None` for a name no build of this key version makes.
    /// The inverse of [`Input::name`].
    pub fn parse(name: &str) -> Option<Input> {
        let index = |s: &str| -> Option<usize> {
            // Only the form `name` writes: no sign, no leading zeros.
            if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) || (s.len() > 1 && s.starts_with('0')) {
                return None;
            }
            s.parse().ok()
        };
        Some(match name {
            "instruction" => Input::Instruction,
            "platform" => Input::Platform,
            "run" => Input::Run,
            "user" => Input::User,
            "workdir" => Input::Workdir,
            "from" => Input::CopyFrom,
            "link" => Input::Link,
            _ => {
                let (kind, rest) = name.split_once(':')?;
                match kind {
                    "env" if !rest.is_empty() => Input::Env(rest.into()),
                    "arg" if !rest.is_empty() => Input::Arg(rest.into()),
                    "heredoc" => Input::Heredoc(index(rest)?),
                    "mount" => match rest.split_once(':') {
                        None => Input::Mount(index(rest)?),
                        Some((i, "content")) => Input::MountContent(index(i)?),
                        Some((i, "from")) => Input::MountFrom(index(i)?),
                        Some(_) => return None,
                    },
                    "src" => match rest.split_once(':') {
                        None => Input::FromPath(index(rest)?),
                        Some((i, path)) => Input::Source(index(i)?, path.into()),
                    },
                    _ => return None,
                }
            }
        })
    }

    /// Whether a changed value is a digest, so that the words should not quote it.
    fn is_digest(&self) -> bool {
        matches!(self, Input::MountContent(_) | Input::MountFrom(_) | Input::Source(..) | Input::Heredoc(_) | Input::CopyFrom | Input::Link)
    }
}

impl fmt::Display for Input {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.name())
    }
}

impl serde::Serialize for Input {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.name())
    }
}

/// The words for a change of `input` from `cached` to `now` (`None`: absent on that side).
pub(crate) fn describe_change(input: &Input, cached: Option<&str>, now: Option<&str>) -> String {
    let q = |v: &str| format!("{v:?}");
    let subject = match input {
        Input::Env(k) => format!("env {k}"),
        Input::Arg(k) => format!("build arg {k}"),
        Input::Source(_, p) => format!("file {p}"),
        Input::Heredoc(i) => format!("heredoc source {i}"),
        Input::FromPath(i) => format!("--from source {i}"),
        Input::Mount(i) => format!("--mount {i}"),
        Input::MountContent(i) => return format!("the context files --mount {i} reads changed"),
        Input::MountFrom(i) => return format!("the stage or image --mount {i} reads from changed"),
        Input::CopyFrom => return "the stage or image it copies from changed".into(),
        Input::Link => return "the files of its --link layer changed".into(),
        Input::Instruction => "the expanded instruction".into(),
        Input::Platform => "platform".into(),
        Input::Run => "the command".into(),
        Input::User => "user".into(),
        Input::Workdir => "workdir".into(),
    };
    let show = |v: &str| match input {
        Input::Run => decode_list(v).map(|l| format!("{l:?}")).unwrap_or_else(|| q(v)),
        Input::Instruction | Input::Mount(_) => format!("`{v}`"),
        _ => q(v),
    };
    match (cached, now) {
        (Some(_), Some(_)) | (None, None) if input.is_digest() => format!("{subject} changed"),
        (Some(c), Some(n)) => format!("{subject} changed: was {}, now {}", show(c), show(n)),
        (None, Some(_)) if input.is_digest() => format!("{subject} is new"),
        (None, Some(n)) => format!("{subject} is new: {}", show(n)),
        (Some(_), None) if input.is_digest() => format!("{subject} was removed"),
        (Some(c), None) => format!("{subject} is no longer set (was {})", show(c)),
        (None, None) => format!("{subject} changed"),
    }
}

/// A step's named inputs: what its key hashes and its record keeps.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StepInputs {
    map: BTreeMap<String, String>,
}

impl StepInputs {
    /// Every step's two inputs: its canonical instruction text and its platform.
    pub fn new(instruction: String, platform: &kiln_oci::Platform) -> StepInputs {
        let mut s = StepInputs::default();
        s.set(Input::Instruction, instruction);
        s.set(Input::Platform, platform.to_string());
        s
    }

    /// Sets one input (a later value for the same input replaces the earlier).
    pub fn set(&mut self, input: Input, value: impl Into<String>) {
        self.map.insert(input.name(), value.into());
    }

    /// The key of a step with these inputs on top of `parent`.
    pub fn key(&self, parent: &Digest) -> Digest {
        Digest::sha256_of(&self.preimage(parent))
    }

    fn preimage(&self, parent: &Digest) -> Vec<u8> {
        preimage(parent, &self.map)
    }

    /// The inputs by name, as a record stores them.
    pub fn as_map(&self) -> &BTreeMap<String, String> {
        &self.map
    }

    pub fn into_map(self) -> BTreeMap<String, String> {
        self.map
    }
}

/// The parent key of a stage's first step on `FROM image`: the image's manifest digest for the
/// platform. (A digest and a platform hold no space, so the text is unambiguous.)
pub fn image_root(manifest: &Digest, platform: &kiln_oci::Platform) -> Digest {
    Digest::sha256_of(format!("from {manifest} {platform}").as_bytes())
}

/// The parent key of a stage's first step on `FROM scratch`.
pub fn scratch_root(platform: &kiln_oci::Platform) -> Digest {
    Digest::sha256_of(format!("scratch {platform}").as_bytes())
}

/// The fixed parent a `COPY --link` layer's own key is computed on ([`Input::Link`]).
pub fn link_root() -> Digest {
    Digest::sha256_of(b"kiln COPY --link: no parent")
}

fn preimage(parent: &Digest, inputs: &BTreeMap<String, String>) -> Vec<u8> {
    let mut b = Vec::with_capacity(256);
    b.extend_from_slice(KEY_VERSION.as_bytes());
    b.push(b'\n');
    netstring(&mut b, parent.to_string().as_bytes());
    for (k, v) in inputs {
        netstring(&mut b, k.as_bytes());
        netstring(&mut b, v.as_bytes());
    }
    b
}

/// Whether `record`'s key is what this key version computes from its parent and inputs: false for
/// a record of another version (or another tool), which names inputs differently or hashed them
/// otherwise and so cannot be diffed against a step of this build.
pub fn is_current(record: &crate::Record) -> bool {
    let Some(parent) = &record.parent else { return false };
    record.inputs.keys().all(|n| Input::parse(n).is_some()) && Digest::sha256_of(&preimage(parent, &record.inputs)) == record.key
}

fn netstring(out: &mut Vec<u8>, bytes: &[u8]) {
    out.extend_from_slice(bytes.len().to_string().as_bytes());
    out.push(b':');
    out.extend_from_slice(bytes);
    out.push(b',');
}

fn netstring_str(out: &mut String, s: &str) {
    out.push_str(&s.len().to_string());
    out.push(':');
    out.push_str(s);
    out.push(',');
}

/// A list of strings as one value: `[` then each item as a netstring, then `]`.
pub fn list<S: AsRef<str>>(items: &[S]) -> String {
    let mut s = String::from("[");
    for i in items {
        netstring_str(&mut s, i.as_ref());
    }
    s.push(']');
    s
}

/// The items of a [`list`] value; `None` if `v` is not one.
pub fn decode_list(v: &str) -> Option<Vec<String>> {
    let mut rest = v.strip_prefix('[')?;
    let mut out = Vec::new();
    while !rest.starts_with(']') {
        let (len, after) = rest.split_once(':')?;
        let len: usize = len.parse().ok()?;
        let item = after.get(..len)?;
        rest = after.get(len..)?.strip_prefix(',')?;
        out.push(item.to_string());
    }
    (rest == "]").then_some(out)
}

/// Canonical text of a typed value with named fields: `KIND name=value name=value…`, where a
/// string is a netstring, an absent string or number `-`, a list a [`list`], a flag
/// `true`/`false`, a number its decimal digits and a word one of a closed set the writer chose.
///
/// The writer of each kind fixes its field names and their order, and every value is
/// self-delimiting (a netstring or list carries its length; `-`, a flag, a number or a word runs to
/// the next space or the end, and holds none), so two different values of one kind never give the
/// same text. Readable enough for a record.
#[derive(Debug, Clone)]
pub struct Canon(String);

impl Canon {
    pub fn new(kind: &str) -> Canon {
        Canon(kind.to_string())
    }

    fn field(&mut self, name: &str) {
        self.0.push(' ');
        self.0.push_str(name);
        self.0.push('=');
    }

    pub fn str(mut self, name: &str, v: &str) -> Canon {
        self.field(name);
        netstring_str(&mut self.0, v);
        self
    }

    pub fn opt_str(mut self, name: &str, v: Option<&str>) -> Canon {
        match v {
            Some(v) => return self.str(name, v),
            None => {
                self.field(name);
                self.0.push('-');
            }
        }
        self
    }

    pub fn list<S: AsRef<str>>(mut self, name: &str, items: &[S]) -> Canon {
        self.field(name);
        self.0.push_str(&list(items));
        self
    }

    pub fn flag(mut self, name: &str, v: bool) -> Canon {
        self.field(name);
        self.0.push_str(if v { "true" } else { "false" });
        self
    }

    pub fn num(mut self, name: &str, v: Option<u128>) -> Canon {
        self.field(name);
        match v {
            Some(n) => self.0.push_str(&n.to_string()),
            None => self.0.push('-'),
        }
        self
    }

    /// A fixed word from a closed set chosen by the writer (an enum's variant), never user text.
    pub fn word(mut self, name: &str, w: &str) -> Canon {
        debug_assert!(!w.is_empty() && w.bytes().all(|b| b.is_ascii_lowercase() || b == b'-'), "{w:?} is not a word");
        self.field(name);
        self.0.push_str(w);
        self
    }

    /// A nested value written with its own `Canon`, length-prefixed.
    pub fn nested(self, name: &str, v: Canon) -> Canon {
        self.str(name, &v.0)
    }

    pub fn finish(self) -> String {
        self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn platform() -> kiln_oci::Platform {
        kiln_oci::Platform::parse("linux/amd64").unwrap()
    }

    #[test]
    fn names_parse_back_to_their_input() {
        let all = [
            Input::Instruction,
            Input::Platform,
            Input::Run,
            Input::Env("MODE".into()),
            Input::Env("A:B".into()),
            Input::Arg("VERSION".into()),
            Input::User,
            Input::Workdir,
            Input::Mount(0),
            Input::MountContent(12),
            Input::MountFrom(3),
            Input::Source(0, "src/main.c".into()),
            Input::Source(1, "https://example.com/a:b?c".into()),
            Input::Source(2, "".into()),
            Input::FromPath(4),
            Input::Heredoc(5),
            Input::CopyFrom,
            Input::Link,
        ];
        for i in all {
            assert_eq!(Input::parse(&i.name()), Some(i.clone()), "{}", i.name());
        }
        for bad in ["file:a.txt", "env:", "src:01:x", "src:x", "mount:0:other", "mount:-1", "Instruction", "heredoc:"] {
            assert_eq!(Input::parse(bad), None, "{bad}");
        }
    }

    #[test]
    fn lists_round_trip_and_are_injective() {
        let cases: [&[&str]; 5] = [&[], &[""], &["a,b"], &["a", "b"], &["1:a,", "]"]];
        let mut seen = std::collections::BTreeSet::new();
        for c in cases {
            let v = list(c);
            assert_eq!(decode_list(&v).as_deref(), Some(&c.iter().map(|s| s.to_string()).collect::<Vec<_>>()[..]));
            assert!(seen.insert(v), "{c:?}");
        }
        assert_eq!(list(&["sh", "-c", "make"]), "[2:sh,2:-c,4:make,]");
        assert_eq!(decode_list("[2:sh,"), None);
        assert_eq!(decode_list("plain"), None);
    }

    /// Pins the encoding (the values were computed outside kiln, by a Python transcription of the
    /// format in the module doc): if one of these changes, every key in every cache changed. Bump
    /// [`KEY_VERSION`] and the values here together, and say so in the CHANGELOG.
    #[test]
    fn golden_keys() {
        let parent = Digest::sha256_of(b"scratch linux/amd64");
        let mut run = StepInputs::new(Canon::new("RUN").str("command", "make").finish(), &platform());
        run.set(Input::Run, list(&["/bin/sh", "-c", "make"]));
        run.set(Input::Env("PATH".into()), "/usr/bin:/bin");
        run.set(Input::Arg("VERSION".into()), "1.2");
        run.set(Input::User, "");
        run.set(Input::Workdir, "/");
        assert_eq!(run.key(&parent).to_string(), "sha256:0a6f32d83ff6024abd8c13107dab199c338c4bb0fe786c9b955c9c489f02a770");

        let mut copy = StepInputs::new(Canon::new("COPY").list("sources", &["a.txt"]).str("dest", "/a").finish(), &platform());
        copy.set(Input::Source(0, "a.txt".into()), Digest::sha256_of(b"a.txt 644 x").to_string());
        copy.set(Input::User, "");
        copy.set(Input::Workdir, "/");
        assert_eq!(copy.key(&parent).to_string(), "sha256:805a07337f08f2420fcba66bb85a48dc6921d5a1d252f90e8c10d8b7de57796c");

        let env = StepInputs::new(Canon::new("ENV").list("pairs", &["MODE", "dev"]).finish(), &platform());
        let preimage = concat!(
            "kiln-cache-v2\n",
            "71:sha256:048cea675a49db586fc3f348f8d14d13696823ba4d67269e93f645d6e149a23c,",
            "11:instruction,",
            "25:ENV pairs=[4:MODE,3:dev,],",
            "8:platform,",
            "11:linux/amd64,"
        );
        assert_eq!(String::from_utf8(env.preimage(&parent)).unwrap(), preimage);
        assert_eq!(env.key(&parent).to_string(), "sha256:f049e50e9036e2aa904f31d5005e48bf7641efc9e8cb0f8a264b1612225a7a22");
    }

    /// The roots chains start from; they are not versioned (a step's key is), so they stay fixed.
    #[test]
    fn golden_roots() {
        let m = Digest::sha256_of(b"manifest");
        assert_eq!(
            image_root(&m, &platform()).to_string(),
            format!("sha256:{}", Digest::sha256_of(format!("from {m} linux/amd64").as_bytes()).hex())
        );
        assert_eq!(scratch_root(&platform()).to_string(), "sha256:048cea675a49db586fc3f348f8d14d13696823ba4d67269e93f645d6e149a23c");
        assert_eq!(link_root(), Digest::sha256_of(b"kiln COPY --link: no parent"));
    }

    #[test]
    fn inputs_that_differ_only_in_escaping_get_different_keys() {
        let parent = Digest::sha256_of(b"p");
        let key = |pairs: &[(Input, &str)]| {
            let mut s = StepInputs::default();
            for (i, v) in pairs {
                s.set(i.clone(), *v);
            }
            s.key(&parent)
        };
        // Version 1 wrote `name\tvalue\n` with a newline in a value as `\n` and left `\` alone: a
        // value with a real newline and one with a backslash and an `n` hashed the same.
        assert_ne!(key(&[(Input::Run, "a\nb")]), key(&[(Input::Run, "a\\nb")]));
        // A value cannot imitate a following input either.
        assert_ne!(key(&[(Input::User, "x\nworkdir\t/")]), key(&[(Input::User, "x"), (Input::Workdir, "/")]));
        assert_ne!(key(&[(Input::User, "x4:user,1:y,")]), key(&[(Input::User, "x")]));
        // Nor a name its value.
        assert_ne!(key(&[(Input::Env("A".into()), "B=C")]), key(&[(Input::Env("A=B".into()), "C")]));
        // An argv is a list, not a joined string.
        assert_ne!(key(&[(Input::Run, &list(&["a b"]))]), key(&[(Input::Run, &list(&["a", "b"]))]));
        // Canonical text: a string holding a field separator stays one string.
        let one = Canon::new("X").str("a", "1 b=1:2,").finish();
        let two = Canon::new("X").str("a", "1").str("b", "2").finish();
        assert_ne!(one, two);
        assert_ne!(Canon::new("X").opt_str("a", None).finish(), Canon::new("X").str("a", "-").finish());
        assert_ne!(Canon::new("X").opt_str("a", Some("")).finish(), Canon::new("X").opt_str("a", None).finish());
    }

    #[test]
    fn changes_read_well() {
        let d = |i: Input, c: Option<&str>, n: Option<&str>| describe_change(&i, c, n);
        assert_eq!(d(Input::Source(0, "app/main.go".into()), Some("sha256:1"), Some("sha256:2")), "file app/main.go changed");
        assert_eq!(d(Input::Source(0, "new.h".into()), None, Some("sha256:2")), "file new.h is new");
        assert_eq!(d(Input::Source(0, "gone".into()), Some("sha256:2"), None), "file gone was removed");
        assert_eq!(d(Input::Env("MODE".into()), Some("dev"), Some("prod")), "env MODE changed: was \"dev\", now \"prod\"");
        assert_eq!(d(Input::Arg("X".into()), Some("1"), None), "build arg X is no longer set (was \"1\")");
        assert_eq!(d(Input::Arg("X".into()), None, Some("1")), "build arg X is new: \"1\"");
        assert_eq!(d(Input::User, Some("root"), Some("app")), "user changed: was \"root\", now \"app\"");
        assert_eq!(
            d(Input::Run, Some(&list(&["make"])), Some(&list(&["make", "-j4"]))),
            "the command changed: was [\"make\"], now [\"make\", \"-j4\"]"
        );
        assert_eq!(d(Input::CopyFrom, Some("sha256:1"), Some("sha256:2")), "the stage or image it copies from changed");
        assert_eq!(d(Input::Heredoc(1), Some(&list(&["a", "sha256:1"])), Some(&list(&["a", "sha256:2"]))), "heredoc source 1 changed");
        assert_eq!(d(Input::MountFrom(1), Some("sha256:1"), Some("sha256:2")), "the stage or image --mount 1 reads from changed");
    }
}
