package main

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"

	"cimg.dev/cimg/internal/imagecache"
)

// TestConfigApplied: hostname, namespaced sysctl, oomScoreAdj,
// linux.devices with their cgroup rules, and the hooks, each seen from
// where it lands.
func TestConfigApplied(t *testing.T) {
	o := newOCI(t)
	out := t.TempDir()
	hook := func(name string) specs.Hook {
		return specs.Hook{Path: "/bin/sh", Args: []string{"sh", "-c", "cat > " + filepath.Join(out, name)}}
	}
	adj := 500
	major, minor := int64(1), int64(11)
	b := bundle(t, func(s *specs.Spec) {
		s.Hostname = "oci-host"
		s.Linux.Sysctl = map[string]string{"net.ipv4.ip_forward": "1"}
		s.Process.OOMScoreAdj = &adj
		s.Process.Args = []string{"/bin/app", "show", "/proc/sys/net/ipv4/ip_forward", "/proc/self/oom_score_adj", "/proc/sys/kernel/hostname"}
		s.Hooks = &specs.Hooks{CreateRuntime: []specs.Hook{hook("createRuntime")}, Poststart: []specs.Hook{hook("poststart")},
			Poststop: []specs.Hook{hook("poststop")}}
	})
	id := o.id()
	r := o.run("run", "--bundle", b, id)
	if r.code != 0 {
		t.Fatalf("run: %d %s", r.code, r.stderr)
	}
	for _, want := range []string{"ip_forward=1", "oom_score_adj=500", "hostname=oci-host"} {
		if !strings.Contains(r.stdout, want) {
			t.Errorf("no %s in:\n%s", want, r.stdout)
		}
	}
	for name, status := range map[string]specs.ContainerState{"createRuntime": specs.StateCreated, "poststart": specs.StateRunning, "poststop": specs.StateStopped} {
		var st specs.State
		b, err := os.ReadFile(filepath.Join(out, name))
		if err != nil || json.Unmarshal(b, &st) != nil || st.ID != id || st.Status != status {
			t.Errorf("hook %s: state %q (%v), want id %s status %s", name, b, err, id, status)
		}
	}
	// A device node, opened by the app only if a cgroup rule allows it.
	for _, allow := range []bool{false, true} {
		b := bundle(t, func(s *specs.Spec) {
			s.Linux.Devices = []specs.LinuxDevice{{Path: "/dev/kmsg-test", Type: "c", Major: major, Minor: minor}}
			if allow {
				s.Linux.Resources.Devices = append(s.Linux.Resources.Devices, specs.LinuxDeviceCgroup{Allow: true, Type: "c", Major: &major, Minor: &minor, Access: "w"})
			}
			s.Process.Args = []string{"/bin/app", "write", "/dev/kmsg-test", "cimg-oci device test\n"}
		})
		r := o.run("run", "--bundle", b, o.id())
		if got := strings.Contains(r.stdout, "wrote /dev/kmsg-test"); got != allow {
			t.Errorf("device 1:11 with allow rule %v: %q", allow, r.stdout)
		}
		if !allow && !strings.Contains(r.stdout, "operation not permitted") {
			t.Errorf("device 1:11 without a rule: %q, want the devices cgroup's EPERM", r.stdout)
		}
	}
}

// TestLogJSON: with --log and --log-format json, an error is a json line
// (conmon reads it back for podman's user).
func TestLogJSON(t *testing.T) {
	o := newOCI(t)
	b := bundle(t, func(s *specs.Spec) { s.Linux.IntelRdt = &specs.LinuxIntelRdt{ClosID: "x"} })
	log := filepath.Join(t.TempDir(), "log.json")
	r := runCmd(t, o.cmd("--log", log, "--log-format", "json", "create", "--bundle", b, o.id()))
	if r.code == 0 {
		t.Fatal("create with linux.intelRdt succeeded")
	}
	data, _ := os.ReadFile(log)
	var line struct{ Level, Msg string }
	if err := json.Unmarshal(data, &line); err != nil || line.Level != "error" || !strings.Contains(line.Msg, "linux.intelRdt") {
		t.Errorf("log: %q (%v)", data, err)
	}
}

// TestExec: cimg-oci exec in the argv form and with --process, in the
// container's namespaces, its status returned.
func TestExec(t *testing.T) {
	o := newOCI(t)
	b := bundle(t, func(s *specs.Spec) { s.Process.Args = []string{"/bin/app", "sleep"} })
	id := o.id()
	if r := o.run("run", "--detach", "--bundle", b, id); r.code != 0 {
		t.Fatalf("run -d: %s", r.stderr)
	}
	pid := o.state(id).Pid
	mnt, _ := os.Readlink("/proc/" + itoa(pid) + "/ns/mnt")
	r := o.run("exec", id, "/bin/app")
	rep := parseReport(t, r.stdout)
	if rep.NS["mnt"] != mnt || rep.PID == 1 {
		t.Errorf("exec: mnt %s pid %d, want the container's mnt %s", rep.NS["mnt"], rep.PID, mnt)
	}
	if r := o.run("exec", id, "/bin/app", "exit", "9"); r.code != 9 {
		t.Errorf("exec exit 9: %d %s", r.code, r.stderr)
	}
	proc := filepath.Join(t.TempDir(), "process.json")
	pj, _ := json.Marshal(specs.Process{Args: []string{"/bin/app", "euid"}, Cwd: "/", User: specs.User{UID: 1000, GID: 1000}})
	os.WriteFile(proc, pj, 0o644)
	if r := o.run("exec", "--process", proc, id); r.code != 0 || strings.TrimSpace(r.stdout) != "1000" {
		t.Errorf("exec --process as uid 1000: %d %q %s", r.code, r.stdout, r.stderr)
	}
	if r := o.run("kill", id, "TERM"); r.code != 0 {
		t.Errorf("kill: %s", r.stderr)
	}
	waitStatus(t, o, id, specs.StateStopped)
}

// TestCimgImageRoot: the annotation org.cimg.image makes a .cimg's
// verified payload the root, mounted from cimg's mount cache.
func TestCimgImageRoot(t *testing.T) {
	o := newOCI(t)
	state := t.TempDir()
	t.Setenv("CIMG_STATE_DIR", state)
	t.Cleanup(func() {
		if _, err := imagecache.GC(state); err != nil {
			t.Errorf("unmount the cache: %v", err)
		}
	})
	img := filepath.Join(t.TempDir(), "probe.cimg")
	mf := filepath.Join(filepath.Dir(img), "cimg.toml")
	os.WriteFile(mf, []byte("name = \"probe\"\n"), 0o644)
	root := rootfs(t)
	if out, err := exec.Command(cimgBuild, "-q", "-f", mf, "--rootfs", root, "--entrypoint", "/bin/app", "-o", img).CombinedOutput(); err != nil {
		t.Fatalf("cimg-build: %v\n%s", err, out)
	}
	b := bundle(t, func(s *specs.Spec) {
		s.Root.Path = "/nonexistent" // the annotation wins
		s.Annotations = map[string]string{"org.cimg.image": img}
		s.Process.Args = []string{"/bin/app", "show", "/proc/self/mountinfo"}
		// An image's root is read-only: a mount needs its target in the
		// image (cimg-build makes /proc, /dev, /tmp and /run; no /sys).
		var ms []specs.Mount
		for _, m := range s.Mounts {
			if m.Destination != "/sys" {
				ms = append(ms, m)
			}
		}
		s.Mounts = ms
	})
	os.RemoveAll(filepath.Join(b, "rootfs"))
	r := o.run("run", "--bundle", b, o.id())
	if r.code != 0 || !strings.Contains(r.stdout, "squashfs") {
		t.Errorf("run with org.cimg.image: %d, want a squashfs root\n%s%s", r.code, r.stdout, r.stderr)
	}
	// A file that is not an image is refused.
	b = bundle(t, func(s *specs.Spec) { s.Annotations = map[string]string{"org.cimg.image": mf} })
	if r := o.run("create", "--bundle", b, o.id()); r.code == 0 {
		t.Errorf("a .cimg that is not one was accepted")
	}
}

// TestRootfsPropagation: shared makes the root a peer group of the
// container's own; slave keeps it a slave of the host's group, so a mount
// the host makes below the bundle's root after start shows inside.
// A shared root is also where pivot_root fails and chroot stands in,
// which moves no other process: the container's process, forked before
// it to mount /proc in order, must enter the new root itself, or it
// would execve the host's files (root-escape class; it did, ENOENT for
// /bin/app, before it entered the root by fd).
func TestRootfsPropagation(t *testing.T) {
	o := newOCI(t)
	b := bundle(t, func(s *specs.Spec) {
		s.Linux.RootfsPropagation = "shared"
		s.Process.Args = []string{"/bin/app", "show", "/proc/self/mountinfo"}
	})
	r := o.run("run", "--bundle", b, o.id())
	// The first mountinfo line is the root's: "ID PARENT MAJ:MIN ROOT / OPTS shared:N - ..."
	f := strings.Fields(r.stdout)
	if r.code != 0 || len(f) < 7 || f[4] != "/" || !strings.HasPrefix(f[6], "shared:") {
		t.Errorf("rootfsPropagation shared: %d, want a shared root\n%s%s", r.code, r.stdout, r.stderr)
	}

	// slave: the bundle's root a shared mount on the host (this host's /
	// is private), the container started, then a tmpfs mounted below it.
	b = bundle(t, func(s *specs.Spec) {
		s.Linux.RootfsPropagation = "rslave"
		s.Process.Args = []string{"/bin/app", "sleep"}
	})
	root := filepath.Join(b, "rootfs")
	srv := filepath.Join(root, "srv")
	os.Mkdir(srv, 0o755)
	if err := unix.Mount(root, root, "", unix.MS_BIND, ""); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unix.Unmount(srv, unix.MNT_DETACH); unix.Unmount(root, unix.MNT_DETACH) })
	if err := unix.Mount("", root, "", unix.MS_SHARED, ""); err != nil {
		t.Fatal(err)
	}
	id := o.id()
	if r := o.run("run", "--detach", "--bundle", b, id); r.code != 0 {
		t.Fatalf("rootfsPropagation rslave: run -d: %s", r.stderr)
	}
	if err := unix.Mount("host-srv", srv, "tmpfs", 0, "size=64k"); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(srv, "marker"), []byte("from the host\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	r = o.run("exec", id, "/bin/app", "show", "/proc/self/mountinfo", "/srv/marker")
	f = strings.Fields(r.stdout)
	if r.code != 0 || len(f) < 7 || f[4] != "/" || !strings.HasPrefix(f[6], "master:") || !strings.Contains(r.stdout, "/srv/marker=from the host") {
		t.Errorf("rootfsPropagation rslave: %d, want a slave root that the host's mount on /srv reached\n%s%s", r.code, r.stdout, r.stderr)
	}
	o.run("kill", id, "KILL")
	waitStatus(t, o, id, specs.StateStopped)

	b = bundle(t, func(s *specs.Spec) { s.Linux.RootfsPropagation = "downstream" })
	if r := o.run("create", "--bundle", b, o.id()); r.code == 0 || !strings.Contains(r.stderr, "linux.rootfsPropagation") {
		t.Errorf("rootfsPropagation downstream: %d %q, want a refusal naming it", r.code, r.stderr)
	}
}

// TestNamespacesByPath: a container joins the namespaces a config names
// by path (here a holder process's, made by unshare(1)) instead of new
// ones; its root is built in the joined mount namespace, and it is not
// the joined pid namespace's init.
func TestNamespacesByPath(t *testing.T) {
	o := newOCI(t)
	holder := exec.Command("unshare", "--mount", "--pid", "--fork", "--net", "--ipc", "--uts", "sleep", "600")
	if err := holder.Start(); err != nil {
		t.Fatalf("unshare: %v", err)
	}
	t.Cleanup(func() { holder.Process.Kill(); holder.Wait() })
	ns := func(n string) string { return fmt.Sprintf("/proc/%d/ns/%s", holder.Process.Pid, n) }
	want := map[string]string{}
	for _, n := range []string{"mnt", "pid_for_children", "net", "ipc", "uts"} {
		// unshare(1) has made its namespaces once pid_for_children differs.
		for i := 0; i < 200; i++ {
			want[n], _ = os.Readlink(ns(n))
			self, _ := os.Readlink("/proc/self/ns/" + n)
			if want[n] != "" && want[n] != self {
				break
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
	b := bundle(t, func(s *specs.Spec) {
		for i, n := range s.Linux.Namespaces {
			switch n.Type {
			case specs.MountNamespace:
				s.Linux.Namespaces[i].Path = ns("mnt")
			case specs.PIDNamespace:
				s.Linux.Namespaces[i].Path = ns("pid_for_children")
			case specs.NetworkNamespace:
				s.Linux.Namespaces[i].Path = ns("net")
			case specs.IPCNamespace:
				s.Linux.Namespaces[i].Path = ns("ipc")
			case specs.UTSNamespace:
				s.Linux.Namespaces[i].Path = ns("uts")
			}
		}
		s.Hostname = ""
	})
	r := o.run("run", "--bundle", b, o.id())
	if r.code != 0 {
		t.Fatalf("run with namespaces by path: %d\n%s", r.code, r.stderr)
	}
	rep := parseReport(t, r.stdout)
	for n, got := range map[string]string{"mnt": rep.NS["mnt"], "pid_for_children": rep.NS["pid"], "net": rep.NS["net"], "ipc": rep.NS["ipc"], "uts": rep.NS["uts"]} {
		if got != want[n] {
			t.Errorf("joined %s: the process is in %s, want the holder's %s", n, got, want[n])
		}
	}
	if rep.PID == 1 {
		t.Errorf("pid 1 in the joined pid namespace, whose init is the holder's sleep")
	}
	// A user namespace by path stays refused, naming itself.
	b = bundle(t, func(s *specs.Spec) {
		s.Linux.Namespaces = append(s.Linux.Namespaces, specs.LinuxNamespace{Type: specs.UserNamespace, Path: ns("user")})
	})
	if r := o.run("create", "--bundle", b, o.id()); r.code == 0 || !strings.Contains(r.stderr, "user namespace") {
		t.Errorf("user namespace by path: %d %q, want a refusal", r.code, r.stderr)
	}
}
