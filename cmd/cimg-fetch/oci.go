package main

import (
	"errors"
	"fmt"
	"strings"

	"cimg.dev/cimg/internal/fetch"
	"cimg.dev/cimg/internal/ocipull"
	"cimg.dev/cimg/internal/partial"
)

// oci is `cimg-fetch oci`: an oci:// reference's .cimg for this device's
// arch, downloaded as get does.
//
//	cimg-fetch oci --dir DIR [--ca FILE] [--creds USER:PASS] [--registry-config FILE] [--quiet] oci://REGISTRY/REPO:TAG|@sha256:...
//
// The registry is only a channel: what it serves is held to the
// descriptor's digest and size here, and then, like any file, to the
// image's hash tree and the trusted keys by the store.
func oci(args []string) (int, error) {
	c := newCommon("oci")
	creds := c.fs.String("creds", "", "`USER:PASSWORD` for the registry")
	regConf := c.fs.String("registry-config", "", "docker-style config.json `file` with registry credentials (missing: anonymous)")
	if err := c.fs.Parse(args); err != nil {
		return 2, err
	}
	if c.fs.NArg() != 1 || *c.dir == "" || !strings.HasPrefix(c.fs.Arg(0), "oci://") {
		return 2, errors.New("usage: cimg-fetch oci --dir DIR [--ca FILE] [--creds USER:PASS] [--registry-config FILE] [--quiet] oci://REGISTRY/REPO:TAG")
	}
	ref := c.fs.Arg(0)
	client, err := fetch.NewClient(*c.ca)
	if err != nil {
		return 1, err
	}
	ctx, stop := parentContext()
	defer stop()
	blob, err := ocipull.Resolve(ctx, strings.TrimPrefix(ref, "oci://"), ocipull.Options{
		Client: client, Creds: *creds, ConfigFile: *regConf, Arch: ocipull.HostArch(),
	})
	if err != nil {
		return 1, fmt.Errorf("oci://%w", err)
	}
	// The blob's digest is the key: the same bytes under another tag (or
	// a tag pushed again) resume the same partial.
	key := blob.Desc.Digest.String()
	opts := c.options(blob.Client)
	opts.Size = blob.Desc.Size
	path, err := fetch.Get(blob.Context(ctx), *c.dir, key, blob.URL, opts)
	if err != nil {
		return 1, fmt.Errorf("download %s (%s): %w", ref, key, err)
	}
	if err := ocipull.Check(path, blob.Desc); err != nil {
		// Complete but wrong: not worth resuming.
		partial.Discard(*c.dir, key)
		return 1, fmt.Errorf("%s: %w", ref, err)
	}
	fmt.Printf("%s\t%s\n", path, key)
	return 0, nil
}
