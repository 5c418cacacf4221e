package squashfs

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"strconv"
	"strings"

	"github.com/klauspost/compress/zlib"
	"github.com/pierrec/lz4/v4"
)

// Compression names a squashfs compressor.
type Compression uint16

// The ids are those of the squashfs superblock.
const (
	Gzip Compression = 1
	XZ   Compression = 4
	LZ4  Compression = 5
	Zstd Compression = 6
)

func (c Compression) String() string {
	switch c {
	case Gzip:
		return "gzip"
	case XZ:
		return "xz"
	case LZ4:
		return "lz4"
	case Zstd:
		return "zstd"
	}
	return fmt.Sprintf("compressor-%d", uint16(c))
}

// ParseCompression accepts "zstd", "xz", "gzip" and "lz4".
func ParseCompression(s string) (Compression, error) {
	switch strings.ToLower(s) {
	case "zstd":
		return Zstd, nil
	case "xz":
		return XZ, nil
	case "gzip", "zlib":
		return Gzip, nil
	case "lz4":
		return LZ4, nil
	}
	return 0, fmt.Errorf("unknown compression %q (want zstd, xz, gzip or lz4)", s)
}

// ParseCompressionLevel accepts a compressor name with an optional level
// after a colon, as in "zstd:19" or "xz:9"; the level is 0 when none is
// given (the compressor's default).
func ParseCompressionLevel(s string) (Compression, int, error) {
	name, lv, hasLevel := strings.Cut(s, ":")
	c, err := ParseCompression(name)
	if err != nil {
		return 0, 0, err
	}
	if !hasLevel {
		return c, 0, nil
	}
	level, err := strconv.Atoi(lv)
	if err != nil {
		return 0, 0, fmt.Errorf("compression %q: level %q is not a number", s, lv)
	}
	if err := checkLevel(c, level); err != nil {
		return 0, 0, err
	}
	return c, level, nil
}

// checkLevel refuses a level the compressor does not have; 0 is always
// the default.
func checkLevel(c Compression, level int) error {
	lo, hi := 1, 9
	switch c {
	case Zstd:
		hi = 22
	case LZ4:
		hi = 12 // HC levels; 0 is the fast encoder
	}
	if level != 0 && (level < lo || level > hi) {
		return fmt.Errorf("%v level %d: want %d to %d (or none for the default)", c, level, lo, hi)
	}
	return nil
}

// encoder compresses one block at a time. Each worker owns one: encoders
// keep state and are not safe for concurrent use.
type encoder interface {
	// encode appends the compressed form of src to dst[:0] and returns
	// it, or returns nil when it is not smaller than src (the block is then
	// stored uncompressed). dst lets callers recycle output buffers.
	encode(dst, src []byte) ([]byte, error)
}

// outCap is the capacity of the output buffers the data writer recycles:
// room for any encoder's worst case on a block of blockSize bytes, so
// that none allocates per block.
func outCap(blockSize int) int { return blockSize + blockSize>>7 + 4096 }

func newEncoder(o *Options) (encoder, error) {
	switch o.Compression {
	case Zstd:
		return newZstdEncoder(o.Level)
	case Gzip:
		w, err := zlib.NewWriterLevel(nil, gzipLevel(o.Level))
		if err != nil {
			return nil, fmt.Errorf("gzip encoder: %w", err)
		}
		return &zlibEncoder{w: w}, nil
	case XZ:
		return newXZEncoder(o.Level, o.BlockSize, o.BCJ)
	case LZ4:
		return &lz4Encoder{hc: o.Level > 0, level: o.Level}, nil
	}
	return nil, fmt.Errorf("unsupported compression %v", o.Compression)
}

// gzipLevel is 9, zlib's best, unless a level is given.
func gzipLevel(level int) int {
	if level == 0 {
		return 9
	}
	return level
}

// EncoderDescription names the encoder that writes images with these
// options in this build of the program, for the image's provenance: the
// library, its version and whether it is the C reference (cgo) or pure Go.
func EncoderDescription(o Options) string {
	if err := o.fill(); err != nil {
		return err.Error()
	}
	switch o.Compression {
	case Zstd:
		return zstdDescription(o.Level)
	case Gzip:
		return fmt.Sprintf("gzip level %d, %d-byte blocks: github.com/klauspost/compress/zlib (pure Go)", gzipLevel(o.Level), o.BlockSize)
	case XZ:
		return xzDescription(o.Level, o.BlockSize, o.BCJ)
	case LZ4:
		if o.Level > 0 {
			return fmt.Sprintf("lz4 HC level %d, %d-byte blocks: github.com/pierrec/lz4/v4 (pure Go)", o.Level, o.BlockSize)
		}
		return fmt.Sprintf("lz4, %d-byte blocks: github.com/pierrec/lz4/v4 (pure Go)", o.BlockSize)
	}
	return o.Compression.String()
}

// options returns the compressor options stored after the superblock, or
// nil when the compressor needs none.
func compressorOptions(o *Options) []byte {
	switch o.Compression {
	case XZ:
		return xzOptions(o.BlockSize, o.BCJ)
	case LZ4:
	default:
		return nil
	}
	// LZ4 images must carry options: version 1 (legacy block format) and
	// a flags word telling readers whether the HC encoder was used.
	b := make([]byte, 8)
	binary.LittleEndian.PutUint32(b[0:], 1)
	if o.Level > 0 {
		binary.LittleEndian.PutUint32(b[4:], 1)
	}
	return b
}

type zlibEncoder struct {
	w *zlib.Writer
}

func (e *zlibEncoder) encode(dst, src []byte) ([]byte, error) {
	buf := bytes.NewBuffer(dst[:0])
	e.w.Reset(buf)
	if _, err := e.w.Write(src); err != nil {
		return nil, err
	}
	if err := e.w.Close(); err != nil {
		return nil, err
	}
	if buf.Len() >= len(src) {
		return nil, nil
	}
	return buf.Bytes(), nil
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
