package main

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"

	"cimg.dev/cimg/internal/partial"
)

// source turns install's or update's SOURCE into a local file: a path as
// it is; an http(s):// URL, or an oci:// reference, downloaded
// (resumably) into the store's tmp/ by cimg-fetch, the download helper
// installed beside cimg-run (cimg-run itself links no network code).
// finish is called with whether the store admitted the file: a download
// goes either way (admitted: it is stored; refused: its bytes are not
// worth resuming), while one cut short stays for the next command.
func (f *storeFlags) source(src string) (path string, finish func(admitted bool), err error) {
	var args []string
	switch {
	case strings.HasPrefix(src, "oci://"):
		args = append(args, "oci", "--creds", *f.creds, "--registry-config", *f.regConf)
	case strings.HasPrefix(src, "http://") || strings.HasPrefix(src, "https://"):
		args = append(args, "get")
	default:
		return src, func(bool) {}, nil
	}
	tmp := filepath.Join(*f.root, "tmp")
	args = append(args, "--dir", tmp, "--ca", *f.ca)
	if *f.quiet || *f.asJSON {
		args = append(args, "--quiet")
	}
	helper, err := fetcher()
	if err != nil {
		return "", nil, err
	}
	cmd := exec.Command(helper, append(args, src)...)
	cmd.Stderr = os.Stderr // its progress bar and messages
	// It must not outlive us (killed, it would download on and hold the
	// partial's lock): told by the parent-death signal, and by EOF on its
	// stdin, our pipe, should the signal's thread rule not apply.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGTERM}
	alive, err := cmd.StdinPipe()
	if err != nil {
		return "", nil, err
	}
	defer alive.Close()
	out, err := cmd.Output()
	if err != nil {
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			return "", nil, errors.New("the download failed (above)")
		}
		return "", nil, fmt.Errorf("run %s: %w", helper, err)
	}
	path, key, ok := strings.Cut(strings.TrimSpace(string(out)), "\t")
	if !ok {
		return "", nil, fmt.Errorf("%s said %q, not PATH<TAB>KEY", helper, out)
	}
	return path, func(bool) { partial.Discard(tmp, key) }, nil
}

// fetcher is the path of cimg-fetch: beside this executable.
func fetcher() (string, error) {
	self, err := os.Executable()
	if err != nil {
		return "", err
	}
	p := filepath.Join(filepath.Dir(self), "cimg-fetch")
	if _, err := os.Stat(p); err != nil {
		return "", fmt.Errorf("downloads need cimg-fetch, installed beside cimg-run (%s): %w", p, err)
	}
	return p, nil
}
