#!/usr/bin/env bash
# Snapshot setup+teardown time against image size: prepare + one write + remove, for a
# ~10 MB and a ~1 GB image, with overlay (store on disk) and btrfs (store on a loop-mounted
# btrfs in a file on tmpfs, and in a file on disk), timed in release binaries.
#
#   sudo benches/snapshot.sh [-n RUNS]        (default 20)
#
# It builds `cargo build --release --bin racker --example snapshot_bench` (into
# $CARGO_TARGET_DIR, default target/) unless RACKER and SNAPSHOT_BENCH name release
# binaries already. Per store and image: both images pulled first, writeback synced; then
# the image's first container, reported apart as "cold" (on btrfs it materialises the
# image, a cost that grows with its size), one untimed warm-up of each mode, and RUNS
# timed runs of each mode (kept: `run` then `rm`; ephemeral: `run --rm`), interleaved.
# It prints the cold time, each warm median with its spread (min, p25, p75, max; ms), and
# the ratio big/small of the warm medians, which should be about 1.0: setup must not grow
# with image size. The layouts are generated once and cached in
# $BENCH_CACHE/snapshot (default /var/cache/racker-bench/snapshot). Needs root.
set -euo pipefail

runs=20
while (($#)); do
  case "$1" in
    -n) runs="$2"; shift 2 ;;
    -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) echo "unknown argument: $1 (try --help)" >&2; exit 2 ;;
  esac
done
[[ "$runs" =~ ^[1-9][0-9]*$ ]] || { echo "-n wants a positive number" >&2; exit 2; }
((EUID == 0)) || { echo "run as root (loop devices, mounts)" >&2; exit 1; }

repo=$(cd "$(dirname "$0")/.." && pwd)
source "$repo/benches/lib.sh"
require mkfs.btrfs losetup
cache=${BENCH_CACHE:-/var/cache/racker-bench}/snapshot
work=$(mktemp -d "${BENCH_WORK:-/var/tmp}/racker-bench-snapshot.XXXXXX")
shm=$(mktemp -d /dev/shm/racker-bench-snapshot.XXXXXX)
loops=()

cleanup() {
  set +e
  for m in "$work"/mnt-*; do mountpoint -q "$m" && umount "$m"; done
  for l in "${loops[@]}"; do losetup -d "$l" 2>/dev/null; done
  rm -rf "$work" "$shm"
}
trap cleanup EXIT

if [[ -n "${RACKER:-}" && -n "${SNAPSHOT_BENCH:-}" ]]; then
  racker=$RACKER bench=$SNAPSHOT_BENCH
else
  log "building release binaries: racker, snapshot_bench"
  (cd "$repo" && cargo build -q --release --bin racker --example snapshot_bench)
  target=${CARGO_TARGET_DIR:-$repo/target}
  racker=$target/release/racker bench=$target/release/examples/snapshot_bench
fi

for spec in small:10000000 big:1000000000; do
  name=${spec%%:*}
  if [[ ! -f "$cache/$name/index.json" ]]; then
    log "generating the $name layout in $cache/$name (once)"
    rm -rf "$cache/$name.tmp" && mkdir -p "$cache"
    "$bench" gen-layout "$cache/$name.tmp" "${spec#*:}"
    mv "$cache/$name.tmp" "$cache/$name"
  fi
done

btrfs_root() { # $1: directory for the image file; sets $store_root to a store on a fresh btrfs
  local img="$1/btrfs-$RANDOM.img" mnt="$work/mnt-$RANDOM" dev
  truncate -s 6G "$img" && mkfs.btrfs -q "$img" >/dev/null 2>&1
  dev=$(losetup --find --show "$img") && loops+=("$dev")
  mkdir "$mnt" && mount "$dev" "$mnt"
  store_root=$mnt/store
}

# bench LABEL DRIVER ROOT: a results line for the store at ROOT.
bench() {
  local label=$1 driver=$2 root=$3 name out
  local -A r
  for name in small big; do
    "$racker" --root "$root" pull -q "oci:$cache/$name" >/dev/null
  done
  # The pulls' writeback must not land in any timed run, the cold one least.
  sync && sleep 2
  for name in small big; do
    out=$("$bench" run "$root" "localhost/$name" "$driver" "$runs")
    sed '/^RESULT /d' <<<"$out" >&2
    r[$name]=$(sed -n 's/^RESULT //p' <<<"$out")
  done
  # RESULT cold, then median min p25 p75 max of kept, then of ephemeral.
  read -r sc sk skmin skp25 skp75 skmax se semin sep25 sep75 semax <<<"${r[small]}"
  read -r bc bk bkmin bkp25 bkp75 bkmax be bemin bep25 bep75 bemax <<<"${r[big]}"
  {
    printf '%s\n' "$label"
    printf '  first container (cold)  small %8.2f  big %8.2f  ratio %6.2f\n' "$sc" "$bc" "$(ratio "$bc" "$sc")"
    printf '  warm kept               small %8.2f [%.2f %.2f %.2f %.2f]  big %8.2f [%.2f %.2f %.2f %.2f]  ratio %.2f\n' \
      "$sk" "$skmin" "$skp25" "$skp75" "$skmax" "$bk" "$bkmin" "$bkp25" "$bkp75" "$bkmax" "$(ratio "$bk" "$sk")"
    printf '  warm ephemeral          small %8.2f [%.2f %.2f %.2f %.2f]  big %8.2f [%.2f %.2f %.2f %.2f]  ratio %.2f\n' \
      "$se" "$semin" "$sep25" "$sep75" "$semax" "$be" "$bemin" "$bep25" "$bep75" "$bemax" "$(ratio "$be" "$se")"
  } >>"$work/results"
}

btrfs_root "$shm"; btrfs_shm=$store_root
btrfs_root "$work"; btrfs_disk=$store_root

bench "overlay, disk" overlay "$work/overlay-store"
bench "btrfs, loop on tmpfs" btrfs "$btrfs_shm"
bench "btrfs, loop on disk" btrfs "$btrfs_disk"
echo
echo "prepare+write+remove, ms: the first container apart, then warm medians [min p25 p75 max] of $runs runs ($(uname -r)):"
cat "$work/results"
