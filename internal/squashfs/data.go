package squashfs

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"sync"
)

// fileData is where a regular file's content landed. The writer goroutine
// fills it; it is read only after the data phase has ended.
type fileData struct {
	start      uint64   // offset of the first data block in the image
	sizes      []uint32 // one block-list entry per full (or last, without fragment) block
	fragIndex  uint32
	fragOffset uint32
	sparse     uint64 // bytes stored as sparse (all-zero) blocks
}

type fragEntry struct {
	start uint64
	size  uint32
}

// job is one block on its way through compression to the output.
type job struct {
	in     []byte
	out    []byte // compressed, or nil to store in as is
	sparse bool   // all zeros: nothing is written, the entry is 0
	pooled bool
	err    error
	done   chan struct{}
	// written runs on the writer goroutine with the offset the block
	// landed at and its block-list entry.
	written func(pos uint64, entry uint32)
}

// dataWriter compresses blocks on several workers and writes them in the
// order they were queued, so the output does not depend on scheduling.
type dataWriter struct {
	ctx       context.Context
	blockSize int
	jobs      chan *job
	order     chan *job
	out       *bufio.Writer
	pos       uint64
	pool      sync.Pool // input blocks
	hashBuf   []byte    // the producer's, for hashFile
	outPool   sync.Pool // compressed blocks
	wg        sync.WaitGroup
	finished  chan struct{}
	werr      error // set by the writer goroutine, read after finished

	mu     sync.Mutex
	failed error // first error, visible to the producer early

	encs   []encoder // the workers'; reused for metadata once they stop
	frag   []byte
	frags  []*fragEntry
	dedupe map[dedupeKey]*fileData
	heads  heads
	stats  *Stats
	prog   func(int64)
	done   int64
}

type dedupeKey struct {
	size int64
	sum  [sha256.Size]byte
}

func newDataWriter(ctx context.Context, w io.Writer, pos uint64, o *Options, newEnc func() (encoder, error), st *Stats) (*dataWriter, error) {
	d := &dataWriter{
		ctx:       ctx,
		blockSize: o.BlockSize,
		jobs:      make(chan *job, o.Workers),
		order:     make(chan *job, 2*o.Workers+2),
		out:       bufio.NewWriterSize(w, 1<<20),
		pos:       pos,
		finished:  make(chan struct{}),
		dedupe:    map[dedupeKey]*fileData{},
		stats:     st,
		prog:      o.Progress,
	}
	d.pool.New = func() any { return make([]byte, o.BlockSize) }
	d.hashBuf = make([]byte, 32<<10)
	d.outPool.New = func() any { return make([]byte, 0, outCap(o.BlockSize)) }
	encs := make([]encoder, o.Workers)
	for i := range encs {
		e, err := newEnc()
		if err != nil {
			return nil, err
		}
		encs[i] = e
	}
	d.encs = encs
	for _, e := range encs {
		d.wg.Add(1)
		go d.compress(e)
	}
	go d.write()
	return d, nil
}

func (d *dataWriter) compress(e encoder) {
	defer d.wg.Done()
	for j := range d.jobs {
		buf := d.outPool.Get().([]byte)
		j.out, j.err = e.encode(buf, j.in)
		if j.out == nil {
			d.outPool.Put(buf)
		}
		close(j.done)
	}
}

func (d *dataWriter) fail(err error) {
	d.mu.Lock()
	if d.failed == nil {
		d.failed = err
	}
	d.mu.Unlock()
}

func (d *dataWriter) err() error {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.failed
}

func (d *dataWriter) write() {
	defer close(d.finished)
	for j := range d.order {
		<-j.done
		if d.werr != nil {
			continue // drain so the producer never blocks
		}
		if j.err != nil {
			d.werr = fmt.Errorf("compress block: %w", j.err)
			d.fail(d.werr)
			continue
		}
		pos := d.pos
		var entry uint32
		var err error
		switch {
		case j.sparse:
		case j.out != nil:
			_, err = d.out.Write(j.out)
			entry = uint32(len(j.out))
		default:
			_, err = d.out.Write(j.in)
			entry = uint32(len(j.in)) | uncompressedBit
		}
		if err != nil {
			d.werr = fmt.Errorf("write image: %w", err)
			d.fail(d.werr)
			continue
		}
		d.pos += uint64(entry &^ uncompressedBit)
		j.written(pos, entry)
		if j.pooled {
			d.pool.Put(j.in[:cap(j.in)])
		}
		if j.out != nil {
			d.outPool.Put(j.out[:0])
		}
	}
}

// queue hands a block to the workers and reserves its place in the output.
func (d *dataWriter) queue(j *job) {
	j.done = make(chan struct{})
	d.order <- j
	if j.sparse {
		close(j.done)
		return
	}
	d.jobs <- j
}

// addFile queues n's content: full blocks as data blocks, the tail (or a
// file smaller than a block) packed into the current fragment.
func (d *dataWriter) addFile(n *node) error {
	size := n.entry.Size
	if size == 0 {
		n.data = &fileData{fragIndex: invalidFragment}
		return nil
	}
	if k, ok := d.heads.key[n]; ok && d.heads.count[k] > 1 {
		key := k // a file no longer than its head: the head key is the whole file's
		if size > headLen {
			var err error
			if key, err = hashFile(n, n.entry.Size, d.hashBuf); err != nil {
				return err
			}
		}
		if fd, ok := d.dedupe[key]; ok {
			n.data = fd
			d.stats.DuplicateFiles++
			d.progress(size)
			return nil
		}
		defer func() { d.dedupe[key] = n.data }()
	}
	r, err := n.entry.Open()
	if err != nil {
		return fmt.Errorf("open %s: %w", n.entry.Path, err)
	}
	defer r.Close()

	bs := int64(d.blockSize)
	full := size / bs
	tail := size % bs
	fd := &fileData{fragIndex: invalidFragment, sizes: make([]uint32, full)}
	n.data = fd
	for i := int64(0); i < full; i++ {
		if err := d.err(); err != nil {
			return err
		}
		if err := d.ctx.Err(); err != nil {
			return err
		}
		buf := d.pool.Get().([]byte)[:bs]
		if _, err := io.ReadFull(r, buf); err != nil {
			return readErr(n, err)
		}
		j := &job{in: buf, pooled: true, sparse: allZero(buf)}
		i := i
		j.written = func(pos uint64, entry uint32) {
			if i == 0 {
				fd.start = pos
			}
			fd.sizes[i] = entry
			if entry == 0 {
				fd.sparse += uint64(bs)
			}
		}
		d.queue(j)
		d.progress(bs)
	}
	if tail > 0 {
		// Read straight into the fragment being filled: no buffer per
		// file to become garbage (bench-build's 100 MB tree with lz4: 17
		// collections became 3, and the build took 0.79x the time).
		t := d.tailSpace(int(tail))
		if _, err := io.ReadFull(r, t); err != nil {
			return readErr(n, err)
		}
		d.addTail(fd, len(t))
		d.progress(tail)
	}
	var one [1]byte
	if m, _ := r.Read(one[:]); m > 0 {
		return fmt.Errorf("read %s: file grew past its size of %d bytes while building", n.entry.Path, size)
	}
	return nil
}

func readErr(n *node, err error) error {
	if errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, io.EOF) {
		return fmt.Errorf("read %s: file shrank below its size of %d bytes while building", n.entry.Path, n.entry.Size)
	}
	return fmt.Errorf("read %s: %w", n.entry.Path, err)
}

// Duplicate files are found by content hash, but hashing is a second
// read of a file and SHA-256 of every byte: on make bench's 100 MB tree a
// third of the bytes are in files whose size another file shares (the
// arm and arm64 builds of one compiler), and hashing them whole was 6 %
// of an lz4 build. Only files that agree on size and on the hash of
// their first headLen bytes are hashed whole: files that merely share a
// size differ in their head (an ELF header names its machine).
const headLen = 64 << 10

// heads holds the head key of each file whose size another file shares,
// and how many files have each key.
type heads struct {
	key   map[*node]dedupeKey
	count map[dedupeKey]int
}

// headKeys reads the head of every file whose size is not unique.
func headKeys(t *Tree, sizeCnt map[int64]int) (heads, error) {
	h := heads{key: map[*node]dedupeKey{}, count: map[dedupeKey]int{}}
	buf := make([]byte, 32<<10)
	err := t.walkFiles(func(n *node) error {
		if n.entry.Size == 0 || sizeCnt[n.entry.Size] < 2 {
			return nil
		}
		k, err := hashFile(n, min(n.entry.Size, headLen), buf)
		if err != nil {
			return err
		}
		h.key[n] = k
		h.count[k]++
		return nil
	})
	return h, err
}

// hashFile hashes the first n bytes of a file (n ≤ its size); the key
// holds the file's size, so a head key and a whole-file key of files no
// longer than headLen are the same key. buf is the caller's, reused from
// file to file.
func hashFile(nd *node, n int64, buf []byte) (dedupeKey, error) {
	r, err := nd.entry.Open()
	if err != nil {
		return dedupeKey{}, fmt.Errorf("open %s: %w", nd.entry.Path, err)
	}
	defer r.Close()
	var src io.Reader = r
	if n < nd.entry.Size {
		src = io.LimitReader(r, n)
	} // else read to the end: a file that grew is an error too
	h := sha256.New()
	// As a plain Reader: an *os.File's WriteTo would copy through a
	// buffer of its own.
	m, err := io.CopyBuffer(h, struct{ io.Reader }{src}, buf)
	if err != nil {
		return dedupeKey{}, fmt.Errorf("read %s: %w", nd.entry.Path, err)
	}
	if m != n {
		return dedupeKey{}, fmt.Errorf("read %s: size changed from %d to %d bytes while building", nd.entry.Path, nd.entry.Size, m)
	}
	k := dedupeKey{size: nd.entry.Size}
	h.Sum(k.sum[:0])
	return k, nil
}

// tailSpace returns room for n bytes (≤ a block) at the end of the
// fragment being filled, queuing that fragment first if they do not fit.
// A fragment is a pooled block buffer, back in the pool once written.
func (d *dataWriter) tailSpace(n int) []byte {
	if len(d.frag)+n > d.blockSize {
		d.flushFragment()
	}
	if d.frag == nil {
		d.frag = d.pool.Get().([]byte)[:0]
	}
	return d.frag[len(d.frag) : len(d.frag)+n]
}

// addTail makes the n bytes tailSpace returned the tail of fd.
func (d *dataWriter) addTail(fd *fileData, n int) {
	fd.fragIndex = uint32(len(d.frags))
	fd.fragOffset = uint32(len(d.frag))
	d.frag = d.frag[:len(d.frag)+n]
}

// flushFragment queues the fragment being filled. It runs only between
// files, so a file's data blocks stay contiguous in the image.
func (d *dataWriter) flushFragment() {
	if len(d.frag) == 0 {
		return
	}
	fe := &fragEntry{}
	d.frags = append(d.frags, fe)
	j := &job{in: d.frag, pooled: true}
	j.written = func(pos uint64, entry uint32) {
		fe.start = pos
		fe.size = entry
	}
	d.queue(j)
	d.frag = nil
}

func (d *dataWriter) progress(n int64) {
	d.done += n
	if d.prog != nil {
		d.prog(d.done)
	}
}

// close flushes the last fragment, waits for every block to be written and
// returns the output position after the data.
func (d *dataWriter) close() (uint64, error) {
	d.flushFragment()
	close(d.jobs)
	close(d.order)
	d.wg.Wait()
	<-d.finished
	if d.werr != nil {
		return 0, d.werr
	}
	if err := d.out.Flush(); err != nil {
		return 0, fmt.Errorf("write image: %w", err)
	}
	return d.pos, nil
}

// abort stops the workers after an error in the producer.
func (d *dataWriter) abort() {
	close(d.jobs)
	close(d.order)
	d.wg.Wait()
	<-d.finished
}

var zeroBlock = make([]byte, MaxBlockSize)

func allZero(b []byte) bool { return bytes.Equal(b, zeroBlock[:len(b)]) }
