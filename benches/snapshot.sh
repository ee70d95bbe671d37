#!/bin/bash
# Snapshot setup+teardown time against image size: prepare + one write + remove, N runs
# each, for a ~10 MB and a ~1 GB image, with overlay (store on disk) and btrfs (store on a
# loop-mounted btrfs in a file on tmpfs, and in a file on disk). Prints medians and the
# ratio big/small, which should be about 1.0: setup must not grow with image size.
# The layouts are generated once and cached in $CACHE. Needs root.
#
#   benches/snapshot.sh [RUNS]        (default 20)
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS=${1:-20}
CACHE=/var/cache/racker-bench/snapshot
WORK=$(mktemp -d /var/tmp/racker-bench-snapshot.XXXXXX)
SHM=$(mktemp -d /dev/shm/racker-bench-snapshot.XXXXXX)
LOOPS=()

cleanup() {
    set +e
    for m in "$WORK"/mnt-*; do mountpoint -q "$m" && umount "$m"; done
    for l in "${LOOPS[@]}"; do losetup -d "$l" 2>/dev/null; done
    rm -rf "$WORK" "$SHM"
}
trap cleanup EXIT

cargo build -q --bin racker --example snapshot_bench
RACKER=target/debug/racker
BENCH=target/debug/examples/snapshot_bench

for spec in small:10000000 big:1000000000; do
    name=${spec%%:*}
    if [ ! -f "$CACHE/$name/index.json" ]; then
        echo "generating the $name layout in $CACHE/$name (once)" >&2
        rm -rf "$CACHE/$name.tmp" && mkdir -p "$CACHE"
        "$BENCH" gen-layout "$CACHE/$name.tmp" "${spec#*:}"
        mv "$CACHE/$name.tmp" "$CACHE/$name"
    fi
done

btrfs_root() { # $1: directory for the image file; prints a store root on a fresh btrfs
    local img="$1/btrfs-$RANDOM.img" mnt="$WORK/mnt-$RANDOM" dev
    truncate -s 6G "$img" && mkfs.btrfs -q "$img" >/dev/null 2>&1
    dev=$(losetup --find --show "$img") && LOOPS+=("$dev")
    mkdir "$mnt" && mount "$dev" "$mnt"
    echo "$mnt/store"
}

bench() { # $1: label, $2: driver, $3: store root
    local label=$1 driver=$2 root=$3 small big
    for name in small big; do
        "$RACKER" --root "$root" pull -q "oci:$CACHE/$name" >/dev/null
    done
    # Materialise both images (btrfs) before any timed run, and let writeback settle, so
    # that neither the pulls' nor the 1 GB materialisation's I/O lands in the timed runs.
    for name in small big; do "$BENCH" run "$root" "localhost/$name" "$driver" 1 >/dev/null; done
    sync && sleep 2
    small=$("$BENCH" run "$root" localhost/small "$driver" "$RUNS") && echo "$small" >&2
    big=$("$BENCH" run "$root" localhost/big "$driver" "$RUNS") && echo "$big" >&2
    set -- $(echo "$small" | sed -n 's/^MEDIANS //p') $(echo "$big" | sed -n 's/^MEDIANS //p')
    printf '%-22s kept: small %6.2f ms  big %6.2f ms  ratio %.2f | ephemeral: small %6.2f ms  big %6.2f ms  ratio %.2f\n' \
        "$label" "$1" "$3" "$(echo "$3 / $1" | bc -l)" "$2" "$4" "$(echo "$4 / $2" | bc -l)" >>"$WORK/results"
}

# Loop devices first: btrfs_root runs in a subshell, so its LOOPS entry is recorded here.
BTRFS_SHM=$(btrfs_root "$SHM"); LOOPS+=($(losetup -j "$SHM"/btrfs-*.img -O NAME -n))
BTRFS_DISK=$(btrfs_root "$WORK"); LOOPS+=($(losetup -j "$WORK"/btrfs-*.img -O NAME -n))

bench "overlay, disk" overlay "$WORK/overlay-store"
bench "btrfs, loop on tmpfs" btrfs "$BTRFS_SHM"
bench "btrfs, loop on disk" btrfs "$BTRFS_DISK"
echo
echo "median of $RUNS prepare+write+remove runs ($(uname -r)):"
cat "$WORK/results"
