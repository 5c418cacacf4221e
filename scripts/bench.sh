#!/bin/bash
# make bench: every benchmark, then BENCHMARKS.md with tables and charts.
# Raw results go to bench/results/*.csv; bench/report writes the markdown
# and the PNGs from them. RUNS (default 30) sets the runs per latency cell,
# PAIRS (default 100) the alternating pairs of each cell whose goal is a
# ratio to a peer (launch, exec, throttled cold start; judged on the 95 %
# bootstrap interval of the pair-by-pair ratio), SCALE_ROUNDS (default
# 50) and SCALE_ROUNDS_50 (default 100) the rounds of the scale benchmark
# at N = 1 and 10 and at N = 50, BUILD_RUNS (default 7) the runs per
# build-time cell. Any script failing stops make bench (set -e), so no
# section is left silently stale.
set -euo pipefail
cd "$(dirname "$0")/.."
export RUNS=${RUNS:-30}
export PAIRS=${PAIRS:-100}
export SCALE_ROUNDS=${SCALE_ROUNDS:-50}
export SCALE_ROUNDS_50=${SCALE_ROUNDS_50:-100}
r=bench/results
mkdir -p $r
first() { "$@" 2>&1 | head -1 | tr ',' ';'; }
{
	echo "key,value"
	echo "date,$(date -u '+%Y-%m-%d %H:%M UTC')"
	echo "kernel,$(uname -r)"
	echo "cpu,$(awk -F': ' '/model name/ {print $2; exit}' /proc/cpuinfo | tr ',' ';')"
	echo "cores,$(nproc)"
	echo "memory,$(awk '/MemTotal/ {printf "%.1f GiB", $2/1048576}' /proc/meminfo)"
	echo "load before,$(cut -d' ' -f1-3 /proc/loadavg)"
	echo "go,$(go version | cut -d' ' -f3)"
	echo "crun,$(first crun --version)"
	echo "runc,$(first runc --version)"
	echo "umoci,$(first umoci --version)"
	echo "skopeo,$(first skopeo --version)"
	echo "mksquashfs,$(first mksquashfs -version)"
	echo "runs per cell,$RUNS"
	echo "pairs per ratio cell,$PAIRS"
	echo "scale rounds,$SCALE_ROUNDS"
	echo "scale rounds at 50,$SCALE_ROUNDS_50"
} >$r/machine.tmp
scripts/bench-launch.sh
scripts/bench-scale.sh # after bench-launch.sh: it uses its image and bundle
scripts/bench-cold.sh
scripts/bench-services.sh
scripts/bench-oci.sh
scripts/bench-store.sh
scripts/bench-size.sh
scripts/bench-defaults.sh # cimg-build's default compression: sizes and cold launches of the candidates
scripts/bench-delivery.sh # after bench-size.sh: it reuses its debootstrap cache
scripts/bench-build.sh
# Encoder parity: image sizes against mksquashfs's with the same encoding, on
# the trees bench-size.sh (curl, python3) and bench-build.sh (100 MB) made.
tree100=/tmp/cimg-bench-build/tree-100
RUNS=0 CELLS="zstd zstd:19 xz xz::x86 gzip lz4 lz4:12" BLOCKS="128K 1M" WORK=/tmp/cimg-encoder-parity \
	TREES="curl=/var/cache/cimg/bench-size/curl-tree:/usr/bin/curl python3=/var/cache/cimg/bench-size/python3-tree:/usr/bin/python3.11 100MB=$tree100:/usr/bin/$(ls "$tree100/usr/bin" | head -1)" \
	scripts/encoder-parity.sh
cp /tmp/cimg-encoder-parity/parity.csv $r/parity.csv
echo "load after,$(cut -d' ' -f1-3 /proc/loadavg)" >>$r/machine.tmp
mv $r/machine.tmp $r/machine.csv
go run ./bench/report
echo "wrote BENCHMARKS.md"
