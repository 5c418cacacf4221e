package squashfs_test

import (
	"bytes"
	"context"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"cimg.dev/cimg/internal/squashfs"
)

// TestDedupeByHeadThenWhole: duplicates are found by size, then the hash
// of the first 64 KiB, then the whole file. Files that share size and
// head but differ past it must stay apart; identical files, large and
// small, are stored once; the content reads back right (unsquashfs).
func TestDedupeByHeadThenWhole(t *testing.T) {
	src := t.TempDir()
	const big = 300 << 10
	writeRandom(t, filepath.Join(src, "a"), big, 1)
	a, err := os.ReadFile(filepath.Join(src, "a"))
	if err != nil {
		t.Fatal(err)
	}
	tail := bytes.Clone(a)
	tail[len(tail)-1] ^= 1 // same size, same head, other last byte
	mustWrite(t, filepath.Join(src, "b-tail-differs"), string(tail), 0o644)
	mustWrite(t, filepath.Join(src, "c-copy-of-a"), string(a), 0o644) // a duplicate
	writeRandom(t, filepath.Join(src, "d-other-head"), big, 2)        // same size, other head
	small := strings.Repeat("small ", 1000)
	mustWrite(t, filepath.Join(src, "s1"), small, 0o644)
	mustWrite(t, filepath.Join(src, "s2-copy"), small, 0o644) // a duplicate no longer than the head
	mustWrite(t, filepath.Join(src, "s3-other"), strings.Repeat("other ", 1000), 0o644)

	img := filepath.Join(t.TempDir(), "img")
	st := buildImage(t, src, img, squashfs.Options{Compression: squashfs.Zstd}, false)
	if st.DuplicateFiles != 2 {
		t.Errorf("%d duplicate files, want 2 (c-copy-of-a and s2-copy)", st.DuplicateFiles)
	}
	checkUnsquashfs(t, img, scanTree(t, src, false))
}

// TestDuplicateThatGrewFails: a file whose head and size match an earlier
// file's but which grows while it is hashed whole is an error, not a
// duplicate of the earlier file's content.
func TestDuplicateThatGrewFails(t *testing.T) {
	content := bytes.Repeat([]byte("0123456789abcdef"), 100<<10/16)
	tr := squashfs.NewTree(squashfs.Entry{Mode: fs.ModeDir | 0o755})
	tr.Add(squashfs.Entry{Path: "first", Mode: 0o644, Size: int64(len(content)), Open: func() (io.ReadCloser, error) {
		return io.NopCloser(bytes.NewReader(content)), nil
	}})
	tr.Add(squashfs.Entry{Path: "grows", Mode: 0o644, Size: int64(len(content)), Open: func() (io.ReadCloser, error) {
		return io.NopCloser(io.MultiReader(bytes.NewReader(content), strings.NewReader("more"))), nil
	}})
	var buf seekBuf
	_, err := squashfs.Write(context.Background(), &buf, tr, squashfs.Options{})
	if err == nil || !strings.Contains(err.Error(), "grows") || !strings.Contains(err.Error(), "changed") {
		t.Errorf("got %v, want an error naming the file that grew", err)
	}
}
