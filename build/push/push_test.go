package push

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"cimg.dev/cimg/internal/ocipull"
	"cimg.dev/cimg/internal/ocipull/registrytest"
)

// cimgBuild is the cimg-build binary these tests make their images with.
var cimgBuild string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "cimg-push-test-")
	if err != nil {
		panic(err)
	}
	cimgBuild = filepath.Join(dir, "cimg-build")
	if out, err := exec.Command("go", "build", "-o", cimgBuild, "cimg.dev/cimg/cmd/cimg-build").CombinedOutput(); err != nil {
		os.RemoveAll(dir)
		panic("build cimg-build: " + err.Error() + "\n" + string(out))
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// testImage builds a .cimg of app name for arch (a script entrypoint: any
// arch goes, push reads only the manifest).
func testImage(t *testing.T, name, arch string) string {
	t.Helper()
	dir := t.TempDir()
	os.MkdirAll(filepath.Join(dir, "root/bin"), 0o755)
	if err := os.WriteFile(filepath.Join(dir, "root/bin/hello"), []byte("#!/bin/sh\necho "+arch+"\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	img := filepath.Join(dir, name+"-"+arch+".cimg")
	if out, err := exec.Command(cimgBuild, "-q", "--rootfs", filepath.Join(dir, "root"), "--entrypoint", "/bin/hello",
		"--name", name, "--version", "1.0.0", "--arch", arch, "-o", img).CombinedOutput(); err != nil {
		t.Fatalf("cimg-build: %v\n%s", err, out)
	}
	return img
}

// arches is what the tag holds now, sorted.
func arches(t *testing.T, r *registrytest.Registry, repo, tag string) []string {
	t.Helper()
	var idx ocispec.Index
	if ct := r.Manifest(t, repo, tag, &idx); ct != ocispec.MediaTypeImageIndex {
		var m ocispec.Manifest
		r.Manifest(t, repo, tag, &m)
		return []string{m.Annotations[ocipull.AnnotationArch]}
	}
	a := ocipull.Arches(&idx)
	slices.Sort(a)
	return a
}

// TestPushMergesWhatLandedDuringUpload: another arch pushed to the tag
// while this push uploaded (the slow part) is in the index this push
// writes: the tag is read again after the uploads.
func TestPushMergesWhatLandedDuringUpload(t *testing.T) {
	r := registrytest.Start(t)
	o := Options{CA: r.CAFile, Creds: r.Creds()}
	ref := r.Addr + "/apps/hello:1"
	amd, arm := testImage(t, "hello", "amd64"), testImage(t, "hello", "arm64")
	uploaded = func() {
		uploaded = func() {}
		if _, err := Push(context.Background(), []string{arm}, ref, o); err != nil {
			t.Errorf("the other push: %v", err)
		}
	}
	t.Cleanup(func() { uploaded = func() {} })
	if _, err := Push(context.Background(), []string{amd}, ref, o); err != nil {
		t.Fatal(err)
	}
	if got := arches(t, r, "apps/hello", "1"); !slices.Equal(got, []string{"amd64", "arm64"}) {
		t.Errorf("the tag holds %v, want amd64 and arm64", got)
	}
}

// TestPushDetectsRewrittenTag: another push that replaces the tag between
// this push's write and its read-back makes this push fail, saying so,
// instead of leaving its arch out unnoticed (registries have no
// compare-and-swap for tags).
func TestPushDetectsRewrittenTag(t *testing.T) {
	r := registrytest.Start(t)
	o := Options{CA: r.CAFile, Creds: r.Creds()}
	ref := r.Addr + "/apps/hello:1"
	amd, arm, armhf := testImage(t, "hello", "amd64"), testImage(t, "hello", "arm64"), testImage(t, "hello", "armhf")
	if _, err := Push(context.Background(), []string{armhf}, ref, o); err != nil {
		t.Fatal(err)
	}
	// The other push read the tag before ours wrote it: it writes an index
	// without amd64.
	written = func() {
		written = func() {}
		if _, err := Push(context.Background(), []string{armhf, arm}, r.Addr+"/apps/hello:1", o); err != nil {
			t.Errorf("the other push: %v", err)
		}
	}
	t.Cleanup(func() { written = func() {} })
	_, err := Push(context.Background(), []string{amd}, ref, o)
	if err == nil || !strings.Contains(err.Error(), "another push rewrote the tag") || !strings.Contains(err.Error(), "push again") {
		t.Fatalf("push whose index was replaced: %v", err)
	}
	// Pushed again, as the error says: every arch is there.
	if _, err := Push(context.Background(), []string{amd}, ref, o); err != nil {
		t.Fatal(err)
	}
	if got := arches(t, r, "apps/hello", "1"); !slices.Equal(got, []string{"amd64", "arm64", "armhf"}) {
		t.Errorf("the tag holds %v", got)
	}
}

// TestPushSeveralArchesAtOnce: one call, one index of every image; two
// images of one arch, or of two apps, are refused before any upload.
func TestPushSeveralArchesAtOnce(t *testing.T) {
	r := registrytest.Start(t)
	o := Options{CA: r.CAFile, Creds: r.Creds()}
	ref := r.Addr + "/apps/hello:1"
	imgs := []string{testImage(t, "hello", "amd64"), testImage(t, "hello", "arm64"), testImage(t, "hello", "armhf")}
	res, err := Push(context.Background(), imgs, ref, o)
	if err != nil {
		t.Fatal(err)
	}
	if res.Index == "" || len(res.Manifests) != 3 {
		t.Errorf("result %+v: want an index and three manifests", res)
	}
	if got := arches(t, r, "apps/hello", "1"); !slices.Equal(got, []string{"amd64", "arm64", "armhf"}) {
		t.Errorf("the tag holds %v", got)
	}
	if _, err := Push(context.Background(), []string{imgs[0], testImage(t, "hello", "amd64")}, r.Addr+"/apps/hello:2", o); err == nil || !strings.Contains(err.Error(), "both for amd64") {
		t.Errorf("two amd64 images: %v", err)
	}
	if _, err := Push(context.Background(), []string{imgs[0], testImage(t, "other", "arm64")}, r.Addr+"/apps/hello:2", o); err == nil || !strings.Contains(err.Error(), "one tag holds one app") {
		t.Errorf("two apps: %v", err)
	}
}
