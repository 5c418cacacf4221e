package launcher

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"path"
	"strings"

	"golang.org/x/sys/unix"
)

// checkExec follows the command as execve will — symlinks, a "#!"
// interpreter, the ELF interpreter — inside the new root (the calling
// thread's), and refuses any step that leads into /proc, /sys or /dev.
// Until its execve the child *is* the host's cimg-run: an interpreter of
// /proc/self/exe would run that binary inside the container
// (CVE-2019-5736). Missing files are left to execve, whose error
// explainExec turns into advice.
func checkExec(p string) error {
	for depth := 0; depth < 5; depth++ { // the kernel nests 4 interpreters at most
		real, err := resolveLinks(p)
		if err != nil {
			return err
		}
		if err := commandAllowed(real); err != nil {
			return fmt.Errorf("%s leads to %s: %w", p, real, err)
		}
		interp, err := interpreter(real)
		if err != nil || interp == "" {
			return nil
		}
		p = interp
	}
	return fmt.Errorf("%s: more than 4 nested interpreters", p)
}

// resolveLinks follows symlinks in p (absolute) component by component,
// as path lookup does, and returns the path it ends at.
func resolveLinks(p string) (string, error) {
	done, todo := "/", strings.Split(strings.Trim(p, "/"), "/")
	for hops := 0; len(todo) > 0; {
		part := todo[0]
		todo = todo[1:]
		if part == "" || part == "." {
			continue
		}
		next := path.Join(done, part)
		if err := commandAllowed(next); err != nil {
			return next, nil // refused by the caller
		}
		target, err := os.Readlink(next)
		if err != nil {
			done = next // not a link (or missing: execve says so)
			continue
		}
		if hops++; hops > 40 {
			return "", fmt.Errorf("%s: too many levels of symlinks", p)
		}
		if strings.HasPrefix(target, "/") {
			done = "/"
		}
		todo = append(strings.Split(strings.Trim(target, "/"), "/"), todo...)
	}
	return done, nil
}

// interpreter returns the program the kernel runs for file p: a script's
// "#!" line, or an ELF's PT_INTERP; "" for none.
func interpreter(p string) (string, error) {
	f, err := os.Open(p)
	if err != nil {
		return "", err
	}
	defer f.Close()
	var head [256]byte
	n, _ := f.ReadAt(head[:], 0)
	b := head[:n]
	if bytes.HasPrefix(b, []byte("#!")) {
		line, _, _ := bytes.Cut(b[2:], []byte("\n"))
		fields := strings.Fields(string(line))
		if len(fields) == 0 {
			return "", nil
		}
		return fields[0], nil
	}
	if !bytes.HasPrefix(b, []byte("\x7fELF")) || n < 52 {
		return "", nil
	}
	return elfInterp(f, b)
}

// elfInterp reads PT_INTERP from an ELF file whose first bytes are head.
func elfInterp(f *os.File, head []byte) (string, error) {
	var bo binary.ByteOrder = binary.LittleEndian
	if head[5] == 2 {
		bo = binary.BigEndian
	}
	is64 := head[4] == 2
	var phoff uint64
	var phentsize, phnum uint16
	if is64 {
		if len(head) < 64 {
			return "", nil
		}
		phoff, phentsize, phnum = bo.Uint64(head[32:]), bo.Uint16(head[54:]), bo.Uint16(head[56:])
	} else {
		phoff, phentsize, phnum = uint64(bo.Uint32(head[28:])), bo.Uint16(head[42:]), bo.Uint16(head[44:])
	}
	if phentsize < 32 || phnum > 256 {
		return "", nil
	}
	ph := make([]byte, phentsize)
	for i := uint64(0); i < uint64(phnum); i++ {
		if _, err := f.ReadAt(ph, int64(phoff+i*uint64(phentsize))); err != nil {
			return "", nil
		}
		if bo.Uint32(ph) != 3 { // PT_INTERP
			continue
		}
		var off, size uint64
		if is64 {
			off, size = bo.Uint64(ph[8:]), bo.Uint64(ph[32:])
		} else {
			off, size = uint64(bo.Uint32(ph[4:])), uint64(bo.Uint32(ph[16:]))
		}
		if size == 0 || size > 4096 {
			return "", nil
		}
		name := make([]byte, size)
		if _, err := f.ReadAt(name, int64(off)); err != nil {
			return "", nil
		}
		return string(bytes.TrimRight(name, "\x00")), nil
	}
	return "", nil
}

// explainExec turns the child's failed execve into what to do about it.
// It runs on the launch thread, whose root is the app's, so it sees the
// files execve saw.
func explainExec(p *Plan, errno unix.Errno) string {
	cmd := p.Argv[0]
	real, _ := resolveLinks(cmd)
	fi, err := os.Stat(real)
	switch {
	case errors.Is(errno, unix.ENOENT) && err != nil:
		if real != cmd {
			return fmt.Sprintf("the command %s is a link to %s, which is not in the image (pack the link's target too)", cmd, real)
		}
		return fmt.Sprintf("the command %s is not in the image", cmd)
	case errors.Is(errno, unix.ENOENT):
		if interp, _ := interpreter(real); interp != "" {
			if _, err := os.Stat(interp); err != nil {
				return fmt.Sprintf("%s needs the interpreter %s, which is not in the image (a dynamically linked program without its loader: pack it with cimg-build, which resolves the closure)", cmd, interp)
			}
		}
		return fmt.Sprintf("%s exists but something it needs is missing", cmd)
	case errors.Is(errno, unix.ENOEXEC):
		return fmt.Sprintf("%s is not a program this machine runs (another architecture, or a script without \"#!\")", cmd)
	case errors.Is(errno, unix.EACCES) && err == nil && fi.Mode()&0o111 == 0:
		return fmt.Sprintf("%s is not executable (mode %v)", cmd, fi.Mode())
	case errors.Is(errno, unix.EACCES):
		return fmt.Sprintf("%s cannot be executed by uid %d (permissions, or a noexec mount)", cmd, p.UID)
	case errors.Is(errno, unix.EMFILE), errors.Is(errno, unix.ENFILE):
		return "no file descriptor left for execve: limits.rlimits.nofile is too low"
	case errors.Is(errno, unix.E2BIG):
		return "the arguments and environment are larger than the kernel takes"
	}
	return ""
}
