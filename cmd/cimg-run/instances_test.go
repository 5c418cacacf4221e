package main

// Named instances, end to end: cimg-run run [-d] [--name], ps, stop,
// kill, inspect, logs and rm, driven through the binary as an operator
// would, each test in a state directory of its own.

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"cimg.dev/cimg/internal/instance"
)

// instCmd is `cimg-run SUB --state-dir STATE ARGS...`: subcommands take
// their flags after the subcommand's name. run also gets the test's own
// volume directory (never the host's).
func instCmd(state, sub string, args ...string) *exec.Cmd {
	argv := []string{sub, "--state-dir", state}
	if sub == "run" {
		argv = append(argv, "--volume-dir", volumeDir(state))
	}
	return exec.Command(cimgRun, append(argv, args...)...)
}

// inst runs a subcommand and returns its output and status. A command
// that hangs is killed after two minutes, so that a hang fails this test
// instead of the whole package's run at its timeout.
func inst(t *testing.T, state, sub string, args ...string) result {
	t.Helper()
	cmd := instCmd(state, sub, args...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	hung := time.AfterFunc(2*time.Minute, func() { cmd.Process.Kill() })
	err := cmd.Wait()
	if !hung.Stop() {
		t.Fatalf("cimg-run %s %s hung (killed after 2 minutes)\nstdout: %s\nstderr: %s", sub, strings.Join(args, " "), out.String(), errb.String())
	}
	code := 0
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatal(err)
	}
	return result{out.String(), errb.String(), code}
}

// mustInst runs a subcommand that must succeed and returns its stdout.
func mustInst(t *testing.T, state, sub string, args ...string) string {
	t.Helper()
	res := inst(t, state, sub, args...)
	if res.code != 0 {
		t.Fatalf("cimg-run %s %s: exit %d\nstdout: %s\nstderr: %s", sub, strings.Join(args, " "), res.code, res.stdout, res.stderr)
	}
	return res.stdout
}

// instState is a state directory of the test's own whose instances are
// stopped when the test ends (before stateDir's clean-up runs gc: a
// running instance keeps its image's cache mount busy), so that a failing
// test leaves no app running either.
func instState(t *testing.T) string {
	t.Helper()
	state := stateDir(t)
	t.Cleanup(func() { stopAll(t, state) })
	return state
}

// stopAll ends every instance of state still running: stop, then SIGKILL
// of any process of state left (a supervisor that outlived stop, or one
// whose record is gone; its app dies with it, by its parent-death
// signal); ps then settles what they left.
func stopAll(t *testing.T, state string) {
	out, _ := instCmd(state, "ps", "--json").Output()
	var rows []psRow
	json.Unmarshal(out, &rows)
	for _, r := range rows {
		if res, err := instCmd(state, "stop", "-t", "1", r.Name).CombinedOutput(); err != nil {
			t.Logf("clean-up: stop %s: %v: %s", r.Name, err, res)
		}
	}
	if !settle(func() bool {
		left := ourProcesses(state)
		for _, pid := range left {
			syscall.Kill(pid, syscall.SIGKILL)
		}
		return len(left) == 0
	}) {
		t.Errorf("clean-up: processes of %s survive SIGKILL: %v", state, ourProcesses(state))
	}
	instCmd(state, "ps", "-a").Run()
}

// ourProcesses lists the processes that belong to state: its path in
// their command line (a supervisor before it becomes the slim waiter), or
// an fd open under it (the slim waiter keeps the instance's directory and
// lock open; its command line does not name the state directory).
func ourProcesses(state string) []int {
	var pids []int
	procs, _ := filepath.Glob("/proc/[0-9]*")
	for _, p := range procs {
		pid, err := strconv.Atoi(filepath.Base(p))
		if err != nil || pid == os.Getpid() {
			continue
		}
		cl, _ := os.ReadFile(p + "/cmdline")
		if slices.ContainsFunc(strings.Split(string(cl), "\x00"), func(a string) bool {
			_, v, _ := strings.Cut(a, "=") // --state-dir=DIR
			return under(a, state) || under(v, state)
		}) {
			pids = append(pids, pid)
			continue
		}
		fds, _ := os.ReadDir(p + "/fd")
		for _, fd := range fds {
			if target, _ := os.Readlink(p + "/fd/" + fd.Name()); under(target, state) {
				pids = append(pids, pid)
				break
			}
		}
	}
	return pids
}

// under reports whether path is dir or below it.
func under(path, dir string) bool { return path == dir || strings.HasPrefix(path, dir+"/") }

// expectNoProcesses fails if a process of state is left (a supervisor
// that did not end, or a stray app holding an fd of ours).
func expectNoProcesses(t *testing.T, state string) {
	t.Helper()
	var left []int
	if !settle(func() bool { left = ourProcesses(state); return len(left) == 0 }) {
		for _, pid := range left {
			cl, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
			t.Errorf("process %d of the state directory is left: %q", pid, bytes.ReplaceAll(cl, []byte{0}, []byte{' '}))
		}
	}
}

// psList is `ps --json` (with -a: `ps -a --json`).
func psList(t *testing.T, state string, all bool) []psRow {
	t.Helper()
	args := []string{"--json"}
	if all {
		args = append(args, "-a")
	}
	var rows []psRow
	out := mustInst(t, state, "ps", args...)
	if err := json.Unmarshal([]byte(out), &rows); err != nil {
		t.Fatalf("ps --json: %v\n%s", err, out)
	}
	return rows
}

// psFind is name's row in ps -a --json, nil if ps does not list it.
func psFind(t *testing.T, state, name string) *psRow {
	t.Helper()
	for _, r := range psList(t, state, true) {
		if r.Name == name {
			return &r
		}
	}
	return nil
}

// names are the rows' names.
func names(rows []psRow) []string {
	var n []string
	for _, r := range rows {
		n = append(n, r.Name)
	}
	return n
}

// instanceDirs lists STATE/instances: the instances' directories, the
// .lock, and whatever else a start left there.
func instanceDirs(state string) []string {
	entries, _ := os.ReadDir(instance.Root(state))
	var names []string
	for _, e := range entries {
		names = append(names, e.Name())
	}
	return names
}

// readState is the instance's state.json as its supervisor wrote it.
func readState(t *testing.T, state, name string) instance.State {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(instance.Root(state), name, "state.json"))
	if err != nil {
		t.Fatal(err)
	}
	var st instance.State
	if err := json.Unmarshal(b, &st); err != nil {
		t.Fatalf("state.json of %s: %v\n%s", name, err, b)
	}
	return st
}

// waitEnded waits until ps -a no longer says name runs, and returns its row.
func waitEnded(t *testing.T, state, name string) psRow {
	t.Helper()
	var r *psRow
	waitFor(t, func() bool {
		r = psFind(t, state, name)
		return r != nil && r.State != "running" && r.State != "starting"
	})
	return *r
}

// waitLogged waits until name's log holds want: the probe prints "ready"
// once its signal handling is set up, so a SIGTERM sent afterwards is
// not lost to an app that has not asked for it yet.
func waitLogged(t *testing.T, state, name, want string) {
	t.Helper()
	waitFor(t, func() bool { return strings.Contains(inst(t, state, "logs", name).stdout, want) })
}

// gone reports whether pid has exited (gone, or a zombie its new parent
// has not reaped yet) or is another process now (start time differs).
func gone(pid int, start uint64) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return true
	}
	if i := bytes.LastIndexByte(b, ')'); i > 0 && len(b) > i+2 && b[i+2] == 'Z' {
		// A zombie leader, but its other threads may still be exiting, and
		// with them the fds (and the instance lock) they share: gone once
		// none of them is left.
		tasks, _ := os.ReadDir(fmt.Sprintf("/proc/%d/task", pid))
		for _, task := range tasks {
			tb, err := os.ReadFile(fmt.Sprintf("/proc/%d/task/%s/stat", pid, task.Name()))
			if j := bytes.LastIndexByte(tb, ')'); err == nil && j > 0 && len(tb) > j+2 && tb[j+2] != 'Z' && tb[j+2] != 'X' {
				return false
			}
		}
		return true
	}
	st, err := instance.ProcStart(pid)
	return err != nil || start != 0 && st != start
}

// expectCgroupsGone fails unless every cgroup directory of the instance
// has been removed.
func expectCgroupsGone(t *testing.T, st instance.State, when string) {
	t.Helper()
	if len(st.Cgroup) == 0 {
		t.Errorf("%s: state.json of %s records no cgroup", when, st.Name)
	}
	for c, d := range st.Cgroup {
		if _, err := os.Stat(d); !os.IsNotExist(err) {
			t.Errorf("%s: %s cgroup %s of %s is still there (%v)", when, c, d, st.Name, err)
		}
	}
}

// inCgroups fails unless pid is a member of each of the instance's cgroup
// directories: by /proc/PID/cgroup (the line of the controller names the
// directory's path below the hierarchy) and by the directory's
// cgroup.procs.
func inCgroups(t *testing.T, pid int, cg map[string]string) {
	t.Helper()
	if len(cg) == 0 {
		t.Fatal("no cgroup recorded")
	}
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/cgroup", pid))
	if err != nil {
		t.Fatal(err)
	}
	for c, dir := range cg {
		if got := cgroupLine(string(b), c); got == "" || got == "/" || !strings.HasSuffix(dir, got) {
			t.Errorf("pid %d is not in its %q cgroup %s: /proc/%d/cgroup:\n%s", pid, c, dir, pid, b)
		}
		procs, _ := os.ReadFile(filepath.Join(dir, "cgroup.procs"))
		if !slices.Contains(strings.Fields(string(procs)), strconv.Itoa(pid)) {
			t.Errorf("pid %d is not in %s/cgroup.procs: %q", pid, dir, procs)
		}
	}
}

// ourCounts is counts with the cgroups narrowed to those of probe images
// (named probe-PID, in any hierarchy): the host may run other cimg apps
// meanwhile, whose cgroups are not this test's to count.
func ourCounts(t *testing.T) map[string]int {
	c := counts(t)
	v1, _ := filepath.Glob("/sys/fs/cgroup/*/cimg/probe-*")
	v2, _ := filepath.Glob("/sys/fs/cgroup/cimg/probe-*")
	c["cgroups"] = len(v1) + len(v2)
	return c
}

// expectOurCounts fails unless ourCounts settle back to before
// (expectCounts, with ourCounts in place of counts).
func expectOurCounts(t *testing.T, before map[string]int, when string) {
	t.Helper()
	var after map[string]int
	if !settle(func() bool { after = ourCounts(t); return fmt.Sprint(after) == fmt.Sprint(before) }) {
		t.Errorf("%s: %v, before: %v", when, after, before)
	}
}

// expectNothingLeft fails unless ourCounts settle back to before and no
// process of state is left.
func expectNothingLeft(t *testing.T, state string, before map[string]int, when string) {
	t.Helper()
	expectOurCounts(t, before, when)
	expectNoProcesses(t, state)
}

// sleeperImage is the probe with a memory limit (TestInstanceOOM's hog
// goes over it) and a pids limit, as services are usually run.
func sleeperImage(t *testing.T) string {
	return probeImage(t, "[app]\ncommand = [\"/usr/bin/probe\"]\n[limits]\nmemory = \"32MiB\"\npids = 16\n")
}

func TestInstanceLifecycle(t *testing.T) {
	state := instState(t)
	img := sleeperImage(t)
	runExit0(t, state, img) // the cache mount, which stays
	before := ourCounts(t)

	out := mustInst(t, state, "run", "-d", "--name", "web", img, "--", "sleep")
	if out != "web\n" {
		t.Errorf("run -d printed %q, want \"web\\n\"", out)
	}
	// run -d returns once the app runs: ps says so at once, with a pid
	// that is in the instance's cgroup.
	rows := psList(t, state, false)
	if len(rows) != 1 || rows[0].Name != "web" {
		t.Fatalf("ps right after run -d: %+v", rows)
	}
	row := rows[0]
	st := readState(t, state, "web")
	if row.State != "running" || row.Pid == 0 || row.Pid != st.Pid {
		t.Errorf("ps: state %q pid %d, state.json pid %d", row.State, row.Pid, st.Pid)
	}
	inCgroups(t, row.Pid, st.Cgroup)

	var ins struct {
		RootHash string `json:"root_hash"`
		Manifest struct{ Name, Version string }
	}
	b, err := exec.Command(cimgBuild, "inspect", "--json", img).Output()
	if err != nil {
		t.Fatalf("cimg-build inspect: %v", err)
	}
	if err := json.Unmarshal(b, &ins); err != nil || ins.RootHash == "" {
		t.Fatalf("cimg-build inspect --json: %v\n%s", err, b)
	}
	abs, _ := filepath.Abs(img)
	if row.App != "probe" || row.Version != ins.Manifest.Version || row.RootHash != ins.RootHash || row.Image != abs {
		t.Errorf("ps --json: app %q version %q root_hash %q image %q; want probe, %q, %q (cimg-build inspect), %q",
			row.App, row.Version, row.RootHash, row.Image, ins.Manifest.Version, ins.RootHash, abs)
	}
	if st.RootHash != ins.RootHash {
		t.Errorf("state.json root_hash %q, cimg-build inspect %q", st.RootHash, ins.RootHash)
	}
	if row.Memory == nil || *row.Memory <= 0 || row.Pids == nil || *row.Pids < 1 {
		t.Errorf("ps --json: memory_bytes %v pids %v, want both from the running cgroup", row.Memory, row.Pids)
	}
	if row.Exit != nil {
		t.Errorf("ps --json: a running instance has an exit record %+v", row.Exit)
	}

	var in struct {
		Name       string            `json:"name"`
		State      string            `json:"state"`
		Supervisor int               `json:"supervisor_pid"`
		Detached   bool              `json:"detached"`
		Cgroup     map[string]string `json:"cgroup"`
		Command    []string          `json:"command"`
		Dir        string            `json:"state_dir"`
		Config     *struct {
			Name     string
			Argv     []string
			StateDir string
		} `json:"config"`
	}
	out = mustInst(t, state, "inspect", "web")
	if err := json.Unmarshal([]byte(out), &in); err != nil {
		t.Fatalf("inspect: %v\n%s", err, out)
	}
	if in.Name != "web" || in.State != "running" || !in.Detached || in.Supervisor != st.Supervisor || in.Supervisor == 0 ||
		fmt.Sprint(in.Cgroup) != fmt.Sprint(st.Cgroup) || in.Dir != filepath.Join(instance.Root(state), "web") {
		t.Errorf("inspect: %s", out)
	}
	if in.Config == nil || in.Config.Name != "probe" || !slices.Equal(in.Config.Argv, []string{"/usr/bin/probe", "sleep"}) || in.Config.StateDir != state {
		t.Errorf("inspect: config is not the launch's: %s", out)
	}
	if slices.ContainsFunc(in.Command, func(a string) bool { return strings.Contains(a, readyFlag) }) || !slices.Contains(in.Command, "--name") {
		t.Errorf("inspect: command %q is not the operator's command line", in.Command)
	}

	// A running instance is not forgotten; unknown names are errors.
	if res := inst(t, state, "rm", "web"); res.code == 0 || !strings.Contains(res.stderr, "is running") {
		t.Errorf("rm of a running instance: %+v", res)
	}
	for _, sub := range []string{"stop", "rm", "inspect", "logs"} {
		if res := inst(t, state, sub, "nosuch"); res.code == 0 || !strings.Contains(res.stderr, `no instance "nosuch"`) {
			t.Errorf("%s of an unknown instance: %+v", sub, res)
		}
	}

	waitLogged(t, state, "web", "ready")
	if out := mustInst(t, state, "stop", "web", "-t", "5"); out != "web exited 0\n" {
		t.Errorf("stop printed %q, want \"web exited 0\\n\"", out)
	}
	if !gone(st.Pid, st.PidStart) {
		t.Errorf("the app (pid %d) outlived stop", st.Pid)
	}
	expectCgroupsGone(t, st, "after stop")
	if rows := psList(t, state, false); len(rows) != 0 {
		t.Errorf("ps lists ended instances: %+v", rows)
	}
	rows = psList(t, state, true)
	if len(rows) != 1 || rows[0].Name != "web" || rows[0].State != "exited 0" || rows[0].Exit == nil || rows[0].Exit.Code != 0 || rows[0].Pid != 0 {
		t.Errorf("ps -a after stop: %+v", rows)
	}
	if text := mustInst(t, state, "ps", "-a"); !regexp.MustCompile(`(?m)^web +probe +\S+ +exited 0 `).MatchString(text) {
		t.Errorf("ps -a (text):\n%s", text)
	}
	mustInst(t, state, "rm", "web")
	if rows := psList(t, state, true); len(rows) != 0 {
		t.Errorf("ps -a after rm: %+v", rows)
	}
	if _, err := os.Stat(filepath.Join(instance.Root(state), "web")); !os.IsNotExist(err) {
		t.Errorf("rm left the instance directory: %v", err)
	}
	if res := inst(t, state, "inspect", "web"); res.code == 0 || !strings.Contains(res.stderr, `no instance "web"`) {
		t.Errorf("inspect after rm: %+v", res)
	}
	expectNothingLeft(t, state, before, "after run -d, stop, rm")
}

func TestInstanceDefaultName(t *testing.T) {
	state := instState(t)
	img := sleeperImage(t)
	out := mustInst(t, state, "run", "-d", img, "--", "sleep")
	name := strings.TrimSuffix(out, "\n")
	if !regexp.MustCompile(`^probe-[0-9a-f]{6}$`).MatchString(name) {
		t.Fatalf("run -d without --name printed %q, want probe-XXXXXX (6 hex digits)", out)
	}
	rows := psList(t, state, false)
	if len(rows) != 1 || rows[0].Name != name || rows[0].State != "running" {
		t.Errorf("ps: %+v, want %s running", rows, name)
	}
	// A second start without --name gets another name, beside the first.
	out2 := mustInst(t, state, "run", "-d", img, "--", "sleep")
	if n2 := strings.TrimSuffix(out2, "\n"); n2 == name || !regexp.MustCompile(`^probe-[0-9a-f]{6}$`).MatchString(n2) {
		t.Errorf("second default name %q (first %q)", n2, name)
	}
	if rows := psList(t, state, false); len(rows) != 2 {
		t.Errorf("ps after two starts: %v", names(rows))
	}
}

func TestInstanceStopKillsDeafAppAtTimeout(t *testing.T) {
	state := instState(t)
	img := sleeperImage(t)
	mustInst(t, state, "run", "-d", "--name", "deaf", img, "--", "deaf")
	st := readState(t, state, "deaf")
	waitLogged(t, state, "deaf", "ready") // SIGTERM is ignored from now on
	if out := mustInst(t, state, "stop", "-t", "1", "deaf"); out != "deaf killed by SIGKILL\n" {
		t.Errorf("stop -t 1 of an app ignoring SIGTERM printed %q, want \"deaf killed by SIGKILL\\n\"", out)
	}
	r := psFind(t, state, "deaf")
	if r == nil || r.State != "killed by SIGKILL" || r.Exit == nil || r.Exit.Signal != "SIGKILL" || r.Exit.Code != 137 {
		t.Errorf("ps -a: %+v", r)
	}
	if !gone(st.Pid, st.PidStart) {
		t.Errorf("the app (pid %d) outlived stop", st.Pid)
	}
	expectCgroupsGone(t, st, "after stop -t 1")
	expectNoProcesses(t, state)
}

// TestInstanceAppGetsNoInstanceFDs: the app of a detached instance has
// its output pipe on fds 1 and 2 and nothing of the instance's (its
// directory, lock, log or the start's report pipe): the probe's report,
// read from the log, lists its fds.
func TestInstanceAppGetsNoInstanceFDs(t *testing.T) {
	state := instState(t)
	img := sleeperImage(t)
	mustInst(t, state, "run", "-d", "--name", "rep", img)
	if r := waitEnded(t, state, "rep"); r.State != "exited 0" {
		t.Errorf("report: %s", r.State)
	}
	var rep probeReport
	log := mustInst(t, state, "logs", "rep")
	if err := json.Unmarshal([]byte(log), &rep); err != nil {
		t.Fatalf("the probe's report from the log: %v\n%s", err, log)
	}
	expectNoHostFDs(t, rep)
	fds := map[int]string{}
	for _, fd := range rep.FDs {
		n, target, _ := strings.Cut(fd, "=")
		i, _ := strconv.Atoi(n)
		fds[i] = target
		if i > 2 && (strings.HasPrefix(target, "pipe:") || strings.Contains(target, "instances")) {
			t.Errorf("fd %s of the instance leaked into the app", fd)
		}
	}
	if !strings.HasPrefix(fds[1], "pipe:") || fds[2] != fds[1] {
		t.Errorf("the app's fds: %q, want its stdout and stderr on the log pipe", rep.FDs)
	}
}

// TestInstanceOOM: an app killed by the OOM killer in its cgroup is
// recorded as such.
func TestInstanceOOM(t *testing.T) {
	state := instState(t)
	img := sleeperImage(t) // memory = 32MiB
	mustInst(t, state, "run", "-d", "--name", "hog", img, "--", "hog")
	st := readState(t, state, "hog")
	r := waitEnded(t, state, "hog")
	if r.State != "OOM-killed" || r.Exit == nil || !r.Exit.OOM || r.Exit.Signal != "SIGKILL" {
		t.Errorf("an app over its memory limit: %+v %+v", r, r.Exit)
	}
	expectCgroupsGone(t, st, "after the OOM kill")
	expectNoProcesses(t, state)
}

func TestInstanceKillSignal(t *testing.T) {
	state := instState(t)
	img := sleeperImage(t)
	start := func(name string) instance.State {
		mustInst(t, state, "run", "-d", "--name", name, img, "--", "sleep")
		waitLogged(t, state, name, "ready")
		return readState(t, state, name)
	}

	// TERM: the probe's sleep exits 0 on it, and says so in its log.
	start("term")
	mustInst(t, state, "kill", "term", "TERM")
	if r := waitEnded(t, state, "term"); r.State != "exited 0" {
		t.Errorf("kill term TERM: %s", r.State)
	}
	if log := mustInst(t, state, "logs", "term"); !strings.Contains(log, "got terminated") {
		t.Errorf("the app did not get SIGTERM: log %q", log)
	}
	// Not running any more: kill says so.
	if res := inst(t, state, "kill", "term"); res.code == 0 || !strings.Contains(res.stderr, "not running") {
		t.Errorf("kill of an ended instance: %+v", res)
	}

	// The default is KILL.
	st := start("dflt")
	mustInst(t, state, "kill", "dflt")
	if r := waitEnded(t, state, "dflt"); r.State != "killed by SIGKILL" || r.Exit == nil || r.Exit.Signal != "SIGKILL" || r.Exit.Code != 137 {
		t.Errorf("kill dflt: %+v", r)
	}
	expectCgroupsGone(t, st, "after kill")

	// A bad signal is a usage error and sends nothing; 9 is KILL.
	st = start("nine")
	for _, bad := range []string{"BOGUS", "SIGNOPE", "0", "65"} {
		res := inst(t, state, "kill", "nine", bad)
		if res.code != 2 || !strings.Contains(res.stderr, fmt.Sprintf("signal %q", bad)) {
			t.Errorf("kill nine %s: exit %d, stderr %q; want 2 and a message naming the signal", bad, res.code, res.stderr)
		}
	}
	if r := psFind(t, state, "nine"); r == nil || r.State != "running" {
		t.Errorf("after bad signals: %+v", r)
	}
	mustInst(t, state, "kill", "nine", "9")
	if r := waitEnded(t, state, "nine"); r.State != "killed by SIGKILL" {
		t.Errorf("kill nine 9: %s", r.State)
	}
	expectCgroupsGone(t, st, "after kill 9")

	if res := inst(t, state, "kill", "nosuch"); res.code == 0 || !strings.Contains(res.stderr, `no instance "nosuch"`) {
		t.Errorf("kill of an unknown instance: %+v", res)
	}
	expectNoProcesses(t, state)
}

// syncBuffer is a buffer a running command writes while the test reads it.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func TestInstanceLogs(t *testing.T) {
	state := instState(t)
	img := sleeperImage(t)

	// Three lines, and the app is gone.
	mustInst(t, state, "run", "-d", "--name", "lines", img, "--", "show", "/a", "/b", "/c")
	if r := waitEnded(t, state, "lines"); r.State != "exited 0" {
		t.Errorf("show: %s", r.State)
	}
	log := mustInst(t, state, "logs", "lines")
	if !regexp.MustCompile(`^/a=error: [^\n]*\n/b=error: [^\n]*\n/c=error: [^\n]*\n$`).MatchString(log) {
		t.Errorf("logs lines: %q", log)
	}
	if tail := mustInst(t, state, "logs", "--tail", "1", "lines"); !strings.HasPrefix(tail, "/c=") || strings.Count(tail, "\n") != 1 {
		t.Errorf("logs --tail 1: %q", tail)
	}
	if tail := mustInst(t, state, "logs", "lines", "--tail", "2"); !strings.HasPrefix(tail, "/b=") || strings.Count(tail, "\n") != 2 {
		t.Errorf("logs NAME --tail 2: %q", tail)
	}
	if tail := mustInst(t, state, "logs", "--tail", "10", "lines"); tail != log {
		t.Errorf("logs --tail 10 of 3 lines: %q", tail)
	}

	// -f follows a running instance and returns once it is stopped.
	mustInst(t, state, "run", "-d", "--name", "follow", img, "--", "sleep")
	f := instCmd(state, "logs", "-f", "follow")
	var fout syncBuffer
	f.Stdout, f.Stderr = &fout, &fout
	if err := f.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- f.Wait() }()
	waitFor(t, func() bool { return strings.Contains(fout.String(), "ready") })
	mustInst(t, state, "stop", "follow")
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("logs -f: %v: %s", err, fout.String())
		}
	case <-time.After(time.Minute): // a hang, not a timing
		f.Process.Kill()
		<-done
		t.Errorf("logs -f still follows a minute after the instance was stopped: %q", fout.String())
	}
	if !strings.Contains(fout.String(), "got terminated") {
		t.Errorf("logs -f did not print the app's last line: %q", fout.String())
	}

	// Bounded: the probe's show prints each PATH's first line, and
	// /proc/self/cmdline is one line (NUL-separated) holding every PATH:
	// n PATHs print about 19·n² bytes, here about 3.8 MB.
	const n = 450
	args := []string{"run", "-d", "--name", "big", img, "--", "show"}
	for i := 0; i < n; i++ {
		args = append(args, "/proc/self/cmdline")
	}
	mustInst(t, state, args[0], args[1:]...)
	if r := waitEnded(t, state, "big"); r.State != "exited 0" {
		t.Errorf("big: %s", r.State)
	}
	dir := filepath.Join(instance.Root(state), "big")
	var size [2]int64
	for i, name := range []string{"log", "log.1"} {
		fi, err := os.Stat(filepath.Join(dir, name))
		if err != nil {
			t.Fatalf("an app that wrote %d bytes: %v", 19*n*n, err)
		}
		size[i] = fi.Size()
		if size[i] > instance.LogMax {
			t.Errorf("%s is %d bytes, more than LogMax (%d)", name, size[i], instance.LogMax)
		}
	}
	if size[0]+size[1] > 2*instance.LogMax {
		t.Errorf("log + log.1 = %d bytes, more than 2×LogMax", size[0]+size[1])
	}
	// What is kept is the end of the output, whole lines.
	wantLine := "/proc/self/cmdline=" + strings.Join(append([]string{"/usr/bin/probe", "show"}, args[7:]...), "\x00") + "\x00\n"
	full := mustInst(t, state, "logs", "big")
	if int64(len(full)) != size[0]+size[1] || !strings.HasSuffix(full, "\n"+wantLine) {
		t.Errorf("logs big: %d bytes (log + log.1: %d), ends %q", len(full), size[0]+size[1], full[max(0, len(full)-80):])
	}
	if tail := mustInst(t, state, "logs", "--tail", "1", "big"); tail != wantLine {
		t.Errorf("logs --tail 1 big: %d bytes, want the last line (%d bytes)", len(tail), len(wantLine))
	}
	expectNoProcesses(t, state)
}

// TestInstanceLogsFollowRotation: logs -f, started while a detached app
// writes several times LogMax, prints a contiguous run of the app's
// lines up to its last: rotation (log → log.1, a new log) must not make
// it skip any. The lines are told apart by their number of slashes: the
// probe's show prints "PATH=" and the first line of PATH for each PATH,
// and /proc/self/cmdline, spelt /proc//self/cmdline, /proc///self/...,
// is one line (NUL-separated) holding them all: n PATHs print about
// n³/2 + 20·n² bytes, here about 3.5 MB.
func TestInstanceLogsFollowRotation(t *testing.T) {
	state := instState(t)
	img := sleeperImage(t)
	const n = 180
	var paths []string
	for i := range n {
		paths = append(paths, "/proc"+strings.Repeat("/", i+1)+"self/cmdline")
	}
	cmdline := strings.Join(append([]string{"/usr/bin/probe", "show"}, paths...), "\x00") + "\x00"
	line := func(i int) string { return paths[i] + "=" + cmdline }
	total := 0
	for i := range n {
		total += len(line(i)) + 1
	}
	if total <= 3*instance.LogMax {
		t.Fatalf("the app would write %d bytes, want more than 3×LogMax", total)
	}

	mustInst(t, state, "run", append([]string{"-d", "--name", "big", img, "--", "show"}, paths...)...)
	f := instCmd(state, "logs", "-f", "big")
	var fout, ferr syncBuffer
	f.Stdout, f.Stderr = &fout, &ferr
	if err := f.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- f.Wait() }()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("logs -f: %v: %s", err, ferr.String())
		}
	case <-time.After(2 * time.Minute): // a hang, not a timing
		f.Process.Kill()
		<-done
		t.Fatalf("logs -f still follows two minutes after it began: the app writes %d bytes and exits", total)
	}
	if r := waitEnded(t, state, "big"); r.State != "exited 0" {
		t.Errorf("big: %s", r.State)
	}

	// A follower slower than the app can lose a whole rotated file; it
	// must say so on stderr, once per gap, and print no spliced line.
	gaps := strings.Count(ferr.String(), "rotated away before this follower could read them")
	if gaps > 0 {
		t.Logf("logs -f fell behind the app %d time(s) and said so: %s", gaps, ferr.String())
	}

	// contiguous checks that out is lines first..n-1 of the app's output
	// (the first may be cut: log.1 begins where a rotation fell), but for
	// up to gaps skips, each after a line that may be cut (the follower
	// ends the line it was printing when it finds a file lost).
	contiguous := func(what, out string, gaps int) {
		t.Helper()
		parts := strings.Split(out, "\n")
		if parts[len(parts)-1] != "" {
			t.Errorf("%s does not end with a whole line", what)
		}
		parts = parts[:len(parts)-1]
		first := -1
		cut := func(p string) bool {
			for i := range n {
				if strings.HasPrefix(line(i), p) {
					return true
				}
			}
			return false
		}
		for k := 0; k < len(parts); k++ {
			p := parts[k]
			i := 0
			for i < n && line(i) != p {
				i++
			}
			switch {
			case i == n && k == 0:
				// a cut first line
			case i == n && gaps > 0 && k+1 < len(parts) && cut(p):
				// the line the follower was printing when it found a file
				// lost: the next must be whole, and is checked as a skip
				parts = append(parts[:k:k], parts[k+1:]...)
				k--
				gaps--
				first = -2 // the next whole line sets it again
			case i == n:
				t.Errorf("%s: line %d (%d bytes) is none of the app's", what, k, len(p))
				return
			case first < 0:
				first = i - k
			case i != first+k && gaps > 0 && i > first+k:
				gaps--
				first = i - k
			case i != first+k:
				t.Errorf("%s: after the app's line %d comes its line %d: %d lines (%d bytes) skipped",
					what, first+k-1, i, i-(first+k), func() int {
						s := 0
						for j := first + k; j < i; j++ {
							s += len(line(j)) + 1
						}
						return s
					}())
				return
			}
		}
		if first < 0 || first+len(parts)-1 != n-1 {
			t.Errorf("%s: %d lines, does not end with the app's last line (logs -f stderr: %q)", what, len(parts), ferr.String())
		}
	}
	full := mustInst(t, state, "logs", "big")
	contiguous("logs -f", fout.String(), gaps)
	contiguous("logs", full, 0)
	// However late logs -f began, what the log keeps at the end was
	// written after it began or was in log.1 or log when it did (log.1's
	// start only moves on): logs -f must have printed all of it, unless it
	// fell behind (and then it said so).
	if follow := fout.String(); gaps == 0 && !strings.HasSuffix(follow, full) {
		t.Errorf("logs -f printed %d bytes, which do not end with the %d bytes the log keeps (logs): it skipped output across a rotation (the app wrote %d bytes, LogMax is %d)",
			len(follow), len(full), total, instance.LogMax)
	}
	expectNoProcesses(t, state)
}

func TestInstanceNameRace(t *testing.T) {
	state := instState(t)
	img := sleeperImage(t)
	runExit0(t, state, img)
	before := ourCounts(t)
	// Twice: a name never used, then the name of the ended instance the
	// first round left (its record is replaced by exactly one winner).
	for round := range 2 {
		const n = 20
		results := make([]result, n)
		var wg sync.WaitGroup
		start := make(chan struct{})
		for i := range n {
			wg.Add(1)
			go func() {
				defer wg.Done()
				cmd := instCmd(state, "run", "-d", "--name", "same", img, "--", "sleep")
				var out, errb bytes.Buffer
				cmd.Stdout, cmd.Stderr = &out, &errb
				<-start
				err := cmd.Run()
				code := 0
				if ee, ok := err.(*exec.ExitError); ok {
					code = ee.ExitCode()
				} else if err != nil {
					code = -1
					errb.WriteString(err.Error())
				}
				results[i] = result{out.String(), errb.String(), code}
			}()
		}
		close(start)
		wg.Wait()
		won := 0
		for i, r := range results {
			switch {
			case r.code == 0 && r.stdout == "same\n":
				won++
			case r.code == 125 && strings.Contains(r.stderr, `instance name "same" is in use`):
			default:
				t.Errorf("round %d, start %d: exit %d, stdout %q, stderr %q", round, i, r.code, r.stdout, r.stderr)
			}
		}
		if won != 1 {
			t.Errorf("round %d: %d of %d concurrent starts of one name succeeded, want exactly 1", round, won, n)
		}
		if rows := psList(t, state, true); len(rows) != 1 || rows[0].Name != "same" || rows[0].State != "running" || rows[0].Exit != nil {
			t.Errorf("round %d: ps -a after the race: %+v", round, rows)
		}
		if left := instanceDirs(state); !slices.Equal(left, []string{".lock", "same"}) {
			t.Errorf("round %d: instance directory after the race: %q", round, left)
		}
		st := readState(t, state, "same")
		waitLogged(t, state, "same", "ready")
		if out := mustInst(t, state, "stop", "same"); out != "same exited 0\n" {
			t.Errorf("round %d: stop: %q", round, out)
		}
		expectCgroupsGone(t, st, "after stop")
		expectNoProcesses(t, state)
	}
	expectOurCounts(t, before, "after the races")
}

func TestInstanceStartStopLeak(t *testing.T) {
	state := instState(t)
	img := sleeperImage(t)
	runExit0(t, state, img)
	before := ourCounts(t)
	const n = 100
	var states []instance.State
	var supStart []uint64 // the supervisors' start times: a pid alone may be reused
	var want []string
	began := time.Now()
	for i := range n {
		name := fmt.Sprintf("n%03d", i)
		want = append(want, name)
		if out := mustInst(t, state, "run", "-d", "--name", name, img, "--", "sleep"); out != name+"\n" {
			t.Fatalf("run -d %s printed %q", name, out)
		}
		st := readState(t, state, name)
		ss, _ := instance.ProcStart(st.Supervisor)
		states, supStart = append(states, st), append(supStart, ss)
		waitLogged(t, state, name, "ready")
		if out := mustInst(t, state, "stop", "-t", "5", name); out != name+" exited 0\n" {
			t.Errorf("stop %s: %q", name, out)
		}
	}
	t.Logf("%d detached starts and stops: %v", n, time.Since(began).Round(time.Millisecond))
	if rows := psList(t, state, false); len(rows) != 0 {
		t.Errorf("ps lists %d running after all were stopped: %v", len(rows), names(rows))
	}
	rows := psList(t, state, true)
	if !slices.Equal(names(rows), want) {
		t.Errorf("ps -a lists %d: %v", len(rows), names(rows))
	}
	for _, r := range rows {
		if r.State != "exited 0" {
			t.Errorf("%s: %s", r.Name, r.State)
		}
	}
	for i, st := range states {
		if !gone(st.Pid, st.PidStart) || !gone(st.Supervisor, supStart[i]) {
			t.Errorf("%s: app %d or supervisor %d left", st.Name, st.Pid, st.Supervisor)
		}
		expectCgroupsGone(t, st, "after 100 starts and stops")
	}
	mustInst(t, state, "rm", want...)
	if left := instanceDirs(state); !slices.Equal(left, []string{".lock"}) {
		t.Errorf("instance directory after rm of all: %q", left)
	}
	expectNothingLeft(t, state, before, "after 100 starts and stops")
}

func TestInstanceSupervisorSIGKILLed(t *testing.T) {
	state := instState(t)
	img := sleeperImage(t)
	runExit0(t, state, img)
	before := ourCounts(t)

	// startAndKillSupervisor starts name, SIGKILLs its supervisor and waits
	// until that is dead (its lock goes with it).
	startAndKillSupervisor := func(name string) instance.State {
		mustInst(t, state, "run", "-d", "--name", name, img, "--", "sleep")
		waitLogged(t, state, name, "ready")
		st := readState(t, state, name)
		var in struct {
			Supervisor int `json:"supervisor_pid"`
		}
		json.Unmarshal([]byte(mustInst(t, state, "inspect", name)), &in)
		if in.Supervisor == 0 || in.Supervisor != st.Supervisor {
			t.Fatalf("inspect supervisor_pid %d, state.json %d", in.Supervisor, st.Supervisor)
		}
		if err := syscall.Kill(st.Supervisor, syscall.SIGKILL); err != nil {
			t.Fatal(err)
		}
		waitFor(t, func() bool { return gone(st.Supervisor, 0) })
		return st
	}

	// ps first: it finds the instance lost and settles it.
	st := startAndKillSupervisor("lost")
	r := psFind(t, state, "lost")
	if r == nil || r.State != "lost (supervisor killed)" || r.Exit == nil || !r.Exit.Lost || r.Pid != 0 {
		t.Errorf("ps -a after SIGKILL of the supervisor: %+v", r)
	}
	if rows := psList(t, state, false); len(rows) != 0 {
		t.Errorf("ps lists a lost instance as running: %+v", rows)
	}
	expectCgroupsGone(t, st, "after ps found the instance lost")
	waitFor(t, func() bool { return gone(st.Pid, st.PidStart) }) // its parent-death signal
	if res := inst(t, state, "stop", "lost"); res.code != 0 || res.stdout != "lost lost (supervisor killed)\n" {
		t.Errorf("stop of a lost instance: %+v", res)
	}
	if res := inst(t, state, "kill", "lost"); res.code == 0 || !strings.Contains(res.stderr, "not running") {
		t.Errorf("kill of a lost instance: %+v", res)
	}
	// The name is free again.
	if out := mustInst(t, state, "run", "-d", "--name", "lost", img, "--", "sleep"); out != "lost\n" {
		t.Errorf("run -d of a lost instance's name: %q", out)
	}
	if r := psFind(t, state, "lost"); r == nil || r.State != "running" || r.Exit != nil {
		t.Errorf("the new instance: %+v", r)
	}
	st2 := readState(t, state, "lost")
	waitLogged(t, state, "lost", "ready")
	if out := mustInst(t, state, "stop", "lost"); out != "lost exited 0\n" {
		t.Errorf("stop of the new instance: %q", out)
	}
	expectCgroupsGone(t, st2, "after stop of the new instance")

	// stop first, with nothing having looked since the SIGKILL.
	st = startAndKillSupervisor("direct")
	if res := inst(t, state, "stop", "direct"); res.code != 0 || res.stdout != "direct lost (supervisor killed)\n" {
		t.Errorf("stop right after SIGKILL of the supervisor: %+v", res)
	}
	expectCgroupsGone(t, st, "after stop of a lost instance")
	waitFor(t, func() bool { return gone(st.Pid, st.PidStart) })
	if r := psFind(t, state, "direct"); r == nil || r.State != "lost (supervisor killed)" {
		t.Errorf("ps -a: %+v", r)
	}

	// run first: the start over the lost record settles it (its cgroup
	// goes) and takes the name.
	st = startAndKillSupervisor("again")
	if out := mustInst(t, state, "run", "-d", "--name", "again", img, "--", "sleep"); out != "again\n" {
		t.Errorf("run -d right after SIGKILL of the supervisor of the name: %q", out)
	}
	expectCgroupsGone(t, st, "after a new start over a lost instance")
	waitFor(t, func() bool { return gone(st.Pid, st.PidStart) })
	if r := psFind(t, state, "again"); r == nil || r.State != "running" || r.Exit != nil {
		t.Errorf("the new instance: %+v", r)
	}
	st2 = readState(t, state, "again")
	waitLogged(t, state, "again", "ready")
	if out := mustInst(t, state, "stop", "again"); out != "again exited 0\n" {
		t.Errorf("stop of the new instance: %q", out)
	}
	expectCgroupsGone(t, st2, "after stop of the new instance")
	expectNothingLeft(t, state, before, "after the supervisors were killed")
}

func TestInstanceSetupFailureLeavesNothing(t *testing.T) {
	state := instState(t)
	notImage := filepath.Join(t.TempDir(), "not.cimg")
	os.WriteFile(notImage, []byte("not an image\n"), 0o644)
	for _, args := range [][]string{
		{"-d", "--name", "bad", "/nonexistent.cimg"},
		{"--name", "bad", "/nonexistent.cimg"},
		{"-d", "/nonexistent.cimg"},
		{"-d", "--name", "bad", notImage},
		{"--name", "bad", notImage},
	} {
		res := inst(t, state, "run", append(args, "--", "sleep")...)
		img := args[len(args)-1]
		if res.code != 125 || !strings.Contains(res.stderr, img) || res.stdout != "" {
			t.Errorf("run %q: exit %d, stdout %q, stderr %q; want 125 and an error naming the image", args, res.code, res.stdout, res.stderr)
		}
		if left := instanceDirs(state); len(left) > 1 || len(left) == 1 && left[0] != ".lock" {
			t.Errorf("run %q left %q in %s", args, left, instance.Root(state))
		}
		if rows := psList(t, state, true); len(rows) != 0 {
			t.Errorf("run %q: ps -a lists %+v", args, rows)
		}
	}
	expectNoProcesses(t, state)
}

func TestInstanceForeground(t *testing.T) {
	state := instState(t)
	img := sleeperImage(t)
	res := inst(t, state, "run", "--name", "fg", img, "--", "exit", "3")
	if res.code != 3 || res.stdout != "" {
		t.Errorf("run --name fg -- exit 3: %+v", res)
	}
	if rows := psList(t, state, false); len(rows) != 0 {
		t.Errorf("ps: %+v", rows)
	}
	r := psFind(t, state, "fg")
	if r == nil || r.State != "exited 3" || r.Exit == nil || r.Exit.Code != 3 {
		t.Fatalf("ps -a: %+v", r)
	}
	st := readState(t, state, "fg")
	if st.Detached {
		t.Errorf("a foreground instance is recorded as detached")
	}
	expectCgroupsGone(t, st, "after a foreground instance")
	// Its output went to the terminal: there is no log to show.
	if res := inst(t, state, "logs", "fg"); res.code == 0 || !strings.Contains(res.stderr, "not started with -d") {
		t.Errorf("logs of a foreground instance: %+v", res)
	}
	// A foreground instance is stopped like a detached one: its cimg-run
	// returns the app's status, 0 (the probe's sleep exits 0 on SIGTERM).
	fg := instCmd(state, "run", "--name", "fg2", img, "--", "sleep")
	var fout syncBuffer
	fg.Stdout = &fout
	if err := fg.Start(); err != nil {
		t.Fatal(err)
	}
	waitFor(t, func() bool { return strings.Contains(fout.String(), "ready") })
	// The app may print before its supervisor has recorded it (a loaded
	// CI machine saw "starting"): it is running once recorded.
	settle(func() bool { r := psFind(t, state, "fg2"); return r != nil && r.State != "starting" })
	if r := psFind(t, state, "fg2"); r == nil || r.State != "running" || r.Pid == 0 {
		t.Errorf("ps -a while a foreground instance runs: %+v", r)
	}
	if out := mustInst(t, state, "stop", "fg2"); out != "fg2 exited 0\n" {
		t.Errorf("stop of a foreground instance: %q", out)
	}
	if err := fg.Wait(); err != nil || !strings.Contains(fout.String(), "got terminated") {
		t.Errorf("the foreground cimg-run after stop: %v, output %q", err, fout.String())
	}

	// The name is taken over by the next start.
	if res := inst(t, state, "run", "--name", "fg", img, "--", "exit", "0"); res.code != 0 {
		t.Errorf("second run --name fg: %+v", res)
	}
	if r := psFind(t, state, "fg"); r == nil || r.State != "exited 0" {
		t.Errorf("ps -a after the second run: %+v", r)
	}
	expectNoProcesses(t, state)
}
