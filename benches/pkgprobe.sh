#!/usr/bin/env bash
# pkgprobe bench: postroj's warm probe cycle against the same cycle done by hand with
# systemd-nspawn, side by side in one run, on the same Debian bookworm + systemd root; and
# the cold cycle, where the image is not in the store yet.
#
#   cargo build --release && sudo benches/pkgprobe.sh [-n RUNS] [-c COLD_RUNS]
#
#   warm         postroj pkgprobe --image=debian-bookworm --check-unit=systemd-journald
#                (the image in the store: boot racker's minimal target, ask the unit,
#                tear down)
#   same work    by hand, what the warm probe's container does (boot_same_work in
#                benches/lib.sh): a throw-away overlay snapshot on a tmpfs, racker's
#                minimal-boot target and generator masks (copied out of a racker
#                container), systemd-nspawn with racker's arguments, waiting on READY=1
#                from NOTIFY_SOCKET, nsenter is-active, kill the container
#   as users do  by hand, the usual way: systemd-nspawn --boot --volatile=overlay (the
#                image's default target), poll `systemctl is-system-running` through
#                nsenter until it is up, ask is-active, kill the container
#   cold         the warm cycle's probe on an empty store: it pulls debian-bookworm first
#                (here, with no registry reachable: built from the Debian mirror by mmdebstrap)
#
# One untimed warm-up run of each warm and by-hand cycle first; then they are interleaved,
# each run after an untimed 0.3 s pause. It prints each median with its spread (min, p25,
# p75, max; ms) and two ratios: postroj / the same work by hand (target <= 1.1: postroj
# adds little to what systemd-nspawn and systemd must do anyway) and as users do it /
# postroj. The pkgprobe targets -- warm median <= 350 ms and >= 2x faster than by hand --
# are measured against the as-users-do cycle: they state what a user saves over the usual
# by-hand cycle, most of which is the minimal target, as the same-work ratio shows.
# The root file system is cached as in benches/run.sh ($BENCH_CACHE); everything else lives
# under a temporary directory in $BENCH_WORK (default /var/tmp), removed on exit.
# Environment: RACKER, POSTROJ (default target/release/). Needs socat.
set -euo pipefail

runs=15
cold_runs=2
while (($#)); do
  case "$1" in
    -n) runs="$2"; shift 2 ;;
    -c) cold_runs="$2"; shift 2 ;;
    -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) echo "unknown argument: $1 (try --help)" >&2; exit 2 ;;
  esac
done
[[ "$runs" =~ ^[1-9][0-9]*$ && "$cold_runs" =~ ^[0-9]+$ ]] || { echo "-n wants a positive number, -c a number" >&2; exit 2; }
((EUID == 0)) || { echo "run as root" >&2; exit 1; }

repo=$(cd "$(dirname "$0")/.." && pwd)
racker=${RACKER:-$repo/target/release/racker}
postroj=${POSTROJ:-$repo/target/release/postroj}
[[ -x "$racker" && -x "$postroj" ]] || { echo "no racker/postroj in target/release: cargo build --release first" >&2; exit 1; }
source "$repo/benches/lib.sh"
require socat mmdebstrap systemd-nspawn nsenter
work=$(mktemp -d "${BENCH_WORK:-/var/tmp}/racker-pkgprobe-bench.XXXXXX")
trap bench_cleanup EXIT
tarball=$(debian_tarball)

log "setting up: the store's debian-bookworm and the extracted root, from one tarball"
image=localhost/postroj/debian-bookworm:latest
"$racker" --root "$work/store" import -q "$tarball" "$image" >/dev/null
mkdir "$work/rootfs" && tar -C "$work/rootfs" -xf "$tarball"
capture_minimal_boot "$work/store" "$image"
probe=("$postroj" --root "$work/store" pkgprobe -q --image=debian-bookworm --check-unit=systemd-journald)

round() {
  time_run "warm postroj" "${probe[@]}"
  time_run "same-work by hand" boot_same_work "$work/rootfs" minimal
  time_run "as users do" boot_as_users_do "$work/rootfs"
}
log "warming up: one untimed run of each cycle"
warming_up=1 round
log "$runs rounds"
for ((i = 1; i <= runs; i++)); do round; done

cold_cycle() { # a fresh store each time
  local store=$work/cold-$1 status=0
  "$postroj" --root "$store" pkgprobe -q --image=debian-bookworm --check-unit=systemd-journald || status=$?
  "$racker" --root "$store" gc >/dev/null 2>&1
  rm -rf "$store"
  return $status
}
for ((i = 1; i <= cold_runs; i++)); do
  log "cold cycle $i of $cold_runs"
  time_run "cold postroj" cold_cycle "$i"
done

printf '\npkgprobe cycles on Debian bookworm + systemd, %d warm runs after a warm-up, %d cold, ms\n' "$runs" "$cold_runs"
keys=("warm postroj" "same-work by hand" "as users do")
((cold_runs == 0)) || keys+=("cold postroj")
print_medians "${keys[@]}"
echo
echo "ratios of medians:"
if ok "warm postroj" && ok "same-work by hand"; then
  echo "warm, same work (minimal target both): postroj / by hand = $(ratio "${med[warm postroj]}" "${med[same-work by hand]}")x (target <= 1.1)"
fi
if ok "warm postroj" && ok "as users do"; then
  echo "warm, as users do it (default target, polled): by hand / postroj = $(ratio "${med[as users do]}" "${med[warm postroj]}")x (target >= 2: the pkgprobe targets use this ratio); postroj median ${med[warm postroj]} ms (target <= 350)"
fi
