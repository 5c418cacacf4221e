//go:build !cgo

package squashfs

import (
	"fmt"

	"github.com/klauspost/compress/zstd"
)

// Without cgo (CGO_ENABLED=0), zstd blocks are compressed by the pure-Go
// encoder of github.com/klauspost/compress: valid images, somewhat larger
// than the reference encoder's (see zstd_cgo.go).

type zstdEncoder struct{ enc *zstd.Encoder }

func newZstdEncoder(level int) (encoder, error) {
	lvl := zstd.SpeedBestCompression
	if level > 0 {
		lvl = zstd.EncoderLevelFromZstd(level)
	}
	// Single-segment frames: the window is the content size, never
	// more than the block size the kernel sized its workspace for.
	enc, err := zstd.NewWriter(nil,
		zstd.WithEncoderLevel(lvl),
		zstd.WithEncoderConcurrency(1),
		zstd.WithEncoderCRC(false),
		zstd.WithSingleSegment(true),
		zstd.WithZeroFrames(true))
	if err != nil {
		return nil, fmt.Errorf("zstd encoder: %w", err)
	}
	return &zstdEncoder{enc: enc}, nil
}

func (e *zstdEncoder) encode(dst, src []byte) ([]byte, error) {
	out := e.enc.EncodeAll(src, dst[:0])
	if len(out) >= len(src) {
		return nil, nil
	}
	return out, nil
}

func zstdDescription(level int) string {
	lvl := zstd.SpeedBestCompression
	if level > 0 {
		lvl = zstd.EncoderLevelFromZstd(level)
	}
	return fmt.Sprintf("zstd level %d (%v): github.com/klauspost/compress/zstd (pure Go, built without cgo)", level, lvl)
}
