#!/usr/bin/env bash
# Pull benchmark: racker pull against its peers, from a local registry, side by side, each
# tool on the same two media: a tmpfs and the disk.
#
#   cargo build --release && sudo benches/pull.sh [-n RUNS] [--rebuild]
#
# Once (cached in $BENCH_CACHE, default /var/cache/racker-bench): a Debian bookworm root
# with systemd (mmdebstrap --variant=minbase --include=systemd,systemd-sysv, from the
# host's configured Debian mirror) as an OCI layout with one gzip layer (tag `gzip`) and
# the same layer zstd-compressed (tag `zstd`). Then, every run: a registry on 127.0.0.1,
# both images pushed, and RUNS fresh pulls of each, per format, round-robin, every tool
# into a fresh directory on a tmpfs and one on the disk ($BENCH_WORK):
#
#   racker         racker --root DIR pull
#   racker-in-place  the same with RACKER_FILE_OBJECTS=off: every file written in place,
#                  no file objects (racker / racker-in-place is what the objects cost)
#   skopeo+umoci   skopeo copy docker://… oci:DIR/layout:img && umoci unpack   (gzip only:
#                  umoci 0.4.7 cannot read zstd layers)
#   podman         podman --root DIR … pull   (if podman and runc or crun are installed:
#                  apt-get install podman runc)
#   floor          gzip -dc LAYER | sha256sum   (zstd -dc for zstd): decompress + hash,
#                  the least any pull must do; it writes nothing, so it has no medium
#
# One untimed warm-up round of every tool on both media first (the registry's blobs and
# every tool's binaries in the page cache); `sync` before each timed run. It prints each
# median with its spread (min, p25, p75, max; ms) and, per medium, the ratios racker/peer
# of the medians: racker on tmpfs against peers on tmpfs, racker on disk against peers on
# disk. Everything it makes outside the cache (registry, temporary dirs, tmpfs) is removed
# on exit, also on failure or ^C. Environment: RACKER (default target/release/racker),
# BENCH_CACHE, BENCH_WORK (parent of the disk work dir, default /var/tmp).
set -euo pipefail

runs=5
rebuild=0
while (($#)); do
  case "$1" in
    -n) runs="$2"; shift 2 ;;
    --rebuild) rebuild=1; shift ;;
    -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) echo "unknown argument: $1 (try --help)" >&2; exit 2 ;;
  esac
done
[[ "$runs" =~ ^[1-9][0-9]*$ ]] || { echo "-n wants a positive number" >&2; exit 2; }
((EUID == 0)) || { echo "run as root (mmdebstrap, tmpfs, umoci and podman need it)" >&2; exit 1; }

repo=$(cd "$(dirname "$0")/.." && pwd)
racker=${RACKER:-$repo/target/release/racker}
cache=${BENCH_CACHE:-/var/cache/racker-bench}
layout=$cache/layout        # tag gzip
zlayout=$cache/layout-zstd  # tag zstd
source "$repo/benches/lib.sh"
require docker-registry skopeo umoci mmdebstrap gzip zstd sha256sum curl

work=$(mktemp -d "${BENCH_WORK:-/var/tmp}/racker-bench.XXXXXX")
registry_pid=
unmount_below() { # everything mounted at or below $1, deepest first
  { findmnt -rn -o TARGET | grep -F "$1" | sort -r || true; } | while read -r m; do
    umount -l "$m" || true
  done
}
cleanup() {
  local status=$?
  set +e
  if [[ -n "$registry_pid" ]]; then
    kill "$registry_pid" 2>/dev/null || true
    wait "$registry_pid" 2>/dev/null || true
  fi
  unmount_below "$work"   # the tmpfs; anything a peer left mounted
  rm -rf "$work"
  exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT TERM
auth_file=$work/auth.json   # never the host's credentials (REGISTRY_AUTH_FILE for racker,
                            # skopeo, podman; not for docker-registry, which would take
                            # REGISTRY_* as configuration)

# --- the image, once --------------------------------------------------------------------

debian_mirror() {
  # The host's configured Debian mirror (deb822 .sources or one-line sources.list).
  local uri
  uri=$(grep -hE '^URIs:' /etc/apt/sources.list.d/*.sources 2>/dev/null \
          | awk '{print $2}' | grep -E '/debian/?$' | head -n1 || true)
  if [[ -z "$uri" ]]; then
    uri=$(grep -hE '^deb[[:space:]]' /etc/apt/sources.list /etc/apt/sources.list.d/*.list 2>/dev/null \
            | grep -vE 'security|\[' | awk '{print $2}' | grep -E '/debian/?$' | head -n1 || true)
  fi
  echo "${uri:-http://deb.debian.org/debian}"
}

sha() { sha256sum "$1" | cut -d' ' -f1; }
size() { stat -c %s "$1"; }

build_image() {
  local mirror tmp rootfs diff_id layer_hex config config_hex manifest manifest_hex arch
  mirror=$(debian_mirror)
  tmp=$(mktemp -d "$cache/build.XXXXXX")
  rootfs=$tmp/rootfs.tar
  log "building the bookworm+systemd image with mmdebstrap from $mirror (once)"
  mmdebstrap --quiet --variant=minbase --include=systemd,systemd-sysv bookworm "$rootfs" "$mirror"
  arch=$(dpkg --print-architecture)
  mkdir -p "$tmp/layout/blobs/sha256"
  diff_id=$(sha "$rootfs")
  gzip -n -6 <"$rootfs" >"$tmp/layer.gz"
  layer_hex=$(sha "$tmp/layer.gz")
  mv "$tmp/layer.gz" "$tmp/layout/blobs/sha256/$layer_hex"
  config=$tmp/config.json
  printf '{"architecture":"%s","os":"linux","config":{"Env":["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"],"Cmd":["/sbin/init"]},"rootfs":{"type":"layers","diff_ids":["sha256:%s"]},"history":[{"created_by":"mmdebstrap --variant=minbase --include=systemd,systemd-sysv bookworm"}]}' \
    "$arch" "$diff_id" >"$config"
  config_hex=$(sha "$config")
  manifest=$tmp/manifest.json
  printf '{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"sha256:%s","size":%d},"layers":[{"mediaType":"application/vnd.oci.image.layer.v1.tar+gzip","digest":"sha256:%s","size":%d}]}' \
    "$config_hex" "$(size "$config")" "$layer_hex" "$(size "$tmp/layout/blobs/sha256/$layer_hex")" >"$manifest"
  manifest_hex=$(sha "$manifest")
  mv "$config" "$tmp/layout/blobs/sha256/$config_hex"
  mv "$manifest" "$tmp/layout/blobs/sha256/$manifest_hex"
  printf '{"imageLayoutVersion":"1.0.0"}' >"$tmp/layout/oci-layout"
  printf '{"schemaVersion":2,"manifests":[{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"sha256:%s","size":%d,"annotations":{"org.opencontainers.image.ref.name":"gzip"}}]}' \
    "$manifest_hex" "$(size "$tmp/layout/blobs/sha256/$manifest_hex")" >"$tmp/layout/index.json"
  rm -f "$rootfs"
  rm -rf "$layout" "$zlayout"
  mv "$tmp/layout" "$layout"
  rmdir "$tmp"
}

build_zstd() {
  # Into a fresh layout: copying into the gzip layout, skopeo 1.9 would reuse the gzip
  # blob it finds there (same diff_id) and silently write no zstd layer at all.
  log "recompressing the layer with zstd"
  rm -rf "$zlayout"
  skopeo copy -q --dest-compress --dest-compress-format zstd "oci:$layout:gzip" "oci:$zlayout.tmp:zstd"
  if ! skopeo inspect --raw "oci:$zlayout.tmp:zstd" | grep -q 'tar+zstd'; then
    echo "skopeo did not write a zstd layer" >&2
    exit 1
  fi
  mv "$zlayout.tmp" "$zlayout"
}

mkdir -p "$cache"
rm -rf "$cache"/build.* "$zlayout.tmp"   # an interrupted earlier build
if ((rebuild)) || [[ ! -f "$layout/index.json" ]]; then
  build_image
fi
[[ -f "$zlayout/index.json" ]] || build_zstd

# The layer blob of tag $2 in the layout $1.
layer_blob() {
  local manifest
  manifest=$(skopeo inspect --raw "oci:$1:$2")
  # digests in order: config, then the one layer
  echo "$1/blobs/sha256/$(grep -o '"digest":"sha256:[0-9a-f]*"' <<<"$manifest" | sed -n 2p | sed 's/.*sha256:\([0-9a-f]*\)"/\1/')"
}
gzip_layer=$(layer_blob "$layout" gzip)
zstd_layer=$(layer_blob "$zlayout" zstd)
[[ -f "$gzip_layer" && -f "$zstd_layer" ]] || { echo "cached layout is broken: rerun with --rebuild" >&2; exit 1; }

# --- the registry -----------------------------------------------------------------------

start_registry() {
  local port
  for _ in 1 2 3 4 5; do
    port=$((20000 + RANDOM % 40000))
    ss -ltn "sport = :$port" | grep -q LISTEN && continue
    mkdir -p "$work/registry/storage"
    cat >"$work/registry/config.yml" <<EOF
version: 0.1
log:
  level: warn
  accesslog:
    disabled: true
storage:
  filesystem:
    rootdirectory: $work/registry/storage
  delete:
    enabled: true
http:
  addr: 127.0.0.1:$port
EOF
    env -u REGISTRY_AUTH_FILE docker-registry serve "$work/registry/config.yml" >"$work/registry/log" 2>&1 &
    registry_pid=$!
    for _ in $(seq 100); do
      if curl -fsS -o /dev/null "http://127.0.0.1:$port/v2/" 2>/dev/null; then
        registry=127.0.0.1:$port
        return 0
      fi
      kill -0 "$registry_pid" 2>/dev/null || break
      sleep 0.1
    done
    kill "$registry_pid" 2>/dev/null || true
    wait "$registry_pid" 2>/dev/null || true
    registry_pid=
  done
  echo "docker-registry did not start:" >&2
  cat "$work/registry/log" >&2
  exit 1
}
start_registry
echo '{"auths":{}}' >"$auth_file"   # podman wants the file to exist
export REGISTRY_AUTH_FILE=$auth_file
log "registry on $registry; pushing bench:gzip and bench:zstd"
# --preserve-digests: push the layouts' blobs as they are (no recompression, and no
# substitution of other blobs skopeo's cache knows of).
skopeo copy -q --preserve-digests --dest-tls-verify=false "oci:$layout:gzip" "docker://$registry/bench:gzip"
skopeo copy -q --preserve-digests --dest-tls-verify=false "oci:$zlayout:zstd" "docker://$registry/bench:zstd"
skopeo inspect --raw --tls-verify=false "docker://$registry/bench:zstd" | grep -q 'tar+zstd' ||
  { echo "the registry's bench:zstd is not zstd" >&2; exit 1; }

# --- measurements -----------------------------------------------------------------------

mkdir -p "$work/tmpfs" "$work/disk"
mount -t tmpfs -o size=8g,mode=0700 racker-bench "$work/tmpfs"
media=(tmpfs disk)

podman_runtime=
if command -v podman >/dev/null; then
  podman_runtime=$(command -v runc || command -v crun || true)
fi

# Before each timed run: earlier runs' writes on their way to the disk, not in this one.
settle() { sync; }

racker_pull() { # root ref
  "$racker" --root "$1" pull -q "$2"
}
racker_in_place() { # root ref: every file written in place, no file objects
  RACKER_FILE_OBJECTS=off "$racker" --root "$1" pull -q "$2"
}
skopeo_umoci() { # dir ref
  skopeo copy -q --src-tls-verify=false "docker://$2" "oci:$1/layout:img" &&
    umoci unpack --image "$1/layout:img" "$1/bundle" >/dev/null
}
podman_pull() { # dir ref
  podman --root "$1/root" --runroot "$1/runroot" --tmpdir "$1/tmp" \
    --cgroup-manager cgroupfs --events-backend file --runtime "$podman_runtime" \
    --storage-driver overlay pull -q --tls-verify=false "$2"
}
floor() { # decompressor layer
  "$1" -dc "$2" | sha256sum
}

if [[ ! -x "$racker" ]]; then
  racker_missing="racker binary not found at $racker (cargo build --release, or set RACKER)"
elif ! "$racker" --root "$work/disk/probe" pull --help 2>&1 | grep -q -- --platform; then
  racker_missing="this racker has no registry pull yet ($racker pull --help shows no --platform)"
else
  racker_missing=
fi
rm -rf "$work/disk/probe"

# timed TOOL FORMAT MEDIUM COMMAND DIR REF: one pull into a fresh DIR on MEDIUM, removed after.
timed() {
  local tool=$1 f=$2 medium=$3 fn=$4 dir=$5 ref=$6
  mkdir -p "$dir"
  time_run "$f $tool $medium" "$fn" "$dir" "$ref"
  unmount_below "$dir"
  rm -rf "$dir"
}

formats=(gzip zstd)
tools=(racker racker-in-place skopeo+umoci podman)
round() {
  local f ref m
  for f in "${formats[@]}"; do
    ref=$registry/bench:$f
    for m in "${media[@]}"; do
      [[ -n "$racker_missing" ]] || timed racker "$f" "$m" racker_pull "$work/$m/racker" "$ref"
      [[ -n "$racker_missing" ]] || timed racker-in-place "$f" "$m" racker_in_place "$work/$m/racker-in-place" "$ref"
      [[ $f != gzip ]] || timed skopeo+umoci "$f" "$m" skopeo_umoci "$work/$m/skopeo" "$ref"
      [[ -z "$podman_runtime" ]] || timed podman "$f" "$m" podman_pull "$work/$m/podman" "$ref"
    done
    if [[ $f == gzip ]]; then
      time_run "$f floor" floor gzip "$gzip_layer"
    else
      time_run "$f floor" floor zstd "$zstd_layer"
    fi
  done
}
log "warming up: one untimed round of every tool on both media"
warming_up=1 round
for ((i = 1; i <= runs; i++)); do
  log "round $i/$runs"
  round
done

# --- report -----------------------------------------------------------------------------

printf '\npull of a Debian bookworm + systemd image (%s layer %s MiB gzip, %s MiB zstd), %d runs each after a warm-up round, ms\n' \
  "$(dpkg --print-architecture)" "$(($(size "$gzip_layer") >> 20))" "$(($(size "$zstd_layer") >> 20))" "$runs"
[[ -n "$podman_runtime" ]] || echo "podman: not installed (apt-get install podman runc), not measured"
[[ -z "$racker_missing" ]] || echo "racker: NOT MEASURED: $racker_missing"
for f in "${formats[@]}"; do
  keys=()
  for tool in "${tools[@]}"; do
    for m in "${media[@]}"; do
      [[ -z "${results[$f $tool $m]:-}" ]] || keys+=("$f $tool $m")
    done
  done
  keys+=("$f floor")
  echo
  print_medians "${keys[@]}"
  printf '%-30s %8s %8s\n' "ratios of medians" "${media[@]}"
  for peer in racker-in-place skopeo+umoci podman floor; do
    line=$(printf '%-30s' "$f racker / $peer")
    shown=
    for m in "${media[@]}"; do
      key="$f $peer $m"
      [[ $peer != floor ]] || key="$f floor"
      if ok "$f racker $m" && ok "$key"; then
        line+=$(printf ' %7sx' "$(ratio "${med[$f racker $m]}" "${med[$key]}")")
        shown=1
      else
        line+=$(printf ' %8s' -)
      fi
    done
    [[ -z "$shown" ]] || echo "$line"
  done
done
