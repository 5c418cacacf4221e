// launchbench times commands alternately — one run of each in turn, so
// drift in the machine's state hits every command alike — and prints the
// median and p90 wall time of each, plus raw CSV rows.
//
// Usage: launchbench -n 30 -csv out.csv 'name=cmd arg...' 'name=cmd arg...'
package main

import (
	"flag"
	"fmt"
	"os"
	"os/exec"
	"sort"
	"strings"
	"time"
)

func main() {
	n := flag.Int("n", 30, "runs per command")
	csvPath := flag.String("csv", "", "append raw rows (name,run,ms) here")
	flag.Parse()
	type cmd struct {
		name string
		argv []string
		ms   []float64
	}
	var cmds []*cmd
	for _, a := range flag.Args() {
		name, line, ok := strings.Cut(a, "=")
		if !ok {
			fmt.Fprintf(os.Stderr, "launchbench: %q is not name=command\n", a)
			os.Exit(2)
		}
		cmds = append(cmds, &cmd{name: name, argv: strings.Fields(line)})
	}
	var rows []string
	for run := 0; run <= *n; run++ { // run 0 warms up and is not counted
		for _, c := range cmds {
			start := time.Now()
			out, err := exec.Command(c.argv[0], c.argv[1:]...).CombinedOutput()
			el := time.Since(start)
			if err != nil {
				fmt.Fprintf(os.Stderr, "launchbench: %s: %v\n%s", c.name, err, out)
				os.Exit(1)
			}
			if run > 0 {
				ms := float64(el.Microseconds()) / 1000
				c.ms = append(c.ms, ms)
				rows = append(rows, fmt.Sprintf("%s,%d,%.3f", c.name, run, ms))
			}
		}
	}
	if *csvPath != "" {
		f, err := os.OpenFile(*csvPath, os.O_APPEND|os.O_CREATE|os.O_WRONLY, 0o644)
		if err == nil {
			fmt.Fprintln(f, strings.Join(rows, "\n"))
			f.Close()
		}
	}
	for _, c := range cmds {
		sort.Float64s(c.ms)
		fmt.Printf("%s %.2f %.2f\n", c.name, c.ms[len(c.ms)/2], c.ms[len(c.ms)*9/10])
	}
}
