package squashfs

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"strings"

	"github.com/klauspost/compress/zlib"
	"github.com/klauspost/compress/zstd"
	"github.com/pierrec/lz4/v4"
	"github.com/ulikunitz/xz"
	"github.com/ulikunitz/xz/lzma"
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

// encoder compresses one block at a time. Each worker owns one: encoders
// keep state and are not safe for concurrent use.
type encoder interface {
	// encode appends the compressed form of src to dst[:0] and returns
	// it, or returns nil when it is not smaller than src (the block is then
	// stored uncompressed). dst lets callers recycle output buffers.
	encode(dst, src []byte) ([]byte, error)
}

func newEncoder(c Compression, level, blockSize int) (encoder, error) {
	switch c {
	case Zstd:
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
	case Gzip:
		if level == 0 {
			level = 9
		}
		w, err := zlib.NewWriterLevel(nil, level)
		if err != nil {
			return nil, fmt.Errorf("gzip encoder: %w", err)
		}
		return &zlibEncoder{w: w}, nil
	case XZ:
		dict := blockSize
		if dict < metadataSize {
			// Metadata blocks are 8 KiB; the kernel sizes its dictionary
			// as max(block size, 8 KiB) when no options are stored.
			dict = metadataSize
		}
		return &xzEncoder{cfg: xz.WriterConfig{
			DictCap:  dict,
			CheckSum: xz.CRC32,
			Matcher:  lzma.HashTable4,
		}}, nil
	case LZ4:
		return &lz4Encoder{hc: level > 0, level: level}, nil
	}
	return nil, fmt.Errorf("unsupported compression %v", c)
}

// options returns the compressor options stored after the superblock, or
// nil when the compressor needs none.
func compressorOptions(c Compression, level int) []byte {
	if c != LZ4 {
		return nil
	}
	// LZ4 images must carry options: version 1 (legacy block format) and
	// a flags word telling readers whether the HC encoder was used.
	b := make([]byte, 8)
	binary.LittleEndian.PutUint32(b[0:], 1)
	if level > 0 {
		binary.LittleEndian.PutUint32(b[4:], 1)
	}
	return b
}

type zstdEncoder struct{ enc *zstd.Encoder }

func (e *zstdEncoder) encode(dst, src []byte) ([]byte, error) {
	out := e.enc.EncodeAll(src, dst[:0])
	if len(out) >= len(src) {
		return nil, nil
	}
	return out, nil
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

type xzEncoder struct {
	cfg xz.WriterConfig
}

func (e *xzEncoder) encode(dst, src []byte) ([]byte, error) {
	buf := bytes.NewBuffer(dst[:0])
	w, err := e.cfg.NewWriter(buf)
	if err != nil {
		return nil, err
	}
	if _, err := w.Write(src); err != nil {
		return nil, err
	}
	if err := w.Close(); err != nil {
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
