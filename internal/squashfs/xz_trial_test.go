package squashfs

import (
	"os"
	"strings"
	"testing"
)

// TestBCJTrial: the lz4 trial that spares xz its second pass sends x86
// code through the x86 filter and text around it, with either lz4
// encoder (this runs in the pure-Go build and, under make test's cgo
// step, with liblz4).
func TestBCJTrial(t *testing.T) {
	exe, err := os.ReadFile("/proc/self/exe")
	if err != nil {
		t.Fatal(err)
	}
	if len(exe) < 1<<20+128<<10 {
		t.Fatalf("test binary is only %d bytes", len(exe))
	}
	code := exe[1<<20 : 1<<20+128<<10] // the test binary's own x86 text
	text := []byte(strings.Repeat("the image asks, the operator grants; ", 4000))[:128<<10]
	tr := newBCJTrial(BCJX86)
	if pays, err := tr.pays(code); err != nil || !pays {
		t.Errorf("x86 code: the trial says the filter pays %v (%v), want true", pays, err)
	}
	if pays, err := tr.pays(text); err != nil || pays {
		t.Errorf("text: the trial says the filter pays %v (%v), want false", pays, err)
	}
	// The encoder follows the trial: with the filter set, text comes out
	// as the plain stream.
	plain, _ := newXZEncoder(0, 128<<10, BCJNone)
	x86, _ := newXZEncoder(0, 128<<10, BCJX86)
	a, err := plain.encode(make([]byte, 0, outCap(128<<10)), text)
	if err != nil {
		t.Fatal(err)
	}
	b, err := x86.encode(make([]byte, 0, outCap(128<<10)), text)
	if err != nil {
		t.Fatal(err)
	}
	if string(a) != string(b) {
		t.Errorf("text with the x86 filter set: %d bytes, not the plain stream's %d", len(b), len(a))
	}
}
