#!/bin/bash
# Launch latency and launcher memory: cimg-run against crun and runc
# (Debian's packages) on the same content, with a 64 MiB memory and 64
# pids limit and private pid/ipc/uts/mount/net namespaces for all three.
# Two apps: a static hello, and curl --version packed by cimg-build's
# closure; each warm (page cache full) and cold (caches dropped before
# every run). Runs alternate between tools (bench/launchbench); the floor
# is a bare exec of the same binary. cimg-run runs from its mount cache
# and with --private-mount (a fresh mount per launch).
#
# Debian's crun 1.8.1 refuses hybrid cgroup hosts, so the whole benchmark
# runs in a private mount namespace in which the hugetlb-only cgroup2
# mount at /sys/fs/cgroup/unified is detached — for every tool alike.
#
# Output: bench/results/launch.csv (app/cache,tool,run,ms,maxrss_kib),
# launch-load.csv (app/cache,load_before,load_after: /proc/loadavg around
# each cell) and memory.csv (tool,rss_anon_kib of the waiting launcher).
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/bench-common.sh
if [ "${CIMG_BENCH_NS:-}" != 1 ]; then
	exec unshare --mount --propagation private env CIMG_BENCH_NS=1 "$0" "$@"
fi
umount -l /sys/fs/cgroup/unified 2>/dev/null || true
RUNS=${RUNS:-30}
PAIRS=${PAIRS:-100}
W=${WORK:-/tmp/cimg-bench-launch}
rm -rf "$W" && mkdir -p "$W/hello" bench/results
# cimg-run's own state directory (mount cache), not the host's /run/cimg.
mkdir -m 0700 "$W/state"
CIMG_RUN="bin/cimg-run --state-dir $W/state"
make -s build
go build -o "$W/launchbench" ./bench/launchbench
gcc -static -O2 -o "$W/hello/hello" bench/hello.c

limits='[limits]
memory = "64MiB"
pids = 64'
printf 'name = "hello"\n[app]\ncommand = ["/hello"]\n%s\n' "$limits" >"$W/hello.toml"
bin/cimg-build -q -f "$W/hello.toml" --rootfs "$W/hello" --entrypoint /hello -o "$W/hello.cimg"
printf 'name = "curl"\n[app]\ncommand = ["/usr/bin/curl", "--version"]\n%s\n' "$limits" >"$W/curl.toml"
bin/cimg-build -q -f "$W/curl.toml" /usr/bin/curl -o "$W/curl.cimg"

# An OCI bundle per app: the image's own tree, and crun's default spec
# edited to match (read-only root, no terminal, same limits and command).
bundle() { # app args...
	local b=$W/$1-bundle
	shift
	mkdir -p "$b"
	unsquashfs -q -d "$b/rootfs" "$W/$(basename "$b" -bundle).cimg" >/dev/null
	(cd "$b" && crun spec)
	python3 - "$b/config.json" "$@" <<'PY'
import json, sys
p, args = sys.argv[1], sys.argv[2:]
c = json.load(open(p))
c["process"]["args"] = args
c["process"]["terminal"] = False
c["root"]["readonly"] = True
c["linux"]["resources"] = {"memory": {"limit": 64 << 20}, "pids": {"limit": 64}}
json.dump(c, open(p, "w"), indent=1)
PY
}
bundle hello /hello
bundle curl /usr/bin/curl --version

# BASELINE=/path/to/an/older/cimg-run adds it beside the current one (its
# own state directory), to show a change's cost on the same machine.
base=()
if [ -n "${BASELINE:-}" ]; then
	mkdir -m 0700 "$W/state-baseline"
fi

csv=bench/results/launch.csv
load=bench/results/launch-load.csv
rm -f "$csv" "$load"
crun delete -f bench-crun >/dev/null 2>&1 || true
runc delete -f bench-runc >/dev/null 2>&1 || true
from_disk bin/cimg-run crun runc
for app in hello curl; do
	for cache in warm cold; do
		flag=
		[ $cache = cold ] && flag=-cold
		bare=$W/hello/hello
		[ $app = curl ] && bare="/usr/bin/curl --version"
		echo "launch: $app, $cache" >&2
		[ -n "${BASELINE:-}" ] && base=("cimg-run baseline=$BASELINE --state-dir $W/state-baseline $W/$app.cimg")
		"$W/launchbench" -n "$PAIRS" $flag -label "$app/$cache" -csv "$csv" -load "$load" -ref crun \
			"bare-exec=$bare" \
			"cimg-run=$CIMG_RUN $W/$app.cimg" \
			"cimg-run --private-mount=$CIMG_RUN --private-mount $W/$app.cimg" \
			"${base[@]}" \
			"crun=crun run -b $W/$app-bundle bench-crun" \
			"runc=runc run -b $W/$app-bundle bench-runc"
	done
done

# Private memory of whatever stays resident while the app sleeps.
python3 - "$W/hello-bundle/config.json" <<'PY'
import json, sys
p = sys.argv[1]; c = json.load(open(p)); c["process"]["args"] = ["/hello", "sleep"]; json.dump(c, open(p, "w"))
PY
rss() { # stop-command, command... → RssAnon kB of the launcher once the app is up
	local stop=$1; shift
	"$@" >/dev/null 2>&1 </dev/null & local pid=$!
	sleep 1
	awk '/RssAnon/ {print $2}' /proc/$pid/status
	$stop >/dev/null 2>&1 || true
	wait $pid 2>/dev/null || true
}
crun delete -f mem-crun >/dev/null 2>&1 || true; runc delete -f mem-runc >/dev/null 2>&1 || true
{
	echo "tool,rss_anon_kib"
	echo "cimg-run,$(rss "kill -KILL %1" $CIMG_RUN "$W/hello.cimg" -- sleep)"
	[ -z "${BASELINE:-}" ] || echo "cimg-run baseline,$(rss "kill -KILL %1" "$BASELINE" --state-dir "$W/state-baseline" "$W/hello.cimg" -- sleep)"
	echo "crun,$(rss "crun delete -f mem-crun" crun run -b "$W/hello-bundle" mem-crun)"
	echo "runc,$(rss "runc delete -f mem-runc" runc run -b "$W/hello-bundle" mem-runc)"
} >bench/results/memory.csv

# Where a warm launch's time goes: cimg-run's own step marks (CIMG_PROFILE),
# microseconds since its main began, for the static hello from the mount
# cache. Output: bench/results/profile.csv (run,step,us).
echo "launch: profile" >&2
{
	echo "run,step,us"
	for i in $(seq 1 "$RUNS"); do
		CIMG_PROFILE=1 $CIMG_RUN "$W/hello.cimg" 2>&1 >/dev/null | sed -n 's/^cimg-run profile: //p' |
			tr ' ' '\n' | awk -F= -v run="$i" 'NF == 2 {print run "," $1 "," $2}'
	done
} >bench/results/profile.csv

# crun's directories on the detached cgroup2 path (bench-common.sh).
clear_unified_shadow
