package format

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
)

const (
	// FooterSize is the fixed size of the footer at the end of the file.
	FooterSize = 256
	// Version is the only format version this package reads and writes.
	Version = 1
	// MaxManifestSize caps the manifest section, which Open reads whole
	// into memory before anything is verified. A manifest that sets every
	// key, with a long environment and many mounts, is a few KiB; 1 MiB is
	// hundreds of times that and still a harmless allocation.
	MaxManifestSize = 1 << 20
	// MaxSigSize caps the signatures section, which Open also reads whole
	// before any check: an 8-byte header and 72 bytes per signature. Real
	// images carry one signature per release key, a handful at most; 64 KiB
	// holds 910. The payload and the hash tree have no cap but the file:
	// they are never held in memory (VerifyPayload streams them).
	MaxSigSize = 64 << 10
	// MaxSaltSize is the room for the verity salt in the footer.
	MaxSaltSize = 64

	hashAlgSHA256 = 1
	signedLen     = 208 // footer bytes covered by signatures
	checksumAt    = 224
)

var footerMagic = [8]byte{'C', 'I', 'M', 'G', 'F', 'O', 'O', 'T'}

// Errors callers branch on; every error from this package wraps one.
var (
	// ErrNotImage: no cimg footer at the end of the file.
	ErrNotImage = errors.New("not a cimg image")
	// ErrCorrupt: the structure is damaged (bad checksum, bad offsets).
	ErrCorrupt = errors.New("corrupt image")
	// ErrIntegrity: a section's content does not match its hash.
	ErrIntegrity = errors.New("integrity check failed")
	// ErrSignature: no trusted signature, or a bad one.
	ErrSignature = errors.New("signature check failed")
)

// SectionError names the section where reading or verifying failed.
type SectionError struct {
	Section string // footer, payload, verity, manifest, signatures
	Err     error
}

func (e *SectionError) Error() string { return e.Section + ": " + e.Err.Error() }
func (e *SectionError) Unwrap() error { return e.Err }

// SizeError is a section size in the footer over its cap: the fixed
// maximum of the section, or what is left of the file before the footer.
// It is the Err of a *SectionError and wraps ErrCorrupt. It is reported
// before anything of that size is read or allocated.
type SizeError struct {
	Field string // the footer field, e.g. "sig_size (footer bytes 216-223)"
	Size  uint64 // what the footer claims
	Cap   uint64
	// FileLimit: the cap is the room left in the file, not a fixed maximum.
	FileLimit bool
}

func (e *SizeError) Error() string {
	if e.FileLimit {
		return fmt.Sprintf("%v: footer field %s claims %d bytes, but only %d bytes of the file are left before the footer: "+
			"the file is truncated or its footer damaged; download or copy the image again, or rebuild it", ErrCorrupt, e.Field, e.Size, e.Cap)
	}
	return fmt.Sprintf("%v: footer field %s claims %d bytes, over the %d-byte cap for this section: "+
		"the footer is damaged or forged, or the image was not written by cimg-build; rebuild it, or get it again from its source", ErrCorrupt, e.Field, e.Size, e.Cap)
}

func (e *SizeError) Unwrap() error { return ErrCorrupt }

func sectionErr(section string, kind error, format string, args ...any) error {
	return &SectionError{Section: section, Err: fmt.Errorf("%w: "+format, append([]any{kind}, args...)...)}
}

// Footer is the fixed-size record at the end of every .cimg.
type Footer struct {
	PayloadSize    int64 // squashfs, padded; it starts at offset 0
	TreeOffset     int64
	TreeSize       int64
	Salt           []byte
	RootHash       [32]byte
	ManifestOffset int64
	ManifestSize   int64
	ManifestHash   [32]byte
	SigOffset      int64
	SigSize        int64
}

// DataBlocks is the number of verity data blocks in the payload.
func (f *Footer) DataBlocks() int64 { return f.PayloadSize / BlockSize }

// Marshal encodes the footer with its checksum.
func (f *Footer) Marshal() []byte {
	b := make([]byte, FooterSize)
	copy(b[0:], footerMagic[:])
	le := binary.LittleEndian
	le.PutUint32(b[8:], Version)
	le.PutUint32(b[12:], 0) // flags
	le.PutUint64(b[16:], 0) // payload offset
	le.PutUint64(b[24:], uint64(f.PayloadSize))
	le.PutUint64(b[32:], uint64(f.TreeOffset))
	le.PutUint64(b[40:], uint64(f.TreeSize))
	le.PutUint32(b[48:], BlockSize)
	le.PutUint32(b[52:], BlockSize)
	le.PutUint32(b[56:], hashAlgSHA256)
	le.PutUint32(b[60:], uint32(len(f.Salt)))
	copy(b[64:128], f.Salt)
	copy(b[128:160], f.RootHash[:])
	le.PutUint64(b[160:], uint64(f.ManifestOffset))
	le.PutUint64(b[168:], uint64(f.ManifestSize))
	copy(b[176:208], f.ManifestHash[:])
	le.PutUint64(b[208:], uint64(f.SigOffset))
	le.PutUint64(b[216:], uint64(f.SigSize))
	sum := sha256.Sum256(b[:checksumAt])
	copy(b[checksumAt:], sum[:])
	return b
}

// signedBytes is what signatures cover: the footer minus the signature
// section's place and the checksum, behind a domain separator.
func (f *Footer) signedBytes() []byte {
	return append([]byte("cimg signature v1\x00"), f.Marshal()[:signedLen]...)
}

// ParseFooter decodes and checks a footer read from the last FooterSize
// bytes of a file of fileSize bytes: magic, checksum, version, fixed
// parameters, and that the sections tile the file exactly.
func ParseFooter(b []byte, fileSize int64) (*Footer, error) {
	if fileSize < FooterSize || len(b) != FooterSize {
		return nil, sectionErr("footer", ErrNotImage, "file is %d bytes, smaller than a %d-byte footer", fileSize, FooterSize)
	}
	if !bytes.Equal(b[:8], footerMagic[:]) {
		return nil, sectionErr("footer", ErrNotImage, "no cimg footer magic in the last %d bytes (not a .cimg, or truncated)", FooterSize)
	}
	if sum := sha256.Sum256(b[:checksumAt]); !bytes.Equal(sum[:], b[checksumAt:]) {
		return nil, sectionErr("footer", ErrCorrupt, "footer checksum mismatch")
	}
	le := binary.LittleEndian
	if v := le.Uint32(b[8:]); v != Version {
		return nil, sectionErr("footer", ErrCorrupt, "format version %d, this cimg reads version %d", v, Version)
	}
	if fl := le.Uint32(b[12:]); fl != 0 {
		return nil, sectionErr("footer", ErrCorrupt, "unknown flags %#x", fl)
	}
	if off := le.Uint64(b[16:]); off != 0 {
		return nil, sectionErr("footer", ErrCorrupt, "payload offset %d, want 0", off)
	}
	if db, hb, alg := le.Uint32(b[48:]), le.Uint32(b[52:]), le.Uint32(b[56:]); db != BlockSize || hb != BlockSize || alg != hashAlgSHA256 {
		return nil, sectionErr("footer", ErrCorrupt, "verity parameters data block %d, hash block %d, algorithm %d; want 4096, 4096, sha256", db, hb, alg)
	}
	saltLen := le.Uint32(b[60:])
	if saltLen > MaxSaltSize {
		return nil, sectionErr("footer", ErrCorrupt, "salt length %d exceeds %d", saltLen, MaxSaltSize)
	}
	for _, c := range b[64+saltLen : 128] {
		if c != 0 {
			return nil, sectionErr("footer", ErrCorrupt, "non-zero bytes after the salt")
		}
	}
	f := &Footer{Salt: bytes.Clone(b[64 : 64+saltLen])}
	copy(f.RootHash[:], b[128:160])
	copy(f.ManifestHash[:], b[176:208])

	// Offsets are read as uint64 and checked against the file before they
	// become int64, so no overflow can sneak past the bounds checks.
	end := uint64(fileSize - FooterSize)
	type span struct {
		name, field string
		off, size   uint64
		max         uint64 // 0: bounded by the file only
		dst         [2]*int64
	}
	spans := []span{
		{"payload", "payload_size (footer bytes 24-31)", 0, le.Uint64(b[24:]), 0, [2]*int64{nil, &f.PayloadSize}},
		{"verity", "tree_size (footer bytes 40-47)", le.Uint64(b[32:]), le.Uint64(b[40:]), 0, [2]*int64{&f.TreeOffset, &f.TreeSize}},
		{"manifest", "manifest_size (footer bytes 168-175)", le.Uint64(b[160:]), le.Uint64(b[168:]), MaxManifestSize, [2]*int64{&f.ManifestOffset, &f.ManifestSize}},
		{"signatures", "sig_size (footer bytes 216-223)", le.Uint64(b[208:]), le.Uint64(b[216:]), MaxSigSize, [2]*int64{&f.SigOffset, &f.SigSize}},
	}
	at := uint64(0)
	for _, s := range spans {
		if s.max > 0 && s.size > s.max {
			return nil, &SectionError{Section: s.name, Err: &SizeError{Field: s.field, Size: s.size, Cap: s.max}}
		}
		if s.off != at {
			return nil, sectionErr(s.name, ErrCorrupt, "starts at offset %d, want %d (sections must be contiguous)", s.off, at)
		}
		if s.size > end-at {
			return nil, &SectionError{Section: s.name, Err: &SizeError{Field: s.field, Size: s.size, Cap: end - at, FileLimit: true}}
		}
		at += s.size
		if s.dst[0] != nil {
			*s.dst[0] = int64(s.off)
		}
		*s.dst[1] = int64(s.size)
	}
	if at != end {
		return nil, sectionErr("footer", ErrCorrupt, "%d unaccounted bytes before the footer", end-at)
	}
	if f.PayloadSize == 0 || f.PayloadSize%BlockSize != 0 {
		return nil, sectionErr("payload", ErrCorrupt, "size %d is not a positive multiple of %d", f.PayloadSize, BlockSize)
	}
	if want := VerityTreeSize(f.DataBlocks()); f.TreeSize != want {
		return nil, sectionErr("verity", ErrCorrupt, "hash tree is %d bytes, want %d for %d data blocks", f.TreeSize, want, f.DataBlocks())
	}
	return f, nil
}
