package main

// What the manifest's namespace and root settings do, seen from inside
// the app and from the host: a user namespace, the host's ipc and uts
// namespaces when granted, a writable root in memory, and a launcher no
// process of the container can reach.

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
)

// TestUserNamespaceMapsAppIDs: with namespaces.user = true, root in the
// app is uid 1000000000 on the host (no cimg range in /etc/subuid here),
// a volume belongs to the mapped ids, and the app's root has no power
// over what the host's user namespace owns (it cannot even read a 0600
// file of host root's in a granted bind).
func TestUserNamespaceMapsAppIDs(t *testing.T) {
	state := stateDir(t)
	secret := filepath.Join(t.TempDir(), "secret")
	os.WriteFile(secret, []byte("host root's"), 0o600)
	img := probeImage(t, fmt.Sprintf(`[app]
command = ["/usr/bin/probe"]
[namespaces]
user = true
[[mounts]]
type = "volume"
source = "data"
target = "/data"
[[mounts]]
type = "bind"
source = %q
target = "/host"
readonly = true
`, filepath.Dir(secret)))
	grant := []string{"--grant", "bind-ro=" + filepath.Dir(secret), img, "--"}
	res := runImage(t, cimgRunCmd(state, append(grant, "show", "/proc/self/uid_map", "/proc/self/gid_map", "/host/secret")...))
	for _, want := range []string{"/proc/self/uid_map=0 1000000000 65536", "/proc/self/gid_map=0 1000000000 65536", "/host/secret=error: open /host/secret: permission denied"} {
		if !strings.Contains(res.stdout, want+"\n") {
			t.Errorf("app sees %q, want a line %q (%s)", res.stdout, want, res.stderr)
		}
	}
	if res := runImage(t, cimgRunCmd(state, append(grant, "write", "/data/x", "y")...)); res.code != 0 {
		t.Errorf("root in the user namespace cannot write its volume: %+v", res)
	}
	var st syscall.Stat_t
	if err := syscall.Stat(filepath.Join(volumeDir(state), "probe/data/x"), &st); err != nil || st.Uid != 1000000000 || st.Gid != 1000000000 {
		t.Errorf("the app's file on the host: %v, owner %d:%d, want 1000000000:1000000000", err, st.Uid, st.Gid)
	}
	// Seen from the host, the running app is that uid.
	cmd, _ := startSleeping(t, state, grant[:len(grant)-1]...)
	defer cmd.Wait()
	defer cmd.Process.Signal(syscall.SIGTERM)
	if uid := procStatus(childOf(cmd.Process.Pid), "Uid"); !strings.HasPrefix(uid, "1000000000\t") {
		t.Errorf("the app's uid on the host: %q", uid)
	}
}

// TestHostNamespacesWhenGranted: ipc and uts = "host" (granted) share the
// host's namespaces; by default both are the app's own.
func TestHostNamespacesWhenGranted(t *testing.T) {
	state := stateDir(t)
	shared := probeImage(t, "[app]\ncommand = [\"/usr/bin/probe\"]\n[namespaces]\nipc = \"host\"\nuts = \"host\"\n")
	private := probeImage(t, "[app]\ncommand = [\"/usr/bin/probe\"]\n")
	show := []string{"--", "show", "/proc/self/ns/ipc", "/proc/self/ns/uts"}
	var host []string
	for _, ns := range []string{"ipc", "uts"} {
		l, _ := os.Readlink("/proc/self/ns/" + ns)
		host = append(host, fmt.Sprintf("/proc/self/ns/%s=%s\n", ns, l))
	}
	res := runImage(t, cimgRunCmd(state, append([]string{"--grant", "ipc=host", "--grant", "uts=host", shared}, show...)...))
	if res.stdout != strings.Join(host, "") {
		t.Errorf("ipc/uts = host: app sees %q, the host %q (%s)", res.stdout, host, res.stderr)
	}
	res = runImage(t, cimgRunCmd(state, append([]string{private}, show...)...))
	for _, h := range host {
		if strings.Contains(res.stdout, h) || res.code != 0 {
			t.Errorf("default: the app shares %q (%+v)", h, res)
		}
	}
}

// TestWritableRootInMemory: readonly_root = false puts an in-memory layer
// over the image: the app writes anywhere, and the next run starts from
// the image again.
func TestWritableRootInMemory(t *testing.T) {
	state := stateDir(t)
	img := probeImage(t, "[app]\ncommand = [\"/usr/bin/probe\"]\n[security]\nreadonly_root = false\n")
	if res := runImage(t, cimgRunCmd(state, img, "--", "write", "/usr/bin/note", "x")); !strings.Contains(res.stdout, "wrote /usr/bin/note") {
		t.Errorf("write to a writable root: %+v", res)
	}
	if res := runImage(t, cimgRunCmd(state, img, "--", "read", "/usr/bin/note")); !strings.Contains(res.stdout, "no such file") {
		t.Errorf("the write outlived its run: %+v", res)
	}
	ro := probeImage(t, "[app]\ncommand = [\"/usr/bin/probe\"]\n")
	if res := runImage(t, cimgRunCmd(state, ro, "--", "write", "/usr/bin/note", "x")); !strings.Contains(res.stdout, "read-only file system") {
		t.Errorf("write to the default read-only root: %+v", res)
	}
}

// TestLauncherExeUnreachable_CVE_2019_5736: with pid = "host" granted, the
// app sees its launcher's pid; neither the launcher nor the slim waiter it
// becomes lets the app open its /proc/PID/exe, the host's cimg-run, which
// a kept fd could rewrite later. (The kernel's capability check already
// refuses an app whose permitted set is not the launcher's; the launcher
// and the waiter are also non-dumpable, which holds without it.)
func TestLauncherExeUnreachable_CVE_2019_5736(t *testing.T) {
	state := stateDir(t)
	img := probeImage(t, "[app]\ncommand = [\"/usr/bin/probe\"]\nuser = 0\n[namespaces]\npid = \"host\"\n")
	for _, delay := range []string{"0s", "400ms"} { // the launcher, then the slim waiter
		res := runImage(t, cimgRunCmd(state, "--grant", "pid=host", img, "--", "parent-exe", delay))
		if !strings.Contains(res.stdout, "permission denied") {
			t.Errorf("after %s the app opened its launcher's executable: %+v", delay, res)
		}
	}
}

// TestExecFailuresExplained: a command the kernel cannot run gets an
// error naming it and the likely cause, not a bare errno.
func TestExecFailuresExplained(t *testing.T) {
	state := stateDir(t)
	dir := t.TempDir()
	root := filepath.Join(dir, "root")
	os.MkdirAll(filepath.Join(root, "usr/bin"), 0o755)
	dynamic, err := exec.LookPath("true") // dynamically linked: its loader is not in the image
	if err != nil {
		t.Fatal(err)
	}
	b, _ := os.ReadFile(dynamic)
	os.WriteFile(filepath.Join(root, "usr/bin/dyn"), b, 0o755)
	os.Symlink("gone", filepath.Join(root, "usr/bin/dangling"))
	os.WriteFile(filepath.Join(root, "usr/bin/noexec"), []byte("#!/usr/bin/dyn\n"), 0o644)
	for _, c := range []struct{ cmd, want string }{
		{"/usr/bin/dyn", "/usr/bin/dyn needs the interpreter /lib64/ld-linux-x86-64.so.2, which is not in the image"},
		{"/usr/bin/dangling", "the command /usr/bin/dangling is a link to /usr/bin/gone, which is not in the image"},
		{"/usr/bin/noexec", "/usr/bin/noexec is not executable"},
	} {
		img := filepath.Join(dir, filepath.Base(c.cmd)+".cimg")
		if out, err := exec.Command(cimgBuild, "-q", "--rootfs", root, "--entrypoint", c.cmd, "--arch", "amd64", "-o", img).CombinedOutput(); err != nil {
			t.Fatalf("%v %s", err, out)
		}
		res := runImage(t, cimgRunCmd(state, img))
		if res.code != 125 || !strings.Contains(res.stderr, c.want) {
			t.Errorf("%s: %+v; want %q", c.cmd, res, c.want)
		}
	}
}
