package format

import (
	"bytes"
	"errors"
	"math/rand/v2"
	"runtime"
	"strings"
	"testing"
	"time"
)

// failingReader fails every read that covers byte failAt.
type failingReader struct {
	data   []byte
	failAt int64
}

func (r *failingReader) ReadAt(p []byte, off int64) (int, error) {
	if r.failAt >= off && r.failAt < off+int64(len(p)) {
		return 0, errors.New("injected I/O error")
	}
	return copy(p, r.data[off:]), nil
}

// TestHashDataInOrder checks that the hashes reach fn in block order,
// whatever order the workers finish in, on more chunks than workers and a
// partial last chunk, with 1, 2 and 3 workers.
func TestHashDataInOrder(t *testing.T) {
	const blocks = 256*7 + 13
	data := make([]byte, blocks*BlockSize)
	rng := rand.New(rand.NewPCG(3, 4))
	for i := range data {
		data[i] = byte(rng.Uint32())
	}
	salt := []byte("order")
	var want []byte
	for i := range int64(blocks) {
		h := hashBlock(salt, data[i*BlockSize:(i+1)*BlockSize])
		want = append(want, h[:]...)
	}
	for _, procs := range []int{1, 2, 3} {
		old := runtime.GOMAXPROCS(procs)
		var got []byte
		err := hashData(&failingReader{data: data, failAt: -1}, blocks, salt, func(h []byte) error {
			got = append(got, h...)
			return nil
		})
		runtime.GOMAXPROCS(old)
		if err != nil {
			t.Fatalf("GOMAXPROCS %d: %v", procs, err)
		}
		if !bytes.Equal(got, want) {
			t.Fatalf("GOMAXPROCS %d: the hashes differ from one block at a time, in order", procs)
		}
	}
}

// TestHashDataStopsOnError checks that a read error and an error of fn
// each end hashData with that error, and that no worker is left running.
func TestHashDataStopsOnError(t *testing.T) {
	const blocks = 256 * 9
	data := make([]byte, blocks*BlockSize)
	old := runtime.GOMAXPROCS(2)
	defer runtime.GOMAXPROCS(old)
	before := runtime.NumGoroutine()

	calls := 0
	err := hashData(&failingReader{data: data, failAt: 5*256*BlockSize + 1}, blocks, nil, func([]byte) error {
		calls++
		return nil
	})
	if err == nil || !strings.Contains(err.Error(), "read data block 1280") {
		t.Fatalf("read error: got %v, want the error of the read at block 1280", err)
	}
	if calls != 5 {
		t.Errorf("fn ran for %d chunks before the failing one, want 5", calls)
	}

	stop := errors.New("stop")
	calls = 0
	err = hashData(&failingReader{data: data, failAt: -1}, blocks, nil, func([]byte) error {
		if calls++; calls == 2 {
			return stop
		}
		return nil
	})
	if !errors.Is(err, stop) {
		t.Fatalf("fn's error: got %v", err)
	}

	// hashData waits for its workers before it returns; give the runtime
	// a moment to retire their goroutines before counting.
	deadline := time.Now().Add(2 * time.Second)
	for runtime.NumGoroutine() > before && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if n := runtime.NumGoroutine(); n > before {
		t.Errorf("%d goroutines after hashData returned errors, %d before", n, before)
	}
}
