# Shared by the cycle benches (run.sh, pkgprobe.sh): the cached Debian root, interleaved
# timing with medians, and the by-hand systemd-nspawn boot cycle they are measured against.
# Expects $work (a temporary directory) and $racker; sets up `results`.

log() { printf '== %s\n' "$*" >&2; }

# Removes what the bench started or mounted under $work (call from an EXIT trap).
bench_cleanup() {
  set +e
  pkill -9 -f "systemd-nspawn.*$work" 2>/dev/null
  { findmnt -rn -o TARGET | grep -F "$work" | sort -r || true; } | while read -r m; do umount -l "$m"; done
  "$racker" --root "$work/store" gc >/dev/null 2>&1
  { findmnt -rn -o TARGET | grep -F "$work" | sort -r || true; } | while read -r m; do umount -l "$m"; done
  rm -rf "$work"
}

# Prints the path of Debian bookworm + systemd as a tarball, built once with mmdebstrap from
# the configured Debian mirror and cached in $BENCH_CACHE (default /var/cache/racker-bench).
debian_tarball() {
  local cache=${BENCH_CACHE:-/var/cache/racker-bench}
  local tarball=$cache/bookworm-systemd.tar
  mkdir -p "$cache"
  [[ ! -d "$tarball" ]] || rm -rf "$tarball" # an older build wrote a directory by this name
  if [[ ! -f "$tarball" ]]; then
    log "building Debian bookworm + systemd with mmdebstrap (once)"
    # mmdebstrap takes the output format from the name: keep .tar at the end.
    rm -rf "$cache/partial.tar"
    mmdebstrap --quiet --format=tar --variant=minbase --include=systemd,systemd-sysv,dbus bookworm "$cache/partial.tar" >&2
    mv "$cache/partial.tar" "$tarball"
  fi
  echo "$tarball"
}

declare -A results
# time_run LABEL COMMAND...: appends the run's milliseconds (or FAIL) to results[LABEL].
time_run() {
  local label=$1; shift
  local start end
  # Untimed: let the previous cycle's teardown (pid namespace, mounts) finish first, so
  # that no tool pays for the one measured before it.
  sleep 0.3
  start=$(date +%s%N)
  if "$@" >/dev/null 2>"$work/err"; then
    end=$(date +%s%N)
    results[$label]+="$(((end - start) / 1000000)) "
  else
    results[$label]+="FAIL "
    [[ -f "$work/fail-$label" ]] || cp "$work/err" "$work/fail-$label"
  fi
}

# The by-hand boot cycle on the extracted root $1: boot with systemd-nspawn --volatile=overlay,
# poll `systemctl is-system-running` through nsenter until it is up, ask is-active, kill.
boot_by_hand() {
  systemd-nspawn -q --register=no --keep-unit --link-journal=no --volatile=overlay --boot \
    -D "$1" </dev/null >/dev/null 2>&1 &
  local nspawn=$! leader= state=
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

median() { # "t1 t2 ..." -> median, or FAIL if any run failed
  local v
  v=$(tr ' ' '\n' <<<"$1" | grep -v '^$' || true)
  if grep -q FAIL <<<"$v"; then echo FAIL; return; fi
  sort -g <<<"$v" | awk '{a[NR]=$1} END{ if (NR%2) printf "%d", a[(NR+1)/2]; else printf "%d", (a[NR/2]+a[NR/2+1])/2 }'
}
ratio() { awk -v a="$1" -v b="$2" 'BEGIN{printf "%.2f", a/b}'; }

declare -A med
# print_medians KEY...: one line per key (median, then every run), filling med[KEY].
print_medians() {
  local key
  for key in "$@"; do
    [[ -n "${results[$key]:-}" ]] || { printf '%-18s %8s\n' "$key" "n/a"; continue; }
    med[$key]=$(median "${results[$key]}")
    printf '%-18s %8s   %s\n' "$key" "${med[$key]}" "${results[$key]}"
    [[ ! -f "$work/fail-$key" ]] || printf '                   first failure: %s\n' "$(tail -n1 "$work/fail-$key")"
  done
}
ok() { [[ -n "${med[$1]:-}" && "${med[$1]}" != FAIL ]]; }
