#!/bin/bash
# Build time, size and peak memory of cimg-build against mksquashfs on the
# same tree (TREE_MB, default ~100 MB: a copy of part of
# /usr/lib/x86_64-linux-gnu and /usr/bin), same compressor and block size,
# mksquashfs with its default thread count; and against umoci making an
# OCI image of the same tree (umoci repack: the tar.gz layer, its digest
# and the manifest). Each cell is the median of RUNS runs after one
# warm-up that fills the page cache for every tool (RUNS for zstd and xz;
# a fast compressor gets more, since its runs cost little and a short run
# is noisier: gzip 15, lz4 41, or BUILD_RUNS_GZIP/BUILD_RUNS_LZ4). mksquashfs and
# cimg-build run in turn, their order swapped every run, so that a run is
# a pair (bench/report judges the time goal on the pairs' ratios); wall
# time is read from the nanosecond clock, not time(1)'s 10 ms.
#
# Output: a table on stdout, bench/results/build.csv and build-meta.csv
# (when, at which commit, the machine's load before and after).
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS=${BUILD_RUNS:-7}
# runs_for COMP → the pairs for COMP: 7 pairs of lz4 builds (0.2 s each)
# left a 0.96-1.05x interval around a 0.97x median; 41 cost 20 s.
runs_for() {
	case $1 in
	lz4) echo "${BUILD_RUNS_LZ4:-41}" ;;
	gzip) echo "${BUILD_RUNS_GZIP:-15}" ;;
	*) echo "$RUNS" ;;
	esac
}
COMPRESSORS=${COMPRESSORS:-zstd xz gzip lz4}
TREE_MB=${TREE_MB:-100}
BLOCK=${BLOCK:-131072}
WORK=${WORK:-/tmp/cimg-bench-build}
EPOCH=1700000000

mkdir -p "$WORK" bench/results
load_before=$(cut -d' ' -f1-3 /proc/loadavg)
make -s build # the cimg-build of this source, not whatever bin/ holds
tree=$WORK/tree-$TREE_MB
if [ ! -d "$tree" ]; then
	echo "making the tree in $tree" >&2
	mkdir -p "$tree/usr/lib" "$tree/usr/bin"
	# Fill to TREE_MB from the host's libraries and programs, sorted so the
	# same machine always makes the same tree.
	budget=$((TREE_MB * 1000 * 1000))
	total=0
	while IFS= read -r f; do
		sz=$(stat -c %s "$f")
		[ $((total + sz)) -gt $budget ] && continue
		rel=${f#/}
		mkdir -p "$tree/$(dirname "$rel")"
		cp -a "$f" "$tree/$rel"
		total=$((total + sz))
	done < <(find /usr/lib/x86_64-linux-gnu /usr/bin -maxdepth 2 -type f -size +0 | LC_ALL=C sort)
fi
bins=("$tree"/usr/bin/*)
entry=/usr/bin/$(basename "${bins[0]}")
tree_bytes=$(du -sb "$tree" | cut -f1)
tree_files=$(find "$tree" -type f | wc -l)
echo "tree: $tree_bytes bytes in $tree_files files; block size $BLOCK" >&2

# measure CMD... → prints "seconds maxrss_kib cpu_seconds" (cpu: user +
# system, which says whether a difference in time is work or waiting)
measure() {
	local t0 t1
	t0=$(date +%s%N)
	/usr/bin/time -f "%M %U %S" -o "$WORK/time" "$@" >/dev/null 2>"$WORK/err" || { cat "$WORK/err" >&2; exit 1; }
	t1=$(date +%s%N)
	echo "$(awk -v ns=$((t1 - t0)) 'BEGIN {printf "%.4f", ns / 1e9}') $(awk '{printf "%s %.2f", $1, $2 + $3}' "$WORK/time")"
}

median() { sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }

csv=bench/results/build.csv
echo "tool,compression,block_size,run,seconds,max_rss_kib,image_bytes,squashfs_bytes,tree_bytes,cpu_seconds" > "$csv"
printf "%-6s %-10s %8s %8s %12s %12s\n" comp tool seconds MiB-RSS image-bytes squashfs >&2
for comp in $COMPRESSORS; do
	# The same encoding on both sides: xz with the x86 filter (cimg-build's
	# default for amd64 code; mksquashfs's only when asked).
	margs=() cargs=()
	[ "$comp" = xz ] && margs=(-Xbcj x86) cargs=(--xz-bcj x86)
	for run in $(seq 0 "$(runs_for "$comp")"); do # run 0 is the warm-up
		rm -f "$WORK/ref.sqfs" "$WORK/app.cimg"
		mksq() {
			read -r ms mm mc < <(measure mksquashfs "$tree" "$WORK/ref.sqfs" -comp "$comp" "${margs[@]}" -b "$BLOCK" -noappend -no-progress -quiet \
				-all-root -no-xattrs -mkfs-time $EPOCH -all-time $EPOCH)
		}
		cimg() {
			read -r cs cm cc < <(measure bin/cimg-build --quiet --name bench --rootfs "$tree" --entrypoint "$entry" --compression "$comp" "${cargs[@]}" \
				--block-size "$BLOCK" --source-date-epoch $EPOCH -o "$WORK/app.cimg")
		}
		if [ $((run % 2)) = 0 ]; then cimg; mksq; else mksq; cimg; fi
		msize=$(stat -c %s "$WORK/ref.sqfs")
		csize=$(stat -c %s "$WORK/app.cimg")
		csq=$(bin/cimg-build inspect --json "$WORK/app.cimg" | awk -F': ' '/"name": "squashfs"/{getline; getline; gsub(/[^0-9]/,"",$2); print $2; exit}')
		[ "$run" = 0 ] && continue
		echo "mksquashfs,$comp,$BLOCK,$run,$ms,$mm,$msize,$msize,$tree_bytes,$mc" >> "$csv"
		echo "cimg-build,$comp,$BLOCK,$run,$cs,$cm,$csize,$csq,$tree_bytes,$cc" >> "$csv"
	done
done

# umoci: an empty image unpacked into a bundle (not timed), the tree
# copied into its rootfs (not timed), then repack — the layer build.
for run in $(seq 0 "$RUNS"); do
	rm -rf "$WORK/oci" "$WORK/bundle"
	umoci init --layout "$WORK/oci" && umoci new --image "$WORK/oci:bench"
	umoci unpack --image "$WORK/oci:bench" "$WORK/bundle" >/dev/null
	cp -a "$tree/." "$WORK/bundle/rootfs/"
	read -r us um uc < <(measure umoci repack --image "$WORK/oci:bench" "$WORK/bundle")
	usize=$(du -sb "$WORK/oci/blobs" | cut -f1)
	[ "$run" = 0 ] && continue
	echo "umoci,gzip-layer,0,$run,$us,$um,$usize,0,$tree_bytes,$uc" >> "$csv"
done

echo
echo "| compression | mksquashfs s | cimg-build s | time ratio | mksquashfs size | cimg squashfs size | size ratio | mksquashfs RSS MiB | cimg-build RSS MiB | RSS ratio |"
echo "|---|---|---|---|---|---|---|---|---|---|"
for comp in $COMPRESSORS; do
	col() { awk -F, -v t="$1" -v c="$comp" -v f="$2" '$1==t && $2==c {print $f}' "$csv" | median; }
	mt=$(col mksquashfs 5); ct=$(col cimg-build 5)
	ms=$(col mksquashfs 8); cs=$(col cimg-build 8)
	mr=$(col mksquashfs 6); cr=$(col cimg-build 6)
	awk -v c="$comp" -v mt="$mt" -v ct="$ct" -v ms="$ms" -v cs="$cs" -v mr="$mr" -v cr="$cr" 'BEGIN {
		printf "| %s | %.2f | %.2f | %.2f× | %d | %d | %.3f× | %.0f | %.0f | %.2f× |\n", c, mt, ct, ct/mt, ms, cs, cs/ms, mr/1024, cr/1024, cr/mr }'
done
{
	echo "key,value"
	echo "date,$(date -u '+%Y-%m-%d %H:%M UTC')"
	echo "commit,$(git rev-parse --short HEAD 2>/dev/null || echo unknown)"
	echo "load before,$load_before"
	echo "load after,$(cut -d' ' -f1-3 /proc/loadavg)"
} >bench/results/build-meta.csv
