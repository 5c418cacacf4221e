package main

import (
	"bytes"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"testing"
	"time"
)

func TestSequentialLaunchesLeakNothing(t *testing.T) {
	state := stateDir(t)
	img := probeImage(t, "[app]\ncommand = [\"/usr/bin/probe\"]\n[limits]\nmemory = \"32MiB\"\n")
	// The first launch creates the cache mount, which is meant to stay.
	runExit0(t, state, img)
	before := counts(t)
	for i := 0; i < 1000; i++ {
		if res := runImage(t, cimgRunCmd(state, img, "--", "exit", "3")); res.code != 3 {
			t.Fatalf("launch %d: %+v", i, res)
		}
	}
	if after := counts(t); fmt.Sprint(after) != fmt.Sprint(before) {
		t.Errorf("after 1000 launches: %v, before: %v", after, before)
	}
}

// TestKilledLaunchesLeakNothing SIGKILLs cimg-run at random moments of
// its setup and of its hand-over to the slim waiter; the next launch
// cleans up whatever a killed one left.
func TestKilledLaunchesLeakNothing(t *testing.T) {
	state := stateDir(t)
	img := probeImage(t, "[app]\ncommand = [\"/usr/bin/probe\"]\n[limits]\nmemory = \"32MiB\"\npids = 8\n")
	runExit0(t, state, img)
	before := counts(t)
	rng := rand.New(rand.NewPCG(1, 2))
	for i := 0; i < 200; i++ {
		cmd := cimgRunCmd(state, img, "--", "exit", "0")
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		time.Sleep(time.Duration(rng.IntN(12000)) * time.Microsecond)
		cmd.Process.Kill()
		cmd.Wait()
	}
	// And 30 killed while a running app's launcher turns into the slim
	// waiter (about 100 ms after start), or just after.
	for i := 0; i < 30; i++ {
		cmd := cimgRunCmd(state, img, "--", "sleep")
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		time.Sleep(time.Duration(90+rng.IntN(70)) * time.Millisecond)
		cmd.Process.Kill()
		cmd.Wait()
	}
	// The next launch removes stale cgroups; wait for the killed
	// children's namespaces to be torn down.
	runExit0(t, state, img)
	expectCounts(t, before, "after 230 killed launches")
	// Orphans of a killed launcher are reaped by the host's init; give
	// it a moment, then none of ours may be left as zombies.
	z := 0
	if !settle(func() bool { z = zombies(t); return z == 0 }) {
		t.Errorf("%d cimg-run or probe zombies", z)
	}
}

func zombies(t *testing.T) int {
	n := 0
	stats, _ := filepath.Glob("/proc/[0-9]*/stat")
	for _, s := range stats {
		b, _ := os.ReadFile(s)
		i := bytes.LastIndexByte(b, ')')
		if i > 0 && len(b) > i+2 && b[i+2] == 'Z' && (bytes.Contains(b[:i], []byte("(cimg-run")) || bytes.Contains(b[:i], []byte("(probe"))) {
			n++
		}
	}
	return n
}

// TestConcurrentLaunches: 50 launches of one image at once all succeed
// (the first ones race to create the mount cache: the test's state
// directory is new, so nothing is cached yet).
func TestConcurrentLaunches(t *testing.T) {
	state := stateDir(t)
	img := probeImage(t, "[app]\ncommand = [\"/usr/bin/probe\"]\n")
	errs := make(chan string, 50)
	for i := 0; i < 50; i++ {
		go func(i int) {
			out, err := cimgRunCmd(state, img, "--", "exit", strconv.Itoa(i%5)).CombinedOutput()
			code := 0
			if ee, ok := err.(*exec.ExitError); ok {
				code = ee.ExitCode()
			}
			if code != i%5 {
				errs <- fmt.Sprintf("launch %d: exit %d: %s", i, code, out)
				return
			}
			errs <- ""
		}(i)
	}
	for i := 0; i < 50; i++ {
		if e := <-errs; e != "" {
			t.Error(e)
		}
	}
}
