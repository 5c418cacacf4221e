package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"

	"golang.org/x/term"

	"cimg.dev/cimg/internal/fetch"
)

// source turns install's or update's SOURCE into a local file: a path as
// it is; an http(s):// URL downloaded (resumably) into the store's tmp/;
// an oci:// reference resolved and its blob downloaded the same way.
// finish is called with whether the store admitted the file: a download
// goes either way (admitted: it is stored; refused: its bytes are not
// worth resuming), while one cut short stays for the next command.
func (f *storeFlags) source(src string) (path string, finish func(admitted bool), err error) {
	tmp := filepath.Join(*f.root, "tmp")
	switch {
	case strings.HasPrefix(src, "oci://"):
		return ociFetch(f, tmp, src)
	case strings.HasPrefix(src, "http://") || strings.HasPrefix(src, "https://"):
	default:
		return src, func(bool) {}, nil
	}
	client, err := fetch.NewClient(*f.ca)
	if err != nil {
		return "", nil, err
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	path, err = fetch.Get(ctx, tmp, src, src, f.fetchOptions(client))
	if err != nil {
		return "", nil, fmt.Errorf("download %s: %w", src, err)
	}
	return path, func(bool) { fetch.Discard(tmp, src) }, nil
}

// fetchOptions are a download's options: a progress bar on a terminal
// (not with --quiet or --json), retries said on stderr.
func (f *storeFlags) fetchOptions(client fetch.Doer) fetch.Options {
	o := fetch.Options{Client: client, Log: func(s string) { fmt.Fprintln(os.Stderr, "cimg-run:", s) }}
	if !*f.quiet && !*f.asJSON && term.IsTerminal(int(os.Stderr.Fd())) {
		o.Progress = os.Stderr
	}
	return o
}
