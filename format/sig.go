package format

import (
	"bytes"
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"sort"
	"strings"
)

// KeyIDSize is the length of a key id: the first bytes of the sha256 of
// the ed25519 public key.
const KeyIDSize = 8

const sigEntrySize = KeyIDSize + ed25519.SignatureSize

var sigMagic = [4]byte{'C', 'S', 'I', 'G'}

// KeyID identifies a public key in signatures and on screen.
type KeyID [KeyIDSize]byte

func (k KeyID) String() string { return hex.EncodeToString(k[:]) }

// KeyIDOf returns the id of an ed25519 public key.
func KeyIDOf(pub ed25519.PublicKey) KeyID {
	sum := sha256.Sum256(pub)
	var id KeyID
	copy(id[:], sum[:])
	return id
}

// Signature is one entry of the signatures section.
type Signature struct {
	KeyID KeyID
	Sig   [ed25519.SignatureSize]byte
}

func marshalSigs(sigs []Signature) []byte {
	if len(sigs) == 0 {
		return nil
	}
	b := append([]byte(nil), sigMagic[:]...)
	b = binary.LittleEndian.AppendUint32(b, uint32(len(sigs)))
	for _, s := range sigs {
		b = append(b, s.KeyID[:]...)
		b = append(b, s.Sig[:]...)
	}
	return b
}

// parseSigs decodes the signatures section; its size was checked against
// the file, and the count is checked against the size before allocating.
func parseSigs(b []byte) ([]Signature, error) {
	if len(b) == 0 {
		return nil, nil
	}
	if len(b) < 8 || !bytes.Equal(b[:4], sigMagic[:]) {
		return nil, sectionErr("signatures", ErrCorrupt, "bad section header")
	}
	n := binary.LittleEndian.Uint32(b[4:])
	if uint64(len(b)-8) != uint64(n)*sigEntrySize || n == 0 {
		return nil, sectionErr("signatures", ErrCorrupt, "%d bytes do not hold %d signatures", len(b), n)
	}
	sigs := make([]Signature, n)
	for i := range sigs {
		e := b[8+i*sigEntrySize:]
		copy(sigs[i].KeyID[:], e[:KeyIDSize])
		copy(sigs[i].Sig[:], e[KeyIDSize:sigEntrySize])
	}
	return sigs, nil
}

// sign returns the signatures of f by keys, sorted by key id so the
// section's bytes do not depend on the order keys were given.
func sign(f *Footer, keys []ed25519.PrivateKey) []Signature {
	msg := f.signedBytes()
	var sigs []Signature
	for _, k := range keys {
		s := Signature{KeyID: KeyIDOf(k.Public().(ed25519.PublicKey))}
		copy(s.Sig[:], ed25519.Sign(k, msg))
		sigs = append(sigs, s)
	}
	sortSigs(sigs)
	return sigs
}

func sortSigs(sigs []Signature) {
	sort.Slice(sigs, func(i, j int) bool { return bytes.Compare(sigs[i].KeyID[:], sigs[j].KeyID[:]) < 0 })
}

// VerifySignatures checks the image is signed by at least one of trusted.
// A signature claiming a trusted key id that does not verify is an error
// even if another one does: it means the image was altered. Signatures by
// keys not in trusted are ignored. It returns the ids that verified.
func VerifySignatures(f *Footer, sigs []Signature, trusted []ed25519.PublicKey) ([]KeyID, error) {
	byID := map[KeyID]ed25519.PublicKey{}
	for _, k := range trusted {
		byID[KeyIDOf(k)] = k
	}
	msg := f.signedBytes()
	var ok []KeyID
	var seen []string
	for _, s := range sigs {
		seen = append(seen, s.KeyID.String())
		pub, known := byID[s.KeyID]
		if !known {
			continue
		}
		if !ed25519.Verify(pub, msg, s.Sig[:]) {
			return nil, sectionErr("signatures", ErrSignature, "signature by key %s does not match the image", s.KeyID)
		}
		ok = append(ok, s.KeyID)
	}
	if len(ok) == 0 {
		if len(sigs) == 0 {
			return nil, sectionErr("signatures", ErrSignature, "image is unsigned and trusted keys are configured")
		}
		return nil, sectionErr("signatures", ErrSignature, "signed only by untrusted keys %s", strings.Join(seen, ", "))
	}
	return ok, nil
}
