package main

import "fmt"

// paritySection reports scripts/encoder-parity.sh's sizes: cimg-build's
// squashfs against mksquashfs's with the same compressor, level, block
// size and filter, on the same files (issue 15's goal: ≤ 1.02× in every
// cell).
func paritySection(w writer) {
	rows := readCSV("parity.csv")[1:] // after the header
	w("## Encoder parity\n\n")
	w("cimg-build's squashfs against mksquashfs's on the same files with the same compressor, level, block size\n")
	w("and xz filter (`scripts/encoder-parity.sh` with RUNS=0: sizes only; each tree packed by cimg-build, unpacked\n")
	w("again, and that packed by mksquashfs, so both hold exactly the same files). Cells: `zstd` (level 15),\n")
	w("`zstd:19`, `xz` (preset 6, no filter), `xz::x86` (the x86 BCJ filter, `-Xbcj x86`), `gzip` (level 9),\n")
	w("`lz4` (fast) and `lz4:12` (HC level 12, mksquashfs's `-Xhc`). cimg-build links the reference C encoders\n")
	w("(libzstd, liblzma, liblz4) and, for gzip, libdeflate (see the README). Trees: curl's and python3's closures (bench-size.sh)\n")
	w("and the 100 MB tree of the build-time section. Goal: ≤ 1.02× in every cell.\n\n")
	w("| tree | cell | block | cimg-build bytes | mksquashfs bytes | ratio |\n|---|---|---|---|---|---|\n")
	worst, where := 0.0, ""
	for _, r := range rows {
		ratio := num(r[3]) / num(r[4])
		if ratio > worst {
			worst, where = ratio, r[0]+" "+r[1]+" "+r[2]
		}
		w("| %s | %s | %s | %s | %s | %.3f× |\n", r[0], r[1], r[2], r[3], r[4], ratio)
	}
	w("\n")
	judge(fmt.Sprintf("encoder parity: cimg-build's squashfs at most %.3f× mksquashfs's (%s) over %d cells", worst, where, len(rows)),
		len(rows) > 0 && worst <= 1.02, "≤ 1.02× in every cell")
}
