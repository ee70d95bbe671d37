//! What another local user can reach of racker's: nothing of the store or of the runtime
//! directory (an image's setuid binaries and device nodes, logs, the database), and no
//! value of a container's environment in any process's command line. Every check runs
//! as `nobody`, the way an attacker on the host would try.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use serde_json::json;

use crate::common::images;
use crate::common::{self, require_root, TempStore};
use crate::fixturegen::{build_tar, dir, file, gzip, node, Layer, MT_GZIP};

const RUNTIME_DIR: &str = "/run/racker";

/// A layer an attacker would love: a setuid-root shell and a device node anyone may open.
fn setuid_layer() -> Layer {
    let busybox = std::fs::read("/bin/busybox").expect("busybox-static is installed (scripts/prerequisites)");
    let tar = build_tar(&[
        dir(b"opt/", 0o755),
        file(b"opt/suid-busybox", 0o4755, &busybox),
        dir(b"dev/", 0o755),
        node(b"dev/zero-ish", tar::EntryType::Char, 0o666, (1, 5)),
    ])
    .expect("tar");
    Layer { blob: gzip(&tar).expect("gzip"), media_type: MT_GZIP, tar }
}

/// Adds the busybox image with the setuid layer (and `Env`) to `store` as `bb`.
fn hostile_image(store: &TempStore, env: &[&str]) -> tempfile::TempDir {
    let layout = tempfile::tempdir().expect("tempdir");
    let mut config = images::busybox_config();
    config["Env"].as_array_mut().expect("Env").extend(env.iter().map(|e| json!(e)));
    let image = images::image(&[images::busybox_layer(), setuid_layer()], config);
    let location = images::write_layout(layout.path(), &image);
    store.ok(&["pull", "-q", &location]);
    let id = store.ok(&["images", "-q"]);
    store.ok(&["tag", id.trim(), "bb"]);
    layout
}

/// Runs `script` with `sh` as nobody, without supplementary groups; `paths` on its stdin.
fn as_nobody(script: &str, paths: &[PathBuf]) -> String {
    let mut child = Command::new("setpriv")
        .args(["--reuid=nobody", "--regid=nogroup", "--clear-groups", "--", "/bin/sh", "-c", script])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("setpriv (util-linux)");
    let list: String = paths.iter().map(|p| format!("{}\n", p.display())).collect();
    use std::io::Write;
    child.stdin.take().expect("stdin").write_all(list.as_bytes()).expect("writing the paths");
    let out = child.wait_with_output().expect("waiting for setpriv");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// What nobody manages of `attempts` (shell commands) and of `stat`ing each of `paths`:
/// one line per success, so empty when everything was refused.
fn reached_by_nobody(attempts: &[String], paths: &[PathBuf]) -> String {
    let mut script = String::from("try() { if \"$@\" >/dev/null 2>&1; then echo \"reached: $*\"; fi; }\n");
    for attempt in attempts {
        script.push_str(&format!("try {attempt}\n"));
    }
    script
        .push_str("while IFS= read -r p; do if [ -e \"$p\" ] || [ -L \"$p\" ]; then echo \"visible: $p\"; fi; done\n");
    as_nobody(&script, paths)
}

/// Everything below `dir` (not `dir` itself), as root sees it; gone entries are skipped.
fn below(dir: &Path) -> Vec<PathBuf> {
    walkdir::WalkDir::new(dir).min_depth(1).into_iter().filter_map(Result::ok).map(|e| e.into_path()).collect()
}

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap_or_else(|e| panic!("{}: {e}", path.display())).permissions().mode() & 0o7777
}

/// `/run/racker/snapshots/<store>`: where the store's `--rm` containers keep their writes.
fn ephemeral_area(store: &TempStore) -> PathBuf {
    let root = std::fs::canonicalize(store.root()).expect("canonical root");
    let id = racker::digest::Digest::of(root.as_os_str().as_encoded_bytes());
    Path::new(RUNTIME_DIR).join("snapshots").join(id.short())
}

/// The unpacked layer that holds the setuid binary.
fn setuid_layer_dir(store: &TempStore) -> PathBuf {
    store
        .files("layers")
        .into_iter()
        .map(|l| store.root().join("layers").join(l))
        .find(|l| l.join("opt/suid-busybox").exists())
        .expect("the setuid layer is unpacked")
}

#[test]
fn no_other_user_reaches_the_store_or_the_runtime_directory() {
    require_root();
    let store = TempStore::created_by_racker();
    let _layout = hostile_image(&store, &[]);
    let kept = store.ok(&["run", "-d", "--name", "kept", "bb", "sleep", "1000"]).trim().to_owned();
    let ephemeral = store.ok(&["run", "-d", "--rm", "--name", "eph", "bb", "sleep", "1000"]).trim().to_owned();
    let root = store.root();
    let layer = setuid_layer_dir(&store);
    let kept_rootfs = root.join("snapshots").join(&kept).join("rootfs");
    let eph_rootfs = ephemeral_area(&store).join(&ephemeral).join("rootfs");
    // A detached command-mode container's output log (docker's json-file format).
    let console = root.join("containers").join(&kept).join(format!("{kept}-json.log"));
    for path in [&layer.join("opt/suid-busybox"), &kept_rootfs.join("opt/suid-busybox"), &eph_rootfs.join("bin/sh")] {
        assert!(path.exists(), "{} is there for root", path.display());
    }
    assert_eq!(mode(&layer.join("opt/suid-busybox")), 0o4755, "setuid bits are kept, as they must be");

    let attempts: Vec<String> = [
        format!("ls {}", root.display()),
        format!("ls {}/layers", root.display()),
        format!("cat {}/racker.db", root.display()),
        format!("cat {}", console.display()),
        format!("{}/opt/suid-busybox true", layer.display()),
        format!("head -c1 {}/dev/zero-ish", layer.display()),
        format!("ls {}", kept_rootfs.display()),
        format!("{}/opt/suid-busybox true", kept_rootfs.display()),
        format!("ls {RUNTIME_DIR}"),
        format!("ls {}", eph_rootfs.display()),
        format!("{}/opt/suid-busybox true", eph_rootfs.display()),
    ]
    .into();
    let mut paths = below(root);
    paths.extend(below(&ephemeral_area(&store)));
    paths.extend(std::fs::read_dir(RUNTIME_DIR).expect("/run/racker").flatten().map(|e| e.path()));
    for suid in [&layer, &kept_rootfs, &eph_rootfs].map(|d| d.join("opt/suid-busybox")) {
        assert!(paths.contains(&suid), "the walk missed {}", suid.display());
    }
    let reached = reached_by_nobody(&attempts, &paths);
    assert!(reached.is_empty(), "nobody reached:\n{}", reached.lines().take(40).collect::<Vec<_>>().join("\n"));

    // Modes as set, whatever the umask (racker ran with 000).
    for dir in ["", "blobs", "blobs/sha256", "layers", "ingest", "containers", "volumes", "snapshots"] {
        assert_eq!(mode(&root.join(dir)), 0o700, "{dir:?}");
    }
    for file in ["racker.db", "racker.db-wal", "racker.db-shm", "lock", "store-version"] {
        assert_eq!(mode(&root.join(file)), 0o600, "{file}");
    }
    assert_eq!(mode(&console), 0o600, "the container's log");
    assert_eq!(mode(Path::new(RUNTIME_DIR)), 0o700, "{RUNTIME_DIR}");

    store.ok(&["rm", "-f", "kept", "eph"]);
    common::wait_until(20, "the --rm container was not removed", || store.ok(&["ps", "-aq"]).is_empty());
    store.assert_clean();
}

#[test]
fn no_other_user_reaches_a_btrfs_store_or_its_subvolumes() {
    require_root();
    let fs = common::btrfs::BtrfsLoop::new();
    let _sweep = common::btrfs::MountSweep(vec![fs.path().to_owned()]);
    let store = TempStore::created_by_racker_in(fs.path());
    let _layout = hostile_image(&store, &[]);
    let kept = store.ok(&["run", "-d", "--name", "kept", "bb", "sleep", "1000"]).trim().to_owned();
    let root = store.root();
    let snapshot = root.join("btrfs/containers").join(&kept);
    let image = store.files("btrfs/images").into_iter().next().expect("the image's subvolume");
    let image = root.join("btrfs/images").join(image);
    for path in [&snapshot, &image] {
        assert!(path.join("opt/suid-busybox").exists(), "{} holds the setuid binary", path.display());
    }
    let attempts: Vec<String> = [
        format!("ls {}/btrfs", root.display()),
        format!("{}/opt/suid-busybox true", snapshot.display()),
        format!("{}/opt/suid-busybox true", image.display()),
        format!("head -c1 {}/dev/zero-ish", image.display()),
    ]
    .into();
    let reached = reached_by_nobody(&attempts, &below(root));
    assert!(reached.is_empty(), "nobody reached:\n{}", reached.lines().take(40).collect::<Vec<_>>().join("\n"));
    for dir in ["btrfs", "btrfs/images", "btrfs/containers"] {
        assert_eq!(mode(&root.join(dir)), 0o700, "{dir}");
    }
    assert_eq!(mode(&root.join("btrfs/lock")), 0o600);
    store.ok(&["rm", "-f", "kept"]);
    store.assert_clean();
    drop(store);
}

#[test]
fn a_store_an_older_racker_left_world_readable_is_tightened_by_the_next_command() {
    require_root();
    let store = TempStore::new();
    let _layout = hostile_image(&store, &[]);
    let kept = store.ok(&["run", "--name", "kept", "bb", "true"]);
    assert!(kept.is_empty(), "{kept}");
    // What racker before 0700/0600 left behind: every directory 0755, every file 0644
    // (blobs stay 0444), and a runtime directory made 0755.
    let root = store.root().to_owned();
    for entry in walkdir::WalkDir::new(&root).into_iter().filter_map(Result::ok) {
        let path = entry.path();
        let in_layer =
            path.starts_with(root.join("layers")) && path.components().count() > root.components().count() + 2;
        let in_snapshot = path.starts_with(root.join("snapshots")) && path != root.join("snapshots");
        // File objects carry the image's modes too (and are the layers' files).
        let in_objects = path.starts_with(root.join("objects")) && path != root.join("objects");
        if in_layer || in_snapshot || in_objects || entry.file_type().is_symlink() {
            continue; // the image's own modes
        }
        let loose = if entry.file_type().is_dir() { 0o755 } else { 0o644 };
        if !path.starts_with(root.join("blobs/sha256")) || entry.file_type().is_dir() {
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(loose)).expect("chmod");
        }
    }
    std::fs::set_permissions(RUNTIME_DIR, std::fs::Permissions::from_mode(0o755)).expect("chmod /run/racker");
    let probe = [format!("ls {}", root.display())];
    assert!(!reached_by_nobody(&probe, &[]).is_empty(), "the loose store is open to nobody before the fix");

    store.ok(&["images", "-q"]);
    let attempts: Vec<String> = [
        format!("ls {}", root.display()),
        format!("cat {}/racker.db", root.display()),
        format!("{}/opt/suid-busybox true", setuid_layer_dir(&store).display()),
    ]
    .into();
    let reached = reached_by_nobody(&attempts, &below(&root));
    assert!(reached.is_empty(), "after `racker images`, nobody reached:\n{reached}");
    for file in ["racker.db", "lock", "store-version"] {
        assert_eq!(mode(&root.join(file)), 0o600, "{file}");
    }
    // The runtime directory is tightened by the next command that uses it.
    store.ok(&["run", "--rm", "bb", "true"]);
    assert_eq!(mode(Path::new(RUNTIME_DIR)), 0o700, "{RUNTIME_DIR} after a run");
    store.ok(&["rm", "kept"]);
    store.assert_clean();
}

/// Every process's command line, as `ps` shows them to any user.
fn command_lines() -> Vec<(String, String)> {
    let mut all = Vec::new();
    for entry in std::fs::read_dir("/proc").expect("/proc").flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.bytes().all(|b| b.is_ascii_digit()) {
            if let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) {
                all.push((name, String::from_utf8_lossy(&cmdline).replace('\0', " ")));
            }
        }
    }
    all
}

#[test]
fn values_given_with_e_and_env_file_are_in_no_command_line_and_reach_the_container() {
    require_root();
    let store = TempStore::created_by_racker();
    let _layout = hostile_image(&store, &["FROM_IMAGE=image-value"]);
    let secret = format!("s3cret-{:016x}", rand::random::<u64>());
    let from_file = format!("filed-{:016x}", rand::random::<u64>());
    let env_file = tempfile::NamedTempFile::new().expect("env file");
    std::fs::write(env_file.path(), format!("# a comment\nFILE_SECRET={from_file}\n")).expect("writing the env file");
    let env_file = env_file.path().display().to_string();
    let e = format!("DB_PASSWORD={secret}");
    // A kept and a --rm detached container: each has a monitor, an nspawn and a payload.
    for extra in [&["--name", "svc"][..], &["--rm", "--name", "eph"][..]] {
        let mut args = vec!["run", "-d", "-e", &e, "--env-file", &env_file];
        args.extend(extra);
        args.extend(["bb", "sh", "-c", "echo started; exec sleep 1000"]);
        store.ok(&args);
    }
    let leaks: Vec<_> =
        command_lines().into_iter().filter(|(_, line)| line.contains(&secret) || line.contains(&from_file)).collect();
    assert!(leaks.is_empty(), "values in command lines: {leaks:#?}");

    for name in ["svc", "eph"] {
        let seen = store.ok(&["exec", name, "sh", "-c", "echo $DB_PASSWORD $FILE_SECRET $FROM_IMAGE $PATH"]);
        assert_eq!(
            seen.trim(),
            format!("{secret} {from_file} image-value /usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"),
            "{name} sees its environment"
        );
    }
    // racker's own environment stays out of the container.
    let own =
        store.cmd().env("RACKER_TEST_HOST_ONLY", "host").args(["run", "--rm", "bb", "env"]).output().expect("run");
    assert!(!String::from_utf8_lossy(&own.stdout).contains("RACKER_TEST_HOST_ONLY"), "racker's env leaked");

    // The value is stored (the database, logs), but not where nobody can read it.
    let reached =
        as_nobody(&format!("grep -rl {secret} {} /run/racker 2>/dev/null; echo done", store.root().display()), &[]);
    assert_eq!(reached.trim(), "done", "nobody found the value in: {reached}");
    store.ok(&["rm", "-f", "svc", "eph"]);
    common::wait_until(20, "the --rm container was not removed", || store.ok(&["ps", "-aq"]).is_empty());
    store.assert_clean();
}

/// nsenter, which `racker exec` runs as root on the host before it enters the container,
/// must not be steered by the image: not found on the image's `PATH`, not made to load
/// the image's `LD_PRELOAD` from the host, not started in a host directory that an image
/// symlink names. What the image sets still reaches the command.
#[test]
fn nothing_in_an_image_steers_the_host_side_of_exec() {
    require_root();
    let host = tempfile::tempdir().expect("tempdir");
    let (preloaded, ran) = (host.path().join("preloaded"), host.path().join("ran-host-nsenter"));
    // A library that leaves a mark when a host process loads it.
    let source = host.path().join("mark.c");
    std::fs::write(
        &source,
        format!(
            "#include <fcntl.h>\n#include <unistd.h>\n__attribute__((constructor)) static void mark(void) {{ close(open(\"{}\", O_CREAT | O_WRONLY, 0600)); }}\n",
            preloaded.display()
        ),
    )
    .expect("writing the library's source");
    let library = host.path().join("mark.so");
    let cc = Command::new("cc").args(["-shared", "-fPIC", "-o"]).arg(&library).arg(&source).status().expect("cc");
    assert!(cc.success(), "building the preload library (build-essential)");
    // An nsenter on the image's PATH that leaves a mark, then does what nsenter does.
    let bin = host.path().join("bin");
    std::fs::create_dir(&bin).expect("mkdir");
    std::fs::write(bin.join("nsenter"), format!("#!/bin/sh\ntouch {}\nexec /usr/bin/nsenter \"$@\"\n", ran.display()))
        .expect("writing the fake nsenter");
    std::fs::set_permissions(bin.join("nsenter"), std::fs::Permissions::from_mode(0o755)).expect("chmod");
    // A directory only the host has, which an image symlink names.
    let secret = host.path().join("host-only");
    std::fs::create_dir(&secret).expect("mkdir");
    std::fs::write(secret.join("host-secret"), "").expect("writing the host's file");
    let link_target = secret.display().to_string().into_bytes();
    let links = build_tar(&[crate::fixturegen::symlink(b"wd", &link_target)]).expect("tar");
    let links = Layer { blob: gzip(&links).expect("gzip"), media_type: MT_GZIP, tar: links };

    let store = TempStore::new();
    let layout = tempfile::tempdir().expect("tempdir");
    let path = format!("PATH={}:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", bin.display());
    let preload = format!("LD_PRELOAD={}", library.display());
    let config = json!({"Env": [path, preload], "Cmd": ["sh"]});
    let location = images::write_layout(layout.path(), &images::image(&[images::busybox_layer(), links], config));
    store.ok(&["pull", "-q", &location]);
    let id = store.ok(&["images", "-q"]);
    store.ok(&["tag", id.trim(), "steer"]);
    store.ok(&["run", "-d", "--name", "c", "steer", "sleep", "1000"]);

    let seen = store.ok(&["exec", "c", "sh", "-c", "echo $LD_PRELOAD"]);
    assert_eq!(seen.trim(), library.display().to_string(), "the image's LD_PRELOAD reaches the command");
    let listed = out_of(&store.run(&["exec", "-w", "/wd", "c", "ls"]));
    let steered: Vec<&str> = [
        (preloaded.exists(), "a host process loaded the image's LD_PRELOAD"),
        (ran.exists(), "racker ran the nsenter on the image's PATH"),
        (listed.contains("host-secret"), "exec -w started in the host directory an image symlink names"),
    ]
    .into_iter()
    .filter_map(|(happened, what)| happened.then_some(what))
    .collect();
    assert!(steered.is_empty(), "{steered:#?}");
    store.ok(&["rm", "-f", "c"]);
    store.assert_clean();
}

fn out_of(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}
