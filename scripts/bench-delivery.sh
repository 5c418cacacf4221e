#!/bin/bash
# Delivery (issue 13, item 4): time and bytes on the wire to get an app
# onto the device from a registry, for the same app (curl) three ways.
#
# A local registry (Debian's docker-registry, the CNCF distribution
# registry) is started here on 127.0.0.1, a free port, with its storage
# under WORK, TLS from a CA made here (handed to every client as a file:
# cimg-run --ca, skopeo --src-cert-dir; nothing goes into the system's
# trust store) and no auth. Into it go:
#   bench/curl:1          curl's closure as a .cimg (`cimg-build
#                         /usr/bin/curl`, as bench-size.sh makes it),
#                         pushed by `cimg-build push`: one manifest, a
#                         small config, the .cimg as the one layer.
#   bench/curl-minbase:1  the user's path: debootstrap --variant=minbase
#                         bookworm + apt-get install curl, the tarball
#                         bench-size.sh makes (its WORK cache is reused,
#                         made here the same way when missing), as an OCI
#                         image by umoci (one tar.gz layer), pushed by
#                         skopeo copy.
#   bench/curl-closure:1  exactly the .cimg's files (unsquashfs; without
#                         /.cimg, cimg's own metadata, as bench-size.sh
#                         leaves it out) as an OCI image by umoci, pushed
#                         by skopeo copy.
# Per round, the three alternating, each into a fresh, empty destination
# (made and removed untimed):
#   cimg-run install --store S --state-dir D --ca CA oci://ADDR/bench/curl:1
#     (cimg-fetch downloads the .cimg into the store; install verifies the
#     whole image against its root hash and admits it)
#   skopeo copy --src-cert-dir C docker://ADDR/bench/IMAGE:1
#     containers-storage:[overlay@ROOT+RUNROOT]ADDR/bench/IMAGE:1
#     (what podman pull does: the layers fetched, checked, unpacked)
# Time: wall time of the command (bash's clock around /usr/bin/time, which
# also gives the peak RSS). Bytes: counted at the registry: the sum of
# http.response.written over its "response completed" log lines (JSON)
# for the requests the command made — response bodies (manifests,
# configs, blobs), not HTTP headers or TLS framing; also the number of
# requests.
# Goals: cimg bytes ≤ 0.3× the minbase image's; cimg time ≤ 1.0× each
# skopeo pull.
#
# DELIVERY_RUNS (default 10) timed rounds after one warm-up round. Everything
# started here (the registry, containers-storage's mounts, the stores,
# cimg-run's mounts and loop devices: gc) is stopped and removed at the
# end, also when a step fails, and checked.
#
# Output: bench/results/delivery.csv (tool,run,ms,bytes,requests,maxrss_kib,cpu_ms)
# and delivery-meta.csv (key,value).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/deps.sh skopeo:skopeo umoci:umoci unsquashfs:squashfs-tools docker-registry:docker-registry \
	openssl:openssl debootstrap:debootstrap /usr/bin/time:time curl:curl python3:python3
RUNS=${DELIVERY_RUNS:-10}
# On disk, as a device's store would be; not the other scripts' dirs.
W=${DELIVERY_WORK:-/var/tmp/cimg-bench-delivery}
# bench-size.sh's cache: the debootstrap rootfs and the minbase tarball.
WORK=${WORK:-/var/cache/cimg/bench-size}
export SOURCE_DATE_EPOCH=1700000000
r=bench/results
rm -rf "$W" && mkdir -p "$W" "$WORK" $r
mkdir -m 0700 "$W/state"
CIMG=bin/cimg-run
load_before=$(cut -d' ' -f1-3 /proc/loadavg)
# skopeo keeps a blob-info cache in /var/lib/containers/cache (root's; no
# flag moves it): removed at the end if this run made it.
made_containers=0
[ -e /var/lib/containers ] || made_containers=1
regpid=

cs_clean() { # unmounts and removes the containers-storage root
	mountpoint -q "$W/cs/overlay" && umount "$W/cs/overlay"
	rm -rf "$W/cs" "$W/cs-run"
}
cleanup() {
	local left=0
	set +e
	if [ -n "$regpid" ]; then
		kill "$regpid" 2>/dev/null
		wait "$regpid" 2>/dev/null
	fi
	# gc names a store of ours: the default one is the host's.
	[ -d "$W/state" ] && $CIMG gc --store "$W/store" --state-dir "$W/state" >/dev/null
	cs_clean
	[ $made_containers = 1 ] && rm -rf /var/lib/containers
	if [ -n "$regpid" ] && kill -0 "$regpid" 2>/dev/null; then
		echo "bench-delivery: the registry ($regpid) is still there" >&2
		left=1
	fi
	if grep -F " $W" /proc/self/mountinfo >&2; then
		echo "bench-delivery: mounts under $W are still there" >&2
		left=1
	fi
	if losetup -a | grep -F "$W" >&2; then
		echo "bench-delivery: loop devices of images under $W are still there" >&2
		left=1
	fi
	if [ $left = 0 ]; then
		rm -rf "$W"
	else
		echo "bench-delivery: left $W in place" >&2
	fi
	return $left
}
trap 'cleanup || exit 1' EXIT

make -s build

# (a) The .cimg: curl's closure, the command bench-size.sh uses.
bin/cimg-build -q /usr/bin/curl -o "$W/curl.cimg" 2>"$W/build.log"

# (b) The user's path: bench-size.sh's minbase + curl tarball, made the
# same way (same cache) if that script has not run here yet.
if [ ! -f "$WORK/minbase-curl.tar.gz" ]; then
	if [ ! -x "$WORK/minbase/bin/sh" ]; then
		rm -rf "$WORK/minbase"
		debootstrap --variant=minbase bookworm "$WORK/minbase" http://deb.debian.org/debian >"$WORK/debootstrap.log"
	fi
	root=$WORK/minbase-curl
	rm -rf "$root" && cp -a "$WORK/minbase" "$root"
	cp /etc/resolv.conf "$root/etc/resolv.conf" 2>/dev/null || true
	chroot "$root" apt-get update -qq >/dev/null
	DEBIAN_FRONTEND=noninteractive chroot "$root" apt-get install -y -qq --no-install-recommends curl >/dev/null
	chroot "$root" apt-get clean
	rm -rf "$root"/var/lib/apt/lists/*
	tar -C "$root" --numeric-owner -czf "$WORK/minbase-curl.tar.gz" .
	rm -rf "$root"
fi

# OCI images as users make them without a daemon: umoci (as bench-size.sh
# and bench-store.sh do), one tar.gz layer, curl as the entrypoint.
oci_image() { # NAME: the layout $W/oci-NAME from the tree in $W/bundle/rootfs
	umoci repack --image "$W/oci-$1:$1" "$W/bundle"
	umoci config --image "$W/oci-$1:$1" --config.entrypoint /usr/bin/curl
	umoci gc --layout "$W/oci-$1"
	rm -rf "$W/bundle"
}
umoci init --layout "$W/oci-minbase" && umoci new --image "$W/oci-minbase:minbase"
umoci unpack --image "$W/oci-minbase:minbase" "$W/bundle" >/dev/null
tar -C "$W/bundle/rootfs" --numeric-owner -xzf "$WORK/minbase-curl.tar.gz"
oci_image minbase
umoci init --layout "$W/oci-closure" && umoci new --image "$W/oci-closure:closure"
umoci unpack --image "$W/oci-closure:closure" "$W/bundle" >/dev/null
rmdir "$W/bundle/rootfs" && unsquashfs -q -d "$W/bundle/rootfs" "$W/curl.cimg" >/dev/null
rm -rf "$W/bundle/rootfs/.cimg"
oci_image closure

# The registry: TLS with a CA made here, for every client alike.
tls=$W/tls
mkdir -p "$tls/certs.d"
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 1 -subj "/CN=cimg bench CA" \
	-addext basicConstraints=critical,CA:TRUE -addext keyUsage=critical,keyCertSign \
	-keyout "$tls/ca.key" -out "$tls/ca.pem" 2>/dev/null
openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj /CN=127.0.0.1 \
	-keyout "$tls/key.pem" -out "$tls/srv.csr" 2>/dev/null
printf 'subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth\n' >"$tls/ext"
openssl x509 -req -in "$tls/srv.csr" -CA "$tls/ca.pem" -CAkey "$tls/ca.key" -CAcreateserial -days 1 \
	-extfile "$tls/ext" -out "$tls/cert.pem" 2>/dev/null
cp "$tls/ca.pem" "$tls/certs.d/ca.crt" # skopeo's cert dir takes *.crt as CAs
port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
addr=127.0.0.1:$port
# JSON log at info level: one "response completed" line per request, with
# the body bytes written (http.response.written).
cat >"$W/registry.yml" <<-EOF
	version: 0.1
	log:
	  level: info
	  formatter: json
	  accesslog:
	    disabled: true
	storage:
	  filesystem:
	    rootdirectory: $W/registry
	http:
	  addr: $addr
	  secret: bench-delivery
	  tls:
	    certificate: $tls/cert.pem
	    key: $tls/key.pem
EOF
log=$W/registry.log
/usr/bin/docker-registry serve "$W/registry.yml" >"$log" 2>&1 &
regpid=$!
for ((i = 0; ; i++)); do
	curl -sf --cacert "$tls/ca.pem" "https://$addr/v2/" >/dev/null && break
	if ((i >= 200)) || ! kill -0 $regpid 2>/dev/null; then
		echo "bench-delivery: the registry does not answer on $addr" >&2
		tail -20 "$log" >&2
		exit 1
	fi
	sleep 0.05
done

bin/cimg-build push --ca "$tls/ca.pem" "$W/curl.cimg" "$addr/bench/curl:1" >/dev/null
for i in minbase closure; do
	skopeo copy -q --dest-cert-dir "$tls/certs.d" "oci:$W/oci-$i:$i" "docker://$addr/bench/curl-$i:1"
done

now() { echo $((${EPOCHREALTIME/./} * 1000)); } # CLOCK_REALTIME, ns (µs resolution)
ms() { awk -v a="$1" -v b="$2" 'BEGIN {printf "%.3f", (b - a) / 1e6}'; }
# wire FROM: "BYTES REQUESTS" of the responses logged from byte FROM of the
# log on.
wire() {
	python3 - "$log" "$1" <<-'PY'
		import json, sys
		f = open(sys.argv[1], "rb")
		f.seek(int(sys.argv[2]))
		n = b = 0
		for line in f:
		    try:
		        e = json.loads(line)
		    except ValueError:
		        continue
		    if e.get("msg") == "response completed":
		        n += 1
		        b += int(e.get("http.response.written", 0))
		print(b, n)
	PY
}
layer() { # the compressed layer's size, from the image's manifest
	python3 - "$W/oci-$1" <<-'PY'
		import json, sys
		d = sys.argv[1]
		m = json.load(open(d + "/index.json"))["manifests"][0]["digest"].replace(":", "/")
		print(sum(l["size"] for l in json.load(open(d + "/blobs/" + m))["layers"]))
	PY
}
csv=$W/delivery.csv
echo "tool,run,ms,bytes,requests,maxrss_kib,cpu_ms" >"$csv"
# timed TOOL CMD...: wall time, peak RSS, CPU time (user + system) and the
# registry's bytes of one pull.
timed() {
	local tool=$1 t0 t1 off b n rss u s
	shift
	off=$(stat -c %s "$log")
	t0=$(now)
	/usr/bin/time -f "%M %U %S" -o "$W/rss" "$@" >/dev/null 2>"$W/err" || {
		cat "$W/err" >&2
		return 1
	}
	t1=$(now)
	# The registry logs a response when its handler returns, which may be
	# just after the client has its last byte.
	sleep 0.2
	read -r b n < <(wire "$off")
	read -r rss u s < <(tail -1 "$W/rss")
	[ "$run" = 0 ] || echo "$tool,$run,$(ms "$t0" "$t1"),$b,$n,$rss,$(awk -v u="$u" -v s="$s" 'BEGIN {printf "%.0f", (u + s) * 1000}')" >>"$csv"
}
cs() { echo "containers-storage:[overlay@$W/cs+$W/cs-run]$addr/bench/curl-$1:1"; }
declare -A label=([minbase]="skopeo pull (minbase + curl)" [closure]="skopeo pull (closure)")

echo "delivery: $RUNS runs" >&2
for run in $(seq 0 "$RUNS"); do # run 0 warms up and is not recorded
	rm -rf "$W/store"
	timed "cimg-run install" $CIMG install -quiet --store "$W/store" --state-dir "$W/state" --ca "$tls/ca.pem" "oci://$addr/bench/curl:1"
	$CIMG list --json --store "$W/store" --state-dir "$W/state" | grep -q '"name": "curl"'
	$CIMG gc --store "$W/store" --state-dir "$W/state" >/dev/null
	for i in minbase closure; do
		cs_clean
		timed "${label[$i]}" skopeo copy -q --src-cert-dir "$tls/certs.d" "docker://$addr/bench/curl-$i:1" "$(cs $i)"
		skopeo inspect "$(cs $i)" >/dev/null
	done
done
cs_clean
rm -rf "$W/store"
# Every pull fetched its whole image (the bytes are not from a cache).
awk -F, -v c="$(stat -c %s "$W/curl.cimg")" -v m="$(layer minbase)" -v l="$(layer closure)" '
	NR > 1 {
		need = $1 ~ /^cimg/ ? c : $1 ~ /minbase/ ? m : l
		if ($4 < need) {
			print "bench-delivery: " $1 ", run " $2 ": " $4 " bytes on the wire, less than the image (" need ")" >"/dev/stderr"
			bad = 1
		}
	}
	END { exit bad }' "$csv"
mv "$csv" $r/delivery.csv

{
	echo "key,value"
	echo "date,$(date -u '+%Y-%m-%d %H:%M UTC')"
	echo "load before,$load_before"
	echo "load after,$(cut -d' ' -f1-3 /proc/loadavg)"
	echo "runs,$RUNS"
	echo "cimg bytes,$(stat -c %s "$W/curl.cimg")"
	echo "minbase layer bytes,$(layer minbase)"
	echo "minbase tree bytes,$(gzip -dc "$WORK/minbase-curl.tar.gz" | wc -c)"
	echo "closure layer bytes,$(layer closure)"
	echo "registry,$(/usr/bin/docker-registry --version | awk '{print $3}')"
	echo "skopeo,$(skopeo --version | cut -d' ' -f3)"
	echo "umoci,$(umoci --version | awk '{print $3}')"
	echo "filesystem,$(findmnt -no FSTYPE -T "$W")"
} >$r/delivery-meta.csv
echo "delivery: stopping" >&2
# The EXIT trap stops and removes everything and checks what is left.
