package nspawn

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"syscall"
)

const (
	defaultRootfs = "/var/cache/cimg/systemd-rootfs"
	rootfsEnv     = "CIMG_SYSTEMD_ROOTFS"
	mirror        = "http://deb.debian.org/debian"
	suite         = "bookworm"
	// stampFile records the recipe a tree was built from: a cached tree
	// from an older recipe (say, one package fewer) is rebuilt rather
	// than handed to tests that expect the new one.
	stampFile = ".cimg-systemd-rootfs"
)

// packages is what a test of systemd units needs beyond minbase:
// systemctl, journalctl, systemd-analyze and systemd-notify are all in
// systemd; systemd-sysv gives /sbin/init and poweroff; dbus because
// several units of a booted system expect the system bus.
var packages = []string{"systemd", "systemd-sysv", "dbus"}

// recipe is what the stamp records: any change to how build makes the
// tree must change it, so that cached trees are rebuilt.
func recipe() string {
	return fmt.Sprintf("debootstrap --variant=minbase --include=%s %s\nthen: no /etc/hostname, no .debs\n", strings.Join(packages, ","), suite)
}

// Rootfs returns a Debian bookworm tree with systemd, built once with
// debootstrap into $CIMG_SYSTEMD_ROOTFS (default
// /var/cache/cimg/systemd-rootfs) and reused after. The tree is treated
// as read-only: Boot overlays a tmpfs on it.
func Rootfs() (string, error) {
	dir, lock, err := lockRootfs()
	if err != nil {
		return "", err
	}
	lock.Close()
	return dir, nil
}

func rootfsPath() string {
	if d := os.Getenv(rootfsEnv); d != "" {
		return filepath.Clean(d)
	}
	return defaultRootfs
}

// lockRootfs makes sure the tree exists and returns it with a shared
// flock held on its lock file. Holders of the shared lock use the tree;
// only a rebuild takes the lock exclusively, so test processes booting
// machines at the same time do not wait for one another, and a rebuild
// for a new recipe never swaps the tree under a running machine.
func lockRootfs() (string, *os.File, error) {
	dir := rootfsPath()
	if os.Geteuid() != 0 {
		return "", nil, errors.New("the systemd rootfs is built with debootstrap and booted with systemd-nspawn, both of which need root: run the tests as root (CI does)")
	}
	if err := os.MkdirAll(filepath.Dir(dir), 0o755); err != nil {
		return "", nil, fmt.Errorf("systemd rootfs cache: %w", err)
	}
	lockPath := dir + ".lock"
	lock, err := os.OpenFile(lockPath, os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		return "", nil, fmt.Errorf("systemd rootfs lock: %w", err)
	}
	for try := 0; ; try++ {
		if err := syscall.Flock(int(lock.Fd()), syscall.LOCK_SH); err != nil {
			lock.Close()
			return "", nil, fmt.Errorf("flock %s: %w", lockPath, err)
		}
		if ok, err := usable(dir); err != nil || ok {
			if err != nil {
				lock.Close()
				return "", nil, err
			}
			return dir, lock, nil
		}
		if try == 2 {
			lock.Close()
			return "", nil, fmt.Errorf("systemd rootfs %s: another process keeps replacing it with a different recipe", dir)
		}
		// Converting to exclusive drops the shared lock first, so another
		// process may build the tree meanwhile: usable is asked again.
		if err := syscall.Flock(int(lock.Fd()), syscall.LOCK_EX); err != nil {
			lock.Close()
			return "", nil, fmt.Errorf("flock %s: %w", lockPath, err)
		}
		if ok, err := usable(dir); err != nil {
			lock.Close()
			return "", nil, err
		} else if !ok {
			if err := build(dir); err != nil {
				lock.Close()
				return "", nil, err
			}
		}
	}
}

// usable tells whether dir holds a tree built from the current recipe.
// A tree without a stamp was put there by hand (CIMG_SYSTEMD_ROOTFS
// pointing at one's own tree): it is used as it is and never rebuilt.
func usable(dir string) (bool, error) {
	if _, err := os.Stat(dir); errors.Is(err, os.ErrNotExist) {
		return false, nil
	} else if err != nil {
		return false, fmt.Errorf("systemd rootfs: %w", err)
	}
	stamp, err := os.ReadFile(filepath.Join(dir, stampFile))
	if errors.Is(err, os.ErrNotExist) {
		if _, err := os.Stat(filepath.Join(dir, "usr/lib/systemd/systemd")); err != nil {
			return false, fmt.Errorf("systemd rootfs %s (not built by this package) has no usr/lib/systemd/systemd: point %s at a tree with systemd, or unset it", dir, rootfsEnv)
		}
		return true, nil
	} else if err != nil {
		return false, fmt.Errorf("systemd rootfs: %w", err)
	}
	return string(stamp) == recipe(), nil
}

// build debootstraps into a temporary sibling of dir and renames it into
// place, so that a build killed halfway leaves nothing at dir. It runs
// under the exclusive lock, so any sibling build directory is a leftover
// of a killed build and is removed first.
func build(dir string) error {
	if _, err := exec.LookPath("debootstrap"); err != nil {
		return errors.New("the systemd rootfs is built with debootstrap, which is not installed: apt-get install debootstrap (or set " + rootfsEnv + " to an existing tree with systemd)")
	}
	parent, base := filepath.Dir(dir), filepath.Base(dir)
	leftovers, _ := filepath.Glob(filepath.Join(parent, "."+base+".build-*"))
	for _, l := range leftovers {
		if err := removeTree(l); err != nil {
			return fmt.Errorf("removing a killed build of the systemd rootfs: %w", err)
		}
	}
	tmp, err := os.MkdirTemp(parent, "."+base+".build-")
	if err != nil {
		return fmt.Errorf("systemd rootfs: %w", err)
	}
	ok := false
	defer func() {
		if !ok {
			removeTree(tmp)
		}
	}()
	if err := os.Chmod(tmp, 0o755); err != nil {
		return fmt.Errorf("systemd rootfs: %w", err)
	}
	logPath := dir + ".debootstrap.log"
	logf, err := os.Create(logPath)
	if err != nil {
		return fmt.Errorf("systemd rootfs: %w", err)
	}
	cmd := exec.Command("debootstrap", "--variant=minbase", "--include="+strings.Join(packages, ","), suite, tmp, mirror)
	cmd.Stdout, cmd.Stderr = logf, logf
	err = cmd.Run()
	logf.Close()
	if err != nil {
		return fmt.Errorf("debootstrap of Debian %s with %s into %s failed (%v); its log %s ends with:\n%s\n"+
			"It needs root and %s reachable; rerun once that holds (the half-built tree was removed), "+
			"or set %s to an existing Debian tree with systemd",
			suite, strings.Join(packages, ","), tmp, err, logPath, tail(logPath, 15), mirror, rootfsEnv)
	}
	// The .debs debootstrap downloaded are not needed to boot and weigh
	// as much as the tree.
	debs, _ := filepath.Glob(filepath.Join(tmp, "var/cache/apt/archives/*.deb"))
	for _, d := range debs {
		os.Remove(d)
	}
	// debootstrap copies the host's hostname; without one, the machine
	// is called by its machine name, which tells machines apart in logs.
	if err := os.Remove(filepath.Join(tmp, "etc/hostname")); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("systemd rootfs: %w", err)
	}
	if err := os.WriteFile(filepath.Join(tmp, stampFile), []byte(recipe()), 0o644); err != nil {
		return fmt.Errorf("systemd rootfs: %w", err)
	}
	var old string
	if _, err := os.Lstat(dir); err == nil {
		// A tree of an older recipe: nobody holds the shared lock, so
		// nobody uses it.
		old = tmp + ".old"
		if err := os.Rename(dir, old); err != nil {
			return fmt.Errorf("moving aside the old systemd rootfs: %w", err)
		}
	}
	if err := os.Rename(tmp, dir); err != nil {
		return fmt.Errorf("systemd rootfs: %w", err)
	}
	ok = true
	if old != "" {
		if err := removeTree(old); err != nil {
			return fmt.Errorf("removing the old systemd rootfs: %w", err)
		}
	}
	return nil
}

// removeTree unmounts whatever is mounted under dir before removing it:
// a debootstrap killed halfway leaves the host's /proc, /sys or /dev
// mounted in its target, and RemoveAll would walk into them.
func removeTree(dir string) error {
	mounts, err := mountsUnder(dir)
	if err != nil {
		return err
	}
	for _, m := range mounts {
		if err := syscall.Unmount(m, syscall.MNT_DETACH); err != nil {
			return fmt.Errorf("unmount %s: %w", m, err)
		}
	}
	return os.RemoveAll(dir)
}

// mountsUnder lists the mount points at or under dir, deepest first.
func mountsUnder(dir string) ([]string, error) {
	data, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		return nil, err
	}
	var out []string
	sc := bufio.NewScanner(bytes.NewReader(data))
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) < 5 {
			continue
		}
		mp := unescapeMount(f[4])
		if mp == dir || strings.HasPrefix(mp, dir+"/") {
			out = append(out, mp)
		}
	}
	sort.Slice(out, func(i, j int) bool { return len(out[i]) > len(out[j]) })
	return out, nil
}

// unescapeMount undoes mountinfo's octal escapes (\040 for a space).
func unescapeMount(s string) string {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+3 < len(s) {
			var c byte
			if _, err := fmt.Sscanf(s[i+1:i+4], "%3o", &c); err == nil {
				b.WriteByte(c)
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

func tail(path string, n int) string {
	data, _ := os.ReadFile(path)
	lines := strings.Split(strings.TrimRight(string(data), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}
