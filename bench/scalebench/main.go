// scalebench starts N instances of a command at once and records, per
// instance, the time until it prints "ready", then the memory all of them
// hold together once every one is up: the sum of Pss over every process
// of every instance (launcher, app and anything between), and the sum of
// the launcher processes' RssAnon. Then it runs the stop
// command for each instance and waits for them.
//
// "{i}" in the command or stop command becomes the instance number.
// Appends CSV rows to -csv: tool,n,instance,start_ms,round and to -mem:
// tool,n,total_pss_kib,launchers_rss_anon_kib,round. The round (-round)
// pairs a run of one tool with the run of the other in the same round,
// for the report's pair-by-pair ratios.
//
// Usage: scalebench -tool cimg-run -n 10 -round 1 -csv s.csv -mem m.csv -stop 'kill -TERM {pid}' -- cmd args...
package main

import (
	"bufio"
	"bytes"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"time"
)

func main() {
	tool := flag.String("tool", "", "name in the CSV")
	n := flag.Int("n", 1, "instances")
	csvPath := flag.String("csv", "", "per-instance start latency rows")
	memPath := flag.String("mem", "", "memory rows")
	round := flag.Int("round", 0, "round number, the last CSV column")
	stop := flag.String("stop", "", "command that stops instance {i} (launcher pid {pid})")
	flag.Parse()
	cmds := make([]*exec.Cmd, *n)
	errs := make([]bytes.Buffer, *n)
	ms := make([]float64, *n)
	var wg sync.WaitGroup
	var failed sync.Once
	var failure error
	// stopAll stops every instance started so far and waits for them: on
	// success and on failure alike, so a failed round leaves nothing
	// running (it used to exit at once, leaving the other instances).
	stopAll := func() {
		for i, c := range cmds {
			if c == nil {
				continue
			}
			s := strings.NewReplacer("{i}", strconv.Itoa(i), "{pid}", strconv.Itoa(c.Process.Pid)).Replace(*stop)
			if out, err := exec.Command("sh", "-c", s).CombinedOutput(); err != nil && failure == nil {
				fmt.Fprintf(os.Stderr, "scalebench: stop %d: %v %s\n", i, err, out)
			}
		}
		for _, c := range cmds {
			if c != nil {
				c.Wait()
			}
		}
	}
	start := time.Now()
	for i := range *n {
		argv := strings.Fields(strings.ReplaceAll(strings.Join(flag.Args(), " "), "{i}", strconv.Itoa(i)))
		c := exec.Command(argv[0], argv[1:]...)
		c.Stderr = &errs[i]
		out, err := c.StdoutPipe()
		if err == nil {
			err = c.Start()
		}
		if err != nil {
			stopAll()
			fail(err)
		}
		cmds[i] = c
		wg.Add(1)
		go func() {
			defer wg.Done()
			sc := bufio.NewScanner(out)
			for sc.Scan() {
				if sc.Text() == "ready" {
					ms[i] = float64(time.Since(start).Microseconds()) / 1000
					go func() { // keep draining, so the app never blocks on a full pipe
						for sc.Scan() {
						}
					}()
					return
				}
			}
			failed.Do(func() { failure = fmt.Errorf("instance %d ended before it was ready", i) })
		}()
	}
	wg.Wait()
	if failure != nil {
		stopAll()
		for i := range errs {
			if errs[i].Len() > 0 {
				fmt.Fprintf(os.Stderr, "scalebench: instance %d: %s\n", i, strings.TrimSpace(errs[i].String()))
			}
		}
		fail(failure)
	}
	time.Sleep(500 * time.Millisecond) // let every launcher settle (cimg-run's slim waiter)
	rss, pss := 0, 0
	kids := children()
	for _, c := range cmds {
		rss += status(c.Process.Pid, "RssAnon:")
		for _, p := range tree(c.Process.Pid, kids) {
			pss += pssOf(p)
		}
	}
	appendTo(*memPath, fmt.Sprintf("%s,%d,%d,%d,%d\n", *tool, *n, pss, rss, *round))
	var rows strings.Builder
	for i, v := range ms {
		fmt.Fprintf(&rows, "%s,%d,%d,%.3f,%d\n", *tool, *n, i, v, *round)
	}
	appendTo(*csvPath, rows.String())
	stopAll()
}

// children maps each pid to its children's pids.
func children() map[int][]int {
	m := map[int][]int{}
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		if pp := status(pid, "PPid:"); pp > 0 {
			m[pp] = append(m[pp], pid)
		}
	}
	return m
}

func tree(pid int, kids map[int][]int) []int {
	out := []int{pid}
	for _, k := range kids[pid] {
		out = append(out, tree(k, kids)...)
	}
	return out
}

func status(pid int, key string) int {
	b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	for _, l := range strings.Split(string(b), "\n") {
		if f := strings.Fields(l); len(f) >= 2 && f[0] == key {
			v, _ := strconv.Atoi(f[1])
			return v
		}
	}
	return 0
}

func pssOf(pid int) int {
	b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/smaps_rollup", pid))
	for _, l := range strings.Split(string(b), "\n") {
		if f := strings.Fields(l); len(f) >= 2 && f[0] == "Pss:" {
			v, _ := strconv.Atoi(f[1])
			return v
		}
	}
	return 0
}

func appendTo(path, s string) {
	f, err := os.OpenFile(path, os.O_APPEND|os.O_CREATE|os.O_WRONLY, 0o644)
	if err != nil {
		fail(err)
	}
	f.WriteString(s)
	f.Close()
}

func fail(err error) {
	fmt.Fprintln(os.Stderr, "scalebench:", err)
	os.Exit(1)
}
