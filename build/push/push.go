// Package push publishes a .cimg to an OCI registry as an artifact
// (cimg-build push): one manifest per image, whose single layer is the
// whole .cimg file, and, when several arches share a tag, an OCI image
// index with one entry per platform. The layout is package ocipull's,
// which the device uses to find its arch's image again.
//
// The registry protocol is oras-go's; nothing here trusts the registry:
// the device checks the digest it was given and then the image's own
// hash tree and signatures.
package push

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"

	"github.com/opencontainers/go-digest"
	specs "github.com/opencontainers/image-spec/specs-go"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"oras.land/oras-go/v2/content"
	"oras.land/oras-go/v2/errdef"
	"oras.land/oras-go/v2/registry"
	"oras.land/oras-go/v2/registry/remote"

	"cimg.dev/cimg/format"
	"cimg.dev/cimg/internal/fetch"
	"cimg.dev/cimg/internal/ocipull"
	"cimg.dev/cimg/manifest"
)

// Options tune Push.
type Options struct {
	CA             string // a PEM file of CA certificates trusted besides the system's
	Creds          string // USER:PASSWORD; else from RegistryConfig
	RegistryConfig string // docker-style config.json (default ~/.docker/config.json)
	PlainHTTP      bool   // http:// (tests without TLS)
}

// Result is what Push published.
type Result struct {
	Manifests []digest.Digest // the images' manifests, in the order given
	Index     digest.Digest   // the tag's index, when the tag holds several arches; else ""
	Arches    []string        // the arches the tag holds now
	Ref       string
}

// Tagged is the digest the tag points at now.
func (r *Result) Tagged() digest.Digest {
	if r.Index != "" {
		return r.Index
	}
	return r.Manifests[0]
}

// image is one .cimg to publish: what its annotations say, its layer,
// and its manifest once made.
type image struct {
	path  string
	info  *ocipull.Config
	layer ocispec.Descriptor
	man   ocispec.Descriptor
	body  []byte
}

// Push uploads the .cimg files at images (one per arch, of one app) to
// ref (REGISTRY/REPO:TAG) and points the tag at them: at the manifest when
// one image is all the tag is to hold, else at an index of the arches the
// tag held plus these (their entries replaced).
//
// A registry has no compare-and-swap for tags, so two pushes of different
// arches to one tag at once could each write an index without the
// other's entry. Pushing all arches in one call writes one index; and the
// tag is read back after it is written: a push whose index another has
// replaced meanwhile fails, saying so, rather than leave its arch out
// unnoticed.
func Push(ctx context.Context, images []string, ref string, o Options) (*Result, error) {
	if len(images) == 0 {
		return nil, errors.New("push: no image")
	}
	r, err := registry.ParseReference(ref)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", ref, err)
	}
	if r.ValidateReferenceAsTag() != nil {
		return nil, fmt.Errorf("%s: push needs a tag (REGISTRY/REPO:TAG)", ref)
	}
	tag := r.Reference
	imgs := make([]*image, len(images))
	for i, path := range images {
		info, layer, err := describeImage(path)
		if err != nil {
			return nil, err
		}
		for _, o := range imgs[:i] {
			switch {
			case o.info.Name != info.Name:
				return nil, fmt.Errorf("%s is app %q, %s is app %q: one tag holds one app", o.path, o.info.Name, path, info.Name)
			case o.info.Arch == info.Arch:
				return nil, fmt.Errorf("%s and %s are both for %s: one tag holds one image per arch", o.path, path, info.Arch)
			}
		}
		imgs[i] = &image{path: path, info: info, layer: layer}
	}
	base, err := fetch.NewClient(o.CA) // the device's client: system roots plus --ca, proxies
	if err != nil {
		return nil, err
	}
	conf := o.RegistryConfig
	if conf == "" && o.Creds == "" {
		if home, err := os.UserHomeDir(); err == nil {
			conf = filepath.Join(home, ".docker", "config.json")
		}
	}
	client, err := ocipull.AuthClient(base, r.Registry, o.Creds, conf)
	if err != nil {
		return nil, err
	}
	repo := &remote.Repository{Client: client, Reference: r, PlainHTTP: o.PlainHTTP}
	ctx = ocipull.NoteRefusals(ctx) // the registry's refusals told as install tells them

	// What the tag holds decides the shape; read it before uploading so a
	// refusal (another app, a container image) costs no upload.
	old, err := current(ctx, repo, tag, imgs[0].info)
	if err != nil {
		return nil, ocipull.Describe(ctx, ref, err)
	}
	res := &Result{Ref: ref}
	for _, img := range imgs {
		if err := upload(ctx, repo, img); err != nil {
			return nil, ocipull.Describe(ctx, ref+" ("+img.path+")", err)
		}
		res.Manifests = append(res.Manifests, img.man.Digest)
	}
	uploaded()
	// Read again, now that the uploads (which take long) are done: what
	// another push wrote meanwhile is merged, not dropped.
	if old, err = current(ctx, repo, tag, imgs[0].info); err != nil {
		return nil, ocipull.Describe(ctx, ref, err)
	}
	entries := old
	for _, img := range imgs {
		entries = others(entries, img.info.Arch)
	}

	if len(entries) == 0 && len(imgs) == 1 {
		// Alone on the tag: the tag names the manifest itself, which any
		// OCI client can pull without knowing about indexes.
		if err := repo.PushReference(ctx, imgs[0].man, bytes.NewReader(imgs[0].body), tag); err != nil {
			return nil, ocipull.Describe(ctx, ref+" (push the manifest)", err)
		}
		res.Arches = []string{imgs[0].info.Arch}
		written()
		return res, readBack(ctx, repo, ref, tag, imgs[0].man.Digest)
	}
	for _, img := range imgs {
		if err := repo.Push(ctx, img.man, bytes.NewReader(img.body)); err != nil {
			return nil, ocipull.Describe(ctx, ref+" (push the manifest of "+img.path+")", err)
		}
		entry := img.man
		entry.ArtifactType = ocipull.ArtifactType
		p := ocipull.Platform(img.info.Arch)
		entry.Platform = &p
		entry.Annotations = map[string]string{ocipull.AnnotationArch: img.info.Arch, ocipull.AnnotationVersion: img.info.Version}
		entries = append(entries, entry)
	}
	idx := ocispec.Index{
		Versioned:    specs.Versioned{SchemaVersion: 2},
		MediaType:    ocispec.MediaTypeImageIndex,
		ArtifactType: ocipull.ArtifactType,
		Manifests:    entries,
		Annotations:  map[string]string{ocipull.AnnotationName: imgs[0].info.Name},
	}
	ib, err := json.Marshal(idx)
	if err != nil {
		return nil, err
	}
	idesc := content.NewDescriptorFromBytes(ocispec.MediaTypeImageIndex, ib)
	if err := repo.PushReference(ctx, idesc, bytes.NewReader(ib), tag); err != nil {
		return nil, ocipull.Describe(ctx, ref+" (push the index)", err)
	}
	res.Index = idesc.Digest
	res.Arches = ocipull.Arches(&idx)
	written()
	return res, readBack(ctx, repo, ref, tag, idesc.Digest)
}

// Tests' seams for another push landing at the two moments that matter:
// after the uploads, before the tag is read again (uploaded), and between
// writing the tag and reading it back (written).
var uploaded, written = func() {}, func() {}

// upload pushes img's layer and config blobs and makes its manifest.
func upload(ctx context.Context, repo *remote.Repository, img *image) error {
	if err := pushBlob(ctx, repo, img.layer, func() (io.ReadCloser, error) { return os.Open(img.path) }); err != nil {
		return fmt.Errorf("upload: %w", err)
	}
	cb, _ := json.Marshal(img.info)
	config := content.NewDescriptorFromBytes(ocipull.ConfigMediaType, cb)
	if err := pushBlob(ctx, repo, config, func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(cb)), nil }); err != nil {
		return fmt.Errorf("upload the config: %w", err)
	}
	m := ocispec.Manifest{
		Versioned:    specs.Versioned{SchemaVersion: 2},
		MediaType:    ocispec.MediaTypeImageManifest,
		ArtifactType: ocipull.ArtifactType,
		Config:       config,
		Layers:       []ocispec.Descriptor{img.layer},
		Annotations: map[string]string{
			ocispec.AnnotationTitle:    filepath.Base(img.path),
			ocipull.AnnotationName:     img.info.Name,
			ocipull.AnnotationVersion:  img.info.Version,
			ocipull.AnnotationArch:     img.info.Arch,
			ocipull.AnnotationRootHash: img.info.RootHash,
		},
	}
	var err error
	if img.body, err = json.Marshal(m); err != nil {
		return err
	}
	img.man = content.NewDescriptorFromBytes(ocispec.MediaTypeImageManifest, img.body)
	return nil
}

// readBack checks that the tag still names want after it was written.
func readBack(ctx context.Context, repo *remote.Repository, ref, tag string, want digest.Digest) error {
	desc, err := repo.Resolve(ctx, tag)
	if err != nil {
		return ocipull.Describe(ctx, ref+" (read the tag back)", err)
	}
	if desc.Digest != want {
		return fmt.Errorf("%s: another push rewrote the tag while this one wrote it (it names %s, not %s): this push's arches may be missing from it; push again, and push all arches of a tag in one command (cimg-build push A.cimg B.cimg REF)", ref, desc.Digest, want)
	}
	return nil
}

// describeImage reads what the annotations say from the image, after
// checking its hash tree: a registry is no place for a corrupt image.
func describeImage(path string) (*ocipull.Config, ocispec.Descriptor, error) {
	img, f, err := format.OpenFile(path)
	if err != nil {
		return nil, ocispec.Descriptor{}, err
	}
	defer f.Close()
	if err := img.VerifyPayload(); err != nil {
		return nil, ocispec.Descriptor{}, fmt.Errorf("%s: %w", path, err)
	}
	m, err := manifest.Parse(img.Manifest, path+" (embedded manifest)")
	if err != nil {
		return nil, ocispec.Descriptor{}, err
	}
	if m.Arch == "" {
		return nil, ocispec.Descriptor{}, fmt.Errorf("%s: the manifest names no arch; rebuild with --arch", path)
	}
	h := sha256.New()
	if _, err := io.Copy(h, io.NewSectionReader(f, 0, img.Size())); err != nil {
		return nil, ocispec.Descriptor{}, fmt.Errorf("%s: %w", path, err)
	}
	layer := ocispec.Descriptor{
		MediaType:   ocipull.LayerMediaType,
		Digest:      digest.NewDigestFromBytes(digest.SHA256, h.Sum(nil)),
		Size:        img.Size(),
		Annotations: map[string]string{ocispec.AnnotationTitle: filepath.Base(path)},
	}
	info := &ocipull.Config{Name: m.Name, Version: m.Version, Arch: m.Arch, RootHash: hex.EncodeToString(img.Footer.RootHash[:])}
	return info, layer, nil
}

// current returns the index entries the tag holds now (a lone manifest as
// one entry), nil when the tag is free. It refuses a tag that holds
// anything but cimg images of the same app: merging into it would hand a
// device another app, or break a container image's tag.
func current(ctx context.Context, repo *remote.Repository, tag string, info *ocipull.Config) ([]ocispec.Descriptor, error) {
	desc, err := repo.Resolve(ctx, tag)
	if errors.Is(err, errdef.ErrNotFound) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("look up the tag: %w", err)
	}
	b, err := content.FetchAll(ctx, repo, desc)
	if err != nil {
		return nil, fmt.Errorf("read what the tag holds: %w", err)
	}
	switch desc.MediaType {
	case ocispec.MediaTypeImageManifest:
		var m ocispec.Manifest
		if err := json.Unmarshal(b, &m); err != nil {
			return nil, fmt.Errorf("the tag's manifest: %w", err)
		}
		if m.ArtifactType != ocipull.ArtifactType {
			return nil, fmt.Errorf("the tag holds a %s, not a cimg image; refusing to replace it", kind(m.ArtifactType, m.Config.MediaType))
		}
		if n := m.Annotations[ocipull.AnnotationName]; n != info.Name {
			return nil, fmt.Errorf("the tag holds app %q, this image is %q; push it to its own tag", n, info.Name)
		}
		arch := m.Annotations[ocipull.AnnotationArch]
		p := ocipull.Platform(arch)
		desc.ArtifactType = m.ArtifactType
		desc.Platform = &p
		desc.Annotations = map[string]string{ocipull.AnnotationArch: arch, ocipull.AnnotationVersion: m.Annotations[ocipull.AnnotationVersion]}
		return []ocispec.Descriptor{desc}, nil
	case ocispec.MediaTypeImageIndex:
		var idx ocispec.Index
		if err := json.Unmarshal(b, &idx); err != nil {
			return nil, fmt.Errorf("the tag's index: %w", err)
		}
		if idx.ArtifactType != ocipull.ArtifactType {
			return nil, fmt.Errorf("the tag holds an index of %s, not of cimg images; refusing to replace it", kind(idx.ArtifactType, "container images"))
		}
		if n := idx.Annotations[ocipull.AnnotationName]; n != info.Name {
			return nil, fmt.Errorf("the tag holds app %q, this image is %q; push it to its own tag", n, info.Name)
		}
		return idx.Manifests, nil
	}
	return nil, fmt.Errorf("the tag holds a %s, not a cimg image; refusing to replace it", desc.MediaType)
}

// others are the entries of old for other platforms than arch's.
func others(old []ocispec.Descriptor, arch string) []ocispec.Descriptor {
	var keep []ocispec.Descriptor
	for _, e := range old {
		if !ocipull.Matches(e.Platform, arch) {
			keep = append(keep, e)
		}
	}
	return keep
}

func kind(artifactType, configType string) string {
	if artifactType != "" {
		return artifactType
	}
	if configType == ocispec.MediaTypeImageConfig {
		return "container image"
	}
	return configType
}

// pushBlob uploads a blob unless the registry has it already (a re-push
// of the same image, or another tag's).
func pushBlob(ctx context.Context, repo *remote.Repository, desc ocispec.Descriptor, open func() (io.ReadCloser, error)) error {
	if ok, err := repo.Blobs().Exists(ctx, desc); err != nil {
		return err
	} else if ok {
		return nil
	}
	r, err := open()
	if err != nil {
		return err
	}
	defer r.Close()
	return repo.Blobs().Push(ctx, desc, r)
}
