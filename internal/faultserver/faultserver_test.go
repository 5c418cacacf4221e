package faultserver

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"syscall"
	"testing"
	"time"
)

// get asks for name from offset from (a Range header when from > 0),
// with If-Range ifRange when set, and returns the response and as much
// of the body as arrived.
func get(t *testing.T, s *Server, name string, from int64, ifRange string) (*http.Response, []byte, error) {
	t.Helper()
	req, _ := http.NewRequest("GET", s.URLOf(name), nil)
	if from > 0 {
		req.Header.Set("Range", fmt.Sprintf("bytes=%d-", from))
	}
	if ifRange != "" {
		req.Header.Set("If-Range", ifRange)
	}
	// A fresh transport each time: a cut connection must not be reused.
	c := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}}
	resp, err := c.Do(req)
	if err != nil {
		return nil, nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return resp, b, err
}

func content(n int) []byte {
	b := make([]byte, n)
	r := rand.New(rand.NewPCG(1, 2))
	for i := range b {
		b[i] = byte(r.Uint32())
	}
	return b
}

// TestHonest: ranges, If-Range with the ETag and with Last-Modified.
func TestHonest(t *testing.T) {
	s, err := New(nil)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	data := content(100000)
	s.Put("f", data)
	resp, b, err := get(t, s, "f", 0, "")
	if err != nil || resp.StatusCode != 200 || !bytes.Equal(b, data) {
		t.Fatalf("whole: %v %v %d bytes", err, resp, len(b))
	}
	etag := resp.Header.Get("ETag")
	resp, b, err = get(t, s, "f", 40000, etag)
	if err != nil || resp.StatusCode != 206 || !bytes.Equal(b, data[40000:]) || resp.Header.Get("Content-Range") != "bytes 40000-99999/100000" {
		t.Fatalf("range: %v %v %d bytes", err, resp, len(b))
	}
	resp, _, _ = get(t, s, "f", 40000, `"other"`)
	if resp.StatusCode != 200 {
		t.Errorf("If-Range with a stale ETag: %d, want 200", resp.StatusCode)
	}
	s.NoETag = true
	resp, b, _ = get(t, s, "f", 0, "")
	lm := resp.Header.Get("Last-Modified")
	if resp.Header.Get("ETag") != "" || lm == "" {
		t.Fatalf("NoETag: %v", resp.Header)
	}
	if resp, _, _ = get(t, s, "f", 10, lm); resp.StatusCode != 206 {
		t.Errorf("If-Range with Last-Modified: %d, want 206", resp.StatusCode)
	}
	s.Put("f", data) // replaced: Last-Modified moves on
	if resp, _, _ = get(t, s, "f", 10, lm); resp.StatusCode != 200 {
		t.Errorf("If-Range with a stale Last-Modified: %d, want 200", resp.StatusCode)
	}
	if resp, _, _ = get(t, s, "f", 100000, ""); resp.StatusCode != 416 {
		t.Errorf("a range past the end: %d, want 416", resp.StatusCode)
	}
	if resp, _, _ = get(t, s, "nothing", 0, ""); resp.StatusCode != 404 {
		t.Errorf("no such file: %d", resp.StatusCode)
	}
	if want := int64(100000 + 60000 + 100000 + 100000 + 99990 + 100000); s.BytesSent() < want {
		t.Errorf("BytesSent %d, want at least %d", s.BytesSent(), want)
	}
}

// TestFaults: each fault does what it says, at the file offset it names.
func TestFaults(t *testing.T) {
	s, err := New(nil)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	data := content(300000)
	s.Put("f", data)
	other := content(1000)

	s.Faults = Schedule(Fault{Kind: Reset, At: 123457})
	_, b, err := get(t, s, "f", 100000, "")
	if !errors.Is(err, syscall.ECONNRESET) || len(b) != 23457 || !bytes.Equal(b, data[100000:123457]) {
		t.Errorf("reset at 123457 from 100000: %v, %d bytes", err, len(b))
	}
	s.Faults = Schedule(Fault{Kind: Truncate, At: 5000})
	_, b, err = get(t, s, "f", 0, "")
	if !errors.Is(err, io.ErrUnexpectedEOF) || !bytes.Equal(b, data[:5000]) {
		t.Errorf("truncate at 5000: %v, %d bytes", err, len(b))
	}
	s.Faults = Schedule(Fault{Kind: Flip, At: 200001})
	_, b, err = get(t, s, "f", 200000, "")
	if err != nil || len(b) != 100000 || b[1] != data[200001]^0xff || !bytes.Equal(b[2:], data[200002:]) || b[0] != data[200000] {
		t.Errorf("flip at 200001: %v, %d bytes", err, len(b))
	}
	if data[200001] == b[1] {
		t.Error("the flip changed the server's own copy")
	}
	s.Faults = Schedule(Fault{Kind: Full})
	resp, b, _ := get(t, s, "f", 1000, "")
	if resp.StatusCode != 200 || !bytes.Equal(b, data) {
		t.Errorf("full: %d, %d bytes", resp.StatusCode, len(b))
	}
	s.Faults = Schedule(Fault{Kind: WrongRange, At: 7})
	resp, b, _ = get(t, s, "f", 1000, "")
	if resp.StatusCode != 206 || resp.Header.Get("Content-Range") != "bytes 7-299999/300000" || !bytes.Equal(b, data[7:]) {
		t.Errorf("wrong range: %d %q, %d bytes", resp.StatusCode, resp.Header.Get("Content-Range"), len(b))
	}
	s.Faults = Schedule(Fault{Kind: Unsatisfiable})
	if resp, _, _ = get(t, s, "f", 1000, ""); resp.StatusCode != 416 || resp.Header.Get("Content-Range") != "bytes */300000" {
		t.Errorf("416: %d %v", resp.StatusCode, resp.Header)
	}
	s.Faults = Schedule(Fault{Kind: NotFound})
	if resp, _, _ = get(t, s, "f", 0, ""); resp.StatusCode != 404 {
		t.Errorf("404: %d", resp.StatusCode)
	}
	resp, _, _ = get(t, s, "f", 0, "")
	etag := resp.Header.Get("ETag")
	s.Faults = Schedule(Fault{Kind: Replace, With: other})
	resp, b, _ = get(t, s, "f", 500, etag)
	if resp.StatusCode != 200 || !bytes.Equal(b, other) || resp.Header.Get("ETag") == etag {
		t.Errorf("replace: %d, %d bytes, ETag %q (was %q)", resp.StatusCode, len(b), resp.Header.Get("ETag"), etag)
	}
	s.Put("f", data)
	s.Faults = Schedule(Fault{Kind: Stall, At: 1000, For: 300 * time.Millisecond})
	_, b, err = get(t, s, "f", 0, "")
	if err != nil || !bytes.Equal(b, data) {
		t.Errorf("stall: %v, %d bytes", err, len(b))
	}

	log := s.Log()
	if len(log) != 10 || log[0].Fault.Kind != Reset || log[0].Start != 100000 || log[0].From != 100000 || log[0].Bytes != 23457 || log[0].Status != 206 {
		t.Errorf("log: %d requests, first %+v", len(log), log[0])
	}
}

// TestRate: a rate-limited body arrives whole (how long it took is not
// checked: a loaded machine can only make it slower).
func TestRate(t *testing.T) {
	s, err := New(nil)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	data := content(200000)
	s.Put("f", data)
	s.Rate = 1 << 20
	_, b, err := get(t, s, "f", 0, "")
	if err != nil || !bytes.Equal(b, data) {
		t.Fatalf("%v, %d bytes", err, len(b))
	}
}
