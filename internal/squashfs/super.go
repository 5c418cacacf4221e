package squashfs

import (
	"encoding/binary"
	"fmt"
	"io"
)

// Info is what the superblock says about an image.
type Info struct {
	Compression Compression
	BlockSize   uint32
	Inodes      uint32
	Fragments   uint32
	BytesUsed   uint64
	MkfsTime    uint32
}

// ReadInfo reads and sanity-checks the superblock at the start of r. It is
// not a squashfs reader: it only answers what inspect and the launcher ask
// (compressor, sizes) before anything is mounted.
func ReadInfo(r io.ReaderAt) (Info, error) {
	b := make([]byte, superblockSize)
	if _, err := r.ReadAt(b, 0); err != nil {
		return Info{}, fmt.Errorf("read squashfs superblock: %w", err)
	}
	le := binary.LittleEndian
	if le.Uint32(b) != magic {
		return Info{}, fmt.Errorf("no squashfs magic at offset 0")
	}
	if maj, min := le.Uint16(b[28:]), le.Uint16(b[30:]); maj != 4 || min != 0 {
		return Info{}, fmt.Errorf("squashfs version %d.%d, want 4.0", maj, min)
	}
	in := Info{
		Inodes:      le.Uint32(b[4:]),
		MkfsTime:    le.Uint32(b[8:]),
		BlockSize:   le.Uint32(b[12:]),
		Fragments:   le.Uint32(b[16:]),
		Compression: Compression(le.Uint16(b[20:])),
		BytesUsed:   le.Uint64(b[40:]),
	}
	if in.BlockSize < MinBlockSize || in.BlockSize > MaxBlockSize || in.BlockSize&(in.BlockSize-1) != 0 ||
		uint32(1)<<le.Uint16(b[22:]) != in.BlockSize {
		return Info{}, fmt.Errorf("squashfs block size %d is invalid", in.BlockSize)
	}
	return in, nil
}
