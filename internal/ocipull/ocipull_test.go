package ocipull

import (
	"bytes"
	"context"
	"encoding/json"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"

	specs "github.com/opencontainers/image-spec/specs-go"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"oras.land/oras-go/v2/content"
	"oras.land/oras-go/v2/registry/remote"
	"oras.land/oras-go/v2/registry/remote/errcode"

	"cimg.dev/cimg/internal/ocipull/registrytest"
	"cimg.dev/cimg/launcher"
)

func TestPlatforms(t *testing.T) {
	for _, c := range []struct {
		arch, os, cpu, variant string
	}{
		{"amd64", "linux", "amd64", ""},
		{"arm64", "linux", "arm64", ""},
		{"armhf", "linux", "arm", "v7"},
		{"i386", "linux", "386", ""},
		{"riscv64", "linux", "riscv64", ""},
	} {
		p := Platform(c.arch)
		if p.OS != c.os || p.Architecture != c.cpu || p.Variant != c.variant {
			t.Errorf("Platform(%s) = %+v", c.arch, p)
		}
		if !Matches(&p, c.arch) {
			t.Errorf("%s does not match its own platform", c.arch)
		}
		if got := archOf(&p); got != c.arch {
			t.Errorf("archOf(Platform(%s)) = %s", c.arch, got)
		}
	}
	for _, c := range []struct {
		p    ocispec.Platform
		arch string
		want bool
	}{
		{ocispec.Platform{OS: "linux", Architecture: "arm64", Variant: "v8"}, "arm64", true},
		{ocispec.Platform{OS: "linux", Architecture: "arm", Variant: "v6"}, "armhf", false},
		{ocispec.Platform{OS: "linux", Architecture: "arm"}, "armhf", false},
		{ocispec.Platform{OS: "windows", Architecture: "amd64"}, "amd64", false},
		{ocispec.Platform{OS: "linux", Architecture: "amd64"}, "arm64", false},
	} {
		if got := Matches(&c.p, c.arch); got != c.want {
			t.Errorf("Matches(%+v, %s) = %v", c.p, c.arch, got)
		}
	}
	if Matches(nil, "amd64") {
		t.Error("an entry without a platform matched")
	}
	if HostArch() != launcher.HostArch() {
		t.Errorf("HostArch() = %s, the launcher says %s", HostArch(), launcher.HostArch())
	}
}

func TestCheck(t *testing.T) {
	p := filepath.Join(t.TempDir(), "f")
	b := []byte("a cimg, say")
	os.WriteFile(p, b, 0o600)
	d := content.NewDescriptorFromBytes(LayerMediaType, b)
	if err := Check(p, d); err != nil {
		t.Errorf("the right file: %v", err)
	}
	d.Size++
	if err := Check(p, d); err == nil || !strings.Contains(err.Error(), "bytes") {
		t.Errorf("a wrong size: %v", err)
	}
	os.WriteFile(p, []byte("a cimg, sax"), 0o600)
	d.Size--
	if err := Check(p, d); err == nil || !strings.Contains(err.Error(), "digest") {
		t.Errorf("other bytes: %v", err)
	}
}

// TestResolveRefusesOthers: a tag that holds a container image, or an
// index of them, is refused naming what it holds; a cimg is found.
func TestResolveRefusesOthers(t *testing.T) {
	r := registrytest.Start(t)
	ctx := context.Background()
	client, err := AuthClient(r.Client, r.Addr, r.Creds(), "")
	if err != nil {
		t.Fatal(err)
	}
	repo, err := remote.NewRepository(r.Addr + "/other/thing")
	if err != nil {
		t.Fatal(err)
	}
	repo.Client = client
	put := func(mediaType string, b []byte, tag string) ocispec.Descriptor {
		t.Helper()
		d := content.NewDescriptorFromBytes(mediaType, b)
		var err error
		if tag != "" {
			err = repo.PushReference(ctx, d, bytes.NewReader(b), tag)
		} else {
			err = repo.Push(ctx, d, bytes.NewReader(b))
		}
		if err != nil {
			t.Fatalf("push %s: %v", mediaType, err)
		}
		return d
	}
	manifest := func(artifactType, configType, layerType, tag string) ocispec.Descriptor {
		m := ocispec.Manifest{
			Versioned: specs.Versioned{SchemaVersion: 2}, MediaType: ocispec.MediaTypeImageManifest, ArtifactType: artifactType,
			Config:      put(configType, []byte("{}"), ""),
			Layers:      []ocispec.Descriptor{put(layerType, []byte("layer"), "")},
			Annotations: map[string]string{AnnotationArch: "amd64"},
		}
		b, _ := json.Marshal(m)
		return put(ocispec.MediaTypeImageManifest, b, tag)
	}
	container := manifest("", ocispec.MediaTypeImageConfig, ocispec.MediaTypeImageLayerGzip, "container")
	manifest(ArtifactType, ConfigMediaType, ocispec.MediaTypeImageLayerGzip, "twisted")
	good := manifest(ArtifactType, ConfigMediaType, LayerMediaType, "good")
	p := Platform("amd64")
	container.Platform = &p
	idx, _ := json.Marshal(ocispec.Index{Versioned: specs.Versioned{SchemaVersion: 2}, MediaType: ocispec.MediaTypeImageIndex,
		Manifests: []ocispec.Descriptor{container}})
	put(ocispec.MediaTypeImageIndex, idx, "multi")

	o := Options{Client: r.Client, Creds: r.Creds(), Arch: "amd64"}
	for tag, want := range map[string]string{
		"container": "other/thing:container holds a container image, not a cimg image",
		"multi":     "other/thing:multi holds a container image, not a cimg image",
		"twisted":   "a cimg manifest has one layer of " + LayerMediaType + ", this one has [" + ocispec.MediaTypeImageLayerGzip + "]",
	} {
		_, err := Resolve(ctx, r.Addr+"/other/thing:"+tag, o)
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%s: %v; want %q", tag, err, want)
		}
	}
	b, err := Resolve(ctx, r.Addr+"/other/thing:good", o)
	if err != nil {
		t.Fatalf("a cimg: %v", err)
	}
	if b.Manifest.Digest != good.Digest || b.URL != "https://"+r.Addr+"/v2/other/thing/blobs/"+b.Desc.Digest.String() {
		t.Errorf("a cimg: %+v", b)
	}
	if _, err := Resolve(ctx, r.Addr+"/other/thing:good", Options{Client: r.Client, Creds: r.Creds(), Arch: "arm64"}); err == nil ||
		!strings.Contains(err.Error(), "is an image for amd64, this machine is arm64") {
		t.Errorf("a lone manifest of another arch: %v", err)
	}
}

// TestChallengeError: the error parameter of a Bearer challenge, which
// tells an expired token (invalid_token) from one that grants too little
// (insufficient_scope), whatever the quoted scope before it holds.
func TestChallengeError(t *testing.T) {
	for h, want := range map[string]string{
		`Bearer realm="https://a/token",service="r",scope="repository:x:pull,push",error="invalid_token"`: "invalid_token",
		`Bearer realm="https://a/token",service="r",error="insufficient_scope"`:                           "insufficient_scope",
		`Bearer error="invalid_token"`:                                      "invalid_token",
		`Bearer realm="https://a/token",service="r"`:                        "",
		`Bearer realm="https://a/token",my_error="x",error_description="y"`: "",
		`Basic realm="cimg-test"`:                                           "",
		``:                                                                  "",
	} {
		if got := challengeError(h); got != want {
			t.Errorf("challengeError(%q) = %q, want %q", h, got, want)
		}
	}
}

// TestTokenServer: a refusal is the token server's unless its URL is one
// of the registry API's, also when the realm is under /v2/ (quay.io's).
func TestTokenServer(t *testing.T) {
	for u, want := range map[string]bool{
		"https://auth.docker.io/token?service=registry.docker.io": true,
		"https://quay.io/v2/auth?service=quay.io":                 true,
		"https://r.example/v2/":                                   false,
		"https://r.example/v2/apps/probe/manifests/1":             false,
		"https://r.example/v2/apps/probe/blobs/sha256:00":         false,
		"https://r.example/v2/apps/probe/tags/list":               false,
	} {
		p, err := url.Parse(u)
		if err != nil {
			t.Fatal(err)
		}
		if got := tokenServer(&errcode.ErrorResponse{URL: p, StatusCode: 401}); got != want {
			t.Errorf("tokenServer(%s) = %v, want %v", u, got, want)
		}
	}
}
