package warmup

import (
	"bytes"
	"encoding/binary"
	"errors"
	"io"
)

// dynInfo is what ld.so will look for because of one ELF file: its
// interpreter, the libraries it names, and where it says to find them.
type dynInfo struct {
	machine uint16
	interp  string
	needed  []string
	rpath   string // DT_RPATH, used only without a DT_RUNPATH (as ld.so does)
	runpath string
}

// ELF constants, from the System V ABI's gABI (elf.h).
const (
	ptLoad    = 1
	ptDynamic = 2
	ptInterp  = 3

	dtNull    = 0
	dtNeeded  = 1
	dtStrtab  = 5
	dtStrsz   = 10
	dtRpath   = 15
	dtRunpath = 29
)

// Bounds on what an image's file can make us read: real programs stay far
// below them (curl's libcrypto: 11 program headers, 33 dynamic entries,
// a 40 KB string table).
const (
	maxPhdrs    = 128
	maxDynamic  = 64 << 10
	maxStrtab   = 1 << 20
	maxPathName = 4096
	maxNeeded   = 256
)

var errNotELF = errors.New("not an ELF file")

// readDyn reads the dynamic-linking facts of the ELF file f: a minimal
// parser rather than debug/elf, which would bring its section and DWARF
// readers and compressors into cimg-run for four fields. Everything it
// reads is bounded and checked: the file is the image's, and the image
// may be hostile. A file that is not ELF, or is malformed, is an error;
// the caller then only reads it ahead.
func readDyn(f io.ReaderAt) (*dynInfo, error) {
	var ident [64]byte
	n, _ := f.ReadAt(ident[:], 0)
	if n < 52 || !bytes.Equal(ident[:4], []byte("\x7fELF")) || (ident[4] == 2 && n < 64) {
		return nil, errNotELF
	}
	var bo binary.ByteOrder
	switch ident[5] {
	case 1:
		bo = binary.LittleEndian
	case 2:
		bo = binary.BigEndian
	default:
		return nil, errNotELF
	}
	is64 := ident[4] == 2
	if !is64 && ident[4] != 1 {
		return nil, errNotELF
	}
	d := &dynInfo{machine: bo.Uint16(ident[18:])}
	var phoff uint64
	var phentsize, phnum, want int
	if is64 {
		phoff, phentsize, phnum, want = bo.Uint64(ident[32:]), int(bo.Uint16(ident[54:])), int(bo.Uint16(ident[56:])), 56
	} else {
		phoff, phentsize, phnum, want = uint64(bo.Uint32(ident[28:])), int(bo.Uint16(ident[42:])), int(bo.Uint16(ident[44:])), 32
	}
	if phentsize < want || phentsize > 2*want || phnum == 0 || phnum > maxPhdrs || phoff > 1<<40 {
		return nil, errors.New("bad program header table")
	}
	ph := make([]byte, phentsize*phnum)
	if _, err := f.ReadAt(ph, int64(phoff)); err != nil {
		return nil, errors.New("program header table beyond the file")
	}
	type load struct{ vaddr, off, size uint64 }
	var loads []load
	var dynOff, dynSize uint64
	for i := 0; i < phnum; i++ {
		p := ph[i*phentsize:]
		var typ uint32
		var off, vaddr, filesz uint64
		if is64 {
			typ, off, vaddr, filesz = bo.Uint32(p), bo.Uint64(p[8:]), bo.Uint64(p[16:]), bo.Uint64(p[32:])
		} else {
			typ, off, vaddr, filesz = bo.Uint32(p), uint64(bo.Uint32(p[4:])), uint64(bo.Uint32(p[8:])), uint64(bo.Uint32(p[16:]))
		}
		switch typ {
		case ptLoad:
			loads = append(loads, load{vaddr, off, filesz})
		case ptDynamic:
			dynOff, dynSize = off, min(filesz, maxDynamic)
		case ptInterp:
			d.interp = readString(f, off, min(filesz, maxPathName))
		}
	}
	if dynSize == 0 {
		return d, nil // static, or only an interpreter
	}
	dyn := make([]byte, dynSize)
	if n, _ := f.ReadAt(dyn, int64(dynOff)); uint64(n) != dynSize {
		return nil, errors.New("dynamic segment beyond the file")
	}
	entry := 16
	if !is64 {
		entry = 8
	}
	var strtab, strsz uint64
	var needed []uint64
	var rpath, runpath uint64
	hasRpath, hasRunpath := false, false
	for i := 0; i+entry <= len(dyn); i += entry {
		var tag, val uint64
		if is64 {
			tag, val = bo.Uint64(dyn[i:]), bo.Uint64(dyn[i+8:])
		} else {
			tag, val = uint64(bo.Uint32(dyn[i:])), uint64(bo.Uint32(dyn[i+4:]))
		}
		if tag == dtNull {
			break
		}
		switch tag {
		case dtNeeded:
			if len(needed) < maxNeeded {
				needed = append(needed, val)
			}
		case dtStrtab:
			strtab = val
		case dtStrsz:
			strsz = val
		case dtRpath:
			rpath, hasRpath = val, true
		case dtRunpath:
			runpath, hasRunpath = val, true
		}
	}
	// DT_STRTAB is an address: the file offset is where a PT_LOAD maps it.
	strOff, found := uint64(0), false
	for _, l := range loads {
		if strtab >= l.vaddr && strtab-l.vaddr < l.size {
			strOff, found = l.off+(strtab-l.vaddr), true
			break
		}
	}
	if !found || strsz == 0 {
		return d, nil
	}
	str := make([]byte, min(strsz, maxStrtab))
	n, _ = f.ReadAt(str, int64(strOff))
	str = str[:n]
	name := func(off uint64) string {
		if off >= uint64(len(str)) {
			return ""
		}
		s := str[off:]
		if i := bytes.IndexByte(s, 0); i >= 0 {
			s = s[:i]
		}
		if len(s) > maxPathName {
			return ""
		}
		return string(s)
	}
	for _, off := range needed {
		if s := name(off); s != "" {
			d.needed = append(d.needed, s)
		}
	}
	if hasRunpath {
		d.runpath = name(runpath)
	} else if hasRpath {
		d.rpath = name(rpath)
	}
	return d, nil
}

// readString reads a NUL-terminated string of at most n bytes at off.
func readString(f io.ReaderAt, off, n uint64) string {
	b := make([]byte, n)
	m, _ := f.ReadAt(b, int64(off))
	b = b[:m]
	if i := bytes.IndexByte(b, 0); i >= 0 {
		b = b[:i]
	}
	return string(b)
}
