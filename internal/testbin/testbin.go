// Package testbin builds programs for end-to-end tests: static
// (CGO_ENABLED=0) binaries of the given packages, in a fresh directory
// that any user can enter, so a test may run them as nobody.
package testbin

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
)

// Build compiles each name → package into dir/name and returns dir and
// the binaries' paths by name. The caller removes dir.
func Build(pkgs map[string]string) (string, map[string]string, error) {
	dir, err := os.MkdirTemp("", "cimg-testbin")
	if err != nil {
		return "", nil, err
	}
	os.Chmod(dir, 0o755)
	paths := map[string]string{}
	for name, pkg := range pkgs {
		out := filepath.Join(dir, name)
		cmd := exec.Command("go", "build", "-o", out, pkg)
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
		if b, err := cmd.CombinedOutput(); err != nil {
			os.RemoveAll(dir)
			return "", nil, fmt.Errorf("go build %s: %v\n%s", pkg, err, b)
		}
		paths[name] = out
	}
	return dir, paths, nil
}

// Main is a TestMain body: build, run the tests, clean up, exit.
func Main(run func() int, pkgs map[string]string, set func(map[string]string)) {
	dir, paths, err := Build(pkgs)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	set(paths)
	code := run()
	os.RemoveAll(dir)
	os.Exit(code)
}
