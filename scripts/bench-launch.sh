#!/bin/bash
# Launch latency and launcher memory: cimg-run against crun and runc
# (Debian's packages) on the same static hello, with a memory and pids
# limit and private pid/ipc/uts/mount/net namespaces for all three. Runs
# alternate between tools (bench/launchbench); the floor is a bare exec.
#
# Debian's crun 1.8.1 refuses hybrid cgroup hosts, so the whole benchmark
# runs in a private mount namespace in which the hugetlb-only cgroup2
# mount at /sys/fs/cgroup/unified is detached — for every tool alike.
#
# Output: a table on stdout; raw rows in bench/results/launch.csv.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "${CIMG_BENCH_NS:-}" != 1 ]; then
	exec unshare --mount --propagation private env CIMG_BENCH_NS=1 "$0" "$@"
fi
umount -l /sys/fs/cgroup/unified 2>/dev/null || true
RUNS=${RUNS:-30}
W=${WORK:-/tmp/cimg-bench-launch}
rm -rf "$W" && mkdir -p "$W/rootfs" bench/results
make -s build
go build -o "$W/launchbench" ./bench/launchbench
gcc -static -O2 -o "$W/rootfs/hello" bench/hello.c

cat >"$W/cimg.toml" <<TOML
name = "hello"
[app]
command = ["/hello"]
[limits]
memory = "64MiB"
pids = 64
TOML
bin/cimg-build -q -f "$W/cimg.toml" --rootfs "$W/rootfs" --entrypoint /hello -o "$W/hello.cimg"

# The OCI bundle: the image's own tree, and crun's default spec edited to
# match (read-only root, no terminal, same limits, network namespace).
mkdir -p "$W/bundle"
unsquashfs -q -d "$W/bundle/rootfs" "$W/hello.cimg" >/dev/null
(cd "$W/bundle" && crun spec)
python3 - "$W/bundle/config.json" <<'PY'
import json, sys
p = sys.argv[1]
c = json.load(open(p))
c["process"]["args"] = ["/hello"]
c["process"]["terminal"] = False
c["root"]["readonly"] = True
c["linux"]["resources"] = {"memory": {"limit": 64 << 20}, "pids": {"limit": 64}}
json.dump(c, open(p, "w"), indent=1)
PY
rm -f bench/results/launch.csv
"$W/launchbench" -n "$RUNS" -csv bench/results/launch.csv \
	"bare-exec=$W/rootfs/hello" \
	"cimg-run=bin/cimg-run $W/hello.cimg" \
	"cimg-run-private-mount=bin/cimg-run --private-mount $W/hello.cimg" \
	"crun=crun run -b $W/bundle bench-crun" \
	"runc=runc run -b $W/bundle bench-runc" >"$W/summary"

# Private memory of the launcher that waits while the app sleeps.
python3 - "$W/bundle/config.json" <<'PY'
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
m_cimg=$(rss "kill -KILL %1" bin/cimg-run "$W/hello.cimg" -- sleep)
m_crun=$(rss "crun delete -f mem-crun" crun run -b "$W/bundle" mem-crun)
m_runc=$(rss "runc delete -f mem-runc" runc run -b "$W/bundle" mem-runc)

echo "kernel $(uname -r), $(nproc) cores, $RUNS alternating runs per tool, static hello, 64 MiB + 64 pids limits"
echo
echo "| tool | median ms | p90 ms | vs crun (median) | launcher RssAnon while app sleeps |"
echo "|---|---|---|---|---|"
crun_med=$(awk '$1=="crun" {print $2}' "$W/summary")
while read -r name med p90; do
	mem=""
	case $name in cimg-run) mem="$m_cimg kB" ;; crun) mem="$m_crun kB" ;; runc) mem="$m_runc kB" ;; esac
	awk -v n="$name" -v m="$med" -v p="$p90" -v c="$crun_med" -v mem="$mem" 'BEGIN { printf "| %s | %.2f | %.2f | %.2f× | %s |\n", n, m, p, m/c, mem }'
done <"$W/summary"
