// Package fetch downloads an image over HTTP(S) into a directory of
// partial files, resumably: what one attempt got, the next one (in the
// same command, after a backoff, or in a later command) continues with
// Range and If-Range, as long as the server's validator says the file is
// the same. Nothing here trusts the bytes: the caller admits the complete
// file by its own hash tree and signatures, and discards it otherwise.
//
// Layout in dir (the store's tmp/), named by package partial:
// dl-KEY.part, the bytes so far, and dl-KEY.json, its sidecar (URL,
// expected length, ETag, Last-Modified). A Get holds an exclusive flock
// on the .part while it writes; partial.Stale (gc) removes partials no
// Get holds. It links net/http and TLS: only the cimg-fetch helper uses
// it, so that cimg-run's start (every launch) does not pay their package
// initialisation (+0.7 ms measured) nor its waiters their memory.
package fetch

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/schollz/progressbar/v3"
	"golang.org/x/sys/unix"

	"cimg.dev/cimg/internal/partial"
)

// Doer sends HTTP requests: an *http.Client, or a registry client that
// adds authentication.
type Doer interface {
	Do(*http.Request) (*http.Response, error)
}

// Options tune Get.
type Options struct {
	Client   Doer          // default: NewClient("")
	Attempts int           // attempts in this call (default 5)
	Backoff  time.Duration // before the second attempt (default 500 ms), doubling, at most 30 s
	Stall    time.Duration // an attempt with no byte for this long is cut (default 30 s)
	Size     int64         // the expected length when the caller knows it (an OCI descriptor's), else 0
	Progress io.Writer     // a terminal to draw a progress bar on; nil: silent
	Log      func(string)  // told of each failed attempt and what comes next; nil: silent
}

// sidecar describes the bytes in a .part: which file they are the start
// of, as the server named it.
type sidecar struct {
	URL          string `json:"url"`
	Length       int64  `json:"length"` // the whole file's, -1 when the server did not say
	ETag         string `json:"etag,omitempty"`
	LastModified string `json:"last_modified,omitempty"`
}

// validator is what If-Range may carry: a strong ETag, else the date
// (a weak ETag cannot be used there, RFC 9110 13.1.5).
func (s *sidecar) validator() string {
	if s.ETag != "" && !strings.HasPrefix(s.ETag, "W/") {
		return s.ETag
	}
	return s.LastModified
}

// permanent marks an error another attempt cannot fix.
type permanent struct{ error }

func (p permanent) Unwrap() error { return p.error }

// Get downloads url into dir, resuming the partial of key, and returns
// the path of the complete file. Errors that another attempt cannot fix
// (404, a TLS failure, a length that contradicts the caller's) end it at
// once; the partial stays for a later Get unless it is known bad.
func Get(ctx context.Context, dir, key, url string, o Options) (string, error) {
	if o.Client == nil {
		c, err := NewClient("")
		if err != nil {
			return "", err
		}
		o.Client = c
	}
	if o.Attempts <= 0 {
		o.Attempts = 5
	}
	if o.Backoff <= 0 {
		o.Backoff = 500 * time.Millisecond
	}
	if o.Stall <= 0 {
		o.Stall = 30 * time.Second
	}
	if o.Log == nil {
		o.Log = func(string) {}
	}
	b := partial.Base(dir, key)
	g := &getter{url: url, o: o, part: b + ".part", side: b + ".json"}
	f, err := os.OpenFile(g.part, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return "", err
	}
	defer f.Close()
	// One writer per source: a second command for the same URL is told,
	// rather than both appending to one file.
	if err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil {
		return "", fmt.Errorf("another command is downloading %s (into %s): %w", url, g.part, err)
	}
	g.f = f
	g.sc = readSidecar(g.side)
	if g.sc == nil || g.sc.URL != url {
		g.sc = nil
		if err := g.restart(); err != nil {
			return "", err
		}
	}
	// Attempts count those that got nowhere: one that took the partial
	// further than it ever was starts the count again (a flaky link
	// that cuts every few megabytes still gets the file; each such
	// attempt is real progress towards a finite end).
	backoff, furthest := o.Backoff, g.size()
	for attempt := 1; ; attempt++ {
		err := g.attempt(ctx)
		if n := g.size(); err != nil && n > furthest {
			furthest, attempt, backoff = n, 0, o.Backoff
		}
		if err == nil {
			if err := f.Sync(); err != nil {
				return "", err
			}
			return g.part, nil
		}
		var p permanent
		if errors.As(err, &p) || ctx.Err() != nil || attempt == o.Attempts {
			if ctx.Err() != nil {
				err = ctx.Err()
			}
			if n := g.size(); n > 0 && !errors.As(err, &p) {
				return "", fmt.Errorf("%w (after %d attempts; the %d bytes so far are kept in %s: the next install of it resumes)", err, attempt, n, g.part)
			} else if n == 0 {
				partial.Discard(dir, key) // nothing to resume: no litter
			}
			return "", err
		}
		o.Log(fmt.Sprintf("download of %s: %v; attempt %d of %d in %v", url, err, attempt+1, o.Attempts, backoff))
		select {
		case <-ctx.Done():
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, 30*time.Second)
	}
}

type getter struct {
	url        string
	o          Options
	part, side string
	f          *os.File
	sc         *sidecar
}

func (g *getter) size() int64 {
	fi, err := g.f.Stat()
	if err != nil {
		return 0
	}
	return fi.Size()
}

// restart empties the partial and forgets its sidecar.
func (g *getter) restart() error {
	g.sc = nil
	os.Remove(g.side)
	if err := g.f.Truncate(0); err != nil {
		return fmt.Errorf("partial download %s: %w", g.part, err)
	}
	return nil
}

// attempt is one request: it appends to the partial what the server
// sends, and returns nil once the file is whole.
func (g *getter) attempt(ctx context.Context) error {
	have := g.size()
	if g.sc != nil && g.sc.Length >= 0 && have > g.sc.Length {
		if err := g.restart(); err != nil { // longer than the file: not its start
			return err
		}
		have = 0
	}
	if g.sc != nil && g.sc.Length >= 0 && have == g.sc.Length && have > 0 {
		return nil // complete already (the command that got it ended before admission)
	}
	resume := g.sc != nil && have > 0 && g.sc.validator() != ""
	if !resume && have > 0 {
		if err := g.restart(); err != nil { // nothing to prove the bytes are this file's start
			return err
		}
		have = 0
	}
	actx, cancel := context.WithCancel(ctx)
	defer cancel()
	req, err := http.NewRequestWithContext(actx, http.MethodGet, g.url, nil)
	if err != nil {
		return permanent{err}
	}
	if resume {
		req.Header.Set("Range", "bytes="+strconv.FormatInt(have, 10)+"-")
		req.Header.Set("If-Range", g.sc.validator())
	}
	resp, err := g.o.Client.Do(req)
	if err != nil {
		return classify(err)
	}
	defer resp.Body.Close()
	switch code := resp.StatusCode; {
	case code == http.StatusPartialContent:
		if !resume {
			return fmt.Errorf("the server sent part of the file (206) to a request for all of it")
		}
		start, total, err := contentRange(resp.Header.Get("Content-Range"))
		if err != nil || start != have {
			// Appending would put bytes at the wrong place.
			return fmt.Errorf("refused a 206 whose Content-Range %q does not start at byte %d", resp.Header.Get("Content-Range"), have)
		}
		if changed(g.sc, resp, total) {
			// A server that ignored If-Range: these bytes are another file's.
			if err := g.restart(); err != nil {
				return err
			}
			return errors.New("the file changed on the server since the download began: starting again")
		}
		if g.sc.Length < 0 && total >= 0 {
			g.sc.Length = total
			if err := writeSidecar(g.side, g.sc); err != nil {
				return permanent{err}
			}
		}
	case code == http.StatusOK:
		// A fresh start: nothing was asked for, or the file changed (the
		// If-Range did not match), or the server does not do ranges.
		if resume {
			g.o.Log(fmt.Sprintf("download of %s: the server sent the whole file to a request for the rest (changed, or no ranges): starting again", g.url))
		}
		if err := g.restart(); err != nil {
			return err
		}
		have = 0
		g.sc = &sidecar{URL: g.url, Length: resp.ContentLength, ETag: resp.Header.Get("ETag"), LastModified: resp.Header.Get("Last-Modified")}
		if err := writeSidecar(g.side, g.sc); err != nil {
			return permanent{err}
		}
	case code == http.StatusRequestedRangeNotSatisfiable:
		// The bytes we have are not the start of what the server has.
		if err := g.restart(); err != nil {
			return err
		}
		return errors.New("the server does not have the range we asked for (416): the partial download is discarded")
	case code == http.StatusRequestTimeout || code == http.StatusTooManyRequests || code >= 500:
		return fmt.Errorf("the server answered %s", resp.Status)
	default:
		return permanent{fmt.Errorf("the server answered %s", resp.Status)}
	}
	if g.o.Size > 0 && g.sc.Length >= 0 && g.sc.Length != g.o.Size {
		return permanent{fmt.Errorf("the server has %d bytes, the reference says %d", g.sc.Length, g.o.Size)}
	}
	if g.sc.Length < 0 && g.o.Size > 0 {
		g.sc.Length = g.o.Size
	}
	if _, err := g.f.Seek(have, io.SeekStart); err != nil {
		return permanent{err}
	}
	// A watchdog: no byte for Stall ends the attempt (a stalled link
	// would otherwise hold it for ever).
	watch := time.AfterFunc(g.o.Stall, cancel)
	defer watch.Stop()
	var w io.Writer = &diskWriter{g.f}
	if g.o.Progress != nil {
		bar := progressbar.NewOptions64(g.sc.Length, progressbar.OptionSetWriter(g.o.Progress), progressbar.OptionShowBytes(true),
			progressbar.OptionSetDescription("downloading"), progressbar.OptionThrottle(100*time.Millisecond), progressbar.OptionClearOnFinish())
		bar.Set64(have)
		defer bar.Close()
		w = io.MultiWriter(w, bar)
	}
	n, err := io.Copy(w, &stallReader{r: resp.Body, t: watch, d: g.o.Stall})
	got := have + n
	var p permanent
	if errors.As(err, &p) {
		return err
	}
	if err != nil {
		if actx.Err() != nil && ctx.Err() == nil {
			return fmt.Errorf("no data for %v after byte %d: %w", g.o.Stall, got, err)
		}
		return classify(err)
	}
	switch {
	case g.sc.Length >= 0 && got < g.sc.Length:
		return fmt.Errorf("the connection ended after %d of %d bytes", got, g.sc.Length)
	case g.sc.Length >= 0 && got > g.sc.Length:
		if err := g.restart(); err != nil {
			return err
		}
		return fmt.Errorf("the server sent %d bytes of a %d-byte file: discarded", got, g.sc.Length)
	}
	return nil
}

// changed reports whether a 206 is of another file than the sidecar's.
func changed(sc *sidecar, resp *http.Response, total int64) bool {
	if e := resp.Header.Get("ETag"); e != "" && sc.ETag != "" && e != sc.ETag {
		return true
	}
	if m := resp.Header.Get("Last-Modified"); m != "" && sc.LastModified != "" && m != sc.LastModified {
		return true
	}
	return total >= 0 && sc.Length >= 0 && total != sc.Length
}

// contentRange parses "bytes START-END/TOTAL" (TOTAL may be "*": -1).
func contentRange(v string) (start, total int64, err error) {
	bad := fmt.Errorf("bad Content-Range %q", v)
	r, ok := strings.CutPrefix(v, "bytes ")
	if !ok {
		return 0, 0, bad
	}
	span, t, ok := strings.Cut(r, "/")
	s, e, ok2 := strings.Cut(span, "-")
	if !ok || !ok2 {
		return 0, 0, bad
	}
	if start, err = strconv.ParseInt(s, 10, 64); err != nil {
		return 0, 0, bad
	}
	end, err := strconv.ParseInt(e, 10, 64)
	if err != nil || end < start {
		return 0, 0, bad
	}
	if t == "*" {
		return start, -1, nil
	}
	if total, err = strconv.ParseInt(t, 10, 64); err != nil || end >= total {
		return 0, 0, bad
	}
	return start, total, nil
}

// classify tells a transport error another attempt may get past (a
// reset, a timeout, a refused connection on a flaky link) from one it
// cannot (a certificate the roots do not vouch for, a bad URL).
func classify(err error) error {
	var cert *tls.CertificateVerificationError
	var unknown x509.UnknownAuthorityError
	var hostname x509.HostnameError
	var invalid x509.CertificateInvalidError
	switch {
	case errors.As(err, &cert), errors.As(err, &unknown), errors.As(err, &hostname), errors.As(err, &invalid):
		return permanent{fmt.Errorf("%w (a private CA? --ca FILE trusts it)", err)}
	case strings.Contains(err.Error(), "unsupported protocol scheme"):
		return permanent{err}
	}
	var dns *net.DNSError
	if errors.As(err, &dns) && dns.IsNotFound {
		return permanent{err}
	}
	return err
}

// diskWriter marks a failed write to the partial (a full disk, a
// read-only store) as one no retry of the download can fix.
type diskWriter struct{ f *os.File }

func (d *diskWriter) Write(b []byte) (int, error) {
	n, err := d.f.Write(b)
	if err != nil {
		advice := ""
		if errors.Is(err, unix.ENOSPC) {
			advice = " (the store's filesystem is full: cimg-run gc frees what no app uses)"
		}
		err = permanent{fmt.Errorf("write %s: %w%s", d.f.Name(), err, advice)}
	}
	return n, err
}

// stallReader re-arms the watchdog at each byte read.
type stallReader struct {
	r io.Reader
	t *time.Timer
	d time.Duration
}

func (s *stallReader) Read(p []byte) (int, error) {
	n, err := s.r.Read(p)
	if n > 0 {
		s.t.Reset(s.d)
	}
	return n, err
}

func readSidecar(p string) *sidecar {
	b, err := os.ReadFile(p)
	if err != nil {
		return nil
	}
	var s sidecar
	if json.Unmarshal(b, &s) != nil || s.URL == "" {
		return nil
	}
	return &s
}

// writeSidecar replaces the sidecar: temp file, fsync, rename, fsync of
// the directory, so that it always describes a start of the .part.
func writeSidecar(p string, s *sidecar) error {
	b, err := json.Marshal(s)
	if err != nil {
		return err
	}
	tmp := p + ".tmp"
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return err
	}
	_, err = f.Write(b)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, p)
	}
	if err != nil {
		os.Remove(tmp)
		return fmt.Errorf("download sidecar %s: %w", p, err)
	}
	if d, err := os.Open(filepath.Dir(p)); err == nil {
		d.Sync()
		d.Close()
	}
	return nil
}

// NewClient is an HTTP client with the system's roots plus those in
// caFile (PEM, if set) and proxies from the environment. Responses are
// never transparently decompressed: offsets are the file's.
func NewClient(caFile string) (*http.Client, error) {
	pool, err := x509.SystemCertPool()
	if err != nil {
		pool = x509.NewCertPool()
	}
	if caFile != "" {
		pem, err := os.ReadFile(caFile)
		if err != nil {
			return nil, fmt.Errorf("--ca: %w", err)
		}
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("--ca %s: no PEM certificate in it", caFile)
		}
	}
	tr := &http.Transport{
		Proxy:                 http.ProxyFromEnvironment,
		DialContext:           (&net.Dialer{Timeout: 30 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
		TLSClientConfig:       &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12},
		TLSHandshakeTimeout:   15 * time.Second,
		ResponseHeaderTimeout: 60 * time.Second,
		DisableCompression:    true,
		ForceAttemptHTTP2:     true,
	}
	return &http.Client{Transport: tr}, nil
}
