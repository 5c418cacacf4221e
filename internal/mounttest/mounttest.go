// Package mounttest gives tests real kernel mounts of images: a loop
// device and a read-only squashfs mount, undone when the test ends. It
// fails (never skips) when the test is not root: CI runs as root.
package mounttest

import (
	"os"
	"os/exec"
	"testing"
)

// RequireRoot fails the test unless it runs as root.
func RequireRoot(t testing.TB) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Fatal("this test uses real mounts and must run as root (CI does; run make test as root)")
	}
}

// Mount mounts the squashfs at the start of img read-only and returns the
// mount point; it is unmounted (and the loop device freed) at cleanup.
func Mount(t testing.TB, img string) string {
	t.Helper()
	RequireRoot(t)
	dir := t.TempDir()
	if out, err := exec.Command("mount", "-t", "squashfs", "-o", "loop,ro,nodev", img, dir).CombinedOutput(); err != nil {
		t.Fatalf("kernel mount of %s: %v\n%s", img, err, out)
	}
	t.Cleanup(func() {
		if out, err := exec.Command("umount", dir).CombinedOutput(); err != nil {
			t.Errorf("umount %s: %v\n%s", dir, err, out)
		}
	})
	return dir
}

// EnableBinfmt mounts binfmt_misc and enables the registered qemu-user
// interpreters, so foreign-arch programs run (also inside a chroot: the
// qemu-user-static entries use the fix-binary flag).
func EnableBinfmt(t testing.TB) {
	t.Helper()
	RequireRoot(t)
	if _, err := os.Stat("/proc/sys/fs/binfmt_misc/register"); err != nil {
		if out, err := exec.Command("mount", "-t", "binfmt_misc", "binfmt_misc", "/proc/sys/fs/binfmt_misc").CombinedOutput(); err != nil {
			t.Fatalf("mount binfmt_misc: %v\n%s", err, out)
		}
	}
	if out, err := exec.Command("update-binfmts", "--enable").CombinedOutput(); err != nil {
		t.Fatalf("update-binfmts --enable: %v\n%s (install binfmt-support and qemu-user-static; make test does)", err, out)
	}
}
