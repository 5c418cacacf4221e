//go:build !(cgo && cimg_clibs)

package squashfs

import (
	"fmt"

	"github.com/pierrec/lz4/v4"
)

// Without the reference encoder (see lz4_liblz4.go), lz4 blocks are
// written by github.com/pierrec/lz4 in pure Go: the fast encoder matches
// liblz4's sizes; its HC encoder's are about 5 % larger.

func newLZ4Encoder(level int) encoder { return &lz4Encoder{hc: level > 0, level: level} }

func lz4Description(level int) string {
	if level > 0 {
		return fmt.Sprintf("lz4 HC level %d: github.com/pierrec/lz4/v4 (pure Go)", level)
	}
	return "lz4: github.com/pierrec/lz4/v4 (pure Go)"
}

type lz4Encoder struct {
	hc    bool
	level int
	c     lz4.Compressor
	hcc   lz4.CompressorHC
}

func (e *lz4Encoder) encode(dst, src []byte) ([]byte, error) {
	// A destination smaller than the bound makes the encoder give up
	// early on incompressible input, which is what we want: such a block
	// is stored as is.
	dst = dst[:cap(dst)]
	if len(dst) < len(src) {
		dst = make([]byte, len(src))
	}
	var n int
	var err error
	if e.hc {
		e.hcc.Level = lz4.CompressionLevel(1 << (8 + e.level))
		n, err = e.hcc.CompressBlock(src, dst)
	} else {
		n, err = e.c.CompressBlock(src, dst)
	}
	if err != nil {
		return nil, err
	}
	if n == 0 || n >= len(src) {
		return nil, nil
	}
	return dst[:n], nil
}
