package squashfs

import (
	"encoding/binary"
	"strings"
	"testing"
)

// TestMetadataCompressed: every compressor compresses metadata blocks
// (inode and directory tables), in the pure-Go build and, under make
// test's cgo step, with the C encoders, whose output goes into the
// capacity they are given: the first block of a table once found none and
// was stored uncompressed, 60 KB more in python3's xz, gzip and lz4 images
// than mksquashfs's.
func TestMetadataCompressed(t *testing.T) {
	table := []byte(strings.Repeat("inode 0755 root root /usr/lib/python3.11/encodings/ ", 400))
	for _, o := range []Options{
		{Compression: Zstd}, {Compression: Gzip}, {Compression: XZ, BlockSize: 128 << 10},
		{Compression: XZ, BlockSize: 128 << 10, BCJ: BCJX86}, {Compression: LZ4}, {Compression: LZ4, Level: 12},
	} {
		enc, err := newEncoder(&o)
		if err != nil {
			t.Fatal(err)
		}
		m := newMetaWriter(enc)
		m.write(table)
		m.flush()
		if m.err != nil {
			t.Fatalf("%v: %v", o.Compression, m.err)
		}
		b := m.out.Bytes()
		for off, n := 0, 0; off < len(b); n++ {
			hdr := binary.LittleEndian.Uint16(b[off:])
			size := int(hdr &^ metaUncompressedBit)
			if hdr&metaUncompressedBit != 0 {
				t.Errorf("%v (level %d, BCJ %v): metadata block %d stored uncompressed (%d bytes)", o.Compression, o.Level, o.BCJ, n, size)
			}
			off += 2 + size
		}
	}
}
