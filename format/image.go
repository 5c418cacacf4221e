package format

import (
	"bytes"
	"crypto/ed25519"
	"crypto/sha256"
	"fmt"
	"io"
	"os"
)

// Image is an opened .cimg: footer, manifest and signatures read and
// structurally checked. The payload has not been verified.
type Image struct {
	r          io.ReaderAt
	size       int64
	Footer     *Footer
	Manifest   []byte
	Signatures []Signature
}

// Open reads the footer, manifest and signatures of the size-byte image in
// r. The manifest's hash is checked here, so Manifest is exactly what was
// built (but not yet proven to be what was signed: see VerifySignatures).
func Open(r io.ReaderAt, size int64) (*Image, error) {
	if size < FooterSize {
		return nil, sectionErr("footer", ErrNotImage, "file is %d bytes, smaller than a %d-byte footer", size, FooterSize)
	}
	fb := make([]byte, FooterSize)
	if _, err := r.ReadAt(fb, size-FooterSize); err != nil {
		return nil, &SectionError{Section: "footer", Err: fmt.Errorf("read: %w", err)}
	}
	f, err := ParseFooter(fb, size)
	if err != nil {
		return nil, err
	}
	img := &Image{r: r, size: size, Footer: f}
	img.Manifest = make([]byte, f.ManifestSize)
	if _, err := r.ReadAt(img.Manifest, f.ManifestOffset); err != nil {
		return nil, &SectionError{Section: "manifest", Err: fmt.Errorf("read: %w", err)}
	}
	if sum := sha256.Sum256(img.Manifest); sum != f.ManifestHash {
		return nil, sectionErr("manifest", ErrIntegrity, "sha256 does not match the footer")
	}
	sb := make([]byte, f.SigSize)
	if _, err := r.ReadAt(sb, f.SigOffset); err != nil {
		return nil, &SectionError{Section: "signatures", Err: fmt.Errorf("read: %w", err)}
	}
	if img.Signatures, err = parseSigs(sb); err != nil {
		return nil, err
	}
	return img, nil
}

// OpenFile opens the .cimg at path and reads it as Open does. The caller
// closes the returned file, which stays the image's backing reader.
func OpenFile(path string) (*Image, *os.File, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, nil, err
	}
	fi, err := f.Stat()
	if err == nil {
		var img *Image
		if img, err = Open(f, fi.Size()); err == nil {
			return img, f, nil
		}
		err = fmt.Errorf("%s: %w", path, err)
	}
	f.Close()
	return nil, nil, err
}

// Size is the size of the whole file.
func (img *Image) Size() int64 { return img.size }

// Payload returns a reader over the squashfs payload.
func (img *Image) Payload() *io.SectionReader {
	return io.NewSectionReader(img.r, 0, img.Footer.PayloadSize)
}

// VerifyPayload recomputes the hash tree over the payload and compares it,
// byte for byte, with the stored tree, and its root with the footer's.
// It streams: each hash block is compared as soon as it is complete and
// then dropped, so memory stays at a few MiB whatever the payload's size,
// and every byte of the file is read once. A stored block that differs is
// a payload error if the root computed from the payload is not the
// footer's (the payload changed), else a hash tree error.
func (img *Image) VerifyPayload() error {
	f := img.Footer
	stored := make([]byte, BlockSize)
	badAt := int64(-1)
	root, err := walkTree(img.r, f.PayloadSize, f.Salt, func(off int64, block []byte) error {
		if _, err := img.r.ReadAt(stored, f.TreeOffset+off); err != nil {
			return &SectionError{Section: "verity", Err: fmt.Errorf("read: %w", err)}
		}
		if badAt < 0 && !bytes.Equal(stored, block) {
			badAt = off
		}
		return nil
	})
	if err != nil {
		if _, ok := err.(*SectionError); ok {
			return err
		}
		return &SectionError{Section: "payload", Err: err}
	}
	if root != f.RootHash {
		return sectionErr("payload", ErrIntegrity, "verity root hash %x does not match the footer's %x", root, f.RootHash)
	}
	if badAt >= 0 {
		return sectionErr("verity", ErrIntegrity, "stored hash tree differs from the payload's (hash block at tree offset %d)", badAt)
	}
	return nil
}

// VerifySignatures checks the image is signed by one of trusted.
func (img *Image) VerifySignatures(trusted []ed25519.PublicKey) ([]KeyID, error) {
	return VerifySignatures(img.Footer, img.Signatures, trusted)
}

// Verify checks everything: payload and tree, and, when trusted is not
// empty, the signatures.
func (img *Image) Verify(trusted []ed25519.PublicKey) error {
	if len(trusted) > 0 {
		if _, err := img.VerifySignatures(trusted); err != nil {
			return err
		}
	}
	return img.VerifyPayload()
}
