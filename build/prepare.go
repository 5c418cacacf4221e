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

	"cimg.dev/cimg/internal/elfdeps"
	"cimg.dev/cimg/internal/squashfs"
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
	// What the image holds, from the inputs, for the closure search; and
	// the ELF objects among the inputs whose libraries must come along.
	staged := map[string]string{}
	var objects []elfInput
	if spec.ResolveRootfs && spec.Rootfs == "" {
		return nil, errors.New("--resolve-rootfs needs --rootfs")
	}
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
		objs, err := scanInput(spec, spec.Rootfs, "/", spec.ResolveRootfs, staged)
		if err != nil {
			return nil, err
		}
		objects = append(objects, objs...)
	}
	if spec.FromOCI != "" {
		if spec.Rootfs != "" {
			return nil, errors.New("--from-oci and --rootfs both give the image root: choose one")
		}
		if err := importOCI(st, spec); err != nil {
			return nil, err
		}
	}
	binPath, binReal, binHost := "", "", ""
	if spec.Binary != "" {
		binPath = "/usr/bin/" + filepath.Base(spec.Binary)
		var err error
		if binReal, binHost, err = stageBinary(st, spec, binPath, staged); err != nil {
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
		objs, err := scanInput(spec, src, dst, true, staged)
		if err != nil {
			return nil, fmt.Errorf("--add %s: %w", a, err)
		}
		objects = append(objects, objs...)
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
		elfFrom = binHost
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
	// The closure: the interpreter and every library the target loader
	// will map for the binary and the ELF objects among the other inputs,
	// from the sysroot (or the host's /).
	if spec.Binary != "" || len(objects) > 0 {
		if err := stageClosure(st, spec, binReal, binHost, objects, staged); err != nil {
			return nil, err
		}
	} else if len(spec.Libs) > 0 {
		return nil, errors.New("--lib needs a binary, or ELF objects in --add or a --resolve-rootfs rootfs, whose closure it extends")
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
	opts, err := squashfsOptions(spec, m.Arch)
	if err != nil {
		return nil, err
	}
	spec.squashfs = opts
	if err := writeProvenance(st, spec.neededBy, squashfs.EncoderDescription(opts)); err != nil {
		return nil, err
	}
	return st, nil
}

// stageBinary stages the program at binPath and returns where its real
// file is, in the image and on the host. A symlinked program (python3 ->
// python3.11, or through /etc/alternatives) is staged as the same chain
// of symlinks, each keeping its text, down to the real file: launching
// the link then runs what it ran on the build host, and the program
// still sees the name it was called by (python finds its prefix from the
// real path, busybox-style programs switch on the name).
//
// The chain is followed inside the sysroot when the binary is in it (an
// absolute target starts at the sysroot, and a target that climbs above
// it is refused). A binary from elsewhere, a build tree say, follows its
// relative links on the host and its first absolute one into the
// sysroot, which is what the image's / is made of.
func stageBinary(st *stage.Stager, spec *Spec, binPath string, staged map[string]string) (img, host string, err error) {
	fi, err := os.Lstat(spec.Binary)
	if err != nil {
		return "", "", fmt.Errorf("binary: %w", err)
	}
	if fi.Mode()&fs.ModeSymlink == 0 {
		staged[binPath] = spec.Binary
		return binPath, spec.Binary, st.Add(spec.Binary, binPath, "binary")
	}
	sysroot := elfdeps.Root{Dir: "/"}
	if spec.Sysroot != "" {
		sysroot = elfdeps.Root{Dir: spec.Sysroot}
	}
	abs, err := filepath.Abs(spec.Binary)
	if err != nil {
		return "", "", err
	}
	root, rp := elfdeps.Root{Dir: "/"}, abs
	if rel, ok := within(sysroot.Dir, abs); ok {
		root, rp = sysroot, rel
	}
	img, reason := binPath, "binary"
	for hops := 0; hops <= 40; hops++ {
		real, host, err := root.Locate(rp)
		if err != nil {
			return "", "", fmt.Errorf("binary %s: follow its symlinks to %s in %s: %w", spec.Binary, rp, root.Dir, err)
		}
		fi, err := os.Lstat(host)
		if err != nil {
			return "", "", fmt.Errorf("binary %s: %w", spec.Binary, err)
		}
		isLink := fi.Mode()&fs.ModeSymlink != 0
		if !isLink && !fi.Mode().IsRegular() {
			return "", "", fmt.Errorf("binary %s leads to %s, which is not a regular file", spec.Binary, host)
		}
		if err := st.Add(host, img, reason); err != nil {
			return "", "", err
		}
		staged[img] = host
		if !isLink {
			return img, host, nil
		}
		t, err := os.Readlink(host)
		if err != nil {
			return "", "", fmt.Errorf("binary %s: %w", spec.Binary, err)
		}
		next := t
		if path.IsAbs(t) {
			root, rp = sysroot, t
		} else {
			// The link keeps its text, so its target goes where that
			// text leads from the link's place in the image; the content
			// comes from where it leads in the root.
			next = path.Join(strings.TrimPrefix(path.Dir(img), "/"), t)
			if next == ".." || strings.HasPrefix(next, "../") {
				return "", "", fmt.Errorf("binary %s: symlink %s -> %s leads out of the root of the image", spec.Binary, img, t)
			}
			rp = path.Dir(real) + "/" + t
		}
		reason = "binary: target of the symlink " + img
		img = path.Clean("/" + next)
	}
	return "", "", fmt.Errorf("binary %s: %w", spec.Binary, elfdeps.ErrSymlinkLoop)
}

// within returns p relative to dir as an absolute image path, if p is
// below dir.
func within(dir, p string) (string, bool) {
	dir, err := filepath.Abs(dir)
	if err != nil {
		return "", false
	}
	rel, err := filepath.Rel(dir, p)
	if err != nil || rel == ".." || strings.HasPrefix(rel, "../") {
		return "", false
	}
	return "/" + filepath.ToSlash(rel), true
}

// elfInput is an ELF object that goes into the image as part of an
// --add tree or the rootfs, and whose libraries must come with it.
type elfInput struct {
	image, host string
	file        *elfdeps.File
}

// scanInput records every file and symlink of the host path src, staged
// at dst, in staged (so the closure search sees what the image holds)
// and, when objects is set, returns the dynamic ELF objects among them.
//
// What is skipped: files that are not ELF (the magic is read, nothing
// more), and ELF files without PT_DYNAMIC — static programs, relocatable
// objects and kernel modules (.o, .ko), core dumps — which the dynamic
// loader never maps and which so have no closure. An ELF file whose
// dynamic section cannot be read (a separate debug-info file keeps the
// headers but not the contents) is packed as it is with a warning.
// Objects of another architecture are not skipped here but refused by
// stageClosure, which knows the target.
func scanInput(spec *Spec, src, dst string, objects bool, staged map[string]string) ([]elfInput, error) {
	var out []elfInput
	err := filepath.WalkDir(src, func(p string, de fs.DirEntry, err error) error {
		if err != nil {
			return fmt.Errorf("input %s: %w", p, err)
		}
		if de.IsDir() {
			return nil
		}
		rel, err := filepath.Rel(src, p)
		if err != nil {
			return err
		}
		img := path.Join(dst, filepath.ToSlash(rel))
		staged[img] = p
		if !objects || !de.Type().IsRegular() {
			return nil
		}
		f, err := elfdeps.ReadFile(p)
		switch {
		case errors.Is(err, elfdeps.ErrNotELF):
			return nil
		case err != nil:
			spec.warn("%s: packed without resolving its libraries: %v", p, err)
			return nil
		case f.Static:
			return nil
		}
		out = append(out, elfInput{image: img, host: p, file: f})
		return nil
	})
	return out, err
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
