#!/bin/bash
# Cold start where devices are slow (issue 15, item 4): cimg-run against
# crun with the page cache dropped before every run, everything read from
# a dedicated loop-backed ext4 whose read throughput is throttled to
# eMMC/SD-class rates by the v1 blkio controller.
#
# On this VM's virtual disk reading plain files costs almost nothing, so
# a .cimg's smaller, compressed reads cannot pay for its decompression;
# devices read at tens of MB/s. The throttled filesystem holds both
# runtimes' content and both launchers:
#   - curl.cimg and python3.cimg (cimg-build /usr/bin/curl, and
#     /usr/bin/python3 --add /usr/lib/python3.11 for its stdlib);
#   - crun's bundles of the same trees (unsquashfs of those images,
#     crun's default spec: same command, read-only root, no terminal,
#     memory 256 MiB, pids 64 — the manifests set the same);
#   - bin/cimg-run (static), and crun with the libraries ldd lists, run
#     as `env LD_LIBRARY_PATH=FS/lib FS/bin/crun`: on a device the
#     launcher is on the same slow storage as the app. (The dynamic loader
#     and env itself come from the host's disk, 0.2 MB together.)
# Apps: `curl --version` and `python3 -c pass`.
#
# The loop device's readahead is set to READ_AHEAD_KB (default 128, an
# mmcblk device's default; this VM's loop devices start with megabytes).
#
# Throttle: a blkio cgroup of our own with blkio.throttle.read_bps_device
# set for the loop device's major:minor; this script moves itself into it,
# so launchbench, cimg-run, its app and the loop worker reading the .cimg
# on its behalf (the kernel charges a loop device's I/O to the cgroup of
# whoever issued it) are throttled. crun moves its container into a blkio
# cgroup of its own (flat on v1: a parent's limit does not hold there), so
# each bundle's config sets the same limit (linux.resources.blockIO), which
# crun writes into that cgroup. So crun's own process and its container
# have a limit each; crun reads its binary and libraries before the
# container exists and then waits for it, so their reads hardly overlap. RATES (default "40 10", MB/s = 10^6 B/s)
# are the throttled cells; a cell "unthrottled" on the same filesystem
# comes first for reference. Before the runs, a check per rate: dd of a
# 48 MiB file with the page cache dropped, in the cgroup (MB/s); the same
# through a loop device over the file, as cimg-run reads a .cimg (the loop
# worker's reads are charged to the reader's cgroup); and a crun container
# reading python3's stdlib from its bundle (so crun's cgroup limit is seen
# to hold). A throttled check over 1.25× its limit fails the script.
#
# Per cell, PAIRS (default 100) rounds after a warm-up, the tools in turn
# (bench/launchbench -cold: sync and drop_caches = 3 before every run,
# untimed), so run i of each tool is a pair; the report judges the goal on
# the 95 % bootstrap interval of the pair-by-pair ratio (bench/stats):
#   cimg-run --private-mount   a fresh mount per launch (loop device,
#                              squashfs mount), nothing of the mount cache
#                              reused: the image as a device's first
#                              launch of it after boot sees it — except
#                              the whole-image check, done once per boot
#                              (next row). Goal: ≤ 0.7× crun.
#   cimg-run --private-mount --verify always
#                              the same with that check every time: the
#                              real first launch after boot on a kernel
#                              without dm-verity (this one has no
#                              device-mapper; with dm-verity the kernel
#                              checks each block as it is read instead).
#   cimg-run                   from its mount cache (mounted once, its
#                              pages dropped with the rest).
#   crun                       crun run -b BUNDLE ID.
#
# Everything made here — the cgroup, the mounts, the loop devices, the
# crun containers, the work directory — is removed at the end, also when a
# step fails, and checked.
#
# Output: bench/results/cold.csv (app/rate,tool,run,ms,maxrss_kib),
# cold-load.csv (app/rate,load_before,load_after), cold-check.csv
# (rate,check,bytes,seconds,mb_per_s), cold-reads.csv (app,tool,bytes:
# what one cold launch reads from the device) and cold-meta.csv.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/bench-common.sh
if [ "${CIMG_BENCH_NS:-}" != 1 ]; then
	scripts/deps.sh crun:crun unsquashfs:squashfs-tools mkfs.ext4:e2fsprogs losetup:mount bc:bc
	exec unshare --mount --propagation private env CIMG_BENCH_NS=1 "$0" "$@"
fi
umount -l /sys/fs/cgroup/unified 2>/dev/null || true
PAIRS=${COLD_PAIRS:-${PAIRS:-100}}
RATES=${RATES:-40 10}
READ_AHEAD_KB=${READ_AHEAD_KB-128}
W=${COLD_WORK:-/var/tmp/cimg-bench-cold}
r=bench/results
M=$W/mnt # the throttled filesystem
CG=/sys/fs/cgroup/blkio/cimg-bench-cold-$$
CTR=bench-cold-crun
dev=
ld=
load_before=$(cut -d' ' -f1-3 /proc/loadavg)
[ -d /sys/fs/cgroup/blkio ] || { echo "bench-cold: no v1 blkio hierarchy at /sys/fs/cgroup/blkio" >&2; exit 1; }

cleanup() {
	clear_unified_shadow # crun's directories on the detached cgroup2 path
	local left=0
	set +e
	rm -f $r/cold*.csv.tmp # a failed run's partial results
	crun delete -f $CTR >/dev/null 2>&1
	crun delete -f $CTR-check >/dev/null 2>&1
	# Out of our cgroup first: a cgroup with a task in it cannot go.
	echo $$ >/sys/fs/cgroup/blkio/cgroup.procs
	[ -d "$CG" ] && rmdir "$CG"
	[ -d "$W/state" ] && bin/cimg-run gc --state-dir "$W/state" --store "$W/no-store" >/dev/null
	# crun 1.8.1 leaves a plain directory below the detached cgroup2 mount
	# point (see bench-services.sh).
	if ! mountpoint -q /sys/fs/cgroup/unified; then
		for c in $CTR $CTR-check; do
			rm -f /sys/fs/cgroup/unified/$c/cgroup.procs
			rmdir /sys/fs/cgroup/unified/$c 2>/dev/null
		done
	fi
	[ -n "$ld" ] && losetup -d "$ld"
	mountpoint -q "$M" && umount "$M"
	[ -n "$dev" ] && losetup "$dev" >/dev/null 2>&1 && losetup -d "$dev"
	[ -d "$CG" ] && { echo "bench-cold: cgroup $CG is still there" >&2; left=1; }
	for c in /sys/fs/cgroup/*/$CTR /sys/fs/cgroup/*/$CTR-check; do
		[ -e "$c" ] && { echo "bench-cold: cgroup $c is still there" >&2; left=1; }
	done
	finish_work bench-cold "$W" $left "$W/fs.img"
}
trap 'cleanup || exit 1' EXIT

rm -rf "$W" && mkdir -p "$W" $r
mkdir -m 0700 "$W/state" # cimg-run's own state directory, off the slow filesystem as /run would be
make -s build
go build -o "$W/launchbench" ./bench/launchbench

# The filesystem: ext4 on a sparse file, through a loop device of its own
# (bench-common.sh); cimg-run's own loop device over a .cimg is left as the
# kernel makes it, as on a device.
loop_fs "$W/fs.img" "$M"
mkdir -p "$M/bin" "$M/lib"
cp bin/cimg-run "$M/bin/"
cp "$(command -v crun)" "$M/bin/"
ldd "$(command -v crun)" | awk '$2 == "=>" && $3 ~ /^\// {print $3}' | xargs -I{} cp -L {} "$M/lib/"
CIMG="$M/bin/cimg-run --state-dir $W/state"
CRUN="env LD_LIBRARY_PATH=$M/lib $M/bin/crun"

limits='[limits]
memory = "256MiB"
pids = 64'
printf 'name = "curl"\n[app]\ncommand = ["/usr/bin/curl", "--version"]\n%s\n' "$limits" >"$W/curl.toml"
bin/cimg-build -q -f "$W/curl.toml" /usr/bin/curl -o "$M/curl.cimg"
printf 'name = "python3"\n[app]\ncommand = ["/usr/bin/python3", "-c", "pass"]\n%s\n' "$limits" >"$W/python3.toml"
bin/cimg-build -q -f "$W/python3.toml" /usr/bin/python3 --add /usr/lib/python3.11:/usr/lib/python3.11 -o "$M/python3.cimg"

# bundle APP RATE ARGS...: (re)writes APP's bundle config for a rate in
# bytes/s (0: no limit); the rootfs is unpacked on the first call.
bundle() {
	local app=$1 rate=$2 b=$M/$1-bundle
	shift 2
	if [ ! -d "$b/rootfs" ]; then
		mkdir -p "$b"
		unsquashfs -q -d "$b/rootfs" "$M/$app.cimg" >/dev/null
		(cd "$b" && crun spec)
		cp "$b/config.json" "$W/$app-spec.json"
	fi
	python3 - "$W/$app-spec.json" "$b/config.json" "$majmin" "$rate" "$@" <<'PY'
import json, sys
src, dst, majmin, rate, args = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), sys.argv[5:]
c = json.load(open(src))
c["process"]["args"] = args
c["process"]["terminal"] = False
c["root"]["readonly"] = True
res = {"memory": {"limit": 256 << 20}, "pids": {"limit": 64}}
if rate:
    major, minor = map(int, majmin.split(":"))
    res["blockIO"] = {"throttleReadBpsDevice": [{"major": major, "minor": minor, "rate": rate}]}
c["linux"]["resources"] = res
json.dump(c, open(dst, "w"), indent=1)
PY
}
# Python's stdlib read back in the crun container: the check that crun's
# own cgroup gets the limit.
readall='import os, sys, time
t = time.monotonic(); n = 0
for d, _, fs in os.walk("/usr/lib/python3.11"):
    for f in fs:
        p = os.path.join(d, f)
        if os.path.isfile(p):  # not the dangling links into /etc
            with open(p, "rb") as h:
                n += len(h.read())
print(n, time.monotonic() - t)'
sync

# One launch of each first, unthrottled: cimg-run checks a whole image
# once per boot (state directory), and that is a row of its own below.
for app in curl python3; do $CIMG --private-mount "$M/$app.cimg" >/dev/null; done

mkdir "$CG"
echo $$ >"$CG/cgroup.procs"
# setrate BYTES/S: the limit of our cgroup (0: none) and the bundles'.
setrate() {
	echo "$majmin $1" >"$CG/blkio.throttle.read_bps_device"
	bundle curl "$1" /usr/bin/curl --version
	bundle python3 "$1" /usr/bin/python3 -c pass
}
# The check, per rate: what each side actually reads at. The throttle lets
# the start of a read through at once (about 0.1 s of the rate), so the
# file is large enough for that to stay well under the check's margin.
head -c 48M /dev/urandom >"$M/check.bin"
sync
check=$r/cold-check.csv.tmp
echo "rate,check,bytes,seconds,mb_per_s" >"$check"
for rate in 0 $RATES; do
	bps=$((rate * 1000000))
	name=$rate
	[ "$rate" != 0 ] || name=unthrottled
	setrate $bps
	secs=$(cold_dd "$M/check.bin")
	size=$(stat -c %s "$M/check.bin")
	echo "$name,dd of a 48 MiB file in the cgroup,$size,$secs,$(echo "$size / $secs / 1000000" | bc -l)" >>"$check"
	cp "$M/python3-bundle/config.json" "$W/python3-config.json"
	bundle python3 $bps /usr/bin/python3 -c "$readall"
	dropcaches
	out=$($CRUN run -b "$M/python3-bundle" $CTR-check </dev/null)
	read -r n s <<<"$out"
	cp "$W/python3-config.json" "$M/python3-bundle/config.json"
	echo "$name,crun container reading python3's stdlib,$n,$s,$(echo "$n / $s / 1000000" | bc -l)" >>"$check"
	# cimg-run's path: a loop device over the .cimg, whose worker reads the
	# file on the throttled filesystem on behalf of the reader's cgroup.
	ld=$(losetup -r --find --show "$M/check.bin")
	secs=$(cold_dd "$ld")
	losetup -d "$ld" && ld=
	echo "$name,dd of a loop device over that file in the cgroup,$size,$secs,$(echo "$size / $secs / 1000000" | bc -l)" >>"$check"
done
sed -i 's/,\./,0./g' "$check" # bc prints .5 for 0.5
# What one cold launch reads from the device, per tool: the loop device's
# sectors read (/proc/diskstats), unthrottled (the bytes do not depend on
# the rate); each the median of 3 launches.
setrate 0
reads=$r/cold-reads.csv.tmp
echo "app,tool,bytes" >"$reads"
coldread() { # app tool command...
	local app=$1 tool=$2
	shift 2
	echo "$app,$tool,$(cold_bytes "$@")" >>"$reads"
}
# The launchers alone, started and done without an app: how much of the
# cold reads each one is.
coldread "launcher alone" "cimg-run help" "$M/bin/cimg-run" help
coldread "launcher alone" "crun --version" $CRUN --version
for app in curl python3; do
	coldread $app "cimg-run --private-mount" $CIMG --private-mount "$M/$app.cimg"
	coldread $app "cimg-run --private-mount --verify always" $CIMG --private-mount --verify always "$M/$app.cimg"
	coldread $app "cimg-run" $CIMG "$M/$app.cimg"
	coldread $app crun $CRUN run -b "$M/$app-bundle" $CTR
done
cat "$reads" >&2
cat "$check" >&2
# A throttled check that does not show the throttle is a broken benchmark,
# not a result: fail loudly (up to 25 % over the limit allowed for timing).
awk -F, 'NR > 1 && $1 != "unthrottled" && $5 > 1.25 * $1 {
	print "bench-cold: " $2 " at the " $1 " MB/s limit read " $5 " MB/s: the throttle does not hold" > "/dev/stderr"; bad = 1
} END {exit bad}' "$check"

csv=$r/cold.csv.tmp
load=$r/cold-load.csv.tmp
rm -f "$csv" "$load"
crun delete -f $CTR >/dev/null 2>&1 || true
for rate in 0 $RATES; do
	name=$rate
	[ "$rate" != 0 ] || name=unthrottled
	setrate $((rate * 1000000))
	for app in curl python3; do
		echo "cold: $app, $name" >&2
		"$W/launchbench" -n "$PAIRS" -cold -label "$app/$name" -csv "$csv" -load "$load" -ref crun \
			"cimg-run --private-mount=$CIMG --private-mount $M/$app.cimg" \
			"cimg-run --private-mount --verify always=$CIMG --private-mount --verify always $M/$app.cimg" \
			"cimg-run=$CIMG $M/$app.cimg" \
			"crun=$CRUN run -b $M/$app-bundle $CTR"
	done
done
{
	echo "key,value"
	echo "date,$(date -u '+%Y-%m-%d %H:%M UTC')"
	echo "load before,$load_before"
	echo "load after,$(cut -d' ' -f1-3 /proc/loadavg)"
	echo "pairs,$PAIRS"
	echo "rates,$RATES"
	for app in curl python3; do
		echo "$app cimg bytes,$(stat -c %s "$M/$app.cimg")"
		echo "$app bundle bytes,$(du -sb "$M/$app-bundle/rootfs" | cut -f1)"
	done
	echo "cimg-run bytes,$(stat -c %s "$M/bin/cimg-run")"
	echo "crun and libraries bytes,$(du -cb "$M/bin/crun" "$M/lib" | tail -1 | cut -f1)"
	echo "filesystem,ext4 on $(findmnt -no FSTYPE -T "$W") via a loop device"
	echo "read_ahead_kb,$(cat /sys/block/"$(basename "$dev")"/queue/read_ahead_kb)"
	echo "loop read_ahead_kb before,$ra_loop"
	# The loop device cimg-run itself set up for its mount cache's mount of
	# python3.cimg (the same kind --private-mount makes).
	cdev=$(losetup -j "$M/python3.cimg" | head -1 | cut -d: -f1)
	echo "cimg-run's loop read_ahead_kb,$([ -n "$cdev" ] && cat /sys/block/"$(basename "$cdev")"/queue/read_ahead_kb)"
} >$r/cold-meta.csv
mv "$check" $r/cold-check.csv
mv "$reads" $r/cold-reads.csv
mv "$csv" $r/cold.csv
mv "$load" $r/cold-load.csv
echo "cold: cleaning up" >&2
# The EXIT trap removes everything and checks what is left.
