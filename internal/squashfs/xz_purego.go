//go:build !(cgo && cimg_clibs)

package squashfs

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"hash/crc32"

	"github.com/ulikunitz/xz/lzma"
)

// Without the reference encoder (a build without cgo or without the
// cimg_clibs tag: see xz_liblzma.go), xz blocks are compressed in pure
// Go: each block is one xz stream of one xz block, LZMA2 after an
// optional BCJ filter, the container written here (the xz file format,
// version 1.0.4) around github.com/ulikunitz/xz's raw LZMA2 encoder.
// Valid images, 11-17 % larger than liblzma's (scripts/encoder-parity.sh, by hand).

// xzMatcher is the match finder for every level: the package's
// binary-tree finder would compress better but writes corrupt streams
// (ulikunitz/xz v0.5.15: "writeMatch: distance out of range" decoding 462
// of 2454 blocks of the curl closure), so the level changes nothing yet.
func xzMatcher(level int) lzma.MatchAlgorithm { return lzma.HashTable4 }

func xzDescription(level, blockSize int, bcj BCJ) string {
	return fmt.Sprintf("xz level %d, dictionary %d, match finder %v, BCJ %v where an lz4 trial finds it pays: github.com/ulikunitz/xz/lzma LZMA2 (pure Go)",
		level, xzDict(blockSize), xzMatcher(level), bcj)
}

type xzEncoder struct {
	cfg      lzma.Writer2Config
	bcj      BCJ
	filtered []byte
	lz       bytes.Buffer
	trial    *bcjTrial // nil without a filter
}

func newXZEncoder(level, blockSize int, bcj BCJ) (encoder, error) {
	cfg := lzma.Writer2Config{DictCap: xzDict(blockSize), Matcher: xzMatcher(level)}
	if err := cfg.Verify(); err != nil {
		return nil, fmt.Errorf("xz encoder: %w", err)
	}
	switch bcj {
	case BCJNone, BCJX86, BCJARM, BCJARMThumb, BCJARM64:
	default:
		return nil, fmt.Errorf("xz BCJ filter %v is not supported", bcj)
	}
	e := &xzEncoder{cfg: cfg, bcj: bcj}
	if bcj != BCJNone {
		e.trial = newBCJTrial(bcj)
	}
	return e, nil
}

// encode writes src as one xz stream: through the filter where the trial
// says it pays, else as it is (see bcjTrial).
func (e *xzEncoder) encode(dst, src []byte) ([]byte, error) {
	bcj, err := e.trial.filterFor(src)
	if err != nil {
		return nil, err
	}
	out, err := e.stream(dst[:0], src, bcj)
	if err != nil {
		return nil, err
	}
	if len(out) >= len(src) {
		return nil, nil
	}
	return out, nil
}

// stream appends one xz stream holding src to dst: stream header, one
// block (header, LZMA2 data, padding, CRC32), index and stream footer.
func (e *xzEncoder) stream(dst, src []byte, bcj BCJ) ([]byte, error) {
	data := src
	if bcj != BCJNone {
		e.filtered = append(e.filtered[:0], src...)
		bcjEncode(bcj, e.filtered)
		data = e.filtered
	}
	e.lz.Reset()
	w, err := e.cfg.NewWriter2(&e.lz)
	if err != nil {
		return nil, fmt.Errorf("xz: %w", err)
	}
	if _, err := w.Write(data); err != nil {
		return nil, fmt.Errorf("xz: %w", err)
	}
	if err := w.Close(); err != nil {
		return nil, fmt.Errorf("xz: %w", err)
	}

	le := binary.LittleEndian
	// Stream header: magic, flags (check type 1: CRC32), their CRC32.
	flags := []byte{0, 1}
	dst = append(dst, 0xFD, '7', 'z', 'X', 'Z', 0)
	dst = append(dst, flags...)
	dst = le.AppendUint32(dst, crc32.ChecksumIEEE(flags))

	// Block header: size, flags (filter count - 1, no sizes stored), the
	// filter flags, padding to four bytes, CRC32.
	hdr := []byte{0, 0}
	if bcj != BCJNone {
		hdr[1] = 1
		hdr = appendVarint(hdr, bcj.filterID())
		hdr = appendVarint(hdr, 0) // no properties: start offset 0
	}
	hdr = appendVarint(hdr, 0x21) // LZMA2
	hdr = appendVarint(hdr, 1)
	hdr = append(hdr, lzma.EncodeDictCap(int64(e.cfg.DictCap)))
	for len(hdr)%4 != 0 {
		hdr = append(hdr, 0)
	}
	hdr[0] = byte((len(hdr)+4)/4 - 1)
	hdr = le.AppendUint32(hdr, crc32.ChecksumIEEE(hdr))
	dst = append(dst, hdr...)
	dst = append(dst, e.lz.Bytes()...)
	unpadded := len(hdr) + e.lz.Len() + 4
	for i := e.lz.Len(); i%4 != 0; i++ {
		dst = append(dst, 0)
	}
	dst = le.AppendUint32(dst, crc32.ChecksumIEEE(src))

	// Index: indicator, one record (unpadded and uncompressed size),
	// padding, CRC32.
	idx := []byte{0}
	idx = appendVarint(idx, 1)
	idx = appendVarint(idx, uint64(unpadded))
	idx = appendVarint(idx, uint64(len(src)))
	for len(idx)%4 != 0 {
		idx = append(idx, 0)
	}
	idx = le.AppendUint32(idx, crc32.ChecksumIEEE(idx))
	dst = append(dst, idx...)

	// Stream footer: CRC32 of backward size and flags, backward size
	// (index size / 4 - 1), flags, magic.
	foot := le.AppendUint32(nil, uint32(len(idx)/4-1))
	foot = append(foot, flags...)
	dst = le.AppendUint32(dst, crc32.ChecksumIEEE(foot))
	dst = append(dst, foot...)
	return append(dst, 'Y', 'Z'), nil
}

// appendVarint appends v in the xz format's multibyte integer encoding:
// seven bits a byte, least significant first, high bit set on all but
// the last.
func appendVarint(b []byte, v uint64) []byte {
	for v >= 0x80 {
		b = append(b, byte(v)|0x80)
		v >>= 7
	}
	return append(b, byte(v))
}
