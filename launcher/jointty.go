package launcher

import (
	"fmt"
	"os"

	"golang.org/x/sys/unix"
)

// openTTY makes a pseudo-terminal for an exec'd command in the instance's
// own /dev/pts (the devpts instance the launch mounted there), not the
// host's: the command's terminal is a device of its world, and its
// /proc/self/fd/0 names nothing on the host. The master is opened from
// the host through the app's root without following any link the app
// may have planted; the other side comes from the master itself
// (TIOCGPTPEER), so no path is looked up for it at all.
func (j *joining) openTTY() error {
	root, err := unix.Openat(j.proc, "root", unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("the app's root: %w", err)
	}
	defer unix.Close(root)
	fd, err := unix.Openat2(root, "dev/pts/ptmx", &unix.OpenHow{
		Flags:   unix.O_RDWR | unix.O_NOCTTY | unix.O_CLOEXEC,
		Resolve: unix.RESOLVE_BENEATH | unix.RESOLVE_NO_SYMLINKS | unix.RESOLVE_NO_MAGICLINKS,
	})
	if err != nil {
		return fmt.Errorf("open the instance's /dev/pts/ptmx: %w", err)
	}
	fail := func(err error) error { unix.Close(fd); return err }
	var st unix.Stat_t
	var sfs unix.Statfs_t
	if err := unix.Fstat(fd, &st); err != nil || st.Mode&unix.S_IFMT != unix.S_IFCHR || unix.Major(st.Rdev) != 5 || unix.Minor(st.Rdev) != 2 ||
		unix.Fstatfs(fd, &sfs) != nil || sfs.Type != unix.DEVPTS_SUPER_MAGIC {
		return fail(fmt.Errorf("the instance's /dev/pts/ptmx is not a devpts ptmx: refused"))
	}
	if err := unix.IoctlSetPointerInt(fd, unix.TIOCSPTLCK, 0); err != nil {
		return fail(fmt.Errorf("unlock the pty: %w", err))
	}
	pts, _, errno := unix.Syscall(unix.SYS_IOCTL, uintptr(fd), unix.TIOCGPTPEER, unix.O_RDWR|unix.O_NOCTTY|unix.O_CLOEXEC)
	if errno != 0 {
		return fail(fmt.Errorf("open the pty's other side (TIOCGPTPEER, Linux 4.13): %w", errno))
	}
	// The terminal belongs to the command's user, as a login's would
	// (host ids under a user namespace).
	uid, gid := j.plan.UID, j.plan.GID
	if m := j.plan.UserNS; m != nil {
		uid, gid = m.HostUID(uid), m.HostGID(gid)
	}
	unix.Fchown(int(pts), int(uid), int(gid))
	// The master is polled by the runtime (no thread parked in read).
	unix.SetNonblock(fd, true)
	j.ptm, j.pts = os.NewFile(uintptr(fd), "pty master"), int(pts)
	j.fp.stdio = [3]int{j.pts, j.pts, j.pts}
	j.fp.tty = true
	j.resize()
	return nil
}

// resize gives the pty our terminal's size.
func (j *joining) resize() {
	if ws, err := unix.IoctlGetWinsize(0, unix.TIOCGWINSZ); err == nil {
		unix.IoctlSetWinsize(int(j.ptm.Fd()), unix.TIOCSWINSZ, ws)
	}
}

// terminal puts our own terminal (if stdin is one) in raw mode, so that
// keys such as ^C reach the command's terminal as bytes and its line
// discipline, not ours, acts on them; it returns the restore.
func (j *joining) terminal() func() {
	old, err := unix.IoctlGetTermios(0, unix.TCGETS)
	if err != nil {
		return func() {}
	}
	raw := *old
	raw.Iflag &^= unix.IGNBRK | unix.BRKINT | unix.PARMRK | unix.ISTRIP | unix.INLCR | unix.IGNCR | unix.ICRNL | unix.IXON
	raw.Oflag &^= unix.OPOST
	raw.Lflag &^= unix.ECHO | unix.ECHONL | unix.ICANON | unix.ISIG | unix.IEXTEN
	raw.Cflag &^= unix.CSIZE | unix.PARENB
	raw.Cflag |= unix.CS8
	raw.Cc[unix.VMIN], raw.Cc[unix.VTIME] = 1, 0
	unix.IoctlSetTermios(0, unix.TCSETS, &raw)
	return func() { unix.IoctlSetTermios(0, unix.TCSETS, old) }
}
