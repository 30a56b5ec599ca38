//! rpm packages: **not read yet**.
//!
//! rpm keeps its database in `/var/lib/rpm/rpmdb.sqlite` (rpm ≥ 4.16; `/usr/lib/sysimage/rpm/` on
//! newer Fedora/openSUSE): a `Packages` table of rpm header blobs. Reading it needs an SQLite reader
//! and an rpm header parser, which this crate does not have yet (the BerkeleyDB `Packages` and `ndb`
//! formats of older distributions are out of scope too). So that an rpm-based image never gets an
//! SBOM that silently omits its OS packages, a present database is reported in
//! [`crate::Catalog::skipped`] with that reason.

use crate::tree::Tree;
use crate::{Catalog, Skipped};

pub fn catalog(tree: &Tree, out: &mut Catalog) {
    for path in ["/var/lib/rpm/rpmdb.sqlite", "/usr/lib/sysimage/rpm/rpmdb.sqlite"] {
        if tree.file(path).is_some() {
            out.skipped.push(Skipped {
                path: path.to_string(),
                reason: "rpm databases are not cataloged yet: the rpm packages are missing from this SBOM".into(),
            });
        }
    }
}
