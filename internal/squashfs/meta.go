package squashfs

import (
	"bytes"
	"encoding/binary"
)

// metaWriter builds one metadata table (inodes, directories, fragments,
// ids): a run of blocks of at most 8 KiB uncompressed, each behind a
// two-byte header. Because every finished block's size is known, the
// position of the block being filled is known too, which is what inode and
// directory references need before the block is compressed.
type metaWriter struct {
	enc    encoder
	dst    []byte
	out    bytes.Buffer // finished blocks, headers included
	cur    []byte       // the block being filled
	starts []uint64     // offset in out of every finished block
	err    error
}

func newMetaWriter(enc encoder) *metaWriter {
	// dst has room for any encoder's output: the C encoders write into
	// dst's capacity and report "did not fit" without any.
	return &metaWriter{enc: enc, cur: make([]byte, 0, metadataSize), dst: make([]byte, 0, outCap(metadataSize))}
}

// pos returns where the next byte goes: the start of its block relative to
// the table, and its offset inside the uncompressed block.
func (m *metaWriter) pos() (block uint64, offset int) {
	return uint64(m.out.Len()), len(m.cur)
}

// ref is pos packed as a squashfs inode reference.
func (m *metaWriter) ref() uint64 {
	b, o := m.pos()
	return b<<16 | uint64(o)
}

func (m *metaWriter) write(p []byte) {
	for len(p) > 0 {
		n := copy(m.cur[len(m.cur):metadataSize], p)
		m.cur = m.cur[:len(m.cur)+n]
		p = p[n:]
		if len(m.cur) == metadataSize {
			// Flush at once so that pos never reports offset 8192.
			m.flush()
		}
	}
}

func (m *metaWriter) flush() {
	if len(m.cur) == 0 {
		return
	}
	m.starts = append(m.starts, uint64(m.out.Len()))
	var hdr [2]byte
	c, err := m.enc.encode(m.dst, m.cur)
	if c != nil {
		m.dst = c
	}
	if err != nil && m.err == nil {
		m.err = err
	}
	if c != nil {
		binary.LittleEndian.PutUint16(hdr[:], uint16(len(c)))
		m.out.Write(hdr[:])
		m.out.Write(c)
	} else {
		binary.LittleEndian.PutUint16(hdr[:], uint16(len(m.cur))|metaUncompressedBit)
		m.out.Write(hdr[:])
		m.out.Write(m.cur)
	}
	m.cur = m.cur[:0]
}

// finish flushes the last partial block and returns the table's bytes.
func (m *metaWriter) finish() ([]byte, error) {
	m.flush()
	return m.out.Bytes(), m.err
}

// le is a small little-endian appender for building inodes and entries.
type le []byte

func (b le) u16(v uint16) le { return binary.LittleEndian.AppendUint16(b, v) }
func (b le) u32(v uint32) le { return binary.LittleEndian.AppendUint32(b, v) }
func (b le) u64(v uint64) le { return binary.LittleEndian.AppendUint64(b, v) }
