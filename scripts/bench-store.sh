#!/bin/bash
# Store (issue 12, item 6): update downtime and install time, on the same
# content for every tool.
#
# update  A small app (bench/ready.c, static) packed twice, as versions
#         1.0.0 and 1.1.0 (they differ by /version and the manifest's
#         version). It appends "ready VERSION NS" to /data/stamps first
#         thing, and "stop VERSION NS" when SIGTERM arrives (then exits);
#         NS is CLOCK_REALTIME. /data is a volume (cimg-run: the store's,
#         crun: a bind mount of a host directory). Downtime is the new
#         version's ready stamp less the old version's stop stamp: the gap
#         in service, read from outside. Per run, alternating:
#           cimg-run  install 1.0.0 into the benchmark's own store, run -d
#                     it, then `cimg-run update ready 1.1.0.cimg` (store and
#                     verify, the new version's launch made on standby,
#                     the old app stopped, the new one let go, health
#                     gate: the default 2 s start period, during which
#                     the new version serves, so it is no downtime); then
#                     stop, rm, remove --purge and gc, untimed.
#           crun      the seed's way: 1.0.0 unpacked (unsquashfs of the
#                     same .cimg) into a bundle and run by `crun run` (in
#                     the background, as a service manager would); the
#                     update stops it (crun kill TERM, wait for crun run
#                     to return: the container is deleted), unpacks
#                     1.1.0.cimg into a new bundle (unsquashfs, the config
#                     copied) and runs it. Also with the unpack done before
#                     the stop, the strongest form of that approach.
#           launch    the yardstick: a plain warm launch of the same app
#                     (1.0.0, "once": it stamps ready and exits), cimg-run
#                     from its mount cache and crun run, by bench/launchbench
#                     (one warm-up and one timed run per round, back to
#                     back); and the same launches each after 0.3 s idle,
#                     as the updates begin (this VM's vCPUs are slow to
#                     wake: a launch after an idle moment takes longer).
#         Beside them, from the same stamps: start to ready of a detached
#         start (cimg-run run -d NAME from the store; crun run), and the
#         stop's tail (from the app's stop stamp until cimg-run stop or
#         crun kill + wait returns). Goal: downtime ≤ 1.2× the warm launch.
# install A ~50 MB image: 25 files of 2 MB of seeded pseudo-random bytes
#         (incompressible, so both formats are ~50 MB) and the ready binary,
#         as a .cimg (cimg-build --rootfs) and as an OCI image layout
#         (umoci init/new/unpack/repack, as bench-size.sh makes one).
#         Per run, alternating, each into a directory of its own that is
#         removed before the run (untimed): `cimg-run install --store DIR`
#         (copy, fsync, verify the whole image against its root hash,
#         admit), `skopeo copy oci:SRC:big oci:DST:big` (copy with digest
#         checks), and `skopeo copy oci:SRC:big containers-storage:...`
#         (overlay driver, own root: what podman pull does — the layer is
#         unpacked). Source files are in the page cache; everything on
#         the root filesystem's disk (WORK below), not a tmpfs. skopeo
#         also updates its blob-info cache (/var/lib/containers/cache).
#         Goal: cimg-run install ≤ 1.0× skopeo copy into an OCI layout.
#
# RUNS (default 30) timed update rounds, INSTALL_RUNS (default 10) timed
# install rounds, each after one warm-up round that is not recorded.
#
# Like the other crun benchmarks it runs in a private mount namespace with
# the hugetlb-only cgroup2 mount at /sys/fs/cgroup/unified detached
# (Debian's crun 1.8.1 refuses hybrid cgroup hosts), for every tool alike.
# Everything started here is stopped and removed at the end, also when a
# step fails, and checked: no instance, container, cgroup, mount, loop
# device or process is left, and WORK is removed.
#
# Output: bench/results/update.csv (metric,tool,run,ms),
# install.csv (tool,run,ms,maxrss_kib) and store-meta.csv (key,value).
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "${CIMG_BENCH_NS:-}" != 1 ]; then
	# skopeo is not in the Makefile's BENCH_DEPS (yet).
	scripts/deps.sh skopeo:skopeo umoci:umoci crun:crun unsquashfs:squashfs-tools gcc:gcc /usr/bin/time:time
	exec unshare --mount --propagation private env CIMG_BENCH_NS=1 "$0" "$@"
fi
umount -l /sys/fs/cgroup/unified 2>/dev/null || true
RUNS=${RUNS:-30}
INSTALL_RUNS=${INSTALL_RUNS:-10}
# On disk (the store fsyncs); not WORK, which other scripts use.
W=${STORE_WORK:-/var/tmp/cimg-bench-store}
r=bench/results
rm -rf "$W" && mkdir -p "$W" $r
S=$W/store     # the update benchmark's store
ST=$W/state    # its state directory (instances, mount cache)
SL=$W/state-launch
SI=$W/state-install
mkdir -m 0700 "$ST" "$SL" "$SI" "$W/launch-vol"
mkdir -p "$W/crun-data" "$W/crun-data-once"
CIMG=bin/cimg-run
CTR=bench-store-crun
CTR_ONCE=bench-store-once
APP=ready
load_before=$(cut -d' ' -f1-3 /proc/loadavg)
# skopeo keeps a blob-info cache in /var/lib/containers/cache (root's; no
# flag moves it): removed at the end if this run made it.
made_containers=0
[ -e /var/lib/containers ] || made_containers=1

sups=()   # every supervisor pid seen, for the leftover check
crpids=() # every crun run started in the background
jsonkey() { python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))[sys.argv[2]])' "$@"; }

cleanup() {
	local left=0 p c
	set +e
	if [ -e "$ST/instances/$APP" ]; then
		$CIMG stop --state-dir "$ST" -t 0 $APP >/dev/null 2>&1
		$CIMG rm --state-dir "$ST" $APP >/dev/null 2>&1
	fi
	[ -e "$S/apps/$APP.json" ] && $CIMG remove --purge --store "$S" --state-dir "$ST" $APP
	# gc always names a store of ours: the default one is the host's.
	for s in "$ST" "$SL" "$SI"; do
		[ -d "$s" ] && $CIMG gc --store "$S" --state-dir "$s" >/dev/null
	done
	crun kill $CTR KILL >/dev/null 2>&1
	for p in "${crpids[@]}"; do wait "$p" 2>/dev/null; done
	crun delete -f $CTR >/dev/null 2>&1
	crun delete -f $CTR_ONCE >/dev/null 2>&1
	mountpoint -q "$W/cs/overlay" && umount "$W/cs/overlay"
	[ $made_containers = 1 ] && rm -rf /var/lib/containers
	# crun 1.8.1 leaves a plain directory (with a cgroup.procs file) in the
	# tmpfs below the detached cgroup2 mount point.
	if ! mountpoint -q /sys/fs/cgroup/unified; then
		for c in $CTR $CTR_ONCE; do
			rm -f /sys/fs/cgroup/unified/$c/cgroup.procs
			rmdir /sys/fs/cgroup/unified/$c 2>/dev/null
		done
	fi
	# An ended supervisor is a zombie until PID 1 reaps it: only a live one counts.
	for p in "${sups[@]}"; do
		if [ "$(cat /proc/"$p"/comm 2>/dev/null)" = cimg-run ] &&
			[ "$(awk '{print $3}' /proc/"$p"/stat 2>/dev/null)" != Z ]; then
			echo "bench-store: supervisor $p is still there" >&2
			left=1
		fi
		for c in /sys/fs/cgroup/*/cimg/$APP-"$p"; do
			[ -e "$c" ] && { echo "bench-store: cgroup $c is still there" >&2; left=1; }
		done
	done
	for p in "${crpids[@]}"; do
		kill -0 "$p" 2>/dev/null && { echo "bench-store: crun run $p is still there" >&2; left=1; }
	done
	for c in /sys/fs/cgroup/*/$CTR /sys/fs/cgroup/*/$CTR_ONCE; do
		[ -e "$c" ] && { echo "bench-store: cgroup $c is still there" >&2; left=1; }
	done
	if grep -F " $W" /proc/self/mountinfo >&2; then
		echo "bench-store: mounts under $W are still there" >&2
		left=1
	fi
	if losetup -a | grep -F "$W" >&2; then
		echo "bench-store: loop devices of images under $W are still there" >&2
		left=1
	fi
	if [ $left = 0 ]; then
		rm -rf "$W"
	else
		echo "bench-store: left $W in place" >&2
	fi
	return $left
}
trap 'cleanup || exit 1' EXIT

make -s build
go build -o "$W/launchbench" ./bench/launchbench
gcc -static -O2 -o "$W/ready" bench/ready.c
for v in 1.0.0 1.1.0; do
	t=$W/tree-$v
	mkdir -p "$t/data"
	cp "$W/ready" "$t/ready"
	echo $v >"$t/version"
	cat >"$W/$v.toml" <<-EOF
		name = "$APP"
		version = "$v"
		[app]
		command = ["/ready"]
		args = ["serve"]
		[limits]
		memory = "64MiB"
		pids = 64
		[[mounts]]
		type = "volume"
		source = "data"
		target = "/data"
	EOF
	bin/cimg-build -q -f "$W/$v.toml" --rootfs "$t" --entrypoint /ready -o "$W/$APP-$v.cimg"
done

# OCI bundles of the same trees (unsquashfs of the same .cimg files), with
# crun's default spec set to the same limits, a read-only root, no
# terminal, and /data bound from a host directory.
bundle() { # DIR ROOTFS DATA ARGS...
	local b=$1 root=$2 data=$3
	shift 3
	mkdir -p "$b"
	(cd "$b" && crun spec)
	python3 - "$b/config.json" "$root" "$data" "$@" <<'PY'
import json, sys
p, root, data, args = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4:]
c = json.load(open(p))
c["process"]["args"] = args
c["process"]["terminal"] = False
c["root"] = {"path": root, "readonly": True}
c["linux"]["resources"] = {"memory": {"limit": 64 << 20}, "pids": {"limit": 64}}
c["mounts"].append({"destination": "/data", "type": "bind", "source": data, "options": ["rbind", "rw"]})
json.dump(c, open(p, "w"), indent=1)
PY
}
mkdir -p "$W/crun-v1"
unsquashfs -q -d "$W/crun-v1/rootfs" "$W/$APP-1.0.0.cimg" >/dev/null
bundle "$W/crun-v1" rootfs "$W/crun-data" /ready serve
bundle "$W/crun-once" "$W/crun-v1/rootfs" "$W/crun-data-once" /ready once
bundle "$W/crun-template" rootfs "$W/crun-data" /ready serve # the config the update copies

# The install benchmark's ~50 MB image, as a .cimg and an OCI layout.
big=$W/big-tree
mkdir -p "$big/data"
cp "$W/ready" "$big/ready"
python3 - "$big/data" <<'PY'
import random, sys
r = random.Random(12)
for i in range(25):
    open("%s/blob-%02d" % (sys.argv[1], i), "wb").write(r.randbytes(2000000))
PY
bin/cimg-build -q --name big --rootfs "$big" --entrypoint /ready -o "$W/big.cimg"
umoci init --layout "$W/oci" && umoci new --image "$W/oci:big"
umoci unpack --image "$W/oci:big" "$W/oci-bundle" >/dev/null
cp -a "$big/." "$W/oci-bundle/rootfs/"
umoci repack --image "$W/oci:big" "$W/oci-bundle"
rm -rf "$W/oci-bundle"
sync


now() { echo $((${EPOCHREALTIME/./} * 1000)); } # CLOCK_REALTIME, ns (µs resolution)
# idle SECONDS: wait without running anything (a read from a FIFO nobody
# writes): polling for a stamp while an app starts takes CPU from it on
# this 2-core machine (crun's start to ready went from 6 to 20 ms).
mkfifo "$W/idle"
exec {idle}<>"$W/idle"
idle() { read -r -t "$1" -u "$idle" || true; }
ms() { awk -v a="$1" -v b="$2" 'BEGIN {printf "%.3f", (b - a) / 1e6}'; }
# await DIR EVENT VERSION: waits (10 s at most) until a stamps file below
# DIR has "EVENT VERSION NS"; prints NS. Called after an idle pause, when
# the stamp is normally there already.
await() {
	local i line
	for ((i = 0; i < 2000; i++)); do
		if line=$(grep -rhm1 "^$2 $3 " "$1" 2>/dev/null); then
			echo "${line##* }"
			return
		fi
		sleep 0.005
	done
	echo "bench-store: no \"$2 $3\" in $1 after 10 s" >&2
	return 1
}
supervisor() { sups+=("$(jsonkey "$ST/instances/$APP/state.json" supervisor_pid)"); }

upd=$W/update.csv
echo "metric,tool,run,ms" >"$upd"
row() { [ "$run" = 0 ] || echo "$1,$2,$run,$3" >>"$upd"; }

# One round of cimg-run: install 1.0.0, run -d, update to 1.1.0, stop.
cimg_round() {
	local ts t0 ready1 stop1 ready2 stop2 t1 out
	$CIMG install --store "$S" --state-dir "$ST" "$W/$APP-1.0.0.cimg" >/dev/null
	ts=$(now)
	$CIMG run -d --store "$S" --state-dir "$ST" $APP >/dev/null
	supervisor
	idle 0.3
	ready1=$(await "$S/volumes" ready 1.0.0)
	t0=$(now)
	out=$($CIMG update --store "$S" --state-dir "$ST" $APP "$W/$APP-1.1.0.cimg")
	t1=$(now)
	supervisor
	grep -q "^$APP: updated to 1.1.0" <<<"$out" || { echo "bench-store: update said: $out" >&2; return 1; }
	stop1=$(await "$S/volumes" stop 1.0.0)
	ready2=$(await "$S/volumes" ready 1.1.0)
	row downtime "cimg-run update" "$(ms "$stop1" "$ready2")"
	row "start to ready" "cimg-run run -d NAME" "$(ms "$ts" "$ready1")"
	row "update command" "cimg-run update" "$(ms "$t0" "$t1")"
	$CIMG stop --state-dir "$ST" $APP >/dev/null
	t1=$(now)
	stop2=$(await "$S/volumes" stop 1.1.0)
	row "stop tail" "cimg-run stop" "$(ms "$stop2" "$t1")"
	$CIMG rm --state-dir "$ST" $APP
	$CIMG remove --purge --store "$S" --state-dir "$ST" $APP
	$CIMG gc --store "$S" --state-dir "$ST" >/dev/null
}

# One round of crun: run 1.0.0, update to 1.1.0 the seed's way (MODE
# "after": unpack after the stop; "before": unpack first), stop.
crun_round() {
	local mode=$1 t0 ready1 stop1 ready2 stop2 t1 pid
	local d=$W/crun-data b=$W/crun-new
	rm -f "$d/stamps"
	rm -rf "$b"
	t0=$(now)
	crun run -b "$W/crun-v1" $CTR </dev/null >/dev/null 2>&1 &
	pid=$!
	crpids+=("$pid")
	idle 0.3
	ready1=$(await "$d" ready 1.0.0)
	# The update.
	if [ "$mode" = before ]; then
		mkdir -p "$b" && unsquashfs -q -d "$b/rootfs" "$W/$APP-1.1.0.cimg" >/dev/null && cp "$W/crun-template/config.json" "$b/"
	fi
	crun kill $CTR TERM
	wait "$pid" # crun run returns once the container is gone
	if [ "$mode" = after ]; then
		mkdir -p "$b" && unsquashfs -q -d "$b/rootfs" "$W/$APP-1.1.0.cimg" >/dev/null && cp "$W/crun-template/config.json" "$b/"
	fi
	crun run -b "$b" $CTR </dev/null >/dev/null 2>&1 &
	pid=$!
	crpids+=("$pid")
	idle 0.3
	stop1=$(await "$d" stop 1.0.0)
	ready2=$(await "$d" ready 1.1.0)
	crun kill $CTR TERM
	wait "$pid"
	t1=$(now)
	stop2=$(await "$d" stop 1.1.0)
	if [ "$mode" = before ]; then
		row downtime "crun (unpack + stop + run)" "$(ms "$stop1" "$ready2")"
	else
		row downtime "crun (stop + unpack + run)" "$(ms "$stop1" "$ready2")"
		row "start to ready" "crun run" "$(ms "$t0" "$ready1")"
		row "stop tail" "crun kill + wait" "$(ms "$stop2" "$t1")"
	fi
	rm -rf "$b"
}

echo "store: update, $RUNS runs" >&2
crun delete -f $CTR >/dev/null 2>&1 || true
crun delete -f $CTR_ONCE >/dev/null 2>&1 || true
for run in $(seq 0 "$RUNS"); do # run 0 warms up and is not recorded
	cimg_round
	crun_round after
	crun_round before
	rm -f "$W/launch.csv"
	"$W/launchbench" -n 1 -label launch/warm -csv "$W/launch.csv" \
		"cimg-run=$CIMG --state-dir $SL --volume-dir $W/launch-vol $W/$APP-1.0.0.cimg -- once" \
		"crun=crun run -b $W/crun-once $CTR_ONCE"
	[ "$run" = 0 ] || awk -F, -v run="$run" '{print $1 "," $2 "," run "," $4}' "$W/launch.csv" >>"$upd"
	# The same launches after the machine idled as long as before an
	# update (this VM's vCPUs are slow to wake: see the report).
	idle 0.3
	t0=$(now)
	$CIMG --state-dir "$SL" --volume-dir "$W/launch-vol" "$W/$APP-1.0.0.cimg" -- once >/dev/null
	row "launch/after idle" cimg-run "$(ms "$t0" "$(now)")"
	idle 0.3
	t0=$(now)
	crun run -b "$W/crun-once" $CTR_ONCE </dev/null >/dev/null 2>&1
	row "launch/after idle" crun "$(ms "$t0" "$(now)")"
done
n=$(grep -rc '^ready 1.0.0 ' "$W/launch-vol" | awk -F: '{s += $2} END {print s}')
if [ "$n" != $((3 * (RUNS + 1))) ]; then
	echo "bench-store: the launched app stamped ready $n times, not $((3 * (RUNS + 1)))" >&2
	exit 1
fi
mv "$upd" $r/update.csv

# install: ~50 MB, alternating, each into a fresh directory.
echo "store: install, $INSTALL_RUNS runs" >&2
ins=$W/install.csv
echo "tool,run,ms,maxrss_kib" >"$ins"
# timed TOOL CMD...: wall time (bash's clock around /usr/bin/time, the same
# fork and exec for every tool) and the command's peak RSS.
timed() {
	local tool=$1 t0 t1
	shift
	t0=$(now)
	/usr/bin/time -f %M -o "$W/rss" "$@" >/dev/null 2>"$W/err" || {
		cat "$W/err" >&2
		return 1
	}
	t1=$(now)
	[ "$run" = 0 ] || echo "$tool,$run,$(ms "$t0" "$t1"),$(tail -1 "$W/rss")" >>"$ins"
}
cs="containers-storage:[overlay@$W/cs+$W/cs-run]localhost/big:latest"
for run in $(seq 0 "$INSTALL_RUNS"); do
	rm -rf "$W/install-store"
	timed "cimg-run install" $CIMG install --store "$W/install-store" --state-dir "$SI" "$W/big.cimg"
	rm -rf "$W/oci-dst"
	timed "skopeo copy to an OCI layout" skopeo copy -q "oci:$W/oci:big" "oci:$W/oci-dst:big"
	mountpoint -q "$W/cs/overlay" && umount "$W/cs/overlay"
	rm -rf "$W/cs" "$W/cs-run"
	timed "skopeo copy to containers-storage" skopeo copy -q "oci:$W/oci:big" "$cs"
done
# What was installed is what was asked for.
$CIMG list --json --store "$W/install-store" --state-dir "$SI" | grep -q '"name": "big"'
skopeo inspect "oci:$W/oci-dst:big" >/dev/null
mountpoint -q "$W/cs/overlay" && umount "$W/cs/overlay"
rm -rf "$W/install-store" "$W/oci-dst" "$W/cs" "$W/cs-run"
mv "$ins" $r/install.csv

{
	echo "key,value"
	echo "date,$(date -u '+%Y-%m-%d %H:%M UTC')"
	echo "load before,$load_before"
	echo "load after,$(cut -d' ' -f1-3 /proc/loadavg)"
	echo "runs,$RUNS"
	echo "install runs,$INSTALL_RUNS"
	echo "app image bytes,$(stat -c %s "$W/$APP-1.0.0.cimg")"
	echo "install tree bytes,$(du -sb "$big" | cut -f1)"
	echo "install cimg bytes,$(stat -c %s "$W/big.cimg")"
	echo "install oci bytes,$(du -sb "$W/oci/blobs" | cut -f1)"
	echo "skopeo,$(skopeo --version | cut -d' ' -f3)"
	echo "crun,$(crun --version | head -1 | cut -d' ' -f3)"
	echo "filesystem,$(findmnt -no FSTYPE -T "$W")"
} >$r/store-meta.csv
echo "store: stopping" >&2
# The EXIT trap stops and removes everything and checks what is left.
