#!/usr/bin/env bash
# pkgprobe bench: postroj's warm probe cycle against the same cycle done by hand with
# systemd-nspawn, and a package maintainer's probe of a .deb with a dependency against
# piuparts, side by side in one run, on the same Debian bookworm + systemd root; and the
# cold cycles.
#
#   cargo build --release && sudo benches/pkgprobe.sh [-n RUNS] [-c COLD_RUNS] [-p PIUPARTS_RUNS]
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
#   lighttpd warm      postroj pkgprobe --image=debian-bookworm --package=./x.deb
#                      --check-unit=lighttpd --check-network=http://localhost:80/, where
#                      x.deb (1 KB, built here by dpkg-deb: one page) depends on lighttpd,
#                      which the image lacks; warm: its caches (package lists, .debs, the
#                      dependency layer) filled by the untimed warm-up run
#   lighttpd no-cache  the same with --no-cache: dpkg -i, apt-get update, apt-get install -f
#                      in every probe (skipped, and said so, when postroj has no --no-cache)
#   piuparts           piuparts --basetgz on the same .deb: install and purge once
#                      (--no-upgrade-test --skip-minimize), from the same tarball the image
#                      is imported from (gzipped: piuparts unpacks with tar -z) and the same
#                      Debian mirror; its own chroot each run, as piuparts always works
#   lighttpd cold      the lighttpd probe with empty caches, in every round: the image in
#                      the store, its dependency layer removed (postroj cache rm --all) and
#                      an empty apt cache, so that it runs side by side with no-cache
#
# One untimed warm-up run of each warm, by-hand and piuparts cycle first; then they are
# interleaved, each run after an untimed 0.3 s pause (piuparts in the first PIUPARTS_RUNS
# rounds only, default 5: it takes ~15-20 s a run). It prints each median with its spread
# (min, p25, p75, max; ms) and the ratios: postroj / the same work by hand (target <= 1.1:
# postroj adds little to what systemd-nspawn and systemd must do anyway) and as users do it /
# postroj. The pkgprobe targets -- warm median <= 350 ms and >= 2x faster than by hand --
# are measured against the as-users-do cycle: they state what a user saves over the usual
# by-hand cycle, most of which is the minimal target, as the same-work ratio shows. For the
# lighttpd probe: warm / no-cache (the dependency cache's gain), piuparts / warm (target
# >= 10), warm absolute (target <= 1000 ms), cold / no-cache (target <= 1: the first probe
# no slower than without the cache).
# The root file system is cached as in benches/run.sh ($BENCH_CACHE), built by mmdebstrap
# from the Debian mirror of the host's apt sources; everything else lives under a temporary
# directory in $BENCH_WORK (default /var/tmp), removed on exit. The lighttpd rows need the
# mirror and port 80 of the host (the containers share its network).
# Environment: RACKER, POSTROJ (default target/release/). Needs socat, piuparts, dpkg-deb.
set -euo pipefail

runs=15
cold_runs=2
piuparts_runs=5
while (($#)); do
  case "$1" in
    -n) runs="$2"; shift 2 ;;
    -c) cold_runs="$2"; shift 2 ;;
    -p) piuparts_runs="$2"; shift 2 ;;
    -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) echo "unknown argument: $1 (try --help)" >&2; exit 2 ;;
  esac
done
[[ "$runs" =~ ^[1-9][0-9]*$ && "$cold_runs" =~ ^[0-9]+$ && "$piuparts_runs" =~ ^[0-9]+$ ]] ||
  { echo "-n wants a positive number, -c and -p a number" >&2; exit 2; }
((EUID == 0)) || { echo "run as root" >&2; exit 1; }

repo=$(cd "$(dirname "$0")/.." && pwd)
racker=${RACKER:-$repo/target/release/racker}
postroj=${POSTROJ:-$repo/target/release/postroj}
[[ -x "$racker" && -x "$postroj" ]] || { echo "no racker/postroj in target/release: cargo build --release first" >&2; exit 1; }
source "$repo/benches/lib.sh"
require socat mmdebstrap systemd-nspawn nsenter piuparts dpkg-deb
# The lighttpd probe's web server listens on the host's port 80.
if (exec 3<>/dev/tcp/127.0.0.1/80) 2>/dev/null; then
  echo "port 80 of this host is taken: the lighttpd probe checks its web server there; stop what listens" >&2
  exit 1
fi

# gzipped TARBALL: prints the path of TARBALL gzipped (for tools that unpack with tar -z),
# made once next to it and again when the tarball is newer.
gzipped() {
  local tgz=${1%.tar}.tgz
  if [[ ! -f "$tgz" || "$1" -nt "$tgz" ]]; then
    log "gzipping $1 (once)"
    gzip -1 -c "$1" >"$tgz.partial" && mv "$tgz.partial" "$tgz"
  fi
  echo "$tgz"
}

# build_lighttpd_deb DIR: builds a 1 KB .deb in DIR with dpkg-deb, one page and a
# dependency on lighttpd; prints its path.
build_lighttpd_deb() {
  local root=$1/racker-bench-web
  mkdir -p "$root/DEBIAN" "$root/var/www/racker-bench-web"
  printf '%s\n' "Package: racker-bench-web" "Version: 1.0" "Architecture: all" \
    "Maintainer: racker bench <bench@racker.invalid>" "Depends: lighttpd" \
    "Description: one page for lighttpd, for postroj's pkgprobe bench" >"$root/DEBIAN/control"
  echo '<h1>racker bench</h1>' >"$root/var/www/racker-bench-web/index.html"
  dpkg-deb --build --root-owner-group "$root" "$1/racker-bench-web_1.0_all.deb" >/dev/null
  echo "$1/racker-bench-web_1.0_all.deb"
}

work=$(mktemp -d "${BENCH_WORK:-/var/tmp}/racker-pkgprobe-bench.XXXXXX")
trap bench_cleanup EXIT
tarball=$(debian_tarball)
mirror=$(debian_mirror)

log "setting up: the store's debian-bookworm and the extracted root, from one tarball"
image=localhost/postroj/debian-bookworm:latest
"$racker" --root "$work/store" import -q "$tarball" "$image" >/dev/null
mkdir "$work/rootfs" && tar -C "$work/rootfs" -xf "$tarball"
capture_minimal_boot "$work/store" "$image"
probe=("$postroj" --root "$work/store" pkgprobe -q --image=debian-bookworm --check-unit=systemd-journald)

log "setting up: the lighttpd probe's package and piuparts' base tarball (the same root, gzipped)"
deb=$(build_lighttpd_deb "$work/deb")
basetgz=$(gzipped "$tarball")
mkdir "$work/piuparts"
if "$postroj" pkgprobe --help | grep -q -- '--no-cache'; then
  no_cache=1
else
  no_cache=
  log "this postroj has no --no-cache: the lighttpd no-cache row is skipped (and warm measures the path without a cache)"
fi

# lighttpd_probe STORE APT_CACHE [ARG...]: the lighttpd probe; its report on failure.
lighttpd_probe() {
  local store=$1 apt=$2
  shift 2
  POSTROJ_APT_CACHE=$apt "$postroj" --root "$store" pkgprobe -q --image=debian-bookworm "--package=$deb" \
    --check-unit=lighttpd --check-network=http://localhost:80/ "$@" >"$work/report" ||
    { cat "$work/report" >&2; return 1; }
}
piuparts_cycle() {
  piuparts --basetgz "$basetgz" --mirror "$mirror main" --distribution bookworm \
    --no-upgrade-test --skip-minimize --tmpdir "$work/piuparts" "$deb"
}

round() { # $1: the round's number
  time_run "warm postroj" "${probe[@]}"
  time_run "same-work by hand" boot_same_work "$work/rootfs" minimal
  time_run "as users do" boot_as_users_do "$work/rootfs"
  time_run "lighttpd warm" lighttpd_probe "$work/store" "$work/apt"
  [[ -z "$no_cache" ]] || time_run "lighttpd no-cache" lighttpd_probe "$work/store" "$work/apt" --no-cache
  if [[ -n "$no_cache" ]]; then
    # Empty caches, the image present: no dependency layer, no lists, no downloads.
    "$postroj" --root "$work/store" cache rm --all >/dev/null
    rm -rf "$work/apt-cold"
    time_run "lighttpd cold" lighttpd_probe "$work/store" "$work/apt-cold"
  fi
  (($1 > piuparts_runs)) || time_run "piuparts" piuparts_cycle
}
log "warming up: one untimed run of each cycle"
warming_up=1 round 0
log "$runs rounds"
for ((i = 1; i <= runs; i++)); do round "$i"; done

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

printf '\npkgprobe cycles on Debian bookworm + systemd, %d warm runs after a warm-up, %d cold, %d piuparts, ms\n' \
  "$runs" "$cold_runs" "$((piuparts_runs < runs ? piuparts_runs : runs))"
keys=("warm postroj" "same-work by hand" "as users do")
((cold_runs == 0)) || keys+=("cold postroj")
keys+=("lighttpd warm")
[[ -z "$no_cache" ]] || keys+=("lighttpd no-cache")
((piuparts_runs == 0)) || keys+=("piuparts")
[[ -z "$no_cache" ]] || keys+=("lighttpd cold")
print_medians "${keys[@]}"
[[ -n "$no_cache" ]] || echo "lighttpd no-cache: skipped, this postroj has no --no-cache"
echo
echo "ratios of medians:"
if ok "warm postroj" && ok "same-work by hand"; then
  echo "warm, same work (minimal target both): postroj / by hand = $(ratio "${med[warm postroj]}" "${med[same-work by hand]}")x (target <= 1.1)"
fi
if ok "warm postroj" && ok "as users do"; then
  echo "warm, as users do it (default target, polled): by hand / postroj = $(ratio "${med[as users do]}" "${med[warm postroj]}")x (target >= 2: the pkgprobe targets use this ratio); postroj median ${med[warm postroj]} ms (target <= 350)"
fi
if ok "lighttpd warm" && ok "lighttpd no-cache"; then
  echo "lighttpd, dependency cache: warm / no-cache = $(ratio "${med[lighttpd warm]}" "${med[lighttpd no-cache]}")x"
fi
if ok "lighttpd warm" && ok "piuparts"; then
  echo "lighttpd, against piuparts: piuparts / warm = $(ratio "${med[piuparts]}" "${med[lighttpd warm]}")x (target >= 10); warm median ${med[lighttpd warm]} ms (target <= 1000)"
fi
if ok "lighttpd cold" && ok "lighttpd no-cache"; then
  echo "lighttpd, first probe: cold / no-cache = $(ratio "${med[lighttpd cold]}" "${med[lighttpd no-cache]}")x (target <= 1: no slower than without the cache)"
fi
