//! Platforms (`os/arch[/variant]`) and matching, normalised the way containerd does it so that
//! `aarch64`, `arm64` and `arm64/v8` are the same thing.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// Why a platform string was rejected.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
#[error("invalid platform {input:?}: {reason}; write it as os/arch[/variant], e.g. linux/arm64/v8")]
pub struct PlatformError {
    pub input: String,
    pub reason: &'static str,
}

/// The platform an image or manifest is for, as in the OCI spec.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, Default)]
pub struct Platform {
    pub architecture: String,
    pub os: String,
    #[serde(rename = "os.version", default, skip_serializing_if = "Option::is_none")]
    pub os_version: Option<String>,
    #[serde(rename = "os.features", default, skip_serializing_if = "Option::is_none")]
    pub os_features: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub variant: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub features: Option<Vec<String>>,
}

impl Platform {
    /// A platform from parts (not normalised; call [`Platform::normalized`] for that).
    pub fn new(os: &str, architecture: &str, variant: Option<&str>) -> Platform {
        Platform {
            os: os.to_string(),
            architecture: architecture.to_string(),
            variant: variant.filter(|v| !v.is_empty()).map(str::to_string),
            ..Platform::default()
        }
    }

    /// Parses `os/arch[/variant]` (or just `arch`, meaning linux) and normalises it.
    pub fn parse(s: &str) -> Result<Platform, PlatformError> {
        let err = |reason| PlatformError { input: s.to_string(), reason };
        let parts: Vec<&str> = s.split('/').collect();
        if parts.iter().any(|p| p.is_empty()) {
            return Err(err("empty component"));
        }
        let p = match parts.as_slice() {
            [arch] => Platform::new("linux", arch, None),
            [os, arch] => Platform::new(os, arch, None),
            [os, arch, variant] => Platform::new(os, arch, Some(variant)),
            _ => return Err(err("too many '/'-separated parts")),
        };
        if !p.os.chars().chain(p.architecture.chars()).all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-') {
            return Err(err("unexpected characters"));
        }
        Ok(p.normalized())
    }

    /// The platform this process runs on.
    pub fn host() -> Platform {
        let arch = std::env::consts::ARCH;
        let variant = if arch == "arm" { Some("v7") } else { None };
        Platform::new(std::env::consts::OS, arch, variant).normalized()
    }

    /// containerd's normalisation: lowercase os (`macos` is `darwin`), `x86_64`→`amd64`,
    /// `aarch64`→`arm64` (variant `v8` dropped), `armhf`→`arm/v7`, `armel`→`arm/v6`, `i386`→`386`.
    pub fn normalized(&self) -> Platform {
        let mut p = self.clone();
        p.os = p.os.to_lowercase();
        if p.os == "macos" {
            p.os = "darwin".to_string();
        }
        let arch = p.architecture.to_lowercase();
        let variant = p.variant.take().map(|v| v.to_lowercase()).unwrap_or_default();
        let (arch, variant) = match arch.as_str() {
            "i386" | "i486" | "i586" | "i686" | "386" => ("386".to_string(), String::new()),
            "x86_64" | "x86-64" | "amd64" => ("amd64".to_string(), if variant == "v1" { String::new() } else { variant }),
            "aarch64" | "arm64" => {
                ("arm64".to_string(), if matches!(variant.as_str(), "8" | "v8" | "v8.0") { String::new() } else { variant })
            }
            "armhf" => ("arm".to_string(), "v7".to_string()),
            "armel" => ("arm".to_string(), "v6".to_string()),
            "arm" => {
                let v = match variant.as_str() {
                    "" | "7" => "v7".to_string(),
                    "5" | "6" | "8" => format!("v{variant}"),
                    _ => variant,
                };
                ("arm".to_string(), v)
            }
            _ => (arch, variant),
        };
        p.architecture = arch;
        p.variant = if variant.is_empty() { None } else { Some(variant) };
        p
    }

    /// Does an image for `candidate` fit a request for `self`? Compared after normalisation on os,
    /// architecture and variant; os.version and features are not compared.
    pub fn matches(&self, candidate: &Platform) -> bool {
        let a = self.normalized();
        let b = candidate.normalized();
        a.os == b.os && a.architecture == b.architecture && a.variant == b.variant
    }
}

impl fmt::Display for Platform {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.os, self.architecture)?;
        if let Some(v) = &self.variant {
            write!(f, "/{v}")?;
        }
        Ok(())
    }
}

impl FromStr for Platform {
    type Err = PlatformError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Platform::parse(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> Platform {
        Platform::parse(s).unwrap()
    }

    #[test]
    fn normalisation() {
        assert_eq!(p("linux/aarch64").to_string(), "linux/arm64");
        assert_eq!(p("linux/arm64/v8").to_string(), "linux/arm64");
        assert_eq!(p("linux/x86_64").to_string(), "linux/amd64");
        assert_eq!(p("linux/armhf").to_string(), "linux/arm/v7");
        assert_eq!(p("linux/armel").to_string(), "linux/arm/v6");
        assert_eq!(p("linux/arm").to_string(), "linux/arm/v7");
        assert_eq!(p("linux/arm/6").to_string(), "linux/arm/v6");
        assert_eq!(p("linux/i686").to_string(), "linux/386");
        assert_eq!(p("Linux/AMD64").to_string(), "linux/amd64");
        assert_eq!(p("macos/arm64").to_string(), "darwin/arm64");
        assert_eq!(p("amd64").to_string(), "linux/amd64");
        assert_eq!(p("linux/amd64/v3").to_string(), "linux/amd64/v3");
        for bad in ["", "linux/", "/amd64", "a/b/c/d", "linux/am d64"] {
            assert!(Platform::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn matching() {
        assert!(p("linux/arm64").matches(&Platform::new("linux", "arm64", Some("v8"))));
        assert!(Platform::new("linux", "arm64", Some("v8")).matches(&Platform::new("linux", "aarch64", None)));
        assert!(p("linux/amd64").matches(&Platform::new("linux", "x86_64", None)));
        assert!(!p("linux/amd64").matches(&Platform::new("linux", "arm64", None)));
        assert!(!p("linux/arm/v7").matches(&Platform::new("linux", "arm", Some("v6"))));
        assert!(p("linux/arm/v7").matches(&Platform::new("linux", "arm", None)));
        assert!(!p("linux/amd64").matches(&Platform::new("windows", "amd64", None)));
        let host = Platform::host();
        assert!(host.matches(&host));
        assert_eq!(host.os, "linux");
    }

    #[test]
    fn serde_uses_oci_field_names() {
        let j = r#"{"architecture":"arm64","os":"linux","variant":"v8","os.version":"1"}"#;
        let p: Platform = serde_json::from_str(j).unwrap();
        assert_eq!(p.variant.as_deref(), Some("v8"));
        assert_eq!(p.os_version.as_deref(), Some("1"));
        let back = serde_json::to_string(&p).unwrap();
        assert_eq!(back, r#"{"architecture":"arm64","os":"linux","os.version":"1","variant":"v8"}"#);
    }
}
