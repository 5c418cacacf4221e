package format

import (
	"bytes"
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

// hashBlock is dm-verity version 1: sha256(salt || block).
func hashBlock(salt, block []byte) [hashSize]byte {
	h := sha256.New()
	h.Write(salt)
	h.Write(block)
	var out [hashSize]byte
	h.Sum(out[:0])
	return out
}

// BuildVerityTree hashes size bytes of data (a multiple of BlockSize) and
// returns the tree as laid out on disk (top level first, as dm-verity and
// veritysetup place it) and the root hash.
func BuildVerityTree(data io.ReaderAt, size int64, salt []byte) ([]byte, [hashSize]byte, error) {
	var root [hashSize]byte
	if size <= 0 || size%BlockSize != 0 {
		return nil, root, fmt.Errorf("verity: data size %d is not a positive multiple of %d", size, BlockSize)
	}
	blocks := size / BlockSize
	hashes, err := hashData(data, blocks, salt)
	if err != nil {
		return nil, root, err
	}
	if blocks == 1 {
		copy(root[:], hashes)
		return nil, root, nil
	}
	// Each level packs the hashes below it into zero-padded blocks.
	var levels [][]byte
	cur := hashes
	for {
		n := (len(cur)/hashSize + perBlock - 1) / perBlock
		lvl := make([]byte, n*BlockSize)
		for i := 0; i < len(cur)/hashSize; i++ {
			copy(lvl[(i/perBlock)*BlockSize+(i%perBlock)*hashSize:], cur[i*hashSize:(i+1)*hashSize])
		}
		levels = append(levels, lvl)
		if n == 1 {
			root = hashBlock(salt, lvl)
			break
		}
		next := make([]byte, 0, n*hashSize)
		for i := 0; i < n; i++ {
			h := hashBlock(salt, lvl[i*BlockSize:(i+1)*BlockSize])
			next = append(next, h[:]...)
		}
		cur = next
	}
	var tree bytes.Buffer
	for i := len(levels) - 1; i >= 0; i-- {
		tree.Write(levels[i])
	}
	return tree.Bytes(), root, nil
}

// hashData returns the concatenated hashes of every data block, computed
// on all cores in chunks.
func hashData(data io.ReaderAt, blocks int64, salt []byte) ([]byte, error) {
	out := make([]byte, blocks*hashSize)
	const chunk = 256 // blocks per work item: 1 MiB reads
	chunks := int((blocks + chunk - 1) / chunk)
	workers := min(runtime.GOMAXPROCS(0), chunks)
	next := make(chan int64)
	var wg sync.WaitGroup
	var mu sync.Mutex
	var firstErr error
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			buf := make([]byte, min(chunk, blocks)*BlockSize)
			for start := range next {
				n := min(chunk, blocks-start)
				b := buf[:n*BlockSize]
				if _, err := data.ReadAt(b, start*BlockSize); err != nil {
					mu.Lock()
					if firstErr == nil {
						firstErr = fmt.Errorf("verity: read data block %d: %w", start, err)
					}
					mu.Unlock()
					continue
				}
				for i := int64(0); i < n; i++ {
					h := hashBlock(salt, b[i*BlockSize:(i+1)*BlockSize])
					copy(out[(start+i)*hashSize:], h[:])
				}
			}
		}()
	}
	for s := int64(0); s < blocks; s += chunk {
		next <- s
	}
	close(next)
	wg.Wait()
	return out, firstErr
}
