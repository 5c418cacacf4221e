package launcher

import (
	"bytes"
	"encoding/hex"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"golang.org/x/sys/unix"
)

// openImage opens the image file and refuses one that someone other than
// root could change: without dm-verity the payload is verified once and
// then mounted, so a file another user may write (or replace, through a
// directory they may write) could carry other code by the time it is
// mounted. Like sshd's StrictModes: the file and every directory above
// it owned by root and writable by nobody else (a sticky directory such
// as /tmp is fine: others cannot replace root's file in it).
func openImage(path string) (*os.File, error) {
	f, err := os.OpenFile(path, os.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, err
	}
	var st unix.Stat_t
	if err := unix.Fstat(int(f.Fd()), &st); err != nil {
		f.Close()
		return nil, err
	}
	if err := safeOwner(path, st, false); err != nil {
		f.Close()
		return nil, err
	}
	real, err := filepath.EvalSymlinks(path)
	if err == nil {
		real, err = filepath.Abs(real)
	}
	if err != nil {
		f.Close()
		return nil, err
	}
	for dir := filepath.Dir(real); ; dir = filepath.Dir(dir) {
		if err := unix.Stat(dir, &st); err != nil {
			f.Close()
			return nil, err
		}
		if err := safeOwner(dir, st, true); err != nil {
			f.Close()
			return nil, fmt.Errorf("image %s: %w", path, err)
		}
		if dir == "/" {
			break
		}
	}
	return f, nil
}

// safeOwner checks that only root can change the file or directory p.
func safeOwner(p string, st unix.Stat_t, dir bool) error {
	what := "image file"
	if dir {
		what = "directory"
	}
	if st.Uid != 0 {
		return fmt.Errorf("%s %s is owned by uid %d, not root: another user could change it after it was verified (chown root %s)", what, p, st.Uid, p)
	}
	if st.Mode&0o022 != 0 && !(dir && st.Mode&unix.S_ISVTX != 0) {
		return fmt.Errorf("%s %s is writable by group or others (mode %04o): another user could change it after it was verified (chmod go-w %s)", what, p, st.Mode&0o7777, p)
	}
	return nil
}

// checkArch refuses an image for another architecture, unless the kernel
// runs that architecture's programs through a binfmt_misc handler opened
// at registration (flag F, as qemu-user-static registers it): then the
// emulator works inside the container too, and docker and podman run
// such images the same way.
func checkArch(image, arch string, warn func(string)) error {
	host := HostArch()
	if arch == host {
		return nil
	}
	if h := binfmtHandler(arch); h != "" {
		warn(fmt.Sprintf("%s is built for %s, this machine is %s: running it under the emulator %s (slow)", image, arch, host, h))
		return nil
	}
	return fmt.Errorf("%s is built for %s, this machine is %s; to run it emulated, register qemu-user-static's binfmt handlers with the F flag (apt install qemu-user-static binfmt-support; mount -t binfmt_misc binfmt_misc /proc/sys/fs/binfmt_misc; update-binfmts --enable)", image, arch, host)
}

// elfMachine is e_machine (little-endian, as in the ELF header at offset
// 18) of each manifest arch.
var elfMachine = map[string]uint16{"amd64": 62, "arm64": 183, "armhf": 40, "arm": 40, "i386": 3, "riscv64": 243, "ppc64le": 21, "s390x": 22}

// binfmtHandler returns the interpreter of an enabled binfmt_misc entry
// with the F flag whose magic matches arch's ELF executables, or "".
func binfmtHandler(arch string) string {
	want, ok := elfMachine[arch]
	if !ok {
		return ""
	}
	entries, _ := filepath.Glob("/proc/sys/fs/binfmt_misc/*")
	for _, e := range entries {
		b, err := os.ReadFile(e)
		if err != nil {
			continue
		}
		var enabled, fixed bool
		var interp, magic, mask string
		for _, line := range strings.Split(string(b), "\n") {
			k, v, _ := strings.Cut(line, " ")
			switch {
			case line == "enabled":
				enabled = true
			case k == "interpreter":
				interp = v
			case k == "flags:":
				fixed = strings.Contains(v, "F")
			case k == "magic":
				magic = v
			case k == "mask":
				mask = v
			}
		}
		if enabled && fixed && machineMatches(magic, mask, want) {
			return interp
		}
	}
	return ""
}

// machineMatches reports whether an entry's magic (with its mask) at
// offset 0 selects ELF files of machine m.
func machineMatches(magicHex, maskHex string, m uint16) bool {
	magic, err1 := hex.DecodeString(magicHex)
	mask, err2 := hex.DecodeString(maskHex)
	if maskHex == "" {
		mask = bytes.Repeat([]byte{0xff}, len(magic)) // no mask: every bit counts
	}
	if err1 != nil || err2 != nil || len(magic) < 20 || len(mask) < 20 || !bytes.HasPrefix(magic, []byte("\x7fELF")) {
		return false
	}
	return magic[18]&mask[18] == byte(m)&mask[18] && magic[19]&mask[19] == byte(m>>8)&mask[19]
}
