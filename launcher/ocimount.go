package launcher

import (
	"fmt"
	"os"
	"path"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// ociMount is one step of a cimg-oci container's root (enterRoot): the
// config's root directory, its mounts, its device nodes. Targets are made
// and opened below the new root without following any symlink, as the
// image's are: a rootfs is the operator's, but what runs in it may have
// written links into it on an earlier run.
func (b *builder) ociMount(m MountSpec) error {
	switch m.Kind {
	case KindRootfs:
		src, err := os.OpenFile(m.Source, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
		if err != nil {
			return fmt.Errorf("root.path: %w", err)
		}
		defer src.Close()
		if err := unix.Mount(fdPath(src), b.root, "", unix.MS_BIND|unix.MS_REC, ""); err != nil {
			return fmt.Errorf("bind the root %s: %w", m.Source, err)
		}
		// The container's process mounts its /proc there (fork.go).
		proc, err := b.makeTarget("/proc", true)
		if err != nil {
			return err
		}
		return proc.Close()
	case KindRootfsRO:
		if m.Flags != 0 {
			if err := b.remountFlags(m.Target, m.Flags, false); err != nil {
				return err
			}
		}
		if m.Propagation != 0 {
			if err := unix.Mount("", b.root, "", m.Propagation, ""); err != nil {
				return fmt.Errorf("linux.rootfsPropagation: %w", err)
			}
		}
		return nil
	case KindDevice:
		return b.device(m)
	}
	if m.Flags&unix.MS_REMOUNT != 0 {
		// Flags for what is mounted at Target already.
		return b.remountFlags(m.Target, m.Flags&^(unix.MS_BIND|unix.MS_REMOUNT), false)
	}
	bind := m.Flags&unix.MS_BIND != 0
	var src *os.File
	dir := true
	if bind {
		var err error
		if src, err = os.OpenFile(m.Source, unix.O_PATH|unix.O_CLOEXEC, 0); err != nil {
			return fmt.Errorf("bind source: %w", err)
		}
		defer src.Close()
		var st unix.Stat_t
		if err := unix.Fstat(int(src.Fd()), &st); err != nil {
			return err
		}
		dir = st.Mode&unix.S_IFMT == unix.S_IFDIR
	}
	t, err := b.makeTarget(m.Target, dir)
	if err != nil {
		return err
	}
	defer t.Close()
	dst := fdPath(t)
	if bind {
		if err := unix.Mount(fdPath(src), dst, "", m.Flags&(unix.MS_BIND|unix.MS_REC), ""); err != nil {
			return fmt.Errorf("bind %s: %w", m.Source, err)
		}
		// A bind takes its flags in a second step, on the new mount.
		if f := m.Flags &^ (unix.MS_BIND | unix.MS_REC); f != 0 {
			if err := b.remountFlags(m.Target, f, m.Flags&unix.MS_REC != 0); err != nil {
				return err
			}
		}
	} else if err := unix.Mount(m.Source, dst, m.FSType, m.Flags, m.Data); err != nil {
		return fmt.Errorf("mount %s (%s, %s): %w", m.Source, m.FSType, m.Data, err)
	}
	if m.FSType == "tmpfs" && m.Target == "/dev" {
		// The standard nodes every runtime gives a container's /dev.
		d, err := b.open("/dev", unix.O_PATH|unix.O_DIRECTORY)
		if err != nil {
			return err
		}
		defer d.Close()
		if err := devNodes(d); err != nil {
			return err
		}
	}
	if m.Propagation != 0 {
		nt, err := b.open(m.Target, unix.O_PATH)
		if err != nil {
			return err
		}
		defer nt.Close()
		if err := unix.Mount("", fdPath(nt), "", m.Propagation, ""); err != nil {
			return fmt.Errorf("propagation: %w", err)
		}
	}
	return nil
}

// remountFlags sets ro/nosuid/nodev/noexec (and the atime bits) on the
// mount now at target; recursive takes its submounts too.
func (b *builder) remountFlags(target string, flags uintptr, recursive bool) error {
	t, err := b.open(target, unix.O_PATH)
	if err != nil {
		return err
	}
	defer t.Close()
	attr := mountAttr(flags)
	if attr.Attr_set&(unix.MOUNT_ATTR_NOATIME|unix.MOUNT_ATTR_STRICTATIME) != 0 {
		attr.Attr_clr = unix.MOUNT_ATTR__ATIME
	}
	at := unix.AT_EMPTY_PATH
	if recursive {
		at |= unix.AT_RECURSIVE
	}
	if err := unix.MountSetattr(int(t.Fd()), "", uint(at), attr); err != nil {
		return fmt.Errorf("set mount flags of %s: %w", target, err)
	}
	return nil
}

// makeTarget opens target below the root, making what is missing of it
// (directories, and a last file for the bind of a file). A symlink on
// the way is refused, not followed.
func (b *builder) makeTarget(target string, dir bool) (*os.File, error) {
	rootFD, err := unix.Open(b.root, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, err
	}
	cur := rootFD
	defer func() { unix.Close(cur) }()
	parts := strings.Split(strings.TrimPrefix(path.Clean("/"+target), "/"), "/")
	if parts[0] == "" {
		return os.NewFile(uintptr(must(unix.Dup(rootFD))), target), nil
	}
	for i, p := range parts {
		last := i == len(parts)-1
		if !last || dir {
			if err := unix.Mkdirat(cur, p, 0o755); err != nil && err != unix.EEXIST {
				return nil, fmt.Errorf("mkdir %s in the root: %w", target, err)
			}
		} else {
			fd, err := unix.Openat(cur, p, unix.O_CREAT|unix.O_WRONLY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0o644)
			if err != nil && err != unix.EISDIR {
				return nil, fmt.Errorf("create %s in the root: %w", target, err)
			}
			if err == nil {
				unix.Close(fd)
			}
		}
		flags := unix.O_PATH | unix.O_NOFOLLOW | unix.O_CLOEXEC
		if !last || dir {
			flags |= unix.O_DIRECTORY
		}
		next, err := unix.Openat(cur, p, flags, 0)
		if err != nil {
			return nil, fmt.Errorf("the root's %s is, or passes through, a symlink or a file where a directory is needed: refused: %w", target, err)
		}
		var st unix.Stat_t
		if err := unix.Fstat(next, &st); err == nil && st.Mode&unix.S_IFMT == unix.S_IFLNK {
			unix.Close(next)
			return nil, fmt.Errorf("the root's %s is a symlink: refusing to mount on it", target)
		}
		unix.Close(cur)
		cur = next
	}
	f := os.NewFile(uintptr(cur), target)
	cur = must(unix.Dup(cur)) // the deferred close takes this copy
	return f, nil
}

func must(fd int, err error) int {
	if err != nil {
		return -1
	}
	return fd
}

// device makes one linux.devices node: mknod below the root's /dev
// (Data: "type major minor mode uid gid").
func (b *builder) device(m MountSpec) error {
	f := strings.Fields(m.Data)
	if len(f) != 6 {
		return fmt.Errorf("device %s: bad plan %q", m.Target, m.Data)
	}
	n := make([]uint64, 5)
	for i := range n {
		v, err := strconv.ParseUint(f[i+1], 0, 32)
		if err != nil {
			return fmt.Errorf("device %s: %w", m.Target, err)
		}
		n[i] = v
	}
	typ := map[string]uint32{"c": unix.S_IFCHR, "u": unix.S_IFCHR, "b": unix.S_IFBLK, "p": unix.S_IFIFO}[f[0]]
	parent, err := b.makeTarget(path.Dir(m.Target), true)
	if err != nil {
		return err
	}
	defer parent.Close()
	d, err := os.Open(fdPath(parent)) // mknodat needs a real fd
	if err != nil {
		return err
	}
	defer d.Close()
	name := path.Base(m.Target)
	unix.Unlinkat(int(d.Fd()), name, 0) // a default node it replaces
	if err := unix.Mknodat(int(d.Fd()), name, typ|uint32(n[2]&0o7777), int(unix.Mkdev(uint32(n[0]), uint32(n[1])))); err != nil {
		return fmt.Errorf("mknod %s: %w", m.Target, err)
	}
	if err := unix.Fchmodat(int(d.Fd()), name, uint32(n[2]&0o7777), 0); err != nil {
		return err
	}
	return unix.Fchownat(int(d.Fd()), name, int(n[3]), int(n[4]), unix.AT_SYMLINK_NOFOLLOW)
}

// writeSysctls writes the config's sysctls through the host's /proc/sys
// (still this thread's view, before pivot_root): the namespaced ones
// oci.go admits land in the thread's new namespaces.
func writeSysctls(s map[string]string) error {
	for k, v := range s {
		p := "/proc/sys/" + strings.ReplaceAll(k, ".", "/")
		if err := os.WriteFile(p, []byte(v), 0); err != nil {
			return fmt.Errorf("linux.sysctl %s: %w", k, err)
		}
	}
	return nil
}

// mountAttr is mount_setattr's form of MS_ flags.
func mountAttr(flags uintptr) *unix.MountAttr {
	attr := &unix.MountAttr{}
	for _, f := range []struct {
		ms   uintptr
		attr uint64
	}{{unix.MS_RDONLY, unix.MOUNT_ATTR_RDONLY}, {unix.MS_NOSUID, unix.MOUNT_ATTR_NOSUID}, {unix.MS_NODEV, unix.MOUNT_ATTR_NODEV},
		{unix.MS_NOEXEC, unix.MOUNT_ATTR_NOEXEC}, {unix.MS_NOATIME, unix.MOUNT_ATTR_NOATIME}, {unix.MS_STRICTATIME, unix.MOUNT_ATTR_STRICTATIME},
		{unix.MS_NODIRATIME, unix.MOUNT_ATTR_NODIRATIME}} {
		if flags&f.ms != 0 {
			attr.Attr_set |= f.attr
		}
	}
	return attr
}
