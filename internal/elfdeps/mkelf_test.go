package elfdeps

import (
	"bytes"
	"debug/elf"
	"encoding/binary"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"testing"
)

// spec describes a synthetic ELF object. The generator writes only what
// the loader reads — ELF header, program headers, PT_INTERP, PT_DYNAMIC,
// the dynamic string table and version records — and no section headers
// at all, so every fixture also proves the resolver does without them.
type spec struct {
	class    elf.Class
	machine  elf.Machine
	flags    uint32
	exec     bool
	interp   string
	soname   string
	needed   []string
	rpath    string
	runpath  string
	nodeflib bool
	verdef   []string            // versions defined
	verneed  map[string][]string // lib → versions needed
}

func amd64(s spec) spec {
	s.class, s.machine = elf.ELFCLASS64, elf.EM_X86_64
	return s
}

func mkELF(s spec) []byte {
	is64 := s.class == elf.ELFCLASS64
	le := binary.LittleEndian
	var strtab bytes.Buffer
	strtab.WriteByte(0)
	strOff := map[string]uint32{}
	str := func(v string) uint32 {
		if o, ok := strOff[v]; ok {
			return o
		}
		o := uint32(strtab.Len())
		strtab.WriteString(v)
		strtab.WriteByte(0)
		strOff[v] = o
		return o
	}
	type dyn struct {
		tag elf.DynTag
		val uint64
	}
	var dyns []dyn
	for _, n := range s.needed {
		dyns = append(dyns, dyn{elf.DT_NEEDED, uint64(str(n))})
	}
	if s.soname != "" {
		dyns = append(dyns, dyn{elf.DT_SONAME, uint64(str(s.soname))})
	}
	if s.rpath != "" {
		dyns = append(dyns, dyn{elf.DT_RPATH, uint64(str(s.rpath))})
	}
	if s.runpath != "" {
		dyns = append(dyns, dyn{elf.DT_RUNPATH, uint64(str(s.runpath))})
	}
	if s.nodeflib {
		dyns = append(dyns, dyn{elf.DT_FLAGS_1, uint64(elf.DF_1_NODEFLIB)})
	}
	// Version records reference strings, so intern those first.
	var verdef, verneed []byte
	if len(s.verdef) > 0 {
		names := append([]string{s.soname}, s.verdef...)
		for i, n := range names {
			flags := uint16(0)
			if i == 0 {
				flags = 1 // VER_FLG_BASE
			}
			next := uint32(28)
			if i == len(names)-1 {
				next = 0
			}
			verdef = le.AppendUint16(verdef, 1)
			verdef = le.AppendUint16(verdef, flags)
			verdef = le.AppendUint16(verdef, uint16(i+1))
			verdef = le.AppendUint16(verdef, 1)
			verdef = le.AppendUint32(verdef, 0)
			verdef = le.AppendUint32(verdef, 20)
			verdef = le.AppendUint32(verdef, next)
			verdef = le.AppendUint32(verdef, str(n))
			verdef = le.AppendUint32(verdef, 0)
		}
	}
	if len(s.verneed) > 0 {
		libs := make([]string, 0, len(s.verneed))
		for l := range s.verneed {
			libs = append(libs, l)
		}
		sort.Strings(libs)
		for i, l := range libs {
			vs := s.verneed[l]
			next := uint32(16 + 16*len(vs))
			if i == len(libs)-1 {
				next = 0
			}
			verneed = le.AppendUint16(verneed, 1)
			verneed = le.AppendUint16(verneed, uint16(len(vs)))
			verneed = le.AppendUint32(verneed, str(l))
			verneed = le.AppendUint32(verneed, 16)
			verneed = le.AppendUint32(verneed, next)
			for j, v := range vs {
				vnext := uint32(16)
				if j == len(vs)-1 {
					vnext = 0
				}
				verneed = le.AppendUint32(verneed, 0)
				verneed = le.AppendUint16(verneed, 0)
				verneed = le.AppendUint16(verneed, 0)
				verneed = le.AppendUint32(verneed, str(v))
				verneed = le.AppendUint32(verneed, vnext)
			}
		}
	}

	ehsize, phsize := 52, 32
	if is64 {
		ehsize, phsize = 64, 56
	}
	nph := 2
	if s.interp != "" {
		nph = 3
	}
	off := ehsize + nph*phsize
	interpOff := off
	off += len(s.interp) + 1
	strtabOff := off
	off += strtab.Len()
	off = (off + 7) &^ 7
	verdefOff := off
	off += len(verdef)
	verneedOff := off
	off += len(verneed)
	off = (off + 7) &^ 7
	dynOff := off
	dyns = append(dyns, dyn{elf.DT_STRTAB, uint64(strtabOff)}, dyn{elf.DT_STRSZ, uint64(strtab.Len())})
	if len(verdef) > 0 {
		dyns = append(dyns, dyn{elf.DT_VERDEF, uint64(verdefOff)}, dyn{elf.DT_VERDEFNUM, uint64(len(s.verdef) + 1)})
	}
	if len(verneed) > 0 {
		dyns = append(dyns, dyn{elf.DT_VERNEED, uint64(verneedOff)}, dyn{elf.DT_VERNEEDNUM, uint64(len(s.verneed))})
	}
	dyns = append(dyns, dyn{elf.DT_NULL, 0})
	entSize := 8
	if is64 {
		entSize = 16
	}
	total := dynOff + len(dyns)*entSize

	b := make([]byte, 0, total)
	b = append(b, 0x7f, 'E', 'L', 'F', byte(s.class), byte(elf.ELFDATA2LSB), 1, 0)
	b = append(b, make([]byte, 8)...)
	typ := uint16(elf.ET_DYN)
	if s.exec {
		typ = uint16(elf.ET_EXEC)
	}
	b = le.AppendUint16(b, typ)
	b = le.AppendUint16(b, uint16(s.machine))
	b = le.AppendUint32(b, 1)
	word := func(v uint64) {
		if is64 {
			b = le.AppendUint64(b, v)
		} else {
			b = le.AppendUint32(b, uint32(v))
		}
	}
	word(0)              // entry
	word(uint64(ehsize)) // phoff
	word(0)              // shoff: no section headers
	b = le.AppendUint32(b, s.flags)
	b = le.AppendUint16(b, uint16(ehsize))
	b = le.AppendUint16(b, uint16(phsize))
	b = le.AppendUint16(b, uint16(nph))
	b = le.AppendUint16(b, 0)
	b = le.AppendUint16(b, 0)
	b = le.AppendUint16(b, 0)
	phdr := func(typ elf.ProgType, offset, size uint64) {
		b = le.AppendUint32(b, uint32(typ))
		if is64 {
			b = le.AppendUint32(b, 4) // flags
			b = le.AppendUint64(b, offset)
			b = le.AppendUint64(b, offset)
			b = le.AppendUint64(b, offset)
			b = le.AppendUint64(b, size)
			b = le.AppendUint64(b, size)
			b = le.AppendUint64(b, 8)
		} else {
			b = le.AppendUint32(b, uint32(offset))
			b = le.AppendUint32(b, uint32(offset))
			b = le.AppendUint32(b, uint32(offset))
			b = le.AppendUint32(b, uint32(size))
			b = le.AppendUint32(b, uint32(size))
			b = le.AppendUint32(b, 4)
			b = le.AppendUint32(b, 4)
		}
	}
	phdr(elf.PT_LOAD, 0, uint64(total))
	phdr(elf.PT_DYNAMIC, uint64(dynOff), uint64(len(dyns)*entSize))
	if s.interp != "" {
		phdr(elf.PT_INTERP, uint64(interpOff), uint64(len(s.interp)+1))
	}
	b = append(b, s.interp...)
	b = append(b, 0)
	b = append(b, strtab.Bytes()...)
	b = append(b, make([]byte, verdefOff-len(b))...)
	b = append(b, verdef...)
	b = append(b, verneed...)
	b = append(b, make([]byte, dynOff-len(b))...)
	for _, d := range dyns {
		word(uint64(d.tag))
		word(d.val)
	}
	return b
}

// fsTree writes files (ELF specs or raw strings) and symlinks under a new
// root directory.
type fsTree struct {
	t    *testing.T
	root string
}

func newRoot(t *testing.T) *fsTree { return &fsTree{t: t, root: t.TempDir()} }

func (f *fsTree) file(p string, content []byte) *fsTree {
	hp := filepath.Join(f.root, p)
	os.MkdirAll(filepath.Dir(hp), 0o755)
	if err := os.WriteFile(hp, content, 0o755); err != nil {
		f.t.Fatal(err)
	}
	return f
}

func (f *fsTree) elf(p string, s spec) *fsTree { return f.file(p, mkELF(s)) }

func (f *fsTree) link(p, target string) *fsTree {
	hp := filepath.Join(f.root, p)
	os.MkdirAll(filepath.Dir(hp), 0o755)
	if err := os.Symlink(target, hp); err != nil {
		f.t.Fatal(err)
	}
	return f
}

func TestMkELFParses(t *testing.T) {
	for _, class := range []elf.Class{elf.ELFCLASS32, elf.ELFCLASS64} {
		b := mkELF(spec{class: class, machine: elf.EM_ARM, flags: efARMABIFloatHard, interp: "/lib/ld.so", soname: "libx.so.1",
			needed: []string{"liba.so", "libb.so"}, rpath: "/r1:/r2", runpath: "$ORIGIN/../lib", nodeflib: true,
			verdef: []string{"V_1", "V_2"}, verneed: map[string][]string{"libc.so.6": {"GLIBC_2.2", "GLIBC_2.34"}}})
		f, err := Read(bytes.NewReader(b))
		if err != nil {
			t.Fatal(err)
		}
		if f.Interp != "/lib/ld.so" || f.Soname != "libx.so.1" || len(f.Needed) != 2 || len(f.RPath) != 2 ||
			f.RunPath[0] != "$ORIGIN/../lib" || !f.NoDefLib || !f.HasRun || f.Flags != efARMABIFloatHard ||
			len(f.Verdef) != 2 || len(f.Verneed["libc.so.6"]) != 2 || f.Class != class {
			t.Errorf("%v: parsed %+v", class, f)
		}
	}
}

func execOut(name string, args ...string) (string, error) {
	b, err := exec.Command(name, args...).CombinedOutput()
	return string(b), err
}
