package build

import (
	"context"
	"fmt"
	"io"

	"cimg.dev/cimg/internal/squashfs"
)

// The defaults were chosen by measurement (scripts/bench-defaults.sh,
// the "Default compression" section of BENCHMARKS.md): the smallest
// image whose cold launch, decompressed by the kernel, stays within 10 %
// of zstd level 15 in 128 KiB blocks (mksquashfs's defaults) — on this
// machine's disk and at 10 MB/s, for curl and python3. zstd 19 in 256 KiB
// blocks is about 4 % smaller; 1 MiB blocks and xz are smaller still but
// launch up to 1.27× (1 MiB) and 7× (xz) slower cold on a fast disk.
const (
	DefaultCompression = "zstd:19"
	DefaultBlockSize   = 256 << 10
)

// squashfsOptions resolves the compression flags (NAME[:LEVEL], --level,
// the block size and the xz filter) for a target arch.
func squashfsOptions(spec *Spec, arch string) (squashfs.Options, error) {
	if spec.Compression == "" {
		spec.Compression = DefaultCompression
	}
	if spec.BlockSize == 0 {
		spec.BlockSize = DefaultBlockSize
	}
	c, level, err := squashfs.ParseCompressionLevel(spec.Compression)
	if err != nil {
		return squashfs.Options{}, err
	}
	switch {
	case spec.Level == 0:
	case level == 0:
		level = spec.Level
	case level != spec.Level:
		return squashfs.Options{}, fmt.Errorf("--compression %s and --level %d disagree", spec.Compression, spec.Level)
	}
	o := squashfs.Options{Compression: c, BlockSize: spec.BlockSize, Level: level, MkfsTime: spec.Epoch}
	if c == squashfs.XZ {
		if spec.XZBCJ == "" {
			o.BCJ = squashfs.BCJForArch(arch)
			if o.BCJ == squashfs.BCJARM64 {
				// Not by default: kernels before 6.11 cannot read it.
				o.BCJ = squashfs.BCJNone
			}
		} else if o.BCJ, err = squashfs.ParseBCJ(spec.XZBCJ); err != nil {
			return squashfs.Options{}, err
		}
	} else if spec.XZBCJ != "" && spec.XZBCJ != "none" {
		return squashfs.Options{}, fmt.Errorf("--xz-bcj %s needs xz compression, not %v", spec.XZBCJ, c)
	}
	if err := squashfs.CheckOptions(o); err != nil {
		return squashfs.Options{}, err
	}
	return o, nil
}

// pack writes the staged tree as squashfs at the start of w, with the
// options prepare resolved.
func pack(ctx context.Context, w io.WriteSeeker, t *squashfs.Tree, spec *Spec) (squashfs.Stats, error) {
	opts := spec.squashfs
	if spec.Progress != nil {
		total := t.ContentSize()
		opts.Progress = func(done int64) { spec.Progress(done, total) }
	}
	st, err := squashfs.Write(ctx, w, t, opts)
	if err != nil {
		return st, fmt.Errorf("pack squashfs: %w", err)
	}
	return st, nil
}
