package main

import (
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"

	specs "github.com/opencontainers/runtime-spec/specs-go"

	"cimg.dev/cimg/internal/nspawn"
)

// TestSystemdScope: under systemd as PID 1 (systemd-nspawn of a Debian
// rootfs, internal/nspawn), --systemd-cgroup makes the container a
// transient scope unit of systemd's in the config's slice, with the pid
// in it and the config's limits as the unit's (so that systemd's own
// re-application of the unit, at daemon-reload, writes the same values);
// delete stops the unit and leaves no cgroup. Before, the cgroup was
// made at systemd's path but systemd knew no unit of it.
func TestSystemdScope(t *testing.T) {
	dir := t.TempDir()
	b, err := os.ReadFile(cimgOCI)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "cimg-oci"), b, 0o755); err != nil {
		t.Fatal(err)
	}
	const id = "sc1"
	bundleDir := bundle(t, func(s *specs.Spec) {
		s.Linux.CgroupsPath = "cimgtest.slice:cimg:" + id
		s.Linux.Resources.Pids = &specs.LinuxPids{Limit: 30}
		mem := int64(64 << 20)
		s.Linux.Resources.Memory = &specs.LinuxMemory{Limit: &mem}
		s.Process.Args = []string{"/bin/app", "sleep"}
	})
	m := nspawn.Boot(t, nspawn.Options{
		Binds:       []string{dir + ":/x:ro", bundleDir + ":/bundle"},
		Controllers: []string{"memory", "pids", "cpu", "cpuacct", "cpuset", "devices", "freezer", "blkio"},
	})
	run := func(args ...string) string {
		t.Helper()
		out, err := m.Run(args...)
		if err != nil {
			j, _ := m.Run("journalctl", "--no-pager", "-n", "40")
			t.Fatalf("%v: %v\n%s\njournal:\n%s", args, err, out, j)
		}
		return strings.TrimSpace(out)
	}
	show := func(prop string) string {
		return strings.TrimPrefix(run("systemctl", "show", "-p", prop, "cimg-"+id+".scope"), prop+"=")
	}
	oci := []string{"/x/cimg-oci", "--root", "/run/cimg-oci-test", "--systemd-cgroup"}
	// The container's process keeps create's stdio: not the pipe Run
	// reads until its end.
	run("sh", "-c", strings.Join(oci, " ")+" create --bundle /bundle "+id+" >/run/create.log 2>&1 || { cat /run/create.log; exit 1; }")
	if s := show("ActiveState"); s != "active" {
		t.Errorf("the scope after create: %s, want active", s)
	}
	if cg := show("ControlGroup"); cg != "/cimgtest.slice/cimg-"+id+".scope" {
		t.Errorf("the scope's cgroup: %q", cg)
	}
	pid := run("sh", "-c", strings.Join(oci, " ")+" state "+id+" | sed -n 's/.*\"pid\": *\\([0-9]*\\).*/\\1/p'")
	if procs := run("cat", "/sys/fs/cgroup/pids/cimgtest.slice/cimg-"+id+".scope/cgroup.procs"); procs != pid {
		t.Errorf("the scope's processes: %q, want the container's %s", procs, pid)
	}
	if tm := show("TasksMax"); tm != "30" {
		t.Errorf("the unit's TasksMax: %s, want the config's 30", tm)
	}
	limits := func(when string) {
		t.Helper()
		scope := "/cimgtest.slice/cimg-" + id + ".scope/"
		if v := run("cat", "/sys/fs/cgroup/pids"+scope+"pids.max"); v != "30" {
			t.Errorf("%s: pids.max %s, want 30", when, v)
		}
		if v := run("cat", "/sys/fs/cgroup/memory"+scope+"memory.limit_in_bytes"); v != strconv.Itoa(64<<20) {
			t.Errorf("%s: memory.limit_in_bytes %s, want %d", when, v, 64<<20)
		}
		// Device allow-list escape class: systemd delegates no v1 devices
		// (nor freezer) cgroup, and starting the scope moved the process
		// to the top of that hierarchy, where every device is allowed,
		// removing the container's cgroup. It must be back in it.
		procs := map[string]string{}
		for _, c := range []string{"devices", "freezer"} {
			procs[c], _ = m.Run("cat", "/sys/fs/cgroup/"+c+scope+"cgroup.procs")
		}
		list, _ := m.Run("cat", "/sys/fs/cgroup/devices"+scope+"devices.list")
		t.Run("DeviceAllowListEscape "+when, func(t *testing.T) {
			for c, p := range procs {
				if strings.TrimSpace(p) != pid {
					t.Errorf("the %s cgroup's processes: %q, want the container's %s", c, p, pid)
				}
			}
			if list == "" || strings.Contains(list, "a *:* rwm") {
				t.Errorf("the container's device allow-list: %q, want its own rules", list)
			}
		})
	}
	limits("after create")
	run("systemctl", "daemon-reload")
	limits("after systemctl daemon-reload")
	run(append(oci, "start", id)...)
	// runc's masks hold here too, though this launcher's /sys (nspawn's,
	// trimmed) has no /sys/firmware to tell a directory from a file: the
	// container's fresh sysfs has, and it is masked as a directory.
	// Before, it was taken for a file and create failed: "mount /proc:
	// not a directory".
	rep := parseReport(t, run(append(oci, "exec", id, "/bin/app")...))
	if !slices.Contains(rep.Mounts, "/sys/firmware") {
		t.Errorf("/sys/firmware is not masked in the container: mounts %v", rep.Mounts)
	}
	run(append(oci, "delete", "--force", id)...)
	if s := show("LoadState"); s != "not-found" {
		t.Errorf("the scope after delete: LoadState %s, want not-found", s)
	}
	if out := run("sh", "-c", "find /sys/fs/cgroup -path '*cimg-"+id+".scope*' -type d"); out != "" {
		t.Errorf("cgroups left after delete:\n%s", out)
	}
}
