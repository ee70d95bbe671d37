//! postroj, the package-testing front over the store and boot mode: curated OS images
//! (pulled from a registry or built from a Debian mirror, provisioned with systemd as a
//! stored layer) and `pkgprobe`, which installs a package in booted throw-away
//! containers and checks its units and network services.
//!
//! ```text
//! catalog ──> provision ──> store image  ──>  probe: boot lean ─> install package ─> checks ─> report
//!  labels     pull/mmdebstrap + systemd layer       (runtime)      (package cache)   (check)   (report)
//!                                                   lifecycle: install / purge / upgrade / reinstall
//!                                                   effects: the install's writes, from the upper dir
//! ```

pub mod apt_cache;
pub mod catalog;
pub mod check;
pub mod deb;
pub mod depcache;
pub mod deps;
pub mod effects;
pub mod layer;
pub mod lifecycle;
pub mod matrix;
pub mod merge;
pub mod mirror;
pub mod package;
pub mod probe;
pub mod provision;
pub mod report;
