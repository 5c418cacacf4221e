package elfdeps

import (
	"bytes"
	"debug/elf"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
)

// File is what the resolver needs of one ELF object, read from its
// program headers and PT_DYNAMIC only: section headers may be stripped
// (sstrip, some vendor blobs) and must never turn into "no dependencies".
type File struct {
	Class   elf.Class
	Data    elf.Data
	Machine elf.Machine
	Flags   uint32 // e_flags: the ARM float ABI lives here
	Type    elf.Type

	Interp   string
	Soname   string
	Needed   []string
	RPath    []string // DT_RPATH entries, unexpanded
	RunPath  []string // DT_RUNPATH entries, unexpanded
	HasRun   bool     // DT_RUNPATH present (then DT_RPATH is ignored)
	NoDefLib bool     // DF_1_NODEFLIB
	Static   bool     // no PT_DYNAMIC

	// Verneed maps a needed file (SONAME) to the symbol versions required
	// from it; Verdef lists the versions this object defines.
	Verneed map[string][]string
	Verdef  []string
}

// ErrNotELF marks inputs that are not ELF files at all.
var ErrNotELF = errors.New("not an ELF file")

// ReadFile parses the ELF file at path.
func ReadFile(path string) (*File, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	return Read(f)
}

// Read parses an ELF object from r.
func Read(r io.ReaderAt) (*File, error) {
	var ident [16]byte
	if _, err := r.ReadAt(ident[:], 0); err != nil || !bytes.Equal(ident[:4], []byte(elf.ELFMAG)) {
		return nil, ErrNotELF
	}
	ef, err := elf.NewFile(r)
	if err != nil {
		return nil, fmt.Errorf("parse ELF: %w", err)
	}
	out := &File{Class: ef.Class, Data: ef.Data, Machine: ef.Machine, Type: ef.Type, Verneed: map[string][]string{}}
	out.Flags = readFlags(r, ef)
	var dyn *elf.Prog
	for _, p := range ef.Progs {
		switch p.Type {
		case elf.PT_INTERP:
			// The kernel refuses interpreter paths outside 2..PATH_MAX; a
			// claimed size is never allocated before that check.
			if p.Filesz < 2 || p.Filesz > 4096 {
				return nil, fmt.Errorf("PT_INTERP of %d bytes: not a path (the kernel takes 2 to 4096)", p.Filesz)
			}
			b := make([]byte, p.Filesz)
			if _, err := p.ReadAt(b, 0); err != nil {
				return nil, fmt.Errorf("read PT_INTERP: %w", err)
			}
			// A C string, as the kernel reads it: up to the first NUL.
			interp, _, _ := bytes.Cut(b, []byte{0})
			out.Interp = string(interp)
		case elf.PT_DYNAMIC:
			dyn = p
		}
	}
	if dyn == nil {
		out.Static = true
		return out, nil
	}
	if err := out.readDynamic(r, ef, dyn); err != nil {
		return nil, err
	}
	return out, nil
}

func readFlags(r io.ReaderAt, ef *elf.File) uint32 {
	off := int64(36) // e_flags in a 32-bit header
	if ef.Class == elf.ELFCLASS64 {
		off = 48
	}
	var b [4]byte
	if _, err := r.ReadAt(b[:], off); err != nil {
		return 0
	}
	return ef.ByteOrder.Uint32(b[:])
}

// vaddrReader maps virtual addresses to file offsets through PT_LOAD.
type vaddrReader struct {
	r     io.ReaderAt
	loads []*elf.Prog
}

func (v vaddrReader) read(addr uint64, n uint64) ([]byte, error) {
	for _, p := range v.loads {
		if addr >= p.Vaddr && addr < p.Vaddr+p.Filesz {
			if n > p.Vaddr+p.Filesz-addr {
				n = p.Vaddr + p.Filesz - addr
			}
			if n > 64<<20 {
				return nil, fmt.Errorf("dynamic table of %d bytes is implausible", n)
			}
			b := make([]byte, n)
			if _, err := v.r.ReadAt(b, int64(p.Off+addr-p.Vaddr)); err != nil {
				return nil, err
			}
			return b, nil
		}
	}
	return nil, fmt.Errorf("address %#x is in no PT_LOAD segment", addr)
}

// maxDynamic bounds the PT_DYNAMIC segment read: real ones are a few
// hundred entries (under 16 KiB); the claimed size comes from the file.
const maxDynamic = 1 << 20

func (f *File) readDynamic(r io.ReaderAt, ef *elf.File, dyn *elf.Prog) error {
	if dyn.Filesz > maxDynamic {
		return fmt.Errorf("PT_DYNAMIC of %d bytes is implausible (over %d)", dyn.Filesz, maxDynamic)
	}
	raw := make([]byte, dyn.Filesz)
	if _, err := dyn.ReadAt(raw, 0); err != nil {
		return fmt.Errorf("read PT_DYNAMIC: %w", err)
	}
	bo := ef.ByteOrder
	type ent struct {
		tag elf.DynTag
		val uint64
	}
	var ents []ent
	size := 8
	if ef.Class == elf.ELFCLASS64 {
		size = 16
	}
	for i := 0; i+size <= len(raw); i += size {
		var e ent
		if size == 16 {
			e = ent{elf.DynTag(bo.Uint64(raw[i:])), bo.Uint64(raw[i+8:])}
		} else {
			e = ent{elf.DynTag(bo.Uint32(raw[i:])), uint64(bo.Uint32(raw[i+4:]))}
		}
		if e.tag == elf.DT_NULL {
			break
		}
		ents = append(ents, e)
	}
	vr := vaddrReader{r: r}
	for _, p := range ef.Progs {
		if p.Type == elf.PT_LOAD {
			vr.loads = append(vr.loads, p)
		}
	}
	var strtab, strsz, verneed, verneednum, verdef, verdefnum uint64
	for _, e := range ents {
		switch e.tag {
		case elf.DT_STRTAB:
			strtab = e.val
		case elf.DT_STRSZ:
			strsz = e.val
		case elf.DT_VERNEED:
			verneed = e.val
		case elf.DT_VERNEEDNUM:
			verneednum = e.val
		case elf.DT_VERDEF:
			verdef = e.val
		case elf.DT_VERDEFNUM:
			verdefnum = e.val
		case elf.DT_FLAGS_1:
			f.NoDefLib = e.val&uint64(elf.DF_1_NODEFLIB) != 0
		}
	}
	if strtab == 0 {
		return errors.New("PT_DYNAMIC has no DT_STRTAB")
	}
	strs, err := vr.read(strtab, strsz)
	if err != nil {
		return fmt.Errorf("read dynamic string table: %w", err)
	}
	str := func(off uint64) (string, error) {
		if off >= uint64(len(strs)) {
			return "", fmt.Errorf("string offset %d outside the %d-byte table", off, len(strs))
		}
		end := bytes.IndexByte(strs[off:], 0)
		if end < 0 {
			return "", errors.New("unterminated string in the dynamic string table")
		}
		return string(strs[off : off+uint64(end)]), nil
	}
	for _, e := range ents {
		switch e.tag {
		case elf.DT_NEEDED, elf.DT_SONAME, elf.DT_RPATH, elf.DT_RUNPATH:
			s, err := str(e.val)
			if err != nil {
				return fmt.Errorf("%v: %w", e.tag, err)
			}
			switch e.tag {
			case elf.DT_NEEDED:
				f.Needed = append(f.Needed, s)
			case elf.DT_SONAME:
				f.Soname = s
			case elf.DT_RPATH:
				f.RPath = append(f.RPath, splitPath(s)...)
			case elf.DT_RUNPATH:
				f.RunPath = append(f.RunPath, splitPath(s)...)
				f.HasRun = true
			}
		}
	}
	if verneed != 0 {
		if err := f.readVerneed(vr, bo, verneed, verneednum, str); err != nil {
			return fmt.Errorf("read version needs: %w", err)
		}
	}
	if verdef != 0 {
		if err := f.readVerdef(vr, bo, verdef, verdefnum, str); err != nil {
			return fmt.Errorf("read version definitions: %w", err)
		}
	}
	return nil
}

// readVerneed walks Elf_Verneed records (16 bytes) and their Elf_Vernaux
// entries (16 bytes), the same layout for both classes.
func (f *File) readVerneed(vr vaddrReader, bo binary.ByteOrder, addr, num uint64, str func(uint64) (string, error)) error {
	for i := uint64(0); i < num && i < 4096; i++ {
		h, err := vr.read(addr, 16)
		if err != nil || len(h) < 16 {
			return fmt.Errorf("verneed record at %#x", addr)
		}
		cnt, file, aux, next := bo.Uint16(h[2:]), bo.Uint32(h[4:]), bo.Uint32(h[8:]), bo.Uint32(h[12:])
		lib, err := str(uint64(file))
		if err != nil {
			return err
		}
		a := addr + uint64(aux)
		for j := uint16(0); j < cnt && j < 4096; j++ {
			x, err := vr.read(a, 16)
			if err != nil || len(x) < 16 {
				return fmt.Errorf("vernaux record at %#x", a)
			}
			name, err := str(uint64(bo.Uint32(x[8:])))
			if err != nil {
				return err
			}
			f.Verneed[lib] = append(f.Verneed[lib], name)
			if bo.Uint32(x[12:]) == 0 {
				break
			}
			a += uint64(bo.Uint32(x[12:]))
		}
		if next == 0 {
			break
		}
		addr += uint64(next)
	}
	return nil
}

// readVerdef walks Elf_Verdef records (20 bytes); the first Elf_Verdaux
// of each names the version.
func (f *File) readVerdef(vr vaddrReader, bo binary.ByteOrder, addr, num uint64, str func(uint64) (string, error)) error {
	for i := uint64(0); i < num && i < 4096; i++ {
		h, err := vr.read(addr, 20)
		if err != nil || len(h) < 20 {
			return fmt.Errorf("verdef record at %#x", addr)
		}
		flags, aux, next := bo.Uint16(h[2:]), bo.Uint32(h[12:]), bo.Uint32(h[16:])
		x, err := vr.read(addr+uint64(aux), 8)
		if err != nil || len(x) < 8 {
			return fmt.Errorf("verdaux record at %#x", addr+uint64(aux))
		}
		name, err := str(uint64(bo.Uint32(x[0:])))
		if err != nil {
			return err
		}
		const verFlgBase = 1 // the file's own name, not a version
		if flags&verFlgBase == 0 {
			f.Verdef = append(f.Verdef, name)
		}
		if next == 0 {
			break
		}
		addr += uint64(next)
	}
	return nil
}

func splitPath(s string) []string {
	var out []string
	for _, p := range bytes.Split([]byte(s), []byte(":")) {
		if len(p) > 0 {
			out = append(out, string(p))
		}
	}
	return out
}
