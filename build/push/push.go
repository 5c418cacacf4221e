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
	Manifest digest.Digest // the image's manifest
	Index    digest.Digest // the tag's index, when the tag holds several arches; else ""
	Arches   []string      // the arches the tag holds now
	Ref      string
}

// Tagged is the digest the tag points at now.
func (r *Result) Tagged() digest.Digest {
	if r.Index != "" {
		return r.Index
	}
	return r.Manifest
}

// Push uploads the .cimg at image to ref (REGISTRY/REPO:TAG) and points
// the tag at it: at its manifest when the tag was free or held only this
// arch, else at an index of the arches it held plus this one (this
// arch's entry replaced).
func Push(ctx context.Context, image, ref string, o Options) (*Result, error) {
	r, err := registry.ParseReference(ref)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", ref, err)
	}
	if r.ValidateReferenceAsTag() != nil {
		return nil, fmt.Errorf("%s: push needs a tag (REGISTRY/REPO:TAG)", ref)
	}
	tag := r.Reference
	info, layer, err := describeImage(image)
	if err != nil {
		return nil, err
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
	old, err := current(ctx, repo, tag, info)
	if err != nil {
		return nil, ocipull.Describe(ctx, ref, err)
	}

	if err := pushBlob(ctx, repo, layer, func() (io.ReadCloser, error) { return os.Open(image) }); err != nil {
		return nil, ocipull.Describe(ctx, ref+" (upload "+image+")", err)
	}
	cb, _ := json.Marshal(info)
	config := content.NewDescriptorFromBytes(ocipull.ConfigMediaType, cb)
	if err := pushBlob(ctx, repo, config, func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(cb)), nil }); err != nil {
		return nil, ocipull.Describe(ctx, ref+" (upload the config)", err)
	}
	m := ocispec.Manifest{
		Versioned:    specs.Versioned{SchemaVersion: 2},
		MediaType:    ocispec.MediaTypeImageManifest,
		ArtifactType: ocipull.ArtifactType,
		Config:       config,
		Layers:       []ocispec.Descriptor{layer},
		Annotations: map[string]string{
			ocispec.AnnotationTitle:    filepath.Base(image),
			ocipull.AnnotationName:     info.Name,
			ocipull.AnnotationVersion:  info.Version,
			ocipull.AnnotationArch:     info.Arch,
			ocipull.AnnotationRootHash: info.RootHash,
		},
	}
	mb, err := json.Marshal(m)
	if err != nil {
		return nil, err
	}
	mdesc := content.NewDescriptorFromBytes(ocispec.MediaTypeImageManifest, mb)
	res := &Result{Manifest: mdesc.Digest, Ref: ref}

	entries := others(old, info.Arch)
	if len(entries) == 0 {
		// Alone on the tag: the tag names the manifest itself, which any
		// OCI client can pull without knowing about indexes.
		if err := repo.PushReference(ctx, mdesc, bytes.NewReader(mb), tag); err != nil {
			return nil, ocipull.Describe(ctx, ref+" (push the manifest)", err)
		}
		res.Arches = []string{info.Arch}
		return res, nil
	}
	if err := repo.Push(ctx, mdesc, bytes.NewReader(mb)); err != nil {
		return nil, ocipull.Describe(ctx, ref+" (push the manifest)", err)
	}
	entry := mdesc
	entry.ArtifactType = ocipull.ArtifactType
	p := ocipull.Platform(info.Arch)
	entry.Platform = &p
	entry.Annotations = map[string]string{ocipull.AnnotationArch: info.Arch, ocipull.AnnotationVersion: info.Version}
	idx := ocispec.Index{
		Versioned:    specs.Versioned{SchemaVersion: 2},
		MediaType:    ocispec.MediaTypeImageIndex,
		ArtifactType: ocipull.ArtifactType,
		Manifests:    append(entries, entry),
		Annotations:  map[string]string{ocipull.AnnotationName: info.Name},
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
	return res, nil
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
