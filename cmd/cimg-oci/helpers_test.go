package main

// cimg-oci tests, for real: podman (and conmon) drive the binary built
// here, over a directory holding the static probe (testdata/probe) as
// /bin/app; other tests call cimg-oci itself on a bundle. They need root
// and podman, and fail, not skip, without them (make deps-test installs
// podman). Every test has its own podman storage and cimg-oci state
// (t.TempDir) and checks at cleanup that nothing of its containers is
// left: state, cgroups, processes, mounts.

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	specs "github.com/opencontainers/runtime-spec/specs-go"

	"cimg.dev/cimg/internal/mounttest"
	"cimg.dev/cimg/internal/testbin"
)

var cimgOCI, cimgBuild, probe string

func TestMain(m *testing.M) {
	if os.Getenv(inVMEnv) != "" { // TestCgroupV2InVM runs a test of this binary in the VM: nothing to build there
		os.Exit(m.Run())
	}
	// The container cgroups go with each delete; the parents they were
	// made in (cimg-oci/, the suite's testdir/) are the tests' to remove.
	run := func() int {
		before := map[string]bool{}
		for _, d := range cgroupTops() {
			before[d] = true
		}
		code := m.Run()
		for _, d := range cgroupTops() {
			if !before[d] {
				if err := removeCgroupTree(d); err != nil {
					fmt.Fprintln(os.Stderr, "cgroup left by the tests:", err)
					code = 1
				}
			}
		}
		return code
	}
	testbin.Main(run, map[string]string{"cimg-oci": ".", "cimg-build": "../cimg-build", "probe": "../../testdata/probe"},
		func(p map[string]string) { cimgOCI, cimgBuild, probe = p["cimg-oci"], p["cimg-build"], p["probe"] })
}

// rootfs is a container root: the probe at /bin/app, and nothing else.
func rootfs(t *testing.T) string {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "rootfs")
	if err := os.MkdirAll(filepath.Join(dir, "bin"), 0o755); err != nil {
		t.Fatal(err)
	}
	os.Chmod(filepath.Dir(dir), 0o755) // a user namespace's root must reach it
	b, err := os.ReadFile(probe)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "bin/app"), b, 0o755); err != nil {
		t.Fatal(err)
	}
	return dir
}

type result struct {
	stdout, stderr string
	code           int
}

// podmanEnv is one test's podman: its own storage, run and tmp dirs, and
// cimg-oci's state under its own --root.
type podmanEnv struct {
	t      *testing.T
	args   []string
	oci    string // cimg-oci's --root
	rootfs string
	before map[string]bool // traces() when the test began
}

func newPodman(t *testing.T) *podmanEnv {
	t.Helper()
	mounttest.RequireRoot(t)
	if _, err := exec.LookPath("podman"); err != nil {
		t.Fatal("podman is not installed: make deps-test installs it (apt-get install podman)")
	}
	d := t.TempDir()
	// cimg-oci's state is at its default root: podman passes runtime
	// flags to the runtime, but not to the cleanup it has conmon run.
	p := &podmanEnv{t: t, oci: "/run/cimg-oci", rootfs: rootfs(t)}
	p.args = []string{"--root", filepath.Join(d, "storage"), "--runroot", filepath.Join(d, "run"), "--tmpdir", filepath.Join(d, "tmp"),
		"--cgroup-manager", "cgroupfs", "--events-backend", "file", "--runtime", cimgOCI}
	p.before = traces()
	t.Cleanup(p.cleanup)
	return p
}

// traces lists what containers leave on the host while they exist:
// cimg-oci's state directories and podman's container cgroups. (A --rm
// container is gone from podman's list by cleanup: its id is found
// here.)
func traces() map[string]bool {
	m := map[string]bool{}
	for _, pat := range []string{"/run/cimg-oci/*", "/sys/fs/cgroup/*/libpod_parent/libpod-*"} {
		l, _ := filepath.Glob(pat)
		for _, p := range l {
			m[p] = true
		}
	}
	return m
}

// runFlags are every podman run's: no network (the host's bridge and
// firewall stay untouched), and rlimits within this host's: root here
// lacks CAP_SYS_RESOURCE, and podman's default nofile (1048576) is above
// the hard limit it may set (runc and crun fail the same way).
var runFlags = []string{"--network", "none", "--ulimit", "nofile=1024:1024", "--ulimit", "nproc=4096:4096"}

func (p *podmanEnv) cmd(args ...string) *exec.Cmd {
	return exec.Command("podman", append(slicesClone(p.args), args...)...)
}

func slicesClone(s []string) []string { return append([]string(nil), s...) }

func (p *podmanEnv) run(args ...string) result {
	p.t.Helper()
	return runCmd(p.t, p.cmd(args...))
}

// podRun is `podman run` with runFlags and the probe's root.
func (p *podmanEnv) podRun(flags []string, app ...string) result {
	p.t.Helper()
	args := append([]string{"run"}, runFlags...)
	args = append(append(args, flags...), "--rootfs", p.rootfs, "/bin/app")
	return p.run(append(args, app...)...)
}

func runCmd(t *testing.T, c *exec.Cmd) result {
	t.Helper()
	// Files, not pipes: a container's process inherits create's stdio and
	// would hold a pipe open, and Wait with it, for as long as it runs.
	var files [2]*os.File
	for i := range files {
		f, err := os.CreateTemp("", "out")
		if err != nil {
			t.Fatal(err)
		}
		os.Remove(f.Name())
		defer f.Close()
		files[i] = f
	}
	c.Stdout, c.Stderr = files[0], files[1]
	if err := c.Start(); err != nil {
		t.Fatalf("%v: %v", c.Args, err)
	}
	done := make(chan error, 1)
	go func() { done <- c.Wait() }()
	var err error
	select {
	case err = <-done:
	case <-time.After(2 * time.Minute):
		c.Process.Kill()
		<-done
		t.Fatalf("%v: no end after 2 minutes", c.Args)
	}
	var r result
	for i, p := range []*string{&r.stdout, &r.stderr} {
		b, _ := os.ReadFile(fmt.Sprintf("/proc/self/fd/%d", files[i].Fd()))
		*p = string(b)
	}
	if ee, ok := err.(*exec.ExitError); ok {
		r.code = ee.ExitCode()
	} else if err != nil {
		t.Fatalf("%v: %v", c.Args, err)
	}
	return r
}

// cleanup removes every container of this podman, then checks nothing
// of them is left.
func (p *podmanEnv) cleanup() {
	t := p.t
	ids := strings.Fields(runCmd(t, p.cmd("ps", "-a", "-q", "--no-trunc")).stdout)
	if r := runCmd(t, p.cmd("rm", "-a", "-f", "-t", "0")); r.code != 0 {
		t.Errorf("podman rm -a -f: %d\n%s", r.code, r.stderr)
	}
	for _, id := range ids {
		noTrace(t, id)
	}
	for tr := range traces() {
		if !p.before[tr] {
			t.Errorf("left behind: %s", tr)
		}
	}
	// The storage's own mounts (podman's, not the runtime's) go too.
	runCmd(t, exec.Command("podman", append(slicesClone(p.args), "system", "reset", "-f")...))
}

// noTrace fails t if a cgroup, process or mount of container id is left.
func noTrace(t *testing.T, id string) {
	t.Helper()
	filepath.WalkDir("/sys/fs/cgroup", func(path string, d os.DirEntry, err error) error {
		if err != nil || !d.IsDir() {
			return nil
		}
		if strings.Contains(d.Name(), id) {
			t.Errorf("cgroup left behind: %s", path)
			return filepath.SkipDir
		}
		if strings.Count(path, "/") > 7 {
			return filepath.SkipDir
		}
		return nil
	})
	mi, _ := os.ReadFile("/proc/self/mountinfo")
	for _, l := range strings.Split(string(mi), "\n") {
		if strings.Contains(l, id) && !strings.Contains(l, "/userdata/shm") {
			t.Errorf("mount left behind: %s", l)
		}
	}
	procs, _ := filepath.Glob("/proc/[0-9]*/cmdline")
	for _, c := range procs {
		b, _ := os.ReadFile(c)
		if bytes.Contains(b, []byte(id)) && !bytes.Contains(b, []byte("podman")) {
			t.Errorf("process left behind: %s %q", c, bytes.ReplaceAll(b, []byte{0}, []byte{' '}))
		}
	}
}

// report is the probe's default output: what the app sees.
type report struct {
	PID      int               `json:"pid"`
	IDs      []int             `json:"ids"`
	Status   map[string]string `json:"status"`
	Hostname string            `json:"hostname"`
	Mounts   []string          `json:"mounts"`
	NS       map[string]string `json:"ns"`
	NoFile   [2]uint64         `json:"nofile"`
}

func parseReport(t *testing.T, s string) report {
	t.Helper()
	var r report
	if err := json.Unmarshal([]byte(strings.TrimSpace(s)), &r); err != nil {
		t.Fatalf("probe report: %v\n%s", err, s)
	}
	return r
}

// bundle writes a bundle for cimg-oci itself: `cimg-oci spec`'s config,
// edited, over a probe root.
func bundle(t *testing.T, edit func(*specs.Spec)) string {
	t.Helper()
	mounttest.RequireRoot(t)
	root := rootfs(t)
	dir := filepath.Dir(root)
	if r := runCmd(t, exec.Command(cimgOCI, "spec", "--bundle", dir)); r.code != 0 {
		t.Fatalf("cimg-oci spec: %s", r.stderr)
	}
	b, err := os.ReadFile(filepath.Join(dir, "config.json"))
	if err != nil {
		t.Fatal(err)
	}
	s := &specs.Spec{}
	if err := json.Unmarshal(b, s); err != nil {
		t.Fatal(err)
	}
	s.Process.Terminal = false
	s.Process.Args = []string{"/bin/app"}
	s.Process.Rlimits = nil
	if edit != nil {
		edit(s)
	}
	b, _ = json.Marshal(s)
	if err := os.WriteFile(filepath.Join(dir, "config.json"), b, 0o644); err != nil {
		t.Fatal(err)
	}
	return dir
}

// ociEnv runs cimg-oci with its own --root, and deletes (--force) what a
// test left at cleanup, checking nothing else is left.
type ociEnv struct {
	t    *testing.T
	root string
	ids  []string
}

func newOCI(t *testing.T) *ociEnv {
	o := &ociEnv{t: t, root: filepath.Join(t.TempDir(), "state")}
	t.Cleanup(func() {
		for _, id := range o.ids {
			runCmd(t, o.cmd("delete", "--force", id))
			noTrace(t, id)
		}
		entries, _ := os.ReadDir(o.root)
		for _, e := range entries {
			t.Errorf("cimg-oci state left behind: %s", e.Name())
		}
	})
	return o
}

func (o *ociEnv) cmd(args ...string) *exec.Cmd {
	return exec.Command(cimgOCI, append([]string{"--root", o.root}, args...)...)
}

func (o *ociEnv) run(args ...string) result {
	o.t.Helper()
	return runCmd(o.t, o.cmd(args...))
}

// id is a fresh container id, deleted at cleanup.
func (o *ociEnv) id() string {
	id := fmt.Sprintf("cimgtest-%d-%d", os.Getpid(), time.Now().UnixNano())
	o.ids = append(o.ids, id)
	return id
}

func (o *ociEnv) state(id string) specs.State {
	o.t.Helper()
	r := o.run("state", id)
	if r.code != 0 {
		o.t.Fatalf("state %s: %s", id, r.stderr)
	}
	var s specs.State
	if err := json.Unmarshal([]byte(r.stdout), &s); err != nil {
		o.t.Fatalf("state %s: %v\n%s", id, err, r.stdout)
	}
	return s
}
