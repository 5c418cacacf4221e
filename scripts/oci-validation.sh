#!/bin/sh
# Runs opencontainers/runtime-tools' validation suite (TAP programs driven
# by $RUNTIME) against OCI runtimes and prints pass/fail/skip counts per
# runtime and per test. The suite is built from a pinned module version
# through the Go module proxy (nothing of it is kept in this repository).
# Usage: scripts/oci-validation.sh [RUNTIME...]   (default: bin/cimg-oci crun runc)
# TESTS="killsig ..." runs only those programs.
# Needs root. crun 1.8 refuses this kind of hybrid-cgroup host unless it
# runs with the cgroup2 mount detached in a private mount namespace: it is
# wrapped so (the wrapper is what RUNTIME names).
set -u
VERSION=v0.9.1-0.20250303011046-260e151b8552
GO=${GO:-go}
WORK=${WORK:-$(pwd)/bin/oci-validation}
export PATH="$PATH:/usr/local/go/bin" CGO_ENABLED=0
mkdir -p "$WORK/bin" "$WORK/logs"
SRC=$("$GO" mod download -json "github.com/opencontainers/runtime-tools@$VERSION" | sed -n 's/.*"Dir": "\(.*\)".*/\1/p')
[ -d "$SRC" ] || { echo "cannot download runtime-tools $VERSION" >&2; exit 1; }
TESTS=${TESTS:-$(cd "$SRC/validation" && ls -d */ | tr -d / | grep -v '^util$')}
if [ ! -f "$WORK/built-$VERSION" ]; then
	rm -rf "$WORK/src" && cp -r "$SRC" "$WORK/src" && chmod -R u+w "$WORK/src"
	# Its vendor directory is not the whole of it: modules from the proxy.
	rm -rf "$WORK/src/vendor"
	(cd "$WORK/src" && "$GO" mod download && "$GO" build -mod=mod -o "$WORK/bin/" ./validation/... &&
		"$GO" build -mod=mod -o runtimetest ./cmd/runtimetest) || exit 1
	touch "$WORK/built-$VERSION"
fi
cat > "$WORK/crun" <<'W'
#!/bin/sh
exec unshare -m sh -c 'umount -l /sys/fs/cgroup/unified 2>/dev/null; exec crun "$@"' crun "$@"
W
chmod +x "$WORK/crun"
[ $# -gt 0 ] || set -- "$(pwd)/bin/cimg-oci" crun runc
for rt in "$@"; do
	r=$rt
	case $rt in */*) r=$(cd "$(dirname "$rt")" && pwd)/$(basename "$rt") ;; esac
	[ "$rt" = crun ] && r="$WORK/crun"
	name=$(basename "$rt")
	pass=0 fail=0 skip=0
	: > "$WORK/logs/$name.summary"
	for t in $TESTS; do
		[ -x "$WORK/bin/$t" ] || continue
		# Each test untars the rootfs from its working directory.
		out=$(cd "$WORK/src" && RUNTIME=$r timeout 120 "$WORK/bin/$t" 2>&1)
		rc=$?
		echo "$out" > "$WORK/logs/$name.$t.tap"
		p=$(echo "$out" | grep -c '^ok ' ) ; s=$(echo "$out" | grep -c '^ok .*# *SKIP')
		f=$(echo "$out" | grep -c '^not ok')
		p=$((p - s))
		# A program with no TAP line is one result, its exit status: the
		# *_fail tests end so when the runtime refused the config, as
		# they want.
		if [ $((p + s + f)) -eq 0 ]; then
			if [ $rc -eq 0 ]; then p=1; else f=1; fi
		fi
		pass=$((pass + p)) fail=$((fail + f)) skip=$((skip + s))
		echo "$t pass=$p fail=$f skip=$s" >> "$WORK/logs/$name.summary"
	done
	echo "$name: pass=$pass fail=$fail skip=$skip (per test: $WORK/logs/$name.summary)"
done
