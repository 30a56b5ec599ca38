//! kiln-oci (being built).
