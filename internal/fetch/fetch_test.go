package fetch

import (
	"bytes"
	"context"
	"crypto/rand"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"cimg.dev/cimg/internal/partial"
)

func TestContentRange(t *testing.T) {
	for _, c := range []struct {
		in           string
		start, total int64
		bad          bool
	}{
		{"bytes 100-199/200", 100, 200, false},
		{"bytes 0-0/1", 0, 1, false},
		{"bytes 5-9/*", 5, -1, false},
		{"bytes 5-9/9", 0, 0, true}, // end beyond the total
		{"bytes 9-5/20", 0, 0, true},
		{"items 0-1/2", 0, 0, true},
		{"bytes 1-2", 0, 0, true},
		{"bytes x-2/3", 0, 0, true},
	} {
		start, total, err := contentRange(c.in)
		if (err != nil) != c.bad || !c.bad && (start != c.start || total != c.total) {
			t.Errorf("contentRange(%q) = %d, %d, %v", c.in, start, total, err)
		}
	}
}

// TestGetResumes: a download cut at byte 1000 by the server is resumed
// from there (a Range request with If-Range, answered 206) in the same
// call, and in a later call after one that gave up; the bytes on the
// wire are the file's once, plus nothing.
func TestGetResumes(t *testing.T) {
	body := make([]byte, 64<<10)
	rand.Read(body)
	var sent atomic.Int64
	var cuts atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("ETag", `"v1"`)
		if cuts.Add(-1) >= 0 {
			// Say the whole length, send 1000 bytes, and hang up.
			w.Header().Set("Content-Length", strconv.Itoa(len(body)))
			if r.Header.Get("Range") != "" {
				w.WriteHeader(http.StatusServiceUnavailable)
				return
			}
			w.Write(body[:1000])
			sent.Add(1000)
			w.(http.Flusher).Flush()
			conn, _, _ := w.(http.Hijacker).Hijack()
			conn.Close()
			return
		}
		cw := &countingWriter{ResponseWriter: w, n: &sent}
		http.ServeContent(cw, r, "app.cimg", time.Unix(1, 0), bytes.NewReader(body))
	}))
	defer srv.Close()
	dir := t.TempDir()
	url := srv.URL + "/app.cimg"
	o := Options{Attempts: 1, Backoff: time.Millisecond}

	// Cut (progress: the attempt count starts again), then refused (503,
	// no progress), and no attempt left: the partial is kept.
	cuts.Store(2)
	if _, err := Get(context.Background(), dir, url, url, o); err == nil || !strings.Contains(err.Error(), "kept") {
		t.Fatalf("a cut download with no attempt left: %v", err)
	}
	if fi, err := os.Stat(partial.Base(dir, url) + ".part"); err != nil || fi.Size() != 1000 {
		t.Fatalf("partial after the cut: %v %v", fi, err)
	}
	// The next call resumes from byte 1000.
	sent.Store(0)
	p, err := Get(context.Background(), dir, url, url, o)
	if err != nil {
		t.Fatal(err)
	}
	got, _ := os.ReadFile(p)
	if !bytes.Equal(got, body) {
		t.Fatalf("the resumed file differs from the served one (%d bytes)", len(got))
	}
	if want := int64(len(body) - 1000); sent.Load() != want {
		t.Errorf("the resuming call moved %d bytes, want %d (the rest only)", sent.Load(), want)
	}
	partial.Discard(dir, url)
	if left, _ := filepath.Glob(filepath.Join(dir, "*")); len(left) != 0 {
		t.Errorf("left after Discard: %v", left)
	}

	// Cut twice within one call with attempts to spare: it retries.
	cuts.Store(1)
	o.Attempts = 3
	if p, err = Get(context.Background(), dir, url, url, o); err != nil {
		t.Fatal(err)
	}
	if got, _ := os.ReadFile(p); !bytes.Equal(got, body) {
		t.Error("the retried file differs from the served one")
	}
}

type countingWriter struct {
	http.ResponseWriter
	n *atomic.Int64
}

// Write counts b before it goes out: a write as large as the server's
// buffer goes straight to the connection, and the client can have it,
// and the test read the count, before Write returns (CI saw the last
// 32 KiB missing so).
func (c *countingWriter) Write(b []byte) (int, error) {
	c.n.Add(int64(len(b)))
	n, err := c.ResponseWriter.Write(b)
	c.n.Add(int64(n - len(b)))
	return n, err
}

// TestGetRefusesAMisplacedRange: a 206 that does not start where the
// partial ends is not appended.
func TestGetRefusesAMisplacedRange(t *testing.T) {
	body := []byte(strings.Repeat("abcdefghij", 100))
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("ETag", `"v1"`)
		if r.Header.Get("Range") != "" {
			w.Header().Set("Content-Range", fmt.Sprintf("bytes 0-%d/%d", len(body)-1, len(body)))
			w.WriteHeader(http.StatusPartialContent)
			w.Write(body)
			return
		}
		w.Write(body)
	}))
	defer srv.Close()
	dir := t.TempDir()
	url := srv.URL + "/x"
	b := partial.Base(dir, url)
	os.WriteFile(b+".part", body[:100], 0o600)
	writeSidecar(b+".json", &sidecar{URL: url, Length: int64(len(body)), ETag: `"v1"`})
	_, err := Get(context.Background(), dir, url, url, Options{Attempts: 1})
	if err == nil || !strings.Contains(err.Error(), "does not start at byte 100") {
		t.Fatalf("a 206 from byte 0 to a request from byte 100: %v", err)
	}
	if got, _ := os.ReadFile(b + ".part"); !bytes.Equal(got, body[:100]) {
		t.Errorf("the partial changed: %d bytes", len(got))
	}
}

// TestGetFullDisk: a full store filesystem ends the download at once
// (no retry can fix it), saying so.
func TestGetFullDisk(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Fatal("needs root, to mount a small tmpfs (CI runs as root)")
	}
	dir := t.TempDir()
	if err := unix.Mount("tmpfs", dir, "tmpfs", 0, "size=16k"); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unix.Unmount(dir, unix.MNT_DETACH) })
	body := make([]byte, 256<<10)
	var requests atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		requests.Add(1)
		http.ServeContent(w, r, "x", time.Unix(1, 0), bytes.NewReader(body))
	}))
	defer srv.Close()
	url := srv.URL + "/x"
	_, err := Get(context.Background(), dir, url, url, Options{Attempts: 3, Backoff: time.Millisecond})
	if err == nil || !strings.Contains(err.Error(), "filesystem is full") {
		t.Fatalf("a download onto a full filesystem: %v", err)
	}
	if n := requests.Load(); n != 1 {
		t.Errorf("%d requests: a full disk was retried", n)
	}
}

// TestGetProgressRestartsTheCount: a link that cuts every response after
// a few bytes still gets the file in one call: an attempt that took the
// partial further does not count against the limit (here 2 attempts, and
// 33 cuts).
func TestGetProgressRestartsTheCount(t *testing.T) {
	body := make([]byte, 32<<10)
	rand.Read(body)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("ETag", `"v1"`)
		cw := &cutWriter{ResponseWriter: w, left: 1000}
		http.ServeContent(cw, r, "x", time.Unix(1, 0), bytes.NewReader(body))
	}))
	defer srv.Close()
	url := srv.URL + "/x"
	p, err := Get(context.Background(), t.TempDir(), url, url, Options{Attempts: 2, Backoff: time.Millisecond})
	if err != nil {
		t.Fatalf("a download cut every 1000 bytes, 2 attempts without progress allowed: %v", err)
	}
	if got, _ := os.ReadFile(p); !bytes.Equal(got, body) {
		t.Error("the file differs from the served one")
	}
}

// cutWriter sends left bytes of the body, then hangs up.
type cutWriter struct {
	http.ResponseWriter
	left int
}

func (c *cutWriter) Write(b []byte) (int, error) {
	if len(b) > c.left {
		c.ResponseWriter.Write(b[:c.left])
		c.ResponseWriter.(http.Flusher).Flush()
		conn, _, _ := c.ResponseWriter.(http.Hijacker).Hijack()
		conn.Close()
		return 0, fmt.Errorf("cut")
	}
	c.left -= len(b)
	return c.ResponseWriter.Write(b)
}
