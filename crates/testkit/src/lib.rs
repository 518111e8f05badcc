//! Test support for commitd: real containerd, real runc containers.
