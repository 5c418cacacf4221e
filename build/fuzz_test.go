package build

import (
	"archive/tar"
	"bytes"
	"context"
	"crypto/sha256"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/diskfs/go-diskfs/backend/file"
	dsquash "github.com/diskfs/go-diskfs/filesystem/squashfs"

	"cimg.dev/cimg/internal/squashfs"
	"cimg.dev/cimg/internal/stage"
	"cimg.dev/cimg/manifest"
)

// FuzzFlattenOCI flattens OCI layers described by a small script, one
// entry a line and "--" between layers:
//
//	d NAME            directory
//	f NAME            regular file
//	l NAME -> TARGET  symlink
//	h NAME -> TARGET  hard link
//	c NAME            character device (refused)
//
// Names take anything the fuzzer makes: "..", absolute paths, whiteouts
// (.wh.x, .wh..wh..opq) of parents and children. The flattened tree is
// packed to squashfs and extracted, by a plain extractor that trusts the
// names, into dest under a fresh root: nothing may appear in the root but
// dest, the image and the (empty) temporary directory importOCI spools
// to, no name may be "", "." or ".." or hold a "/", no hard link may
// point at something that is not a regular file in the image, and the
// tree must hold exactly the paths the stager recorded.
func FuzzFlattenOCI(f *testing.F) {
	// Every exec makes a dozen files and directories: on tmpfs when there
	// is one, which is several times faster than a disk.
	base, err := os.MkdirTemp("/dev/shm", "cimg-fuzz-oci-")
	if err != nil {
		base = f.TempDir()
	}
	f.Cleanup(func() { os.RemoveAll(base) })
	tmp := filepath.Join(base, "tmp")
	if err := os.Mkdir(tmp, 0o700); err != nil {
		f.Fatal(err)
	}
	f.Setenv("TMPDIR", tmp) // importOCI spools file contents there
	f.Fuzz(func(t *testing.T, script string) {
		if !utf8.ValidString(script) {
			return // the go-diskfs reader refuses names that are not UTF-8
		}
		layers := parseLayerScript(script)
		if layers == nil {
			return
		}
		root, err := os.MkdirTemp(base, "root")
		if err != nil {
			t.Fatal(err)
		}
		defer os.RemoveAll(root)
		archive := filepath.Join(root, "image.tar")
		if err := writeDockerArchive(archive, layers); err != nil {
			return // the script made no valid tar (an empty name, say)
		}
		m := manifest.Default()
		m.App.Command = []string{"/x"}
		spec := &Spec{FromOCI: archive, Manifest: &m}
		st := stage.New(stage.Options{})
		defer func() {
			for _, c := range spec.cleanup {
				c()
			}
		}()
		err = importOCI(st, spec)
		if left, _ := os.ReadDir(tmp); len(left) > 0 {
			t.Fatalf("importOCI left %s in its temporary directory", left[0].Name())
		}
		if err != nil {
			return
		}
		dest := filepath.Join(root, "dest")
		extractTree(t, st, filepath.Join(root, "image.sqfs"), dest)
		ents, _ := os.ReadDir(root)
		for _, e := range ents {
			if n := e.Name(); n != "dest" && n != "image.tar" && n != "image.sqfs" {
				t.Fatalf("%s appeared beside the destination", n)
			}
		}
		// Every recorded path is in dest, without following a symlink.
		for _, r := range st.Records() {
			if _, err := os.Lstat(filepath.Join(dest, r.Path)); err != nil {
				t.Fatalf("staged %s is not in the extracted tree: %v", r.Path, err)
			}
		}
	})
}

type layerEntry struct {
	typ        byte
	name, link string
}

// parseLayerScript reads at most 4 layers of 16 entries; nil when the
// script holds none.
func parseLayerScript(s string) [][]layerEntry {
	layers := [][]layerEntry{nil}
	n := 0
	for _, line := range strings.Split(s, "\n") {
		if line == "--" {
			if len(layers) == 4 {
				break
			}
			layers = append(layers, nil)
			continue
		}
		if len(line) < 3 || line[1] != ' ' || n == 64 {
			continue
		}
		e := layerEntry{typ: line[0]}
		e.name, e.link, _ = strings.Cut(line[2:], " -> ")
		if len(layers[len(layers)-1]) < 16 {
			layers[len(layers)-1] = append(layers[len(layers)-1], e)
			n++
		}
	}
	if n == 0 {
		return nil
	}
	return layers
}

// writeDockerArchive writes the layers as a docker-archive tarball by
// hand — manifest.json, config and uncompressed layer tars — which is
// a hundred times cheaper than go-containerregistry's writer (gzip).
func writeDockerArchive(p string, layers [][]layerEntry) error {
	var out bytes.Buffer
	tw := tar.NewWriter(&out)
	add := func(name string, b []byte) error {
		if err := tw.WriteHeader(&tar.Header{Name: name, Mode: 0o644, Size: int64(len(b)), Typeflag: tar.TypeReg}); err != nil {
			return err
		}
		_, err := tw.Write(b)
		return err
	}
	var diffIDs, names []string
	for i, entries := range layers {
		b, err := layerTar(entries)
		if err != nil {
			return err
		}
		diffIDs = append(diffIDs, fmt.Sprintf("%q", fmt.Sprintf("sha256:%x", sha256.Sum256(b))))
		names = append(names, fmt.Sprintf("%q", fmt.Sprintf("layer%d.tar", i)))
		if err := add(fmt.Sprintf("layer%d.tar", i), b); err != nil {
			return err
		}
	}
	cfg := `{"architecture":"amd64","os":"linux","config":{},"rootfs":{"type":"layers","diff_ids":[` + strings.Join(diffIDs, ",") + `]}}`
	if err := add("config.json", []byte(cfg)); err != nil {
		return err
	}
	man := `[{"Config":"config.json","RepoTags":["cimg.test/fuzz:1"],"Layers":[` + strings.Join(names, ",") + `]}]`
	if err := add("manifest.json", []byte(man)); err != nil {
		return err
	}
	if err := tw.Close(); err != nil {
		return err
	}
	return os.WriteFile(p, out.Bytes(), 0o644)
}

// layerTar is one layer's tar; unknown types are left out.
func layerTar(entries []layerEntry) ([]byte, error) {
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, e := range entries {
		h := &tar.Header{Name: e.name, Mode: 0o644, Linkname: e.link, Format: tar.FormatPAX}
		switch e.typ {
		case 'd':
			h.Typeflag, h.Mode = tar.TypeDir, 0o755
		case 'f':
			h.Typeflag, h.Size, h.Linkname = tar.TypeReg, int64(len(e.link)), ""
		case 'l':
			h.Typeflag = tar.TypeSymlink
		case 'h':
			h.Typeflag = tar.TypeLink
		case 'c':
			h.Typeflag = tar.TypeChar
		default:
			continue
		}
		if err := tw.WriteHeader(h); err != nil {
			return nil, err
		}
		if e.typ == 'f' {
			io.WriteString(tw, e.link)
		}
	}
	err := tw.Close()
	return buf.Bytes(), err
}

// extractTree packs the stager's tree to img and extracts it into dest
// the way a careless tool would: names joined to their directory's path
// as they are, files created where the join points. Names that could
// leave dest fail the test before they are used.
func extractTree(t *testing.T, st *stage.Stager, img, dest string) {
	out, err := os.Create(img)
	if err != nil {
		t.Fatal(err)
	}
	defer out.Close()
	stats, err := squashfs.Write(context.Background(), out, st.Tree(), squashfs.Options{Compression: squashfs.Gzip, Level: 1, BlockSize: 4096, Workers: 1})
	if err != nil {
		t.Fatalf("the flattened tree does not pack: %v", err)
	}
	sq, err := dsquash.Read(file.New(out, true), int64(stats.Size), 0, 4096)
	if err != nil {
		t.Fatalf("the packed image does not read back: %v", err)
	}
	var walk func(dir string)
	walk = func(dir string) {
		ents, err := sq.ReadDir(dir)
		if err != nil {
			t.Fatalf("read %s: %v", dir, err)
		}
		for _, e := range ents {
			n := e.Name()
			if n == "" || n == "." || n == ".." || strings.Contains(n, "/") {
				t.Fatalf("directory %s holds the name %q", dir, n)
			}
			p := path.Join(dir, n)
			host := filepath.Join(dest, filepath.FromSlash(p))
			fi, err := e.Info()
			if err != nil {
				t.Fatalf("stat %s: %v", p, err)
			}
			switch {
			case fi.Mode()&fs.ModeSymlink != 0:
				target := ""
				if sys, ok := fi.Sys().(*dsquash.StatT); ok {
					target = sys.LinkTarget
				} else if sys, ok := fi.Sys().(dsquash.StatT); ok {
					target = sys.LinkTarget
				}
				err = os.Symlink(target, host)
			case fi.IsDir():
				if err = os.Mkdir(host, 0o755); err == nil {
					walk(p)
				}
			default:
				var f *os.File
				if f, err = os.OpenFile(host, os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o644); err == nil {
					f.Close()
				}
			}
			if err != nil {
				t.Fatalf("extract %s: %v", p, err)
			}
		}
	}
	if err := os.Mkdir(dest, 0o755); err != nil {
		t.Fatal(err)
	}
	walk(".")
}
