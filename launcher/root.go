package launcher

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"

	"cimg.dev/cimg/internal/loop"
)

// enterRoot builds the app's world on the calling thread, top to bottom:
// it leaves the thread in fresh mount, uts, ipc (and net) namespaces with
// the image as its root and the app's working directory as its cwd. The
// caller has locked the thread and never unlocks it: these namespaces
// are the thread's alone, and the app is forked from it (fork.go). The
// image is assembled on STATE/root, a directory of the host that only
// this namespace mounts on. image is the verified image file, mounted
// here only with PrivateMount.
func enterRoot(c *Config, image *os.File) error {
	root := filepath.Join(c.StateDir, "root")

	// New namespaces for this thread only; the pid and cgroup namespaces
	// come at fork and in the child (they take effect for children, and
	// after the cgroup join).
	flags := unix.CLONE_NEWNS | unix.CLONE_NEWUTS | unix.CLONE_NEWIPC
	if c.NetNone {
		flags |= unix.CLONE_NEWNET
	}
	if err := unix.Unshare(flags); err != nil {
		return fmt.Errorf("unshare namespaces: %w", err)
	}
	// A private / first: nothing we mount may propagate to the host.
	if err := unix.Mount("", "/", "", unix.MS_REC|unix.MS_PRIVATE, ""); err != nil {
		return fmt.Errorf("make / private: %w", err)
	}
	if c.PrivateMount {
		// The image mounted for this launch only, from the fd the parent
		// verified; it goes (and its loop device with it) when we do.
		dev, err := loop.Attach(image.Fd(), 0, c.PayloadSize)
		if err != nil {
			return fmt.Errorf("loop-attach the image: %w", err)
		}
		err = unix.Mount(dev.Path, root, "squashfs", unix.MS_RDONLY|unix.MS_NODEV|unix.MS_NOSUID, "")
		dev.Close()
		if err != nil {
			return fmt.Errorf("mount squashfs %s on %s: %w", dev.Path, root, err)
		}
	} else {
		// The image: a read-only bind of the cached squashfs mount.
		if err := unix.Mount(c.Root, root, "", unix.MS_BIND|unix.MS_REC, ""); err != nil {
			return fmt.Errorf("bind %s on %s: %w", c.Root, root, err)
		}
		if err := unix.Mount("", root, "", unix.MS_BIND|unix.MS_REMOUNT|unix.MS_RDONLY|unix.MS_NOSUID|unix.MS_NODEV, ""); err != nil {
			return fmt.Errorf("remount %s read-only: %w", root, err)
		}
	}
	// Mount points must be real directories of the image: a symlink
	// there could point a mount anywhere on the host. (/proc is mounted
	// by the child, the first process of the new pid namespace: proc
	// shows the pid namespace of whoever mounts it.)
	for _, d := range []string{"/proc", "/dev", "/tmp", "/run"} {
		if err := realDir(root, d); err != nil {
			return err
		}
	}
	if err := setupDev(filepath.Join(root, "dev"), c.ShmSize); err != nil {
		return err
	}
	for _, t := range []struct {
		dir  string
		size int64
	}{{"/tmp", c.TmpSize}, {"/run", c.RunSize}} {
		if err := tmpfs(filepath.Join(root, t.dir), t.size, 0o1777); err != nil {
			return err
		}
	}
	for i, m := range c.Mounts {
		if err := mountOne(root, m, filepath.Join(c.StateDir, "scratch"), i); err != nil {
			return err
		}
	}
	// Names and network of the new namespaces.
	if c.Hostname != "" {
		if err := unix.Sethostname([]byte(c.Hostname)); err != nil {
			return fmt.Errorf("sethostname: %w", err)
		}
	}
	if c.NetNone {
		if err := loopbackUp(); err != nil {
			return err
		}
	}
	// Switch root and drop the old one, so no host path stays reachable.
	if err := pivot(root); err != nil {
		return err
	}
	if err := unix.Chdir(c.Workdir); err != nil {
		return fmt.Errorf("chdir %s: %w", c.Workdir, err)
	}
	// The working directory must be inside the new root: getcwd names a
	// directory outside it "(unreachable)…", and a symlink or /proc
	// magic link could have led there.
	if wd, err := unix.Getwd(); err != nil || wd != c.Workdir {
		return fmt.Errorf("workdir %s resolves to %q, outside the image or through a link: refused", c.Workdir, wd)
	}
	return nil
}

// realDir checks that p inside root is a directory reached without any
// symlink.
func realDir(root, p string) error {
	cur := root
	for _, part := range strings.Split(strings.Trim(p, "/"), "/") {
		cur = filepath.Join(cur, part)
		fi, err := os.Lstat(cur)
		if err != nil {
			return fmt.Errorf("image has no %s directory to mount on (rebuild it with cimg-build, which creates the mount points): %w", p, err)
		}
		if !fi.IsDir() {
			return fmt.Errorf("image's %s is a %s, not a directory: refusing to mount over it", p, fi.Mode().Type())
		}
	}
	return nil
}

func tmpfs(dir string, size int64, mode uint32) error {
	opts := fmt.Sprintf("mode=%o", mode)
	if size > 0 {
		opts += fmt.Sprintf(",size=%d", size)
	}
	if err := unix.Mount("tmpfs", dir, "tmpfs", unix.MS_NOSUID|unix.MS_NODEV, opts); err != nil {
		return fmt.Errorf("mount tmpfs on %s: %w", dir, err)
	}
	return nil
}

// setupDev makes a fresh /dev: the standard nodes, devpts and /dev/shm,
// nothing of the host's.
func setupDev(dev string, shmSize int64) error {
	if err := unix.Mount("tmpfs", dev, "tmpfs", unix.MS_NOSUID|unix.MS_NOEXEC, "mode=755,size=65536"); err != nil {
		return fmt.Errorf("mount tmpfs on /dev: %w", err)
	}
	for _, n := range []struct {
		name         string
		major, minor uint32
	}{{"null", 1, 3}, {"zero", 1, 5}, {"full", 1, 7}, {"random", 1, 8}, {"urandom", 1, 9}, {"tty", 5, 0}} {
		p := filepath.Join(dev, n.name)
		if err := unix.Mknod(p, unix.S_IFCHR|0o666, int(unix.Mkdev(n.major, n.minor))); err != nil {
			return fmt.Errorf("mknod %s: %w", p, err)
		}
		if err := os.Chmod(p, 0o666); err != nil { // past the umask
			return err
		}
	}
	for _, d := range []string{"pts", "shm"} {
		if err := os.Mkdir(filepath.Join(dev, d), 0o755); err != nil {
			return err
		}
	}
	if err := unix.Mount("devpts", filepath.Join(dev, "pts"), "devpts", unix.MS_NOSUID|unix.MS_NOEXEC, "newinstance,ptmxmode=0666,mode=0620"); err != nil {
		return fmt.Errorf("mount devpts: %w", err)
	}
	if err := tmpfs(filepath.Join(dev, "shm"), shmSize, 0o1777); err != nil {
		return err
	}
	for name, target := range map[string]string{"ptmx": "pts/ptmx", "fd": "/proc/self/fd", "stdin": "/proc/self/fd/0",
		"stdout": "/proc/self/fd/1", "stderr": "/proc/self/fd/2"} {
		if err := os.Symlink(target, filepath.Join(dev, name)); err != nil {
			return err
		}
	}
	return unix.Mount("", dev, "", unix.MS_REMOUNT|unix.MS_NOSUID|unix.MS_NOEXEC, "mode=755,size=65536")
}

// mountOne mounts m inside root; an in-memory overlay keeps its layer in
// a tmpfs on scratch (a host directory mounted on only in this namespace;
// the tmpfs becomes unreachable with the old root, and lives as long as
// the overlay using it).
func mountOne(root string, m Mount, scratch string, i int) error {
	if err := realDir(root, m.Target); err != nil {
		return err
	}
	dst := filepath.Join(root, m.Target)
	switch m.Type {
	case "tmpfs":
		return tmpfs(dst, m.Size, m.Mode)
	case "bind":
		if err := unix.Mount(m.Source, dst, "", unix.MS_BIND|unix.MS_REC, ""); err != nil {
			return fmt.Errorf("bind %s on %s: %w", m.Source, m.Target, err)
		}
		flags := uintptr(unix.MS_BIND | unix.MS_REMOUNT | unix.MS_NOSUID | unix.MS_NODEV)
		if m.ReadOnly {
			flags |= unix.MS_RDONLY
		}
		if err := unix.Mount("", dst, "", flags, ""); err != nil {
			return fmt.Errorf("remount %s: %w", m.Target, err)
		}
		return nil
	case "overlay":
		return mountOverlay(dst, m, scratch, i)
	}
	return fmt.Errorf("mount type %q is not supported by this launcher yet", m.Type)
}

// mountOverlay puts a writable overlay on dst, over the image's own
// directory there.
func mountOverlay(dst string, m Mount, scratch string, i int) error {
	layer := m.Source
	if layer == "" {
		layer = filepath.Join(scratch, strconv.Itoa(i))
		if err := os.MkdirAll(layer, 0o700); err != nil {
			return err
		}
		if err := tmpfs(layer, m.Size, 0o700); err != nil {
			return err
		}
		for _, d := range []string{"upper", "work"} {
			if err := os.Mkdir(filepath.Join(layer, d), 0o755); err != nil {
				return err
			}
		}
	}
	opts := "lowerdir=" + overlayEscape(dst) + ",upperdir=" + overlayEscape(filepath.Join(layer, "upper")) +
		",workdir=" + overlayEscape(filepath.Join(layer, "work"))
	if err := unix.Mount("overlay", dst, "overlay", unix.MS_NOSUID|unix.MS_NODEV, opts); err != nil {
		if err == unix.ENODEV {
			return fmt.Errorf("overlay on %s: the kernel has no overlayfs (CONFIG_OVERLAY_FS; modprobe overlay)", m.Target)
		}
		return fmt.Errorf("overlay on %s (layer %s): %w", m.Target, layer, err)
	}
	return nil
}

// overlayEscape escapes what overlayfs's option parser splits on.
func overlayEscape(p string) string {
	return strings.NewReplacer(`\`, `\\`, ",", `\,`, ":", `\:`).Replace(p)
}

func loopbackUp() error {
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("socket for lo: %w", err)
	}
	defer unix.Close(fd)
	ifr, err := unix.NewIfreq("lo")
	if err != nil {
		return err
	}
	if err := unix.IoctlIfreq(fd, unix.SIOCGIFFLAGS, ifr); err != nil {
		return fmt.Errorf("get lo flags: %w", err)
	}
	ifr.SetUint16(ifr.Uint16() | unix.IFF_UP)
	if err := unix.IoctlIfreq(fd, unix.SIOCSIFFLAGS, ifr); err != nil {
		return fmt.Errorf("bring lo up: %w", err)
	}
	return nil
}

// pivot makes root the new / and detaches the old one: pivot_root(".",
// ".") stacks the old root on top of the new, and the lazy unmount takes
// it away without needing a directory for it inside the image.
func pivot(root string) error {
	if err := unix.Chdir(root); err != nil {
		return fmt.Errorf("chdir %s: %w", root, err)
	}
	if err := unix.PivotRoot(".", "."); err != nil {
		if err != unix.EINVAL {
			return fmt.Errorf("pivot_root %s: %w", root, err)
		}
		// A system running from its initramfs has rootfs as /, which
		// pivot_root cannot move. Move the new root over / and chroot, as
		// switch_root does; with CAP_SYS_CHROOT dropped (the default) the
		// app cannot climb out of it.
		if err := unix.Mount(".", "/", "", unix.MS_MOVE, ""); err != nil {
			return fmt.Errorf("move %s to /: %w", root, err)
		}
		if err := unix.Chroot("."); err != nil {
			return fmt.Errorf("chroot %s: %w", root, err)
		}
		return unix.Chdir("/")
	}
	if err := unix.Unmount(".", unix.MNT_DETACH); err != nil {
		return fmt.Errorf("detach the old root: %w", err)
	}
	return unix.Chdir("/")
}
