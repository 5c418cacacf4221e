#!/bin/bash
# yocto-check.sh OE_CORE_DIR BITBAKE_DIR: check yocto/meta-cimg with real
# bitbake and openembedded-core, offline.
#
#   OE_CORE_DIR  an openembedded-core tree of the wrynose branch
#   BITBAKE_DIR  a bitbake 2.18 tree
#
# (git archive of both; neither is a Debian package.) The checks, each
# reported PASS or FAIL, the script failing if any failed:
#
#   parse          bitbake -p: no error, and no warning that names the layer
#   show-layers    bitbake-layers show-layers lists cimg with its priority
#   gomod-list     yocto/meta-cimg/recipes-cimg/cimg/cimg-go-mods.inc is
#                  what scripts/yocto-gomods.sh writes from go.mod/go.sum
#   env-MACHINE    bitbake -e for qemuarm, qemuarm64, qemux86-64: cimg-run's
#                  GOARCH/GOARM from the tune, static (CGO_ENABLED=0, no
#                  -buildmode=pie), the example's pack command line and
#                  sysroot, the device image's apps
#   env-image-type bitbake -e of an image with IMAGE_FSTYPES += "cimg"
#   graph          bitbake -g: pack after install, deploy after pack, the
#                  device image's rootfs after the app's deploy,
#                  cimg-build-native staged for the pack
#   unpack         bitbake cimg-run -c unpack with DL_DIR seeded from the
#                  local Go module cache: the real gomod fetcher checks
#                  every sha256sum and lays out the module cache
#   check-layer    yocto-check-layer (README, SECURITY.md, parse, world,
#                  signatures with --with-software-layer-signature-check)
#
# A real build (bitbake hello-cimg) cannot run offline: it needs the
# toolchain's sources. The repository's Go test (yocto/yocto_test.go)
# runs the class's cimg-build command line against a cross sysroot.
#
# bitbake refuses root: run as root, the script makes an unprivileged user
# (YOCTO_CHECK_USER, default cimg-yocto) and runs bitbake as that user,
# niced, in YOCTO_CHECK_BUILDDIR (default /var/tmp/cimg-yocto-check),
# with the UTF-8 locale it wants (en_US.UTF-8, generated if missing). YOCTO_CHECK_SKIP="check-layer ..." skips checks
# (reported as SKIP).
set -u
if [ $# -ne 2 ]; then
	echo "usage: $0 OE_CORE_DIR BITBAKE_DIR" >&2
	exit 2
fi
oecore=$(readlink -f "$1")
bitbake=$(readlink -f "$2")
repo=$(readlink -f "$(dirname "$0")/..")
layer=$repo/yocto/meta-cimg
builddir=${YOCTO_CHECK_BUILDDIR:-/var/tmp/cimg-yocto-check}
user=${YOCTO_CHECK_USER:-cimg-yocto}
export LANG=C.UTF-8 LC_ALL=C.UTF-8 PYTHONDONTWRITEBYTECODE=1

for f in "$oecore/oe-init-build-env" "$oecore/meta/conf/layer.conf" "$bitbake/bin/bitbake" "$layer/conf/layer.conf"; do
	if [ ! -e "$f" ]; then
		echo "yocto-check.sh: $f is missing" >&2
		exit 2
	fi
done
if ! grep -q 'LAYERSERIES_CORENAMES = "wrynose"' "$oecore/meta/conf/layer.conf"; then
	echo "yocto-check.sh: $oecore is not openembedded-core wrynose" >&2
	exit 2
fi
if ! grep -q '__version__ = "2.18' "$bitbake/lib/bb/__init__.py"; then
	echo "yocto-check.sh: $bitbake is not bitbake 2.18" >&2
	exit 2
fi

# As root: the unprivileged user, its build directory, the tools bitbake's
# host sanity check wants, and DL_DIR seeded with the Go modules; then the
# checks as that user.
if [ "$(id -u)" = 0 ]; then
	id "$user" >/dev/null 2>&1 || useradd --system --create-home --shell /bin/bash "$user" || exit 1
	missing=""
	for t in chrpath cpio diffstat gawk lz4c; do
		command -v $t >/dev/null || missing="$missing $t"
	done
	if [ -n "$missing" ]; then
		echo "yocto-check.sh: installing bitbake's host tools:$missing"
		apt-get install -y chrpath cpio diffstat gawk lz4 >/dev/null || exit 1
	fi
	# bitbake wants en_US.UTF-8 itself (C.UTF-8 is not enough).
	if ! locale -a 2>/dev/null | grep -qi '^en_US\.utf-\{0,1\}8$'; then
		echo "yocto-check.sh: generating the en_US.UTF-8 locale bitbake wants"
		command -v localedef >/dev/null || apt-get install -y locales >/dev/null || exit 1
		localedef -i en_US -f UTF-8 en_US.UTF-8 || exit 1
	fi
	mkdir -p "$builddir/downloads"
	gomodcache=$(PATH=$PATH:/usr/local/go/bin go env GOMODCACHE 2>/dev/null)
	# The gomod fetcher's download name: MODULE with / as ., @VERSION.zip
	# (or .mod); the cache escapes capitals as !x.
	sed -n 's|^ *gomod://\([^;]*\);version=\([^;]*\);\(mod=1;\)\{0,1\}sha256sum=.*|\1 \2 \3|p' \
		"$layer/recipes-cimg/cimg/cimg-go-mods.inc" | while read -r mod ver modonly; do
		ext=zip
		[ -z "$modonly" ] || ext=mod
		esc=$(printf '%s' "$mod" | sed 's/[A-Z]/!\L&/g')
		src=$gomodcache/cache/download/$esc/@v/$ver.$ext
		dst=$builddir/downloads/$(printf '%s' "$mod" | tr / .)@$ver.$ext
		[ -e "$dst" ] || cp "$src" "$dst" 2>/dev/null || echo "yocto-check.sh: $src is not in the module cache (go mod download); the unpack check will fail" >&2
	done
	# gomod-list needs this (root's) Go module cache: checked here.
	mkdir -p "$builddir/logs"
	"$repo/scripts/yocto-gomods.sh" --check >"$builddir/logs/gomod-list.log" 2>&1
	echo $? >"$builddir/logs/gomod-list.rc"
	chown -R "$user:" "$builddir"
	exec runuser -u "$user" -- env LANG=en_US.UTF-8 LC_ALL=en_US.UTF-8 PYTHONDONTWRITEBYTECODE=1 \
		YOCTO_CHECK_BUILDDIR="$builddir" YOCTO_CHECK_SKIP="${YOCTO_CHECK_SKIP:-}" \
		PATH=/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin \
		nice -n 19 bash "$0" "$oecore" "$bitbake"
fi

export LANG=en_US.UTF-8 LC_ALL=en_US.UTF-8
mkdir -p "$builddir/conf"
set +u
# shellcheck disable=SC1091
if ! . "$oecore/oe-init-build-env" "$builddir" "$bitbake" >/dev/null; then
	echo "yocto-check.sh: oe-init-build-env failed" >&2
	exit 1
fi
set -u
cd "$builddir" || exit 1
cat >conf/local.conf <<EOF
# Written by cimg's scripts/yocto-check.sh.
MACHINE ??= "qemux86-64"
DISTRO = "nodistro"
BB_NO_NETWORK = "1"
DL_DIR = "$builddir/downloads"
SSTATE_DIR = "$builddir/sstate-cache"
TMPDIR = "$builddir/tmp"
PACKAGE_CLASSES = "package_ipk"
CONF_VERSION = "2"
EOF
cat >conf/bblayers.conf <<EOF
# Written by cimg's scripts/yocto-check.sh.
BBPATH = "\${TOPDIR}"
BBFILES ?= ""
BBLAYERS = "$oecore/meta $layer"
EOF
# An image with the cimg image type, for the image-type check only (the
# layer itself sets no IMAGE_FSTYPES).
cat >conf/cimg-image-type.conf <<EOF
IMAGE_CLASSES += "image_types_cimg"
IMAGE_FSTYPES += "cimg"
EOF

failed=""
results=""
log=$builddir/logs
mkdir -p "$log"
result() { # NAME PASS|FAIL|SKIP DETAIL
	results="$results$(printf '%-16s %-4s %s' "$1" "$2" "$3")
"
	printf '=== %-16s %-4s %s\n' "$1" "$2" "$3"
	[ "$2" != FAIL ] || failed="$failed $1"
}
skip() { case " ${YOCTO_CHECK_SKIP:-} " in *" $1 "*) result "$1" SKIP "YOCTO_CHECK_SKIP"; return 0 ;; esac; return 1; }
# want FILE LABEL REGEX: the file has a line matching REGEX, else say so
want() {
	if grep -Eq -- "$3" "$1"; then
		return 0
	fi
	echo "    $2: no line matching /$3/ in $1" >&2
	return 1
}

echo "bitbake $(bitbake --version | sed -n 's/.*version //p'), openembedded-core $(sed -n 's/^LAYERSERIES_CORENAMES = //p' "$oecore/meta/conf/layer.conf"), layer $layer"

# parse
if ! skip parse; then
	bitbake -p >"$log/parse.log" 2>&1
	rc=$?
	errors=$(grep -c '^ERROR' "$log/parse.log")
	warnings=$(grep '^WARNING' "$log/parse.log" | grep -c -e meta-cimg -e cimg)
	grep -E '^(ERROR|WARNING)' "$log/parse.log" | sed 's/^/    /'
	tail -n 3 "$log/parse.log" | sed 's/^/    /'
	if [ $rc = 0 ] && [ "$errors" = 0 ] && [ "$warnings" = 0 ]; then
		result parse PASS "bitbake -p: exit 0, 0 errors, 0 warnings from meta-cimg"
	else
		result parse FAIL "bitbake -p: exit $rc, $errors errors, $warnings warnings from meta-cimg ($log/parse.log)"
	fi
fi

# show-layers
if ! skip show-layers; then
	bitbake-layers show-layers >"$log/show-layers.log" 2>&1
	rc=$?
	sed 's/^/    /' "$log/show-layers.log"
	if [ $rc = 0 ] && grep -Eq "^cimg +$layer +6" "$log/show-layers.log"; then
		result show-layers PASS "cimg listed, priority 6"
	else
		result show-layers FAIL "bitbake-layers show-layers: exit $rc ($log/show-layers.log)"
	fi
fi

# gomod-list (run as root above, where the Go module cache is)
if ! skip gomod-list; then
	if [ "$(cat "$log/gomod-list.rc" 2>/dev/null)" = 0 ]; then
		result gomod-list PASS "$(tail -n 1 "$log/gomod-list.log")"
	else
		sed 's/^/    /' "$log/gomod-list.log" 2>/dev/null
		result gomod-list FAIL "cimg-go-mods.inc is out of date, or the check could not run ($log/gomod-list.log)"
	fi
fi

# env-MACHINE: bitbake -e of the tools, the example and the device image
envcheck() { # MACHINE GOARCH GOARM
	m=$1
	skip "env-$m" && return
	ok=1
	for r in cimg-run hello-cimg cimg-device-image cimg-build-native; do
		if ! MACHINE=$m BB_ENV_PASSTHROUGH_ADDITIONS="MACHINE" bitbake -e $r >"$log/env-$m-$r.log" 2>&1; then
			echo "    bitbake -e $r failed:" >&2
			grep '^ERROR' "$log/env-$m-$r.log" | sed 's/^/    /' >&2
			ok=0
		fi
	done
	e=$log/env-$m-cimg-run.log
	want "$e" "cimg-run GOARCH" "^export GOARCH=\"$2\"\$" || ok=0
	if [ -n "$3" ]; then
		want "$e" "cimg-run GOARM" "^export GOARM=\"$3\"\$" || ok=0
	elif grep -q '^export GOARM=' "$e"; then
		echo "    cimg-run: GOARM exported on a non-ARM machine" >&2
		ok=0
	fi
	want "$e" "cimg-run static" '^export CGO_ENABLED="0"$' || ok=0
	want "$e" "cimg-run no network" '^export GOPROXY="off"$' || ok=0
	if grep -E '^export GOBUILDFLAGS=' "$e" | grep -q -- '-buildmode=pie\|-linkshared'; then
		echo "    cimg-run: GOBUILDFLAGS would make a dynamic binary: $(grep '^export GOBUILDFLAGS=' "$e")" >&2
		ok=0
	fi
	want "$e" "cimg-run programs" '^GO_INSTALL="cimg.dev/cimg/cmd/cimg-run cimg.dev/cimg/cmd/cimg-fetch"$' || ok=0
	want "$e" "cimg-run gomod SRC_URI" '^SRC_URI=".*gomod://github.com/klauspost/compress;version=v[^;]*;sha256sum=[0-9a-f]{64}' || ok=0
	want "$e" "cimg-run units" '^SYSTEMD_SERVICE:cimg-run="cimg-boot.service cimg-factory.service"$' || ok=0
	e=$log/env-$m-hello-cimg.log
	want "$e" "hello-cimg DEPENDS" '^DEPENDS=".*cimg-build-native' || ok=0
	want "$e" "hello-cimg CIMG_COMMAND" '^CIMG_COMMAND="/usr/bin/hello-cimg"$' || ok=0
	want "$e" "hello-cimg CIMG_SYSROOT" "^CIMG_SYSROOT=\"$builddir/tmp/work/.*/hello-cimg/1.0/recipe-sysroot\"\$" || ok=0
	want "$e" "hello-cimg CIMG_FILE" '^CIMG_FILE="hello-cimg-1.0-.*\.cimg"$' || ok=0
	want "$e" "hello-cimg pack command" '--sysroot "\$\(realpath -s --relative-to=\. .*/recipe-sysroot\)"' || ok=0
	want "$e" "hello-cimg pack epoch" '--source-date-epoch "[0-9]+"' || ok=0
	want "$e" "hello-cimg manifest" '^CIMG_MANIFEST=""$' || ok=0
	want "$e" "hello-cimg deploy dir" "^DEPLOY_DIR_IMAGE=\"$builddir/tmp/deploy/images/$m\"\$" || ok=0
	want "$e" "hello-cimg deploy in sstate" '^SSTATETASKS=".*do_cimg_deploy' || ok=0
	e=$log/env-$m-cimg-device-image.log
	want "$e" "device image apps" '^CIMG_APPS="hello-cimg:autostart"$' || ok=0
	want "$e" "device image installs cimg-run" '^IMAGE_INSTALL=".* cimg-run"$' || ok=0
	want "$e" "device image postprocess" '^ROOTFS_POSTPROCESS_COMMAND=".*cimg_apps_install' || ok=0
	e=$log/env-$m-cimg-build-native.log
	want "$e" "cimg-build-native program" '^GO_INSTALL="cimg.dev/cimg/cmd/cimg-build"$' || ok=0
	if [ $ok = 1 ]; then
		result "env-$m" PASS "GOARCH=$2${3:+ GOARM=$3}, static, pack line, apps ($log/env-$m-*.log)"
	else
		result "env-$m" FAIL "see the lines above ($log/env-$m-*.log)"
	fi
}
envcheck qemuarm arm 7
envcheck qemuarm64 arm64 ""
envcheck qemux86-64 amd64 ""

# env-image-type
if ! skip env-image-type; then
	e=$log/env-image-type.log
	ok=1
	bitbake -R conf/cimg-image-type.conf -e core-image-minimal >"$e" 2>&1 || {
		grep '^ERROR' "$e" | sed 's/^/    /'
		ok=0
	}
	want "$e" "IMAGE_FSTYPES" '^IMAGE_FSTYPES=".*cimg' || ok=0
	sed -n '/^IMAGE_CMD:cimg="/,/[^\\]"$/p' "$e" >"$e.cmd"
	want "$e.cmd" "IMAGE_CMD:cimg" 'cimg-build --quiet' || ok=0
	want "$e.cmd" "image pack rootfs" '--rootfs [^ ]*/rootfs ' || ok=0
	want "$e.cmd" "image pack owners" '--keep-owners' || ok=0
	want "$e.cmd" "image pack epoch" '--source-date-epoch \\?"[0-9]+' || ok=0
	mkdir -p "$log/graph-image-type" && cd "$log/graph-image-type" || exit 1
	if bitbake -R "$builddir/conf/cimg-image-type.conf" -g core-image-minimal >"$log/graph-image-type.log" 2>&1; then
		for edge in '"core-image-minimal.do_image_cimg" -> "cimg-build-native.do_populate_sysroot"' \
			'"core-image-minimal.do_image_complete" -> "core-image-minimal.do_image_cimg"'; do
			if grep -Fq "$edge" task-depends.dot; then
				echo "    $edge"
			else
				echo "    missing: $edge" >&2
				ok=0
			fi
		done
	else
		grep '^ERROR' "$log/graph-image-type.log" | sed 's/^/    /'
		ok=0
	fi
	cd "$builddir" || exit 1
	if [ $ok = 1 ]; then
		result env-image-type PASS "IMAGE_FSTYPES += cimg gives do_image_cimg with cimg-build-native"
	else
		result env-image-type FAIL "($e)"
	fi
fi

# graph
if ! skip graph; then
	ok=1
	mkdir -p "$log/graph" && cd "$log/graph" || exit 1
	if bitbake -g cimg-device-image >"$log/graph.log" 2>&1; then
		g=$log/graph/task-depends.dot
		edge() { # FROM TO
			if grep -Fq "\"$1\" -> \"$2\"" "$g"; then
				echo "    $1 -> $2"
			else
				echo "    missing: $1 -> $2" >&2
				ok=0
			fi
		}
		edge hello-cimg.do_cimg_pack hello-cimg.do_install
		edge hello-cimg.do_cimg_deploy hello-cimg.do_cimg_pack
		edge cimg-device-image.do_rootfs hello-cimg.do_cimg_deploy
		edge hello-cimg.do_prepare_recipe_sysroot cimg-build-native.do_populate_sysroot
		edge hello-cimg.do_cimg_pack glibc.do_populate_lic
		edge cimg-build-native.do_populate_sysroot cimg-build-native.do_install
		edge cimg-build-native.do_prepare_recipe_sysroot go-binary-native.do_populate_sysroot
		edge cimg-device-image.do_rootfs cimg-run.do_package_write_ipk
	else
		grep '^ERROR' "$log/graph.log" | sed 's/^/    /'
		ok=0
	fi
	# The example alone: its deploy is part of its build.
	mkdir -p "$log/graph-hello" && cd "$log/graph-hello" || exit 1
	if bitbake -g hello-cimg >"$log/graph-hello.log" 2>&1; then
		g=$log/graph-hello/task-depends.dot
		edge hello-cimg.do_build hello-cimg.do_cimg_deploy
		edge hello-cimg.do_build hello-cimg.do_cimg_pack
	else
		grep '^ERROR' "$log/graph-hello.log" | sed 's/^/    /'
		ok=0
	fi
	cd "$builddir" || exit 1
	if [ $ok = 1 ]; then
		result graph PASS "task wiring as listed ($log/graph/task-depends.dot)"
	else
		result graph FAIL "($log/graph.log)"
	fi
fi

# unpack: the gomod fetcher, offline, from DL_DIR
if ! skip unpack; then
	if bitbake cimg-run -c unpack >"$log/unpack.log" 2>&1; then
		w=$(bitbake-getvar -r cimg-run --value GOMODCACHE 2>/dev/null | tail -n 1)
		s=$(bitbake-getvar -r cimg-run --value S 2>/dev/null | tail -n 1)
		n=$(find "$w/cache/download" -name '*.zip' 2>/dev/null | wc -l)
		m=$(grep -c 'gomod://' "$layer/recipes-cimg/cimg/cimg-go-mods.inc")
		if [ "$n" = "$m" ] && [ -f "$s/src/cimg.dev/cimg/go.mod" ] && [ -d "$s/src/cimg.dev/cimg/cmd/cimg-run" ]; then
			result unpack PASS "gomod fetcher verified and unpacked $n modules into $w; sources in $s/src/cimg.dev/cimg"
		else
			result unpack FAIL "unpacked $n of $m modules, or no $s/src/cimg.dev/cimg/{go.mod,cmd/cimg-run}"
		fi
	else
		grep -E '^(ERROR|WARNING)' "$log/unpack.log" | sed 's/^/    /'
		result unpack FAIL "bitbake cimg-run -c unpack ($log/unpack.log)"
	fi
fi

# check-layer
if ! skip check-layer; then
	# It adds the layer itself, after taking the signatures without it.
	cp conf/bblayers.conf conf/bblayers.conf.with-cimg
	sed -i "s| $layer\"|\"|" conf/bblayers.conf
	yocto-check-layer --with-software-layer-signature-check --output-log "$log/check-layer.log" "$layer" >"$log/check-layer.out" 2>&1
	rc=$?
	mv conf/bblayers.conf.with-cimg conf/bblayers.conf
	# each test's name, then its result on the next line
	grep -E 'INFO: (test_|setUpClass)|INFO: +\.\.\. |INFO: (Ran|OK|FAILED)|ERROR:' "$log/check-layer.out" |
		sed 's/^INFO: *//' | paste -d' ' - - | sed 's/^/    /'
	grep -A4 'Summary of results' "$log/check-layer.out" | sed 's/^/    /'
	if [ $rc = 0 ] && grep -Eq "INFO: meta-cimg \.\.\. PASS" "$log/check-layer.out"; then
		result check-layer PASS "yocto-check-layer ($log/check-layer.log)"
	else
		result check-layer FAIL "yocto-check-layer: exit $rc ($log/check-layer.out)"
	fi
fi

echo
echo "--- summary"
printf '%s' "$results"
if [ -n "$failed" ]; then
	echo "FAILED:$failed"
	exit 1
fi
echo "all checks passed"
