#!/bin/bash
# Encoder parity (issue 15, item 1): cimg-build's squashfs against
# mksquashfs's with the same compressor, level, block size and xz filter,
# on the same content. For each tree and cell, cimg-build packs the tree
# (--rootfs), the image is unpacked again (so the reference gets exactly
# the same files, cimg-build's provenance record included) and mksquashfs
# packs that. Sizes: cimg-build's squashfs section (inspect) against
# mksquashfs's output, both padded to 4 KiB. Time and peak memory:
# /usr/bin/time -f '%e %M', RUNS alternating runs each (mksquashfs first,
# then cimg-build), medians.
#
#   TREES="NAME=DIR:ENTRYPOINT ..."  trees to pack (default: none; the
#                                    caller makes them, see below)
#   CELLS="zstd xz xz:x86 ..."       compressor[:level][:bcj]
#   BLOCKS="128K 1M"                 block sizes
#   RUNS=3                           timed runs per tool and cell (0: sizes only)
#   CIMG_BUILD=bin/cimg-build
#
# Output: one line per cell on stdout, and $WORK/parity.csv.
# Making the trees used for issue 15:
#   bin/cimg-build /usr/bin/curl -o curl.cimg && unsquashfs -d curl curl.cimg && rm -r curl/.cimg
#   bin/cimg-build /usr/bin/python3 --add /usr/lib/python3.11:/usr/lib/python3.11 -o py.cimg && ... (same)
#   the 100 MB tree: as scripts/bench-build.sh makes it.
#
# scripts/encoder-parity.sh decomp IMAGE...: the kernel's side. Each image
# is loop-mounted read-only; each round, for each image in turn, the page
# cache is dropped (echo 3 > /proc/sys/vm/drop_caches) and every file of
# the mount is read (cat > /dev/null), timed. ROUNDS rounds (default 7),
# median seconds per image. Needs root.
#
# scripts/encoder-parity.sh launch 'CMD ARGS' IMAGE...: a cold start's
# kernel side: each image loop-mounted, each round for each image the page
# cache dropped and CMD run chrooted in the mount (what a launch reads and
# decompresses, without the launcher's own cost), ROUNDS rounds (default
# 41); the median, and the median of the round-by-round ratio to the
# first image.
set -euo pipefail
if [ "${1:-}" = launch ]; then
	cmd=$2
	shift 2
	ROUNDS=${ROUNDS:-41}
	mnts=()
	trap 'for m in "${mnts[@]}"; do umount "$m"; rmdir "$m"; done' EXIT
	for img in "$@"; do
		m=$(mktemp -d) && mount -o loop,ro -t squashfs "$img" "$m" && mnts+=("$m")
	done
	raw=$(mktemp)
	for r in $(seq 1 "$ROUNDS"); do
		for i in "${!mnts[@]}"; do
			sync && echo 3 >/proc/sys/vm/drop_caches
			s=$(date +%s%N)
			# shellcheck disable=SC2086 # the command's words
			chroot "${mnts[$i]}" $cmd >/dev/null
			echo "$r $i $((($(date +%s%N) - s) / 1000))" >>"$raw"
		done
	done
	for i in "${!mnts[@]}"; do
		med=$(awk -v i="$i" '$2 == i {print $3}' "$raw" | sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}')
		ratio=$(awk -v i="$i" '$2 == 0 {b[$1] = $3} $2 == i {v[$1] = $3} END {for (r in v) print v[r] / b[r]}' "$raw" |
			sort -g | awk '{a[NR]=$1} END {printf "%.3f", a[int((NR+1)/2)]}')
		printf "%-40s %10s bytes  median %7d us  paired ratio to the first %s\n" "$(basename "${@:$((i + 1)):1}")" \
			"$(stat -c %s "${@:$((i + 1)):1}")" "$med" "$ratio"
	done
	rm -f "$raw"
	exit 0
fi
if [ "${1:-}" = decomp ]; then
	shift
	ROUNDS=${ROUNDS:-7}
	mnts=()
	trap 'for m in "${mnts[@]}"; do umount "$m"; rmdir "$m"; done' EXIT
	for img in "$@"; do
		m=$(mktemp -d) && mount -o loop,ro -t squashfs "$img" "$m" && mnts+=("$m")
	done
	declare -A times
	for _ in $(seq 1 "$ROUNDS"); do
		for i in "${!mnts[@]}"; do
			sync && echo 3 >/proc/sys/vm/drop_caches
			s=$(date +%s.%N)
			find "${mnts[$i]}" -type f -print0 | xargs -0 cat >/dev/null
			times[$i]+="$(echo "$(date +%s.%N) - $s" | bc) "
		done
	done
	for i in "${!mnts[@]}"; do
		med=$(tr ' ' '\n' <<<"${times[$i]}" | grep . | sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}')
		printf "%-40s %10s bytes  median %.3f s  (%s)\n" "$(basename "${@:$((i + 1)):1}")" "$(stat -c %s "${@:$((i + 1)):1}")" "$med" "${times[$i]}"
	done
	exit 0
fi
CELLS=${CELLS:-zstd zstd:19 xz xz::x86 gzip lz4}
BLOCKS=${BLOCKS:-128K 1M}
RUNS=${RUNS:-3}
CIMG_BUILD=${CIMG_BUILD:-bin/cimg-build}
WORK=${WORK:-/tmp/cimg-encoder-parity}
EPOCH=1700000000
[ -n "${TREES:-}" ] || { echo "set TREES=\"name=dir:/entrypoint ...\"" >&2; exit 2; }
mkdir -p "$WORK"
command -v mksquashfs >/dev/null || { echo "mksquashfs is missing (apt-get install squashfs-tools)" >&2; exit 1; }

bytes() { case $1 in *K) echo $((${1%K} << 10)) ;; *M) echo $((${1%M} << 20)) ;; *) echo "$1" ;; esac; }
median() { sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
measure() { # CMD... → "seconds maxrss_kib"
	/usr/bin/time -f "%e %M" -o "$WORK/time" "$@" >/dev/null 2>"$WORK/err" || { cat "$WORK/err" >&2; exit 1; }
	cat "$WORK/time"
}

csv=$WORK/parity.csv
echo "tree,cell,block,cimg_bytes,mksquashfs_bytes,ratio,cimg_s,mksquashfs_s,cimg_rss_kib,mksquashfs_rss_kib" >"$csv"
printf "%-8s %-10s %5s %11s %11s %6s %7s %7s %8s %8s\n" tree cell block cimg mksquashfs ratio cimg-s mksq-s cimg-MiB mksq-MiB
for spec in $TREES; do
	name=${spec%%=*}; rest=${spec#*=}; dir=${rest%%:*}; entry=${rest#*:}
	for cell in $CELLS; do
		IFS=: read -r comp level bcj <<<"$cell"
		for bs in $BLOCKS; do
			b=$(bytes "$bs")
			cflag=$comp${level:+:$level}
			cargs=(--compression "$cflag" --block-size "$b")
			margs=(-comp "$comp" -b "$b")
			if [ "$comp" = xz ]; then
				cargs+=(--xz-bcj "${bcj:-none}")
				[ -n "$bcj" ] && [ "$bcj" != none ] && margs+=(-Xbcj "$bcj")
			fi
			if [ -n "$level" ]; then
				case $comp in
					lz4) margs+=(-Xhc) ;; # level 12: only lz4:12 is like for like
					xz) ;; # mksquashfs has no xz level (it uses liblzma's preset 6)
					*) margs+=(-Xcompression-level "$level") ;;
				esac
			fi
			img=$WORK/c.cimg ref=$WORK/m.sqfs
			cb=(nice -n 10 "$CIMG_BUILD" --quiet --name parity --rootfs "$dir" --entrypoint "$entry" "${cargs[@]}"
				--source-date-epoch $EPOCH -o "$img")
			"${cb[@]}"
			rm -rf "$WORK/tree" && unsquashfs -q -d "$WORK/tree" "$img" >/dev/null
			mb=(nice -n 10 mksquashfs "$WORK/tree" "$ref" "${margs[@]}" -noappend -all-root -no-xattrs
				-quiet -no-progress -mkfs-time $EPOCH -all-time $EPOCH)
			"${mb[@]}" >/dev/null
			csize=$("$CIMG_BUILD" inspect --json "$img" | awk -F': ' '/"name": "squashfs"/{getline; getline; gsub(/[^0-9]/,"",$2); print $2; exit}')
			msize=$(stat -c %s "$ref")
			: >"$WORK/ct"; : >"$WORK/mt"
			for _ in $(seq 1 "$RUNS"); do
				measure "${mb[@]}" >>"$WORK/mt"
				measure "${cb[@]}" >>"$WORK/ct"
			done
			cs=$(cut -d' ' -f1 "$WORK/ct" | median); cm=$(cut -d' ' -f2 "$WORK/ct" | median)
			ms=$(cut -d' ' -f1 "$WORK/mt" | median); mm=$(cut -d' ' -f2 "$WORK/mt" | median)
			ratio=$(awk -v a="$csize" -v b="$msize" 'BEGIN{printf "%.3f", a/b}')
			echo "$name,$cell,$bs,$csize,$msize,$ratio,$cs,$ms,$cm,$mm" >>"$csv"
			printf "%-8s %-10s %5s %11s %11s %6s %7s %7s %8s %8s\n" "$name" "$cell" "$bs" "$csize" "$msize" "$ratio" \
				"${cs:--}" "${ms:--}" "$([ -n "$cm" ] && echo $((cm / 1024)) || echo -)" "$([ -n "$mm" ] && echo $((mm / 1024)) || echo -)"
			echo "  ${cb[*]}" >&2
			echo "  ${mb[*]}" >&2
		done
	done
done
