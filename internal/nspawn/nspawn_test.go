package nspawn

import (
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

// TestBootSystemd boots a machine, runs a Type=notify unit in it through
// Run, and checks after the machine's cleanup that nothing of it is
// left on the host.
func TestBootSystemd(t *testing.T) {
	var m *Machine
	t.Run("machine", func(t *testing.T) {
		share := t.TempDir()
		// The unit's program comes in through a bind mount, as cimg-run
		// and its images will.
		script := "#!/bin/sh\necho hello from the unit\nsystemd-notify --ready\nexec sleep 1000\n"
		if err := os.WriteFile(filepath.Join(share, "hello.sh"), []byte(script), 0o755); err != nil {
			t.Fatal(err)
		}
		m = Boot(t, Options{Binds: []string{share + ":/cimg-test:ro"}})

		out, err := m.Run("systemctl", "is-system-running")
		if state := strings.TrimSpace(out); state != "running" && state != "degraded" {
			t.Fatalf("systemctl is-system-running: %q (%v)", state, err)
		}
		if out, err := m.Run("cat", "/proc/1/comm"); err != nil || strings.TrimSpace(out) != "systemd" {
			t.Fatalf("PID 1 of the machine is %q (%v), want systemd", out, err)
		}

		unit := "[Service]\nType=notify\nNotifyAccess=all\nExecStart=/cimg-test/hello.sh\n"
		if out, err := m.Run("sh", "-c", "printf '"+unit+"' > /etc/systemd/system/hello.service && systemctl daemon-reload"); err != nil {
			t.Fatalf("%v\n%s", err, out)
		}
		// systemctl start of a Type=notify unit returns once READY=1 is in.
		if out, err := m.Run("systemctl", "start", "hello.service"); err != nil {
			t.Fatalf("%v\n%s", err, out)
		}
		if out, _ := m.Run("systemctl", "is-active", "hello.service"); strings.TrimSpace(out) != "active" {
			t.Fatalf("hello.service is %q after start, want active", strings.TrimSpace(out))
		}
		out, err = m.Run("systemctl", "show", "-P", "MainPID", "hello.service")
		if err != nil {
			t.Fatalf("%v\n%s", err, out)
		}
		mainPID := strings.TrimSpace(out)
		if comm, _ := m.Run("cat", "/proc/"+mainPID+"/comm"); strings.TrimSpace(comm) != "sleep" {
			t.Fatalf("main pid %s of hello.service runs %q, want sleep", mainPID, strings.TrimSpace(comm))
		}
		if out, err := m.Run("journalctl", "--no-pager", "-o", "cat", "-u", "hello.service"); err != nil || !strings.Contains(out, "hello from the unit") {
			t.Fatalf("the unit's stdout is not in its journal (%v):\n%s", err, out)
		}

		// From the host, the machine's PID 1 is in the machine's own
		// cgroup, not the test's.
		cg, err := os.ReadFile("/proc/" + strconv.Itoa(m.Leader()) + "/cgroup")
		if err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(string(cg), "/"+m.name+"/") {
			t.Errorf("the leader's cgroups do not name the machine %s:\n%s", m.name, cg)
		}

		if out, err := m.Run("systemctl", "stop", "hello.service"); err != nil {
			t.Fatalf("%v\n%s", err, out)
		}
		if out, _ := m.Run("systemctl", "is-active", "hello.service"); strings.TrimSpace(out) != "inactive" {
			t.Errorf("hello.service is %q after stop, want inactive", strings.TrimSpace(out))
		}
		if _, err := m.Run("test", "-e", "/proc/"+mainPID); err == nil {
			t.Errorf("the unit's main process %s outlived systemctl stop", mainPID)
		}
	})
	if m == nil {
		return
	}
	if alive(m.leader, m.leaderStart) {
		t.Errorf("the machine's PID 1 (host pid %d) still runs after cleanup", m.leader)
	}
	if m.cmd.ProcessState == nil {
		t.Errorf("systemd-nspawn (pid %d) was not waited for", m.cmd.Process.Pid)
	}
	for _, cg := range m.cgroups {
		if _, err := os.Stat(cg); err == nil {
			t.Errorf("cgroup %s is left after cleanup", cg)
		}
	}
	if _, err := os.Stat("/run/systemd/nspawn/propagate/" + m.name); err == nil {
		t.Errorf("/run/systemd/nspawn/propagate/%s is left after cleanup", m.name)
	}
	mountinfo, _ := os.ReadFile("/proc/self/mountinfo")
	if strings.Contains(string(mountinfo), m.name) || strings.Contains(string(mountinfo), rootfsPath()) {
		t.Errorf("a mount of the machine is left on the host:\n%s", mountinfo)
	}
	if _, err := m.Run("true"); err == nil {
		t.Error("Run worked on a machine that was shut down")
	}
}

// TestControllers checks that with Options.Controllers a unit's
// MemoryMax= and TasksMax= reach the kernel, which stock nspawn
// prevents by mounting the v1 hierarchies read-only.
func TestControllers(t *testing.T) {
	m := Boot(t, Options{Controllers: []string{"memory", "pids"}})
	if out, err := m.Run("systemd-run", "--unit=limited", "-p", "MemoryMax=32M", "-p", "TasksMax=4", "sleep", "1000"); err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	want := map[string]string{"memory": "memory.limit_in_bytes=33554432", "pids": "pids.max=4"}
	for _, cg := range m.cgroups {
		for ctl, kv := range want {
			if !strings.Contains(cg, "/"+ctl+"/") {
				continue
			}
			file, value, _ := strings.Cut(kv, "=")
			got, err := os.ReadFile(filepath.Join(cg, "system.slice/limited.service", file))
			if err != nil || strings.TrimSpace(string(got)) != value {
				t.Errorf("%s of the unit: %q (%v), want %s", file, strings.TrimSpace(string(got)), err, value)
			}
			delete(want, ctl)
		}
	}
	if len(want) > 0 {
		t.Errorf("the machine got no cgroup of its own in %v", want)
	}
}

func TestUsable(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "rootfs")
	if ok, err := usable(dir); ok || err != nil {
		t.Errorf("missing tree: usable %v, %v; want false, nil", ok, err)
	}
	if err := os.MkdirAll(filepath.Join(dir, "usr/lib/systemd"), 0o755); err != nil {
		t.Fatal(err)
	}
	if _, err := usable(dir); err == nil {
		t.Error("a tree without stamp and without systemd was accepted")
	}
	if err := os.WriteFile(filepath.Join(dir, "usr/lib/systemd/systemd"), nil, 0o755); err != nil {
		t.Fatal(err)
	}
	if ok, err := usable(dir); !ok || err != nil {
		t.Errorf("a tree of one's own with systemd: usable %v, %v; want true, nil", ok, err)
	}
	if err := os.WriteFile(filepath.Join(dir, stampFile), []byte("an older recipe\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if ok, err := usable(dir); ok || err != nil {
		t.Errorf("a tree of an older recipe: usable %v, %v; want false, nil (rebuild)", ok, err)
	}
	if err := os.WriteFile(filepath.Join(dir, stampFile), []byte(recipe()), 0o644); err != nil {
		t.Fatal(err)
	}
	if ok, err := usable(dir); !ok || err != nil {
		t.Errorf("a tree of this recipe: usable %v, %v; want true, nil", ok, err)
	}
}

func TestBinds(t *testing.T) {
	dir := t.TempDir()
	for _, c := range []struct {
		bind, want string
	}{
		{dir, "--bind=" + dir + ":" + dir},
		{dir + ":/x", "--bind=" + dir + ":/x"},
		{dir + ":/x:ro", "--bind-ro=" + dir + ":/x"},
		{dir + "::ro", "--bind-ro=" + dir + ":" + dir},
		{dir + ":ro", "--bind-ro=" + dir + ":" + dir},
	} {
		args, err := nspawnArgs(Options{Binds: []string{c.bind}})
		if err != nil {
			t.Errorf("bind %q: %v", c.bind, err)
		} else if got := args[len(args)-1]; got != c.want {
			t.Errorf("bind %q: %s, want %s", c.bind, got, c.want)
		}
	}
	for _, bad := range []string{"rel", dir + ":rel", dir + ":/a:/b", "/nonexistent-cimg"} {
		if _, err := nspawnArgs(Options{Binds: []string{bad}}); err == nil {
			t.Errorf("bind %q was accepted", bad)
		}
	}
}
