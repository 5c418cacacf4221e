// launchbench times commands alternately — one run of each in turn, so
// drift in the machine's state hits every command alike — and appends one
// CSV row per run: label,tool,run,ms,maxrss_kib. With -cold the page cache
// is dropped before every run (not timed), so files come from disk again.
// maxrss is the peak RSS of the command and the processes it reaped
// (getrusage of the waited-for child), in KiB.
//
// Run i of every command is one round, so the runs of two commands pair up
// by run number: the report takes their ratio pair by pair (bench/stats).
// The order within a round is shuffled (seeded by -seed, so a run can be
// repeated): in a fixed order the command that always ran right after a
// heavy one paid for what that one left behind. Measured with runc exec
// in the rotation: cimg-run exec right after runc's 0.816× crun, right
// before it 0.744×, 100 pairs each.
// -load appends label,load_before,load_after (/proc/loadavg's three
// averages) for the cell, so a noisy cell can be told from a slow tool.
// With -ref, a summary of each command's paired ratio to that one, with its
// 95 % bootstrap interval, goes to stderr (the report recomputes it).
//
// Usage: launchbench -n 100 -label hello/warm -csv out.csv [-load load.csv] [-ref crun] 'tool=cmd arg...' ...
package main

import (
	"flag"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"time"

	"cimg.dev/cimg/bench/stats"
)

func main() {
	n := flag.Int("n", 30, "runs per command")
	label := flag.String("label", "", "first CSV column (e.g. app/cache)")
	csvPath := flag.String("csv", "", "append rows here")
	cold := flag.Bool("cold", false, "drop the page cache before each run")
	loadPath := flag.String("load", "", "append label,load_before,load_after here")
	ref := flag.String("ref", "", "print each command's paired ratio to this one")
	seed := flag.Uint64("seed", 1, "seed of the order within each round")
	flag.Parse()
	loadBefore := loadavg()
	type cmd struct {
		name string
		argv []string
	}
	var cmds []cmd
	for _, a := range flag.Args() {
		name, line, ok := strings.Cut(a, "=")
		if !ok {
			fmt.Fprintf(os.Stderr, "launchbench: %q is not name=command\n", a)
			os.Exit(2)
		}
		cmds = append(cmds, cmd{name, strings.Fields(line)})
	}
	out, err := os.OpenFile(*csvPath, os.O_APPEND|os.O_CREATE|os.O_WRONLY, 0o644)
	if err != nil {
		fmt.Fprintln(os.Stderr, "launchbench:", err)
		os.Exit(1)
	}
	defer out.Close()
	ms := map[string][]float64{}
	order := rand.New(rand.NewPCG(*seed, 0))
	for run := 0; run <= *n; run++ { // run 0 warms up and is not recorded
		round := append([]cmd(nil), cmds...)
		order.Shuffle(len(round), func(i, j int) { round[i], round[j] = round[j], round[i] })
		for _, c := range round {
			if *cold {
				syscall.Sync()
				if err := os.WriteFile("/proc/sys/vm/drop_caches", []byte("3"), 0); err != nil {
					fmt.Fprintln(os.Stderr, "launchbench: drop caches:", err)
					os.Exit(1)
				}
			}
			x := exec.Command(c.argv[0], c.argv[1:]...)
			start := time.Now()
			b, err := x.CombinedOutput()
			el := time.Since(start)
			if err != nil {
				fmt.Fprintf(os.Stderr, "launchbench: %s: %v\n%s", c.name, err, b)
				os.Exit(1)
			}
			if run > 0 {
				ms[c.name] = append(ms[c.name], float64(el.Microseconds())/1000)
				ru := x.ProcessState.SysUsage().(*syscall.Rusage)
				fmt.Fprintf(out, "%s,%s,%d,%.3f,%d\n", *label, c.name, run, float64(el.Microseconds())/1000, ru.Maxrss)
			}
		}
	}
	if *loadPath != "" {
		f, err := os.OpenFile(*loadPath, os.O_APPEND|os.O_CREATE|os.O_WRONLY, 0o644)
		if err != nil {
			fmt.Fprintln(os.Stderr, "launchbench:", err)
			os.Exit(1)
		}
		fmt.Fprintf(f, "%s,%s,%s\n", *label, loadBefore, loadavg())
		f.Close()
	}
	if r := ms[*ref]; *ref != "" && len(r) > 0 {
		for _, c := range cmds {
			if c.name == *ref {
				continue
			}
			ci := stats.MedianCI(stats.Ratios(ms[c.name], r), 0.95, 1)
			fmt.Fprintf(os.Stderr, "launchbench: %s: %s %.3f× %s (95%% CI %.3f–%.3f, %d pairs)\n", *label, c.name, ci.Median, *ref, ci.Lo, ci.Hi, ci.N)
		}
	}
}

// loadavg is /proc/loadavg's 1, 5 and 15 minute averages, space-separated.
func loadavg() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "?"
	}
	return strings.Join(strings.Fields(string(b))[:3], " ")
}
