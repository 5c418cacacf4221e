package build

import (
	"context"
	"fmt"
	"io"

	"cimg.dev/cimg/internal/squashfs"
)

// pack writes the staged tree as squashfs at the start of w.
func pack(ctx context.Context, w io.WriteSeeker, t *squashfs.Tree, spec *Spec) (squashfs.Stats, error) {
	if spec.Compression == "" {
		spec.Compression = "zstd"
	}
	c, err := squashfs.ParseCompression(spec.Compression)
	if err != nil {
		return squashfs.Stats{}, err
	}
	opts := squashfs.Options{
		Compression: c,
		BlockSize:   spec.BlockSize,
		Level:       spec.Level,
		MkfsTime:    spec.Epoch,
	}
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
