//! `racker version` and `racker info` (also `system info`): what racker is, what the
//! store holds and what the host offers, as docker shows them, or as JSON.

use anyhow::Result;
use racker::runtime::{HostFacts, StoreInfo};
use racker::store::Store;

use crate::format::human_size;
use crate::Format;

/// The commit racker was built from, when the build sets `RACKER_GIT_COMMIT` (there is
/// no build script to ask git; a packager or CI knows it).
const GIT_COMMIT: Option<&str> = option_env!("RACKER_GIT_COMMIT");

/// `racker version`. There is no server: one block, with the Rust toolchain racker
/// needs where docker names its Go version.
pub fn version(format: &Format) -> Result<()> {
    // docker's (Go's) names: linux/amd64.
    let platform = racker::oci::Platform::host();
    let (os, arch) = (platform.os.as_str(), platform.architecture.as_str());
    let mut value = serde_json::json!({
        "Version": env!("CARGO_PKG_VERSION"),
        "RustVersion": env!("CARGO_PKG_RUST_VERSION"),
        "Os": os,
        "Arch": arch,
    });
    if let Some(commit) = GIT_COMMIT {
        value["GitCommit"] = commit.into();
    }
    if crate::template::print_one(format, &value)?.is_some() {
        return Ok(());
    }
    if format.is_json() {
        outln!("{}", serde_json::to_string_pretty(&value)?)?;
        return Ok(());
    }
    outln!("racker:")?;
    outln!(" Version:       {}", env!("CARGO_PKG_VERSION"))?;
    outln!(" Rust version:  {} (the oldest toolchain that builds it)", env!("CARGO_PKG_RUST_VERSION"))?;
    if let Some(commit) = GIT_COMMIT {
        outln!(" Git commit:    {commit}")?;
    }
    outln!(" OS/Arch:       {os}/{arch}")?;
    Ok(())
}

/// `racker info`: the store's counts and the host facts, docker's names where docker
/// has the same fact.
pub fn info(store: &Store, format: &Format) -> Result<()> {
    let store_info = StoreInfo::of(store)?;
    let host = HostFacts::detect();
    if *format != Format::Table {
        let mut value = serde_json::to_value(&store_info)?;
        if let (Some(all), serde_json::Value::Object(facts)) = (value.as_object_mut(), serde_json::to_value(&host)?) {
            all.extend(facts);
            all.insert("ServerVersion".into(), env!("CARGO_PKG_VERSION").into());
        }
        if crate::template::print_one(format, &value)?.is_none() {
            outln!("{}", serde_json::to_string_pretty(&value)?)?;
        }
        return Ok(());
    }
    let s = &store_info;
    let known = |v: &Option<String>| v.clone().unwrap_or_else(|| "unknown".into());
    let yes = |b: bool| if b { "yes" } else { "no" };
    let text = [
        format!("Containers: {}", s.containers),
        format!(" Running: {}", s.containers_running),
        format!(" Paused: {}", s.containers_paused),
        format!(" Stopped: {}", s.containers_stopped),
        format!("Images: {}", s.images),
        format!("Volumes: {}", s.volumes),
        format!("Networks: {}", s.networks),
        format!("Server Version: {}", env!("CARGO_PKG_VERSION")),
        format!("Storage Driver: {}", s.driver),
        format!("Racker Root Dir: {}", s.root_dir.display()),
        format!("Cgroup Version: {}", host.cgroup_version.as_str()),
        format!("systemd as PID 1: {}", yes(host.systemd_pid1)),
        format!("machined: {}", yes(host.machined)),
        format!(
            "Registration: {} ({})",
            serde_json::to_value(host.registration)?.as_str().unwrap_or_default(),
            host.registration_reason
        ),
        format!("systemd-nspawn: {}", host.nspawn_version.clone().unwrap_or_else(|| "not found".into())),
        format!("Kernel Version: {}", known(&host.kernel_version)),
        format!("Operating System: {}", known(&host.operating_system)),
        format!("OSType: {}", host.os_type),
        format!("Architecture: {}", host.architecture),
        format!("CPUs: {}", host.ncpu),
        format!("Total Memory: {}", host.mem_total.map_or_else(|| "unknown".into(), human_size)),
    ];
    for line in text {
        outln!("{line}")?;
    }
    Ok(())
}
