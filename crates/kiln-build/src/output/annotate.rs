//! Annotations, placed where BuildKit places them.
//!
//! An annotation is a key and value at one *level* of what an output writes: each image
//! `manifest` (the default), each `manifest-descriptor` in the image index, the `index` itself,
//! or the `index-descriptor` in an OCI layout's `index.json`. Manifest-level ones may be limited to
//! one platform. They come from `--annotation [TYPE[,TYPE…][[PLATFORM]]:]KEY=VALUE` (applied to every
//! output that writes an image) and from an output's own `annotation[-TYPE][[PLATFORM]].KEY=VALUE`.
//!
//! Where BuildKit discards an annotation the output has no place for (an index annotation on a
//! one-platform build), kiln fails instead, as buildx's own documentation says a build must: a
//! requested annotation is never dropped quietly.

use std::collections::BTreeMap;

use kiln_oci::{Descriptor, Manifest, Platform, Store};

/// Where an annotation goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Level {
    Manifest,
    ManifestDescriptor,
    Index,
    IndexDescriptor,
}

impl Level {
    fn parse(s: &str) -> Option<Level> {
        Some(match s {
            "manifest" => Level::Manifest,
            "manifest-descriptor" => Level::ManifestDescriptor,
            "index" => Level::Index,
            "index-descriptor" => Level::IndexDescriptor,
            _ => return None,
        })
    }

    pub fn name(self) -> &'static str {
        match self {
            Level::Manifest => "manifest",
            Level::ManifestDescriptor => "manifest-descriptor",
            Level::Index => "index",
            Level::IndexDescriptor => "index-descriptor",
        }
    }
}

/// One annotation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Annotation {
    pub level: Level,
    /// Only the manifest (or its descriptor) of this platform.
    pub platform: Option<Platform>,
    pub key: String,
    pub value: String,
}

/// Why an annotation cannot be read or placed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AnnotationError {
    #[error("{given:?}: expected [TYPE[,TYPE…][[PLATFORM]]:]KEY=VALUE")]
    Syntax { given: String },
    #[error("{given:?}: unknown annotation type {level:?} (use manifest, manifest-descriptor, index or index-descriptor)")]
    UnknownLevel { given: String, level: String },
    #[error("{given:?}: {source}")]
    Platform {
        given: String,
        #[source]
        source: kiln_oci::PlatformError,
    },
    #[error("{given:?}: a platform applies to manifest and manifest-descriptor annotations only")]
    PlatformOnIndex { given: String },
    #[error(
        "annotation {key:?} for the {}: this build makes no image index (it has one platform), so there is nowhere to put it; annotate the manifest instead",
        level.name()
    )]
    NeedsIndex { key: String, level: Level },
    #[error("annotation {key:?} for the index-descriptor: only type=oci and type=docker write an OCI layout, where that descriptor lives")]
    NeedsLayout { key: String },
}

impl Annotation {
    /// `--annotation [TYPE[,TYPE…][[PLATFORM]]:]KEY=VALUE`: one annotation per type named.
    pub fn parse_flag(given: &str) -> Result<Vec<Annotation>, AnnotationError> {
        let syntax = || AnnotationError::Syntax { given: given.to_string() };
        let (left, value) = given.split_once('=').ok_or_else(syntax)?;
        // buildx: `^(?:([a-z-]+(?:,[a-z-]+)*)(?:\[([A-Za-z0-9_/-]+)\])?:)?(\S+)$`.
        let types_end = left.find(|c: char| !(c.is_ascii_lowercase() || c == '-' || c == ',')).unwrap_or(left.len());
        let rest = &left[types_end..];
        let (types, platform, key) = if types_end > 0 && rest.starts_with(':') {
            (&left[..types_end], None, &rest[1..])
        } else if types_end > 0 && rest.starts_with('[') {
            match rest.split_once("]:") {
                Some((p, key)) if p[1..].chars().all(|c| c.is_ascii_alphanumeric() || "_/-".contains(c)) => {
                    (&left[..types_end], Some(&p[1..]), key)
                }
                _ => ("", None, left),
            }
        } else {
            ("", None, left)
        };
        if key.is_empty() || key.chars().any(char::is_whitespace) {
            return Err(syntax());
        }
        let levels: Vec<&str> = if types.is_empty() { vec!["manifest"] } else { types.split(',').collect() };
        levels.into_iter().map(|l| Annotation::new(given, l, platform, key, value)).collect()
    }

    /// An output's attribute `annotation[-TYPE][[PLATFORM]].KEY`, or `None` when `attr` is not one.
    pub fn parse_attr(attr: &str, value: &str) -> Option<Result<Annotation, AnnotationError>> {
        let rest = attr.strip_prefix("annotation")?;
        let (level, rest) = match rest.strip_prefix('-') {
            Some(r) => {
                let end = r.find(['.', '[']).unwrap_or(r.len());
                (&r[..end], &r[end..])
            }
            None => ("manifest", rest),
        };
        let (platform, rest) = match rest.strip_prefix('[') {
            Some(r) => match r.split_once(']') {
                Some((p, r)) => (Some(p), r),
                None => return Some(Err(AnnotationError::Syntax { given: attr.to_string() })),
            },
            None => (None, rest),
        };
        let key = rest.strip_prefix('.')?;
        if key.is_empty() {
            return Some(Err(AnnotationError::Syntax { given: attr.to_string() }));
        }
        Some(Annotation::new(attr, level, platform, key, value))
    }

    fn new(given: &str, level: &str, platform: Option<&str>, key: &str, value: &str) -> Result<Annotation, AnnotationError> {
        let level =
            Level::parse(level).ok_or_else(|| AnnotationError::UnknownLevel { given: given.to_string(), level: level.to_string() })?;
        let platform = match platform {
            None => None,
            Some(_) if matches!(level, Level::Index | Level::IndexDescriptor) => {
                return Err(AnnotationError::PlatformOnIndex { given: given.to_string() })
            }
            Some(p) => {
                Some(Platform::parse(p).map_err(|source| AnnotationError::Platform { given: given.to_string(), source })?.normalized())
            }
        };
        Ok(Annotation { level, platform, key: key.to_string(), value: value.to_string() })
    }

    fn applies_to(&self, level: Level, platform: Option<&Platform>) -> bool {
        self.level == level
            && match (&self.platform, platform) {
                (None, _) => true,
                (Some(want), Some(p)) => {
                    let p = p.normalized();
                    want.os == p.os && want.architecture == p.architecture && (want.variant.is_none() || want.variant == p.variant)
                }
                (Some(_), None) => false,
            }
    }
}

/// What [`apply`] made: the root (rewritten when a manifest or the index changed) and the
/// annotations for the layout's descriptor of it.
pub struct Annotated {
    pub root: Descriptor,
    pub index_descriptor: BTreeMap<String, String>,
}

fn add(map: &mut Option<BTreeMap<String, String>>, ann: &[Annotation], level: Level, platform: Option<&Platform>) -> bool {
    let mut changed = false;
    for a in ann.iter().filter(|a| a.applies_to(level, platform)) {
        map.get_or_insert_with(BTreeMap::new).insert(a.key.clone(), a.value.clone());
        changed = true;
    }
    changed
}

/// Places `ann` on the image or index `root` (new manifests go to `store`). `single` is the
/// platform of a one-image root; `layout` says whether the output is an OCI layout.
pub fn apply(
    store: &Store,
    root: &Descriptor,
    single: Option<&Platform>,
    ann: &[Annotation],
    layout: bool,
) -> Result<Annotated, crate::BuildError> {
    let mut index_descriptor = None;
    add(&mut index_descriptor, ann, Level::IndexDescriptor, None);
    if let (Some(a), false) = (ann.iter().find(|a| a.level == Level::IndexDescriptor), layout) {
        return Err(super::OutputError::Annotation(AnnotationError::NeedsLayout { key: a.key.clone() }).into());
    }
    let index_descriptor = index_descriptor.unwrap_or_default();
    if ann.iter().all(|a| a.level == Level::IndexDescriptor) {
        return Ok(Annotated { root: root.clone(), index_descriptor });
    }
    let root = match store.read_manifest(root)?.value {
        Manifest::Image(mut m) => {
            if let Some(a) = ann.iter().find(|a| matches!(a.level, Level::Index | Level::ManifestDescriptor)) {
                return Err(super::OutputError::Annotation(AnnotationError::NeedsIndex { key: a.key.clone(), level: a.level }).into());
            }
            if !add(&mut m.annotations, ann, Level::Manifest, single) {
                return Ok(Annotated { root: root.clone(), index_descriptor });
            }
            let d = store.put_manifest(&Manifest::Image(m))?;
            Descriptor { digest: d.digest, size: d.size, ..root.clone() }
        }
        Manifest::Index(mut ix) => {
            for child in &mut ix.manifests {
                let platform = child.platform.clone();
                if kiln_oci::media::is_image_manifest(&child.media_type) && store.has_blob(&child.digest) {
                    if let Manifest::Image(mut m) = store.read_manifest(child)?.value {
                        if add(&mut m.annotations, ann, Level::Manifest, platform.as_ref()) {
                            let d = store.put_manifest(&Manifest::Image(m))?;
                            child.digest = d.digest;
                            child.size = d.size;
                        }
                    }
                }
                add(&mut child.annotations, ann, Level::ManifestDescriptor, platform.as_ref());
            }
            add(&mut ix.annotations, ann, Level::Index, None);
            let d = store.put_manifest(&Manifest::Index(ix))?;
            Descriptor { digest: d.digest, size: d.size, ..root.clone() }
        }
    };
    Ok(Annotated { root, index_descriptor })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn one(level: Level, platform: Option<&str>, key: &str, value: &str) -> Annotation {
        Annotation { level, platform: platform.map(|p| Platform::parse(p).unwrap().normalized()), key: key.into(), value: value.into() }
    }

    #[test]
    fn the_flag_reads_as_buildx_reads_it() {
        assert_eq!(Annotation::parse_flag("a.b=c").unwrap(), [one(Level::Manifest, None, "a.b", "c")]);
        assert_eq!(Annotation::parse_flag("index:a=b=c").unwrap(), [one(Level::Index, None, "a", "b=c")]);
        assert_eq!(
            Annotation::parse_flag("index,manifest:foo=bar").unwrap(),
            [one(Level::Index, None, "foo", "bar"), one(Level::Manifest, None, "foo", "bar")]
        );
        assert_eq!(Annotation::parse_flag("manifest[linux/arm64]:k=v").unwrap(), [one(Level::Manifest, Some("linux/arm64"), "k", "v")]);
        assert_eq!(Annotation::parse_flag("k=").unwrap(), [one(Level::Manifest, None, "k", "")]);
        let e = Annotation::parse_flag("layer:k=v").unwrap_err();
        assert_eq!(
            e.to_string(),
            r#""layer:k=v": unknown annotation type "layer" (use manifest, manifest-descriptor, index or index-descriptor)"#
        );
        assert!(matches!(Annotation::parse_flag("novalue"), Err(AnnotationError::Syntax { .. })));
        assert!(matches!(Annotation::parse_flag("index[linux/amd64]:k=v"), Err(AnnotationError::PlatformOnIndex { .. })));
        assert!(matches!(Annotation::parse_flag("manifest[linux/]:k=v"), Err(AnnotationError::Platform { .. })));
    }

    #[test]
    fn output_attributes_read_as_buildkit_reads_them() {
        let p = |k: &str| Annotation::parse_attr(k, "v");
        assert_eq!(p("annotation.org.x").unwrap().unwrap(), one(Level::Manifest, None, "org.x", "v"));
        assert_eq!(p("annotation-index.org.x").unwrap().unwrap(), one(Level::Index, None, "org.x", "v"));
        assert_eq!(
            p("annotation-manifest-descriptor[linux/amd64].k").unwrap().unwrap(),
            one(Level::ManifestDescriptor, Some("linux/amd64"), "k", "v")
        );
        assert_eq!(p("annotation[linux/arm64/v8].k").unwrap().unwrap(), one(Level::Manifest, Some("linux/arm64"), "k", "v"));
        assert!(p("annotations").is_none());
        assert!(p("name").is_none());
        assert!(matches!(p("annotation-layer.k"), Some(Err(AnnotationError::UnknownLevel { .. }))));
        assert!(matches!(p("annotation[linux/amd64.k"), Some(Err(AnnotationError::Syntax { .. }))));
    }

    #[test]
    fn a_platform_limits_an_annotation_to_its_manifest() {
        let a = one(Level::Manifest, Some("linux/arm64"), "k", "v");
        assert!(a.applies_to(Level::Manifest, Some(&Platform::parse("linux/arm64/v8").unwrap())));
        assert!(!a.applies_to(Level::Manifest, Some(&Platform::parse("linux/amd64").unwrap())));
        assert!(!a.applies_to(Level::ManifestDescriptor, Some(&Platform::parse("linux/arm64").unwrap())));
        assert!(one(Level::Manifest, None, "k", "v").applies_to(Level::Manifest, None));
    }
}
