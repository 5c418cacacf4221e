package format

import (
	"crypto/sha256"
	"fmt"
	"io"
	"runtime"
	"sync"
)

const (
	// BlockSize is the dm-verity data and hash block size.
	BlockSize = 4096
	hashSize  = sha256.Size
	perBlock  = BlockSize / hashSize
)

// VerityTreeSize returns the size of the hash tree for dataBlocks blocks.
func VerityTreeSize(dataBlocks int64) int64 {
	var total int64
	for _, n := range levelBlocks(dataBlocks) {
		total += n
	}
	return total * BlockSize
}

// levelBlocks returns the number of hash blocks of each level, level 0
// (hashes of data blocks) first. Like the kernel, a single data block needs
// no tree: its hash is the root.
func levelBlocks(dataBlocks int64) []int64 {
	var out []int64
	n := dataBlocks
	for n > 1 {
		n = (n + perBlock - 1) / perBlock
		out = append(out, n)
	}
	return out
}

// levelOffsets returns where each level starts in the tree, level 0 first.
// On disk the top level comes first, as veritysetup writes it.
func levelOffsets(dataBlocks int64) []int64 {
	blocks := levelBlocks(dataBlocks)
	offs := make([]int64, len(blocks))
	var at int64
	for i := len(blocks) - 1; i >= 0; i-- {
		offs[i] = at
		at += blocks[i] * BlockSize
	}
	return offs
}

// hashBlock is dm-verity version 1: sha256(salt || block).
func hashBlock(salt, block []byte) [hashSize]byte {
	h := sha256.New()
	h.Write(salt)
	h.Write(block)
	var out [hashSize]byte
	h.Sum(out[:0])
	return out
}

// blockSink receives each hash block of the tree once it is complete, with
// its byte offset in the tree. The block is only valid during the call.
type blockSink func(treeOff int64, block []byte) error

// treeWalker builds the hash tree bottom-up from the data blocks' hashes,
// given in order. It holds one pending hash block per level, so building
// or checking the tree of any payload takes a few KiB; each completed
// block goes to the sink and its hash up to the next level.
type treeWalker struct {
	salt   []byte
	sink   blockSink
	levels []pendingBlock
	root   [hashSize]byte
	rooted bool
}

type pendingBlock struct {
	buf     [BlockSize]byte
	n       int   // hashes in buf
	idx     int64 // blocks of this level done
	blocks  int64 // blocks this level has
	treeOff int64 // where this level starts in the tree
}

func newTreeWalker(dataBlocks int64, salt []byte, sink blockSink) *treeWalker {
	w := &treeWalker{salt: salt, sink: sink}
	offs := levelOffsets(dataBlocks)
	for i, n := range levelBlocks(dataBlocks) {
		w.levels = append(w.levels, pendingBlock{blocks: n, treeOff: offs[i]})
	}
	return w
}

// push adds the hash of the next block of the level below level.
func (w *treeWalker) push(level int, h []byte) error {
	if level == len(w.levels) {
		if w.rooted {
			return fmt.Errorf("verity: internal error: a second root hash")
		}
		copy(w.root[:], h)
		w.rooted = true
		return nil
	}
	l := &w.levels[level]
	copy(l.buf[l.n*hashSize:], h)
	l.n++
	if l.n == perBlock {
		return w.flush(level)
	}
	return nil
}

// flush completes the level's pending block: zero padding, to the sink,
// and its hash one level up.
func (w *treeWalker) flush(level int) error {
	l := &w.levels[level]
	if l.n == 0 {
		return nil
	}
	if l.idx >= l.blocks {
		return fmt.Errorf("verity: internal error: level %d has more than %d blocks", level, l.blocks)
	}
	clear(l.buf[l.n*hashSize:])
	if err := w.sink(l.treeOff+l.idx*BlockSize, l.buf[:]); err != nil {
		return err
	}
	l.idx++
	l.n = 0
	h := hashBlock(w.salt, l.buf[:])
	return w.push(level+1, h[:])
}

// finish flushes the partial blocks, bottom level first, and returns the
// root hash.
func (w *treeWalker) finish() ([hashSize]byte, error) {
	for i := range w.levels {
		if err := w.flush(i); err != nil {
			return w.root, err
		}
		if l := &w.levels[i]; l.idx != l.blocks {
			return w.root, fmt.Errorf("verity: internal error: level %d has %d blocks, want %d", i, l.idx, l.blocks)
		}
	}
	if !w.rooted {
		return w.root, fmt.Errorf("verity: internal error: no root hash")
	}
	return w.root, nil
}

// walkTree hashes size bytes of data (a positive multiple of BlockSize),
// hands every hash block of the tree to sink and returns the root hash.
// Memory is bounded whatever the size: a 1 MiB read buffer per core and a
// hash block per tree level.
func walkTree(data io.ReaderAt, size int64, salt []byte, sink blockSink) ([hashSize]byte, error) {
	if size <= 0 || size%BlockSize != 0 {
		return [hashSize]byte{}, fmt.Errorf("verity: data size %d is not a positive multiple of %d", size, BlockSize)
	}
	blocks := size / BlockSize
	w := newTreeWalker(blocks, salt, sink)
	err := hashData(data, blocks, salt, func(hashes []byte) error {
		for i := 0; i < len(hashes); i += hashSize {
			if err := w.push(0, hashes[i:i+hashSize]); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return [hashSize]byte{}, err
	}
	return w.finish()
}

// BuildVerityTree hashes size bytes of data (a multiple of BlockSize) and
// returns the tree as laid out on disk (top level first, as dm-verity and
// veritysetup place it) and the root hash. The tree is the only buffer
// that grows with size (1/128 of it); Finish writes the tree straight to
// the file instead.
func BuildVerityTree(data io.ReaderAt, size int64, salt []byte) ([]byte, [hashSize]byte, error) {
	if size <= 0 || size%BlockSize != 0 {
		return nil, [hashSize]byte{}, fmt.Errorf("verity: data size %d is not a positive multiple of %d", size, BlockSize)
	}
	var tree []byte
	if n := VerityTreeSize(size / BlockSize); n > 0 {
		tree = make([]byte, n)
	}
	root, err := walkTree(data, size, salt, func(off int64, block []byte) error {
		copy(tree[off:], block)
		return nil
	})
	if err != nil {
		return nil, root, err
	}
	return tree, root, nil
}

// hashData hashes every data block on all cores and hands the hashes to
// fn in order, a chunk of 256 blocks (1 MiB) at a time. Each core's worker
// reads and hashes its own chunks (the w-th, then every workers-th after
// it) without waiting for the others, and runs at most one chunk ahead of
// the one fn waits for: one 1 MiB read buffer per worker, and two chunks'
// hashes (8 KiB each) per worker waiting. fn runs while no worker reads (a
// lock around the reads), so it may write to data's file, but while the
// workers hash. Not in rounds (every worker one chunk, then fn), as it was:
// there each round woke a worker, and every core waited for fn and for the
// slowest; the tree of an lz4 build of bench-build's tree took 17.7 ms
// that way and takes 15.1 ms this way (medians of 15 builds each, in
// turn).
func hashData(data io.ReaderAt, blocks int64, salt []byte, fn func(hashes []byte) error) error {
	const chunk = 256 // blocks per work item: 1 MiB reads
	chunks := (blocks + chunk - 1) / chunk
	workers := min(int64(runtime.GOMAXPROCS(0)), chunks)
	// Chunk k's hashes wait in slot k % depth. depth is a multiple of
	// workers, so a slot is only ever written by one worker.
	depth := 2 * workers
	type slot struct {
		hashes      []byte
		err         error
		ready, free chan struct{} // one token each: hashed; taken by fn
	}
	slots := make([]slot, depth)
	for i := range slots {
		slots[i] = slot{hashes: make([]byte, min(chunk, blocks)*hashSize), ready: make(chan struct{}, 1), free: make(chan struct{}, 1)}
		slots[i].free <- struct{}{}
	}
	var reading sync.RWMutex // read-held by each read, write-held by fn
	quit := make(chan struct{})
	var wg sync.WaitGroup
	defer func() { close(quit); wg.Wait() }()
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			buf := make([]byte, min(chunk, blocks)*BlockSize)
			for k := w; k < chunks; k += workers {
				s := &slots[k%depth]
				select {
				case <-s.free:
				case <-quit:
					return
				}
				start := k * chunk
				n := min(chunk, blocks-start)
				b := buf[:n*BlockSize]
				reading.RLock()
				_, err := data.ReadAt(b, start*BlockSize)
				reading.RUnlock()
				if err != nil {
					s.err = fmt.Errorf("verity: read data block %d: %w", start, err)
					s.ready <- struct{}{}
					return
				}
				hashChunk(salt, b, s.hashes[:n*hashSize])
				s.ready <- struct{}{}
			}
		}()
	}
	for k := range chunks {
		s := &slots[k%depth]
		<-s.ready
		if s.err != nil {
			return s.err
		}
		n := min(chunk, blocks-k*chunk)
		reading.Lock()
		err := fn(s.hashes[:n*hashSize])
		reading.Unlock()
		if err != nil {
			return err
		}
		s.free <- struct{}{}
	}
	return nil
}

// hashChunk writes the hash of each BlockSize block of b into hashes, two
// by two (see sha256x2_amd64.go).
func hashChunk(salt, b, hashes []byte) {
	n := len(b) / BlockSize
	i := 0
	for ; i+1 < n; i += 2 {
		h0, h1 := hashBlockPair(salt, b[i*BlockSize:(i+1)*BlockSize], b[(i+1)*BlockSize:(i+2)*BlockSize])
		copy(hashes[i*hashSize:], h0[:])
		copy(hashes[(i+1)*hashSize:], h1[:])
	}
	if i < n {
		h := hashBlock(salt, b[i*BlockSize:(i+1)*BlockSize])
		copy(hashes[i*hashSize:], h[:])
	}
}
