package main

// Delivery tests: `cimg-run install URL` against a server that misbehaves
// on purpose (internal/faultserver). What they hold the download to:
// bytes that do not verify are never admitted, a download cut short stays
// as one partial per source and the next command resumes it, the rules of
// Range/If-Range are kept, and a resumed download costs about the file's
// size on the wire, not a multiple of it. Outcomes and byte counts only:
// no timing is a pass/fail criterion.

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"math/big"
	mrand "math/rand/v2"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"cimg.dev/cimg/format"
	"cimg.dev/cimg/internal/faultserver"
)

// dataImage builds an image of about n bytes: a root holding n seeded
// pseudo-random bytes (incompressible, so the image is as large) in files
// of at most 2 MB, and a script as its command (never run).
func dataImage(t *testing.T, version string, n int, seed uint64) []byte {
	t.Helper()
	dir := t.TempDir()
	root := filepath.Join(dir, "root")
	os.MkdirAll(filepath.Join(root, "bin"), 0o755)
	os.WriteFile(filepath.Join(root, "bin/run"), []byte("#!/bin/sh\nexit 0\n"), 0o755)
	r := mrand.NewChaCha8([32]byte{byte(seed), byte(seed >> 8), byte(seed >> 16), byte(seed >> 24), byte(seed >> 32), byte(seed >> 40), byte(seed >> 48), byte(seed >> 56)})
	for i := 0; n > 0; i++ {
		b := make([]byte, min(n, 2<<20))
		r.Read(b)
		os.WriteFile(filepath.Join(root, fmt.Sprintf("data%02d", i)), b, 0o644)
		n -= len(b)
	}
	img := filepath.Join(dir, "data.cimg")
	out, err := exec.Command(cimgBuild, "-q", "--name", "data", "--version", version, "--arch", runtime.GOARCH,
		"--rootfs", root, "--entrypoint", "/bin/run", "-o", img).CombinedOutput()
	if err != nil {
		t.Fatalf("cimg-build: %v\n%s", err, out)
	}
	b, err := os.ReadFile(img)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// listApps is `cimg-run list --json`, which must parse whatever
// happened before. (Errors, not t.Fatal: workers call it from their own
// goroutines.)
func listApps(t *testing.T, store, state string) (map[string]appRow, error) {
	res := storeCmd(t, store, state, "list", "--json")
	var rows []appRow
	if err := json.Unmarshal([]byte(res.stdout), &rows); res.code != 0 || err != nil {
		return nil, fmt.Errorf("list --json: %v: %+v", err, res)
	}
	apps := map[string]appRow{}
	for _, r := range rows {
		apps[r.Name] = r
	}
	return apps, nil
}

func storeApps(t *testing.T, store, state string) map[string]appRow {
	t.Helper()
	apps, err := listApps(t, store, state)
	if err != nil {
		t.Fatal(err)
	}
	return apps
}

// installedAs fails unless app name is installed from exactly want: the
// root hash the store recorded and the bytes of the file it keeps.
func installedAs(t *testing.T, store, state, name string, want []byte) error {
	apps, err := listApps(t, store, state)
	if err != nil {
		return err
	}
	a, ok := apps[name]
	if !ok || a.Current == nil {
		return fmt.Errorf("%s is not installed", name)
	}
	im, err := format.Open(bytes.NewReader(want), int64(len(want)))
	if err != nil {
		return err
	}
	if h := hex.EncodeToString(im.Footer.RootHash[:]); a.Current.RootHash != h {
		return fmt.Errorf("%s: installed root hash %s, the served file's is %s", name, a.Current.RootHash, h)
	}
	f := a.Current.File
	if f == "" {
		f = a.Current.RootHash + ".cimg"
	}
	got, err := os.ReadFile(filepath.Join(store, "images", f))
	if err != nil {
		return fmt.Errorf("%s: the stored image: %v", name, err)
	}
	if sha256.Sum256(got) != sha256.Sum256(want) {
		return fmt.Errorf("%s: the stored image (%d bytes) is not the served file (%d bytes)", name, len(got), len(want))
	}
	return nil
}

func checkInstalled(t *testing.T, store, state, name string, want []byte) {
	t.Helper()
	if err := installedAs(t, store, state, name, want); err != nil {
		t.Fatal(err)
	}
}

// partials are the partial downloads in a store's tmp/.
func partials(store string) []string {
	p, _ := filepath.Glob(filepath.Join(store, "tmp", "dl-*.part"))
	return p
}

// dlFiles are all the download files (partials, sidecars, their temps).
func dlFiles(store string) []string {
	p, _ := filepath.Glob(filepath.Join(store, "tmp", "dl-*"))
	return p
}

// newServer is a fault server closed when the test ends.
func newServer(t *testing.T, cfg *tls.Config) *faultserver.Server {
	t.Helper()
	s, err := faultserver.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// requestsOf are the requests for path in the server's log from index from.
func requestsOf(s *faultserver.Server, path string, from int) []faultserver.Served {
	var out []faultserver.Served
	for _, r := range s.Log()[from:] {
		if r.Path == path {
			out = append(out, r)
		}
	}
	return out
}

// pathFaults routes a server's fault function by URL path, so that
// downloads running side by side each get their own plan.
type pathFaults struct {
	mu    sync.Mutex
	plans map[string]func(faultserver.Request) faultserver.Fault
}

func (p *pathFaults) set(path string, f func(faultserver.Request) faultserver.Fault) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.plans == nil {
		p.plans = map[string]func(faultserver.Request) faultserver.Fault{}
	}
	p.plans[path] = f
}

func (p *pathFaults) fault(r faultserver.Request) faultserver.Fault {
	p.mu.Lock()
	f := p.plans[r.Path]
	p.mu.Unlock()
	if f == nil {
		return faultserver.Fault{}
	}
	return f(r)
}

// deliverySeed is the seed of a randomized test: CIMG_TEST_SEED replays
// a logged run.
func deliverySeed(t *testing.T) uint64 {
	seed := uint64(time.Now().UnixNano())
	if s := os.Getenv("CIMG_TEST_SEED"); s != "" {
		v, err := strconv.ParseUint(s, 10, 64)
		if err != nil {
			t.Fatalf("CIMG_TEST_SEED: %v", err)
		}
		seed = v
	}
	t.Logf("seed %d (CIMG_TEST_SEED=%d replays it)", seed, seed)
	return seed
}

// randomPlan is one download's faults: for each request in turn, a fault
// placed within the range asked for (so that it strikes), up to n
// faulty requests, then honest ones, or a 404 for good when final404 (the
// command ends there, with what it has so far kept).
func randomPlan(r *mrand.Rand, n int, final404 bool, other []byte) func(faultserver.Request) faultserver.Fault {
	var mu sync.Mutex
	i := 0
	return func(req faultserver.Request) faultserver.Fault {
		mu.Lock()
		defer mu.Unlock()
		i++
		if i > n {
			if final404 {
				return faultserver.Fault{Kind: faultserver.NotFound}
			}
			return faultserver.Fault{}
		}
		start := max(req.Start, 0)
		if req.Size <= start+1 {
			return faultserver.Fault{}
		}
		at := start + r.Int64N(req.Size-start)
		switch k := r.IntN(100); {
		case k < 22:
			return faultserver.Fault{Kind: faultserver.Reset, At: at}
		case k < 40:
			return faultserver.Fault{Kind: faultserver.Truncate, At: at}
		case k < 48:
			return faultserver.Fault{Kind: faultserver.Stall, At: at, For: time.Duration(5+r.IntN(60)) * time.Millisecond}
		case k < 58:
			return faultserver.Fault{Kind: faultserver.Flip, At: at}
		case k < 66:
			return faultserver.Fault{Kind: faultserver.Full}
		case k < 76:
			return faultserver.Fault{Kind: faultserver.WrongRange, At: r.Int64N(req.Size)}
		case k < 84:
			return faultserver.Fault{Kind: faultserver.Unsatisfiable}
		case k < 92:
			return faultserver.Fault{Kind: faultserver.Replace, With: other}
		default:
			return faultserver.Fault{Kind: faultserver.NotFound}
		}
	}
}

// TestDeliveryFaultsRandomized: hundreds of downloads, each through a
// random run of faults. Whatever the faults, an install that succeeds
// stored exactly the file the server last served, and one that fails
// leaves the store as it was but for at most one partial of that source,
// which a fault-free install then completes.
func TestDeliveryFaultsRandomized(t *testing.T) {
	seed := deliverySeed(t)
	const workers, perWorker = 15, 20
	// Two versions of the file: "replaced mid-download" swaps one for
	// the other (a new ETag and Last-Modified).
	imgs := [2][]byte{dataImage(t, "1.0.0", 300<<10, seed), dataImage(t, "1.0.1", 300<<10, seed+1)}
	srv := newServer(t, nil)
	var plans pathFaults
	srv.Faults = plans.fault

	var mu sync.Mutex
	counts := map[string]int{}
	count := func(k string, n int) { mu.Lock(); counts[k] += n; mu.Unlock() }
	// Workers side by side, more than -parallel's GOMAXPROCS would allow
	// subtests: a download is mostly backoff, not work. A worker stops at
	// its first error.
	var wg sync.WaitGroup
	for w := range workers {
		store, state := storeRoot(t), stateDir(t)
		wg.Add(1)
		go func() {
			defer wg.Done()
			r := mrand.New(mrand.NewPCG(seed, uint64(w)))
			if err := randomDownloads(t, srv, &plans, store, state, r, seed, w, perWorker, imgs, count); err != nil {
				t.Errorf("worker %d: %v", w, err)
			}
		}()
	}
	wg.Wait()
	t.Logf("%d downloads, %d requests, %d body bytes sent", counts["downloads"], counts["requests"], srv.BytesSent())
	keys := make([]string, 0, len(counts))
	for k := range counts {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	for _, k := range keys {
		t.Logf("  %-32s %d", k, counts[k])
	}
	if got := counts["installed at once"] + counts["installed by the next command"]; got != workers*perWorker && !t.Failed() {
		t.Errorf("%d of %d downloads ended installed", got, workers*perWorker)
	} else if !t.Failed() {
		t.Logf("all %d installs hold the served file (root hash and bytes); %d failed commands left the store as it was but for at most one partial", got, counts["installed by the next command"])
	}
	if counts["resumed requests"] == 0 {
		t.Error("no download resumed: the faults did not exercise Range")
	}
}

// randomDownloads is one worker of TestDeliveryFaultsRandomized: n
// downloads into one store, each of a source of its own.
func randomDownloads(t *testing.T, srv *faultserver.Server, plans *pathFaults, store, state string, r *mrand.Rand, seed uint64, w, n int,
	imgs [2][]byte, count func(string, int)) error {
	for i := range n {
		path := fmt.Sprintf("/w%d/d%d.cimg", w, i)
		v := r.IntN(2)
		srv.Put(path, imgs[v])
		faulty := []int{0, 1, 1, 1, 2, 2, 3}[r.IntN(7)]
		final404 := r.IntN(8) == 0
		plans.set(path, randomPlan(mrand.New(mrand.NewPCG(seed, uint64(w*1000+i))), faulty, final404, imgs[1-v]))
		name := fmt.Sprintf("app%d", i)
		from := len(srv.Log())
		res := storeCmd(t, store, state, "install", "--name", name, srv.URL+path)
		reqs := requestsOf(srv, path, from)
		for _, q := range reqs {
			if q.Start > 0 && q.Status == 206 {
				count("resumed requests", 1)
			}
			if q.Fault.Kind != faultserver.None {
				count("fault "+q.Fault.Kind.String(), 1)
			}
		}
		count("downloads", 1)
		count("requests", len(reqs))
		// What the server has now: the last request's file.
		served := imgs[v]
		for _, q := range reqs {
			if q.Fault.Kind == faultserver.Replace {
				served = q.Fault.With
			}
		}
		if res.code == 0 {
			count("installed at once", 1)
			if err := installedAs(t, store, state, name, served); err != nil {
				return fmt.Errorf("download %s: %v", path, err)
			}
			if p := dlFiles(store); len(p) != 0 {
				return fmt.Errorf("download %s: installed, and its partial is left: %v", path, p)
			}
			continue
		}
		// Failed: not installed, at most one partial (of this source).
		switch {
		case strings.Contains(res.stderr, "404 Not Found"):
			count("ended by a 404", 1)
		case strings.Contains(res.stderr, "after 5 attempts") || strings.Contains(res.stderr, "attempts;"):
			count("ended after all attempts", 1)
		default:
			count("refused (did not verify)", 1)
		}
		if res.code != 125 || !strings.Contains(res.stderr, path) && !strings.Contains(res.stderr, "verity") && !strings.Contains(res.stderr, "payload") {
			count("failures with an unclear message", 1)
			t.Logf("download %s: exit %d: %s", path, res.code, res.stderr)
		}
		apps, err := listApps(t, store, state)
		if err != nil {
			return fmt.Errorf("download %s: after a failed install: %v", path, err)
		}
		if _, ok := apps[name]; ok {
			return fmt.Errorf("download %s: failed (%s), yet %s is installed", path, res.stderr, name)
		}
		var have int64 // what the next command must resume from
		if p := partials(store); len(p) > 1 {
			return fmt.Errorf("download %s: %d partials: %v", path, len(p), p)
		} else if len(p) == 1 {
			count("partials kept", 1)
			fi, err := os.Stat(p[0])
			if _, serr := os.Stat(strings.TrimSuffix(p[0], ".part") + ".json"); err == nil && serr == nil {
				have = fi.Size()
			}
		}
		// The next command, with no fault, completes it.
		plans.set(path, nil)
		from = len(srv.Log())
		if res := storeCmd(t, store, state, "install", "--name", name, srv.URL+path); res.code != 0 {
			return fmt.Errorf("download %s: the fault-free install after a failed one: %+v", path, res)
		}
		if reqs := requestsOf(srv, path, from); have > 0 && len(reqs) > 0 {
			if reqs[0].Start != have {
				return fmt.Errorf("download %s: a partial of %d bytes was kept, and the next command asked for %q", path, have, reqs[0].Range)
			}
			count("resumed by the next command", 1)
		}
		count("installed by the next command", 1)
		if err := installedAs(t, store, state, name, served); err != nil {
			return fmt.Errorf("download %s, the install after a failed one: %v", path, err)
		}
		if p := dlFiles(store); len(p) != 0 {
			return fmt.Errorf("download %s: installed, and download files are left: %v", path, p)
		}
	}
	return nil
}

// TestDeliveryDisconnects50MB: a 50 MB image cut by 10 connection resets
// at spread offsets still installs, and what moves on the wire is at most
// 1.1× the file: each attempt resumes where the last one stopped.
func TestDeliveryDisconnects50MB(t *testing.T) {
	store, state := storeRoot(t), stateDir(t)
	img := dataImage(t, "1.0.0", 50<<20, 50)
	size := int64(len(img))
	srv := newServer(t, nil)
	srv.Put("big.cimg", img)
	var mu sync.Mutex
	var cuts []int64
	for k := int64(1); k <= 10; k++ {
		cuts = append(cuts, size*k/11)
	}
	// Each request is cut at the first offset still ahead of it, so every
	// cut strikes once.
	srv.Faults = func(r faultserver.Request) faultserver.Fault {
		mu.Lock()
		defer mu.Unlock()
		for len(cuts) > 0 && cuts[0] <= r.Start {
			cuts = cuts[1:]
		}
		if len(cuts) == 0 {
			return faultserver.Fault{}
		}
		at := cuts[0]
		cuts = cuts[1:]
		return faultserver.Fault{Kind: faultserver.Reset, At: at}
	}
	// A command gives up after its attempts; the next one resumes, as an
	// operator (or a retrying updater) would run it again.
	var res result
	commands := 0
	for commands < 4 {
		commands++
		if res = storeCmd(t, store, state, "install", "--name", "big", srv.URLOf("big.cimg")); res.code == 0 {
			break
		}
		t.Logf("command %d: %s", commands, strings.TrimSpace(res.stderr))
		if p := partials(store); len(p) != 1 {
			t.Fatalf("after a cut-short command: %d partials, want 1: %v", len(p), p)
		}
	}
	if res.code != 0 {
		t.Fatalf("install through 10 resets, %d commands: %+v", commands, res)
	}
	checkInstalled(t, store, state, "big", img)
	log := doneLog(srv)
	resets := 0
	for _, r := range log {
		if r.Fault.Kind == faultserver.Reset {
			resets++
		}
	}
	ratio := float64(srv.BytesSent()) / float64(size)
	t.Logf("%d bytes image, %d requests (%d cut by a reset), %d commands, %d body bytes sent: %.4f× the image", size, len(log), resets, commands, srv.BytesSent(), ratio)
	if resets != 10 {
		t.Errorf("%d resets struck, want 10", resets)
	}
	if ratio > 1.1 {
		t.Errorf("%d bytes sent for a %d-byte image: %.3f×, want at most 1.1×", srv.BytesSent(), size, ratio)
	}
}

// TestDeliveryProtocolStrictness: one rule of resuming at a time, each
// with the request sequence that tests it.
func TestDeliveryProtocolStrictness(t *testing.T) {
	img := dataImage(t, "1.0.0", 200<<10, 7)
	other := dataImage(t, "1.0.1", 200<<10, 8)
	size := int64(len(img))
	const K = 50000 // where a first request is cut, leaving a partial of K bytes
	F := faultserver.Fault{}
	cut := faultserver.Fault{Kind: faultserver.Truncate, At: K}

	// setup is a store, a state dir and a server with img at /f.cimg and
	// the given faults.
	setup := func(t *testing.T, faults ...faultserver.Fault) (store, state string, srv *faultserver.Server, url string) {
		store, state, srv = storeRoot(t), stateDir(t), newServer(t, nil)
		srv.Put("f.cimg", img)
		srv.Faults = faultserver.Schedule(faults...)
		return store, state, srv, srv.URLOf("f.cimg")
	}
	install := func(t *testing.T, store, state, url string) result {
		t.Helper()
		return storeCmd(t, store, state, "install", "--name", "app", url)
	}
	// partialIs fails unless the store holds one partial: want exactly.
	partialIs := func(t *testing.T, store string, want []byte) {
		t.Helper()
		p := partials(store)
		if len(p) != 1 {
			t.Fatalf("%d partials, want 1: %v", len(p), p)
		}
		got, _ := os.ReadFile(p[0])
		if !bytes.Equal(got, want) {
			t.Fatalf("the partial is %d bytes, not the file's first %d", len(got), len(want))
		}
	}
	describe := func(srv *faultserver.Server) string {
		var b strings.Builder
		for _, r := range doneLog(srv) {
			fmt.Fprintf(&b, "\n  #%d Range %q If-Range %q → %s: %d from %d, %d bytes", r.Seq, r.Range, r.IfRange, r.Fault, r.Status, r.From, r.Bytes)
		}
		return b.String()
	}

	t.Run("WrongContentRangeRefused", func(t *testing.T) {
		t.Parallel()
		// Cut at K; then a 206 that starts at K/2 (and then one before
		// the file's start would be): neither may be appended; a 404 ends
		// the command with the partial as it was.
		store, state, srv, url := setup(t, cut, faultserver.Fault{Kind: faultserver.WrongRange, At: K / 2},
			faultserver.Fault{Kind: faultserver.NotFound})
		if res := install(t, store, state, url); res.code != 125 {
			t.Fatalf("install: %+v%s", res, describe(srv))
		}
		partialIs(t, store, img[:K])
		srv.Faults = nil
		if res := install(t, store, state, url); res.code != 0 {
			t.Fatalf("install: %+v%s", res, describe(srv))
		}
		checkInstalled(t, store, state, "app", img)
		if l := doneLog(srv); len(l) != 4 || l[1].Start != K || l[3].Start != K || l[3].Status != 206 {
			t.Errorf("want: whole (cut at %d), resume at %d (wrong 206), 404, resume at %d (206):%s", K, K, K, describe(srv))
		}
	})
	t.Run("FullAnswerToRangeRestarts", func(t *testing.T) {
		t.Parallel()
		store, state, srv, url := setup(t, cut, faultserver.Fault{Kind: faultserver.Full})
		if res := install(t, store, state, url); res.code != 0 {
			t.Fatalf("install: %+v%s", res, describe(srv))
		}
		checkInstalled(t, store, state, "app", img)
		if l := doneLog(srv); len(l) != 2 || l[1].Start != K || l[1].Status != 200 || srv.BytesSent() != K+size {
			t.Errorf("want: whole (cut at %d), resume at %d answered 200 (the whole file, taken from zero):%s", K, K, describe(srv))
		}
	})
	t.Run("UnsatisfiableDiscards", func(t *testing.T) {
		t.Parallel()
		store, state, srv, url := setup(t, cut, faultserver.Fault{Kind: faultserver.Unsatisfiable})
		if res := install(t, store, state, url); res.code != 0 {
			t.Fatalf("install: %+v%s", res, describe(srv))
		}
		checkInstalled(t, store, state, "app", img)
		if l := doneLog(srv); len(l) != 3 || l[1].Status != 416 || l[2].Range != "" || l[2].Status != 200 {
			t.Errorf("want: whole (cut), resume (416), whole again from zero:%s", describe(srv))
		}
	})
	for _, noETag := range []bool{false, true} {
		name := "ChangedETagRestarts"
		if noETag {
			name = "ChangedLastModifiedRestarts"
		}
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			// The file is replaced between the cut and the resume: If-Range
			// no longer matches, the server sends the new file whole, and
			// it is the new file that is installed.
			store, state, srv, url := setup(t, cut, faultserver.Fault{Kind: faultserver.Replace, With: other})
			srv.NoETag = noETag
			if res := install(t, store, state, url); res.code != 0 {
				t.Fatalf("install: %+v%s", res, describe(srv))
			}
			checkInstalled(t, store, state, "app", other)
			if l := doneLog(srv); len(l) != 2 || l[1].Start != K || l[1].IfRange == "" || l[1].Status != 200 {
				t.Errorf("want: whole (cut), resume with If-Range answered 200 (the new file):%s", describe(srv))
			}
		})
	}
	t.Run("FlippedByteRefused", func(t *testing.T) {
		t.Parallel()
		store, state, srv, url := setup(t, faultserver.Fault{Kind: faultserver.Flip, At: size / 3})
		res := install(t, store, state, url)
		if res.code != 125 {
			t.Fatalf("install of a file with a flipped byte: %+v%s", res, describe(srv))
		}
		t.Logf("refused: %s", strings.TrimSpace(res.stderr))
		if _, ok := storeApps(t, store, state)["app"]; ok {
			t.Fatal("a file with a flipped byte was installed")
		}
		if p := dlFiles(store); len(p) != 0 {
			t.Errorf("the refused download is kept: %v", p)
		}
		if imgs, _ := filepath.Glob(filepath.Join(store, "images", "*")); len(imgs) != 0 {
			t.Errorf("images stored by a refused install: %v", imgs)
		}
		if res := install(t, store, state, url); res.code != 0 {
			t.Fatalf("the next install: %+v%s", res, describe(srv))
		}
		checkInstalled(t, store, state, "app", img)
		if l := doneLog(srv); len(l) != 2 || l[1].Range != "" {
			t.Errorf("want: whole (flipped), whole again from zero:%s", describe(srv))
		}
	})
	t.Run("NotFound", func(t *testing.T) {
		t.Parallel()
		store, state, srv, url := setup(t, F)
		if res := install(t, store, state, url); res.code != 0 {
			t.Fatalf("install: %+v", res)
		}
		before := tree(t, store)
		missing := srv.URLOf("missing.cimg")
		res := storeCmd(t, store, state, "install", "--name", "other", missing)
		t.Logf("404: %s", strings.TrimSpace(res.stderr))
		if res.code != 125 || !strings.Contains(res.stderr, missing) || !strings.Contains(res.stderr, "404") || strings.Contains(res.stderr, "attempt 2") {
			t.Errorf("install of a URL the server does not have: want exit 125, one error naming the URL and the 404, no retry: %+v", res)
		}
		if after := tree(t, store); after != before {
			t.Errorf("the store changed:\nbefore:\n%s\nafter:\n%s", before, after)
		}
	})
	t.Run("Unreachable", func(t *testing.T) {
		t.Parallel()
		store, state := storeRoot(t), stateDir(t)
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		url := "http://" + ln.Addr().String() + "/f.cimg"
		ln.Close() // a closed port: connections are refused
		res := storeCmd(t, store, state, "install", "--name", "app", url)
		t.Logf("unreachable: %s", strings.TrimSpace(res.stderr))
		if res.code != 125 || !strings.Contains(res.stderr, url) || !strings.Contains(res.stderr, "connection refused") {
			t.Errorf("install from a closed port: want exit 125 and an error naming the URL and the refused connection: %+v", res)
		}
		if p := dlFiles(store); len(p) != 0 {
			t.Errorf("download files left by a download that got no byte: %v", p)
		}
	})
}

// tree lists the files under dir with their sizes (lock files aside: a
// command may leave its lock behind by design).
func tree(t *testing.T, dir string) string {
	var b strings.Builder
	filepath.Walk(dir, func(p string, fi os.FileInfo, err error) error {
		if err == nil && !fi.IsDir() && !strings.HasSuffix(p, ".lock") {
			fmt.Fprintf(&b, "%s %d\n", strings.TrimPrefix(p, dir), fi.Size())
		}
		return nil
	})
	return b.String()
}

// TestDeliveryKilled: installs killed (SIGKILL, the command's whole
// process group) at random moments of a throttled download. After each:
// the state parses, at most one partial, and the next install resumes
// from that partial's end (or admits it at once when it is whole), so
// that it sends less than the file. In the end a clean install, and gc
// removes a partial nobody writes.
func TestDeliveryKilled(t *testing.T) {
	seed := deliverySeed(t)
	img := dataImage(t, "1.0.0", 1500<<10, seed)
	size := int64(len(img))
	srv := newServer(t, nil)
	srv.Rate = 4 << 20 // ~0.37 s for the whole file
	const workers, killsEach = 4, 26
	var mu sync.Mutex
	counts := map[string]int{}
	count := func(k string) { mu.Lock(); counts[k]++; mu.Unlock() }
	var wg sync.WaitGroup
	for w := range workers {
		store, state := storeRoot(t), stateDir(t)
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := killedInstalls(t, srv, store, state, img, w, killsEach, mrand.New(mrand.NewPCG(seed, uint64(w))), count); err != nil {
				t.Errorf("worker %d: %v", w, err)
			}
		}()
	}
	wg.Wait()
	t.Logf("%d kills over %d stores; %d commands resumed a partial, %d admitted a whole one, %d started afresh from a partial without its sidecar, %d installs finished before their kill, %d final installs resumed; %d body bytes sent (the file is %d)",
		counts["kills"], workers, counts["commands resuming a partial"], counts["commands admitting a whole partial"], counts["partials without a sidecar, started afresh"],
		counts["installed before the kill"], counts["final installs resuming"], srv.BytesSent(), size)
	if counts["kills"] < 100 {
		t.Errorf("%d kills, want at least 100", counts["kills"])
	}
	if counts["commands resuming a partial"] == 0 {
		t.Error("no command resumed a partial")
	}
}

// killedInstalls is one worker of TestDeliveryKilled: a store and a
// source of its own, killsEach kills, the final install and gc.
func killedInstalls(t *testing.T, srv *faultserver.Server, store, state string, img []byte, w, killsEach int, r *mrand.Rand, count func(string)) error {
	size := int64(len(img))
	path := fmt.Sprintf("/w%d.cimg", w)
	srv.Put(path, img)
	url := srv.URL + path
	// start runs install in a process group of its own, so that the kill
	// takes cimg-fetch too, as a service manager's would.
	start := func() (*exec.Cmd, *bytes.Buffer, error) {
		cmd := exec.Command(cimgRun, "install", "--store", store, "--state-dir", state, "--name", "app", url)
		cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
		var out bytes.Buffer
		cmd.Stdout, cmd.Stderr = &out, &out
		return cmd, &out, cmd.Start()
	}
	for kills := 0; kills < killsEach; {
		// The partial and whether its sidecar is there: a kill can come
		// between the sidecar's removal and the partial's (a restart, or
		// the discard after an admission), and bytes without a sidecar
		// must not be resumed.
		var have int64
		sidecar := false
		if p := partials(store); len(p) == 1 {
			if fi, err := os.Stat(p[0]); err == nil {
				have = fi.Size()
			}
			_, err := os.Stat(strings.TrimSuffix(p[0], ".part") + ".json")
			sidecar = err == nil
		}
		from := len(srv.Log())
		sentBefore := bytesFor(srv, path, 0)
		cmd, out, err := start()
		if err != nil {
			return err
		}
		// Anywhere in the command: its start, the download, the admission
		// and the store's commit (the whole file takes ~0.37 s).
		time.Sleep(time.Duration(r.Int64N(int64(450 * time.Millisecond))))
		syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
		err = cmd.Wait()
		if ee, ok := err.(*exec.ExitError); ok && ee.ProcessState.Sys().(syscall.WaitStatus).Signaled() {
			kills++
			count("kills")
		} else if err != nil {
			return fmt.Errorf("install (not killed): %v: %s", err, out)
		}
		// The server's side of a killed download ends when its next
		// write fails: its byte count is final then.
		settle(func() bool { return allDone(srv, path) })
		sent := bytesFor(srv, path, 0) - sentBefore
		reqs := requestsOf(srv, path, from)
		// The resume check, on the first request of the command.
		switch {
		case have > 0 && !sidecar:
			if len(reqs) > 0 && reqs[0].Range != "" {
				return fmt.Errorf("a partial of %d bytes without its sidecar was resumed: %q", have, reqs[0].Range)
			}
			count("partials without a sidecar, started afresh")
		case have > 0 && have < size && len(reqs) > 0:
			if reqs[0].Start != have || reqs[0].IfRange == "" {
				return fmt.Errorf("a partial of %d bytes was kept, and the next command asked for %q (If-Range %q)", have, reqs[0].Range, reqs[0].IfRange)
			}
			if sent > size-have {
				return fmt.Errorf("a partial of %d bytes was kept, and the next command moved %d bytes of a %d-byte file", have, sent, size)
			}
			count("commands resuming a partial")
		case have == size:
			if sent != 0 {
				return fmt.Errorf("a whole partial was kept, and the next command downloaded %d bytes again", sent)
			}
			count("commands admitting a whole partial")
		case have == 0 && len(reqs) > 0 && reqs[0].Range != "":
			return fmt.Errorf("no partial, and the command asked for a range %q", reqs[0].Range)
		}
		if p := partials(store); len(p) > 1 {
			return fmt.Errorf("%d partials of one source: %v", len(p), p)
		}
		apps, err := listApps(t, store, state)
		if err != nil {
			return fmt.Errorf("after a kill: %v", err)
		}
		if _, ok := apps["app"]; ok {
			// Installed before the kill: check it, and start again.
			if err := installedAs(t, store, state, "app", img); err != nil {
				return fmt.Errorf("installed before the kill: %v", err)
			}
			count("installed before the kill")
			if res := storeCmd(t, store, state, "remove", "--purge", "app"); res.code != 0 {
				return fmt.Errorf("remove: %+v", res)
			}
		}
	}
	// A clean install to the end.
	from := len(srv.Log())
	if res := storeCmd(t, store, state, "install", "--name", "app", url); res.code != 0 {
		return fmt.Errorf("the final install: %+v", res)
	}
	if reqs := requestsOf(srv, path, from); len(reqs) > 0 && reqs[0].Start > 0 {
		count("final installs resuming")
	}
	if err := installedAs(t, store, state, "app", img); err != nil {
		return fmt.Errorf("the final install: %v", err)
	}
	if p := dlFiles(store); len(p) != 0 {
		return fmt.Errorf("download files left after an install: %v", p)
	}
	// A partial left by a kill mid-download, which gc removes once nobody
	// writes it.
	if res := storeCmd(t, store, state, "remove", "--purge", "app"); res.code != 0 {
		return fmt.Errorf("remove: %+v", res)
	}
	cmd, _, err := start()
	if err != nil {
		return err
	}
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(5 * time.Millisecond) {
		if p := partials(store); len(p) == 1 {
			if fi, err := os.Stat(p[0]); err == nil && fi.Size() > 0 {
				break
			}
		}
	}
	syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
	cmd.Wait()
	if p := partials(store); len(p) != 1 {
		return fmt.Errorf("no partial after a kill mid-download (%v)", dlFiles(store))
	}
	if res := storeCmd(t, store, state, "gc"); res.code != 0 {
		return fmt.Errorf("gc: %+v", res)
	}
	if p := dlFiles(store); len(p) != 0 {
		return fmt.Errorf("download files left after gc: %v", p)
	}
	return nil
}

// doneLog is the server's log once every request in it has ended (a
// handler may still be returning when its client has all it needs).
func doneLog(s *faultserver.Server) []faultserver.Served {
	var l []faultserver.Served
	settle(func() bool {
		l = s.Log()
		for _, r := range l {
			if !r.Done {
				return false
			}
		}
		return true
	})
	return l
}

// allDone reports whether every request for path has ended.
func allDone(s *faultserver.Server, path string) bool {
	for _, r := range requestsOf(s, path, 0) {
		if !r.Done {
			return false
		}
	}
	return true
}

// bytesFor is the body bytes the server sent for path, over its log from
// index from.
func bytesFor(s *faultserver.Server, path string, from int) int64 {
	var n int64
	for _, r := range requestsOf(s, path, from) {
		n += r.Bytes
	}
	return n
}

// tlsFiles makes a CA and a certificate for 127.0.0.1 signed by it, and
// returns the server's TLS config and the CA's PEM file.
func tlsFiles(t *testing.T) (*tls.Config, string) {
	t.Helper()
	caKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	now := time.Now()
	ca := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "cimg test CA"},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(time.Hour), IsCA: true, BasicConstraintsValid: true,
		KeyUsage: x509.KeyUsageCertSign}
	caDER, err := x509.CreateCertificate(rand.Reader, ca, ca, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	caCert, _ := x509.ParseCertificate(caDER)
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	leaf := &x509.Certificate{SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: "127.0.0.1"},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(time.Hour), IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)},
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}
	leafDER, err := x509.CreateCertificate(rand.Reader, leaf, caCert, &key.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	caFile := filepath.Join(t.TempDir(), "ca.pem")
	os.WriteFile(caFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: caDER}), 0o644)
	return &tls.Config{Certificates: []tls.Certificate{{Certificate: [][]byte{leafDER}, PrivateKey: key}}}, caFile
}

// TestDeliveryHTTPS: an https:// source whose certificate a private CA
// signed installs with --ca (through a reset: resuming over TLS), and
// runs; without --ca the error says what is wrong and what to do.
func TestDeliveryHTTPS(t *testing.T) {
	cfg, caFile := tlsFiles(t)
	srv := newServer(t, cfg)
	img := probeImage(t, "version = \"1.0.0\"\n")
	b, err := os.ReadFile(img)
	if err != nil {
		t.Fatal(err)
	}
	srv.Put("probe.cimg", b)
	url := srv.URLOf("probe.cimg")

	store, state := storeRoot(t), stateDir(t)
	res := storeCmd(t, store, state, "install", "--name", "app", url)
	t.Logf("without --ca: %s", strings.TrimSpace(res.stderr))
	if res.code != 125 || !strings.Contains(res.stderr, url) || !strings.Contains(res.stderr, "certificate") || !strings.Contains(res.stderr, "--ca") {
		t.Errorf("install over TLS from a private CA without --ca: want exit 125, an error naming the URL, the certificate and --ca: %+v", res)
	}
	if strings.Contains(res.stderr, "attempt 2") {
		t.Errorf("a certificate error was retried: %s", res.stderr)
	}
	if p := dlFiles(store); len(p) != 0 {
		t.Errorf("download files left: %v", p)
	}

	srv.Faults = faultserver.Schedule(faultserver.Fault{Kind: faultserver.Reset, At: int64(len(b)) / 2})
	if res := storeCmd(t, store, state, "install", "--ca", caFile, "--name", "app", url); res.code != 0 {
		t.Fatalf("install --ca: %+v", res)
	}
	checkInstalled(t, store, state, "app", b)
	// The request without --ca never reached the handler (the handshake
	// failed): the log is the cut one and its resume.
	if l := doneLog(srv); len(l) != 2 || l[1].Start != int64(len(b))/2 || l[1].Status != 206 {
		t.Errorf("want the download cut at half resumed there over TLS: %+v", l)
	}
	if res := runImage(t, exec.Command(cimgRun, "run", "--store", store, "--state-dir", state, "app", "--", "exit", "0")); res.code != 0 {
		t.Errorf("run app: %+v", res)
	}
}

// fetchHelpers are the cimg-fetch processes downloading into dir.
func fetchHelpers(dir string) []int {
	var pids []int
	procs, _ := filepath.Glob("/proc/[0-9]*/cmdline")
	for _, p := range procs {
		b, err := os.ReadFile(p)
		if err != nil {
			continue
		}
		args := strings.Split(string(b), "\x00")
		if len(args) > 0 && filepath.Base(args[0]) == "cimg-fetch" && strings.Contains(string(b), "\x00"+dir+"\x00") {
			pid, _ := strconv.Atoi(filepath.Base(filepath.Dir(p)))
			pids = append(pids, pid)
		}
	}
	return pids
}

// TestDeliveryHelperDiesWithInstall: cimg-run killed alone (SIGKILL to
// its pid, not its group: a parent that only knows cimg-run) must not
// leave its download helper running on, holding the source's lock.
func TestDeliveryHelperDiesWithInstall(t *testing.T) {
	store, state := storeRoot(t), stateDir(t)
	img := dataImage(t, "1.0.0", 1500<<10, 3)
	srv := newServer(t, nil)
	srv.Rate = 256 << 10 // ~6 s for the whole file: a helper alive 1 s after the kill is not one just finishing
	srv.Put("f.cimg", img)
	url := srv.URLOf("f.cimg")
	cmd := exec.Command(cimgRun, "install", "--store", store, "--state-dir", state, "--name", "app", url)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	tmp := filepath.Join(store, "tmp")
	waitFor(t, func() bool {
		p := partials(store)
		if len(p) != 1 {
			return false
		}
		fi, err := os.Stat(p[0])
		return err == nil && fi.Size() > 0
	})
	cmd.Process.Kill()
	cmd.Wait()
	// The helper has a second to go (a child told of its parent's death
	// goes at once); the next install must then be able to resume.
	settleFor(time.Second, func() bool { return len(fetchHelpers(tmp)) == 0 })
	srv.Rate = 0
	res := storeCmd(t, store, state, "install", "--name", "app", url)
	if left := fetchHelpers(tmp); len(left) != 0 {
		t.Errorf("cimg-fetch %v runs on after its cimg-run was killed: it keeps downloading %s and holds its partial's lock; an install meanwhile: exit %d: %s",
			left, url, res.code, strings.TrimSpace(res.stderr))
		// Ended here (by its pid: our own command's child), so that
		// nothing outlives the test.
		for _, pid := range left {
			syscall.Kill(pid, syscall.SIGKILL)
		}
		settle(func() bool { return len(fetchHelpers(tmp)) == 0 })
		res = storeCmd(t, store, state, "install", "--name", "app", url)
	}
	if res.code != 0 {
		t.Fatalf("the install after the kill: %+v", res)
	}
	checkInstalled(t, store, state, "app", img)
}
