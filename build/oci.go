package build

import (
	"archive/tar"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"sort"
	"strconv"
	"strings"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/tarball"

	"cimg.dev/cimg/internal/squashfs"
	"cimg.dev/cimg/internal/stage"
)

// importOCI flattens an OCI image (a layout directory or a docker-archive
// tarball) into the stager — layers applied in order, whiteouts and
// opaque directories honoured — and maps its config into the manifest
// where the manifest does not say otherwise. File contents are spooled to
// one temporary file, removed when the build ends.
func importOCI(st *stage.Stager, spec *Spec) error {
	img, err := openOCI(spec.FromOCI, spec.Platform)
	if err != nil {
		return fmt.Errorf("OCI image %s: %w", spec.FromOCI, err)
	}
	cfg, err := img.ConfigFile()
	if err != nil {
		return fmt.Errorf("OCI image %s: config: %w", spec.FromOCI, err)
	}
	if ls, err := img.Layers(); err != nil || len(ls) == 0 {
		return fmt.Errorf("OCI image %s has no layers (config rootfs.diff_ids empty?): %v", spec.FromOCI, err)
	}
	if spec.Manifest.Arch == "" {
		spec.Manifest.Arch = archOfPlatform(cfg.Architecture, cfg.Variant)
	}
	blob, err := os.CreateTemp("", "cimg-oci-*")
	if err != nil {
		return err
	}
	os.Remove(blob.Name()) // unlinked: gone with the last close, even on a crash
	spec.cleanup = append(spec.cleanup, func() { blob.Close() })

	rc := mutate.Extract(img)
	defer rc.Close()
	type item struct {
		hdr *tar.Header
		off int64
	}
	items := map[string]item{}
	var off int64
	tr := tar.NewReader(rc)
	for {
		hdr, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			return fmt.Errorf("OCI image %s: read layers: %w", spec.FromOCI, err)
		}
		p := path.Clean("/" + hdr.Name)
		if p == "/" {
			continue
		}
		it := item{hdr: hdr, off: off}
		if hdr.Typeflag == tar.TypeReg {
			n, err := io.Copy(blob, tr)
			if err != nil {
				return fmt.Errorf("OCI image %s: spool %s: %w", spec.FromOCI, p, err)
			}
			off += n
		}
		items[p] = it
	}
	paths := make([]string, 0, len(items))
	for p := range items {
		paths = append(paths, p)
	}
	sort.Strings(paths) // a parent sorts before what it holds
	var links []string
	for _, p := range paths {
		h := items[p].hdr
		e := squashfs.Entry{Path: p, Mode: fs.FileMode(h.Mode).Perm(), UID: uint32(h.Uid), GID: uint32(h.Gid), Mtime: spec.Epoch}
		if h.Mode&04000 != 0 {
			e.Mode |= fs.ModeSetuid
		}
		if h.Mode&02000 != 0 {
			e.Mode |= fs.ModeSetgid
		}
		if h.Mode&01000 != 0 {
			e.Mode |= fs.ModeSticky
		}
		if spec.KeepMtimes {
			e.Mtime = h.ModTime.Unix()
		}
		switch h.Typeflag {
		case tar.TypeDir:
			e.Mode |= fs.ModeDir
		case tar.TypeReg:
			e.Size = h.Size
			start, size := items[p].off, h.Size
			e.Open = func() (io.ReadCloser, error) { return io.NopCloser(io.NewSectionReader(blob, start, size)), nil }
		case tar.TypeSymlink:
			e.Mode |= fs.ModeSymlink
			e.Target = h.Linkname
		case tar.TypeLink:
			links = append(links, p)
			continue
		default:
			return fmt.Errorf("OCI image %s: %s is a %s: images carry only directories, regular files and symlinks (the launcher makes /dev)",
				spec.FromOCI, p, tarType(h.Typeflag))
		}
		if err := st.AddEntry(e, stage.Record{Path: p, Source: spec.FromOCI, Reason: "OCI layer"}); err != nil {
			return err
		}
	}
	for _, p := range links {
		target := path.Clean("/" + items[p].hdr.Linkname)
		if err := st.AddEntry(squashfs.Entry{Path: p, Link: target}, stage.Record{Path: p, Source: spec.FromOCI, Reason: "OCI layer (hardlink)"}); err != nil {
			return err
		}
	}
	return mapOCIConfig(spec, cfg, func(p string) ([]byte, bool) {
		it, ok := items[p]
		if !ok || it.hdr.Typeflag != tar.TypeReg || it.hdr.Size > 1<<20 {
			return nil, false
		}
		b := make([]byte, it.hdr.Size)
		_, err := blob.ReadAt(b, it.off)
		return b, err == nil
	}, func(p string) bool { _, ok := items[p]; return ok })
}

func tarType(t byte) string {
	switch t {
	case tar.TypeChar:
		return "character device"
	case tar.TypeBlock:
		return "block device"
	case tar.TypeFifo:
		return "fifo"
	}
	return fmt.Sprintf("tar entry of type %q", t)
}

// openOCI opens a layout directory (choosing the image for platform) or a
// docker-archive tarball.
func openOCI(p, platform string) (v1.Image, error) {
	fi, err := os.Stat(p)
	if err != nil {
		return nil, err
	}
	if !fi.IsDir() {
		return tarball.ImageFromPath(p, nil)
	}
	lp, err := layout.FromPath(p)
	if err != nil {
		return nil, err
	}
	idx, err := lp.ImageIndex()
	if err != nil {
		return nil, err
	}
	return pickImage(idx, platform)
}

// pickImage walks an index (nested indexes included) for the image of
// the platform ("os/arch[/variant]"); without one, the index must hold
// exactly one image.
func pickImage(idx v1.ImageIndex, platform string) (v1.Image, error) {
	im, err := idx.IndexManifest()
	if err != nil {
		return nil, err
	}
	var found []v1.Image
	var seen []string
	for _, d := range im.Manifests {
		switch {
		case d.MediaType.IsIndex():
			child, err := idx.ImageIndex(d.Digest)
			if err != nil {
				return nil, err
			}
			img, err := pickImage(child, platform)
			if err == nil {
				found = append(found, img)
			}
		case d.MediaType.IsImage():
			img, err := idx.Image(d.Digest)
			if err != nil {
				return nil, err
			}
			pl := d.Platform
			if pl == nil {
				if cfg, err := img.ConfigFile(); err == nil {
					pl = &v1.Platform{OS: cfg.OS, Architecture: cfg.Architecture, Variant: cfg.Variant}
				}
			}
			name := "unknown"
			if pl != nil {
				name = strings.TrimSuffix(pl.OS+"/"+pl.Architecture+"/"+pl.Variant, "/")
			}
			seen = append(seen, name)
			if platform == "" || platformMatches(name, platform) {
				found = append(found, img)
			}
		}
	}
	switch {
	case len(found) == 1:
		return found[0], nil
	case len(found) == 0 && platform != "":
		return nil, fmt.Errorf("no image for platform %s (the index has %s)", platform, strings.Join(seen, ", "))
	case len(found) == 0:
		return nil, errors.New("the index holds no image")
	}
	return nil, fmt.Errorf("the index holds images for %s: choose one with --platform", strings.Join(seen, ", "))
}

func platformMatches(have, want string) bool {
	if have == want {
		return true
	}
	// linux/arm64 matches linux/arm64/v8, linux/arm/v7 does not match linux/arm/v6.
	h, w := strings.Split(have, "/"), strings.Split(want, "/")
	return len(h) >= 2 && len(w) == 2 && h[0] == w[0] && h[1] == w[1] && (len(h) == 2 || h[1] == "arm64")
}

func archOfPlatform(arch, variant string) string {
	switch arch {
	case "arm":
		if variant == "v7" || variant == "v8" || variant == "" {
			return "armhf"
		}
		return "armel"
	case "386":
		return "i386"
	}
	return arch
}

// mapOCIConfig fills the manifest from the image config: Entrypoint and
// Cmd become command and args, Env, WorkingDir and User carry over. What
// the manifest (or a flag) already says wins.
func mapOCIConfig(spec *Spec, cfg *v1.ConfigFile, read func(string) ([]byte, bool), exists func(string) bool) error {
	m := spec.Manifest
	c := cfg.Config
	env := map[string]string{}
	for _, kv := range c.Env {
		k, v, _ := strings.Cut(kv, "=")
		env[k] = v
	}
	if len(m.App.Command) == 0 && spec.Entrypoint == "" {
		argv := append(append([]string(nil), c.Entrypoint...), c.Cmd...)
		if len(argv) == 0 {
			return fmt.Errorf("OCI image %s has neither Entrypoint nor Cmd: give --entrypoint", spec.FromOCI)
		}
		prog := argv[0]
		if !path.IsAbs(prog) {
			// As a runtime would: search the image's PATH.
			for _, d := range strings.Split(env["PATH"], ":") {
				if d != "" && exists(path.Join(d, prog)) {
					prog = path.Join(d, prog)
					break
				}
			}
			if !path.IsAbs(prog) {
				return fmt.Errorf("OCI image %s: %q is not on the image's PATH %q", spec.FromOCI, argv[0], env["PATH"])
			}
		}
		fixed := len(c.Entrypoint)
		if fixed == 0 {
			fixed = 1
		}
		m.App.Command = append([]string{prog}, argv[1:fixed]...)
		m.App.Args = argv[fixed:]
	}
	if len(m.App.Env) == 0 && len(env) > 0 {
		m.App.Env = env
	}
	if c.WorkingDir != "" && m.App.Workdir == "/" {
		m.App.Workdir = path.Clean(c.WorkingDir)
	}
	if c.User != "" && m.App.User == 0 && m.App.Group == 0 {
		u, g, err := ociUser(c.User, read)
		if err != nil {
			return fmt.Errorf("OCI image %s: User %q: %w", spec.FromOCI, c.User, err)
		}
		m.App.User, m.App.Group = u, g
	}
	return nil
}

// ociUser turns "uid", "uid:gid", "name" or "name:group" into numbers,
// looking names up in the image's /etc/passwd and /etc/group.
func ociUser(s string, read func(string) ([]byte, bool)) (uint32, uint32, error) {
	user, group, hasGroup := strings.Cut(s, ":")
	lookup := func(file, name string, field int) (uint32, string, error) {
		if n, err := strconv.ParseUint(name, 10, 32); err == nil {
			return uint32(n), "", nil
		}
		b, ok := read(file)
		if !ok {
			return 0, "", fmt.Errorf("%s is not in the image to look %q up", file, name)
		}
		for _, line := range strings.Split(string(b), "\n") {
			f := strings.Split(line, ":")
			if len(f) > 3 && f[0] == name {
				n, err := strconv.ParseUint(f[field], 10, 32)
				if err != nil {
					break
				}
				gid := ""
				if len(f) > 3 {
					gid = f[3]
				}
				return uint32(n), gid, nil
			}
		}
		return 0, "", fmt.Errorf("%q is not in the image's %s", name, file)
	}
	uid, pgid, err := lookup("/etc/passwd", user, 2)
	if err != nil {
		return 0, 0, err
	}
	if !hasGroup {
		if pgid == "" {
			return uid, uid, nil
		}
		g, _ := strconv.ParseUint(pgid, 10, 32)
		return uid, uint32(g), nil
	}
	gid, _, err := lookup("/etc/group", group, 2)
	return uid, gid, err
}
