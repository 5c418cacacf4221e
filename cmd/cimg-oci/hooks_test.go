package main

import (
	"encoding/json"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"
)

// hookBundle is a bundle whose root also holds a static busybox at
// /bin/busybox, and whose /out is out, a host directory anyone may
// write to.
func hookBundle(t *testing.T, out string, edit func(s *specs.Spec)) string {
	t.Helper()
	os.Chmod(out, 0o777)
	dir := bundle(t, func(s *specs.Spec) {
		s.Mounts = append(s.Mounts, specs.Mount{Destination: "/out", Type: "bind", Source: out, Options: []string{"rbind", "rw"}})
		edit(s)
	})
	bb, err := os.ReadFile("/bin/busybox")
	if err != nil {
		t.Fatalf("a static busybox for the hooks inside the container: %v (apt-get install busybox-static)", err)
	}
	if err := os.WriteFile(filepath.Join(dir, "rootfs/bin/busybox"), bb, 0o755); err != nil {
		t.Fatal(err)
	}
	return dir
}

func readState(t *testing.T, path string) specs.State {
	t.Helper()
	var st specs.State
	b, err := os.ReadFile(path)
	if err != nil || json.Unmarshal(b, &st) != nil {
		t.Fatalf("hook state %s: %q (%v)", path, b, err)
	}
	return st
}

// TestContainerHooks: the hooks in the spec's order, createRuntime before
// createContainer and poststart in the runtime's namespaces. createContainer hooks run at create, with the state
// (creating, the process's pid) on stdin, from a path of the runtime's
// (the host's /bin/sh: the root has none) and in the container's mount,
// network, UTS, IPC and pid namespaces, in its assembled root (their
// working directory, the mounts in). startContainer hooks run at start
// before the app, from a path in the container, in its namespaces.
func TestContainerHooks(t *testing.T) {
	o := newOCI(t)
	ns := "/proc/self/ns/mnt /proc/self/ns/net /proc/self/ns/uts /proc/self/ns/ipc /proc/self/ns/pid"
	out := t.TempDir()
	b := hookBundle(t, out, func(s *specs.Spec) {
		s.Hostname = "hooked"
		s.Process.Args = append([]string{"/bin/app", "show"}, strings.Fields(ns+" /out/created /out/start-ran")...)
		// out/created: relative to the hook's working directory, the
		// assembled root, through its /out bind.
		create := "cat > " + out + "/create.json; readlink " + ns + " > " + out + "/create.ns; " +
			"cat /proc/sys/kernel/hostname > " + out + "/create.host; echo made > out/created"
		order := func(name string) specs.Hook {
			return specs.Hook{Path: "/bin/sh", Args: []string{"sh", "-c", "echo " + name + " >> " + out + "/order; readlink /proc/self/ns/mnt /proc/self/ns/pid > " + out + "/" + name + ".ns"}}
		}
		s.Hooks = &specs.Hooks{
			CreateRuntime:   []specs.Hook{order("createRuntime")},
			CreateContainer: []specs.Hook{{Path: "/bin/sh", Args: []string{"sh", "-c", "echo createContainer >> " + out + "/order; " + create}}},
			StartContainer: []specs.Hook{{Path: "/bin/busybox", Args: []string{"sh", "-c",
				"echo startContainer >> /out/order; cat > /out/start.json; for f in " + ns + "; do readlink $f; done > /out/start.ns; echo yes > /out/start-ran"}}},
			Poststart: []specs.Hook{order("poststart")},
		}
	})
	id := o.id()
	r := o.run("run", "--bundle", b, id)
	if r.code != 0 {
		t.Fatalf("run: %d %s", r.code, r.stderr)
	}
	app := map[string]string{}
	for _, l := range strings.Split(strings.TrimSpace(r.stdout), "\n") {
		k, v, _ := strings.Cut(l, "=")
		app[k] = v
	}
	cs, ss := readState(t, filepath.Join(out, "create.json")), readState(t, filepath.Join(out, "start.json"))
	if cs.ID != id || cs.Status != specs.StateCreating || cs.Pid <= 0 {
		t.Errorf("createContainer state: %+v, want id %s, creating, the process's pid", cs, id)
	}
	if ss.ID != id || ss.Status != specs.StateCreated || ss.Pid != cs.Pid {
		t.Errorf("startContainer state: %+v, want id %s, created, pid %d", ss, id, cs.Pid)
	}
	for _, hook := range []string{"create", "start"} {
		b, err := os.ReadFile(filepath.Join(out, hook+".ns"))
		if err != nil {
			t.Fatalf("%s hook: %v", hook, err)
		}
		links := strings.Fields(string(b))
		for i, p := range strings.Fields(ns) {
			if i >= len(links) || links[i] != app[p] {
				t.Errorf("%s hook's %s is %v, the app's %q", hook, p, links, app[p])
			}
		}
	}
	// The spec's order, and createRuntime in the runtime's namespaces.
	if o, _ := os.ReadFile(filepath.Join(out, "order")); strings.Join(strings.Fields(string(o)), " ") != "createRuntime createContainer startContainer poststart" {
		t.Errorf("the hooks ran in the order %q; cimg-oci said %q", o, r.stderr)
	}
	// createRuntime and poststart run in the runtime's mount and pid
	// namespaces. A poststart hook in the container's pid namespace (the
	// class: a host hook joined to the container) was killed when the
	// container's process ended, or not started once it had (ENOMEM).
	ownMnt, _ := os.Readlink("/proc/self/ns/mnt")
	ownPid, _ := os.Readlink("/proc/self/ns/pid")
	for _, hook := range []string{"createRuntime", "poststart"} {
		if m, _ := os.ReadFile(filepath.Join(out, hook+".ns")); strings.Join(strings.Fields(string(m)), " ") != ownMnt+" "+ownPid {
			t.Errorf("the %s hook ran in the namespaces %q, not the runtime's %s %s", hook, m, ownMnt, ownPid)
		}
	}
	if h, _ := os.ReadFile(filepath.Join(out, "create.host")); strings.TrimSpace(string(h)) != "hooked" {
		t.Errorf("createContainer hook's hostname %q, want the container's", h)
	}
	if app["/out/created"] != "made" {
		t.Errorf("the app sees /out/created = %q: the createContainer hook's working directory is not the container's root", app["/out/created"])
	}
	if app["/out/start-ran"] != "yes" {
		t.Errorf("the app sees /out/start-ran = %q: the startContainer hook did not run before it", app["/out/start-ran"])
	}
}

// TestStartContainerHookConfinedAsTheImage: a startContainer hook's path
// is the image's, so the hook is the image's code: it runs as the
// config's process would (its user, no_new_privs), never with the
// runtime's root privileges (the class of CVE-2019-5736: image code run
// by the runtime with the host's powers).
func TestStartContainerHookConfinedAsTheImage(t *testing.T) {
	o := newOCI(t)
	out := t.TempDir()
	b := hookBundle(t, out, func(s *specs.Spec) {
		s.Process.User = specs.User{UID: 1000, GID: 1000}
		s.Process.NoNewPrivileges = true
		s.Hooks = &specs.Hooks{StartContainer: []specs.Hook{{Path: "/bin/busybox", Args: []string{"sh", "-c",
			"id -u > /out/uid; grep -E '^(NoNewPrivs|CapEff):' /proc/self/status > /out/status"}}}}
	})
	if r := o.run("run", "--bundle", b, o.id()); r.code != 0 {
		t.Fatalf("run: %d %s", r.code, r.stderr)
	}
	uid, _ := os.ReadFile(filepath.Join(out, "uid"))
	st, _ := os.ReadFile(filepath.Join(out, "status"))
	if strings.TrimSpace(string(uid)) != "1000" {
		t.Errorf("the hook ran as uid %q, want the process's 1000", uid)
	}
	if !strings.Contains(string(st), "NoNewPrivs:\t1") || !strings.Contains(string(st), "CapEff:\t0000000000000000") {
		t.Errorf("the hook's status:\n%s\nwant no_new_privs and no effective capabilities", st)
	}
}

// TestHookFailures: a failed or timed-out createContainer hook fails
// create, which leaves nothing; a failed startContainer hook fails start
// before the app runs, and the container is stopped.
func TestHookFailures(t *testing.T) {
	o := newOCI(t)
	out := t.TempDir()
	one := 1
	for name, h := range map[string]specs.Hook{
		"exit status 3": {Path: "/bin/sh", Args: []string{"sh", "-c", "echo no good; exit 3"}},
		"killed":        {Path: "/bin/sleep", Args: []string{"sleep", "20"}, Timeout: &one},
	} {
		b := hookBundle(t, out, func(s *specs.Spec) { s.Hooks = &specs.Hooks{CreateContainer: []specs.Hook{h}} })
		id := o.id()
		r := o.run("create", "--bundle", b, id)
		if r.code == 0 || !strings.Contains(r.stderr, "hooks.createContainer") || !strings.Contains(r.stderr, name) {
			t.Errorf("create with a createContainer hook that fails (%s): %d %q", name, r.code, r.stderr)
		}
		if _, err := os.Stat(filepath.Join(o.root, id)); err == nil {
			t.Errorf("%s: the failed create left its state", name)
		}
	}
	b := hookBundle(t, out, func(s *specs.Spec) {
		s.Process.Args = []string{"/bin/app", "write", "/out/app-ran", "yes"}
		s.Hooks = &specs.Hooks{StartContainer: []specs.Hook{{Path: "/bin/busybox", Args: []string{"sh", "-c", "echo refused >&2; exit 4"}}}}
	})
	id := o.id()
	if r := o.run("create", "--bundle", b, id); r.code != 0 {
		t.Fatalf("create: %d %s", r.code, r.stderr)
	}
	r := o.run("start", id)
	if r.code == 0 || !strings.Contains(r.stderr, "hooks.startContainer") || !strings.Contains(r.stderr, "exit status 4: refused") {
		t.Errorf("start with a startContainer hook that fails: %d %q", r.code, r.stderr)
	}
	waitStatus(t, o, id, specs.StateStopped)
	if _, err := os.Stat(filepath.Join(out, "app-ran")); err == nil {
		t.Errorf("the app ran after its startContainer hook failed")
	}
	if r := o.run("delete", id); r.code != 0 {
		t.Errorf("delete after the failed start: %s", r.stderr)
	}
}

// TestSELinuxLabels: without SELinux on the host, the labels have
// nothing to apply to: create goes on and warns; with SELinux, create
// refuses them, since cimg-oci applies no label.
func TestSELinuxLabels(t *testing.T) {
	o := newOCI(t)
	b := bundle(t, func(s *specs.Spec) {
		s.Linux.MountLabel = "system_u:object_r:container_file_t:s0:c1,c2"
		s.Process.SelinuxLabel = "system_u:system_r:container_t:s0:c1,c2"
	})
	r := o.run("run", "--bundle", b, o.id())
	if selinuxEnabled() {
		if r.code == 0 || !strings.Contains(r.stderr, "linux.mountLabel") {
			t.Errorf("with SELinux on the host, run with labels: %d %q, want a refusal naming them", r.code, r.stderr)
		}
		return
	}
	if r.code != 0 || !strings.Contains(r.stderr, "warning: process.selinuxLabel, linux.mountLabel: SELinux is not enabled on this host") {
		t.Errorf("without SELinux, run with labels: %d %q, want it run with a warning", r.code, r.stderr)
	}
}

// TestCreateContainerHookWithTerminal: with process.terminal the process
// is forked holding its pty before pivot_root, for the hooks: the pty is
// still the container's own devpts, passed to the console socket, and
// the app's stdio.
func TestCreateContainerHookWithTerminal(t *testing.T) {
	o := newOCI(t)
	out := t.TempDir()
	b := hookBundle(t, out, func(s *specs.Spec) {
		s.Process.Terminal = true
		s.Process.Args = []string{"/bin/app", "show", "/proc/self/fd/0", "/proc/self/fd/1", "/out/created"}
		s.Hooks = &specs.Hooks{CreateContainer: []specs.Hook{{Path: "/bin/sh", Args: []string{"sh", "-c", "echo made > out/created"}}}}
	})
	sock := filepath.Join(t.TempDir(), "console.sock")
	l, err := net.ListenUnix("unix", &net.UnixAddr{Name: sock, Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	ptm := make(chan *os.File, 1)
	go func() {
		c, err := l.AcceptUnix()
		if err != nil {
			ptm <- nil
			return
		}
		defer c.Close()
		oob := make([]byte, unix.CmsgSpace(4))
		_, oobn, _, _, err := c.ReadMsgUnix(make([]byte, 64), oob)
		msgs, perr := unix.ParseSocketControlMessage(oob[:oobn])
		if err != nil || perr != nil || len(msgs) != 1 {
			ptm <- nil
			return
		}
		fds, _ := unix.ParseUnixRights(&msgs[0])
		if len(fds) != 1 {
			ptm <- nil
			return
		}
		ptm <- os.NewFile(uintptr(fds[0]), "ptm")
	}()
	id := o.id()
	if r := o.run("create", "--bundle", b, "--console-socket", sock, id); r.code != 0 {
		t.Fatalf("create: %d %s", r.code, r.stderr)
	}
	m := <-ptm
	if m == nil {
		t.Fatal("no terminal came to the console socket")
	}
	defer m.Close()
	if r := o.run("start", id); r.code != 0 {
		t.Fatalf("start: %s", r.stderr)
	}
	got := make(chan string, 1)
	go func() {
		var all []byte
		buf := make([]byte, 4096)
		for !strings.Contains(string(all), "/out/created=") {
			n, err := m.Read(buf)
			if err != nil {
				break
			}
			all = append(all, buf[:n]...)
		}
		got <- string(all)
	}()
	var s string
	select {
	case s = <-got:
	case <-time.After(time.Minute):
		t.Fatal("the app wrote nothing to its terminal in a minute")
	}
	for _, want := range []string{"/proc/self/fd/0=/dev/pts/0", "/proc/self/fd/1=/dev/pts/0", "/out/created=made"} {
		if !strings.Contains(s, want) {
			t.Errorf("no %q on the terminal:\n%s", want, s)
		}
	}
	waitStatus(t, o, id, specs.StateStopped)
}
