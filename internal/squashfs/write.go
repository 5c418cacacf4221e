package squashfs

import (
	"context"
	"fmt"
	"io"
	"io/fs"
	"math"
	"math/bits"
	"runtime"
	"sort"
)

// Options control how an image is written. The zero value gives zstd,
// 128 KiB blocks, mkfs time 0 and one worker per CPU.
type Options struct {
	Compression Compression
	// BlockSize is a power of two from 4 KiB to 1 MiB.
	BlockSize int
	// Level is the compressor's level; 0 picks a default tuned for size
	// (zstd: 15 with the C encoder (cgo), the pure-Go encoder's best
	// without; gzip: 9; lz4: the fast encoder; xz: the one pure-Go setting).
	Level int
	// BCJ is the xz filter for executable code (xz only): each block goes
	// through it where a fast lz4 trial finds it pays (bcjTrial).
	BCJ BCJ
	// MkfsTime goes into the superblock; callers pass SOURCE_DATE_EPOCH.
	MkfsTime int64
	// Workers compress blocks in parallel; 0 means GOMAXPROCS. The output
	// is the same for any value.
	Workers int
	// Progress, when set, is called with the number of content bytes
	// consumed so far.
	Progress func(done int64)
}

// Stats describe a written image.
type Stats struct {
	BytesUsed      uint64 // end of the filesystem proper
	Size           uint64 // BytesUsed padded to 4 KiB: the bytes written
	Inodes         uint32
	ContentBytes   int64 // sum of regular file sizes (each inode once)
	DuplicateFiles int
	Fragments      int
}

// Pad is the alignment of the image's end.
const Pad = 4096

func (o *Options) fill() error {
	if o.Compression == 0 {
		o.Compression = Zstd
	}
	if o.BlockSize == 0 {
		o.BlockSize = DefaultBlockSize
	}
	if o.BlockSize < MinBlockSize || o.BlockSize > MaxBlockSize || o.BlockSize&(o.BlockSize-1) != 0 {
		return fmt.Errorf("block size %d: want a power of two from %d to %d", o.BlockSize, MinBlockSize, MaxBlockSize)
	}
	if o.Workers <= 0 {
		o.Workers = runtime.GOMAXPROCS(0)
	}
	switch o.Compression {
	case Zstd, XZ, Gzip, LZ4:
	default:
		return fmt.Errorf("unsupported compression %v", o.Compression)
	}
	if o.BCJ != BCJNone && o.Compression != XZ {
		return fmt.Errorf("a BCJ filter (%v) needs xz compression, not %v", o.BCJ, o.Compression)
	}
	return checkLevel(o.Compression, o.Level)
}

// CheckOptions says whether Write would accept o.
func CheckOptions(o Options) error { return o.fill() }

// Write writes t as a squashfs image to w, which must be positioned at the
// image's start (offset 0 of w). On return w is positioned after the
// padded image.
func Write(ctx context.Context, w io.WriteSeeker, t *Tree, o Options) (Stats, error) {
	var st Stats
	if err := o.fill(); err != nil {
		return st, err
	}
	newEnc := func() (encoder, error) { return newEncoder(&o) }
	t.seal()

	// The superblock is written last, when every table's place is known.
	head := make([]byte, superblockSize)
	opts := compressorOptions(&o)
	if opts != nil {
		head = le(head).u16(uint16(len(opts)) | metaUncompressedBit)
		head = append(head, opts...)
	}
	if _, err := w.Write(head); err != nil {
		return st, fmt.Errorf("write image: %w", err)
	}

	sizeCnt := map[int64]int{}
	_ = t.walkFiles(func(n *node) error {
		sizeCnt[n.entry.Size]++
		st.ContentBytes += n.entry.Size
		return nil
	})
	heads, err := headKeys(t, sizeCnt)
	if err != nil {
		return st, err
	}
	d, err := newDataWriter(ctx, w, uint64(len(head)), &o, newEnc, &st)
	if err != nil {
		return st, err
	}
	d.heads = heads
	err = t.walkFiles(func(n *node) error {
		if err := ctx.Err(); err != nil {
			return err
		}
		return d.addFile(n)
	})
	if err != nil {
		d.abort()
		return st, err
	}
	pos, err := d.close()
	if err != nil {
		return st, err
	}
	st.Fragments = len(d.frags)

	// The workers have stopped: their first encoder compresses the
	// metadata, rather than a new one (a zstd encoder holds ~35 MiB).
	mw := d.encs[0]
	b := &tableBuilder{
		inodes: newMetaWriter(mw),
		dirs:   newMetaWriter(mw),
		ids:    map[uint32]uint16{},
	}
	b.collectIDs(t.root)
	next := uint32(1)
	b.number(t.root, &next)
	st.Inodes = next - 1
	if err := b.writeDir(t.root, st.Inodes+1); err != nil {
		return st, err
	}

	sb := superblock{
		inodes:      st.Inodes,
		mkfsTime:    clampTime(o.MkfsTime),
		blockSize:   uint32(o.BlockSize),
		fragments:   uint32(len(d.frags)),
		compression: uint16(o.Compression),
		blockLog:    uint16(bits.TrailingZeros(uint(o.BlockSize))),
		flags:       flagNoXattrs | flagDuplicates | flagAlwaysFrags,
		idCount:     uint16(len(b.idList)),
		rootRef:     t.root.ref,
		xattrTable:  invalidTable,
		exportTable: invalidTable,
	}
	if opts != nil {
		sb.flags |= flagCompressOpt
	}

	tables := []struct {
		name string
		at   *uint64
		data func() ([]byte, error)
	}{
		{"inode table", &sb.inodeTable, b.inodes.finish},
		{"directory table", &sb.dirTable, b.dirs.finish},
	}
	out := &posWriter{w: w, pos: pos}
	for _, tb := range tables {
		data, err := tb.data()
		if err != nil {
			return st, fmt.Errorf("%s: %w", tb.name, err)
		}
		*tb.at = out.pos
		out.write(data)
	}
	// Lookup tables: their metadata blocks, then the index of those blocks'
	// offsets, which is what the superblock points at.
	fragMeta := newMetaWriter(mw)
	for _, f := range d.frags {
		fragMeta.write(le(nil).u64(f.start).u32(f.size).u32(0))
	}
	sb.fragTable = out.lookupTable(fragMeta)
	idMeta := newMetaWriter(mw)
	for _, id := range b.idList {
		idMeta.write(le(nil).u32(id))
	}
	sb.idTable = out.lookupTable(idMeta)
	if out.err != nil {
		return st, fmt.Errorf("write image: %w", out.err)
	}
	sb.bytesUsed = out.pos
	st.BytesUsed = out.pos
	if rem := out.pos % Pad; rem != 0 {
		out.write(make([]byte, Pad-rem))
	}
	st.Size = out.pos
	if out.err != nil {
		return st, fmt.Errorf("write image: %w", out.err)
	}
	if _, err := w.Seek(0, io.SeekStart); err != nil {
		return st, fmt.Errorf("write superblock: %w", err)
	}
	if _, err := w.Write(sb.bytes()); err != nil {
		return st, fmt.Errorf("write superblock: %w", err)
	}
	if _, err := w.Seek(int64(st.Size), io.SeekStart); err != nil {
		return st, fmt.Errorf("write image: %w", err)
	}
	return st, nil
}

const flagAlwaysFrags = 0x0020

type posWriter struct {
	w   io.Writer
	pos uint64
	err error
}

func (p *posWriter) write(b []byte) {
	if p.err != nil {
		return
	}
	n, err := p.w.Write(b)
	p.pos += uint64(n)
	p.err = err
}

func (p *posWriter) lookupTable(m *metaWriter) uint64 {
	data, err := m.finish()
	if err != nil && p.err == nil {
		p.err = err
	}
	start := p.pos
	p.write(data)
	idx := p.pos
	for _, s := range m.starts {
		p.write(le(nil).u64(start + s))
	}
	return idx
}

func clampTime(t int64) uint32 {
	if t < 0 {
		return 0
	}
	if t > math.MaxUint32 {
		return math.MaxUint32
	}
	return uint32(t)
}

type superblock struct {
	inodes, mkfsTime, blockSize, fragments              uint32
	compression, blockLog, flags, idCount               uint16
	rootRef, bytesUsed, idTable, xattrTable, inodeTable uint64
	dirTable, fragTable, exportTable                    uint64
}

func (s *superblock) bytes() []byte {
	return le(make([]byte, 0, superblockSize)).
		u32(magic).u32(s.inodes).u32(s.mkfsTime).u32(s.blockSize).u32(s.fragments).
		u16(s.compression).u16(s.blockLog).u16(s.flags).u16(s.idCount).u16(4).u16(0).
		u64(s.rootRef).u64(s.bytesUsed).u64(s.idTable).u64(s.xattrTable).
		u64(s.inodeTable).u64(s.dirTable).u64(s.fragTable).u64(s.exportTable)
}

// tableBuilder writes the inode and directory tables once all file data
// has landed.
type tableBuilder struct {
	inodes, dirs *metaWriter
	ids          map[uint32]uint16
	idList       []uint32
}

func (b *tableBuilder) collectIDs(root *node) {
	set := map[uint32]bool{}
	var walk func(n *node)
	walk = func(n *node) {
		set[n.entry.UID] = true
		set[n.entry.GID] = true
		for _, c := range n.children {
			walk(c)
		}
	}
	walk(root)
	for id := range set {
		b.idList = append(b.idList, id)
	}
	sort.Slice(b.idList, func(i, j int) bool { return b.idList[i] < b.idList[j] })
	for i, id := range b.idList {
		b.ids[id] = uint16(i)
	}
}

// number assigns inode numbers in the order inodes are written: a
// directory's children first (depth first), the directory after them, so
// the root is last. Hardlinked files get the number of their first name.
func (b *tableBuilder) number(d *node, next *uint32) {
	for _, name := range d.sorted {
		c := d.children[name]
		if c.isDir() {
			b.number(c, next)
		} else if c.ino == 0 {
			c.ino = *next
			*next++
		}
	}
	d.ino = *next
	*next++
}

func (b *tableBuilder) header(typ uint16, n *node) le {
	m := n.entry.Mode
	perm := uint16(m.Perm())
	if m&fs.ModeSetuid != 0 {
		perm |= 0o4000
	}
	if m&fs.ModeSetgid != 0 {
		perm |= 0o2000
	}
	if m&fs.ModeSticky != 0 {
		perm |= 0o1000
	}
	return le(make([]byte, 0, 64)).u16(typ).u16(perm).
		u16(b.ids[n.entry.UID]).u16(b.ids[n.entry.GID]).
		u32(clampTime(n.entry.Mtime)).u32(n.ino)
}

func (b *tableBuilder) writeFile(n *node) {
	fd := n.data
	size := uint64(n.entry.Size)
	n.ref = b.inodes.ref()
	var in le
	if n.nlink == 1 && size <= math.MaxUint32 && fd.start <= math.MaxUint32 && fd.sparse == 0 {
		in = b.header(typeFile, n).u32(uint32(fd.start)).u32(fd.fragIndex).u32(fd.fragOffset).u32(uint32(size))
	} else {
		in = b.header(typeExtFile, n).u64(fd.start).u64(size).u64(fd.sparse).
			u32(n.nlink).u32(fd.fragIndex).u32(fd.fragOffset).u32(invalidFragment)
	}
	for _, s := range fd.sizes {
		in = in.u32(s)
	}
	b.inodes.write(in)
}

func (b *tableBuilder) writeSymlink(n *node) {
	n.ref = b.inodes.ref()
	b.inodes.write(b.header(typeSymlink, n).u32(1).u32(uint32(len(n.entry.Target))))
	b.inodes.write([]byte(n.entry.Target))
}

type dirIndex struct {
	index, start uint32
	name         string
}

func basicType(n *node) uint16 {
	switch {
	case n.isDir():
		return typeDir
	case n.isSymlink():
		return typeSymlink
	}
	return typeFile
}

// writeDir writes d's children's inodes, then d's listing, then d's inode.
func (b *tableBuilder) writeDir(d *node, parentIno uint32) error {
	subdirs := uint32(0)
	for _, name := range d.sorted {
		c := d.children[name]
		switch {
		case c.isDir():
			subdirs++
			if err := b.writeDir(c, d.ino); err != nil {
				return err
			}
		case c.done:
		case c.isSymlink():
			b.writeSymlink(c)
			c.done = true
		default:
			b.writeFile(c)
			c.done = true
		}
	}

	startBlock, startOff := b.dirs.pos()
	var size uint32
	var index []dirIndex
	lastBlock := startBlock
	names := d.sorted
	for i := 0; i < len(names); {
		first := d.children[names[i]]
		base := first.ino
		blk := first.ref >> 16
		j := i
		for j < len(names) && j-i < maxDirEntriesPerHdr {
			c := d.children[names[j]]
			delta := int64(c.ino) - int64(base)
			if c.ref>>16 != blk || delta < math.MinInt16 || delta > math.MaxInt16 {
				break
			}
			j++
		}
		if cur, _ := b.dirs.pos(); cur != lastBlock {
			// A header that starts in a new metadata block gets an index
			// entry, so lookups in big directories skip what precedes it.
			index = append(index, dirIndex{index: size, start: uint32(cur), name: names[i]})
			lastBlock = cur
		}
		if blk > math.MaxUint32 {
			return fmt.Errorf("inode table larger than 4 GiB")
		}
		hdr := le(nil).u32(uint32(j - i - 1)).u32(uint32(blk)).u32(base)
		b.dirs.write(hdr)
		size += uint32(len(hdr))
		for k := i; k < j; k++ {
			c := d.children[names[k]]
			e := le(make([]byte, 0, 8+len(names[k]))).u16(uint16(c.ref & 0xFFFF)).
				u16(uint16(int16(int64(c.ino) - int64(base)))).u16(basicType(c)).u16(uint16(len(names[k]) - 1))
			e = append(e, names[k]...)
			b.dirs.write(e)
			size += uint32(len(e))
		}
		i = j
	}

	d.ref = b.inodes.ref()
	nlink := 2 + subdirs
	if size+3 <= math.MaxUint16 && len(index) == 0 && startBlock <= math.MaxUint32 {
		b.inodes.write(b.header(typeDir, d).u32(uint32(startBlock)).u32(nlink).
			u16(uint16(size + 3)).u16(uint16(startOff)).u32(parentIno))
		return nil
	}
	if startBlock > math.MaxUint32 {
		return fmt.Errorf("directory table larger than 4 GiB")
	}
	in := b.header(typeExtDir, d).u32(nlink).u32(size + 3).u32(uint32(startBlock)).
		u32(parentIno).u16(uint16(len(index))).u16(uint16(startOff)).u32(invalidFragment)
	for _, ix := range index {
		in = in.u32(ix.index).u32(ix.start).u32(uint32(len(ix.name) - 1))
		in = append(in, ix.name...)
	}
	b.inodes.write(in)
	return nil
}
