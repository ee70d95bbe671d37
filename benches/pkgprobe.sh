#!/usr/bin/env bash
# pkgprobe bench: postroj's warm probe cycle against the same cycle done by hand with
# systemd-nspawn, side by side in one run, on the same Debian bookworm + systemd root; and
# the cold cycle, where the image is not in the store yet.
#
#   cargo build --release && sudo benches/pkgprobe.sh [-n RUNS] [-c COLD_RUNS]
#
#   warm     postroj pkgprobe --image=debian-bookworm --check-unit=systemd-journald
#            (the image in the store: boot lean, start and ask the unit, tear down)
#   by hand  systemd-nspawn --boot --volatile=overlay, poll `systemctl is-system-running`
#            through nsenter until it is up, ask is-active, kill the container
#   cold     the warm cycle's probe on an empty store: it pulls debian-bookworm first
#            (here, with no registry reachable: built from the Debian mirror by mmdebstrap)
#
# Warm and by-hand runs are interleaved, each after an untimed 0.3 s pause; medians in ms
# and the ratio are printed. Targets: warm median <= 350 ms and >= 2x faster than by hand.
# The root file system is cached as in benches/run.sh ($BENCH_CACHE); everything else lives
# under a temporary directory in $BENCH_WORK (default /var/tmp), removed on exit.
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
work=$(mktemp -d "${BENCH_WORK:-/var/tmp}/racker-pkgprobe-bench.XXXXXX")
source "$repo/benches/lib.sh"
trap bench_cleanup EXIT
tarball=$(debian_tarball)

log "setting up: the store's debian-bookworm and the extracted root, from one tarball"
"$racker" --root "$work/store" import -q "$tarball" localhost/postroj/debian-bookworm:latest >/dev/null
mkdir "$work/rootfs" && tar -C "$work/rootfs" -xf "$tarball"
probe=("$postroj" --root "$work/store" pkgprobe -q --image=debian-bookworm --check-unit=systemd-journald)

log "warming up"
"${probe[@]}" >/dev/null

log "$runs rounds"
for ((i = 1; i <= runs; i++)); do
  time_run "warm postroj" "${probe[@]}"
  time_run "by-hand nspawn" boot_by_hand "$work/rootfs"
done

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

printf '\npkgprobe cycles on Debian bookworm + systemd, %d warm runs, %d cold, medians in ms\n' "$runs" "$cold_runs"
print_medians "warm postroj" "by-hand nspawn" "cold postroj"
echo
if ok "warm postroj" && ok "by-hand nspawn"; then
  echo "warm: by-hand / postroj = $(ratio "${med[by-hand nspawn]}" "${med[warm postroj]}")x (target >= 2); postroj median ${med[warm postroj]} ms (target <= 350)"
fi
