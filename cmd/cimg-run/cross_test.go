package main

import (
	"os"
	"os/exec"
	"path/filepath"
	"testing"
)

// TestCrossCompiles: cimg-run stays a static binary for the devices'
// arches (CGO_ENABLED=0, GOARCH=arm/arm64).
func TestCrossCompiles(t *testing.T) {
	for _, arch := range []string{"arm", "arm64"} {
		cmd := exec.Command("go", "build", "-o", filepath.Join(t.TempDir(), "cimg-run"), ".")
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOOS=linux", "GOARCH="+arch, "GOARM=7")
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Errorf("GOARCH=%s: %v\n%s", arch, err, out)
		}
	}
}
