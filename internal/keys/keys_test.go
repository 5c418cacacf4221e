package keys

import (
	"crypto/ed25519"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestGenerateLoad(t *testing.T) {
	dir := t.TempDir()
	name := filepath.Join(dir, "release")
	privPath, pubPath, err := Generate(name)
	if err != nil {
		t.Fatal(err)
	}
	fi, _ := os.Stat(privPath)
	if fi.Mode().Perm() != 0o600 {
		t.Errorf("private key mode %o", fi.Mode().Perm())
	}
	priv, err := LoadPrivate(privPath)
	if err != nil {
		t.Fatal(err)
	}
	pub, err := LoadPublic(pubPath)
	if err != nil {
		t.Fatal(err)
	}
	if !pub.Equal(priv.Public().(ed25519.PublicKey)) {
		t.Fatal("public key does not match private key")
	}
	if _, _, err := Generate(name); err == nil || !strings.Contains(err.Error(), "exists already") {
		t.Errorf("second Generate: %v", err)
	}
	all, err := LoadDir(dir)
	if err != nil || len(all) != 1 {
		t.Errorf("LoadDir: %d keys, %v", len(all), err)
	}
	os.Chmod(privPath, 0o644)
	if _, err := LoadPrivate(privPath); err == nil || !strings.Contains(err.Error(), "chmod 600") {
		t.Errorf("world-readable key: %v", err)
	}
	if _, err := LoadPublic(privPath); err == nil || !strings.Contains(err.Error(), "not a cimg-ed25519-pub") {
		t.Errorf("private key as public: %v", err)
	}
}
