#!/usr/bin/env bash
# Run benchmark: container cycles of racker against bare systemd-nspawn and podman, on
# the same Debian bookworm + systemd root file system, side by side in one run.
#
#   cargo build --release && sudo benches/run.sh [-n RUNS]
#
#   command cycle  racker run --rm --boot=false IMG /bin/true
#                  systemd-nspawn --volatile=overlay -D ROOTFS /bin/true
#                  podman run --rm --network=host IMG /bin/true   (if podman and runc are
#                  installed: apt-get install podman runc)
#                  racker and podman again with --security-opt seccomp=unconfined (no system
#                  call filter: most of systemd-nspawn's start is compiling its filter)
#                  All share the host's network, as racker does by default.
#                  racker create + start -a + rm of the same command: the lifecycle verbs
#                  against run + rm, the same work (the container's writes kept on disk,
#                  which run --rm keeps on a tmpfs; target <= 1.1: one more process start)
#                  racker run --rm --network=private: the same command on a private network
#                  (a namespace, veth and bridge made and removed per run)
#   boot cycle     racker run --rm IMG systemctl is-active systemd-journald, booting the
#                  image's default target, and again with --boot-target minimal
#                  same work by hand, for each of the two targets: what racker does, step by
#                  step (boot_same_work in benches/lib.sh): a throw-away overlay snapshot on
#                  a tmpfs, racker's minimal-boot files and generator masks (copied out of a
#                  racker container) for the minimal target, systemd-nspawn with racker's
#                  arguments, waiting on READY=1 from NOTIFY_SOCKET, nsenter is-active, kill
#                  as users do it by hand: systemd-nspawn --boot --volatile=overlay (the
#                  default target), poll `systemctl is-system-running` through nsenter until
#                  it is up, ask is-active, kill the container
#
# Ratios printed: racker / the same work by hand, per target (target <= 1.1: racker adds
# little to what systemd-nspawn and systemd must do anyway), and the by-hand cycle as users
# do it / racker (target >= 2). The boot targets (>= 2x) are measured as users do it: they
# state what racker's minimal boot saves a user over the usual by-hand cycle, most of which
# is the lean target, as the same-work ratios show.
#
# One untimed warm-up round of every cycle first; then the rounds, interleaved round-robin,
# each run after an untimed 0.3 s pause so that no tool pays for the previous one's
# teardown. It prints each median with its spread (min, p25, p75, max; ms) and the ratios
# of medians. The root file system is built once with mmdebstrap from the configured Debian
# mirror and cached in $BENCH_CACHE (default /var/cache/racker-bench). The store, podman's
# storage and the extracted root live in a temporary directory under $BENCH_WORK (default
# /var/tmp), removed on exit. Environment: RACKER (default target/release/racker).
# Needs socat (the by-hand NOTIFY_SOCKET). Snapshot setup/teardown: benches/snapshot.sh.
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
source "$repo/benches/lib.sh"
require socat mmdebstrap systemd-nspawn nsenter
work=$(mktemp -d "${BENCH_WORK:-/var/tmp}/racker-run-bench.XXXXXX")
trap bench_cleanup EXIT
tarball=$(debian_tarball)

log "setting up: racker store, extracted root, podman storage"
"$racker" --root "$work/store" import -q "$tarball" bench:debian >/dev/null
mkdir "$work/rootfs" && tar -C "$work/rootfs" -xf "$tarball"
capture_minimal_boot "$work/store" bench:debian
podman=()
if command -v podman >/dev/null && command -v runc >/dev/null; then
  podman=(podman --root "$work/podman/root" --runroot "$work/podman/runroot" --tmpdir "$work/podman/tmp"
    --cgroup-manager cgroupfs --events-backend file --runtime runc)
  "${podman[@]}" import -q "$tarball" localhost/bench:debian >/dev/null
fi

racker_create_start() {
  local name="bench-$RANDOM$RANDOM"
  "$racker" --root "$work/store" create --boot=false --name "$name" bench:debian /bin/true >/dev/null &&
    "$racker" --root "$work/store" start -a "$name" &&
    "$racker" --root "$work/store" rm "$name" >/dev/null
}

racker_run_kept() {
  local name="bench-$RANDOM$RANDOM"
  "$racker" --root "$work/store" run --boot=false --name "$name" bench:debian /bin/true &&
    "$racker" --root "$work/store" rm "$name" >/dev/null
}

nspawn_true() {
  systemd-nspawn -q --register=no --keep-unit --link-journal=no --volatile=overlay -D "$work/rootfs" /bin/true
}
podman_true() { # extra podman run options
  "${podman[@]}" run --rm --network=host --ulimit nofile=4096:4096 --ulimit nproc=4096:4096 "$@" \
    localhost/bench:debian /bin/true
}

round() {
  time_run "command racker" "$racker" --root "$work/store" run --rm --boot=false bench:debian /bin/true
  time_run "command nspawn" nspawn_true
  time_run "command run+rm" racker_run_kept
  time_run "command create+start" racker_create_start
  time_run "command private-net" "$racker" --root "$work/store" run --rm --boot=false --network=private bench:debian /bin/true
  ((${#podman[@]} == 0)) || time_run "command podman" podman_true
  time_run "cmd racker-unconf" "$racker" --root "$work/store" run --rm --boot=false --security-opt seccomp=unconfined bench:debian /bin/true
  ((${#podman[@]} == 0)) || time_run "cmd podman-unconf" podman_true --security-opt seccomp=unconfined
  time_run "boot racker" "$racker" --root "$work/store" run --rm bench:debian systemctl is-active systemd-journald
  time_run "boot same-work" boot_same_work "$work/rootfs" default
  time_run "boot racker-min" "$racker" --root "$work/store" run --rm --boot-target minimal bench:debian systemctl is-active systemd-journald
  time_run "boot same-work-min" boot_same_work "$work/rootfs" minimal
  time_run "boot as-users-do" boot_as_users_do "$work/rootfs"
}

log "warming up: one untimed round of every cycle"
warming_up=1 round
log "$runs rounds"
for ((i = 1; i <= runs; i++)); do round; done

printf '\ncontainer cycles on Debian bookworm + systemd, %d runs each after a warm-up round, ms\n' "$runs"
((${#podman[@]})) || echo "podman: not installed (apt-get install podman runc), not measured"
print_medians "command racker" "command nspawn" "command run+rm" "command create+start" "command private-net" "command podman" "cmd racker-unconf" "cmd podman-unconf" \
  "boot racker" "boot same-work" "boot racker-min" "boot same-work-min" "boot as-users-do"
echo
echo "ratios of medians:"
if ok "command racker" && ok "command nspawn"; then
  echo "command: racker / bare nspawn = $(ratio "${med[command racker]}" "${med[command nspawn]}")x (target <= 1.1)"
fi
if ok "command run+rm" && ok "command create+start"; then
  echo "command: racker create + start -a + rm / run + rm (both keep the writes on disk) = $(ratio "${med[command create+start]}" "${med[command run+rm]}")x (target <= 1.1)"
fi
if ok "command racker" && ok "command run+rm"; then
  echo "command: run + rm / run --rm (writes on disk, not tmpfs) = $(ratio "${med[command run+rm]}" "${med[command racker]}")x"
fi
if ok "command racker" && ok "command private-net"; then
  echo "command: run --rm --network=private / host network = $(ratio "${med[command private-net]}" "${med[command racker]}")x"
fi
if ok "command racker" && ok "command podman"; then
  echo "command: podman / racker = $(ratio "${med[command podman]}" "${med[command racker]}")x (target >= 2.5)"
fi
if ok "cmd racker-unconf" && ok "cmd podman-unconf"; then
  echo "command, both seccomp=unconfined: podman / racker = $(ratio "${med[cmd podman-unconf]}" "${med[cmd racker-unconf]}")x"
fi
if ok "boot racker" && ok "boot same-work"; then
  echo "boot, same work, default target: racker / by hand = $(ratio "${med[boot racker]}" "${med[boot same-work]}")x (target <= 1.1)"
fi
if ok "boot racker-min" && ok "boot same-work-min"; then
  echo "boot, same work, minimal target: racker / by hand = $(ratio "${med[boot racker-min]}" "${med[boot same-work-min]}")x (target <= 1.1)"
fi
if ok "boot racker" && ok "boot as-users-do"; then
  echo "boot, as users do it: by hand (default target, polled) / racker default target = $(ratio "${med[boot as-users-do]}" "${med[boot racker]}")x"
fi
if ok "boot racker-min" && ok "boot as-users-do"; then
  echo "boot, as users do it: by hand (default target, polled) / racker minimal target = $(ratio "${med[boot as-users-do]}" "${med[boot racker-min]}")x (target >= 2: the boot targets use this ratio)"
fi
