#!/bin/sh
# Builds the C encoders that cimg-build links with the cimg_clibs build
# tag (internal/squashfs/xz_liblzma.go, gzip_libdeflate.go,
# lz4_liblz4.go): liblzma and liblz4, the reference encoders mksquashfs
# links, and libdeflate for gzip (why: gzip_libdeflate.go), static, from
# the exact upstream sources Debian 12 ships, fetched from Debian's
# archive and checked against the SHA-256 sums pinned here. Pinned
# sources, not the host's library: the same cimg-build source then writes
# the same image bytes on every host.
#
# Usage: scripts/clibs.sh [DIR]   (default .clibs; DIR/include, DIR/lib)
# Nothing fetched is committed: DIR is ignored by git (.gitignore).
set -eu

DIR=${1:-.clibs}
POOL=${DEBIAN_POOL:-http://deb.debian.org/debian/pool/main}
XZ_TAR=xz-utils_5.4.1.orig.tar.xz
XZ_SHA=5d9827aa1875b21c288f78864bb26d2650b436ea8d2cad364e4921eb6266a5a5
DEFLATE_TAR=libdeflate_1.14.orig.tar.gz
DEFLATE_SHA=89e7df898c37c3427b0f39aadcf733731321a278771d20fc553f92da8d4808ac
LZ4_TAR=lz4_1.9.4.orig.tar.gz
LZ4_SHA=0b0e3aa07c8c063ddf40b082bdf7e37a1562bda40a0ff5272957f3e987e0e54b
STAMP="$XZ_SHA $DEFLATE_SHA $LZ4_SHA"

if [ -f "$DIR/stamp" ] && [ "$(cat "$DIR/stamp")" = "$STAMP" ] &&
	[ -f "$DIR/lib/liblzma.a" ] && [ -f "$DIR/lib/libdeflate.a" ] && [ -f "$DIR/lib/liblz4.a" ]; then
	exit 0
fi
for tool in curl cc make; do
	command -v $tool >/dev/null || { echo "clibs: $tool is needed (apt-get install curl gcc make)" >&2; exit 1; }
done

mkdir -p "$DIR"
DIR=$(cd "$DIR" && pwd)
rm -rf "$DIR/src" "$DIR/include" "$DIR/lib" "$DIR/stamp"
mkdir -p "$DIR/src"

fetch() { # NAME TARBALL SHA256
	url="$POOL/$1/$2"
	curl -sSfL --retry 3 -o "$DIR/src/$2" "$url" || { echo "clibs: cannot fetch $url" >&2; exit 1; }
	echo "$3  $DIR/src/$2" | sha256sum -c --quiet - || {
		echo "clibs: $url does not have the pinned SHA-256 $3: refusing it" >&2; exit 1; }
}
fetch x/xz-utils "$XZ_TAR" "$XZ_SHA"
fetch libd/libdeflate "$DEFLATE_TAR" "$DEFLATE_SHA"
fetch l/lz4 "$LZ4_TAR" "$LZ4_SHA"

# Quiet unless something fails: the build's log is shown then.
run() { # LOG CMD...
	log=$1; shift
	"$@" >"$log" 2>&1 || { cat "$log" >&2; echo "clibs: failed: $*" >&2; exit 1; }
}
jobs=$(nproc 2>/dev/null || echo 2)

tar -C "$DIR/src" -xf "$DIR/src/$XZ_TAR"
(cd "$DIR/src/xz-5.4.1" &&
	run ../xz.log ./configure --prefix="$DIR" --disable-shared --enable-static --disable-threads \
		--disable-xz --disable-xzdec --disable-lzmadec --disable-lzmainfo --disable-lzma-links \
		--disable-scripts --disable-doc --disable-nls CFLAGS="-O2 -fPIC" &&
	run ../xz.log make -j"$jobs" -C src/liblzma &&
	run ../xz.log make -C src/liblzma install)

# libdeflate's Makefile puts its own -O2 and warnings before CFLAGS.
tar -C "$DIR/src" -xf "$DIR/src/$DEFLATE_TAR"
(cd "$DIR/src/libdeflate-1.14" &&
	run ../deflate.log make -j"$jobs" libdeflate.a CFLAGS="-fPIC" &&
	cp libdeflate.a "$DIR/lib/" && cp libdeflate.h "$DIR/include/")

tar -C "$DIR/src" -xf "$DIR/src/$LZ4_TAR"
(cd "$DIR/src/lz4-1.9.4/lib" &&
	run ../../lz4.log make -j"$jobs" liblz4.a CFLAGS="-O3 -fPIC" &&
	cp liblz4.a "$DIR/lib/" && cp lz4.h lz4hc.h "$DIR/include/")

rm -rf "$DIR/src" "$DIR/share" "$DIR/lib/pkgconfig" "$DIR/lib"/*.la
echo "$STAMP" > "$DIR/stamp"
echo "clibs: liblzma 5.4.1, libdeflate 1.14 and liblz4 1.9.4 (static) in $DIR" >&2
