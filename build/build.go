// Package build turns inputs — a binary, a rootfs directory, extra files —
// and a manifest into a .cimg file. It reads as three steps, one per file:
// stage (gather the tree and complete the manifest), pack (squashfs), and
// seal (hash tree, manifest, signatures, footer), all into a temporary
// file that is renamed over the output only once it is complete and on
// disk.
package build

import (
	"context"
	"crypto/ed25519"
	"fmt"
	"io"
	"os"
	"path/filepath"

	"cimg.dev/cimg/format"
	"cimg.dev/cimg/internal/squashfs"
	"cimg.dev/cimg/internal/stage"
	"cimg.dev/cimg/manifest"
)

// Spec is one build.
type Spec struct {
	// Manifest is the decoded cimg.toml (or manifest.Default() when there
	// is none); Build fills name, arch and command where it can and then
	// validates it.
	Manifest *manifest.Manifest
	// BaseDir resolves relative paths of the manifest's [build] table.
	BaseDir string

	Binary     string   // an ELF program, staged at /usr/bin/NAME with its closure
	Sysroot    string   // target root the closure comes from (default /)
	Libs       []string // dlopen'd libraries to pack with their closures
	Rootfs     string   // a directory that becomes the image root
	FromOCI    string   // an OCI image layout directory or docker-archive tarball
	Platform   string   // os/arch[/variant] to pick from a multi-platform OCI index
	Entrypoint string   // absolute path in the image to run
	Add        []string // SRC:DST, files or directories

	// ResolveRootfs resolves the libraries of the rootfs's ELF objects
	// too. Off by default: a rootfs is usually a whole distribution root
	// (debootstrap, an unpacked image) that is complete as it is, and
	// scanning thousands of files for nothing would slow every build.
	ResolveRootfs bool

	Compression string // zstd, xz, gzip, lz4; NAME:LEVEL sets the level too (default DefaultCompression)
	BlockSize   int    // 0: DefaultBlockSize
	Level       int
	// XZBCJ is the xz filter for executable code: none, x86, arm,
	// armthumb or arm64. Empty picks the target arch's where every kernel
	// with squashfs xz support decodes it (x86, armthumb for arm; none for
	// arm64, whose filter needs Linux 6.11).
	XZBCJ      string
	Epoch      int64 // SOURCE_DATE_EPOCH: every timestamp in the image
	KeepOwners bool
	KeepMtimes bool
	Signers    []ed25519.PrivateKey

	Output string
	// Progress, if set, gets content bytes packed so far and the total.
	Progress func(done, total int64)
	// Warn, if set, gets warnings: things that build but may not run.
	Warn func(msg string)

	squashfs squashfs.Options    // resolved by prepare from the fields above
	cleanup  []func()            // temporary state of the inputs, dropped when Build returns
	neededBy map[string][]string // library → the image paths that need it, or "--lib"
}

func (s *Spec) warn(format string, args ...any) {
	if s.Warn != nil {
		s.Warn(fmt.Sprintf(format, args...))
	}
}

// Result describes the image written.
type Result struct {
	Output      string
	Compression string
	Size        int64
	Footer      *format.Footer
	Squashfs    squashfs.Stats
	Manifest    *manifest.Manifest
	Records     []stage.Record
	// NeededBy maps each library of the closure (an image path) to the
	// objects whose DT_NEEDED it satisfies, as the provenance records.
	NeededBy map[string][]string
}

// Build stages the inputs, packs and seals them into spec.Output. On any
// error, or when ctx is cancelled, no output file is created or changed.
func Build(ctx context.Context, spec Spec) (*Result, error) {
	if spec.Output == "" {
		return nil, fmt.Errorf("no output file given")
	}
	defer func() {
		for _, f := range spec.cleanup {
			f()
		}
	}()
	st, err := prepare(&spec)
	if err != nil {
		return nil, err
	}
	manifestBytes, err := spec.Manifest.Encode()
	if err != nil {
		return nil, err
	}
	res := &Result{Output: spec.Output, Manifest: spec.Manifest, Records: st.Records(), NeededBy: spec.neededBy}
	err = writeAtomic(spec.Output, func(out *os.File) error {
		f := &earlyWriteback{File: out}
		sq, err := pack(ctx, f, st.Tree(), &spec)
		if err != nil {
			return err
		}
		res.Squashfs = sq
		f.start() // the payload's tail goes to disk while the tree is hashed
		res.Compression = spec.Compression
		res.Footer, res.Size, err = format.Finish(f, int64(sq.Size), format.FinishOptions{
			Manifest: manifestBytes,
			Signers:  spec.Signers,
		})
		if err != nil {
			return fmt.Errorf("seal image: %w", err)
		}
		return f.Truncate(res.Size)
	})
	if err != nil {
		return nil, err
	}
	return res, nil
}

// writeAtomic runs write on a temporary file beside path, then syncs it,
// renames it over path and syncs the directory, so path holds either its
// old content or the complete new one, even across a power cut.
func writeAtomic(path string, write func(*os.File) error) (err error) {
	dir := filepath.Dir(path)
	f, err := os.CreateTemp(dir, "."+filepath.Base(path)+".tmp-*")
	if err != nil {
		return fmt.Errorf("create output in %s: %w", dir, err)
	}
	defer func() {
		if err != nil {
			f.Close()
			os.Remove(f.Name())
		}
	}()
	if err = write(f); err != nil {
		return err
	}
	if err = f.Chmod(0o644); err != nil {
		return fmt.Errorf("chmod %s: %w", f.Name(), err)
	}
	if err = f.Sync(); err != nil {
		return fmt.Errorf("sync %s: %w", f.Name(), err)
	}
	if err = f.Close(); err != nil {
		return fmt.Errorf("close %s: %w", f.Name(), err)
	}
	if err = os.Rename(f.Name(), path); err != nil {
		return fmt.Errorf("rename into %s: %w", path, err)
	}
	d, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("sync directory %s: %w", dir, err)
	}
	defer d.Close()
	if err = d.Sync(); err != nil {
		return fmt.Errorf("sync directory %s: %w", dir, err)
	}
	return nil
}

// Sign copies the image at in to out (which may be the same path) with
// signatures by keys added, atomically.
func Sign(in, out string, keys []ed25519.PrivateKey) error {
	img, src, err := format.OpenFile(in)
	if err != nil {
		return err
	}
	defer src.Close()
	// Signing vouches for the payload: check it first.
	if err := img.VerifyPayload(); err != nil {
		return fmt.Errorf("%s: refusing to sign: %w", in, err)
	}
	return writeAtomic(out, func(f *os.File) error {
		if _, err := io.Copy(f, io.NewSectionReader(src, 0, img.Footer.SigOffset)); err != nil {
			return fmt.Errorf("copy %s: %w", in, err)
		}
		size, err := format.Resign(f, img, keys)
		if err != nil {
			return err
		}
		return f.Truncate(size)
	})
}
