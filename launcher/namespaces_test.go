package launcher

// The launch thread makes the app's namespaces while the parent is still
// mounting the image (launch.spawn), so its copy of the host's mounts can
// come before the cache mount exists — on every first launch of an image.
// Bound from that copy, the app's root would be the empty directory under
// the cache mount ("the image has no /dev directory"). These tests run the
// real kernel's namespaces and mounts: root needed (CI runs as root).

import (
	"os"
	"path/filepath"
	"runtime"
	"testing"

	"golang.org/x/sys/unix"
)

// TestRemountNamespaceSeesALaterMount: a mount the host makes after the
// thread's copy is missing from it, and present after remountNamespace;
// both copies are private (no mount propagates either way), and the
// thread keeps its working directory.
func TestRemountNamespaceSeesALaterMount(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Fatal("needs root (mount namespaces and mounts)")
	}
	// A shared mount, as / is under systemd: a copy that is not made
	// private would receive the host's later mounts, and send its own.
	dir := t.TempDir()
	if err := unix.Mount(dir, dir, "", unix.MS_BIND, ""); err != nil {
		t.Fatal(err)
	}
	defer func() { // everything stacked on dir, whatever the test got to
		for unix.Unmount(dir, unix.MNT_DETACH) == nil {
		}
	}()
	if err := unix.Mount("", dir, "", unix.MS_SHARED, ""); err != nil {
		t.Fatal(err)
	}
	marker := filepath.Join(dir, "marker")
	cwd, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	copied, mounted, done := make(chan error, 1), make(chan struct{}), make(chan []string, 1)
	go func() {
		// Never unlocked: the thread goes with its namespace.
		runtime.LockOSThread()
		var found []string
		defer func() { done <- found }()
		host := openHostView()
		defer host.close()
		p := &Plan{Unshare: unix.CLONE_NEWNS}
		err := enterNamespaces(p)
		if copied <- err; err != nil {
			return
		}
		<-mounted
		if _, err := os.Stat(marker); err == nil {
			found = append(found, "early copy")
		}
		if err := remountNamespace(p, host); err != nil {
			found = append(found, "remount: "+err.Error())
			return
		}
		if _, err := os.Stat(marker); err == nil {
			found = append(found, "new copy")
		}
		// setns alone leaves the thread in the namespace's root: a
		// relative --state-dir then missed (make demo's "bind ... on
		// bin/demo-state/root: no such file or directory").
		if wd, err := os.Getwd(); err != nil || wd != cwd {
			found = append(found, "working directory "+wd)
		}
		// Private: a mount of the new copy stays out of the host's.
		if err := unix.Mount("tmpfs", dir, "tmpfs", 0, ""); err != nil {
			found = append(found, "mount in the copy: "+err.Error())
		}
	}()
	if err := <-copied; err != nil {
		t.Fatal(err)
	}
	if err := unix.Mount("tmpfs", dir, "tmpfs", 0, ""); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(marker, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	close(mounted)
	found := <-done
	want := []string{"new copy"}
	if len(found) != 1 || found[0] != want[0] {
		t.Fatalf("the launch thread saw the host's later mount in %q, want only in %q", found, want)
	}
	if _, err := os.Stat(marker); err != nil {
		t.Fatalf("the copy's own mount reached the host (its tmpfs hides the host's marker): %v", err)
	}
}
