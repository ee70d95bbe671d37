#!/usr/bin/env bash
# File objects benchmark: racker with file objects (the default) against racker writing
# every file in place (RACKER_FILE_OBJECTS=off), side by side in one run, each in a store
# of its own, on the same Debian bookworm + systemd root file system as three images:
#
#   one      the root as one layer
#   two      the same root as two layers: /usr, then everything else on top
#   rebuilt  the root as one layer, rebuilt with 5 files changed (new content and mtime):
#            /etc/hostname, /etc/login.defs, /usr/bin/ls, libc.so.6 and
#            libsystemd-shared-*.so (the binaries with bytes appended: they still run)
#
# Measured, objects against in place:
#
#   bytes    each image pulled alone into a fresh store, and the three into one store:
#            du -sx --block-size=1 (allocated bytes, hard links once) of the whole store
#            (blobs, database, layers, objects) and of its unpacked part (layers/ and
#            objects/ together). Target: the three images' unpacked part within 1.1x of
#            one image's. The blobs (gzip layer tars) are kept as pulled and never shared.
#   cache    page cache of the three images read in containers: one container of each
#            image started (run -d --boot=false IMG sleep), then sync, drop_caches, an
#            untimed `exec true` in each (racker's and nspawn's own pages), and then
#            `find /usr -type f -exec cat {} +` in each; the growth of Cached: in
#            /proc/meminfo (MiB) over the reads. Always with stores on the disk ($BENCH_WORK):
#            a tmpfs store's pages are never dropped and count as cached from the start.
#            Host-wide: other work on the machine adds to it; where the bench runs in a
#            cgroup v1 memory controller, that cgroup's total_cache too (the reads alone).
#   pull     racker --root DIR pull oci:LAYOUT:one into a fresh store on the medium (ms)
#
#   cargo build --release && sudo benches/objects.sh [-n RUNS] [--disk] [--rebuild]
#
# The stores for bytes and pull live on a tmpfs mounted under the work directory, or with
# --disk in the work directory itself. The root is the cached mmdebstrap tarball of
# benches/lib.sh; the three images are built from it once as one OCI layout (gzip layers,
# tags one, two and rebuilt), cached in $BENCH_CACHE/objects (default
# /var/cache/racker-bench), rebuilt when the tarball is newer or with --rebuild. The cache
# and pull figures are RUNS rounds each (default 5), objects and in place interleaved;
# pull after an untimed warm-up round of both, `sync` before each run. It prints medians
# with their spread (min, p25, p75, max) and the ratios. Everything it makes outside the
# cache (containers, stores, the tmpfs) is removed on exit, also on failure or ^C.
# Environment: RACKER (default target/release/racker), BENCH_CACHE, BENCH_WORK (parent of
# the work directory, default /var/tmp).
set -euo pipefail

runs=5
medium=tmpfs
rebuild=0
while (($#)); do
  case "$1" in
    -n) runs="$2"; shift 2 ;;
    --disk) medium=disk; shift ;;
    --rebuild) rebuild=1; shift ;;
    -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) echo "unknown argument: $1 (try --help)" >&2; exit 2 ;;
  esac
done
[[ "$runs" =~ ^[1-9][0-9]*$ ]] || { echo "-n wants a positive number" >&2; exit 2; }
((EUID == 0)) || { echo "run as root (tmpfs, drop_caches, containers)" >&2; exit 1; }

repo=$(cd "$(dirname "$0")/.." && pwd)
racker=${RACKER:-$repo/target/release/racker}
[[ -x "$racker" ]] || { echo "no racker at $racker: cargo build --release first" >&2; exit 1; }
cache=${BENCH_CACHE:-/var/cache/racker-bench}
layout=$cache/objects
source "$repo/benches/lib.sh"
require mmdebstrap systemd-nspawn gzip sha256sum

work=$(mktemp -d "${BENCH_WORK:-/var/tmp}/racker-bench-objects.XXXXXX")
modes=(objects in-place)
images=(one two rebuilt)
unmount_below() { # everything mounted at or below $1, deepest first
  { findmnt -rn -o TARGET | grep -F "$1" | sort -r || true; } | while read -r m; do
    umount -l "$m" || true
  done
}
cleanup() {
  local status=$? store
  set +e
  for store in "$work"/*/*/; do
    [[ -f "$store/racker.db" ]] || continue
    for img in "${images[@]}"; do "$racker" --root "$store" rm -f "objects-$img" >/dev/null 2>&1; done
  done
  unmount_below "$work"   # the tmpfs; any snapshot a failed rm left mounted
  rm -rf "$work"
  exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# racker_as MODE ARGS...: racker with or without file objects.
racker_as() {
  local mode=$1; shift
  if [[ $mode == objects ]]; then "$racker" "$@"; else RACKER_FILE_OBJECTS=off "$racker" "$@"; fi
}

# --- the three images, once -------------------------------------------------------------

sha() { sha256sum "$1" | cut -d' ' -f1; }
size() { stat -c %s "$1"; }

# oci_image DIR TAG TAR...: adds to the layout DIR an image TAG of the layers TAR... (bottom
# first, gzip-compressed into blobs), its index entry appended to DIR/index.entries.
oci_image() {
  local dir=$1 tag=$2 tar hex diff_ids='' layers='' config config_hex manifest manifest_hex; shift 2
  for tar in "$@"; do
    gzip -n -6 <"$tar" >"$dir/layer.gz"
    hex=$(sha "$dir/layer.gz")
    diff_ids+="${diff_ids:+,}\"sha256:$(sha "$tar")\""
    layers+="${layers:+,}{\"mediaType\":\"application/vnd.oci.image.layer.v1.tar+gzip\",\"digest\":\"sha256:$hex\",\"size\":$(size "$dir/layer.gz")}"
    mv "$dir/layer.gz" "$dir/blobs/sha256/$hex"
  done
  config=$dir/config.json
  printf '{"architecture":"%s","os":"linux","config":{"Env":["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"],"Cmd":["/sbin/init"]},"rootfs":{"type":"layers","diff_ids":[%s]},"history":[{"created_by":"benches/objects.sh %s"}]}' \
    "$(dpkg --print-architecture)" "$diff_ids" "$tag" >"$config"
  config_hex=$(sha "$config")
  manifest=$dir/manifest.json
  printf '{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"sha256:%s","size":%d},"layers":[%s]}' \
    "$config_hex" "$(size "$config")" "$layers" >"$manifest"
  manifest_hex=$(sha "$manifest")
  mv "$config" "$dir/blobs/sha256/$config_hex"
  printf '%s{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"sha256:%s","size":%d,"annotations":{"org.opencontainers.image.ref.name":"%s"}}' \
    "$([[ ! -s $dir/index.entries ]] || echo ,)" "$manifest_hex" "$(size "$manifest")" "$tag" >>"$dir/index.entries"
  mv "$manifest" "$dir/blobs/sha256/$manifest_hex"
}

# GNU tar with what racker keeps: numeric owners, xattrs (ACLs among them), in name order;
# no atime and ctime records.
tar_of() { # TREE OUT MEMBER...
  local tree=$1 out=$2; shift 2
  tar -C "$tree" -cf "$out" --format=pax --pax-option=delete=atime,delete=ctime --sort=name \
    --numeric-owner --xattrs --xattrs-include='*' "$@"
}

build_layout() {
  local tarball=$1 tmp top=() changed=() f
  tmp=$(mktemp -d "$cache/objects.build.XXXXXX")
  log "building the one-layer, two-layer and rebuilt images in $layout (once)"
  # Unpacked and packed again by one tool, all three alike (GNU tar's --delete loses
  # entries of mmdebstrap's tarballs).
  mkdir "$tmp/tree"
  tar -C "$tmp/tree" -xpf "$tarball" --numeric-owner --xattrs --xattrs-include='*'
  tar_of "$tmp/tree" "$tmp/one.tar" .
  # two: ./usr, then the rest on top.
  mapfile -t top < <(cd "$tmp/tree" && find . -mindepth 1 -maxdepth 1 ! -name usr | sort)
  tar_of "$tmp/tree" "$tmp/usr.tar" ./usr
  # rest: the root directory's own entry (in both), then what is beside ./usr.
  tar_of "$tmp/tree" "$tmp/rest.tar" --no-recursion . --recursion "${top[@]}"
  # rebuilt: five files changed in place (new content, new mtime).
  changed=(./etc/hostname ./etc/login.defs ./usr/bin/ls)
  changed+=("$(cd "$tmp/tree" && find ./usr/lib -name libc.so.6 -type f | head -n1)")
  changed+=("$(cd "$tmp/tree" && find ./usr/lib -name 'libsystemd-shared-*.so' -type f | head -n1)")
  for f in "${changed[@]}"; do
    [[ -f "$tmp/tree/$f" ]] || { echo "no ${f:-libc.so.6 or libsystemd-shared} in $tarball" >&2; exit 1; }
  done
  echo racker-bench-rebuilt >"$tmp/tree/etc/hostname"
  for f in "${changed[@]:1}"; do printf '\n# racker-bench rebuilt\n' >>"$tmp/tree/$f"; done
  tar_of "$tmp/tree" "$tmp/rebuilt.tar" .
  rm -rf "$tmp/tree"
  mkdir -p "$tmp/layout/blobs/sha256"
  oci_image "$tmp/layout" one "$tmp/one.tar"
  oci_image "$tmp/layout" two "$tmp/usr.tar" "$tmp/rest.tar"
  oci_image "$tmp/layout" rebuilt "$tmp/rebuilt.tar"
  printf '{"imageLayoutVersion":"1.0.0"}' >"$tmp/layout/oci-layout"
  printf '{"schemaVersion":2,"manifests":[%s]}' "$(cat "$tmp/layout/index.entries")" >"$tmp/layout/index.json"
  rm "$tmp/layout/index.entries"
  rm -rf "$layout"
  mv "$tmp/layout" "$layout"
  rm -rf "$tmp"
}

tarball=$(debian_tarball)
rm -rf "$cache"/objects.build.*   # an interrupted earlier build
if ((rebuild)) || [[ ! -f "$layout/index.json" || "$tarball" -nt "$layout/index.json" ]]; then
  build_layout "$tarball"
fi

# --- the stores -------------------------------------------------------------------------

mkdir -p "$work/tmpfs" "$work/disk"
[[ $medium == disk ]] || mount -t tmpfs -o size=8g,mode=0700 racker-bench "$work/tmpfs"

# pull MODE STORE IMAGE: the image pulled from the layout, named bench:IMAGE.
pull() {
  racker_as "$1" --root "$2" pull -q "oci:$layout:$3" >/dev/null &&
    "$racker" --root "$2" tag "$(oci_name "$3")" "bench:$3"
}
# What racker names an image pulled from the layout (the same for each tag: the layout's
# directory and the tag).
oci_probe=$(racker_as objects --root "$work/probe" pull -q "oci:$layout:one")
rm -rf "$work/probe"
oci_name() { sed "s/:one\$/:$1/" <<<"$oci_probe"; }

# bytes STORE: allocated bytes of the whole store, and of layers/ and objects/ together.
bytes() {
  du -sx --block-size=1 "$1" | cut -f1
  du -scx --block-size=1 "$1/layers" "$1"/objects 2>/dev/null | tail -n1 | cut -f1
}

declare -A store_bytes unpacked_bytes
log "bytes: each image alone in a fresh store, then the three in one store, per mode"
for mode in "${modes[@]}"; do
  for img in "${images[@]}"; do
    store=$work/$medium/$mode-$img
    pull "$mode" "$store" "$img"
    { read -r "store_bytes[$mode $img]"; read -r "unpacked_bytes[$mode $img]"; } < <(bytes "$store")
    rm -rf "$store"
  done
  store=$work/$medium/$mode-all
  for img in "${images[@]}"; do pull "$mode" "$store" "$img"; done
  { read -r "store_bytes[$mode all]"; read -r "unpacked_bytes[$mode all]"; } < <(bytes "$store")
  [[ $medium == disk ]] || rm -rf "$store"
done

# --- page cache -------------------------------------------------------------------------

for mode in "${modes[@]}"; do
  store=$work/disk/$mode-all
  [[ -d "$store" ]] && continue
  log "page cache: the three images into a store on the disk ($mode)"
  for img in "${images[@]}"; do pull "$mode" "$store" "$img"; done
done

cached_kib() { awk '$1 == "Cached:" { print $2 }' /proc/meminfo; }
# The bench's own memory cgroup where it has one of cgroup v1 (the containers' commands,
# started by it, are charged to it): its page cache without the rest of the machine's.
memcg=$(awk -F: '$2 == "memory" { print $3 }' /proc/self/cgroup)
memcg=${memcg:+/sys/fs/cgroup/memory$memcg/memory.stat}
[[ -n "$memcg" && "$memcg" != /sys/fs/cgroup/memory/memory.stat && -r "$memcg" ]] || memcg=
memcg_cache_kib() { awk '$1 == "total_cache" { print int($2 / 1024) }' "$memcg"; }

# page_cache MODE: one round: the growth of Cached (MiB) while a container of each image
# reads /usr whole.
page_cache() {
  local store=$work/disk/$1-all img before after cg_before=0 cg_after=0
  for img in "${images[@]}"; do
    "$racker" --root "$store" run -d --boot=false --name "objects-$img" "bench:$img" sleep 1000 >/dev/null
  done
  sync
  echo 3 >/proc/sys/vm/drop_caches
  for img in "${images[@]}"; do "$racker" --root "$store" exec "objects-$img" true; done
  before=$(cached_kib)
  [[ -z "$memcg" ]] || cg_before=$(memcg_cache_kib)
  for img in "${images[@]}"; do
    "$racker" --root "$store" exec "objects-$img" sh -c 'find /usr -type f -exec cat {} + >/dev/null'
  done
  after=$(cached_kib)
  [[ -z "$memcg" ]] || cg_after=$(memcg_cache_kib)
  for img in "${images[@]}"; do "$racker" --root "$store" rm -f "objects-$img" >/dev/null; done
  results[cache $1]+="$(((after - before) / 1024)) "
  [[ -z "$memcg" ]] || results[cgroup $1]+="$(((cg_after - cg_before) / 1024)) "
}

# --- pull time --------------------------------------------------------------------------

settle() { sync; }
timed_pull() { # mode
  local store=$work/$medium/time-$1
  time_run "pull $1" racker_as "$1" --root "$store" pull -q "oci:$layout:one"
  rm -rf "$store"
}

log "warming up: one untimed pull of each mode"
for mode in "${modes[@]}"; do warming_up=1 timed_pull "$mode"; done
for ((i = 1; i <= runs; i++)); do
  log "pull round $i/$runs"
  for mode in "${modes[@]}"; do timed_pull "$mode"; done
done
# After the pulls: drop_caches would leave them the layout's blobs to read from the disk.
for ((i = 1; i <= runs; i++)); do
  log "page cache round $i/$runs"
  for mode in "${modes[@]}"; do page_cache "$mode"; done
done

# --- report -----------------------------------------------------------------------------

mib() { awk -v b="$1" 'BEGIN { printf "%.1f", b / 1048576 }'; }
layer_mib=$(($(du -s --block-size=1 "$layout/blobs/sha256" | cut -f1) >> 20))
printf '\nfile objects: a Debian bookworm + systemd root (%s, tarball %s MiB) as three images (one layer, two layers, rebuilt with 5 files changed); stores on %s\n' \
  "$(dpkg --print-architecture)" "$(($(size "$tarball") >> 20))" "$medium"
printf '\nbytes (MiB, du -sx -B1)  %14s %14s %14s %14s\n' "store objects" "store in-place" "unpacked obj" "unpacked in-pl"
for img in "${images[@]}" all; do
  label=$img
  [[ $img != all ]] || label="the three in one store"
  printf '%-24s %14s %14s %14s %14s\n' "$label" \
    "$(mib "${store_bytes[objects $img]}")" "$(mib "${store_bytes[in-place $img]}")" \
    "$(mib "${unpacked_bytes[objects $img]}")" "$(mib "${unpacked_bytes[in-place $img]}")"
done
printf '%-24s %14sx %13sx %13sx %13sx\n' "three / one (<= 1.1)" \
  "$(ratio "${store_bytes[objects all]}" "${store_bytes[objects one]}")" \
  "$(ratio "${store_bytes[in-place all]}" "${store_bytes[in-place one]}")" \
  "$(ratio "${unpacked_bytes[objects all]}" "${unpacked_bytes[objects one]}")" \
  "$(ratio "${unpacked_bytes[in-place all]}" "${unpacked_bytes[in-place one]}")"
printf 'three: objects / in place  store %sx, unpacked %sx (layout blobs, all three images: %s MiB)\n' \
  "$(ratio "${store_bytes[objects all]}" "${store_bytes[in-place all]}")" \
  "$(ratio "${unpacked_bytes[objects all]}" "${unpacked_bytes[in-place all]}")" "$layer_mib"

printf '\npage cache growth while a container of each image reads /usr (MiB of Cached:, stores on disk), %d rounds\n' "$runs"
keys=("cache objects" "cache in-place")
[[ -z "$memcg" ]] || keys+=("cgroup objects" "cgroup in-place")
print_medians "${keys[@]}"
[[ -z "$memcg" ]] || echo "(cgroup: total_cache of the bench's cgroup v1 memory controller, the containers' reads alone)"
for what in cache cgroup; do
  if ok "$what objects" && ok "$what in-place"; then
    printf '%-6s ratio objects / in place: %sx\n' "$what" "$(ratio "${med[$what objects]}" "${med[$what in-place]}")"
  fi
done

printf '\npull of the one-layer image (oci: layout, gzip) into a fresh store on %s, %d runs after a warm-up, ms\n' "$medium" "$runs"
print_medians "pull objects" "pull in-place"
if ok "pull objects" && ok "pull in-place"; then
  printf 'ratio objects / in place: %sx\n' "$(ratio "${med[pull objects]}" "${med[pull in-place]}")"
fi
