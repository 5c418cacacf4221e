#!/bin/bash
# Services: named instances against crun's and runc's detached containers,
# on the same content (the static hello of bench/hello.c, sleeping):
#   exec  cimg-run exec NAME -- /hello into a detached instance, against
#         crun exec / runc exec CTR /hello into a container of the same
#         tree started with crun run -d / runc run -d; cimg-run and crun
#         alternate (bench/launchbench), PAIRS (default 100) timed
#         rounds, then runc and crun: the report judges the goal on the
#         95 % bootstrap interval of cimg-run's time over crun's, pair
#         by pair.
#   ps    cimg-run ps and ps --json with 50 detached instances in the
#         state directory, RUNS timed runs each (alternating).
#   supervisors  /proc/PID/smaps_rollup of each of the 50 supervisors
#         (supervisor_pid of state.json): private (Private_Clean +
#         Private_Dirty), Pss, Rss, Anonymous; read after the ps runs.
#   resident  what stays beside the app of a detached instance or
#         container: the app's parent, and how many of the app's
#         ancestors are the runtime's own processes.
# Everything started here is stopped and removed at the end, also when a
# step fails (no instance, container, cgroup, mount, loop device or
# process is left), and checked.
#
# Like scripts/bench-launch.sh, it runs in a private mount namespace with
# the hugetlb-only cgroup2 mount at /sys/fs/cgroup/unified detached
# (Debian's crun 1.8.1 refuses hybrid cgroup hosts), for every tool alike.
#
# Output: bench/results/exec.csv and ps.csv (label,tool,run,ms,maxrss_kib),
# supervisors.csv (name,pid,private_kib,pss_kib,rss_kib,anonymous_kib),
# resident.csv (tool,app_pid,app_parent_pid,app_parent_comm,
# runtime_processes) and services-meta.csv (key,value).
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/bench-common.sh
if [ "${CIMG_BENCH_NS:-}" != 1 ]; then
	exec unshare --mount --propagation private env CIMG_BENCH_NS=1 "$0" "$@"
fi
umount -l /sys/fs/cgroup/unified 2>/dev/null || true
RUNS=${RUNS:-30}
PAIRS=${PAIRS:-100}
N=${INSTANCES:-50}
# Not WORK: bench-launch.sh empties that one, and bench-scale.sh reads it.
W=${SERVICES_WORK:-/tmp/cimg-bench-services}
r=bench/results
rm -rf "$W" && mkdir -p "$W/hello" $r
# Own state directories (not the host's /run/cimg): one for the exec
# instance, one holding exactly the N instances ps lists.
mkdir -m 0700 "$W/state-exec" "$W/state-ps" "$W/volumes"
CIMG=bin/cimg-run
CTR_CRUN=bench-svc-crun
CTR_RUNC=bench-svc-runc
load_before=$(cut -d' ' -f1-3 /proc/loadavg)

make -s build
go build -o "$W/launchbench" ./bench/launchbench
gcc -static -O2 -o "$W/hello/hello" bench/hello.c
printf 'name = "hello"\n[app]\ncommand = ["/hello"]\n[limits]\nmemory = "64MiB"\npids = 64\n' >"$W/hello.toml"
bin/cimg-build -q -f "$W/hello.toml" --rootfs "$W/hello" --entrypoint /hello -o "$W/hello.cimg"
# A freshly written binary's pages are dirty in the page cache until written
# back, and smaps counts them as Private_Dirty: write them back first.
sync

# The OCI bundle: the image's own tree, crun's default spec with the same
# limits, a read-only root, no terminal, and the sleeping command.
b=$W/hello-bundle
mkdir -p "$b"
unsquashfs -q -d "$b/rootfs" "$W/hello.cimg" >/dev/null
(cd "$b" && crun spec)
python3 - "$b/config.json" <<'PY'
import json, sys
p = sys.argv[1]
c = json.load(open(p))
c["process"]["args"] = ["/hello", "sleep"]
c["process"]["terminal"] = False
c["root"]["readonly"] = True
c["linux"]["resources"] = {"memory": {"limit": 64 << 20}, "pids": {"limit": 64}}
json.dump(c, open(p, "w"), indent=1)
PY

names=()
for i in $(seq -w 1 "$N"); do names+=("svc-$i"); done
sups=() # every supervisor pid seen, for the leftover check

# names_in STATE: the instances recorded in a state directory.
names_in() { ls "$1/instances" 2>/dev/null || true; }
jsonkey() { python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))[sys.argv[2]])' "$@"; }

cleanup() {
	clear_unified_shadow # crun's directories on the detached cgroup2 path
	local s left=0
	set +e
	for s in "$W/state-exec" "$W/state-ps"; do
		[ -d "$s" ] || continue
		mapfile -t running < <(names_in "$s")
		if [ ${#running[@]} -gt 0 ]; then
			$CIMG stop --state-dir "$s" -t 0 "${running[@]}" >/dev/null
			$CIMG rm --state-dir "$s" "${running[@]}"
		fi
		$CIMG gc --state-dir "$s" --store "$W/no-store" >/dev/null # never the host's store
	done
	crun delete -f $CTR_CRUN >/dev/null 2>&1
	runc delete -f $CTR_RUNC >/dev/null 2>&1
	# What would be left: processes, cgroups, mounts, loop devices.
	# crun 1.8.1 makes a plain directory for the container, with a
	# cgroup.procs file, in the tmpfs below the detached cgroup2 mount
	# point (no cgroup: a file of the tmpfs), and leaves it there.
	if ! mountpoint -q /sys/fs/cgroup/unified; then
		rm -f /sys/fs/cgroup/unified/$CTR_CRUN/cgroup.procs
		rmdir /sys/fs/cgroup/unified/$CTR_CRUN 2>/dev/null
	fi
	# An ended supervisor is a zombie until PID 1 (its parent once
	# detached) reaps it: only a live one counts.
	for p in "${sups[@]}"; do
		if [ "$(cat /proc/"$p"/comm 2>/dev/null)" = cimg-run ] &&
			[ "$(awk '{print $3}' /proc/"$p"/stat 2>/dev/null)" != Z ]; then
			echo "bench-services: supervisor $p is still there" >&2
			left=1
		fi
		for c in /sys/fs/cgroup/*/cimg/hello-"$p"; do
			[ -e "$c" ] && { echo "bench-services: cgroup $c is still there" >&2; left=1; }
		done
	done
	for c in /sys/fs/cgroup/*/$CTR_CRUN /sys/fs/cgroup/*/$CTR_RUNC; do
		[ -e "$c" ] && { echo "bench-services: cgroup $c is still there" >&2; left=1; }
	done
	finish_work bench-services "$W" $left "$W/hello.cimg"
}
trap 'cleanup || exit 1' EXIT

# resident TOOL APP_PID: the app's parent, and how many of the app's
# ancestors (below PID 1) are the runtime's own processes.
resident() {
	local tool=$1 pid=$2 p n=0
	local parent
	parent=$(awk '{print $4}' /proc/"$pid"/stat)
	p=$parent
	while [ "$p" -gt 1 ]; do
		case $(cat /proc/"$p"/comm) in crun | runc | cimg-run | conmon | containerd-shim*) n=$((n + 1)) ;; esac
		p=$(awk '{print $4}' /proc/"$p"/stat)
	done
	echo "$tool,$pid,$parent,$(cat /proc/"$parent"/comm),$n"
}

# 1. exec latency: one detached instance, one crun and one runc container.
echo "services: exec" >&2
$CIMG run --state-dir "$W/state-exec" --volume-dir "$W/volumes" -d --name exec "$W/hello.cimg" -- sleep >/dev/null
sups+=("$(jsonkey "$W/state-exec/instances/exec/state.json" supervisor_pid)")
crun delete -f $CTR_CRUN >/dev/null 2>&1 || true
runc delete -f $CTR_RUNC >/dev/null 2>&1 || true
crun run -d -b "$b" $CTR_CRUN </dev/null >/dev/null
runc run -d -b "$b" $CTR_RUNC </dev/null >/dev/null
sleep 0.5
crun state $CTR_CRUN >"$W/crun.json"
runc state $CTR_RUNC >"$W/runc.json"
{
	echo "tool,app_pid,app_parent_pid,app_parent_comm,runtime_processes"
	resident cimg-run "$(jsonkey "$W/state-exec/instances/exec/state.json" pid)"
	resident crun "$(jsonkey "$W/crun.json" pid)"
	resident runc "$(jsonkey "$W/runc.json" pid)"
} >$r/resident.csv
# Two cells, each one tool against crun, A B A B: with all three in one
# rotation, whichever ran right after runc exec paid for what runc left
# behind on this 2-core machine (cimg-run 0.816x crun when it followed
# runc, 0.744x when crun did; 100 pairs each), a cost of neither tool.
rm -f $r/exec.csv
from_disk $CIMG crun runc
"$W/launchbench" -n "$PAIRS" -label exec -csv $r/exec.csv -ref crun \
	"cimg-run=$CIMG exec --state-dir $W/state-exec exec -- /hello" \
	"crun=crun exec $CTR_CRUN /hello"
"$W/launchbench" -n "$PAIRS" -label exec-runc -csv $r/exec.csv -ref crun \
	"runc=runc exec $CTR_RUNC /hello" \
	"crun=crun exec $CTR_CRUN /hello"
$CIMG stop --state-dir "$W/state-exec" -t 0 exec >/dev/null
$CIMG rm --state-dir "$W/state-exec" exec
crun delete -f $CTR_CRUN
runc delete -f $CTR_RUNC

# 2. ps with N instances.
echo "services: ps with $N instances" >&2
for n in "${names[@]}"; do
	$CIMG run --state-dir "$W/state-ps" --volume-dir "$W/volumes" -d --name "$n" "$W/hello.cimg" -- sleep >/dev/null
	sups+=("$(jsonkey "$W/state-ps/instances/$n/state.json" supervisor_pid)")
done
sleep 1
got=$($CIMG ps --state-dir "$W/state-ps" | awk 'NR > 1 && $4 == "running"' | wc -l)
gotj=$($CIMG ps --state-dir "$W/state-ps" --json | python3 -c 'import json,sys; print(sum(i["state"] == "running" for i in json.load(sys.stdin)))')
if [ "$got" != "$N" ] || [ "$gotj" != "$N" ]; then
	echo "bench-services: ps lists $got running instances (--json: $gotj), not $N" >&2
	exit 1
fi
rm -f $r/ps.csv
"$W/launchbench" -n "$RUNS" -label "ps/$N" -csv $r/ps.csv \
	"ps=$CIMG ps --state-dir $W/state-ps" \
	"ps --json=$CIMG ps --state-dir $W/state-ps --json"

# 3. The supervisors' memory, after the ps runs.
echo "services: supervisors' memory" >&2
{
	echo "name,pid,private_kib,pss_kib,rss_kib,anonymous_kib"
	for n in "${names[@]}"; do
		pid=$(jsonkey "$W/state-ps/instances/$n/state.json" supervisor_pid)
		awk -v name="$n" -v pid="$pid" '
			/^Private_(Clean|Dirty):/ {priv += $2}
			/^Pss:/ {pss = $2} /^Rss:/ {rss = $2} /^Anonymous:/ {anon = $2}
			END {print name "," pid "," priv "," pss "," rss "," anon}' /proc/"$pid"/smaps_rollup
	done
} >$r/supervisors.csv

{
	echo "key,value"
	echo "date,$(date -u '+%Y-%m-%d %H:%M UTC')"
	echo "load before,$load_before"
	echo "load after,$(cut -d' ' -f1-3 /proc/loadavg)"
	echo "runs,$RUNS"
	echo "exec pairs,$PAIRS"
	echo "instances,$N"
} >$r/services-meta.csv
echo "services: stopping" >&2
# 4. The EXIT trap stops and removes everything and checks what is left.
