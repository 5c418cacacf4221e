// Package fetch downloads an image over HTTP(S) into a directory of
// partial files, resumably: what one attempt got, the next one (in the
// same command, after a backoff, or in a later command) continues with
// Range and If-Range, as long as the server's validator says the file is
// the same. Nothing here trusts the bytes: the caller admits the complete
// file by its own hash tree and signatures, and discards it otherwise.
//
// Layout in dir (the store's tmp/): dl-KEY.part, the bytes so far, and
// dl-KEY.json, its sidecar (URL, expected length, ETag, Last-Modified),
// where KEY is a hash of the source's key (its URL, or an OCI digest). A
// Get holds an exclusive flock on the .part while it writes; Stale (gc)
// removes partials no Get holds.
package fetch

import (
	"context"
	"errors"
	"io"
	"net/http"
	"time"
)

// Doer sends HTTP requests: an *http.Client, or a registry client that
// adds authentication.
type Doer interface {
	Do(*http.Request) (*http.Response, error)
}

// Options tune Get.
type Options struct {
	Client   Doer          // default: NewClient("")
	Attempts int           // attempts in this call (default 6)
	Backoff  time.Duration // before the second attempt (default 500 ms), doubling, at most 30 s
	Stall    time.Duration // an attempt with no byte for this long is cut (default 30 s)
	Size     int64         // the expected length when the caller knows it (an OCI descriptor's), else 0
	Progress io.Writer     // a terminal to draw a progress bar on; nil: silent
	Log      func(string)  // told of each failed attempt and what comes next; nil: silent
}

// ErrNotImplemented is the skeleton's.
var ErrNotImplemented = errors.New("fetch: not implemented yet")

// Get downloads url into dir, resuming the partial of key, and returns
// the path of the complete file. Errors that another attempt cannot fix
// (404, a TLS failure, a length or Content-Range that contradicts the
// sidecar's twice) end it at once; the partial stays for a later Get
// unless it is known bad.
func Get(ctx context.Context, dir, key, url string, o Options) (string, error) {
	return "", ErrNotImplemented
}

// Discard removes key's partial and sidecar (after admission, or when the
// complete file was refused: its bytes are not worth resuming).
func Discard(dir, key string) {}

// Stale removes the partials in dir that no Get is writing, and returns
// their paths.
func Stale(dir string) ([]string, error) { return nil, nil }

// NewClient is an HTTP client with the system's roots plus those in
// caFile (PEM, if set) and proxies from the environment.
func NewClient(caFile string) (*http.Client, error) { return nil, ErrNotImplemented }
