#!/bin/bash
# cimg-oci against crun and runc as OCI runtimes, on the same content (the
# static hello of bench/hello.c, one bundle with cimg-oci's spec):
#   podman  podman run --rm --network none --rootfs ROOTFS /hello, with
#           --runtime each (conmon, podman's own work and the runtime's
#           create, start and delete together);
#   cycle   the bare OCI cycle on the bundle: create, start, delete
#           --force, one shell line per round (bench/oci-cycle.sh).
# Each cell pairs one runtime with crun, A B A B (bench/launchbench, one
# warm-up round, PAIRS timed rounds, the order within a round shuffled):
# cimg-oci and crun, then runc and crun. The report judges the goals on
# the 95 % bootstrap interval of the pair-by-pair ratio: cimg-oci ≤ 0.8×
# crun on the bare cycle, and not slower than crun under podman (≤ 1.0×).
#
# Like the launch benchmark it runs in a private mount namespace with the
# hugetlb-only cgroup2 mount at /sys/fs/cgroup/unified detached, for every
# runtime alike (Debian's crun 1.8.1 refuses hybrid cgroup hosts); each
# runtime keeps its state below the work directory, podman its storage.
#
# Output: bench/results/oci.csv (label,tool,run,ms,maxrss_kib) and
# oci-meta.csv (key,value). Everything made here is removed at the end,
# also when a step fails, and checked.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/bench-common.sh
if [ "${CIMG_BENCH_NS:-}" != 1 ]; then
	scripts/deps.sh podman:podman crun:crun runc:runc
	exec unshare --mount --propagation private env CIMG_BENCH_NS=1 "$0" "$@"
fi
umount -l /sys/fs/cgroup/unified 2>/dev/null || true
PAIRS=${OCI_PAIRS:-${PAIRS:-100}}
W=${OCI_WORK:-/tmp/cimg-bench-oci}
r=bench/results
rm -rf "$W" && mkdir -p "$W/bundle/rootfs/proc" "$W/state" "$W/run" $r
# Runtime state where every deployment keeps it, on a tmpfs (/run): the
# runtimes' --root and podman's runroot. (In this private mount namespace
# the mounts go with the script.)
mount -t tmpfs -o size=64m bench-oci-state "$W/state"
mount -t tmpfs -o size=64m bench-oci-run "$W/run"
load_before=$(cut -d' ' -f1-3 /proc/loadavg)
P="podman --root $W/storage --runroot $W/run --tmpdir $W/tmp --cgroup-manager cgroupfs --events-backend none"

# cimg-oci puts a container without a cgroupsPath under cimg-oci/ID in each
# hierarchy and removes ID at delete; podman (cgroupfs) leaves
# libpod_parent/conmon. The trees the runs made go here.
cg_before=$(ls -d /sys/fs/cgroup/*/cimg-oci /sys/fs/cgroup/*/libpod_parent 2>/dev/null || true)

cleanup() {
	local left=0 rt d
	set +e
	for rt in cimg-oci crun runc; do
		for id in $(ls "$W/state/$rt" 2>/dev/null); do
			echo "bench-oci: $rt left container $id" >&2
			left=1
		done
	done
	$P rm -a -f >/dev/null 2>&1
	$P system reset -f >/dev/null 2>&1
	umount "$W/state" "$W/run" 2>/dev/null
	clear_unified_shadow
	for d in /sys/fs/cgroup/*/cimg-oci /sys/fs/cgroup/*/libpod_parent; do
		[ -d "$d" ] && ! grep -qxF "$d" <<<"$cg_before" || continue
		# Deepest first; a cgroup with a process in it stays, and is the error.
		find "$d" -depth -type d -exec rmdir {} + || { echo "bench-oci: cgroup $d is not empty" >&2; left=1; }
	done
	finish_work bench-oci "$W" $left
}
trap 'cleanup || exit 1' EXIT

make -s build
go build -o "$W/launchbench" ./bench/launchbench
gcc -static -O2 -o "$W/bundle/rootfs/hello" bench/hello.c
# One config for the three: cimg-oci's spec, as ociVersion 1.0.2 (crun
# 1.8 refuses 1.2's number; nothing in it is newer), no terminal.
cimg_oci=$(pwd)/bin/cimg-oci
(cd "$W/bundle" && "$cimg_oci" spec)
python3 - "$W/bundle/config.json" <<'PY'
import json, sys
p = sys.argv[1]
c = json.load(open(p))
c["ociVersion"] = "1.0.2"
c["process"]["terminal"] = False
c["process"]["args"] = ["/hello"]
json.dump(c, open(p, "w"), indent=1)
PY
podman_run() { # RUNTIME: the command line launchbench runs
	echo "$P --runtime $1 run --rm --network none --ulimit nofile=1024:1024 --ulimit nproc=4096:4096 --rootfs $W/bundle/rootfs /hello"
}
cycle() { # RUNTIME NAME
	echo "bash bench/oci-cycle.sh $1 $W/state/$2 $W/bundle"
}
from_disk "$cimg_oci" crun runc podman

csv=$r/oci.csv
rm -f $csv
echo "oci: podman run --rm" >&2
"$W/launchbench" -n "$PAIRS" -label podman -csv $csv -ref crun "cimg-oci=$(podman_run "$cimg_oci")" "crun=$(podman_run crun)"
"$W/launchbench" -n "$PAIRS" -label podman-runc -csv $csv -ref crun "runc=$(podman_run runc)" "crun=$(podman_run crun)"
echo "oci: create, start, delete" >&2
"$W/launchbench" -n "$PAIRS" -label cycle -csv $csv -ref crun "cimg-oci=$(cycle "$cimg_oci" cimg-oci)" "crun=$(cycle crun crun)"
"$W/launchbench" -n "$PAIRS" -label cycle-runc -csv $csv -ref crun "runc=$(cycle runc runc)" "crun=$(cycle crun crun)"

first() { "$@" 2>&1 | head -1 | tr ',' ';'; }
{
	echo "key,value"
	echo "date,$(date -u '+%Y-%m-%d %H:%M UTC')"
	echo "load before,$load_before"
	echo "load after,$(cut -d' ' -f1-3 /proc/loadavg)"
	echo "pairs,$PAIRS"
	echo "podman,$(first podman --version)"
	echo "crun,$(first crun --version)"
	echo "runc,$(first runc --version)"
} >$r/oci-meta.csv
