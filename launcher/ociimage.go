package launcher

import (
	"fmt"
	"path/filepath"

	"cimg.dev/cimg/format"
	"cimg.dev/cimg/internal/imagecache"
	"cimg.dev/cimg/manifest"
)

// OCIImageAnnotation names a .cimg whose payload is a container's root
// (instead of root.path): cimg-oci's way to run cimg images under an OCI
// caller.
const OCIImageAnnotation = "org.cimg.image"

// OCIImage admits the .cimg at path as cimg-run does — a root-owned file
// no one else may write, its footer and manifest, its arch, its
// signatures when keys are configured in keyDir — and mounts its verified
// payload from the mount cache under stateDir. It returns the mounted
// root and the lease's release, to call once the container's root binds
// it. The manifest's requests are not applied: the config is the
// operator's word for everything else.
func OCIImage(path, stateDir, keyDir string) (string, func(), error) {
	f, err := openImage(path)
	if err != nil {
		return "", nil, fmt.Errorf("%s %s: %w", OCIImageAnnotation, path, err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return "", nil, err
	}
	img, err := format.Open(f, fi.Size())
	if err != nil {
		return "", nil, fmt.Errorf("%s: %w", path, err)
	}
	m, err := manifest.Parse(img.Manifest, path+" (embedded manifest)")
	if err != nil {
		return "", nil, err
	}
	if err := checkArch(path, m.Arch, func(string) {}); err != nil {
		return "", nil, err
	}
	trusted, err := loadKeys(keyDir, nil)
	if err != nil {
		return "", nil, err
	}
	if len(trusted) > 0 {
		if _, err := img.VerifySignatures(trusted); err != nil {
			return "", nil, fmt.Errorf("%s: %w", path, err)
		}
	}
	if err := imagecache.CheckStateDir(stateDir); err != nil {
		return "", nil, err
	}
	lease, err := imagecache.Mount(stateDir, f, img, false)
	if err != nil {
		return "", nil, err
	}
	return filepath.Clean(lease.Dir), lease.Release, nil
}

// OCIMountOptions are the mount options cimg-oci applies (features).
func OCIMountOptions() []string {
	var out []string
	for o := range ociMountFlags {
		out = append(out, o)
	}
	for o := range ociPropagation {
		out = append(out, o)
	}
	return out
}
