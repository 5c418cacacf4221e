package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"

	specs "github.com/opencontainers/runtime-spec/specs-go"
	flag "github.com/spf13/pflag"

	"cimg.dev/cimg/internal/cgroup"
)

// statePaused is the status runc and crun report for a frozen container
// (podman reads it back); the runtime spec names only the other four.
const statePaused specs.ContainerState = "paused"

// cmdPause freezes every process of a running container (its cgroup's
// freezer), cmdResume lets them go on.
func cmdPause(args []string) (int, error) {
	return 0, freeze(flag.NewFlagSet("pause", flag.ContinueOnError), args, true)
}

func cmdResume(args []string) (int, error) {
	return 0, freeze(flag.NewFlagSet("resume", flag.ContinueOnError), args, false)
}

func freeze(fs *flag.FlagSet, args []string, frozen bool) error {
	id, err := oneID(fs, args)
	if err != nil {
		return err
	}
	st, err := g.load(id)
	if err != nil {
		return err
	}
	want := specs.StateRunning
	if !frozen {
		want = statePaused
	}
	if st.Status != want {
		return fmt.Errorf("%s %s: the container is %s, not %s", fs.Name(), id, st.Status, want)
	}
	if err := cgroup.Freeze(st.cgroupV2(), st.Cgroup, frozen); err != nil {
		return fmt.Errorf("%s %s: %w", fs.Name(), id, err)
	}
	return nil
}

// cmdPs lists the processes of a container's cgroup: their pids as a
// JSON array (--format json, what podman and runc's callers read), or a
// PID column.
func cmdPs(args []string) (int, error) {
	fs := flag.NewFlagSet("ps", flag.ContinueOnError)
	format := fs.StringP("format", "f", "table", "table or json")
	if err := fs.Parse(args); err != nil {
		return 0, err
	}
	if fs.NArg() < 1 {
		return 0, errors.New("ps: want a container id")
	}
	if *format != "table" && *format != "json" {
		return 0, fmt.Errorf("ps --format %q: table or json", *format)
	}
	st, err := g.load(fs.Arg(0))
	if err != nil {
		return 0, err
	}
	pids := []int{}
	if st.Status != specs.StateStopped {
		for _, d := range st.Cgroup {
			b, _ := os.ReadFile(filepath.Join(d, "cgroup.procs"))
			for _, f := range strings.Fields(string(b)) {
				if pid, err := strconv.Atoi(f); err == nil && !slices.Contains(pids, pid) {
					pids = append(pids, pid)
				}
			}
		}
	}
	slices.Sort(pids)
	if *format == "json" {
		b, _ := json.Marshal(pids)
		fmt.Println(string(b))
		return 0, nil
	}
	fmt.Println("PID")
	for _, p := range pids {
		fmt.Println(p)
	}
	return 0, nil
}

// cmdUpdate writes new resources to a container's cgroup: the
// linux.resources JSON of --resources (a file, or - for stdin), which
// podman passes, or runc's flags for the common ones.
func cmdUpdate(args []string) (int, error) {
	fs := flag.NewFlagSet("update", flag.ContinueOnError)
	file := fs.StringP("resources", "r", "", "linux.resources JSON: a file, or - for stdin")
	memory := fs.Int64("memory", 0, "memory limit in bytes")
	swap := fs.Int64("memory-swap", 0, "memory and swap limit in bytes (-1: unlimited)")
	reservation := fs.Int64("memory-reservation", 0, "memory reservation in bytes")
	pids := fs.Int64("pids-limit", 0, "maximum number of tasks (-1: unlimited)")
	quota := fs.Int64("cpu-quota", 0, "CPU time in microseconds per period (-1: unlimited)")
	period := fs.Uint64("cpu-period", 0, "CPU period in microseconds")
	shares := fs.Uint64("cpu-share", 0, "CPU shares")
	cpus := fs.String("cpuset-cpus", "", "CPUs the container may run on")
	mems := fs.String("cpuset-mems", "", "memory nodes the container may use")
	id, err := oneID(fs, args)
	if err != nil {
		return 0, err
	}
	st, err := g.load(id)
	if err != nil {
		return 0, err
	}
	if st.Status == specs.StateStopped {
		return 0, fmt.Errorf("update %s: the container is stopped", id)
	}
	res := &specs.LinuxResources{}
	if *file != "" {
		var b []byte
		if *file == "-" {
			b, err = io.ReadAll(os.Stdin)
		} else {
			b, err = os.ReadFile(*file)
		}
		if err != nil {
			return 0, fmt.Errorf("update --resources: %w", err)
		}
		if err := json.Unmarshal(b, res); err != nil {
			return 0, fmt.Errorf("update --resources %s: not linux.resources JSON: %w", *file, err)
		}
	}
	set := func(name string) bool { return fs.Changed(name) }
	mem := func() *specs.LinuxMemory {
		if res.Memory == nil {
			res.Memory = &specs.LinuxMemory{}
		}
		return res.Memory
	}
	cpu := func() *specs.LinuxCPU {
		if res.CPU == nil {
			res.CPU = &specs.LinuxCPU{}
		}
		return res.CPU
	}
	if set("memory") {
		mem().Limit = memory
	}
	if set("memory-swap") {
		mem().Swap = swap
	}
	if set("memory-reservation") {
		mem().Reservation = reservation
	}
	if set("pids-limit") {
		res.Pids = &specs.LinuxPids{Limit: *pids}
	}
	if set("cpu-quota") {
		cpu().Quota = quota
	}
	if set("cpu-period") {
		cpu().Period = period
	}
	if set("cpu-share") {
		cpu().Shares = shares
	}
	if set("cpuset-cpus") {
		cpu().Cpus = *cpus
	}
	if set("cpuset-mems") {
		cpu().Mems = *mems
	}
	if err := cgroup.UpdateOCI(st.cgroupV2(), st.Cgroup, res); err != nil {
		return 0, fmt.Errorf("update %s: %w", id, err)
	}
	return 0, nil
}
