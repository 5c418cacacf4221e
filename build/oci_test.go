package build

import (
	"archive/tar"
	"bytes"
	"context"
	"io"
	"os"
	"path/filepath"
	"reflect"
	"syscall"
	"testing"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/tarball"

	"cimg.dev/cimg/internal/mounttest"
)

type tarEntry struct {
	name, body, link string
	typ              byte
	mode             int64
}

func layer(t *testing.T, entries ...tarEntry) v1.Layer {
	t.Helper()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, e := range entries {
		h := &tar.Header{Name: e.name, Typeflag: e.typ, Mode: e.mode, Size: int64(len(e.body)), Linkname: e.link}
		if e.typ != tar.TypeReg {
			h.Size = 0
		}
		if err := tw.WriteHeader(h); err != nil {
			t.Fatal(err)
		}
		if e.typ == tar.TypeReg {
			tw.Write([]byte(e.body))
		}
	}
	tw.Close()
	b := buf.Bytes()
	l, err := tarball.LayerFromOpener(func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(b)), nil })
	if err != nil {
		t.Fatal(err)
	}
	return l
}

func testOCIImage(t *testing.T, arch, marker string) v1.Image {
	t.Helper()
	app, err := os.ReadFile("/proc/self/exe")
	if err != nil {
		t.Fatal(err)
	}
	l1 := layer(t,
		tarEntry{name: "bin/", typ: tar.TypeDir, mode: 0o755},
		tarEntry{name: "bin/app", typ: tar.TypeReg, mode: 0o755, body: string(app)},
		tarEntry{name: "bin/app2", typ: tar.TypeLink, link: "bin/app"},
		tarEntry{name: "bin/sh-link", typ: tar.TypeSymlink, link: "app"},
		tarEntry{name: "etc/passwd", typ: tar.TypeReg, mode: 0o644, body: "root:x:0:0::/:/bin/sh\napp:x:1000:1001::/data:/bin/sh\n"},
		tarEntry{name: "data/old.txt", typ: tar.TypeReg, mode: 0o644, body: "deleted in layer 2"},
		tarEntry{name: "data/keep.txt", typ: tar.TypeReg, mode: 0o600, body: "kept"},
		tarEntry{name: "opq/a.txt", typ: tar.TypeReg, mode: 0o644, body: "hidden by an opaque dir"},
		tarEntry{name: "suid", typ: tar.TypeReg, mode: 0o4755, body: "s"},
	)
	l2 := layer(t,
		tarEntry{name: "data/.wh.old.txt", typ: tar.TypeReg},
		tarEntry{name: "opq/", typ: tar.TypeDir, mode: 0o755},
		tarEntry{name: "opq/.wh..wh..opq", typ: tar.TypeReg},
		tarEntry{name: "opq/b.txt", typ: tar.TypeReg, mode: 0o644, body: "new"},
		tarEntry{name: "etc/marker", typ: tar.TypeReg, mode: 0o644, body: marker},
	)
	img, err := mutate.AppendLayers(empty.Image, l1, l2)
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := img.ConfigFile() // keeps rootfs.diff_ids, which docker-archive readers need
	if err != nil {
		t.Fatal(err)
	}
	cfg = cfg.DeepCopy()
	cfg.OS, cfg.Architecture = "linux", arch
	cfg.Config = v1.Config{
		Entrypoint: []string{"app"}, Cmd: []string{"--flag"}, Env: []string{"PATH=/usr/bin:/bin", "MODE=test"},
		WorkingDir: "/data", User: "app",
	}
	if img, err = mutate.ConfigFile(img, cfg); err != nil {
		t.Fatal(err)
	}
	return img
}

func TestFromOCILayoutAndDockerArchive(t *testing.T) {
	mounttest.RequireRoot(t)
	dir := t.TempDir()
	amd, arm := testOCIImage(t, "amd64", "amd64 image"), testOCIImage(t, "arm64", "arm64 image")
	idx := mutate.AppendManifests(empty.Index,
		mutate.IndexAddendum{Add: amd, Descriptor: v1.Descriptor{Platform: &v1.Platform{OS: "linux", Architecture: "amd64"}}},
		mutate.IndexAddendum{Add: arm, Descriptor: v1.Descriptor{Platform: &v1.Platform{OS: "linux", Architecture: "arm64", Variant: "v8"}}})
	lay := filepath.Join(dir, "layout")
	if _, err := layout.Write(lay, idx); err != nil {
		t.Fatal(err)
	}
	archive := filepath.Join(dir, "docker.tar")
	if err := tarball.WriteToFile(archive, name.MustParseReference("cimg.test/app:1"), amd); err != nil {
		t.Fatal(err)
	}

	// Two platforms and no choice: a clear error.
	_, err := Build(context.Background(), Spec{FromOCI: lay, Output: filepath.Join(dir, "x.cimg")})
	if err == nil || !bytesContains(err.Error(), "choose one with --platform") {
		t.Fatalf("ambiguous index: %v", err)
	}
	for _, tc := range []struct{ src, platform, arch, marker string }{
		{lay, "linux/amd64", "amd64", "amd64 image"},
		{lay, "linux/arm64", "arm64", "arm64 image"},
		{archive, "", "amd64", "amd64 image"},
	} {
		t.Run(filepath.Base(tc.src)+"-"+tc.arch, func(t *testing.T) {
			out := filepath.Join(t.TempDir(), "oci.cimg")
			res, err := Build(context.Background(), Spec{FromOCI: tc.src, Platform: tc.platform, Output: out})
			if err != nil {
				t.Fatal(err)
			}
			m := res.Manifest
			if m.Arch != tc.arch || !reflect.DeepEqual(m.App.Command, []string{"/bin/app"}) || !reflect.DeepEqual(m.App.Args, []string{"--flag"}) ||
				m.App.Workdir != "/data" || m.App.User != 1000 || m.App.Group != 1001 || m.App.Env["MODE"] != "test" {
				t.Errorf("manifest from the OCI config: %+v %+v", m.Arch, m.App)
			}
			mnt := mounttest.Mount(t, out)
			for p, want := range map[string]bool{"data/old.txt": false, "data/keep.txt": true, "opq/a.txt": false, "opq/b.txt": true, "bin/sh-link": true} {
				if _, err := os.Lstat(filepath.Join(mnt, p)); (err == nil) != want {
					t.Errorf("%s present=%v, want %v", p, err == nil, want)
				}
			}
			if b, _ := os.ReadFile(filepath.Join(mnt, "etc/marker")); string(b) != tc.marker {
				t.Errorf("marker %q, want %q", b, tc.marker)
			}
			var a, b syscall.Stat_t
			syscall.Stat(filepath.Join(mnt, "bin/app"), &a)
			syscall.Stat(filepath.Join(mnt, "bin/app2"), &b)
			if a.Ino != b.Ino || a.Nlink != 2 {
				t.Errorf("hardlink lost: inodes %d %d, nlink %d", a.Ino, b.Ino, a.Nlink)
			}
			if fi, _ := os.Stat(filepath.Join(mnt, "suid")); fi == nil || fi.Mode()&os.ModeSetuid == 0 {
				t.Errorf("setuid bit lost: %v", fi)
			}
			if fi, _ := os.Stat(filepath.Join(mnt, "data/keep.txt")); fi == nil || fi.Mode().Perm() != 0o600 {
				t.Errorf("mode lost: %v", fi)
			}
		})
	}
	_, err = Build(context.Background(), Spec{FromOCI: lay, Platform: "linux/riscv64", Output: filepath.Join(dir, "y.cimg")})
	if err == nil || !bytesContains(err.Error(), "no image for platform linux/riscv64") {
		t.Errorf("missing platform: %v", err)
	}
}

func bytesContains(s, sub string) bool { return bytes.Contains([]byte(s), []byte(sub)) }
