//! Turning a Dockerfile `USER` string into uid, gid and supplementary groups.
//!
//! The rules are BuildKit's (`executor/oci/user.go` on top of libcontainer's `GetExecUser`),
//! which is what `docker build` does:
//! - `""` is uid 0, looked up like any numeric uid (so root's passwd gid and member groups
//!   count), and 0:0 when passwd has no such entry;
//! - `uid:gid` with both parts numeric (or `root`) is taken as is, with no lookup at all;
//! - otherwise the user part is looked up in the image's `/etc/passwd` by name, or by uid when
//!   numeric (an unknown numeric uid is fine, with gid 0); an unknown name is an error;
//! - an explicit group is looked up in `/etc/group` by name or gid (unknown numeric gids are
//!   fine) and then no member groups are added;
//! - without an explicit group, a user found in passwd gets its passwd gid plus every group of
//!   `/etc/group` that lists the user's name as a member.
//!
//! The supplementary groups always contain the primary gid, first, then the member groups in
//! `/etc/group` order, each gid once. That is what the process gets under Docker, BuildKit and
//! buildah: Docker's daemon and BuildKit (`ensureAdditionalGids`, taken from containerd) put the
//! gid into the OCI spec's `additionalGids`, which runc hands to `setgroups`, so `id` in a `RUN`
//! prints `groups=1000(app)` even when `/etc/group` lists nobody in `app`. The kernel sorts the
//! list, so only membership is visible; a gid named twice in `/etc/group` is set once, as
//! buildah does.
//!
//! The files are read by the caller from inside the root (never the host's).

use thiserror::Error;

/// Who the process runs as.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    pub uid: u32,
    pub gid: u32,
    /// Supplementary groups: `gid` first, then the member groups in `/etc/group` order, each
    /// gid once (see the module doc).
    pub groups: Vec<u32>,
    /// Home directory from passwd (by name, else by uid), else `/`: becomes `HOME` when unset.
    pub home: String,
}

#[derive(Debug, Error, PartialEq, Eq)]
pub enum UserError {
    #[error("unknown user '{0}': no such name in the image's /etc/passwd; add the user in an earlier step (e.g. `RUN adduser -D {0}`) or use a numeric uid")]
    UnknownUser(String),
    #[error("unknown group '{0}': no such name in the image's /etc/group; create it in an earlier step or use a numeric gid")]
    UnknownGroup(String),
    #[error("user '{0}': uid/gid {1} is out of range (0..=2147483647)")]
    OutOfRange(String, u64),
}

struct PasswdEntry<'a> {
    name: &'a str,
    uid: u32,
    gid: u32,
    home: &'a str,
}

struct GroupEntry<'a> {
    name: &'a str,
    gid: u32,
    members: Vec<&'a str>,
}

fn parse_id(s: &str) -> Option<u32> {
    s.trim().parse::<u32>().ok()
}

fn passwd_entries(text: &str) -> impl Iterator<Item = PasswdEntry<'_>> {
    text.lines().filter_map(|line| {
        let f: Vec<&str> = line.trim().split(':').collect();
        if f.len() < 4 || f[0].is_empty() || f[0].starts_with('#') {
            return None;
        }
        Some(PasswdEntry { name: f[0], uid: parse_id(f[2])?, gid: parse_id(f[3])?, home: f.get(5).copied().unwrap_or("") })
    })
}

fn group_entries(text: &str) -> impl Iterator<Item = GroupEntry<'_>> {
    text.lines().filter_map(|line| {
        let f: Vec<&str> = line.trim().split(':').collect();
        if f.len() < 3 || f[0].is_empty() || f[0].starts_with('#') {
            return None;
        }
        Some(GroupEntry {
            name: f[0],
            gid: parse_id(f[2])?,
            members: f.get(3).map(|m| m.split(',').map(str::trim).filter(|m| !m.is_empty()).collect()).unwrap_or_default(),
        })
    })
}

/// BuildKit's `parseUID`: a number, or the literal `root`.
fn fast_id(s: &str) -> Option<u32> {
    if s == "root" {
        Some(0)
    } else {
        s.parse::<u32>().ok()
    }
}

const MAX_ID: u32 = i32::MAX as u32;

/// Resolves `spec` against the image's passwd and group files (`None` when a file is missing).
pub fn resolve(spec: &str, passwd: Option<&str>, group: Option<&str>) -> Result<Identity, UserError> {
    let home_of = |uid: u32| -> String {
        passwd
            .and_then(|p| passwd_entries(p).find(|e| e.uid == uid).map(|e| e.home.to_string()))
            .filter(|h| !h.is_empty())
            .unwrap_or_else(|| "/".to_string())
    };
    // BuildKit looks the default user up as uid "0", so root gets its member groups too (as in
    // `docker run alpine id`: wheel and the rest); that lookup cannot fail.
    let spec = if spec.is_empty() { "0" } else { spec };
    let (user_arg, group_arg) = match spec.split_once(':') {
        Some((u, g)) => (u, g.split(':').next().unwrap_or(g)),
        None => (spec, ""),
    };
    if !group_arg.is_empty() {
        if let (Some(uid), Some(gid)) = (fast_id(user_arg), fast_id(group_arg)) {
            for id in [uid, gid] {
                if id > MAX_ID {
                    return Err(UserError::OutOfRange(spec.to_string(), id.into()));
                }
            }
            return Ok(Identity { uid, gid, groups: vec![gid], home: home_of(uid) });
        }
    }

    let numeric_user = user_arg.parse::<u32>().ok();
    let found = passwd.and_then(|p| {
        passwd_entries(p).find(|e| match numeric_user {
            _ if user_arg.is_empty() => e.uid == 0,
            Some(n) => e.uid == n,
            None => e.name == user_arg,
        })
    });
    let (uid, mut gid, matched_name, home) = match found {
        Some(e) => (e.uid, e.gid, Some(e.name), e.home.to_string()),
        None => match numeric_user {
            _ if user_arg.is_empty() => (0, 0, None, String::new()),
            Some(n) if n > MAX_ID => return Err(UserError::OutOfRange(spec.to_string(), n.into())),
            Some(n) => (n, 0, None, String::new()),
            None => return Err(UserError::UnknownUser(user_arg.to_string())),
        },
    };
    let home = if home.is_empty() { home_of(uid) } else { home };

    let mut members = Vec::new();
    if !group_arg.is_empty() {
        let numeric_group = group_arg.parse::<u32>().ok();
        let g = group.and_then(|g| {
            group_entries(g).find(|e| match numeric_group {
                Some(n) => e.gid == n,
                None => e.name == group_arg,
            })
        });
        gid = match (g, numeric_group) {
            (Some(e), _) => e.gid,
            (None, Some(n)) if n > MAX_ID => return Err(UserError::OutOfRange(spec.to_string(), n.into())),
            (None, Some(n)) => n,
            (None, None) => return Err(UserError::UnknownGroup(group_arg.to_string())),
        };
    } else if let (Some(name), Some(g)) = (matched_name, group) {
        members = group_entries(g).filter(|e| e.members.contains(&name)).map(|e| e.gid).collect();
    }
    let mut groups = vec![gid];
    for m in members {
        if !groups.contains(&m) {
            groups.push(m);
        }
    }
    Ok(Identity { uid, gid, groups, home })
}

#[cfg(test)]
mod tests {
    use super::*;

    const PASSWD: &str = "root:x:0:0:root:/root:/bin/sh\n\
        # a comment\n\
        app:x:1000:1000:App:/home/app:/bin/sh\n\
        broken:x:notanumber:1:::\n\
        nohome:x:1001:1001::\n";
    const GROUP: &str = "root:x:0:\nwheel:x:10:root,app\napp:x:1000:\nextra:x:2000: app , other\n";

    fn r(spec: &str) -> Result<Identity, UserError> {
        resolve(spec, Some(PASSWD), Some(GROUP))
    }

    #[test]
    fn empty_is_root_with_its_gid_and_member_groups() {
        let id = r("").unwrap();
        assert_eq!((id.uid, id.gid, id.groups.clone()), (0, 0, vec![0, 10]));
        assert_eq!(id.home, "/root");
        // No user database at all: still root, still in group 0.
        let id = resolve("", None, None).unwrap();
        assert_eq!((id.uid, id.gid, id.groups.clone()), (0, 0, vec![0]));
        assert_eq!(id.home, "/");
    }

    #[test]
    fn name_gets_passwd_gid_first_then_member_groups() {
        let id = r("app").unwrap();
        assert_eq!((id.uid, id.gid), (1000, 1000));
        assert_eq!(id.groups, vec![1000, 10, 2000]);
        assert_eq!(id.home, "/home/app");
    }

    #[test]
    fn primary_gid_is_a_supplementary_group_even_when_no_group_lists_the_user() {
        // `app:x:1000:` has no member list and nothing else names app: runc still gives 1000.
        let id = resolve("app", Some(PASSWD), Some("root:x:0:\napp:x:1000:\n")).unwrap();
        assert_eq!((id.uid, id.gid, id.groups), (1000, 1000, vec![1000]));
        // A group file that does not exist changes nothing about that.
        let id = resolve("app", Some(PASSWD), None).unwrap();
        assert_eq!(id.groups, vec![1000]);
    }

    #[test]
    fn each_gid_appears_once() {
        // app is listed in its own primary group, and two group names share gid 2000.
        let group = "app:x:1000:app\nzeta:x:2500:app\nextra:x:2000:app\nextra2:x:2000:app\n";
        let id = resolve("app", Some(PASSWD), Some(group)).unwrap();
        assert_eq!(id.groups, vec![1000, 2500, 2000]);
    }

    #[test]
    fn numeric_uid_found_in_passwd_behaves_like_the_name() {
        let id = r("1000").unwrap();
        assert_eq!((id.uid, id.gid, id.groups), (1000, 1000, vec![1000, 10, 2000]));
    }

    #[test]
    fn numeric_uid_unknown_gets_gid_zero_and_root_home() {
        let id = r("4242").unwrap();
        assert_eq!((id.uid, id.gid, id.groups), (4242, 0, vec![0]));
        assert_eq!(id.home, "/");
    }

    #[test]
    fn numeric_pair_skips_lookup_and_has_only_its_gid() {
        let id = resolve("1000:2000", None, None).unwrap();
        assert_eq!((id.uid, id.gid, id.groups), (1000, 2000, vec![2000]));
        // Even for a user with member groups: the explicit form never adds them.
        let id = r("1000:1000").unwrap();
        assert_eq!(id.groups, vec![1000]);
        let id = r("root:root").unwrap();
        assert_eq!((id.uid, id.gid, id.groups), (0, 0, vec![0]));
    }

    #[test]
    fn explicit_group_is_the_only_supplementary_group() {
        let id = r("app:extra").unwrap();
        assert_eq!((id.uid, id.gid, id.groups), (1000, 2000, vec![2000]));
        let id = r("app:77").unwrap();
        assert_eq!((id.gid, id.groups), (77, vec![77]));
        let id = r("root").unwrap();
        assert_eq!(id.groups, vec![0, 10]);
    }

    #[test]
    fn unknown_names_are_clear_errors() {
        let e = r("nobody").unwrap_err();
        assert_eq!(e, UserError::UnknownUser("nobody".into()));
        assert!(e.to_string().contains("/etc/passwd"), "{e}");
        assert_eq!(r("app:nogroup").unwrap_err(), UserError::UnknownGroup("nogroup".into()));
        assert_eq!(resolve("app", None, None).unwrap_err(), UserError::UnknownUser("app".into()));
    }

    #[test]
    fn malformed_lines_are_skipped_and_out_of_range_rejected() {
        assert!(r("broken").is_err());
        assert!(matches!(r("3000000000"), Err(UserError::OutOfRange(..))));
        assert!(matches!(r("1:3000000000"), Err(UserError::OutOfRange(..))));
        let id = r("nohome").unwrap();
        assert_eq!(id.home, "/");
    }
}
