package elfdeps

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"slices"
	"strings"
	"testing"
)

// FuzzRead feeds arbitrary bytes to the ELF reader (arch, interpreter,
// needed, rpath, version records): no panic, and what it returns is made
// of plain strings — no NUL in a name, no empty or ':'-holding search
// path entry. Seeds (testdata/fuzz/FuzzRead) are mkELF objects of both
// classes and byte orders, a few hundred bytes each.
func FuzzRead(f *testing.F) {
	f.Fuzz(func(t *testing.T, b []byte) {
		ef, err := Read(bytes.NewReader(b))
		if err != nil {
			if err.Error() == "" {
				t.Fatal("empty error")
			}
			return
		}
		names := append([]string{ef.Soname}, ef.Needed...)
		for lib, vs := range ef.Verneed {
			names = append(append(names, lib), vs...)
		}
		names = append(names, ef.Verdef...)
		for _, s := range names {
			if strings.IndexByte(s, 0) >= 0 {
				t.Fatalf("name %q holds a NUL", s)
			}
		}
		for _, p := range append(slices.Clone(ef.RPath), ef.RunPath...) {
			if p == "" || strings.Contains(p, ":") {
				t.Fatalf("search path entry %q", p)
			}
		}
		if ef.Static && (len(ef.Needed) > 0 || ef.HasRun) {
			t.Fatalf("static object with dynamic entries: %+v", ef)
		}
	})
}

// FuzzParseCache feeds arbitrary bytes to the ld.so.cache parser in both
// byte orders: no panic, no more entries than the bytes can hold, and
// what parses survives BuildCache and ParseCache unchanged (as a set: the
// builder sorts as ldconfig does).
func FuzzParseCache(f *testing.F) {
	f.Fuzz(func(t *testing.T, b []byte, big bool) {
		var bo ByteOrder = binary.LittleEndian
		if big {
			bo = binary.BigEndian
		}
		entries, err := ParseCache(b, bo)
		if err != nil {
			return
		}
		if len(entries) > len(b)/cacheEntSize {
			t.Fatalf("%d entries from %d bytes", len(entries), len(b))
		}
		back, err := ParseCache(BuildCache(entries, bo), bo)
		if err != nil {
			t.Fatalf("a built cache does not parse: %v", err)
		}
		if got, want := cacheSet(back), cacheSet(entries); !slices.Equal(got, want) {
			t.Fatalf("round trip changed the entries:\n%q\n%q", got, want)
		}
	})
}

func cacheSet(es []CacheEntry) []string {
	out := make([]string, len(es))
	for i, e := range es {
		out[i] = fmt.Sprintf("%d\x00%s\x00%s\x00%d", e.Flags, e.Name, e.Path, e.HWCap)
	}
	slices.Sort(out)
	return out
}
