//! The integration suite, as one test binary: one link instead of thirteen, one set of
//! helpers (`common`) and the test images built once per run instead of once per file.
//! Each module holds the tests of one part of racker or postroj against real parts
//! (nspawn containers, overlay and btrfs mounts, registries, SQLite files); most need
//! root and fail rather than skip without it.
//!
//! Run one part with a filter: `cargo test --test suite run::` (or `registry::pull`).

mod common;
#[path = "../support/fixturegen.rs"]
mod fixturegen;

mod cli;
mod commit;
mod completion;
mod container_attach;
mod container_files;
mod container_lifecycle;
mod container_logs;
mod container_network;
mod container_observe;
mod container_restart;
mod conventions;
mod fixtures;
mod formats;
mod hostile_registry;
mod image_verbs;
mod listings;
mod local_users;
mod objects;
mod postroj_cache_cli;
mod postroj_checks;
mod postroj_depcache;
mod postroj_modes;
mod postroj_probe;
mod postroj_pull;
mod postroj_shards;
mod postroj_slurm;
mod registry;
mod run;
mod run_flags;
mod slurm;
mod snapshot;
mod store;
mod system_info;
mod systemd_host;
mod terminals;
mod unpack;
