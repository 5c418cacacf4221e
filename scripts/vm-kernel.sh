#!/bin/sh
# Fetches Debian's own kernel (the linux-image-amd64 package's current
# flavour) and unpacks it for the VM tests: a second kernel, booted with
# cgroup_no_v1=all, gives real cgroup v2 and device-mapper. Idempotent.
# Usage: scripts/vm-kernel.sh [DIR]   (default /var/cache/cimg/vm-kernel)
set -eu
dir=${1:-/var/cache/cimg/vm-kernel}
[ -f "$dir/vmlinuz" ] && exit 0
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
cd "$tmp"
flavour() { apt-cache depends linux-image-amd64 2>/dev/null | awk '/Depends: linux-image-[0-9]/ {print $2; exit}'; }
pkg=$(flavour)
if [ -z "$pkg" ]; then
	apt-get update -qq
	pkg=$(flavour)
fi
[ -n "$pkg" ] || { echo "vm-kernel: cannot find the linux-image-amd64 flavour in apt" >&2; exit 1; }
apt-get download "$pkg" >/dev/null 2>&1 || { apt-get update -qq && apt-get download "$pkg" >/dev/null; }
dpkg-deb -x ./*.deb root
mkdir -p "$dir.tmp"
cp root/boot/vmlinuz-* "$dir.tmp/vmlinuz"
mkdir -p "$dir.tmp/modules"
cp -r root/lib/modules/*/kernel "$dir.tmp/modules/"
rm -rf "$dir" && mv "$dir.tmp" "$dir"
