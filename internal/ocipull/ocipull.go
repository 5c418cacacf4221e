// Package ocipull finds the .cimg that an OCI registry reference holds
// for one arch: it resolves the tag or digest, picks the index entry of
// the arch, checks that the manifest is a cimg artifact, and says which
// blob to download, from where, with which authenticating client. The
// download itself is the caller's (package fetch, resumable); Check then
// holds the file to the descriptor's digest and size.
//
// The artifact layout (written by cimg-build push, build/push): an OCI
// image manifest with artifactType ArtifactType, a small JSON config of
// ConfigMediaType, and one layer, the whole .cimg file, of
// LayerMediaType; several arches under one tag are an OCI image index
// with one entry per platform (Platform).
//
// This package is on the device side: it must not grow the launcher by
// much, so it uses oras-go's registry client only (no
// go-containerregistry).
package ocipull

import (
	"context"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"runtime"
	"slices"
	"strings"
	"sync"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"oras.land/oras-go/v2/content"
	"oras.land/oras-go/v2/errdef"
	"oras.land/oras-go/v2/registry"
	"oras.land/oras-go/v2/registry/remote"
	"oras.land/oras-go/v2/registry/remote/auth"
	"oras.land/oras-go/v2/registry/remote/credentials"
	"oras.land/oras-go/v2/registry/remote/errcode"
	"oras.land/oras-go/v2/registry/remote/retry"
)

// The media types of a cimg artifact. They are ours (vnd.cimg), so no
// container tool mistakes a .cimg for a layer tarball.
const (
	ArtifactType    = "application/vnd.cimg.image.v1"
	ConfigMediaType = "application/vnd.cimg.config.v1+json"
	LayerMediaType  = "application/vnd.cimg.image.v1.squashfs"
)

// The manifest annotations cimg-build push writes (besides
// ocispec.AnnotationTitle, the file's name).
const (
	AnnotationName     = "org.cimg.name"
	AnnotationVersion  = "org.cimg.version"
	AnnotationArch     = "org.cimg.arch"
	AnnotationRootHash = "org.cimg.root-hash"
)

// Platform is the OCI platform of a cimg manifest arch (amd64, arm64,
// armhf, i386, ...): armhf is arm/v7, i386 is 386; any other name is
// Go's spelling already.
func Platform(arch string) ocispec.Platform {
	p := ocispec.Platform{OS: "linux", Architecture: arch}
	switch arch {
	case "armhf":
		p.Architecture, p.Variant = "arm", "v7"
	case "i386":
		p.Architecture = "386"
	}
	return p
}

// Matches says whether an index entry's platform is arch's. An arm64
// entry may carry the variant v8 (as docker writes it) or none.
func Matches(p *ocispec.Platform, arch string) bool {
	if p == nil {
		return false
	}
	want := Platform(arch)
	if p.OS != want.OS || p.Architecture != want.Architecture {
		return false
	}
	if want.Architecture == "arm64" {
		return p.Variant == "" || p.Variant == "v8"
	}
	return p.Variant == want.Variant
}

// archOf names an index entry's platform the manifest's way, for
// messages (arm/v7 → armhf).
func archOf(p *ocispec.Platform) string {
	if p == nil {
		return "(no platform)"
	}
	switch {
	case p.Architecture == "arm" && p.Variant == "v7":
		return "armhf"
	case p.Architecture == "386":
		return "i386"
	case p.Variant != "" && p.Architecture != "arm64":
		return p.Architecture + "/" + p.Variant
	}
	return p.Architecture
}

// Config is the artifact's config blob: what the image is, readable
// without downloading it.
type Config struct {
	Name     string `json:"name"`
	Version  string `json:"version"`
	Arch     string `json:"arch"`
	RootHash string `json:"root_hash"`
}

// AuthClient is an HTTP client for the registry at host: base for the
// transport (TLS roots, proxies; nil: http.DefaultClient), with the
// credentials of creds (USER:PASSWORD) when set, else those that the
// docker-style config.json at configFile has for the registry's host (a
// missing file: anonymous). oras-go's auth.Client answers the registry's
// challenge, basic or bearer token, and caches what it got for the next
// requests. Its transport notes why the registry refuses a bearer token,
// for Resolve's errors (noteRefusals).
func AuthClient(base *http.Client, host, creds, configFile string) (*auth.Client, error) {
	if base == nil {
		base = http.DefaultClient
	}
	noting := *base
	noting.Transport = noteRefusals{base.Transport}
	c := &auth.Client{Client: &noting, Cache: auth.NewCache(), Header: http.Header{"User-Agent": {"cimg"}}}
	switch {
	case creds != "":
		user, pass, ok := strings.Cut(creds, ":")
		if !ok || user == "" {
			return nil, errors.New("credentials: want USER:PASSWORD")
		}
		// For host only: oras asks by the registry's host also when it
		// fetches a token from a realm elsewhere, and nothing else (a
		// redirect to a CDN) is to see the password.
		c.Credential = auth.StaticCredential(host, auth.Credential{Username: user, Password: pass})
	case configFile != "":
		store, err := credentials.NewStore(configFile, credentials.StoreOptions{})
		if err != nil {
			return nil, fmt.Errorf("registry credentials %s: %w", configFile, err)
		}
		c.Credential = credentials.Credential(store)
	}
	return c, nil
}

// tokenNoteKey is the context key of a *tokenNote.
type tokenNoteKey struct{}

// tokenNote is why the registry refused the last request that carried a
// bearer token: the error parameter of its challenge (RFC 6750 §3:
// invalid_token for one expired or not trusted, insufficient_scope for
// one that grants too little), "" when it was not refused. oras' error
// keeps only the status and body, which distribution makes the same for
// both, so the transport notes it for Describe.
type tokenNote struct {
	mu     sync.Mutex
	reason string
}

// tokenRefusal is the reason noted in ctx's tokenNote ("" without one).
func tokenRefusal(ctx context.Context) string {
	n, _ := ctx.Value(tokenNoteKey{}).(*tokenNote)
	if n == nil {
		return ""
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.reason
}

// noteRefusals is AuthClient's transport: rt, noting the refusals of
// bearer tokens into the request context's tokenNote (if any).
type noteRefusals struct{ rt http.RoundTripper }

func (n noteRefusals) RoundTrip(req *http.Request) (*http.Response, error) {
	rt := n.rt
	if rt == nil {
		rt = http.DefaultTransport
	}
	resp, err := rt.RoundTrip(req)
	note, _ := req.Context().Value(tokenNoteKey{}).(*tokenNote)
	if err == nil && note != nil && strings.HasPrefix(req.Header.Get("Authorization"), "Bearer ") {
		reason := ""
		if resp.StatusCode == http.StatusUnauthorized {
			reason = challengeError(resp.Header.Get("Www-Authenticate"))
		}
		note.mu.Lock()
		note.reason = reason
		note.mu.Unlock()
	}
	return resp, err
}

// challengeError is the error parameter of a Bearer challenge
// (`Bearer realm="...",error="invalid_token"`), "" without one.
func challengeError(h string) string {
	for i := 0; ; {
		j := strings.Index(h[i:], `error="`)
		if j < 0 {
			return ""
		}
		i += j
		if i > 0 && (h[i-1] == ',' || h[i-1] == ' ') {
			v, _, _ := strings.Cut(h[i+len(`error="`):], `"`)
			return v
		}
		i += len(`error="`)
	}
}

// Options tune Resolve.
type Options struct {
	Client     *http.Client // the base client (TLS roots); nil: http.DefaultClient
	Creds      string       // USER:PASSWORD, else from ConfigFile
	ConfigFile string       // docker-style config.json; missing: anonymous
	Arch       string       // the manifest-style arch to pick (launcher.HostArch())
	PlainHTTP  bool         // http:// instead of https:// (tests only)
}

// Blob is the .cimg layer Resolve found: what to download and how.
type Blob struct {
	Desc     ocispec.Descriptor // the layer: digest and size to check
	URL      string             // the registry's blob URL
	Client   *auth.Client       // sends the registry's credentials with each request
	Manifest ocispec.Descriptor // the manifest it came from
	ref      registry.Reference
}

// Context is ctx with the repository's pull scope, so a bearer token
// fetched for the manifests serves the blob requests too.
func (b *Blob) Context(ctx context.Context) context.Context {
	return auth.AppendRepositoryScope(ctx, b.ref, auth.ActionPull)
}

// Resolve finds the .cimg that ref (REGISTRY/REPO:TAG or
// REGISTRY/REPO@sha256:..., without oci://) holds for o.Arch. Errors
// name ref and say what it holds when that is not a cimg for o.Arch.
func Resolve(ctx context.Context, ref string, o Options) (*Blob, error) {
	r, err := registry.ParseReference(ref)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", ref, err)
	}
	if r.Reference == "" {
		return nil, fmt.Errorf("%s: no tag or digest (want REGISTRY/REPO:TAG or REGISTRY/REPO@sha256:...)", ref)
	}
	client, err := AuthClient(o.Client, r.Registry, o.Creds, o.ConfigFile)
	if err != nil {
		return nil, err
	}
	ctx = NoteRefusals(ctx)
	// The manifests' requests are retried on 5xx, 429 and resets (oras'
	// policy); the blob's are fetch's to retry and resume, so its client
	// has none. Both share the token cache: one challenge serves all.
	meta := *client
	meta.Client = withRetries(client.Client)
	repo := &remote.Repository{Client: &meta, Reference: r, PlainHTTP: o.PlainHTTP}
	desc, err := repo.Resolve(ctx, r.Reference)
	if err != nil {
		return nil, Describe(ctx, ref, err)
	}
	mdesc, m, err := pick(ctx, repo, ref, desc, o.Arch)
	if err != nil {
		return nil, err
	}
	if err := checkManifest(ref, m, o.Arch); err != nil {
		return nil, err
	}
	layer := m.Layers[0]
	if layer.Digest.Algorithm() != digest.SHA256 || layer.Digest.Validate() != nil {
		return nil, fmt.Errorf("%s: the image's blob digest %q is not a sha256 digest", ref, layer.Digest)
	}
	if layer.Size <= 0 {
		return nil, fmt.Errorf("%s: the image's blob has size %d", ref, layer.Size)
	}
	scheme := "https"
	if o.PlainHTTP {
		scheme = "http"
	}
	return &Blob{
		Desc:     layer,
		URL:      fmt.Sprintf("%s://%s/v2/%s/blobs/%s", scheme, r.Host(), r.Repository, layer.Digest),
		Client:   client,
		Manifest: mdesc,
		ref:      r,
	}, nil
}

// pick follows an index to the entry of arch and returns that manifest;
// a manifest is returned as it is (checkManifest checks its arch).
func pick(ctx context.Context, repo *remote.Repository, ref string, desc ocispec.Descriptor, arch string) (ocispec.Descriptor, *ocispec.Manifest, error) {
	b, err := content.FetchAll(ctx, repo, desc)
	if err != nil {
		return desc, nil, Describe(ctx, ref, err)
	}
	switch desc.MediaType {
	case ocispec.MediaTypeImageManifest:
	case ocispec.MediaTypeImageIndex:
		var idx ocispec.Index
		if err := json.Unmarshal(b, &idx); err != nil {
			return desc, nil, fmt.Errorf("%s: the image index is not valid JSON: %w", ref, err)
		}
		var have []string
		found := false
		for _, e := range idx.Manifests {
			have = append(have, archOf(e.Platform))
			if !found && Matches(e.Platform, arch) {
				desc, found = e, true
			}
		}
		if !found {
			if len(have) == 0 {
				return desc, nil, fmt.Errorf("%s: the image index is empty", ref)
			}
			return desc, nil, fmt.Errorf("%s has no image for %s (it has %s)", ref, arch, strings.Join(have, ", "))
		}
		if desc.MediaType != ocispec.MediaTypeImageManifest {
			return desc, nil, fmt.Errorf("%s: the entry for %s is a %s, not a cimg image manifest", ref, arch, desc.MediaType)
		}
		if b, err = content.FetchAll(ctx, repo, desc); err != nil {
			return desc, nil, Describe(ctx, ref+" ("+arch+")", err)
		}
	default:
		return desc, nil, fmt.Errorf("%s holds a %s, not a cimg image", ref, desc.MediaType)
	}
	var m ocispec.Manifest
	if err := json.Unmarshal(b, &m); err != nil {
		return desc, nil, fmt.Errorf("%s: the image manifest is not valid JSON: %w", ref, err)
	}
	return desc, &m, nil
}

// checkManifest refuses anything but a cimg artifact of arch: a container
// image or another tool's artifact would only fail later, unclearly.
func checkManifest(ref string, m *ocispec.Manifest, arch string) error {
	if m.ArtifactType != ArtifactType && m.Config.MediaType != ConfigMediaType {
		what := m.ArtifactType
		if what == "" {
			what = m.Config.MediaType
		}
		if what == ocispec.MediaTypeImageConfig {
			what = "container image"
		}
		return fmt.Errorf("%s holds a %s, not a cimg image (%s)", ref, what, ArtifactType)
	}
	if len(m.Layers) != 1 || m.Layers[0].MediaType != LayerMediaType {
		var types []string
		for _, l := range m.Layers {
			types = append(types, l.MediaType)
		}
		return fmt.Errorf("%s: a cimg manifest has one layer of %s, this one has [%s]", ref, LayerMediaType, strings.Join(types, ", "))
	}
	if a := m.Annotations[AnnotationArch]; a != "" && a != arch {
		return fmt.Errorf("%s is an image for %s, this machine is %s", ref, a, arch)
	}
	return nil
}

// withRetries is c (nil: http.DefaultClient) with oras' retrying
// transport around its own.
func withRetries(c *http.Client) *http.Client {
	if c == nil {
		c = http.DefaultClient
	}
	r := *c
	r.Transport = retry.NewTransport(c.Transport)
	return &r
}

// NoteRefusals is ctx with a note of why the registry refused a bearer
// token, which AuthClient's transport fills in and Describe reads: oras's
// error keeps the status and body only, the same for every cause.
func NoteRefusals(ctx context.Context) context.Context {
	return context.WithValue(ctx, tokenNoteKey{}, new(tokenNote))
}

// Describe turns a registry's refusal of what was asked about ref into a
// sentence naming ref and what to do (ctx: from NoteRefusals, for the
// bearer-token cases).
func Describe(ctx context.Context, ref string, err error) error {
	var er *errcode.ErrorResponse
	var cert *tls.CertificateVerificationError
	var unknown x509.UnknownAuthorityError
	switch {
	case errors.As(err, &cert), errors.As(err, &unknown):
		return fmt.Errorf("%s: %w (a private CA? --ca FILE trusts it)", ref, err)
	case errors.Is(err, auth.ErrBasicCredentialNotFound):
		return fmt.Errorf("%s: the registry asks for credentials and none were given (--creds USER:PASSWORD, or a --registry-config with this registry)", ref)
	case errors.Is(err, errdef.ErrNotFound):
		return fmt.Errorf("%s: not found in the registry", ref)
	case errors.As(err, &er) && (er.StatusCode == http.StatusUnauthorized || er.StatusCode == http.StatusForbidden) && tokenServer(er):
		// The URL of a refusal by the token server has no query
		// (service, scope): that is noise, the credentials are the point.
		u := *er.URL
		u.RawQuery = ""
		return fmt.Errorf("%s: the registry's token server %s refused the credentials (%d %s; check --creds USER:PASSWORD, or the entry for this registry in --registry-config)", ref, &u, er.StatusCode, strings.ToLower(http.StatusText(er.StatusCode)))
	case errors.As(err, &er) && er.StatusCode == http.StatusUnauthorized && tokenRefusal(ctx) == "invalid_token":
		return fmt.Errorf("%s: the registry refused the bearer token it was given as invalid: expired (is the clock of this machine, or of the token server, wrong?) or not signed by an issuer it trusts; a registrytoken in --registry-config expires: log in again, or give --creds USER:PASSWORD: %w", ref, err)
	case errors.As(err, &er) && er.StatusCode == http.StatusUnauthorized && tokenRefusal(ctx) == "insufficient_scope":
		return fmt.Errorf("%s: the registry's bearer token does not grant what was asked (an anonymous token, or an account without access to this repository): give --creds USER:PASSWORD or a --registry-config with this registry: %w", ref, err)
	case errors.As(err, &er) && er.StatusCode == http.StatusUnauthorized:
		return fmt.Errorf("%s: the registry refused the credentials (401 unauthorized; give --creds USER:PASSWORD or a --registry-config with this registry): %w", ref, err)
	case errors.As(err, &er) && er.StatusCode == http.StatusForbidden:
		return fmt.Errorf("%s: the registry denied access (403 forbidden): %w", ref, err)
	case errors.As(err, &er) && er.StatusCode == http.StatusNotFound:
		return fmt.Errorf("%s: not found in the registry: %w", ref, err)
	}
	return fmt.Errorf("%s: %w", ref, err)
}

// tokenServer says whether a refusal came from a token server rather
// than from the registry's API (/v2/, its manifests, blobs, tags and
// referrers): some realms are under /v2/ too (quay.io/v2/auth).
func tokenServer(er *errcode.ErrorResponse) bool {
	if er.URL == nil {
		return false
	}
	p := er.URL.Path
	if p == "/v2/" || p == "/v2" {
		return false
	}
	for _, api := range []string{"/manifests/", "/blobs/", "/tags/", "/referrers/"} {
		if strings.Contains(p, api) {
			return false
		}
	}
	return true
}

// Check holds the downloaded file at path to the layer descriptor: its
// size and sha256. A registry (or a proxy) that served other bytes is
// caught here, before the store reads a byte of them.
func Check(path string, desc ocispec.Descriptor) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	h := sha256.New()
	n, err := io.Copy(h, f)
	if err != nil {
		return fmt.Errorf("read the download: %w", err)
	}
	if n != desc.Size {
		return fmt.Errorf("the download is %d bytes, the registry's descriptor says %d", n, desc.Size)
	}
	if got := "sha256:" + hex.EncodeToString(h.Sum(nil)); got != desc.Digest.String() {
		return fmt.Errorf("the download's digest is %s, the registry's descriptor says %s", got, desc.Digest)
	}
	return nil
}

// Arches lists the arches of an index's entries, sorted (for messages and
// cimg-build push's report).
func Arches(idx *ocispec.Index) []string {
	var a []string
	for _, e := range idx.Manifests {
		a = append(a, archOf(e.Platform))
	}
	slices.Sort(a)
	return a
}

// HostArch is this machine's arch the manifest's way (amd64, arm64,
// armhf, i386): launcher.HostArch's answer, without linking the launcher
// into the download helper.
func HostArch() string {
	switch runtime.GOARCH {
	case "arm":
		return "armhf"
	case "386":
		return "i386"
	}
	return runtime.GOARCH
}
