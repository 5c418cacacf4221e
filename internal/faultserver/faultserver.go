// Package faultserver is an HTTP(S) file server for tests of downloads
// that must survive a bad network or a bad server. It is honest by
// default (Range, If-Range, ETag and Last-Modified as net/http's
// ServeContent implements them), and each request can be given one fault
// chosen by the test: a reset or a short body at a file offset, a stall,
// a flipped byte, a 200 where a 206 was due, a 206 for the wrong range, a
// 416, a 404, or the file replaced (new content, new validators) before
// the request is served. It counts the body bytes it sends, so a test can
// tell how much a resumable download cost.
//
// It is for tests only: nothing here is meant to serve real clients.
package faultserver

import (
	"bytes"
	"crypto/sha256"
	"crypto/tls"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"os"
	"path"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"
)

// Kind is a fault a request can be given.
type Kind int

const (
	None          Kind = iota // served honestly
	Reset                     // body cut at At by a TCP reset (RST)
	Truncate                  // body cut at At by an orderly close (FIN): a short body
	Stall                     // no byte for For once the body reaches At, then the rest
	Flip                      // the byte at file offset At inverted
	Full                      // Range ignored: 200 and the whole file
	WrongRange                // 206 whose Content-Range starts at At, not where asked
	Unsatisfiable             // 416, whatever was asked
	NotFound                  // 404
	Replace                   // the file becomes With (new ETag, Last-Modified) first, then served honestly
)

var kindNames = [...]string{"none", "reset", "truncate", "stall", "flip", "full", "wrong-range", "416", "404", "replace"}

func (k Kind) String() string {
	if int(k) < len(kindNames) {
		return kindNames[k]
	}
	return "kind(" + strconv.Itoa(int(k)) + ")"
}

// Fault is what one request gets.
type Fault struct {
	Kind Kind
	At   int64         // a file offset: where Reset, Truncate, Stall and Flip strike; WrongRange's false start
	For  time.Duration // Stall's length
	With []byte        // Replace's new content
}

func (f Fault) String() string {
	switch f.Kind {
	case Reset, Truncate, Flip, WrongRange:
		return fmt.Sprintf("%s@%d", f.Kind, f.At)
	case Stall:
		return fmt.Sprintf("stall@%d/%s", f.At, f.For)
	}
	return f.Kind.String()
}

// Request is what the test's fault function is told of a request.
type Request struct {
	Seq     int    // 0 for the server's first request
	Path    string // the URL's path
	Range   string // the Range header as sent
	IfRange string // the If-Range header as sent
	Start   int64  // the first byte asked for: 0 without a Range header, -1 for a Range this server does not parse
	Size    int64  // the file's current size (-1: no such file)
	ETag    string // the file's current ETag
}

// Served is the record of one request: what was asked, which fault it
// got, and what went out.
type Served struct {
	Request
	Fault  Fault
	Status int    // 0 if no header went out
	From   int64  // the file offset of the first body byte sent
	Bytes  int64  // body bytes sent
	ETag   string // the ETag of the content served (Replace changes it)
	Done   bool   // the handler has returned: Bytes is final
}

// Server is a running fault server. Set Faults and Rate before the first
// request, or while none is in flight.
type Server struct {
	// URL is the base URL, e.g. http://127.0.0.1:PORT (https:// with TLS).
	URL string
	// Faults chooses each request's fault; nil serves every request honestly.
	Faults func(Request) Fault
	// Rate limits each response's body to this many bytes a second (0: no limit).
	Rate int64
	// NoETag leaves the ETag out, so that If-Range must carry Last-Modified.
	NoETag bool

	srv   *http.Server
	ln    net.Listener
	sent  atomic.Int64
	seq   atomic.Int64
	mu    sync.Mutex
	files map[string]*file
	dir   string
	gen   int64
	log   []Served
}

type file struct {
	data    []byte
	etag    string
	modTime time.Time
}

// New starts a server on 127.0.0.1 (an ephemeral port), over TLS with
// cfg's certificates when cfg is not nil.
func New(cfg *tls.Config) (*Server, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	s := &Server{ln: ln, files: map[string]*file{}, URL: "http://" + ln.Addr().String()}
	if cfg != nil {
		cfg = cfg.Clone()
		// HTTP/1.1 only: a fault hijacks the connection to cut it, which
		// HTTP/2 does not allow.
		cfg.NextProtos = []string{"http/1.1"}
		ln = tls.NewListener(ln, cfg)
		s.URL = "https://" + s.ln.Addr().String()
	}
	// The server's own complaints (a client that went away mid-body is
	// what these tests are made of) would only be noise.
	s.srv = &http.Server{Handler: s, ErrorLog: log.New(io.Discard, "", 0)}
	go s.srv.Serve(ln)
	return s, nil
}

// Close stops the server and cuts every connection.
func (s *Server) Close() error { return s.srv.Close() }

// Put serves content at /name (replacing what was there: a new ETag and a
// Last-Modified a second after the previous one's, so that a client's
// If-Range of either kind no longer matches).
func (s *Server) Put(name string, content []byte) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.putLocked(name, content)
}

func (s *Server) putLocked(name string, content []byte) {
	s.gen++
	sum := sha256.Sum256(content)
	// Generation and content both in the ETag: putting the same bytes
	// again is a replacement too (a file rewritten in place).
	etag := fmt.Sprintf(`"%d-%s"`, s.gen, hex.EncodeToString(sum[:8]))
	s.files[strings.TrimPrefix(name, "/")] = &file{data: content, etag: etag, modTime: time.Unix(1700000000+s.gen, 0)}
}

// ServeDir serves the files of dir too (after those put): read at each
// request, with an ETag made of the file's size and modification time.
func (s *Server) ServeDir(dir string) {
	s.mu.Lock()
	s.dir = dir
	s.mu.Unlock()
}

// URLOf is the URL of /name.
func (s *Server) URLOf(name string) string { return s.URL + "/" + strings.TrimPrefix(name, "/") }

// BytesSent is the number of body bytes sent so far, over all requests.
func (s *Server) BytesSent() int64 { return s.sent.Load() }

// Log returns the requests served so far, in the order they began.
func (s *Server) Log() []Served {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]Served(nil), s.log...)
}

// lookup returns the file at name, from memory or the directory.
func (s *Server) lookup(name string) *file {
	s.mu.Lock()
	defer s.mu.Unlock()
	if f := s.files[name]; f != nil {
		return f
	}
	if s.dir == "" || name == "" {
		return nil
	}
	p := filepath.Join(s.dir, filepath.FromSlash(name))
	b, err := os.ReadFile(p)
	if err != nil {
		return nil
	}
	fi, err := os.Stat(p)
	if err != nil {
		return nil
	}
	return &file{data: b, etag: fmt.Sprintf(`"%x-%x"`, fi.Size(), fi.ModTime().UnixNano()), modTime: fi.ModTime()}
}

// rangeStart parses the first byte of a "bytes=N-..." header: what every
// resuming client sends. Other forms (suffix ranges, several ranges) are
// served by ServeContent all the same, but reported as -1.
func rangeStart(h string) int64 {
	if h == "" {
		return 0
	}
	spec, ok := strings.CutPrefix(h, "bytes=")
	if !ok || strings.Contains(spec, ",") {
		return -1
	}
	first, _, ok := strings.Cut(spec, "-")
	n, err := strconv.ParseInt(strings.TrimSpace(first), 10, 64)
	if !ok || err != nil || n < 0 {
		return -1
	}
	return n
}

func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	name := strings.TrimPrefix(path.Clean("/"+r.URL.Path), "/")
	f := s.lookup(name)
	req := Request{Seq: int(s.seq.Add(1) - 1), Path: r.URL.Path, Range: r.Header.Get("Range"), IfRange: r.Header.Get("If-Range"),
		Start: rangeStart(r.Header.Get("Range")), Size: -1}
	if f != nil {
		req.Size, req.ETag = int64(len(f.data)), f.etag
	}
	var fault Fault
	if s.Faults != nil {
		fault = s.Faults(req)
	}
	if fault.Kind == Replace {
		s.mu.Lock()
		s.putLocked(name, fault.With)
		f = s.files[name]
		s.mu.Unlock()
	}
	rec := &Served{Request: req, Fault: fault, From: -1}
	s.mu.Lock()
	s.log = append(s.log, *rec)
	idx := len(s.log) - 1
	s.mu.Unlock()
	fw := &faultWriter{w: w, s: s, rec: rec, fault: fault}
	defer func() {
		s.mu.Lock()
		rec.Done = true
		s.log[idx] = *rec
		s.mu.Unlock()
	}()

	if f == nil || fault.Kind == NotFound {
		http.Error(fw, "404 page not found", http.StatusNotFound)
		return
	}
	rec.ETag = f.etag
	size := int64(len(f.data))
	if !s.NoETag {
		w.Header().Set("ETag", f.etag)
	}
	w.Header().Set("Content-Type", "application/octet-stream")
	switch fault.Kind {
	case Unsatisfiable:
		w.Header().Set("Content-Range", fmt.Sprintf("bytes */%d", size))
		fw.WriteHeader(http.StatusRequestedRangeNotSatisfiable)
		return
	case Full:
		// As a server or proxy that does not do ranges: the whole file.
		r.Header.Del("Range")
	case WrongRange:
		// A 206 that is self-consistent (its bytes are the ones its
		// Content-Range names) but for another range than asked.
		from := fault.At
		if from < 0 || from >= size {
			from = 0
		}
		w.Header().Set("Last-Modified", f.modTime.UTC().Format(http.TimeFormat))
		w.Header().Set("Content-Range", fmt.Sprintf("bytes %d-%d/%d", from, size-1, size))
		w.Header().Set("Content-Length", strconv.FormatInt(size-from, 10))
		fw.WriteHeader(http.StatusPartialContent)
		if r.Method != http.MethodHead {
			fw.Write(f.data[from:])
		}
		return
	}
	http.ServeContent(fw, r, name, f.modTime, bytes.NewReader(f.data))
}

// errCut is what the writer returns once it has cut the connection, so
// that ServeContent stops copying.
var errCut = errors.New("faultserver: connection cut")

// faultWriter is the ResponseWriter ServeContent writes to: it knows the
// file offset of each body byte (from the status and Content-Range), so
// it can strike at a file offset, and it paces and counts the body.
type faultWriter struct {
	w      http.ResponseWriter
	s      *Server
	rec    *Served
	fault  Fault
	pos    int64 // the file offset of the next body byte
	began  time.Time
	sent   int64 // body bytes of this response
	done   bool  // the fault has struck (a stall or flip strikes once)
	cut    bool
	header bool
}

func (fw *faultWriter) Header() http.Header { return fw.w.Header() }

func (fw *faultWriter) WriteHeader(code int) {
	if fw.header {
		return
	}
	fw.header = true
	fw.rec.Status = code
	fw.pos = 0
	if code == http.StatusPartialContent {
		// "bytes FROM-TO/SIZE"
		cr := strings.TrimPrefix(fw.w.Header().Get("Content-Range"), "bytes ")
		if from, _, ok := strings.Cut(cr, "-"); ok {
			fw.pos, _ = strconv.ParseInt(from, 10, 64)
		}
	}
	fw.rec.From = fw.pos
	fw.began = time.Now()
	fw.w.WriteHeader(code)
}

func (fw *faultWriter) Write(p []byte) (int, error) {
	if !fw.header {
		fw.WriteHeader(http.StatusOK)
	}
	if fw.cut {
		return 0, errCut
	}
	total := 0
	for len(p) > 0 {
		chunk := p
		// A body fault strikes at a file offset: write up to it, then act.
		strikes := !fw.done && fw.fault.At >= fw.pos && fw.fault.At < fw.pos+int64(len(p))
		switch fw.fault.Kind {
		case Reset, Truncate, Stall:
		case Flip:
			if strikes {
				// Flip in a copy: the caller's buffer is the file itself.
				i := fw.fault.At - fw.pos
				chunk = append([]byte(nil), p...)
				chunk[i] ^= 0xff
				fw.done = true
				strikes = false
			}
		default:
			strikes = false
		}
		if strikes {
			chunk = p[:fw.fault.At-fw.pos]
		}
		n, err := fw.paced(chunk)
		total += n
		if err != nil {
			return total, err
		}
		p = p[len(chunk):]
		if strikes {
			fw.done = true
			switch fw.fault.Kind {
			case Reset, Truncate:
				fw.hangUp(fw.fault.Kind == Reset)
				return total, errCut
			case Stall:
				fw.flush()
				time.Sleep(fw.fault.For)
				fw.began = fw.began.Add(fw.fault.For) // the stall is not owed to the rate
			}
		}
	}
	return total, nil
}

// paced writes p at the server's rate, in pieces small enough that the
// client sees a steady stream, and counts what went out.
func (fw *faultWriter) paced(p []byte) (int, error) {
	rate := fw.s.Rate
	total := 0
	for len(p) > 0 {
		piece := p
		if rate > 0 && len(piece) > 8192 {
			piece = piece[:8192]
		}
		// Counted before the write, and what did not go out taken back
		// after: a client that has read the bytes finds them in
		// BytesSent, even while this goroutine has yet to run on (CI saw
		// a test read the count 27180 bytes short, its response read).
		fw.s.sent.Add(int64(len(piece)))
		n, err := fw.w.Write(piece)
		fw.s.sent.Add(int64(n - len(piece)))
		total += n
		fw.pos += int64(n)
		fw.sent += int64(n)
		fw.rec.Bytes += int64(n)
		if err != nil {
			return total, err
		}
		p = p[n:]
		if rate > 0 {
			fw.flush()
			due := fw.began.Add(time.Duration(float64(fw.sent) / float64(rate) * float64(time.Second)))
			if d := time.Until(due); d > 0 {
				time.Sleep(d)
			}
		}
	}
	return total, nil
}

func (fw *faultWriter) flush() {
	if fl, ok := fw.w.(http.Flusher); ok {
		fl.Flush()
	}
}

// hangUp sends what was written so far and closes the connection: with a
// reset (SO_LINGER 0: the client's read fails with ECONNRESET) or with an
// orderly FIN (the client sees a body shorter than its Content-Length).
func (fw *faultWriter) hangUp(reset bool) {
	fw.cut = true
	fw.flush()
	hj, ok := fw.w.(http.Hijacker)
	if !ok {
		panic(http.ErrAbortHandler)
	}
	conn, _, err := hj.Hijack()
	if err != nil {
		panic(http.ErrAbortHandler)
	}
	raw := conn
	if tc, ok := conn.(*tls.Conn); ok {
		raw = tc.NetConn()
	}
	if tcp, ok := raw.(*net.TCPConn); ok {
		// What was counted as sent must have reached the client's kernel:
		// a reset drops the send queue, and a byte counted but dropped
		// would make a resuming client look as if it fetched bytes twice.
		drain(tcp)
		if reset {
			tcp.SetLinger(0)
			tcp.Close()
			return
		}
	}
	conn.Close()
}

// drain waits (up to 2 s: a client that stopped reading never drains it)
// until the connection's send queue is empty, i.e. every byte written is
// acknowledged by the peer.
func drain(c *net.TCPConn) {
	rc, err := c.SyscallConn()
	if err != nil {
		return
	}
	for deadline := time.Now().Add(2 * time.Second); time.Now().Before(deadline); time.Sleep(time.Millisecond) {
		queued := 0
		rc.Control(func(fd uintptr) { queued, err = unix.IoctlGetInt(int(fd), unix.SIOCOUTQ) })
		if err != nil || queued == 0 {
			return
		}
	}
}

var _ io.Writer = (*faultWriter)(nil)

// Schedule is a fault function that gives the i-th request faults[i] and
// every later request none.
func Schedule(faults ...Fault) func(Request) Fault {
	var mu sync.Mutex
	i := 0
	return func(Request) Fault {
		mu.Lock()
		defer mu.Unlock()
		if i >= len(faults) {
			return Fault{}
		}
		i++
		return faults[i-1]
	}
}
