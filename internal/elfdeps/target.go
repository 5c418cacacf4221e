package elfdeps

import (
	"debug/elf"
	"encoding/binary"
	"fmt"
)

// ARM EABI float ABI flags in e_flags.
const (
	efARMABIFloatSoft = 0x200
	efARMABIFloatHard = 0x400
)

// Target is the machine an image is built for: what every object must
// match, and the loader conventions that follow from it.
type Target struct {
	Arch      string // canonical (Debian) name: amd64, arm64, armhf, armel, i386, riscv64
	Class     elf.Class
	Data      elf.Data
	Machine   elf.Machine
	HardFloat bool // ARM only: EF_ARM_ABI_FLOAT_HARD
	Triplet   string
	Platform  string // AT_PLATFORM, for $PLATFORM
	CacheID   int32  // ld.so.cache flags of this arch's libraries
	MuslArch  string // the ARCH of ld-musl-ARCH.so.1
}

const (
	flagELFLibc6     = 0x0003
	flagX8664Lib64   = 0x0300
	flagARMLibHF     = 0x0900
	flagAArch64Lib64 = 0x0a00
	flagARMLibSF     = 0x0b00
	flagRISCVDouble  = 0x1000
)

var targets = []Target{
	{Arch: "amd64", Class: elf.ELFCLASS64, Data: elf.ELFDATA2LSB, Machine: elf.EM_X86_64, Triplet: "x86_64-linux-gnu", Platform: "x86_64", CacheID: flagELFLibc6 | flagX8664Lib64, MuslArch: "x86_64"},
	{Arch: "arm64", Class: elf.ELFCLASS64, Data: elf.ELFDATA2LSB, Machine: elf.EM_AARCH64, Triplet: "aarch64-linux-gnu", Platform: "aarch64", CacheID: flagELFLibc6 | flagAArch64Lib64, MuslArch: "aarch64"},
	{Arch: "armhf", Class: elf.ELFCLASS32, Data: elf.ELFDATA2LSB, Machine: elf.EM_ARM, HardFloat: true, Triplet: "arm-linux-gnueabihf", Platform: "v7l", CacheID: flagELFLibc6 | flagARMLibHF, MuslArch: "armhf"},
	{Arch: "armel", Class: elf.ELFCLASS32, Data: elf.ELFDATA2LSB, Machine: elf.EM_ARM, Triplet: "arm-linux-gnueabi", Platform: "v5l", CacheID: flagELFLibc6 | flagARMLibSF, MuslArch: "arm"},
	{Arch: "i386", Class: elf.ELFCLASS32, Data: elf.ELFDATA2LSB, Machine: elf.EM_386, Triplet: "i386-linux-gnu", Platform: "i686", CacheID: flagELFLibc6, MuslArch: "i386"},
	{Arch: "riscv64", Class: elf.ELFCLASS64, Data: elf.ELFDATA2LSB, Machine: elf.EM_RISCV, Triplet: "riscv64-linux-gnu", Platform: "riscv64", CacheID: flagELFLibc6 | flagRISCVDouble, MuslArch: "riscv64"},
}

// TargetOf returns the target an ELF object was built for.
func TargetOf(f *File) (Target, error) {
	for _, t := range targets {
		if t.Class == f.Class && t.Data == f.Data && t.Machine == f.Machine &&
			(t.Machine != elf.EM_ARM || t.HardFloat == (f.Flags&efARMABIFloatHard != 0)) {
			return t, nil
		}
	}
	return Target{}, fmt.Errorf("unsupported ELF target %v %v %v (flags %#x)", f.Machine, f.Class, f.Data, f.Flags)
}

// TargetByArch returns the target with a canonical arch name.
func TargetByArch(arch string) (Target, bool) {
	for _, t := range targets {
		if t.Arch == arch {
			return t, true
		}
	}
	return Target{}, false
}

// Matches reports whether f can be loaded into a process of this target,
// and if not, why: the loader skips such a candidate and searches on.
func (t Target) Matches(f *File) (bool, string) {
	switch {
	case f.Class != t.Class:
		return false, fmt.Sprintf("class %v", f.Class)
	case f.Data != t.Data:
		return false, fmt.Sprintf("byte order %v", f.Data)
	case f.Machine != t.Machine:
		return false, fmt.Sprintf("machine %v", f.Machine)
	case t.Machine == elf.EM_ARM && f.Flags&(efARMABIFloatHard|efARMABIFloatSoft) != 0 &&
		t.HardFloat != (f.Flags&efARMABIFloatHard != 0):
		if t.HardFloat {
			return false, "soft-float ABI"
		}
		return false, "hard-float ABI"
	}
	return true, ""
}

func byteOrder(t Target) ByteOrder {
	if t.Data == elf.ELFDATA2MSB {
		return binary.BigEndian
	}
	return binary.LittleEndian
}

// ByteOrderOf is the target's byte order, for BuildCache.
func ByteOrderOf(t Target) ByteOrder { return byteOrder(t) }
