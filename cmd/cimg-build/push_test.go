package main

// cimg-build push against a real registry (Debian's docker-registry on
// 127.0.0.1 with TLS and basic auth, see internal/ocipull/registrytest).

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	specs "github.com/opencontainers/image-spec/specs-go"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"oras.land/oras-go/v2/content"
	"oras.land/oras-go/v2/registry/remote"

	"cimg.dev/cimg/internal/ocipull"
	"cimg.dev/cimg/internal/ocipull/registrytest"
)

// helloImage builds an image of arch whose entrypoint is a script (no
// ELF, so any arch goes): push only reads the manifest's arch.
func helloImage(t *testing.T, name, version, arch string) string {
	t.Helper()
	dir := t.TempDir()
	os.MkdirAll(filepath.Join(dir, "root/usr/bin"), 0o755)
	if err := os.WriteFile(filepath.Join(dir, "root/usr/bin/hello"), []byte("#!/bin/sh\necho "+arch+"\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	img := filepath.Join(dir, name+"-"+arch+".cimg")
	mustCLI(t, "-q", "--rootfs", filepath.Join(dir, "root"), "--entrypoint", "/usr/bin/hello",
		"--name", name, "--version", version, "--arch", arch, "-o", img)
	return img
}

func pushCLI(t *testing.T, r *registrytest.Registry, img, ref string, extra ...string) (string, string, int) {
	t.Helper()
	args := append([]string{"push", "--ca", r.CAFile, "--creds", r.Creds()}, extra...)
	return cli(t, nil, append(args, img, r.Addr+"/"+ref)...)
}

func TestPushRegistry(t *testing.T) {
	r := registrytest.Start(t)
	amd := helloImage(t, "hello", "1.0.0", "amd64")

	// One arch: the tag names the manifest, annotated from the image.
	out, errs, code := pushCLI(t, r, amd, "apps/hello:1")
	if code != 0 {
		t.Fatalf("push: exit %d: %s", code, errs)
	}
	dgst := strings.TrimSpace(out)
	if !strings.HasPrefix(dgst, "sha256:") || len(dgst) != 71 {
		t.Errorf("push printed %q, want the digest", out)
	}
	var m ocispec.Manifest
	if ct := r.Manifest(t, "apps/hello", "1", &m); ct != ocispec.MediaTypeImageManifest {
		t.Fatalf("the tag holds a %s", ct)
	}
	var byDigest ocispec.Manifest
	r.Manifest(t, "apps/hello", dgst, &byDigest)
	if m.ArtifactType != ocipull.ArtifactType || len(m.Layers) != 1 || m.Layers[0].MediaType != ocipull.LayerMediaType ||
		m.Config.MediaType != ocipull.ConfigMediaType {
		t.Errorf("manifest: %+v", m)
	}
	st, _ := os.Stat(amd)
	if m.Layers[0].Size != st.Size() {
		t.Errorf("layer size %d, the image is %d bytes", m.Layers[0].Size, st.Size())
	}
	want := map[string]string{"org.opencontainers.image.title": filepath.Base(amd), "org.cimg.name": "hello",
		"org.cimg.version": "1.0.0", "org.cimg.arch": "amd64"}
	for k, v := range want {
		if m.Annotations[k] != v {
			t.Errorf("annotation %s = %q, want %q", k, m.Annotations[k], v)
		}
	}
	if len(m.Annotations["org.cimg.root-hash"]) != 64 {
		t.Errorf("root-hash annotation %q", m.Annotations["org.cimg.root-hash"])
	}

	// More arches: the tag becomes an index, one entry per platform.
	for _, arch := range []string{"arm64", "armhf"} {
		if _, errs, code := pushCLI(t, r, helloImage(t, "hello", "1.0.0", arch), "apps/hello:1"); code != 0 {
			t.Fatalf("push %s: exit %d: %s", arch, code, errs)
		}
	}
	// A re-push of amd64 (a new build) replaces its entry.
	amd2 := helloImage(t, "hello", "1.0.1", "amd64")
	out, errs, code = pushCLI(t, r, amd2, "apps/hello:1")
	if code != 0 {
		t.Fatalf("re-push amd64: exit %d: %s", code, errs)
	}
	var idx ocispec.Index
	if ct := r.Manifest(t, "apps/hello", "1", &idx); ct != ocispec.MediaTypeImageIndex {
		t.Fatalf("after three arches the tag holds a %s", ct)
	}
	if strings.TrimSpace(out) == dgst {
		t.Errorf("the re-push printed the old digest")
	}
	var plats []string
	for _, e := range idx.Manifests {
		p := e.Platform.OS + "/" + e.Platform.Architecture
		if e.Platform.Variant != "" {
			p += "/" + e.Platform.Variant
		}
		plats = append(plats, p)
		if e.ArtifactType != ocipull.ArtifactType {
			t.Errorf("entry %s: artifactType %q", p, e.ArtifactType)
		}
		var em ocispec.Manifest
		r.Manifest(t, "apps/hello", e.Digest.String(), &em)
		if got := em.Annotations["org.cimg.arch"]; ocipull.Platform(got).Architecture != e.Platform.Architecture {
			t.Errorf("entry %s holds an image for %s", p, got)
		}
		if e.Platform.Architecture == "amd64" && em.Annotations["org.cimg.version"] != "1.0.1" {
			t.Errorf("the amd64 entry is version %s, want the re-pushed 1.0.1", em.Annotations["org.cimg.version"])
		}
	}
	slices.Sort(plats)
	if !slices.Equal(plats, []string{"linux/amd64", "linux/arm/v7", "linux/arm64"}) {
		t.Errorf("index platforms %v", plats)
	}

	// Refusals, each with one clear error.
	if _, errs, code := pushCLI(t, r, helloImage(t, "other", "1.0.0", "i386"), "apps/hello:1"); code == 0 || !strings.Contains(errs, `the tag holds app "hello", this image is "other"`) {
		t.Errorf("another app onto the tag: exit %d: %s", code, errs)
	}
	_, errs, code = cli(t, nil, "push", "--ca", r.CAFile, "--creds", r.User+":wrong", amd, r.Addr+"/apps/hello:2")
	if code == 0 || !strings.Contains(errs, "401") {
		t.Errorf("wrong password: exit %d: %s", code, errs)
	}
	_, errs, code = cli(t, nil, "push", "--creds", r.Creds(), amd, r.Addr+"/apps/hello:2")
	if code == 0 || !strings.Contains(errs, "certificate") {
		t.Errorf("without --ca: exit %d: %s", code, errs)
	}
	if _, errs, code := pushCLI(t, r, amd, "apps/hello@"+dgst); code == 0 || !strings.Contains(errs, "push needs a tag") {
		t.Errorf("a digest reference: exit %d: %s", code, errs)
	}
	// A tag that holds a container image is not ours to replace.
	putContainerImage(t, r, "apps/hello", "container")
	if _, errs, code := pushCLI(t, r, amd, "apps/hello:container"); code == 0 ||
		!strings.Contains(errs, "the tag holds a container image, not a cimg image; refusing to replace it") {
		t.Errorf("onto a container image's tag: exit %d: %s", code, errs)
	}
	var still ocispec.Manifest
	if r.Manifest(t, "apps/hello", "container", &still); still.Config.MediaType != ocispec.MediaTypeImageConfig {
		t.Errorf("the container image's tag changed: %+v", still)
	}
}

// putContainerImage pushes a (tiny, fake) container image to repo:tag.
func putContainerImage(t *testing.T, r *registrytest.Registry, repo, tag string) {
	t.Helper()
	ctx := context.Background()
	client, err := ocipull.AuthClient(r.Client, r.Addr, r.Creds(), "")
	if err != nil {
		t.Fatal(err)
	}
	rp, err := remote.NewRepository(r.Addr + "/" + repo)
	if err != nil {
		t.Fatal(err)
	}
	rp.Client = client
	put := func(mediaType string, b []byte, tag string) ocispec.Descriptor {
		t.Helper()
		d := content.NewDescriptorFromBytes(mediaType, b)
		if tag == "" {
			err = rp.Push(ctx, d, bytes.NewReader(b))
		} else {
			err = rp.PushReference(ctx, d, bytes.NewReader(b), tag)
		}
		if err != nil {
			t.Fatal(err)
		}
		return d
	}
	m, _ := json.Marshal(ocispec.Manifest{
		Versioned: specs.Versioned{SchemaVersion: 2}, MediaType: ocispec.MediaTypeImageManifest,
		Config: put(ocispec.MediaTypeImageConfig, []byte(`{"architecture":"amd64","os":"linux"}`), ""),
		Layers: []ocispec.Descriptor{put(ocispec.MediaTypeImageLayerGzip, []byte("not really a tarball"), "")},
	})
	put(ocispec.MediaTypeImageManifest, m, tag)
}
