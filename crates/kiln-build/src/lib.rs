//! kiln-build (being built): planning, cache keys, solving, snapshots, image assembly.
