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
	// MaxManifestSize caps the manifest section.
	MaxManifestSize = 1 << 20
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
		name      string
		off, size uint64
		dst       [2]*int64
	}
	spans := []span{
		{"payload", 0, le.Uint64(b[24:]), [2]*int64{nil, &f.PayloadSize}},
		{"verity", le.Uint64(b[32:]), le.Uint64(b[40:]), [2]*int64{&f.TreeOffset, &f.TreeSize}},
		{"manifest", le.Uint64(b[160:]), le.Uint64(b[168:]), [2]*int64{&f.ManifestOffset, &f.ManifestSize}},
		{"signatures", le.Uint64(b[208:]), le.Uint64(b[216:]), [2]*int64{&f.SigOffset, &f.SigSize}},
	}
	at := uint64(0)
	for _, s := range spans {
		if s.off != at {
			return nil, sectionErr(s.name, ErrCorrupt, "starts at offset %d, want %d (sections must be contiguous)", s.off, at)
		}
		if s.size > end-at {
			return nil, sectionErr(s.name, ErrCorrupt, "%d bytes at offset %d run past the footer at %d (truncated?)", s.size, s.off, end)
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
	if f.ManifestSize > MaxManifestSize {
		return nil, sectionErr("manifest", ErrCorrupt, "%d bytes exceeds the %d-byte cap", f.ManifestSize, MaxManifestSize)
	}
	return f, nil
}
