package elfdeps

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"sort"
)

// ld.so.cache, the "new" format glibc has written since 2.32 (and, after
// an old-format table, since long before):
//
//	header  magic "glibc-ld.so.cache" "1.1", nlibs u32, len_strings u32,
//	        flags u8 (endianness), 3 pad, extension_offset u32, 3×u32
//	entries nlibs × {flags i32, key u32, value u32, osversion u32, hwcap u64}
//	strings key (SONAME) and value (path) offsets from the header start
//
// Entries are sorted in descending _dl_cache_libcmp order, which the
// loader's binary search relies on.

const (
	cacheMagicNew = "glibc-ld.so.cache1.1"
	cacheMagicOld = "ld.so-1.7.0"
	cacheHdrSize  = 48
	cacheEntSize  = 24
	oldEntSize    = 12

	cacheEndianLittle = 2
	cacheEndianBig    = 3
)

// CacheEntry is one library in an ld.so.cache.
type CacheEntry struct {
	Flags int32
	Name  string // SONAME
	Path  string
	HWCap uint64
}

// ParseCache decodes an ld.so.cache in byte order bo (the target's).
func ParseCache(b []byte, bo binary.ByteOrder) ([]CacheEntry, error) {
	if bytes.HasPrefix(b, []byte(cacheMagicOld)) {
		if len(b) < 16 {
			return nil, errors.New("truncated old-format header")
		}
		n := uint64(bo.Uint32(b[12:]))
		off := uint64(16) + n*oldEntSize
		off = (off + 7) &^ 7 // the new table is aligned after the old one
		if off > uint64(len(b)) {
			return nil, errors.New("old-format table runs past the end")
		}
		b = b[off:]
	}
	if !bytes.HasPrefix(b, []byte(cacheMagicNew)) || len(b) < cacheHdrSize {
		return nil, errors.New("not an ld.so.cache in the glibc 1.1 format")
	}
	n := uint64(bo.Uint32(b[20:]))
	if n > uint64(len(b))/cacheEntSize {
		return nil, fmt.Errorf("cache claims %d entries in %d bytes", n, len(b))
	}
	str := func(off uint32) (string, error) {
		if uint64(off) >= uint64(len(b)) {
			return "", fmt.Errorf("string offset %d past the end", off)
		}
		end := bytes.IndexByte(b[off:], 0)
		if end < 0 {
			return "", errors.New("unterminated string")
		}
		return string(b[off : int(off)+end]), nil
	}
	out := make([]CacheEntry, 0, n)
	for i := uint64(0); i < n; i++ {
		e := b[cacheHdrSize+i*cacheEntSize:]
		if len(e) < cacheEntSize {
			return nil, errors.New("truncated entry table")
		}
		name, err := str(bo.Uint32(e[4:]))
		if err != nil {
			return nil, fmt.Errorf("entry %d key: %w", i, err)
		}
		p, err := str(bo.Uint32(e[8:]))
		if err != nil {
			return nil, fmt.Errorf("entry %d value: %w", i, err)
		}
		out = append(out, CacheEntry{Flags: int32(bo.Uint32(e[0:])), Name: name, Path: p, HWCap: bo.Uint64(e[16:])})
	}
	return out, nil
}

// LookupCache returns the path the loader takes for name: the first entry
// with that name whose flags are the target's, preferring entries without
// hwcap subdirectories (whose use depends on the CPU).
func LookupCache(entries []CacheEntry, name string, id int32) (string, bool) {
	found := ""
	for _, e := range entries {
		if e.Name != name || e.Flags != id {
			continue
		}
		if e.HWCap == 0 {
			return e.Path, true
		}
		if found == "" {
			found = e.Path
		}
	}
	return found, found != ""
}

// ByteOrder is what BuildCache writes with: binary.LittleEndian or
// binary.BigEndian.
type ByteOrder interface {
	binary.ByteOrder
	binary.AppendByteOrder
}

// BuildCache encodes entries as an ld.so.cache for byte order bo.
func BuildCache(entries []CacheEntry, bo ByteOrder) []byte {
	es := append([]CacheEntry(nil), entries...)
	sort.SliceStable(es, func(i, j int) bool {
		if c := libcmp(es[j].Name, es[i].Name); c != 0 {
			return c < 0 // descending, as ldconfig writes it
		}
		return es[i].Path < es[j].Path
	})
	strBase := uint32(cacheHdrSize + len(es)*cacheEntSize)
	var strs bytes.Buffer
	offsets := map[string]uint32{}
	intern := func(s string) uint32 {
		if o, ok := offsets[s]; ok {
			return o
		}
		o := strBase + uint32(strs.Len())
		strs.WriteString(s)
		strs.WriteByte(0)
		offsets[s] = o
		return o
	}
	ents := make([]byte, 0, len(es)*cacheEntSize)
	for _, e := range es {
		ents = bo.AppendUint32(ents, uint32(e.Flags))
		ents = bo.AppendUint32(ents, intern(e.Name))
		ents = bo.AppendUint32(ents, intern(e.Path))
		ents = bo.AppendUint32(ents, 0)
		ents = bo.AppendUint64(ents, e.HWCap)
	}
	hdr := []byte(cacheMagicNew)
	hdr = bo.AppendUint32(hdr, uint32(len(es)))
	hdr = bo.AppendUint32(hdr, uint32(strs.Len()))
	endian := byte(cacheEndianLittle)
	if bo.String() == binary.BigEndian.String() {
		endian = cacheEndianBig
	}
	hdr = append(hdr, endian, 0, 0, 0)
	hdr = bo.AppendUint32(hdr, 0) // no extensions
	hdr = append(hdr, make([]byte, 12)...)
	return append(append(hdr, ents...), strs.Bytes()...)
}

// libcmp is glibc's _dl_cache_libcmp: byte order, except that runs of
// digits compare as numbers and a digit sorts after a non-digit.
func libcmp(a, b string) int {
	isDigit := func(c byte) bool { return c >= '0' && c <= '9' }
	i, j := 0, 0
	for i < len(a) {
		switch {
		case isDigit(a[i]):
			if j >= len(b) || !isDigit(b[j]) {
				return 1
			}
			v1, v2 := 0, 0
			for i < len(a) && isDigit(a[i]) {
				v1 = v1*10 + int(a[i]-'0')
				i++
			}
			for j < len(b) && isDigit(b[j]) {
				v2 = v2*10 + int(b[j]-'0')
				j++
			}
			if v1 != v2 {
				return v1 - v2
			}
		case j < len(b) && isDigit(b[j]):
			return -1
		case j >= len(b):
			return int(a[i])
		case a[i] != b[j]:
			return int(a[i]) - int(b[j])
		default:
			i++
			j++
		}
	}
	if j < len(b) {
		return -int(b[j])
	}
	return 0
}

// ParseCacheFile reads and parses an ld.so.cache file.
func ParseCacheFile(p string, bo binary.ByteOrder) ([]CacheEntry, error) {
	b, err := os.ReadFile(p)
	if err != nil {
		return nil, err
	}
	return ParseCache(b, bo)
}
