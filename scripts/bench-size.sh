#!/bin/bash
# Image size. (a) Same content: the trees of two apps packed by
# cimg-build's closure (curl; python3 with its standard library), as .cimg
# with zstd and with xz, against an OCI image layout of the same tree made
# by umoci (a tar.gz layer, plus config and manifest) and against the
# tree as a tar.zst (zstd's default level, as OCI zstd layers are made).
# (b) The user's path: the .cimg of the closure against what
# `FROM debian:bookworm-slim` + `apt-get install` ships — a tar.gz of a
# debootstrap --variant=minbase bookworm rootfs with the same package.
#
# Output: bench/results/size.csv (content,format,bytes).
# Needs root, debootstrap and the Debian mirror (cached in WORK).
set -euo pipefail
cd "$(dirname "$0")/.."
WORK=${WORK:-/var/cache/cimg/bench-size}
mkdir -p "$WORK" bench/results
export SOURCE_DATE_EPOCH=1700000000
make -s build
csv=bench/results/size.csv
echo "content,format,bytes" >"$csv"

# The closures, and their trees.
bin/cimg-build -q /usr/bin/curl -o "$WORK/curl.cimg" 2>"$WORK/build.log"
libs=()
for so in /usr/lib/python3.11/lib-dynload/*.so; do libs+=(--lib "$so"); done
bin/cimg-build -q /usr/bin/python3.11 --name python3 --add /usr/lib/python3.11:/usr/lib/python3.11 "${libs[@]}" -o "$WORK/python3.cimg" 2>>"$WORK/build.log"
for app in curl python3; do
	t=$WORK/$app-tree
	rm -rf "$t" && unsquashfs -q -d "$t" "$WORK/$app.cimg" >/dev/null
	rm -rf "$t/.cimg" # cimg's own metadata, not the app's content
	entry=/usr/bin/curl
	[ $app = python3 ] && entry=/usr/bin/python3.11
	# cimg-build's default compression, then zstd (level 15) and xz named.
	for comp in default zstd xz; do
		flags=()
		[ $comp = default ] || flags=(--compression $comp)
		bin/cimg-build -q --name "$app" --arch "$(go env GOARCH)" --rootfs "$t" --entrypoint $entry "${flags[@]}" -o "$WORK/$app-$comp.cimg"
		echo "$app,cimg ($comp),$(stat -c %s "$WORK/$app-$comp.cimg")" >>"$csv"
	done
	rm -rf "$WORK/oci" "$WORK/bundle"
	umoci init --layout "$WORK/oci" && umoci new --image "$WORK/oci:$app"
	umoci unpack --image "$WORK/oci:$app" "$WORK/bundle" >/dev/null
	cp -a "$t/." "$WORK/bundle/rootfs/"
	umoci repack --image "$WORK/oci:$app" "$WORK/bundle"
	echo "$app,OCI layout (umoci tar.gz),$(du -sb "$WORK/oci" | cut -f1)" >>"$csv"
	tar -C "$t" --numeric-owner --sort=name -cf - . | zstd -q -c >"$WORK/$app.tar.zst"
	echo "$app,tar.zst,$(stat -c %s "$WORK/$app.tar.zst")" >>"$csv"
done

# The user's path.
if [ ! -x "$WORK/minbase/bin/sh" ]; then
	rm -rf "$WORK/minbase"
	debootstrap --variant=minbase bookworm "$WORK/minbase" http://deb.debian.org/debian >"$WORK/debootstrap.log"
fi
for app in curl python3; do
	pkg=$app
	[ $app = python3 ] && pkg=python3.11
	if [ ! -f "$WORK/minbase-$app.tar.gz" ]; then
		root=$WORK/minbase-$app
		rm -rf "$root" && cp -a "$WORK/minbase" "$root"
		cp /etc/resolv.conf "$root/etc/resolv.conf" 2>/dev/null || true
		chroot "$root" apt-get update -qq >/dev/null
		DEBIAN_FRONTEND=noninteractive chroot "$root" apt-get install -y -qq --no-install-recommends "$pkg" >/dev/null
		chroot "$root" apt-get clean
		rm -rf "$root"/var/lib/apt/lists/*
		tar -C "$root" --numeric-owner -czf "$WORK/minbase-$app.tar.gz" .
		rm -rf "$root"
	fi
	echo "$app,minbase + package (tar.gz),$(stat -c %s "$WORK/minbase-$app.tar.gz")" >>"$csv"
	echo "$app,cimg closure,$(stat -c %s "$WORK/$app.cimg")" >>"$csv"
done
