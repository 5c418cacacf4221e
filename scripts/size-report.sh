#!/bin/bash
# Image size of an app packed by cimg-build's closure versus what a
# `FROM debian:bookworm-slim` + `apt-get install` image ships: a tar.gz of
# a debootstrap --variant=minbase bookworm rootfs with the same package.
#
# Usage: scripts/size-report.sh   (as root; needs debootstrap and network
# access to the Debian mirror in /etc/apt/sources.list.d/)
set -euo pipefail
cd "$(dirname "$0")/.."
WORK=${WORK:-/tmp/cimg-size-report}
mkdir -p "$WORK"
export SOURCE_DATE_EPOCH=1700000000

if [ ! -x "$WORK/minbase/bin/sh" ]; then
	debootstrap --variant=minbase bookworm "$WORK/minbase" http://deb.debian.org/debian >"$WORK/debootstrap.log"
fi

oci_size() { # package → bytes of a tar.gz of minbase + package, apt caches removed
	local pkg=$1 root=$WORK/minbase-$1
	if [ ! -f "$WORK/$pkg.tar.gz" ]; then
		rm -rf "$root"
		cp -a "$WORK/minbase" "$root"
		cp /etc/resolv.conf "$root/etc/resolv.conf" 2>/dev/null || true
		chroot "$root" apt-get update -qq >/dev/null
		DEBIAN_FRONTEND=noninteractive chroot "$root" apt-get install -y -qq --no-install-recommends "$pkg" >/dev/null
		chroot "$root" apt-get clean
		rm -rf "$root"/var/lib/apt/lists/*
		tar -C "$root" --numeric-owner -czf "$WORK/$pkg.tar.gz" .
	fi
	stat -c %s "$WORK/$pkg.tar.gz"
}

make -s build
bin/cimg-build -q /usr/bin/curl -o "$WORK/curl.cimg" 2>/dev/null
libs=()
for so in /usr/lib/python3.11/lib-dynload/*.so; do libs+=(--lib "$so"); done
bin/cimg-build -q /usr/bin/python3.11 --name python3 --add /usr/lib/python3.11:/usr/lib/python3.11 "${libs[@]}" -o "$WORK/python3.cimg" 2>/dev/null

echo "| app | cimg-build closure (.cimg, zstd) | minbase + package (.tar.gz) | ratio |"
echo "|---|---|---|---|"
for app in curl python3; do
	c=$(stat -c %s "$WORK/$app.cimg")
	o=$(oci_size "$app")
	awk -v a="$app" -v c="$c" -v o="$o" 'BEGIN { printf "| %s | %.1f MiB | %.1f MiB | %.2f× |\n", a, c/1048576, o/1048576, c/o }'
done
