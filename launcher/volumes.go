package launcher

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"golang.org/x/sys/unix"
)

// makeVolumes creates the plan's volume directories under dir. dir and
// each app's directory are root's, 0700: a setuid program the app leaves
// in its volume is out of every host user's reach (and the app's mounts
// are nosuid anyway). A volume is owned by the app's user when created,
// so an app that is not root can write it. Nothing is reached through a
// symlink: an app could have left one in a volume it shares.
func makeVolumes(dir string, vols []Volume) error {
	if len(vols) == 0 {
		return nil
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("volume directory %s: %w", dir, err)
	}
	base, err := unix.Open(dir, unix.O_PATH|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("volume directory %s (a symlink is refused): %w", dir, err)
	}
	defer unix.Close(base)
	var st unix.Stat_t
	if err := unix.Fstat(base, &st); err != nil {
		return err
	}
	if st.Uid != 0 || st.Mode&0o077 != 0 {
		return fmt.Errorf("volume directory %s must be root's and 0700 (it is uid %d, mode %04o): chown root %s; chmod 0700 %s", dir, st.Uid, st.Mode&0o7777, dir, dir)
	}
	for _, v := range vols {
		app, _, _ := strings.Cut(v.Rel, "/")
		if _, err := mkdirBeneath(base, app, 0o700, 0, 0); err != nil {
			return fmt.Errorf("volume directory %s: %w", filepath.Join(dir, app), err)
		}
		uid, gid := v.UID, v.GID
		if v.Layer {
			uid, gid = 0, 0 // an overlay's layer is the kernel's: upper and work inside
		}
		if _, err := mkdirBeneath(base, v.Rel, 0o700, uid, gid); err != nil {
			return fmt.Errorf("volume %s: %w", filepath.Join(dir, v.Rel), err)
		}
	}
	return nil
}

// mkdirBeneath makes rel below base if missing (owned by uid:gid, with
// mode), and checks that it is a directory reached without symlinks. It
// reports whether it made it.
func mkdirBeneath(base int, rel string, mode uint32, uid, gid uint32) (bool, error) {
	parent, name := filepath.Split(rel)
	pfd, err := openBeneath(base, parent, unix.O_PATH|unix.O_DIRECTORY)
	if err != nil {
		return false, err
	}
	defer unix.Close(pfd)
	made := true
	if err := unix.Mkdirat(pfd, name, mode); err == unix.EEXIST {
		made = false
	} else if err != nil {
		return false, err
	}
	fd, err := openBeneath(pfd, name, unix.O_RDONLY|unix.O_DIRECTORY)
	if err != nil {
		return false, fmt.Errorf("%w (a symlink there is refused)", err)
	}
	defer unix.Close(fd)
	if made {
		// The mode past the umask, and the owner, on the directory we made.
		if err := unix.Fchmod(fd, mode); err != nil {
			return made, err
		}
		if err := unix.Fchown(fd, int(uid), int(gid)); err != nil {
			return made, err
		}
	}
	return made, nil
}
