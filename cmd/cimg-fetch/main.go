// Command cimg-fetch is cimg-run's download helper, installed beside it:
// `cimg-run install|update` runs it for an http(s):// or oci:// source.
// It lives apart so that cimg-run, which starts every app, links no
// network or TLS code (their package initialisation alone added 0.7 ms
// to every cimg-run start, and the slim waiter of every running app would
// carry their data).
//
//	cimg-fetch get --dir DIR [--ca FILE] [--quiet] URL
//
// downloads URL into DIR (the store's tmp/) resumably (package fetch) and
// prints "PATH<TAB>KEY": the complete file and the key its partial goes
// by (partial.Discard(DIR, KEY) removes it). Messages and the progress
// bar go to stderr. Exit status 0 on success, 1 on a failed download
// (the partial is kept for the next try), 2 on a usage error.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"

	"golang.org/x/term"

	"cimg.dev/cimg/internal/fetch"
)

func main() {
	code, err := run(os.Args[1:])
	if err != nil {
		fmt.Fprintln(os.Stderr, "cimg-fetch:", err)
	}
	os.Exit(code)
}

// parentContext ends when cimg-run, our parent, does: SIGTERM (its
// parent-death signal, or anyone's) or EOF on stdin when that is a pipe
// (cimg-run holds its write end), so that a killed install does not
// leave a download running on, holding its partial's lock.
func parentContext() (context.Context, context.CancelFunc) {
	ctx, cancel := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	if fi, err := os.Stdin.Stat(); err == nil && fi.Mode()&os.ModeNamedPipe != 0 {
		go func() {
			io.Copy(io.Discard, os.Stdin)
			cancel()
		}()
	}
	return ctx, cancel
}

func run(args []string) (int, error) {
	if len(args) == 0 {
		return 2, errors.New("usage: cimg-fetch get --dir DIR [--ca FILE] [--quiet] URL")
	}
	switch args[0] {
	case "get":
		return get(args[1:])
	case "oci":
		return oci(args[1:])
	}
	return 2, fmt.Errorf("unknown command %q (get, oci)", args[0])
}

// common are the flags of every download.
type common struct {
	fs    *flag.FlagSet
	dir   *string
	ca    *string
	quiet *bool
}

func newCommon(name string) *common {
	c := &common{fs: flag.NewFlagSet("cimg-fetch "+name, flag.ContinueOnError)}
	c.dir = c.fs.String("dir", "", "the `directory` of partial downloads (the store's tmp/)")
	c.ca = c.fs.String("ca", "", "a PEM `file` of CA certificates trusted besides the system's")
	c.quiet = c.fs.Bool("quiet", false, "no progress bar")
	return c
}

// options are a download's: a progress bar on a terminal, retries said
// on stderr.
func (c *common) options(client fetch.Doer) fetch.Options {
	o := fetch.Options{Client: client, Log: func(s string) { fmt.Fprintln(os.Stderr, "cimg-fetch:", s) }}
	if !*c.quiet && term.IsTerminal(int(os.Stderr.Fd())) {
		o.Progress = os.Stderr
	}
	return o
}

func get(args []string) (int, error) {
	c := newCommon("get")
	if err := c.fs.Parse(args); err != nil {
		return 2, err
	}
	if c.fs.NArg() != 1 || *c.dir == "" {
		return 2, errors.New("usage: cimg-fetch get --dir DIR [--ca FILE] [--quiet] URL")
	}
	url := c.fs.Arg(0)
	client, err := fetch.NewClient(*c.ca)
	if err != nil {
		return 1, err
	}
	ctx, stop := parentContext()
	defer stop()
	path, err := fetch.Get(ctx, *c.dir, url, url, c.options(client))
	if err != nil {
		return 1, fmt.Errorf("download %s: %w", url, err)
	}
	fmt.Printf("%s\t%s\n", path, url)
	return 0, nil
}
