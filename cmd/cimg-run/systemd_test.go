package main

// Tests of the systemd units cimg-run writes, under a real systemd: PID 1
// of a systemd-nspawn container (internal/nspawn), since this host's init
// is not systemd. The container has writable memory, pids and devices
// hierarchies (v1, as on this host), so limits and delegation behave as
// on a device.

import (
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"cimg.dev/cimg/internal/nspawn"
)

// TestUnitVerifies: every generated unit passes systemd-analyze verify
// (flags with spaces, %, $ and the notify mode included).
func TestUnitVerifies(t *testing.T) {
	img := probeImage(t, "[app]\ncommand = [\"/usr/bin/probe\"]\n[limits]\nmemory = \"64MiB\"\n")
	dir := t.TempDir()
	for i, args := range [][]string{
		{img, "--", "sleep"},
		{"--ready", "notify", "--stop-timeout", "3s", img, "--", "notify"},
		{"--name", "odd", "-e", "GREETING=100% $HOME it's", "--memory", "32MiB", "--cap-add", "NET_RAW", "--grant", "cap=NET_RAW", img, "--", "show", "a b"},
	} {
		out, err := exec.Command(cimgRun, append([]string{"unit", "--unit-dir", dir, "--state-dir", "/run/cimg-test"}, args...)...).CombinedOutput()
		if err != nil {
			t.Fatalf("unit %v: %v: %s", args, err, out)
		}
		file := strings.TrimSpace(string(out))
		if v, err := exec.Command("systemd-analyze", "verify", file).CombinedOutput(); err != nil {
			b, _ := os.ReadFile(file)
			t.Errorf("case %d: systemd-analyze verify: %v: %s\n%s", i, err, v, b)
		}
	}
	// An installed app: the unit runs it by name from the store, after the
	// store's boot counter.
	storeDir := filepath.Join(t.TempDir(), "store")
	if out, err := exec.Command(cimgRun, "install", "--store", storeDir, "--state-dir", stateDir(t), "--name", "inst", img).CombinedOutput(); err != nil {
		t.Fatalf("install: %v: %s", err, out)
	}
	if out, err := exec.Command(cimgRun, "unit", "--unit-dir", dir, "--store", storeDir, "inst").CombinedOutput(); err != nil {
		t.Fatalf("unit of an installed app: %v: %s", err, out)
	}
	b, _ := os.ReadFile(filepath.Join(dir, "cimg-inst.service"))
	for _, want := range []string{"ExecStartPre=" + cimgRun + " boot --store " + storeDir + "\n", "--name inst --store " + storeDir + " --installed inst\n"} {
		if !strings.Contains(string(b), want) {
			t.Errorf("the installed app's unit lacks %q:\n%s", want, b)
		}
	}
	if v, err := exec.Command("systemd-analyze", "verify", filepath.Join(dir, "cimg-inst.service")).CombinedOutput(); err != nil {
		t.Errorf("systemd-analyze verify of the installed app's unit: %v: %s", err, v)
	}
	// A relative image path becomes absolute: the unit runs elsewhere.
	rel, _ := filepath.Rel(cwd(t), img)
	if out, err := exec.Command(cimgRun, "unit", "--unit-dir", dir, "--name", "rel", rel).CombinedOutput(); err != nil {
		t.Fatalf("unit with %s: %v: %s", rel, err, out)
	}
	if b, _ := os.ReadFile(filepath.Join(dir, "cimg-rel.service")); !strings.Contains(string(b), " "+img+"\n") {
		t.Errorf("the unit does not name the image %s by its absolute path:\n%s", img, b)
	}
	b, _ = os.ReadFile(filepath.Join(dir, "cimg-odd.service"))
	for _, want := range []string{"Type=notify", "Delegate=yes", "KillMode=mixed", "ExecStop=", "ExecStopPost=", "Restart=on-failure", "CAP_NET_RAW", `"GREETING=100%% $$HOME it's"`} {
		if !strings.Contains(string(b), want) {
			t.Errorf("the unit lacks %q:\n%s", want, b)
		}
	}
	// A launch that would fail gets no unit: an image that asks for a
	// capability the operator did not grant.
	asks := probeImage(t, "[app]\ncommand = [\"/usr/bin/probe\"]\n[security]\ncapabilities = [\"SYS_ADMIN\"]\n")
	out, err := exec.Command(cimgRun, "unit", "--unit-dir", dir, "--name", "asks", asks).CombinedOutput()
	if err == nil || !strings.Contains(string(out), "--grant cap=SYS_ADMIN") {
		t.Errorf("a unit for an ungranted capability: %v: %s", err, out)
	}
	if _, err := os.Stat(filepath.Join(dir, "cimg-asks.service")); err == nil {
		t.Error("the unit of a refused launch was written")
	}
	if _, err := os.Stat(filepath.Join(dir, "cimg-probe.service.tmp")); err == nil {
		t.Error("a temp file was left")
	}
}

// sdMachine boots systemd with cimg-run and the given images under /cimg.
func sdMachine(t *testing.T, images map[string]string) *nspawn.Machine {
	t.Helper()
	dir := t.TempDir()
	b, err := os.ReadFile(cimgRun)
	if err != nil {
		t.Fatal(err)
	}
	os.WriteFile(filepath.Join(dir, "cimg-run"), b, 0o755)
	for name, img := range images {
		if err := os.Link(img, filepath.Join(dir, name)); err != nil {
			b, _ := os.ReadFile(img)
			os.WriteFile(filepath.Join(dir, name), b, 0o644)
		}
	}
	return nspawn.Boot(t, nspawn.Options{
		Binds:       []string{dir + ":/cimg:ro", "/dev/loop-control"},
		Controllers: []string{"memory", "pids", "devices"},
	})
}

// sd runs a command in the machine, failing the test if it fails (with
// the cimg units' journal).
func sd(t *testing.T, m *nspawn.Machine, args ...string) string {
	t.Helper()
	out, err := m.Run(args...)
	if err != nil {
		j, _ := m.Run("journalctl", "--no-pager", "-n", "60", "-u", "cimg-*")
		t.Fatalf("%v: %v\n%s\njournal:\n%s", args, err, out, j)
	}
	return out
}

// sdShow is one property of a unit.
func sdShow(m *nspawn.Machine, unit, prop string) string {
	out, _ := m.Run("systemctl", "show", "-P", prop, unit)
	return strings.TrimSpace(out)
}

// sdWait polls cond (with a longer bound than settle: systemd restarts
// after RestartSec=2).
func sdWait(t *testing.T, m *nspawn.Machine, what string, cond func() bool) {
	t.Helper()
	if !settleFor(30*time.Second, cond) {
		ps, _ := m.Run("/cimg/cimg-run", "ps", "-a")
		j, _ := m.Run("journalctl", "--no-pager", "-n", "40", "-u", "cimg-*")
		cg, _ := m.Run("sh", "-c", "cd /sys/fs/cgroup/memory/system.slice && grep . cimg-*/*/memory.failcnt cimg-*/*/memory.limit_in_bytes cimg-*/*/memory.oom_control")
		t.Fatalf("never: %s\nps -a:\n%s\njournal:\n%s\nmemory cgroups:\n%s", what, ps, j, cg)
	}
}

// sdJournal is the unit's journal, messages only.
func sdJournal(m *nspawn.Machine, unit string) string {
	out, _ := m.Run("journalctl", "--no-pager", "-o", "cat", "-u", unit)
	return out
}

// unitProcs lists "pid comm" of every process in the unit's cgroups
// (every hierarchy the container sees, sub-cgroups included).
func unitProcs(m *nspawn.Machine, unit string) []string {
	out, _ := m.Run("sh", "-c", "for f in $(find /sys/fs/cgroup -path '*/system.slice/"+unit+"*' -name cgroup.procs); do cat $f; done | sort -u | while read p; do echo \"$p $(cat /proc/$p/comm 2>/dev/null)\"; done")
	return strings.Fields(strings.ReplaceAll(strings.TrimSpace(out), " ", "="))
}

// probesIn lists the machine's probe processes (the tree has no pgrep).
func probesIn(m *nspawn.Machine) string {
	out, _ := m.Run("sh", "-c", "grep -lx probe /proc/[0-9]*/comm || true")
	return strings.TrimSpace(out)
}

// TestSystemdUnitSupervises: a unit from cimg-run unit, run by systemd as
// PID 1. Once started, the app is the unit's main process, inside the
// unit's cgroup, and no launcher stays; its output is in the journal
// under the unit; stop gives the app its SIGTERM and time to finish;
// ps sees it and records its end; nothing of it is left after stop.
func TestSystemdUnitSupervises(t *testing.T) {
	img := probeImage(t, "version = \"2.0\"\n[app]\ncommand = [\"/usr/bin/probe\"]\n[limits]\nmemory = \"64MiB\"\npids = 64\n")
	m := sdMachine(t, map[string]string{"probe.cimg": img})
	unitFile := strings.TrimSpace(sd(t, m, "/cimg/cimg-run", "unit", "--name", "app", "--now", "/cimg/probe.cimg", "--", "sleep"))
	if unitFile != "/etc/systemd/system/cimg-app.service" {
		t.Errorf("unit file %q", unitFile)
	}
	const unit = "cimg-app.service"
	// systemctl start returned: the unit is active, its main process the app.
	if s := sdShow(m, unit, "ActiveState"); s != "active" {
		t.Fatalf("after start: %s\n%s", s, sdJournal(m, unit))
	}
	mainPID := sdShow(m, unit, "MainPID")
	if comm := strings.TrimSpace(sd(t, m, "cat", "/proc/"+mainPID+"/comm")); comm != "probe" {
		t.Errorf("the unit's main process is %q, want the app (probe)", comm)
	}
	cg := sd(t, m, "cat", "/proc/"+mainPID+"/cgroup")
	for _, c := range []string{"memory", "pids"} {
		if !strings.Contains(cg, c+":/system.slice/"+unit+"/") {
			t.Errorf("the app's %s cgroup is not inside the unit's:\n%s", c, cg)
		}
	}
	// The app's limit holds inside the unit's accounting.
	if lim := strings.TrimSpace(sd(t, m, "sh", "-c", "cat /sys/fs/cgroup/memory/system.slice/"+unit+"/*/memory.limit_in_bytes")); lim != strconv.Itoa(64<<20) {
		t.Errorf("the app's memory limit inside the unit: %q", lim)
	}
	procs := unitProcs(m, unit)
	for _, p := range procs {
		if strings.Contains(p, "cimg-run") {
			t.Errorf("a launcher stays resident in the unit: %v", procs)
		}
	}
	if len(procs) != 1 {
		t.Errorf("the unit's processes: %v, want the app alone", procs)
	}
	// ps and exec see it.
	ps := sd(t, m, "/cimg/cimg-run", "ps")
	if !strings.Contains(ps, "app") || !strings.Contains(ps, "running") || !strings.Contains(ps, " "+mainPID+" ") {
		t.Errorf("cimg-run ps:\n%s", ps)
	}
	if out := sd(t, m, "/cimg/cimg-run", "exec", "app", "--", "probe", "show", "/proc/1/comm"); !strings.Contains(out, "/proc/1/comm=probe") {
		t.Errorf("exec into the unit's app: %s", out)
	}
	// The journal has the app's output, under the unit.
	sdWait(t, m, "the app's output in the journal", func() bool { return strings.Contains(sdJournal(m, unit), "ready") })
	// Stop: SIGTERM reaches the app, which finishes on its own.
	sd(t, m, "systemctl", "stop", unit)
	if j := sdJournal(m, unit); !strings.Contains(j, "got terminated") {
		t.Errorf("the app never saw its SIGTERM (killed at once?):\n%s", j)
	}
	if r := sdShow(m, unit, "Result"); r != "success" {
		t.Errorf("result after stop: %s", r)
	}
	sdWait(t, m, "ps -a shows the end", func() bool {
		out, _ := m.Run("/cimg/cimg-run", "ps", "-a")
		return strings.Contains(out, "exited 0")
	})
	if procs := unitProcs(m, unit); len(procs) > 0 {
		t.Errorf("left in the unit's cgroups after stop: %v", procs)
	}
	if out, _ := m.Run("sh", "-c", "find /sys/fs/cgroup -path '*/system.slice/"+unit+"*' -type d"); strings.TrimSpace(out) != "" {
		t.Errorf("cgroups left after stop:\n%s", out)
	}
	if out := probesIn(m); out != "" {
		t.Errorf("probe processes left: %s", out)
	}
}

// TestSystemdUnitCases: the other ways a unit's app lives and ends under
// systemd — late readiness, an app deaf to SIGTERM, systemctl kill,
// restart on failure, an OOM kill inside the unit.
func TestSystemdUnitCases(t *testing.T) {
	img := probeImage(t, "[app]\ncommand = [\"/usr/bin/probe\"]\n[limits]\nmemory = \"32MiB\"\n")
	m := sdMachine(t, map[string]string{"probe.cimg": img})
	unit := func(name string, args ...string) string {
		sd(t, m, append([]string{"/cimg/cimg-run", "unit", "--name", name}, args...)...)
		return "cimg-" + name + ".service"
	}

	t.Run("notify late", func(t *testing.T) {
		u := unit("late", "--ready", "notify", "/cimg/probe.cimg", "--", "notify")
		sd(t, m, "systemctl", "start", "--no-block", u)
		sdWait(t, m, "the app waits", func() bool { return strings.Contains(sdJournal(m, u), "waiting") })
		if s := sdShow(m, u, "ActiveState"); s != "activating" {
			t.Errorf("before the app's READY=1 the unit is %s, want activating", s)
		}
		sd(t, m, "systemctl", "kill", "--kill-whom=main", "-s", "USR1", u)
		sdWait(t, m, "active after READY=1", func() bool { return sdShow(m, u, "ActiveState") == "active" })
		if s := sdShow(m, u, "StatusText"); s != "probe ready" {
			t.Errorf("STATUS= from the app: %q", s)
		}
		sd(t, m, "systemctl", "stop", u)
	})

	t.Run("deaf to SIGTERM", func(t *testing.T) {
		u := unit("deaf", "--stop-timeout", "2s", "/cimg/probe.cimg", "--", "deaf")
		sd(t, m, "systemctl", "start", u)
		if !strings.Contains(sd(t, m, "cat", "/etc/systemd/system/"+u), "unit-stop --state-dir /run/cimg -t 2 deaf") {
			t.Error("--stop-timeout 2s did not reach ExecStop=")
		}
		sd(t, m, "systemctl", "stop", u)
		if j := sdJournal(m, u); !strings.Contains(j, "status=9/KILL") || strings.Contains(j, "timed out") {
			t.Errorf("the deaf app was not killed by ExecStop= at the stop timeout (or systemd's own timeout struck):\n%s", j)
		}
		sdWait(t, m, "ps -a shows it killed", func() bool {
			out, _ := m.Run("/cimg/cimg-run", "ps", "-a")
			return strings.Contains(out, "deaf") && strings.Contains(out, "killed by SIGKILL")
		})
		if procs := unitProcs(m, u); len(procs) > 0 {
			t.Errorf("left after stop: %v", procs)
		}
	})

	t.Run("systemctl kill", func(t *testing.T) {
		u := unit("killed", "/cimg/probe.cimg", "--", "sleep")
		sd(t, m, "systemctl", "start", u)
		sd(t, m, "systemctl", "kill", "-s", "USR1", u)
		sdWait(t, m, "the app ended by its SIGUSR1", func() bool { return sdShow(m, u, "ActiveState") == "inactive" })
		if j := sdJournal(m, u); !strings.Contains(j, "got user defined signal 1") {
			t.Errorf("systemctl kill did not reach the app:\n%s", j)
		}
		sd(t, m, "systemctl", "start", u)
		sd(t, m, "systemctl", "kill", "-s", "KILL", u)
		sdWait(t, m, "ps -a: killed", func() bool {
			out, _ := m.Run("/cimg/cimg-run", "inspect", "killed")
			return strings.Contains(out, `"signal": "SIGKILL"`)
		})
		sd(t, m, "systemctl", "stop", u)
	})

	t.Run("restart on failure", func(t *testing.T) {
		u := unit("fails", "/cimg/probe.cimg", "--", "exit", "3")
		m.Run("systemctl", "start", u) // may report the failure
		sdWait(t, m, "a restart", func() bool { n, _ := strconv.Atoi(sdShow(m, u, "NRestarts")); return n >= 1 })
		// Between two runs (after ExecStopPost=), the record is the last end.
		sdWait(t, m, "waiting to restart", func() bool { return sdShow(m, u, "SubState") == "auto-restart" })
		out := sd(t, m, "/cimg/cimg-run", "ps", "-a")
		sd(t, m, "systemctl", "stop", u)
		if !strings.Contains(out, "exited 3") {
			t.Errorf("ps -a after the failures:\n%s\n%s", out, sdJournal(m, u))
		}
	})

	// The app's 32 MiB limit (a memory cgroup inside the unit's: checked in
	// TestSystemdUnitSupervises) holds: the kernel kills the app, and
	// systemd restarts it. On v1, as here, the kill's cause is not
	// recorded: the app's cgroup is gone by ExecStopPost= and v1 counts
	// OOM kills only in the killed task's own cgroup (systemd reports
	// oom-kill on v2 only, which the record then takes).
	t.Run("OOM inside the unit", func(t *testing.T) {
		u := unit("oom", "/cimg/probe.cimg", "--", "hog")
		m.Run("systemctl", "start", u)
		sdWait(t, m, "the app killed", func() bool {
			out, _ := m.Run("/cimg/cimg-run", "inspect", "oom")
			return strings.Contains(out, `"signal": "SIGKILL"`)
		})
		if j := sdJournal(m, u); !strings.Contains(j, "status=9/KILL") {
			t.Errorf("the unit's journal has no SIGKILL of its main process:\n%s", j)
		}
		sd(t, m, "systemctl", "stop", u)
		if procs := unitProcs(m, u); len(procs) > 0 {
			t.Errorf("left after stop: %v", procs)
		}
	})

	// Nothing of any unit is left.
	if out, _ := m.Run("sh", "-c", "find /sys/fs/cgroup -path '*/system.slice/cimg-*' -type d"); strings.TrimSpace(out)+probesIn(m) != "" {
		t.Errorf("left after the units stopped:\n%s%s", out, probesIn(m))
	}
}

func first(f []string) string {
	if len(f) == 0 {
		return ""
	}
	return f[0]
}

func cwd(t *testing.T) string {
	d, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	return d
}

// TestSystemdStoreUpdate: an installed app run by its unit is updated
// through the unit (systemctl stop and start, so systemd does not take the
// stop for a failure), its trial started by the unit from the store; a
// version that fails its gate is rolled back and the unit runs the old
// one again.
func TestSystemdStoreUpdate(t *testing.T) {
	v := func(version, args string) string {
		return probeImage(t, "version = \""+version+"\"\n[app]\ncommand = [\"/usr/bin/probe\", "+args+"]\n")
	}
	m := sdMachine(t, map[string]string{"v1.cimg": v("1.0.0", `"sleep"`), "v2.cimg": v("2.0.0", `"sleep"`), "v3.cimg": v("3.0.0", `"exit", "4"`)})
	sd(t, m, "/cimg/cimg-run", "install", "--name", "web", "/cimg/v1.cimg")
	sd(t, m, "/cimg/cimg-run", "unit", "--now", "web")
	const u = "cimg-web.service"
	version := func() string {
		out := sd(t, m, "/cimg/cimg-run", "ps", "--json")
		i := strings.Index(out, `"version": "`)
		if i < 0 {
			return ""
		}
		return strings.SplitN(out[i+12:], `"`, 2)[0]
	}
	if s := sdShow(m, u, "ActiveState"); s != "active" || version() != "1.0.0" {
		t.Fatalf("the unit of the installed app: %s, version %q", s, version())
	}
	sd(t, m, "/cimg/cimg-run", "update", "web", "/cimg/v2.cimg")
	if s := sdShow(m, u, "ActiveState"); s != "active" || version() != "2.0.0" {
		t.Errorf("after the update: unit %s, version %q\n%s", s, version(), sdJournal(m, u))
	}
	out, err := m.Run("/cimg/cimg-run", "update", "web", "/cimg/v3.cimg")
	if err == nil || !strings.Contains(out, "rolled back to 2.0.0") {
		t.Errorf("an update whose version exits at once: %v: %s", err, out)
	}
	sdWait(t, m, "the unit runs 2.0.0 again", func() bool { return sdShow(m, u, "ActiveState") == "active" && version() == "2.0.0" })
	if l := sd(t, m, "/cimg/cimg-run", "list"); !strings.Contains(l, "2.0.0") || strings.Contains(l, "3.0.0") {
		t.Errorf("list after the rollback:\n%s", l)
	}
	sd(t, m, "systemctl", "stop", u)
}
