#!/bin/bash
# cimg-build's default compression, chosen from measurements: the default
# must give the best size whose cold launch stays within 10 % of mksquashfs's
# defaults (zstd level 15, 128 KiB blocks; cimg-build's until then), the decompression measured on
# the kernel's side (squashfs reading the image), not just the encoder's.
#
# Images: the SAME trees packed by ONE cimg-build binary in every variant.
# The trees are bench-size.sh's: cimg-build's closure of /usr/bin/curl,
# and of /usr/bin/python3.11 --name python3 --add
# /usr/lib/python3.11:/usr/lib/python3.11 with a --lib per
# lib-dynload/*.so; each unpacked (unsquashfs, cimg's own /.cimg dropped)
# and packed again with `--rootfs TREE --entrypoint ENTRY`, so every
# variant holds identical content (checked: the same unsquashfs -lls
# listing). The manifest (-f) carries the app's command, as bench-cold.sh's
# do: `curl --version` and `python3.11 -c pass` (the closure packs python3
# as /usr/bin/python3.11), memory 256 MiB, pids 64. Variants:
#   zstd:15 128K   --compression zstd:15 --block-size 128K (the baseline: mksquashfs's defaults, cimg-build's before)
#   zstd:19 128K   --compression zstd:19 --block-size 128K
#   zstd:19 256K   --compression zstd:19 --block-size 256K
#   zstd:19 1M     --compression zstd:19 --block-size 1M
#   xz 128K        --compression xz --block-size 128K
#   xz 1M          --compression xz --block-size 1M
# plus, for the size reference, the tree as a tar.zst (bench-size.sh's
# `tar --sort=name | zstd`), and one image built with no compression flags,
# to tell which variant is cimg-build's default.
#
# Launches: `cimg-run --state-dir S --private-mount IMAGE` — a fresh loop
# device and squashfs mount per launch, so every block the app touches is
# read and decompressed by the kernel's squashfs (this kernel: one
# decompressor per mount, CONFIG_SQUASHFS_DECOMP_SINGLE; meta lists it). S
# is a state directory of our own; each image is launched once before the
# runs, so cimg-run's once-per-boot whole-image check is not in them.
# bench/launchbench -cold (sync and drop_caches = 3 before every run,
# untimed), one warm-up round, then PAIRS (default 30) rounds, the six
# variants in a shuffled order in each round; a variant's run is paired
# with the baseline's run of the same round (bench/stats: the median of the
# pair-by-pair ratios with its 95 % bootstrap interval). Conditions:
#   unthrottled   the images and cimg-run on the VM's own disk: reads cost
#                 almost nothing, so decompression weighs the most here.
#   RATES MB/s    (default "10": eMMC/SD class) bench-cold.sh's approach,
#                 repeated here since that script cannot be sourced: a
#                 loop-backed ext4 of our own holding the images and
#                 cimg-run (a device's launcher is on the same slow
#                 storage), its loop device's readahead READ_AHEAD_KB
#                 (default 128, an mmcblk device's), read-throttled by a v1
#                 blkio cgroup of our own (blkio.throttle.read_bps_device)
#                 that this script moves itself into — launchbench,
#                 cimg-run, the app and the loop worker reading a .cimg on
#                 their behalf are charged to it. Before the runs, checked
#                 per rate as bench-cold.sh does: dd of a 48 MiB file, and of
#                 a loop device over it, in the cgroup with the page cache
#                 dropped; a check over 1.25× its limit fails the script.
# Also measured, unthrottled on that ext4: the bytes one cold launch
# reads from its device per variant (its loop device's sectors read,
# /proc/diskstats; median of 3; cimg-run's own binary included, and
# alone as "launcher").
#
# Binaries: CIMG_BUILD, CIMG_RUN and LAUNCHBENCH (default bin/cimg-build
# and bin/cimg-run from `make -s build`, and a `go build` of
# bench/launchbench). Work files go to a mktemp directory under /var/tmp
# (DEFAULTS_WORK overrides; on disk, not a tmpfs, which drop_caches would
# not empty).
#
# Everything made here — the cgroup, the mount, the loop devices, the
# work directory — is removed at the end, also when a step fails, and
# checked.
#
# Output: bench/results/defaults.csv (app,condition,variant,run,ms,
# maxrss_kib: launchbench's rows) and defaults-meta.csv (key,value: date,
# load, pairs, sizes per variant, the checks, the loads per cell).
set -euo pipefail
self=$(realpath "$0")
# The binaries' paths, made absolute before the cd.
for v in CIMG_BUILD CIMG_RUN LAUNCHBENCH; do
	[ -z "${!v:-}" ] || export "$v=$(realpath "${!v}")"
done
cd "$(dirname "$self")/.."
. scripts/bench-common.sh
if [ "${CIMG_BENCH_NS:-}" != 1 ]; then
	scripts/deps.sh unsquashfs:squashfs-tools mkfs.ext4:e2fsprogs losetup:mount bc:bc zstd:zstd
	exec unshare --mount --propagation private env CIMG_BENCH_NS=1 "$self" "$@"
fi
PAIRS=${PAIRS:-30}
RATES=${RATES:-10}
READ_AHEAD_KB=${READ_AHEAD_KB-128}
BASE="zstd:15 128K"
VARIANTS=("zstd:15 128K" "zstd:19 128K" "zstd:19 256K" "zstd:19 1M" "xz 128K" "xz 1M")
declare -A FLAGS=(
	["zstd:15 128K"]="--compression zstd:15 --block-size 128K"
	["zstd:19 128K"]="--compression zstd:19 --block-size 128K"
	["zstd:19 256K"]="--compression zstd:19 --block-size 256K"
	["zstd:19 1M"]="--compression zstd:19 --block-size 1M"
	["xz 128K"]="--compression xz --block-size 128K"
	["xz 1M"]="--compression xz --block-size 1M"
)
slug() { echo "$1" | tr ' :' '--'; } # "zstd:19 1M" → zstd-19-1M
r=bench/results
W=${DEFAULTS_WORK:-$(mktemp -d /var/tmp/cimg-bench-defaults.XXXXXX)}
M=$W/mnt # the throttled filesystem
S=$W/state
CG=/sys/fs/cgroup/blkio/cimg-bench-defaults-$$
dev=
ld=
load_before=$(cut -d' ' -f1-3 /proc/loadavg)
start=$(date +%s)
[ -d /sys/fs/cgroup/blkio ] || { echo "bench-defaults: no v1 blkio hierarchy at /sys/fs/cgroup/blkio" >&2; exit 1; }
# cimg-run's per-launch cgroups (cimg/ID in each v1 hierarchy) before we
# start: any new one left at the end is reported.
cgs_before=$(ls -d /sys/fs/cgroup/*/cimg/*/ 2>/dev/null | sort || true)

cleanup() {
	local left=0 f
	set +e
	rm -f $r/defaults*.csv.tmp "$W"/*.tmp # a failed run's partial results
	# Out of our cgroup first: a cgroup with a task in it cannot go.
	echo $$ >/sys/fs/cgroup/blkio/cgroup.procs
	[ -d "$CG" ] && rmdir "$CG"
	[ -d "$S" ] && "${CIMG_RUN:-bin/cimg-run}" gc --state-dir "$S" --store "$W/no-store" >/dev/null
	[ -n "$ld" ] && losetup -d "$ld"
	mountpoint -q "$M" && umount "$M"
	[ -n "$dev" ] && losetup "$dev" >/dev/null 2>&1 && losetup -d "$dev"
	[ -d "$CG" ] && { echo "bench-defaults: cgroup $CG is still there" >&2; left=1; }
	local cgs_after
	cgs_after=$(ls -d /sys/fs/cgroup/*/cimg/*/ 2>/dev/null | sort)
	if [ -n "$(comm -13 <(echo "$cgs_before") <(echo "$cgs_after"))" ]; then
		comm -13 <(echo "$cgs_before") <(echo "$cgs_after") >&2
		# A warning only: another user's launches make them too.
		echo "bench-defaults: warning: the cimg cgroups above appeared during the run (ours, or another user's)" >&2
	fi
	local files=("$W/fs.img")
	for f in "$W"/disk/*.cimg "$M"/*.cimg "$W"/src/*.cimg; do [ -e "$f" ] && files+=("$f"); done
	finish_work bench-defaults "$W" $left "${files[@]}"
}
trap 'cleanup || exit 1' EXIT

mkdir -p "$W" $r "$W/src" "$W/disk" "$W/bin"
mkdir -m 0700 "$S" # cimg-run's own state directory
if [ -z "${CIMG_BUILD:-}" ] || [ -z "${CIMG_RUN:-}" ]; then
	make -s build
fi
CIMG_BUILD=${CIMG_BUILD:-$PWD/bin/cimg-build}
CIMG_RUN=${CIMG_RUN:-$PWD/bin/cimg-run}
if [ -z "${LAUNCHBENCH:-}" ]; then
	go build -o "$W/launchbench" ./bench/launchbench
	LAUNCHBENCH=$W/launchbench
fi
export SOURCE_DATE_EPOCH=1700000000
ARCH=$(go env GOARCH 2>/dev/null || dpkg --print-architecture)

# The trees: bench-size.sh's closures, unpacked.
"$CIMG_BUILD" -q /usr/bin/curl -o "$W/src/curl.cimg" 2>"$W/build.log"
libs=()
for so in /usr/lib/python3.11/lib-dynload/*.so; do libs+=(--lib "$so"); done
"$CIMG_BUILD" -q /usr/bin/python3.11 --name python3 --add /usr/lib/python3.11:/usr/lib/python3.11 "${libs[@]}" -o "$W/src/python3.cimg" 2>>"$W/build.log"
limits='[limits]
memory = "256MiB"
pids = 64'
declare -A ENTRY=([curl]=/usr/bin/curl [python3]=/usr/bin/python3.11)
printf 'name = "curl"\n[app]\ncommand = ["/usr/bin/curl", "--version"]\n%s\n' "$limits" >"$W/curl.toml"
printf 'name = "python3"\n[app]\ncommand = ["/usr/bin/python3.11", "-c", "pass"]\n%s\n' "$limits" >"$W/python3.toml"
declare -A META=()
for app in curl python3; do
	t=$W/$app-tree
	unsquashfs -q -d "$t" "$W/src/$app.cimg" >/dev/null
	rm -rf "$t/.cimg" # cimg's own metadata, not the app's content
	META["$app tree bytes"]=$(du -sb "$t" | cut -f1)
	tar -C "$t" --numeric-owner --sort=name -cf - . | zstd -q -c >"$W/$app.tar.zst"
	META["$app tar.zst bytes"]=$(stat -c %s "$W/$app.tar.zst")
	for v in "${VARIANTS[@]}"; do
		img=$W/disk/$app-$(slug "$v").cimg
		echo "defaults: building $app, $v" >&2
		# shellcheck disable=SC2086 # FLAGS are words
		"$CIMG_BUILD" -q -f "$W/$app.toml" --name "$app" --arch "$ARCH" --rootfs "$t" --entrypoint "${ENTRY[$app]}" ${FLAGS[$v]} -o "$img" 2>>"$W/build.log"
		META["$app $v bytes"]=$(stat -c %s "$img")
		META["$app $v squashfs"]=$("$CIMG_BUILD" inspect "$img" | sed -n 's/^squashfs: *//p' | tr , ';')
		META["$app $v encoder"]=$(unsquashfs -cat "$img" .cimg/provenance.json | sed -n 's/^ *"encoder": "\(.*\)",*$/\1/p' | tr , ';')
		# Identical content in every variant: the same listing as the
		# baseline's, but for provenance.json, which names the encoder, and
		# directories' sizes, which are squashfs's own directory tables.
		unsquashfs -lls -d / "$img" | grep -v ' //\.cimg/provenance\.json$' |
			awk '$1 ~ /^d/ {$3 = "-"} {print}' | sort >"$W/$app-$(slug "$v").ls"
		if ! cmp -s "$W/$app-$(slug "$v").ls" "$W/$app-$(slug "$BASE").ls"; then
			echo "bench-defaults: $app $v does not hold the same files as $BASE" >&2
			exit 1
		fi
	done
	# What cimg-build does with no compression flags, by size.
	"$CIMG_BUILD" -q -f "$W/$app.toml" --name "$app" --arch "$ARCH" --rootfs "$t" --entrypoint "${ENTRY[$app]}" -o "$W/$app-default.cimg" 2>>"$W/build.log"
	META["$app default bytes"]=$(stat -c %s "$W/$app-default.cimg")
	META["$app default squashfs"]=$("$CIMG_BUILD" inspect "$W/$app-default.cimg" | sed -n 's/^squashfs: *//p' | tr , ';')
	rm -f "$W/$app-default.cimg"
done
cp "$CIMG_RUN" "$W/bin/cimg-run"

# The throttled filesystem, as bench-cold.sh's (bench-common.sh).
loop_fs "$W/fs.img" "$M"
mkdir -p "$M/bin"
cp "$CIMG_RUN" "$M/bin/cimg-run"
cp "$W"/disk/*.cimg "$M/"
sync
# One launch of each image first, unthrottled: cimg-run checks a whole
# image once per boot (its state directory), which is not the question.
for app in curl python3; do
	for v in "${VARIANTS[@]}"; do
		for img in "$W/disk/$app-$(slug "$v").cimg" "$M/$app-$(slug "$v").cimg"; do
			"$W/bin/cimg-run" --state-dir "$S" --private-mount "$img" >/dev/null
		done
	done
done

mkdir "$CG"
echo $$ >"$CG/cgroup.procs"
setrate() { echo "$majmin $1" >"$CG/blkio.throttle.read_bps_device"; }
mbps() { echo "$1 / $2 / 1000000" | bc -l | sed 's/^\./0./'; } # BYTES SECONDS
# The throttle, checked per rate (bench-cold.sh's first and third checks).
head -c 48M /dev/urandom >"$M/check.bin"
sync
size=$(stat -c %s "$M/check.bin")
for rate in 0 $RATES; do
	name="$rate MB/s"
	[ "$rate" != 0 ] || name="unthrottled ext4"
	setrate $((rate * 1000000))
	META["check $name: dd of a 48 MiB file in the cgroup MB/s"]=$(mbps "$size" "$(cold_dd "$M/check.bin")")
	ld=$(losetup -r --find --show "$M/check.bin")
	META["check $name: dd of a loop device over it in the cgroup MB/s"]=$(mbps "$size" "$(cold_dd "$ld")")
	losetup -d "$ld" && ld=
	if [ "$rate" != 0 ]; then
		for k in "check $name: dd of a 48 MiB file in the cgroup MB/s" "check $name: dd of a loop device over it in the cgroup MB/s"; do
			if [ "$(echo "${META[$k]} > 1.25 * $rate" | bc -l)" = 1 ]; then
				echo "bench-defaults: $k = ${META[$k]}: the throttle does not hold" >&2
				exit 1
			fi
		done
	fi
done
rm -f "$M/check.bin"
setrate 0
# What one cold launch reads from the throttled filesystem's device, per
# variant (unthrottled: the bytes do not depend on the rate).
META["launcher alone (cimg-run help) cold read bytes"]=$(cold_bytes "$M/bin/cimg-run" help)
for app in curl python3; do
	for v in "${VARIANTS[@]}"; do
		META["$app $v cold read bytes"]=$(cold_bytes "$M/bin/cimg-run" --state-dir "$S" --private-mount "$M/$app-$(slug "$v").cimg")
	done
done

raw=$W/raw.csv.tmp
load=$W/load.csv.tmp
rm -f "$raw" "$load"
for rate in 0 $RATES; do
	if [ "$rate" = 0 ]; then
		cond=unthrottled dir=$W/disk run=$W/bin/cimg-run
	else
		cond="$rate MB/s" dir=$M run=$M/bin/cimg-run
	fi
	setrate $((rate * 1000000))
	for app in curl python3; do
		echo "defaults: $app, $cond" >&2
		cmds=()
		for v in "${VARIANTS[@]}"; do
			cmds+=("$v=$run --state-dir $S --private-mount $dir/$app-$(slug "$v").cimg")
		done
		"$LAUNCHBENCH" -n "$PAIRS" -cold -label "$app/$cond" -csv "$raw" -load "$load" -ref "$BASE" "${cmds[@]}"
	done
done
setrate 0

{
	echo "app,condition,variant,run,ms,maxrss_kib"
	sed 's#^\([^/]*\)/#\1,#' "$raw"
} >$r/defaults.csv.tmp
{
	echo "key,value"
	echo "date,$(date -u '+%Y-%m-%d %H:%M UTC')"
	echo "load before,$load_before"
	echo "load after,$(cut -d' ' -f1-3 /proc/loadavg)"
	while IFS=, read -r cell before after; do
		echo "load $cell before,$before"
		echo "load $cell after,$after"
	done <"$load"
	echo "pairs,$PAIRS"
	echo "rates,$RATES"
	echo "baseline,$BASE"
	echo "variants,$(printf '%s; ' "${VARIANTS[@]}" | sed 's/; $//')"
	for v in "${VARIANTS[@]}"; do echo "flags $v,${FLAGS[$v]}"; done
	echo "kernel,$(uname -r)"
	echo "squashfs decompressor,$( (zcat /proc/config.gz 2>/dev/null || cat "/boot/config-$(uname -r)" 2>/dev/null) | sed -n 's/^CONFIG_SQUASHFS_\(DECOMP_[A-Z_]*\|FILE_[A-Z]*\)=y$/\1/p' | tr '\n' ' ' | sed 's/ $//')"
	echo "cimg-build,$CIMG_BUILD $(go version -m "$CIMG_BUILD" 2>/dev/null | awk '$2 ~ /^-tags=/ {print $2}')"
	echo "cimg-run bytes,$(stat -c %s "$CIMG_RUN")"
	echo "vm disk,$(findmnt -no SOURCE,FSTYPE -T "$W" | tr -s ' ' ' ')"
	echo "throttled filesystem,ext4 on $(findmnt -no FSTYPE -T "$W") via a loop device"
	echo "throttled read_ahead_kb,$(cat /sys/block/"$(basename "$dev")"/queue/read_ahead_kb)"
	echo "throttled loop read_ahead_kb before,$ra_loop"
	for k in "${!META[@]}"; do echo "$k,${META[$k]}"; done | sort
	echo "wall seconds,$(($(date +%s) - start))"
} >$r/defaults-meta.csv.tmp
mv $r/defaults.csv.tmp $r/defaults.csv
mv $r/defaults-meta.csv.tmp $r/defaults-meta.csv
echo "defaults: cleaning up" >&2
# The EXIT trap removes everything and checks what is left.
