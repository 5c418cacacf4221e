package build

import (
	"bytes"
	"crypto/ed25519"
)

type (
	ed25519Key = ed25519.PrivateKey
	ed25519Pub = ed25519.PublicKey
)

func testKey(seed byte) ed25519.PrivateKey {
	return ed25519.NewKeyFromSeed(bytes.Repeat([]byte{seed}, ed25519.SeedSize))
}

func pub(k ed25519.PrivateKey) ed25519.PublicKey { return k.Public().(ed25519.PublicKey) }
