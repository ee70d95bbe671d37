# shellcheck shell=bash disable=SC2154 # $work and $racker come from the bench that sources this
# Shared by the benches: the cached Debian root, interleaved timing with warm-up, medians
# with their spread, and the two by-hand systemd-nspawn boot cycles racker is measured
# against (the same work as racker, and as users do it). Expects $work (a temporary
# directory) and, for the cycles, $racker; sets up `results`.

log() { printf '== %s\n' "$*" >&2; }

# require TOOL...: exits naming the package of the first tool missing.
require() {
  local tool
  declare -A package=([socat]=socat [mmdebstrap]=mmdebstrap [systemd-nspawn]=systemd-container
    [nsenter]=util-linux [docker-registry]=docker-registry [skopeo]=skopeo [umoci]=umoci
    [zstd]=zstd [mkfs.btrfs]=btrfs-progs [losetup]=mount [curl]=curl [piuparts]=piuparts [dpkg-deb]=dpkg)
  for tool in "$@"; do
    command -v "$tool" >/dev/null ||
      { echo "missing $tool: apt-get install ${package[$tool]:-$tool}" >&2; exit 1; }
  done
}

# Removes what the bench started or mounted under $work (call from an EXIT trap).
bench_cleanup() {
  set +e
  pkill -9 -f "systemd-nspawn.*$work" 2>/dev/null
  { findmnt -rn -o TARGET | grep -F "$work" | sort -r || true; } | while read -r m; do umount -l "$m"; done
  "$racker" --root "$work/store" gc >/dev/null 2>&1
  { findmnt -rn -o TARGET | grep -F "$work" | sort -r || true; } | while read -r m; do umount -l "$m"; done
  rm -rf "$work"
}

# Prints the Debian mirror of the host's apt sources (deb822 or one-line), the first that
# is not the security archive; deb.debian.org if there is none.
debian_mirror() {
  local uri
  uri=$(grep -hs '^[[:space:]]*URIs:' /etc/apt/sources.list.d/*.sources | awk '{print $2}' | grep -v -- -security | head -n1) || true
  [[ -n "$uri" ]] || uri=$(grep -hs '^[[:space:]]*deb[[:space:]]' /etc/apt/sources.list /etc/apt/sources.list.d/*.list |
    sed 's/\[[^]]*\]//' | awk '{print $2}' | grep -v -- -security | head -n1) || true
  echo "${uri:-http://deb.debian.org/debian}"
}

# Prints the path of Debian bookworm + systemd as a tarball, built once with mmdebstrap from
# the host's Debian mirror and cached in $BENCH_CACHE (default /var/cache/racker-bench).
debian_tarball() {
  local cache=${BENCH_CACHE:-/var/cache/racker-bench}
  local tarball=$cache/bookworm-systemd.tar
  mkdir -p "$cache"
  [[ ! -d "$tarball" ]] || rm -rf "$tarball" # an older build wrote a directory by this name
  if [[ ! -f "$tarball" ]]; then
    log "building Debian bookworm + systemd with mmdebstrap (once)"
    # mmdebstrap takes the output format from the name: keep .tar at the end.
    rm -rf "$cache/partial.tar"
    mmdebstrap --quiet --format=tar --variant=minbase --include=systemd,systemd-sysv,dbus \
      bookworm "$cache/partial.tar" "$(debian_mirror)" </dev/null >&2
    mv "$cache/partial.tar" "$tarball"
  fi
  echo "$tarball"
}

declare -A results
# While set, time_run runs its command untimed and records nothing: a warm-up round, so
# that every side (not only racker) has its binaries, libraries and image in the page cache.
warming_up=
# Untimed, before each run: let the previous cycle's teardown (pid namespace, mounts)
# finish first, so that no tool pays for the one measured before it. A bench may redefine it.
settle() { sleep 0.3; }
# time_run LABEL COMMAND...: appends the run's milliseconds (or FAIL) to results[LABEL].
time_run() {
  local label=$1; shift
  local start end
  settle
  start=$(date +%s%N)
  if "$@" >/dev/null 2>"$work/err"; then
    end=$(date +%s%N)
    [[ -n "$warming_up" ]] || results[$label]+="$(((end - start) / 1000000)) "
  else
    [[ -n "$warming_up" ]] || results[$label]+="FAIL "
    [[ -f "$work/fail-$label" ]] || cp "$work/err" "$work/fail-$label"
  fi
}

# --- the by-hand boot cycles ----------------------------------------------------------

# As users do it, on the extracted root $1: boot the image's default target with
# systemd-nspawn --volatile=overlay, poll `systemctl is-system-running` through nsenter
# until it is up, ask is-active, kill.
boot_as_users_do() {
  systemd-nspawn -q --register=no --keep-unit --link-journal=no --volatile=overlay --boot \
    -D "$1" </dev/null >/dev/null 2>&1 &
  local nspawn=$! leader='' state=''
  # nspawn's first child can be a short-lived helper: look the leader up on every poll.
  while :; do
    leader=$(pgrep -P "$nspawn" | head -n1) || true
    if [[ -z "$leader" ]]; then sleep 0.01; continue; fi
    state=$(nsenter -t "$leader" -a systemctl is-system-running 2>/dev/null) || true
    [[ "$state" == running || "$state" == degraded ]] && break
    sleep 0.05
  done
  nsenter -t "$leader" -a systemctl is-active systemd-journald
  kill -9 "$leader"
  wait "$nspawn" || true
}

# What racker passes systemd-nspawn to register the machine (runtime/host.rs): machined
# where systemd runs the host with a system bus, else none.
if [[ -d /run/systemd/system && "$(cat /proc/1/comm 2>/dev/null)" == systemd && -e /run/dbus/system_bus_socket ]]; then
  racker_registration=(--register=yes)
else
  racker_registration=(--register=no --keep-unit)
fi

# Fills $work/minimal-boot with the files racker writes into a container's writable layer
# for `--boot-target minimal` (runtime/rootfs.rs prepare_minimal_boot: its target unit and
# the generator masks, LEGACY_GENERATOR_MASKS among them), copied out of a container racker
# booted that way from image $2 of store $1: the by-hand cycle then writes the very same.
capture_minimal_boot() {
  mkdir -p "$work/minimal-boot"
  "$racker" --root "$1" run --rm --boot-target minimal "$2" \
    tar -C / -cf - etc/systemd/system/racker-minimal.target etc/systemd/system-generators \
    | tar -C "$work/minimal-boot" -xf -
  [[ -f "$work/minimal-boot/etc/systemd/system/racker-minimal.target" ]] ||
    { echo "could not copy racker's minimal-boot files out of a container" >&2; return 1; }
}

# The same work as `racker run --rm [--boot-target minimal] IMG systemctl is-active
# systemd-journald`, by hand on the extracted root $1, target $2 (default or minimal),
# step by step as crates/racker/src/runtime does it: a throw-away overlay snapshot (a
# tmpfs holding upper, work and mount point, racker's overlay options); for a minimal boot,
# racker's minimal-boot files written into it; systemd-nspawn with racker's arguments
# (nspawn.rs: registration, --uuid, --link-journal=no, --boot --notify-ready=yes
# --console=pipe, systemd.unit=racker-minimal.target); readiness from READY=1 on the
# NOTIFY_SOCKET (notify.rs), with the leader from X_NSPAWN_LEADER_PID, never polling;
# the question through nsenter; the leader killed; the snapshot unmounted and removed.
# Its helper programs (mount, cp, socat, nsenter, umount: a fork and exec each) are the
# by-hand cycle's own overhead, where racker makes those system calls itself.
boot_same_work() {
  local lower=$1 target=$2 dir id status=0 line leader='' ready='' socat nspawn notified
  dir=$(mktemp -d "$work/same.XXXXXX")
  id=$(printf '%08x%08x%08x%08x' "$SRANDOM" "$SRANDOM" "$SRANDOM" "$SRANDOM")
  mount -t tmpfs -o mode=0700 tmpfs "$dir"
  mkdir "$dir/upper" "$dir/work" "$dir/rootfs"
  mount -t overlay overlay \
    -o "lowerdir=$lower,upperdir=$dir/upper,workdir=$dir/work,index=off,redirect_dir=off,metacopy=off" "$dir/rootfs"
  [[ $target != minimal ]] || cp -a "$work/minimal-boot/." "$dir/rootfs/"
  # nspawn's messages: "STATUS=…\nX_NSPAWN_LEADER_PID=N" then "READY=1\n…": READY ends a line.
  exec {notified}< <(exec socat -u "UNIX-RECV:$work/$id.notify" -)
  socat=$!
  while [[ ! -S "$work/$id.notify" ]]; do sleep 0.001; done
  local args=(--quiet "${racker_registration[@]}" "--directory=$dir/rootfs" "--machine=racker-${id:0:12}"
    "--uuid=$id" --link-journal=no --boot --notify-ready=yes --console=pipe)
  [[ $target != minimal ]] || args+=(systemd.unit=racker-minimal.target)
  NOTIFY_SOCKET=$work/$id.notify systemd-nspawn "${args[@]}" </dev/null >"$dir.console" 2>&1 &
  nspawn=$!
  # Blocking reads; the 1 s timeout only notices an nspawn that died without READY=1
  # (a timed-out read hands back the partial line: keep it for the next one).
  local partial='' deadline=$((SECONDS + 120))
  while ((SECONDS < deadline)); do
    if IFS= read -r -t 1 -u "$notified" line; then
      line=$partial$line partial=
      [[ ! $line =~ X_NSPAWN_LEADER_PID=([0-9]+) ]] || leader=${BASH_REMATCH[1]}
      if [[ $line == *READY=1* ]]; then ready=1; break; fi
    else
      partial+=$line
      kill -0 "$nspawn" 2>/dev/null || break
    fi
  done
  if [[ -n "$ready" && -n "$leader" ]]; then
    nsenter --target="$leader" --all --root="/proc/$leader/root" systemctl is-active systemd-journald || status=$?
  else
    echo "no READY=1 from systemd-nspawn; its console:" >&2
    tail -n 5 "$dir.console" >&2
    status=1
  fi
  if [[ -n "$leader" ]]; then kill -9 "$leader" 2>/dev/null || true; else kill -9 "$nspawn" 2>/dev/null || true; fi
  wait "$nspawn" || true
  kill "$socat" 2>/dev/null || true
  exec {notified}<&-
  rm -f "$work/$id.notify" "$dir.console"
  umount "$dir/rootfs" && umount "$dir" && rmdir "$dir"
  return $status
}

# --- statistics -----------------------------------------------------------------------

# stats "v1 v2 ...": "median min p25 p75 max" of the values (ms), or FAIL if any run
# failed (quartiles by nearest rank).
stats() {
  local v
  v=$(tr ' ' '\n' <<<"$1" | grep -v '^$' || true)
  if grep -q FAIL <<<"$v"; then echo FAIL; return; fi
  sort -g <<<"$v" | awk '{a[NR]=$1} END {
    m = (NR % 2) ? a[(NR + 1) / 2] : (a[NR / 2] + a[NR / 2 + 1]) / 2
    q1 = a[int((NR + 3) / 4)]; q3 = a[int((3 * NR + 3) / 4)]
    printf "%d %d %d %d %d", m, a[1], q1, q3, a[NR] }'
}
ratio() { awk -v a="$1" -v b="$2" 'BEGIN{printf "%.2f", a/b}'; }

declare -A med
# print_medians KEY...: a header, then one line per key (median, min, p25, p75, max, then
# every run), filling med[KEY].
print_medians() {
  local key s w=8
  for key in "$@"; do ((${#key} <= w)) || w=${#key}; done
  printf "%-${w}s %8s %8s %8s %8s %8s   %s\n" "" median min p25 p75 max runs
  for key in "$@"; do
    [[ -n "${results[$key]:-}" ]] || { printf "%-${w}s %8s\n" "$key" "n/a"; continue; }
    s=$(stats "${results[$key]}")
    med[$key]=${s%% *}
    if [[ $s == FAIL ]]; then
      printf "%-${w}s %8s %8s %8s %8s %8s   %s\n" "$key" FAIL "" "" "" "" "${results[$key]}"
    else
      # shellcheck disable=SC2086 # five figures
      printf "%-${w}s %8s %8s %8s %8s %8s   %s\n" "$key" $s "${results[$key]}"
    fi
    [[ ! -f "$work/fail-$key" ]] || printf "%${w}s first failure: %s\n" "" "$(grep -v '^$' "$work/fail-$key" | tail -n1)"
  done
}
ok() { [[ -n "${med[$1]:-}" && "${med[$1]}" != FAIL ]]; }
