package build

import (
	"debug/elf"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"strings"

	"cimg.dev/cimg/internal/stage"
	"cimg.dev/cimg/manifest"
)

// prepare merges the manifest's [build] table into spec, stages every
// input, completes the manifest (name, arch, command) and validates it.
func prepare(spec *Spec) (*stage.Stager, error) {
	m := spec.Manifest
	if m == nil {
		d := manifest.Default()
		m = &d
		spec.Manifest = m
	}
	if b := m.Build; b != nil {
		rel := func(p string) string {
			if p == "" || filepath.IsAbs(p) {
				return p
			}
			return filepath.Join(spec.BaseDir, p)
		}
		if spec.Binary == "" {
			spec.Binary = rel(b.Binary)
		}
		if spec.Rootfs == "" {
			spec.Rootfs = rel(b.Rootfs)
		}
		for _, a := range b.Add {
			src, dst, _ := strings.Cut(a, ":")
			spec.Add = append([]string{rel(src) + ":" + dst}, spec.Add...)
		}
		if spec.Compression == "" {
			spec.Compression = b.Compression
		}
		if spec.BlockSize == 0 {
			spec.BlockSize = int(b.BlockSize)
		}
		if spec.Sysroot == "" {
			spec.Sysroot = rel(b.Sysroot)
		}
		spec.Libs = append(append([]string(nil), b.Libs...), spec.Libs...)
	}
	if spec.Binary == "" && spec.Rootfs == "" && spec.FromOCI == "" && len(spec.Add) == 0 {
		return nil, errors.New("nothing to pack: give a binary, --rootfs, --from-oci, --add, or a manifest whose [build] names them")
	}

	st := stage.New(stage.Options{Epoch: spec.Epoch, KeepOwners: spec.KeepOwners, KeepMtimes: spec.KeepMtimes})
	if spec.Rootfs != "" {
		fi, err := os.Stat(spec.Rootfs)
		if err != nil {
			return nil, fmt.Errorf("rootfs: %w", err)
		}
		if !fi.IsDir() {
			return nil, fmt.Errorf("rootfs %s is not a directory", spec.Rootfs)
		}
		if err := st.Add(spec.Rootfs, "/", "rootfs"); err != nil {
			return nil, err
		}
	}
	if spec.FromOCI != "" {
		if spec.Rootfs != "" {
			return nil, errors.New("--from-oci and --rootfs both give the image root: choose one")
		}
		if err := importOCI(st, spec); err != nil {
			return nil, err
		}
	}
	binPath := ""
	if spec.Binary != "" {
		binPath = "/usr/bin/" + filepath.Base(spec.Binary)
		if err := st.Add(spec.Binary, binPath, "binary"); err != nil {
			return nil, err
		}
	}
	for _, a := range spec.Add {
		src, dst, ok := strings.Cut(a, ":")
		if !ok || src == "" || dst == "" {
			return nil, fmt.Errorf("--add %q: want SRC:DST with DST an absolute path in the image", a)
		}
		if strings.HasSuffix(dst, "/") {
			// As cp does: a trailing slash means "into this directory".
			dst += filepath.Base(src)
		}
		if err := st.Add(src, dst, "added"); err != nil {
			return nil, fmt.Errorf("--add %s: %w", a, err)
		}
	}

	// Complete the manifest from what was staged.
	if spec.Entrypoint != "" {
		m.App.Command = append([]string{spec.Entrypoint}, argsAfterFirst(m.App.Command)...)
	} else if len(m.App.Command) == 0 && binPath != "" {
		m.App.Command = []string{binPath}
	}
	if m.Name == "" {
		switch {
		case spec.Binary != "":
			m.Name = sanitizeName(filepath.Base(spec.Binary))
		case len(m.App.Command) > 0:
			m.Name = sanitizeName(path.Base(m.App.Command[0]))
		}
	}
	// A command that is not in the image is the likelier mistake than
	// anything Validate could say about it, so it goes first.
	if len(m.App.Command) > 0 && strings.HasPrefix(m.App.Command[0], "/") && !st.Tree().Has(m.App.Command[0]) {
		return nil, fmt.Errorf("app.command %s is not in the image (staged: binary %q, rootfs %q)", m.App.Command[0], spec.Binary, spec.Rootfs)
	}
	var elfArch, elfFrom string
	if spec.Binary != "" {
		elfFrom = spec.Binary
	} else if len(m.App.Command) > 0 && spec.Rootfs != "" {
		elfFrom = hostPathIn(spec.Rootfs, m.App.Command[0])
	}
	if elfFrom != "" {
		a, err := ELFArch(elfFrom)
		if err != nil && spec.Binary != "" {
			return nil, err
		}
		elfArch = a
	}
	// Arch before the closure: a mismatch is the clearer error, and the
	// resolver then searches for the right target.
	switch {
	case m.Arch == "":
		m.Arch = elfArch
	case elfArch != "" && m.Arch != elfArch:
		return nil, fmt.Errorf("manifest says arch %q but %s is an %s binary", m.Arch, elfFrom, elfArch)
	}
	if spec.Binary != "" {
		// The closure: the interpreter and every library the target
		// loader will map, from the sysroot (or the host's /).
		if err := stageClosure(st, spec, binPath); err != nil {
			return nil, err
		}
	} else if len(spec.Libs) > 0 {
		return nil, errors.New("--lib needs a binary whose closure it extends")
	}
	if err := m.Validate(); err != nil {
		return nil, err
	}
	// Mount points: squashfs is read-only, so whatever the launcher (or a
	// manifest mount) mounts on must exist in the image already.
	points := []string{"/proc", "/dev", "/tmp", "/run"}
	for _, mt := range m.Mounts {
		points = append(points, mt.Target)
	}
	for _, p := range points {
		if !st.Tree().Has(p) {
			if err := st.MkdirAll(p, "mount point"); err != nil {
				return nil, err
			}
		}
	}
	if err := writeProvenance(st); err != nil {
		return nil, err
	}
	return st, nil
}

func argsAfterFirst(cmd []string) []string {
	if len(cmd) <= 1 {
		return nil
	}
	return cmd[1:]
}

// hostPathIn maps an image path to the rootfs on the host without
// following symlinks out of it: only the final component may be a
// symlink, and then we resolve it inside the rootfs.
func hostPathIn(root, p string) string {
	for hops := 0; hops < 40; hops++ {
		hp := filepath.Join(root, filepath.FromSlash(p))
		fi, err := os.Lstat(hp)
		if err != nil || fi.Mode()&fs.ModeSymlink == 0 {
			return hp
		}
		t, err := os.Readlink(hp)
		if err != nil {
			return hp
		}
		if !path.IsAbs(t) {
			t = path.Join(path.Dir(p), t)
		}
		p = path.Clean("/" + t)
	}
	return filepath.Join(root, p)
}

func sanitizeName(s string) string {
	var b strings.Builder
	for _, r := range strings.ToLower(s) {
		switch {
		case r >= 'a' && r <= 'z', r >= '0' && r <= '9', r == '.', r == '_', r == '-':
			b.WriteRune(r)
		default:
			b.WriteByte('-')
		}
	}
	out := strings.TrimLeft(b.String(), "._-")
	if len(out) > 64 {
		out = out[:64]
	}
	if out == "" {
		out = "app"
	}
	return out
}

// ELFArch returns the canonical arch name of an ELF file: its machine,
// class and, on 32-bit ARM, the float ABI from the EABI flags.
func ELFArch(p string) (string, error) {
	f, err := elf.Open(p)
	if err != nil {
		return "", fmt.Errorf("%s: not an ELF program: %w", p, err)
	}
	defer f.Close()
	switch {
	case f.Machine == elf.EM_X86_64 && f.Class == elf.ELFCLASS64:
		return "amd64", nil
	case f.Machine == elf.EM_AARCH64 && f.Class == elf.ELFCLASS64:
		return "arm64", nil
	case f.Machine == elf.EM_386:
		return "i386", nil
	case f.Machine == elf.EM_RISCV && f.Class == elf.ELFCLASS64:
		return "riscv64", nil
	case f.Machine == elf.EM_ARM:
		const efARMABIFloatHard = 0x400
		if f.FileHeader.Entry != 0 && elfFlags(p)&efARMABIFloatHard != 0 {
			return "armhf", nil
		}
		return "armel", nil
	}
	return "", fmt.Errorf("%s: unsupported ELF machine %v (%v)", p, f.Machine, f.Class)
}

// elfFlags reads e_flags, which debug/elf does not expose.
func elfFlags(p string) uint32 {
	b := make([]byte, 52)
	f, err := os.Open(p)
	if err != nil {
		return 0
	}
	defer f.Close()
	if _, err := f.ReadAt(b, 0); err != nil || b[4] != 1 { // ELFCLASS32 only
		return 0
	}
	if b[5] == 2 { // big endian
		return uint32(b[36])<<24 | uint32(b[37])<<16 | uint32(b[38])<<8 | uint32(b[39])
	}
	return uint32(b[36]) | uint32(b[37])<<8 | uint32(b[38])<<16 | uint32(b[39])<<24
}
