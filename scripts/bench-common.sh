# Sourced by the bench scripts that set up mounts and loop devices.

# finish_work WHO W LEFT FILE...: the end of a benchmark's cleanup. Reports
# mounts still under W and loop devices still over each FILE; removes W
# only when nothing is left (and LEFT, the caller's own findings, is 0),
# else keeps it for a look. Returns non-zero when anything was left.
finish_work() {
	local who=$1 w=$2 left=$3 f
	shift 3
	if grep -F " $w" /proc/self/mountinfo >&2; then
		echo "$who: mounts under $w are still there" >&2
		left=1
	fi
	for f in "$@"; do
		if [ -n "$(losetup -j "$f" 2>/dev/null)" ]; then
			losetup -j "$f" >&2
			echo "$who: loop devices of $f are still there" >&2
			left=1
		fi
	done
	if [ "$left" = 0 ]; then
		rm -rf "$w"
	else
		echo "$who: left $w in place" >&2
	fi
	return "$left"
}

# clear_unified_shadow: the scripts that run crun detach the hugetlb-only
# cgroup2 mount at /sys/fs/cgroup/unified in their private mount namespace
# (crun 1.8.1 refuses hybrid hosts). What crun and podman then "create"
# there are plain directories and cgroup.procs files on /sys/fs/cgroup's
# tmpfs, shared with the host, where its cgroup2 mount hides them. They
# are no cgroups and hold no process: remove them, and only when the path
# is that tmpfs here.
clear_unified_shadow() {
	[ "$(stat -f -c %T /sys/fs/cgroup/unified 2>/dev/null)" = tmpfs ] || return 0
	find /sys/fs/cgroup/unified -mindepth 1 -delete
}

# from_disk PROGRAM...: each program's file and its shared libraries
# (ldd) leave the page cache, written back first, so that their next runs
# read them back by page faults, the state of a device after boot, the
# same for every tool. A binary the linker has just written sits in the
# cache in another shape: the same cimg-run bytes measured exec 0.79x
# crun as linked, 0.77x read back this way, 0.72x as written by cp(1).
from_disk() {
	local p files=()
	for p in "$@"; do
		p=$(command -v "$p")
		files+=("$p")
		mapfile -t -O ${#files[@]} files < <(ldd "$p" 2>/dev/null | awk '$3 ~ /^\// {print $3}')
	done
	python3 - "${files[@]}" <<'PY'
import os, sys
for p in sys.argv[1:]:
    fd = os.open(p, os.O_RDONLY)
    os.fsync(fd)
    os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    os.close(fd)
PY
}

# loop_fs FILE MOUNTPOINT: a 1 GiB ext4 on a sparse FILE through a loop
# device of its own, mounted at MOUNTPOINT (the filesystem the throttled
# cells read from). Loop devices here start with megabytes of readahead
# (2560 and 4096 KiB seen), far more than an eMMC or SD card (mmcblk)
# reads ahead with the kernel's default of 128 KiB: READ_AHEAD_KB sets it
# (empty: leave the loop device's own). Sets dev, majmin and ra_loop (the
# loop device's own readahead, before).
loop_fs() {
	truncate -s 1G "$1"
	mkfs.ext4 -q -F "$1"
	dev=$(losetup --find --show "$1")
	mkdir -p "$2"
	mount "$dev" "$2"
	majmin=$(cat /sys/block/"$(basename "$dev")"/dev)
	ra_loop=$(cat /sys/block/"$(basename "$dev")"/queue/read_ahead_kb)
	if [ -n "${READ_AHEAD_KB:-}" ]; then
		echo "$READ_AHEAD_KB" >/sys/block/"$(basename "$dev")"/queue/read_ahead_kb
	fi
}

dropcaches() { sync && echo 3 >/proc/sys/vm/drop_caches; }

# cold_dd PATH: the seconds dd takes to read PATH whole from storage (the
# page cache dropped first), in the caller's cgroup.
cold_dd() {
	local t0 t1
	dropcaches
	t0=$(date +%s.%N)
	dd if="$1" of=/dev/null bs=1M status=none
	t1=$(date +%s.%N)
	echo "$t1 - $t0" | bc -l
}

# cold_bytes COMMAND...: the bytes COMMAND reads from loop_fs's device with
# the page cache dropped (its sectors read, /proc/diskstats), the median of
# 3 runs.
cold_bytes() {
	local i b0 v=()
	for i in 1 2 3; do
		dropcaches
		b0=$(dev_read)
		"$@" >/dev/null </dev/null
		v+=($(($(dev_read) - b0)))
	done
	printf '%s\n' "${v[@]}" | sort -n | sed -n 2p
}
# %.0f: mawk prints a product past 2^31 as 1.6507e+10, which bash's
# arithmetic refuses.
dev_read() { awk -v d="$(basename "$dev")" '$3 == d {printf "%.0f\n", $6 * 512}' /proc/diskstats; }
