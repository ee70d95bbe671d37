#!/usr/bin/env bash
# Run benchmark: container cycles of racker against bare systemd-nspawn and podman, on
# the same Debian bookworm + systemd root file system, side by side in one run.
#
#   cargo build --release && sudo benches/run.sh [-n RUNS]
#
#   command cycle  racker run --rm --boot=false IMG /bin/true
#                  systemd-nspawn --volatile=overlay -D ROOTFS /bin/true
#                  podman run --rm --network=none IMG /bin/true   (if podman and runc are installed)
#                  racker and podman again with --security-opt seccomp=unconfined (no system
#                  call filter: most of systemd-nspawn's start is compiling its filter)
#   boot cycle     racker run --rm IMG systemctl is-active systemd-journald
#                  racker run --rm --boot-target minimal IMG systemctl is-active systemd-journald
#                  by hand: systemd-nspawn --boot --volatile=overlay, poll
#                  `systemctl is-system-running` through nsenter until it is up, ask
#                  is-active, kill the container
#
# Runs are interleaved round-robin, each after an untimed 0.3 s pause so that no tool
# pays for the previous one's teardown; it prints medians and ratios. The root file system
# is built once with mmdebstrap from the configured Debian mirror and cached in
# $BENCH_CACHE (default /var/cache/racker-bench). The store, podman's storage and the
# extracted root live in a temporary directory under $BENCH_WORK (default /var/tmp),
# removed on exit. Snapshot setup/teardown by image size: benches/snapshot.sh.
set -euo pipefail

runs=10
while (($#)); do
  case "$1" in
    -n) runs="$2"; shift 2 ;;
    -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) echo "unknown argument: $1 (try --help)" >&2; exit 2 ;;
  esac
done
[[ "$runs" =~ ^[1-9][0-9]*$ ]] || { echo "-n wants a positive number" >&2; exit 2; }
((EUID == 0)) || { echo "run as root" >&2; exit 1; }

repo=$(cd "$(dirname "$0")/.." && pwd)
racker=${RACKER:-$repo/target/release/racker}
[[ -x "$racker" ]] || { echo "no racker at $racker: cargo build --release first" >&2; exit 1; }
work=$(mktemp -d "${BENCH_WORK:-/var/tmp}/racker-run-bench.XXXXXX")
source "$repo/benches/lib.sh"
trap bench_cleanup EXIT
tarball=$(debian_tarball)

log "setting up: racker store, extracted root, podman storage"
"$racker" --root "$work/store" import -q "$tarball" bench:debian >/dev/null
mkdir "$work/rootfs" && tar -C "$work/rootfs" -xf "$tarball"
podman=()
if command -v podman >/dev/null && command -v runc >/dev/null; then
  podman=(podman --root "$work/podman/root" --runroot "$work/podman/runroot" --tmpdir "$work/podman/tmp"
    --cgroup-manager cgroupfs --events-backend file --runtime runc)
  "${podman[@]}" import -q "$tarball" localhost/bench:debian >/dev/null
fi

nspawn_true() {
  systemd-nspawn -q --register=no --keep-unit --link-journal=no --volatile=overlay -D "$work/rootfs" /bin/true
}

log "warming up"
"$racker" --root "$work/store" run --rm bench:debian systemctl is-active systemd-journald >/dev/null
nspawn_true >/dev/null 2>&1 || true

log "$runs rounds"
for ((i = 1; i <= runs; i++)); do
  time_run "command racker" "$racker" --root "$work/store" run --rm --boot=false bench:debian /bin/true
  time_run "command nspawn" nspawn_true
  if ((${#podman[@]})); then
    time_run "command podman" "${podman[@]}" run --rm --network=none --ulimit nofile=4096:4096 --ulimit nproc=4096:4096 localhost/bench:debian /bin/true
  fi
  time_run "cmd racker-unconf" "$racker" --root "$work/store" run --rm --boot=false --security-opt seccomp=unconfined bench:debian /bin/true
  if ((${#podman[@]})); then
    time_run "cmd podman-unconf" "${podman[@]}" run --rm --network=none --security-opt seccomp=unconfined --ulimit nofile=4096:4096 --ulimit nproc=4096:4096 localhost/bench:debian /bin/true
  fi
  time_run "boot racker" "$racker" --root "$work/store" run --rm bench:debian systemctl is-active systemd-journald
  time_run "boot racker-min" "$racker" --root "$work/store" run --rm --boot-target minimal bench:debian systemctl is-active systemd-journald
  time_run "boot by-hand" boot_by_hand "$work/rootfs"
done

printf '\ncontainer cycles on Debian bookworm + systemd, %d runs each, medians in ms\n' "$runs"
print_medians "command racker" "command nspawn" "command podman" "cmd racker-unconf" "cmd podman-unconf" \
  "boot racker" "boot racker-min" "boot by-hand"
echo
if ok "command racker" && ok "command nspawn"; then
  echo "command: racker / bare nspawn = $(ratio "${med[command racker]}" "${med[command nspawn]}")x (target <= 1.1)"
fi
if ok "command racker" && ok "command podman"; then
  echo "command: podman / racker = $(ratio "${med[command podman]}" "${med[command racker]}")x (target >= 2.5)"
fi
if ok "cmd racker-unconf" && ok "cmd podman-unconf"; then
  echo "command, both seccomp=unconfined: podman / racker = $(ratio "${med[cmd podman-unconf]}" "${med[cmd racker-unconf]}")x"
fi
if ok "boot racker" && ok "boot by-hand"; then
  echo "boot:    by-hand / racker = $(ratio "${med[boot by-hand]}" "${med[boot racker]}")x (full boot both; target >= 2)"
fi
if ok "boot racker-min" && ok "boot by-hand"; then
  echo "boot:    by-hand / racker minimal boot = $(ratio "${med[boot by-hand]}" "${med[boot racker-min]}")x (target >= 2)"
fi
