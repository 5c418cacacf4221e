package main

import "errors"

// oci is `cimg-fetch oci`: an oci:// reference's .cimg for this device's
// arch, downloaded as get does.
func oci(args []string) (int, error) {
	return 1, errors.New("oci:// sources are not supported yet")
}
