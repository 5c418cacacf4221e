package main

import (
	"fmt"
	"math"
	"strings"

	"cimg.dev/cimg/bench/stats"
)

// defaultsLimit is the rule for cimg-build's default compression:
// the best size whose cold launch stays within 10 % of the baseline's
// (zstd level 15, 128 KiB blocks), judged on the upper end of the 95 %
// interval of the pair-by-pair ratio.
const defaultsLimit = 1.10

// sizeGoalZst: the default .cimg against the tree as one tar.zst (issue 15).
const sizeGoalZst = 0.90

// defaultsSection: cimg-build's default compression chosen from
// measurements (scripts/bench-defaults.sh) — each variant's image size
// against the tar.zst of the same tree and against the baseline, and its
// cold launch through the kernel's squashfs paired with the baseline's,
// per app and storage condition; then the smallest variant that stays
// within 10 % in every cell, and whether cimg-build's default is that one.
func defaultsSection(w writer) {
	meta := keyValues("defaults-meta.csv")
	base := meta["baseline"]
	type cellKey struct{ app, cond string }
	var cells []cellKey
	var variants []string
	ms := map[cellKey]map[string][]float64{}
	for _, r := range readCSV("defaults.csv")[1:] { // after the header: app,condition,variant,run,ms,maxrss_kib
		c := cellKey{r[0], r[1]}
		if ms[c] == nil {
			ms[c] = map[string][]float64{}
			cells = append(cells, c)
		}
		if !contains(variants, r[2]) {
			variants = append(variants, r[2])
		}
		ms[c][r[2]] = append(ms[c][r[2]], num(r[4]))
	}
	// The script's order (baseline first), not the shuffled order of the runs.
	if order := strings.Split(meta["variants"], "; "); len(order) == len(variants) {
		variants = order
	}
	var apps []string
	for _, c := range cells {
		if !contains(apps, c.app) {
			apps = append(apps, c.app)
		}
	}
	bytes := func(app, v string) float64 { return num(meta[app+" "+v+" bytes"]) }
	vsZst := func(app, v string) float64 { return bytes(app, v) / num(meta[app+" tar.zst bytes"]) }
	condName := func(c string) string {
		if c == "unthrottled" {
			return "unthrottled (the VM's disk)"
		}
		return c + " (throttled ext4)"
	}

	w("## Default compression\n\n")
	w("Measured by `scripts/bench-defaults.sh` on %s (load %s before, %s after; kernel %s,\n", meta["date"], meta["load before"], meta["load after"], meta["kernel"])
	w("squashfs built with %s). The rule (issue): cimg-build's default is the variant with the best size whose\n", strings.TrimSpace(meta["squashfs decompressor"]))
	w("cold launch stays within 10 %% of %s (mksquashfs's defaults, and cimg-build's until this measurement), with the decompression measured where it happens,\n", base)
	w("in the kernel. The same trees as the image-size section (curl's closure; python3.11's with its standard\n")
	w("library), unpacked and packed again by one cimg-build (%s) with `--rootfs TREE\n", meta["cimg-build"])
	w("--entrypoint ENTRY` in every variant, so every image holds the same files (the script compares their listings):\n\n")
	w("| variant | cimg-build flags |\n|---|---|\n")
	for _, v := range variants {
		w("| %s | `%s` |\n", v, meta["flags "+v])
	}
	w("\nLaunches: `cimg-run --private-mount IMAGE` with the app's command in the manifest (`curl --version`,\n")
	w("`python3.11 -c pass`), a fresh loop device and squashfs mount per launch, so every block the app touches is\n")
	w("read and decompressed by the kernel (cimg-run's once-per-boot whole-image check done before the runs).\n")
	w("bench/launchbench -cold (`sync` and `drop_caches = 3` before every run, untimed), a warm-up round, then %s\n", meta["pairs"])
	w("rounds with the variants in a shuffled order; a variant's run and %s's of the same round are a pair, and\n", base)
	w("\"vs %s\" is the median of the pair-by-pair ratios with its 95 %% bootstrap interval (%d resamples). Two\n", base, stats.Resamples)
	w("storage conditions: the images and cimg-run on the VM's disk, unthrottled — reads cost almost nothing, so\n")
	w("decompression weighs the most — and on a loop-backed ext4 read-throttled by a v1 blkio cgroup (readahead\n")
	w("%s KiB; cimg-run on it too), as in the cold-start section. \"MB read\" is what one cold launch reads from\n", meta["throttled read_ahead_kb"])
	w("that ext4's device (median of 3, unthrottled; cimg-run's own %.1f MB included). \"within 10 %%\" holds when the\n", num(meta["launcher alone (cimg-run help) cold read bytes"])/1e6)
	w("interval's upper end is ≤ %.2f×.\n\n", defaultsLimit)

	// worst[v]: the highest upper end of v's interval over the cells.
	worst := map[string]float64{}
	for _, c := range cells {
		w("### %s, %s\n\n", c.app, condName(c.cond))
		w("| variant | bytes | vs tar.zst | vs %s | MB read cold | median ms | p90 ms | vs %s, paired | 95 %% CI | within 10 %% |\n", base, base)
		w("|---|---|---|---|---|---|---|---|---|---|\n")
		ref := ms[c][base]
		for _, v := range variants {
			b := bytes(c.app, v)
			ci := paired(ms[c][v], ref)
			hi := ci.Hi
			if math.IsNaN(hi) {
				hi = math.Inf(1) // too few pairs: no interval, so not within
			}
			worst[v] = math.Max(worst[v], hi)
			rng, within := ciRange(ci), "yes"
			if v == base {
				rng, within = "", "(baseline)"
			} else if !ci.Meets(defaultsLimit) {
				within = "no"
			}
			w("| %s | %.0f | %.3f× | %.3f× | %.2f | %.1f | %.1f | %.3f× | %s | %s |\n", v, b, vsZst(c.app, v),
				b/bytes(c.app, base), num(meta[c.app+" "+v+" cold read bytes"])/1e6, median(ms[c][v]), p90(ms[c][v]), ci.Median, rng, within)
		}
		w("\nLoad before and after the cell: %s; %s.\n\n", meta["load "+c.app+"/"+c.cond+" before"], meta["load "+c.app+"/"+c.cond+" after"])
	}

	// The choice: the smallest variant (bytes summed over the apps) whose
	// upper end stays within the limit in every cell.
	total := func(v string) float64 {
		t := 0.0
		for _, a := range apps {
			t += bytes(a, v)
		}
		return t
	}
	best := ""
	w("### The choice\n\n")
	w("| variant |")
	for _, a := range apps {
		w(" %s vs tar.zst |", a)
	}
	w(" all apps' bytes vs %s | highest upper end over the cells | within 10 %% in every cell |\n|---|", base)
	for range apps {
		w("---|")
	}
	w("---|---|---|\n")
	for _, v := range variants {
		w("| %s |", v)
		for _, a := range apps {
			w(" %.3f× |", vsZst(a, v))
		}
		ok := worst[v] <= defaultsLimit
		within := map[bool]string{true: "yes", false: "no"}[ok]
		if v == base {
			within = "(baseline)"
		}
		w(" %.3f× | %.3f× | %s |\n", total(v)/total(base), worst[v], within)
		if (ok || v == base) && (best == "" || total(v) < total(best)) {
			best = v
		}
	}
	// cimg-build's default: the variant whose images are the size of
	// the ones built without compression flags, for every app.
	def := ""
	for _, v := range variants {
		same := true
		for _, a := range apps {
			same = same && bytes(a, v) == num(meta[a+" default bytes"])
		}
		if same {
			def = v
			break
		}
	}
	if def == "" {
		def = "none of these (" + meta[apps[0]+" default squashfs"] + ")"
	}
	w("\nThe smallest image whose cold launch stays within 10 %% of %s in every cell: **%s** (%.3f× its bytes).\n", base, best, total(best)/total(base))
	w("cimg-build without compression flags builds %s.\n\n", def)
	if up, ok := worst[def]; ok && def != best && up > defaultsLimit {
		// By how much, so that a miss by one run's noise reads as that.
		w("The default misses the rule in this run by its highest upper end over the cells: %.3f× against %.2f×.\n", up, defaultsLimit)
		// What taking the rule's pick instead would cost: the size goal
		// (default ≤ sizeGoalZst× tar.zst) is judged on the same apps.
		for _, a := range apps {
			if r := vsZst(a, best); r > sizeGoalZst {
				w("Making %s the default instead would leave %s's default image at %.3f× its tar.zst, short of the\n", best, a, r)
				w("≤ %.2f× size goal that %s meets (%.3f×): the two goals cannot both pass on this run's figures.\n", sizeGoalZst, def, vsZst(a, def))
			}
		}
		w("\n")
	}
	judge(fmt.Sprintf("default compression: cimg-build's default is %s; the smallest within 10 %% of %s's cold launch in every cell is %s", def, base, best),
		def == best, "the default is the smallest within 1.10×, upper end")
}
