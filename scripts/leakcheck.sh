#!/bin/bash
# Lists what the tests could leave behind on the host, and fails when a
# test run left something: make test takes a snapshot before go test and
# checks after it.
#
# Usage: scripts/leakcheck.sh snapshot FILE   record what is there now
#        scripts/leakcheck.sh check FILE      fail (exit 1), naming each
#                                             thing, if something of ours
#                                             appeared since the snapshot
#        scripts/leakcheck.sh list            what of ours is there now
#
# Ours (other users of this machine may hold loop devices, mounts and
# cgroups, so only what appeared since the snapshot counts):
#   mounts     in any process's mount namespace, whose mount point or
#              source is under a test temp dir
#              ($TMPDIR/Test*, Benchmark*, Fuzz*, or a path under $TMPDIR
#              naming cimg: the cimg-run tests' root, test binaries, state
#              dirs), and
#              squashfs mounts anywhere (/run/cimg too) on a loop device
#              whose file is under $TMPDIR or deleted
#   loop       loop devices backed by a file under $TMPDIR or a deleted one
#   cgroup     directories below a "cimg" cgroup (/sys/fs/cgroup/cimg,
#              /sys/fs/cgroup/*/cimg). The empty "cimg" parent itself is
#              not counted: cimg-run makes it once per hierarchy and keeps
#              it for every later launch, as it keeps /run/cimg.
#   process    cimg-run binaries built by the tests (under $TMPDIR), the
#              probe (comm probe, probe-suid), an init from a memfd
#              (memfd:cimg-init), and zombies of those
#   dm         device-mapper targets named cimg-*
# Lines are "KIND KEY<TAB>DETAIL"; snapshots compare on KIND KEY.
set -u
tmp=${TMPDIR:-/tmp}
tmp=${tmp%/}

# testpath PATH: whether PATH is a file of the tests.
testpath() {
	case $1 in
	"$tmp"/Test* | "$tmp"/Benchmark* | "$tmp"/Fuzz*) return 0 ;;
	"$tmp"/*cimg*) return 0 ;;
	esac
	return 1
}

# backing DEV: the file behind a loop device (/dev/loopN), directly or
# under a device-mapper device (/dev/dm-N, /dev/mapper/NAME).
backing() {
	local dev=$1 sys
	case $dev in
	/dev/mapper/*) dev=$(readlink -f "$dev") ;;
	esac
	sys=/sys/block/${dev#/dev/}
	for f in "$sys"/loop/backing_file "$sys"/slaves/*/loop/backing_file; do
		[ -r "$f" ] && cat "$f" && return
	done
}

# mounts PID: the mounts of ours in PID's mount namespace ("self": this
# shell's, the host's).
mounts() {
	local id parent devno root mp opts rest fstype src file where=""
	[ "$1" = self ] || where=" (in the mount namespace of pid $1, $(cat "/proc/$1/comm" 2>/dev/null))"
	# /proc/PID/mountinfo: ID PARENT MAJ:MIN ROOT MOUNTPOINT OPTS ... - FSTYPE SOURCE SUPEROPTS
	while read -r id parent devno root mp opts rest; do
		rest=" $rest"
		rest=${rest#* - }
		read -r fstype src _ <<<"$rest"
		file=""
		case $src in
		/dev/loop* | /dev/dm-* | /dev/mapper/*) file=$(backing "$src") ;;
		esac
		if testpath "$mp" || testpath "$src" ||
			{ [ "$fstype" = squashfs ] && case $file in "$tmp"/* | *" (deleted)") true ;; *) false ;; esac }; then
			printf 'mount %s %s\t%s: %s %s%s%s\n' "$mp" "$src" "$mp" "$fstype" "$src" "${file:+ on $file}" "$where"
		fi
	done <"/proc/$1/mountinfo" 2>/dev/null
}

list() {
	local parent file dev
	# Every mount namespace, not only the host's: a test killed half way
	# (go test's timeout) leaves processes whose namespaces still hold
	# images mounted. One process per namespace; a mount seen in several
	# is listed once.
	{
		mounts self
		local self ns p seen=" "
		self=$(readlink /proc/self/ns/mnt)
		for p in /proc/[0-9]*; do
			ns=$(readlink "$p/ns/mnt" 2>/dev/null) || continue
			case $seen in *" $ns "*) continue ;; esac
			seen="$seen$ns "
			[ "$ns" = "$self" ] || mounts "${p#/proc/}"
		done
	} | awk -F'\t' '!seen[$1]++'

	for f in /sys/block/loop*/loop/backing_file; do
		[ -r "$f" ] || continue
		file=$(cat "$f")
		case $file in
		"$tmp"/* | *" (deleted)")
			dev=${f#/sys/block/}
			dev=${dev%%/*}
			printf 'loop %s %s\t/dev/%s on %s\n' "$dev" "${file% (deleted)}" "$dev" "$file"
			;;
		esac
	done

	for parent in /sys/fs/cgroup/cimg /sys/fs/cgroup/*/cimg; do
		[ -d "$parent" ] || continue
		find "$parent" -mindepth 1 -type d 2>/dev/null | while read -r d; do
			printf 'cgroup %s\t%s: %s processes\n' "$d" "$d" "$(wc -l <"$d/cgroup.procs" 2>/dev/null || echo '?')"
		done
	done

	local p pid comm exe state
	for p in /proc/[0-9]*; do
		pid=${p#/proc/}
		comm=$(cat "$p/comm" 2>/dev/null) || continue
		exe=$(readlink "$p/exe" 2>/dev/null)
		state=$(sed 's/.*) \(.\).*/\1/' "$p/stat" 2>/dev/null)
		case $comm:$exe in
		probe:* | probe-suid:* | *:"$tmp"/*/cimg-run | *:"$tmp"/*/cimg-run" (deleted)" | *:/memfd:cimg-init*) ;;
		cimg-run:) ;; # a zombie: no exe left
		*) continue ;;
		esac
		printf 'process %s %s\tpid %s %s (state %s) %s\n' "$pid" "$comm" "$pid" "$comm" "$state" "$(tr '\0' ' ' <"$p/cmdline" 2>/dev/null | cut -c1-200)"
	done

	for f in /sys/block/dm-*/dm/name; do
		[ -r "$f" ] || continue
		name=$(cat "$f")
		case $name in
		cimg-*)
			dev=${f#/sys/block/}
			printf 'dm %s %s\t/dev/%s\n' "${dev%%/*}" "$name" "${dev%%/*}"
			;;
		esac
	done
}

# fresh FILE: what of ours is there now and not in the snapshot FILE.
fresh() {
	list | awk -F'\t' 'NR == FNR { seen[$1] = 1; next } !seen[$1]' "$1" -
}

case ${1:-} in
snapshot)
	[ $# = 2 ] || { echo "usage: $0 snapshot FILE" >&2; exit 2; }
	list >"$2"
	echo "leakcheck: $(wc -l <"$2") things of ours already there before the tests (not counted)"
	;;
check)
	[ $# = 2 ] || { echo "usage: $0 check FILE" >&2; exit 2; }
	[ -r "$2" ] || { echo "leakcheck: no snapshot $2 (run $0 snapshot $2 before the tests)" >&2; exit 2; }
	# The kernel tears down the namespaces, mounts and loop devices of
	# exited processes asynchronously: give it up to 10 s.
	for _ in $(seq 50); do
		left=$(fresh "$2")
		[ -z "$left" ] && break
		sleep 0.2
	done
	if [ -n "$left" ]; then
		echo "leakcheck: FAIL: the tests left $(printf '%s\n' "$left" | wc -l) things behind:" >&2
		printf '%s\n' "$left" | awk -F'\t' '{ split($1, k, " "); printf "  %-8s %s\n", k[1], $2 }' >&2
		exit 1
	fi
	echo "leakcheck: ok: no mount, loop device, cgroup, process or dm target of the tests left behind"
	;;
list)
	list | awk -F'\t' '{ split($1, k, " "); printf "%-8s %s\n", k[1], $2 }'
	;;
*)
	sed -n '6,10s/^# //p' "$0" >&2
	exit 2
	;;
esac
