package main

// oci:// sources against a real registry: Debian's docker-registry on
// 127.0.0.1 with TLS (a CA made for the test, given with --ca) and
// htpasswd auth, images pushed with cimg-build push, installed with
// cimg-run install (its download helper cimg-fetch resolves and fetches).

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"cimg.dev/cimg/internal/fetch"
	"cimg.dev/cimg/internal/ocipull"
	"cimg.dev/cimg/internal/ocipull/registrytest"
)

// ociPush pushes img to REPO:TAG of r and returns the digest it printed.
func ociPush(t *testing.T, r *registrytest.Registry, img, ref string) string {
	t.Helper()
	out, err := exec.Command(cimgBuild, "push", "--ca", r.CAFile, "--creds", r.Creds(), img, r.Addr+"/"+ref).Output()
	if err != nil {
		var stderr []byte
		if ee, ok := err.(*exec.ExitError); ok {
			stderr = ee.Stderr
		}
		t.Fatalf("cimg-build push %s %s: %v\n%s", img, ref, err, stderr)
	}
	d := strings.TrimSpace(string(out))
	if !strings.HasPrefix(d, "sha256:") {
		t.Fatalf("cimg-build push printed %q, not a digest", out)
	}
	return d
}

// decoyImage is an image named probe for arch whose entrypoint is a
// script: it can be pushed as any arch and must never be what an amd64
// device installs (it has no /bin/sh to run).
func decoyImage(t *testing.T, arch string) string {
	t.Helper()
	dir := t.TempDir()
	os.MkdirAll(filepath.Join(dir, "root/usr/bin"), 0o755)
	os.WriteFile(filepath.Join(dir, "root/usr/bin/probe"), []byte("#!/bin/sh\nexit 99\n"), 0o755)
	img := filepath.Join(dir, "decoy-"+arch+".cimg")
	if out, err := exec.Command(cimgBuild, "-q", "--rootfs", filepath.Join(dir, "root"), "--entrypoint", "/usr/bin/probe",
		"--name", "probe", "--arch", arch, "-o", img).CombinedOutput(); err != nil {
		t.Fatalf("cimg-build %s decoy: %v\n%s", arch, err, out)
	}
	return img
}

// ociInstall runs cimg-run install with the registry's CA and extra args.
func ociInstall(t *testing.T, r *registrytest.Registry, store, state string, args ...string) result {
	t.Helper()
	return storeCmd(t, store, state, "install", append([]string{"--quiet", "--ca", r.CAFile}, args...)...)
}

// storeSnapshot lists every path in dir with its size and mode: what a
// refused install must leave as it was.
func storeSnapshot(t *testing.T, dir string) []string {
	t.Helper()
	var out []string
	filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		fi, err := d.Info()
		if err != nil {
			return err
		}
		size := fi.Size()
		if d.IsDir() {
			size = 0
		}
		out = append(out, fmt.Sprintf("%s %s %d", p, fi.Mode(), size))
		return nil
	})
	return out
}

// TestOCIInstall: an image pushed to a tag installs by the tag (with
// --creds) and by its digest (with a docker-style --registry-config),
// and runs.
func TestOCIInstall(t *testing.T) {
	r := registrytest.Start(t)
	store, state := storeRoot(t), stateDir(t)
	img := probeImage(t, "version = \"1.0.0\"\n")
	dgst := ociPush(t, r, img, "apps/probe:1")

	res := ociInstall(t, r, store, state, "--creds", r.Creds(), "oci://"+r.Addr+"/apps/probe:1")
	if res.code != 0 {
		t.Fatalf("install oci://%s/apps/probe:1: %+v", r.Addr, res)
	}
	run := storeCmd(t, store, state, "run", "probe", "--", "exit", "7")
	if run.code != 7 {
		t.Errorf("run the installed probe: %+v; want exit 7", run)
	}
	// The stored file is the pushed one, byte for byte.
	want, _ := os.ReadFile(img)
	if !storeHolds(t, store, want) {
		t.Errorf("no file in the store %s is the pushed image", store)
	}
	// The partial download is gone once the image is admitted.
	if left, _ := filepath.Glob(filepath.Join(store, "tmp", "dl-*")); len(left) > 0 {
		t.Errorf("partials left after the install: %v", left)
	}

	// An update from another tag goes the same way (it starts the new
	// version to check it: one that keeps running).
	t.Cleanup(func() { exec.Command(cimgRun, "stop", "--state-dir", state, "probe").Run() })
	ociPush(t, r, probeImage(t, "version = \"1.1.0\"\n[app]\ncommand = [\"/usr/bin/probe\", \"sleep\"]\n"), "apps/probe:2")
	res = storeCmd(t, store, state, "update", "--quiet", "--ca", r.CAFile, "--creds", r.Creds(), "probe", "oci://"+r.Addr+"/apps/probe:2")
	if res.code != 0 || !strings.Contains(res.stdout, "updated to 1.1.0") {
		t.Errorf("update from oci://%s/apps/probe:2: %+v", r.Addr, res)
	}

	// By digest, with the credentials in a docker config.json.
	conf := filepath.Join(t.TempDir(), "config.json")
	auth := base64.StdEncoding.EncodeToString([]byte(r.Creds()))
	os.WriteFile(conf, []byte(`{"auths":{"`+r.Addr+`":{"auth":"`+auth+`"}}}`), 0o600)
	res = ociInstall(t, r, store, state, "--registry-config", conf, "--name", "pinned", "oci://"+r.Addr+"/apps/probe@"+dgst)
	if res.code != 0 {
		t.Fatalf("install by digest with --registry-config: %+v", res)
	}
	if run := storeCmd(t, store, state, "run", "pinned", "--", "exit", "3"); run.code != 3 {
		t.Errorf("run the app installed by digest: %+v; want exit 3", run)
	}
}

// storeHolds says whether some file under store has exactly the bytes b.
func storeHolds(t *testing.T, store string, b []byte) bool {
	found := false
	filepath.WalkDir(store, func(p string, d fs.DirEntry, err error) error {
		if err == nil && d.Type().IsRegular() {
			if fi, _ := d.Info(); fi != nil && fi.Size() == int64(len(b)) {
				if c, _ := os.ReadFile(p); string(c) == string(b) {
					found = true
				}
			}
		}
		return nil
	})
	return found
}

// TestOCIMultiArch: amd64, arm64 and armhf images of one app pushed to
// one tag make an index of three platforms; an amd64 device installs and
// runs the amd64 one.
func TestOCIMultiArch(t *testing.T) {
	r := registrytest.Start(t)
	store, state := storeRoot(t), stateDir(t)
	ociPush(t, r, decoyImage(t, "arm64"), "apps/multi:1")
	amd := probeImage(t, "version = \"2.0.0\"\n")
	ociPush(t, r, amd, "apps/multi:1")
	idxDigest := ociPush(t, r, decoyImage(t, "armhf"), "apps/multi:1")

	var idx ocispec.Index
	if ct := r.Manifest(t, "apps/multi", "1", &idx); ct != ocispec.MediaTypeImageIndex {
		t.Fatalf("the tag holds a %s, want an index", ct)
	}
	var plats []string
	for _, e := range idx.Manifests {
		plats = append(plats, e.Platform.OS+"/"+e.Platform.Architecture+"/"+e.Platform.Variant)
	}
	slices.Sort(plats)
	if !slices.Equal(plats, []string{"linux/amd64/", "linux/arm/v7", "linux/arm64/"}) {
		t.Errorf("index platforms %v, want linux/amd64, linux/arm/v7, linux/arm64", plats)
	}
	if idx.ArtifactType != ocipull.ArtifactType {
		t.Errorf("index artifactType %q", idx.ArtifactType)
	}

	if res := ociInstall(t, r, store, state, "--creds", r.Creds(), "oci://"+r.Addr+"/apps/multi:1"); res.code != 0 {
		t.Fatalf("install the multi-arch tag: %+v", res)
	}
	want, _ := os.ReadFile(amd)
	if !storeHolds(t, store, want) {
		t.Errorf("the store does not hold the amd64 image")
	}
	if run := storeCmd(t, store, state, "run", "probe", "--", "exit", "5"); run.code != 5 {
		t.Errorf("run the installed app: %+v; want exit 5 (the amd64 probe)", run)
	}
	// The index's own digest pins the same choice.
	if res := ociInstall(t, r, store, state, "--creds", r.Creds(), "--name", "pinned", "oci://"+r.Addr+"/apps/multi@"+idxDigest); res.code != 0 {
		t.Fatalf("install the index by digest: %+v", res)
	}
	if run := storeCmd(t, store, state, "run", "pinned", "--", "exit", "6"); run.code != 6 {
		t.Errorf("run the app pinned by the index digest: %+v; want exit 6", run)
	}
}

// TestOCIRefusals: each bad source fails install with one clear error
// and leaves the store as it was.
func TestOCIRefusals(t *testing.T) {
	r := registrytest.Start(t)
	store, state := storeRoot(t), stateDir(t)
	img := probeImage(t, "version = \"1.0.0\"\n")
	ociPush(t, r, img, "apps/probe:1")
	ociPush(t, r, decoyImage(t, "arm64"), "apps/foreign:1")
	ociPush(t, r, decoyImage(t, "armhf"), "apps/foreign:1")
	// A blob the registry serves with a byte flipped (its storage is a
	// plain directory): the digest check must catch it.
	badDigest := ociPush(t, r, probeImage(t, "version = \"1.0.1\"\n"), "apps/bad:1")
	var bad ocispec.Manifest
	r.Manifest(t, "apps/bad", badDigest, &bad)
	hex := bad.Layers[0].Digest.Encoded()
	data := filepath.Join(r.Dir, "docker/registry/v2/blobs/sha256", hex[:2], hex, "data")
	b, err := os.ReadFile(data)
	if err != nil {
		t.Fatalf("the registry's copy of the blob: %v", err)
	}
	b[len(b)/2] ^= 0xff
	if err := os.WriteFile(data, b, 0o644); err != nil {
		t.Fatal(err)
	}

	// A store with one app in it, so "unchanged" means something.
	if res := ociInstall(t, r, store, state, "--creds", r.Creds(), "--name", "first", "oci://"+r.Addr+"/apps/probe:1"); res.code != 0 {
		t.Fatalf("install: %+v", res)
	}
	before := storeSnapshot(t, store)
	missing := "sha256:" + strings.Repeat("0", 64)
	for _, c := range []struct {
		what, creds, ref, want string
	}{
		{"wrong password", r.User + ":wrong", "apps/probe:1", "refused the credentials (401 unauthorized"},
		{"no credentials", "", "apps/probe:1", "the registry asks for credentials and none were given"},
		{"unknown tag", r.Creds(), "apps/probe:nope", r.Addr + "/apps/probe:nope: not found in the registry"},
		{"no image for this arch", r.Creds(), "apps/foreign:1", r.Addr + "/apps/foreign:1 has no image for amd64 (it has arm64, armhf)"},
		{"missing digest", r.Creds(), "apps/probe@" + missing, r.Addr + "/apps/probe@" + missing + ": not found in the registry"},
		{"corrupt blob", r.Creds(), "apps/bad:1", "the download's digest is sha256:"},
	} {
		args := []string{"--name", "second"}
		if c.creds != "" {
			args = append(args, "--creds", c.creds)
		} else {
			// No credentials anywhere: the default config path may exist
			// on the host, so point at one that does not.
			args = append(args, "--registry-config", filepath.Join(t.TempDir(), "none.json"))
		}
		res := ociInstall(t, r, store, state, append(args, "oci://"+r.Addr+"/"+c.ref)...)
		if res.code == 0 || !strings.Contains(res.stderr, c.want) {
			t.Errorf("%s: exit %d, stderr %q; want a failure saying %q", c.what, res.code, res.stderr, c.want)
		}
		if n := strings.Count(res.stderr, "cimg-fetch:"); n != 1 {
			t.Errorf("%s: %d cimg-fetch messages, want one:\n%s", c.what, n, res.stderr)
		}
		if after := storeSnapshot(t, store); !slices.Equal(before, after) {
			t.Errorf("%s changed the store:\nbefore %v\nafter  %v", c.what, before, after)
		}
	}
	// A wrong --ca: TLS refuses the registry's certificate.
	res := storeCmd(t, store, state, "install", "--quiet", "--creds", r.Creds(), "--name", "second", "oci://"+r.Addr+"/apps/probe:1")
	if res.code == 0 || !strings.Contains(res.stderr, "certificate") || !strings.Contains(res.stderr, "--ca FILE trusts it") {
		t.Errorf("without --ca: exit %d, %q", res.code, res.stderr)
	}
}

// cutBody ends each response body with an error after limit bytes: a
// connection lost in the middle of the blob.
// cutBody cuts the first response's body after limit bytes and fails
// every later request (the link is down): an attempt that made progress
// starts fetch's count again, so only a dead link ends the call.
type cutBody struct {
	doer  fetch.Doer
	limit int64
	sent  *bool
}

func (c cutBody) Do(req *http.Request) (*http.Response, error) {
	if *c.sent {
		return nil, errors.New("network is down (test)")
	}
	*c.sent = true
	resp, err := c.doer.Do(req)
	if err == nil {
		resp.Body = &cutReader{rc: resp.Body, left: c.limit}
	}
	return resp, err
}

type cutReader struct {
	rc   io.ReadCloser
	left int64
}

func (c *cutReader) Read(p []byte) (int, error) {
	if c.left <= 0 {
		return 0, errors.New("connection lost (test)")
	}
	if int64(len(p)) > c.left {
		p = p[:c.left]
	}
	n, err := c.rc.Read(p)
	c.left -= int64(n)
	return n, err
}

func (c *cutReader) Close() error { return c.rc.Close() }

// TestOCIResume: a blob download cut short leaves a partial in the
// store's tmp/, and the next install fetches only the rest of the blob
// from the registry (a Range request that carries the registry's auth).
func TestOCIResume(t *testing.T) {
	r := registrytest.Start(t)
	store, state := storeRoot(t), stateDir(t)
	img := probeImage(t, "version = \"1.0.0\"\n")
	ociPush(t, r, img, "apps/probe:1")
	ref := r.Addr + "/apps/probe:1"

	// The first attempt, in this process: the same resolution cimg-fetch
	// makes, the body cut after 512 KiB.
	tmp := filepath.Join(store, "tmp")
	if err := os.MkdirAll(tmp, 0o700); err != nil {
		t.Fatal(err)
	}
	client, err := fetch.NewClient(r.CAFile)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	blob, err := ocipull.Resolve(ctx, ref, ocipull.Options{Client: client, Creds: r.Creds(), Arch: ocipull.HostArch()})
	if err != nil {
		t.Fatal(err)
	}
	const cut = 512 << 10
	if blob.Desc.Size < 2*cut {
		t.Fatalf("the image is %d bytes, too small to cut at %d", blob.Desc.Size, cut)
	}
	_, err = fetch.Get(blob.Context(ctx), tmp, blob.Desc.Digest.String(), blob.URL,
		fetch.Options{Client: cutBody{blob.Client, cut, new(bool)}, Attempts: 1, Size: blob.Desc.Size})
	if err == nil {
		t.Fatal("the cut download succeeded")
	}
	parts, _ := filepath.Glob(filepath.Join(tmp, "dl-*.part"))
	if len(parts) != 1 {
		t.Fatalf("partials after the cut: %v", parts)
	}
	if fi, err := os.Stat(parts[0]); err != nil || fi.Size() != cut {
		t.Fatalf("the partial: %v, %v; want %d bytes", fi, err, cut)
	}

	if res := ociInstall(t, r, store, state, "--creds", r.Creds(), "oci://"+ref); res.code != 0 {
		t.Fatalf("install after the cut: %+v", res)
	}
	if run := storeCmd(t, store, state, "run", "probe", "--", "exit", "4"); run.code != 4 {
		t.Errorf("run the resumed image: %+v; want exit 4", run)
	}
	want, _ := os.ReadFile(img)
	if !storeHolds(t, store, want) {
		t.Errorf("the store does not hold the pushed image")
	}
	// The registry's log: the last GET of the blob sent the rest only.
	log, _ := os.ReadFile(r.Log)
	var written []string
	for _, l := range strings.Split(string(log), "\n") {
		if strings.Contains(l, `msg="response completed"`) && strings.Contains(l, "http.request.method=GET") &&
			strings.Contains(l, "/blobs/"+blob.Desc.Digest.String()) {
			_, w, _ := strings.Cut(l, "http.response.written=")
			w, _, _ = strings.Cut(w, " ")
			written = append(written, w)
		}
	}
	if rest := fmt.Sprint(blob.Desc.Size - cut); len(written) == 0 || written[len(written)-1] != rest {
		t.Errorf("blob GETs wrote %v bytes; want the last to be the rest, %s", written, rest)
	}
	if left, _ := filepath.Glob(filepath.Join(tmp, "dl-*")); len(left) > 0 {
		t.Errorf("partials left after the install: %v", left)
	}
}
