#!/bin/sh
# cimg-oci against crun and runc, on the same static hello (bin/hello):
#  1. podman run --rm --rootfs DIR /hello, with --runtime each of them;
#  2. the bare OCI cycle on one bundle: create, start, wait for the
#     process to end, delete.
# Prints the median and min of N runs (default 20) in milliseconds.
# Usage: scripts/bench-oci.sh [N]   (root; make build bin/hello first)
# crun 1.8 refuses this kind of hybrid-cgroup host unless it runs with the
# cgroup2 mount detached in a private mount namespace: it runs wrapped so,
# which adds an unshare and a umount to its times.
set -eu
N=${1:-20}
TOP=$(pwd)
W=$(mktemp -d /tmp/bench-oci.XXXXXX)
trap 'rm -rf "$W"' EXIT
mkdir -p "$W/bundle/rootfs/proc" "$W/state"
cp "$TOP/bin/hello" "$W/bundle/rootfs/hello"
cat > "$W/crun" <<'X'
#!/bin/sh
exec unshare -m sh -c 'umount -l /sys/fs/cgroup/unified 2>/dev/null; exec crun "$@"' crun "$@"
X
chmod +x "$W/crun"
# One config for the three: cimg-oci's spec, as ociVersion 1.0.2 (crun
# 1.8 refuses 1.2's number; nothing in it is newer).
(cd "$W/bundle" && "$TOP/bin/cimg-oci" spec &&
	sed -i 's/"terminal": true/"terminal": false/; s/"sh"/"\/hello"/; s/"ociVersion": "[^"]*"/"ociVersion": "1.0.2"/' config.json)
P="podman --root $W/storage --runroot $W/run --tmpdir $W/tmp --cgroup-manager cgroupfs --events-backend none"
ms() { echo $(( ($(date +%s%N) - $1) / 1000000 )); }
stats() { sort -n | awk '{a[NR]=$1} END {printf "median %d ms, min %d ms (n=%d)\n", a[int((NR+1)/2)], a[1], NR}'; }
for rt in "$TOP/bin/cimg-oci" "$W/crun" runc; do
	name=$(basename "$rt")
	$P --runtime "$rt" run --rm --network none --ulimit nofile=1024:1024 --ulimit nproc=4096:4096 --rootfs "$W/bundle/rootfs" /hello >/dev/null # warm
	for i in $(seq "$N"); do
		t=$(date +%s%N)
		$P --runtime "$rt" run --rm --network none --ulimit nofile=1024:1024 --ulimit nproc=4096:4096 --rootfs "$W/bundle/rootfs" /hello >/dev/null
		ms "$t"
	done | stats | sed "s/^/podman run --rm, $name: /"
	for i in $(seq "$N"); do
		id=bench-$$-$i
		t=$(date +%s%N)
		"$rt" --root "$W/state/$name" create --bundle "$W/bundle" "$id" >/dev/null
		"$rt" --root "$W/state/$name" start "$id"
		while "$rt" --root "$W/state/$name" state "$id" 2>/dev/null | grep -q '"running"'; do :; done
		"$rt" --root "$W/state/$name" delete "$id"
		ms "$t"
	done | stats | sed "s/^/create+start+delete, $name: /"
done
$P system reset -f >/dev/null 2>&1 || true
