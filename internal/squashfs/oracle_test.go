package squashfs_test

// Oracle tests: images written by this package are read back by three
// independent readers — the kernel (a real loop mount), unsquashfs -lln,
// and go-diskfs — and compared with the source tree. They need root (for
// mount) and squashfs-tools; both are in CI, so a missing one fails.

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"fmt"
	"io"
	"io/fs"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/diskfs/go-diskfs/backend/file"
	dsquash "github.com/diskfs/go-diskfs/filesystem/squashfs"

	"cimg.dev/cimg/internal/mounttest"
	"cimg.dev/cimg/internal/squashfs"
	"cimg.dev/cimg/internal/stage"
)

const epoch = 1700000000

func requireTool(t testing.TB, name string) string {
	t.Helper()
	p, err := exec.LookPath(name)
	if err != nil {
		t.Fatalf("%s not found: install squashfs-tools (make test does)", name)
	}
	return p
}

// writeStream writes the first n bytes of r to path.
func writeStream(t testing.TB, path string, r io.Reader, n int64) {
	t.Helper()
	os.MkdirAll(filepath.Dir(path), 0o755)
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	w := bufio.NewWriterSize(f, 1<<20)
	if _, err := io.CopyN(w, r, n); err != nil {
		t.Fatal(err)
	}
	if err := w.Flush(); err != nil {
		t.Fatal(err)
	}
}

// writeRandom writes n bytes from a seeded generator: incompressible.
func writeRandom(t testing.TB, path string, n int64, seed uint64) {
	writeStream(t, path, rand.NewChaCha8([32]byte{byte(seed), byte(seed >> 8)}), n)
}

// textStream yields text-like data: words from a small vocabulary with
// random numbers, which compresses roughly 4:1.
type textStream struct {
	rng  *rand.Rand
	line []byte
}

var words = strings.Fields("lorem ipsum dolor sit amet consectetur adipiscing elit sed do eiusmod tempor incididunt ut labore et dolore magna aliqua sensor gateway reading value")

func (s *textStream) Read(p []byte) (int, error) {
	n := 0
	for n < len(p) {
		if len(s.line) == 0 {
			s.line = fmt.Appendf(s.line[:0], "%s %s %d %s\n", words[s.rng.IntN(len(words))], words[s.rng.IntN(len(words))], s.rng.Uint32(), words[s.rng.IntN(len(words))])
		}
		c := copy(p[n:], s.line)
		s.line = s.line[c:]
		n += c
	}
	return n, nil
}

func writeCompressible(t testing.TB, path string, n int64, seed uint64) {
	writeStream(t, path, &textStream{rng: rand.New(rand.NewPCG(seed, 1))}, n)
}

func mustWrite(t testing.TB, path, content string, mode os.FileMode) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte(content), mode); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(path, mode); err != nil { // umask-proof, and sets setuid
		t.Fatal(err)
	}
}

// makeOracleTree builds the checklist tree of the issue under dir.
func makeOracleTree(t testing.TB, dir string, blockSize int) {
	t.Helper()
	mk := func(p string) string { return filepath.Join(dir, p) }
	mustWrite(t, mk("empty"), "", 0o644)
	writeRandom(t, mk("sizes/one-block"), int64(blockSize), 1)
	writeRandom(t, mk("sizes/block-plus-one"), int64(blockSize)+1, 2)
	writeRandom(t, mk("big/random-50M"), 50<<20, 3)
	writeCompressible(t, mk("big/text-50M"), 50<<20, 4)
	// A sparse file: data at both ends, 8 MiB of holes between.
	sp, err := os.Create(mk("sparse"))
	if err != nil {
		t.Fatal(err)
	}
	sp.WriteAt([]byte("start"), 0)
	sp.WriteAt([]byte("end"), 8<<20)
	sp.Close()
	for i := 0; i < 4096; i++ {
		mustWrite(t, mk(fmt.Sprintf("small/%02x/f%04d.txt", i%64, i)), fmt.Sprintf("small file %d\n", i), 0o644)
	}
	// Duplicates: same content in three files (de-duplicated), plus a
	// file identical to one of the small ones.
	for _, p := range []string{"dup/a", "dup/b", "dup/c/d"} {
		mustWrite(t, mk(p), strings.Repeat("duplicate content\n", 5000), 0o644)
	}
	mustWrite(t, mk("dup/small-twin"), "small file 7\n", 0o644)
	deep := "deep"
	for i := 0; i < 100; i++ {
		deep = filepath.Join(deep, "d"+strconv.Itoa(i%10))
	}
	mustWrite(t, mk(filepath.Join(deep, "bottom.txt")), "at the bottom\n", 0o644)
	mustWrite(t, mk("names/héllo wörld ✓ 日本語"), "unicode\n", 0o644)
	mustWrite(t, mk("names/"+strings.Repeat("n", 255)), "long name\n", 0o644)
	mustWrite(t, mk("names/"+strings.Repeat("é", 127)+"x"), "long unicode name\n", 0o644)
	os.MkdirAll(mk("links"), 0o755)
	os.Symlink("/usr/bin/env", mk("links/absolute"))
	os.Symlink("../empty", mk("links/relative"))
	os.Symlink("does/not/exist", mk("links/dangling"))
	os.Symlink(strings.Repeat("x/", 1000)+"long", mk("links/long-target"))
	mustWrite(t, mk("hard/one"), "hardlinked\n", 0o640)
	os.Link(mk("hard/one"), mk("hard/two"))
	os.Link(mk("hard/one"), mk("links/three-elsewhere"))
	mustWrite(t, mk("modes/setuid"), "#!/bin/sh\n", 0o4755)
	mustWrite(t, mk("modes/setgid"), "#!/bin/sh\n", 0o2755)
	mustWrite(t, mk("modes/private"), "secret\n", 0o600)
	os.MkdirAll(mk("modes/sticky"), 0o755)
	os.Chmod(mk("modes/sticky"), 0o1777)
	mustWrite(t, mk("owners/big"), "owned by 70000:80000\n", 0o644)
	os.Chown(mk("owners/big"), 70000, 80000)
	mustWrite(t, mk("owners/user"), "owned by 1000:1000\n", 0o644)
	os.Chown(mk("owners/user"), 1000, 1000)
	os.MkdirAll(mk("emptydir"), 0o755)
	os.MkdirAll(mk("nested/empty/dirs"), 0o700)
	// 4000 entries with long names: the listing is > 64 KiB, so it needs
	// an extended directory inode and a directory index.
	for i := 0; i < 4000; i++ {
		mustWrite(t, mk(fmt.Sprintf("wide/entry-with-a-long-name-%05d.conf", i)), strconv.Itoa(i), 0o644)
	}
	// Last in walk order: a file of more than 300 MiB.
	writeCompressible(t, mk("zzz/last-320M"), 320<<20, 9)
}

// srcEntry is what a reader should find for one path.
type srcEntry struct {
	mode   fs.FileMode
	uid    uint32
	gid    uint32
	size   int64
	target string
	sum    [32]byte
	inode  uint64 // source inode, for hardlink identity
}

func scanTree(t testing.TB, dir string, keepOwners bool) map[string]srcEntry {
	t.Helper()
	out := map[string]srcEntry{}
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(dir, p)
		if rel == "." {
			return nil
		}
		fi, err := os.Lstat(p)
		if err != nil {
			return err
		}
		st := fi.Sys().(*syscall.Stat_t)
		e := srcEntry{mode: fi.Mode(), inode: st.Ino}
		if keepOwners {
			e.uid, e.gid = st.Uid, st.Gid
		}
		switch {
		case fi.Mode()&fs.ModeSymlink != 0:
			e.target, _ = os.Readlink(p)
			e.size = int64(len(e.target))
		case fi.Mode().IsRegular():
			e.size = fi.Size()
			e.sum = hashFile(t, p)
		}
		out["/"+filepath.ToSlash(rel)] = e
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func hashFile(t testing.TB, p string) [32]byte {
	t.Helper()
	f, err := os.Open(p)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		t.Fatalf("read %s: %v", p, err)
	}
	var s [32]byte
	h.Sum(s[:0])
	return s
}

func buildImage(t testing.TB, src, out string, o squashfs.Options, keepOwners bool) squashfs.Stats {
	t.Helper()
	st := stage.New(stage.Options{Epoch: epoch, KeepOwners: keepOwners})
	if err := st.Add(src, "/", "test"); err != nil {
		t.Fatal(err)
	}
	f, err := os.Create(out)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	o.MkfsTime = epoch
	stats, err := squashfs.Write(context.Background(), f, st.Tree(), o)
	if err != nil {
		t.Fatal(err)
	}
	if fi, _ := f.Stat(); fi.Size() != int64(stats.Size) || stats.Size%4096 != 0 {
		t.Fatalf("image is %d bytes, stats say %d; want a multiple of 4096", fi.Size(), stats.Size)
	}
	return stats
}

// lsMode renders a mode as ls and unsquashfs do (setuid as s/S, sticky t/T).
func lsMode(m fs.FileMode) string {
	b := []byte("----------")
	switch {
	case m.IsDir():
		b[0] = 'd'
	case m&fs.ModeSymlink != 0:
		b[0] = 'l'
	}
	const rwx = "rwxrwxrwx"
	for i := 0; i < 9; i++ {
		if m&(1<<(8-i)) != 0 {
			b[i+1] = rwx[i]
		}
	}
	special := func(set bool, at int, lower, upper byte) {
		if !set {
			return
		}
		if b[at] == '-' {
			b[at] = upper
		} else {
			b[at] = lower
		}
	}
	special(m&fs.ModeSetuid != 0, 3, 's', 'S')
	special(m&fs.ModeSetgid != 0, 6, 's', 'S')
	special(m&fs.ModeSticky != 0, 9, 't', 'T')
	return string(b)
}

// checkUnsquashfs compares `unsquashfs -lln` with the source.
func checkUnsquashfs(t *testing.T, img string, want map[string]srcEntry) {
	bin := requireTool(t, "unsquashfs")
	cmd := exec.Command(bin, "-lln", "-d", "", img)
	cmd.Env = append(os.Environ(), "TZ=UTC")
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("unsquashfs -lln: %v\n%s", err, out)
	}
	wantDate := time.Unix(epoch, 0).UTC().Format("2006-01-02 15:04")
	seen := 0
	for _, line := range strings.Split(strings.TrimRight(string(out), "\n"), "\n") {
		f := strings.Fields(line)
		if len(f) < 5 {
			continue
		}
		// perms owner size date time name...: the name is what follows
		// the time, which may contain spaces.
		rest := line[strings.Index(line, f[4])+len(f[4])+1:]
		name, target, _ := strings.Cut(rest, " -> ")
		if name == "" || name == "/" {
			continue
		}
		w, ok := want[name]
		if !ok {
			t.Errorf("unsquashfs lists %q, which is not in the source", name)
			continue
		}
		seen++
		if f[0] != lsMode(w.mode) {
			t.Errorf("%s: unsquashfs mode %s, want %s", name, f[0], lsMode(w.mode))
		}
		if f[1] != fmt.Sprintf("%d/%d", w.uid, w.gid) {
			t.Errorf("%s: unsquashfs owner %s, want %d/%d", name, f[1], w.uid, w.gid)
		}
		if !w.mode.IsDir() && f[2] != strconv.FormatInt(w.size, 10) {
			t.Errorf("%s: unsquashfs size %s, want %d", name, f[2], w.size)
		}
		if f[3]+" "+f[4] != wantDate {
			t.Errorf("%s: unsquashfs date %s %s, want %s", name, f[3], f[4], wantDate)
		}
		if target != w.target {
			t.Errorf("%s: unsquashfs target %q, want %q", name, target, w.target)
		}
	}
	if seen != len(want) {
		t.Errorf("unsquashfs listed %d entries, the source has %d", seen, len(want))
	}
}

// checkKernel mounts the image and compares every path with the source:
// content, mode, owner, size, symlink target, mtime and hardlink identity.
func checkKernel(t *testing.T, img string, want map[string]srcEntry) {
	mnt := mounttest.Mount(t, img)
	got := scanTree(t, mnt, true)
	if len(got) != len(want) {
		t.Errorf("kernel sees %d entries, the source has %d", len(got), len(want))
	}
	srcToImg := map[uint64]uint64{}
	imgToSrc := map[uint64]uint64{}
	for p, w := range want {
		g, ok := got[p]
		if !ok {
			t.Errorf("%s: missing from the kernel mount", p)
			continue
		}
		if g.mode != w.mode {
			t.Errorf("%s: mode %v, want %v", p, g.mode, w.mode)
		}
		if g.uid != w.uid || g.gid != w.gid {
			t.Errorf("%s: owner %d:%d, want %d:%d", p, g.uid, g.gid, w.uid, w.gid)
		}
		if g.size != w.size || g.target != w.target || g.sum != w.sum {
			t.Errorf("%s: size/target/content differ (size %d want %d, target %q want %q)", p, g.size, w.size, g.target, w.target)
		}
		if w.mode.IsRegular() {
			// Same source inode ⇔ same image inode.
			if prev, ok := srcToImg[w.inode]; ok && prev != g.inode {
				t.Errorf("%s: hardlink split into a separate inode", p)
			}
			if prev, ok := imgToSrc[g.inode]; ok && prev != w.inode {
				t.Errorf("%s: distinct files share inode %d", p, g.inode)
			}
			srcToImg[w.inode], imgToSrc[g.inode] = g.inode, w.inode
		}
		var st syscall.Stat_t
		if err := syscall.Lstat(filepath.Join(mnt, p), &st); err == nil && st.Mtim.Sec != epoch {
			t.Errorf("%s: mtime %d, want %d", p, st.Mtim.Sec, epoch)
		}
	}
	var st syscall.Stat_t
	syscall.Stat(filepath.Join(mnt, "hard/one"), &st)
	if st.Nlink != 3 {
		t.Errorf("hard/one: nlink %d, want 3", st.Nlink)
	}
}

// checkDiskfs reads every file with go-diskfs.
func checkDiskfs(t *testing.T, img string, blockSize int, want map[string]srcEntry) {
	f, err := os.Open(img)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	fi, _ := f.Stat()
	sq, err := dsquash.Read(file.New(f, true), fi.Size(), 0, int64(blockSize))
	if err != nil {
		t.Fatalf("go-diskfs: %v", err)
	}
	seen := 0
	var walk func(dir string)
	walk = func(dir string) {
		ents, err := sq.ReadDir(dir)
		if err != nil {
			t.Fatalf("go-diskfs ReadDir %s: %v", dir, err)
		}
		for _, e := range ents {
			p := e.Name()
			if dir != "." {
				p = dir + "/" + p
			}
			w, ok := want["/"+p]
			if !ok {
				t.Errorf("go-diskfs lists %s, not in the source", p)
				continue
			}
			seen++
			info, err := e.Info()
			if err != nil {
				t.Fatalf("go-diskfs Info %s: %v", p, err)
			}
			// go-diskfs drops setuid/setgid/sticky: compare rwx bits and type.
			if info.Mode().Perm() != w.mode.Perm() || info.Mode().Type() != w.mode.Type() {
				t.Errorf("%s: go-diskfs mode %v, want %v", p, info.Mode(), w.mode)
			}
			switch {
			case w.mode.IsDir():
				walk(p)
			case w.mode.IsRegular():
				r, err := sq.Open(p)
				if err != nil {
					t.Errorf("go-diskfs open %s: %v", p, err)
					continue
				}
				h := sha256.New()
				n, err := io.Copy(h, r)
				r.Close()
				var s [32]byte
				h.Sum(s[:0])
				if err != nil || n != w.size || s != w.sum {
					t.Errorf("%s: go-diskfs read %d bytes (want %d), err %v, content equal %v", p, n, w.size, err, s == w.sum)
				}
			}
		}
	}
	walk(".")
	if seen != len(want) {
		t.Errorf("go-diskfs saw %d entries, the source has %d", seen, len(want))
	}
}

var oracleCases = []struct {
	comp      squashfs.Compression
	blockSize int
	diskfs    bool
}{
	{squashfs.Zstd, 128 << 10, true},
	{squashfs.Gzip, 4 << 10, true},
	{squashfs.XZ, 1 << 20, true},
	{squashfs.LZ4, 64 << 10, false}, // go-diskfs cannot read lz4
}

func TestOracle(t *testing.T) {
	mounttest.RequireRoot(t)
	requireTool(t, "unsquashfs")
	tmp := t.TempDir()
	src := filepath.Join(tmp, "src")
	// The block-sized files depend on the block size: one source tree per
	// case would cost 400 MB each, so the sizes dir is regenerated.
	makeOracleTree(t, src, 4096)
	for _, tc := range oracleCases {
		t.Run(fmt.Sprintf("%v-%dK", tc.comp, tc.blockSize>>10), func(t *testing.T) {
			os.RemoveAll(filepath.Join(src, "sizes"))
			writeRandom(t, filepath.Join(src, "sizes/one-block"), int64(tc.blockSize), 1)
			writeRandom(t, filepath.Join(src, "sizes/block-plus-one"), int64(tc.blockSize)+1, 2)
			want := scanTree(t, src, true)
			img := filepath.Join(tmp, tc.comp.String()+".sqfs")
			start := time.Now()
			st := buildImage(t, src, img, squashfs.Options{Compression: tc.comp, BlockSize: tc.blockSize}, true)
			t.Logf("wrote %d bytes, %d inodes, %d duplicates, %d fragments in %v", st.Size, st.Inodes, st.DuplicateFiles, st.Fragments, time.Since(start))
			if st.DuplicateFiles < 3 {
				t.Errorf("%d duplicate files found, want at least 3", st.DuplicateFiles)
			}
			t.Run("unsquashfs", func(t *testing.T) { checkUnsquashfs(t, img, want) })
			t.Run("kernel", func(t *testing.T) { checkKernel(t, img, want) })
			if tc.diskfs {
				t.Run("go-diskfs", func(t *testing.T) { checkDiskfs(t, img, tc.blockSize, want) })
			}
			os.Remove(img)
		})
	}
}

// TestRefusesSpecialFiles: device nodes, fifos and sockets fail the build
// with the path that holds them.
func TestRefusesSpecialFiles(t *testing.T) {
	mounttest.RequireRoot(t)
	for _, tc := range []struct {
		name string
		make func(p string) error
		want string
	}{
		{"fifo", func(p string) error { return syscall.Mkfifo(p, 0o644) }, "fifo"},
		{"chardev", func(p string) error { return syscall.Mknod(p, syscall.S_IFCHR|0o644, 0x0103) }, "character device"},
		{"blockdev", func(p string) error { return syscall.Mknod(p, syscall.S_IFBLK|0o644, 0x0700) }, "block device"},
		{"socket", func(p string) error { return syscall.Mknod(p, syscall.S_IFSOCK|0o644, 0) }, "socket"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			p := filepath.Join(dir, "sub", tc.name)
			os.MkdirAll(filepath.Dir(p), 0o755)
			if err := tc.make(p); err != nil {
				t.Fatal(err)
			}
			st := stage.New(stage.Options{})
			err := st.Add(dir, "/", "test")
			if err == nil || !strings.Contains(err.Error(), p) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("got %v, want an error naming %s and %q", err, p, tc.want)
			}
		})
	}
}

// TestXattrsIgnored: a source file with xattrs (as on an SELinux host)
// builds, and the image has none.
func TestXattrsIgnored(t *testing.T) {
	mounttest.RequireRoot(t)
	dir := t.TempDir()
	p := filepath.Join(dir, "labelled")
	mustWrite(t, p, "x", 0o644)
	if err := syscall.Setxattr(p, "user.cimg-test", []byte("v"), 0); err != nil {
		if err2 := syscall.Setxattr(p, "trusted.cimg-test", []byte("v"), 0); err2 != nil {
			t.Fatalf("cannot set an xattr on %s to test with: %v / %v", dir, err, err2)
		}
	}
	img := filepath.Join(t.TempDir(), "x.sqfs")
	buildImage(t, dir, img, squashfs.Options{}, false)
	mnt := mounttest.Mount(t, img)
	buf := make([]byte, 256)
	n, err := syscall.Listxattr(filepath.Join(mnt, "labelled"), buf)
	if err == nil && n > 0 {
		t.Errorf("image carries xattrs: %q", buf[:n])
	}
}

// TestReproducible: the same tree gives the same bytes, whatever the
// number of workers, with every encoder of this build (the C ones with
// cgo, the pure-Go ones without: run it both ways; TestZstdCgoGolden pins
// the C encoder's bytes across hosts).
func TestReproducible(t *testing.T) {
	src := t.TempDir()
	writeCompressible(t, filepath.Join(src, "a/text"), 3<<20, 1)
	writeRandom(t, filepath.Join(src, "b/rand"), 1<<20+17, 2)
	for i := 0; i < 200; i++ {
		mustWrite(t, filepath.Join(src, "c", strconv.Itoa(i)), strings.Repeat("x", i*37), 0o644)
	}
	writeCode(t, filepath.Join(src, "d/code"), squashfs.BCJX86, 1<<20+5, 3)
	for _, o := range []squashfs.Options{
		{Compression: squashfs.Zstd},
		{Compression: squashfs.Zstd, Level: 19, BlockSize: 1 << 20},
		{Compression: squashfs.Gzip},
		{Compression: squashfs.XZ},
		{Compression: squashfs.XZ, BCJ: squashfs.BCJX86},
		{Compression: squashfs.LZ4},
	} {
		comp := squashfs.EncoderDescription(o)
		var sums []string
		for _, workers := range []int{1, 2, 8} {
			img := filepath.Join(t.TempDir(), "img")
			o.Workers = workers
			buildImage(t, src, img, o, false)
			b, _ := os.ReadFile(img)
			sums = append(sums, fmt.Sprintf("%x", sha256.Sum256(b)))
		}
		sort.Strings(sums)
		if sums[0] != sums[len(sums)-1] {
			t.Errorf("%v: images differ across worker counts: %v", comp, sums)
		}
	}
}

// TestChangedFileFails: a file that grows or shrinks while the image is
// written is an error naming it, not a silently wrong image.
func TestChangedFileFails(t *testing.T) {
	tr := squashfs.NewTree(squashfs.Entry{Mode: fs.ModeDir | 0o755})
	tr.Add(squashfs.Entry{Path: "short", Mode: 0o644, Size: 100, Open: func() (io.ReadCloser, error) {
		return io.NopCloser(bytes.NewReader(make([]byte, 50))), nil
	}})
	var buf seekBuf
	_, err := squashfs.Write(context.Background(), &buf, tr, squashfs.Options{})
	if err == nil || !strings.Contains(err.Error(), "short") || !strings.Contains(err.Error(), "shrank") {
		t.Errorf("got %v", err)
	}
}

type seekBuf struct {
	b   []byte
	pos int64
}

func (s *seekBuf) Write(p []byte) (int, error) {
	if end := s.pos + int64(len(p)); end > int64(len(s.b)) {
		s.b = append(s.b, make([]byte, end-int64(len(s.b)))...)
	}
	copy(s.b[s.pos:], p)
	s.pos += int64(len(p))
	return len(p), nil
}

func (s *seekBuf) Seek(off int64, whence int) (int64, error) {
	switch whence {
	case io.SeekStart:
		s.pos = off
	case io.SeekCurrent:
		s.pos += off
	case io.SeekEnd:
		s.pos = int64(len(s.b)) + off
	}
	return s.pos, nil
}
