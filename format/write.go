package format

import (
	"crypto/ed25519"
	"crypto/sha256"
	"fmt"
	"io"
)

// File is what Finish and Resign write into: an *os.File does.
type File interface {
	io.ReaderAt
	io.WriterAt
}

// DefaultSalt derives the verity salt from the manifest and payload size,
// so that the same inputs give the same bytes. The salt's job in dm-verity
// is to keep hashes from being precomputed across images, which a
// content-derived salt does as well as a random one.
func DefaultSalt(manifest []byte, payloadSize int64) []byte {
	h := sha256.New()
	fmt.Fprintf(h, "cimg salt v1 %d\x00", payloadSize)
	h.Write(manifest)
	return h.Sum(nil)
}

// FinishOptions are the sections appended after the payload.
type FinishOptions struct {
	Manifest []byte
	Salt     []byte // nil: DefaultSalt
	Signers  []ed25519.PrivateKey
}

// Finish appends the hash tree, manifest, signatures and footer after a
// payload of payloadSize bytes (a multiple of BlockSize) already written at
// offset 0 of f, and returns the footer and the file's final size.
func Finish(f File, payloadSize int64, o FinishOptions) (*Footer, int64, error) {
	if len(o.Manifest) > MaxManifestSize {
		return nil, 0, fmt.Errorf("manifest is %d bytes, over the %d-byte cap", len(o.Manifest), MaxManifestSize)
	}
	salt := o.Salt
	if salt == nil {
		salt = DefaultSalt(o.Manifest, payloadSize)
	}
	if len(salt) > MaxSaltSize {
		return nil, 0, fmt.Errorf("salt is %d bytes, over %d", len(salt), MaxSaltSize)
	}
	// The tree goes straight to the file as each block completes: nothing
	// of it is kept in memory.
	treeSize := VerityTreeSize(payloadSize / BlockSize)
	root, err := walkTree(f, payloadSize, salt, func(off int64, block []byte) error {
		if _, err := f.WriteAt(block, payloadSize+off); err != nil {
			return fmt.Errorf("write hash tree: %w", err)
		}
		return nil
	})
	if err != nil {
		return nil, 0, err
	}
	ft := &Footer{
		PayloadSize:    payloadSize,
		TreeOffset:     payloadSize,
		TreeSize:       treeSize,
		Salt:           salt,
		RootHash:       root,
		ManifestOffset: payloadSize + treeSize,
		ManifestSize:   int64(len(o.Manifest)),
		ManifestHash:   sha256.Sum256(o.Manifest),
	}
	if _, err := f.WriteAt(o.Manifest, ft.ManifestOffset); err != nil {
		return nil, 0, fmt.Errorf("write manifest: %w", err)
	}
	size, err := writeTail(f, ft, sign(ft, o.Signers))
	return ft, size, err
}

// Resign replaces the signatures of an image with sigs from keys, keeping
// the signatures of other keys it already carries. It writes the new tail
// at the old signatures' offset; the caller truncates the file to the
// returned size (or writes into a fresh copy).
func Resign(f File, img *Image, keys []ed25519.PrivateKey) (int64, error) {
	ft := *img.Footer
	fresh := sign(&ft, keys)
	byID := map[KeyID]Signature{}
	for _, s := range img.Signatures {
		byID[s.KeyID] = s
	}
	for _, s := range fresh {
		byID[s.KeyID] = s
	}
	all := make([]Signature, 0, len(byID))
	for _, s := range byID {
		all = append(all, s)
	}
	sortSigs(all)
	return writeTail(f, &ft, all)
}

func writeTail(f File, ft *Footer, sigs []Signature) (int64, error) {
	sb := marshalSigs(sigs)
	if len(sb) > MaxSigSize {
		return 0, fmt.Errorf("%d signatures take %d bytes, over the %d-byte cap of the signatures section", len(sigs), len(sb), MaxSigSize)
	}
	ft.SigOffset = ft.ManifestOffset + ft.ManifestSize
	ft.SigSize = int64(len(sb))
	if _, err := f.WriteAt(sb, ft.SigOffset); err != nil {
		return 0, fmt.Errorf("write signatures: %w", err)
	}
	end := ft.SigOffset + ft.SigSize
	if _, err := f.WriteAt(ft.Marshal(), end); err != nil {
		return 0, fmt.Errorf("write footer: %w", err)
	}
	return end + FooterSize, nil
}
