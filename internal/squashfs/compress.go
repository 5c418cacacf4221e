package squashfs

import (
	"encoding/binary"
	"fmt"
	"strconv"
	"strings"
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
		return newGzipEncoder(gzipLevel(o.Level))
	case XZ:
		return newXZEncoder(o.Level, o.BlockSize, o.BCJ)
	case LZ4:
		return newLZ4Encoder(o.Level), nil
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
		return gzipDescription(gzipLevel(o.Level))
	case XZ:
		return xzDescription(o.Level, o.BlockSize, o.BCJ)
	case LZ4:
		return lz4Description(o.Level)
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
