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
