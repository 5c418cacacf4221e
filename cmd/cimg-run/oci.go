package main

import "errors"

// ociFetch downloads the .cimg that an oci://REGISTRY/REPO:TAG (or
// @sha256:...) reference names for this device's arch into the store's
// tmp dir, resumably, and returns its path and what to call once the
// store has admitted it or refused it.
func ociFetch(f *storeFlags, tmp, ref string) (path string, finish func(admitted bool), err error) {
	return "", nil, errors.New("oci:// sources are not supported yet")
}
