// Package keys reads and writes the ed25519 key files cimg signs images
// with. A key file is one line of text, so it can be pasted, diffed and
// checked into a Yocto layer (public keys only):
//
//	NAME.pub  cimg-ed25519-pub <base64 public key> <name>
//	NAME.key  cimg-ed25519-key <base64 32-byte seed> <name>   (mode 0600)
package keys

import (
	"crypto/ed25519"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"
)

const (
	pubTag  = "cimg-ed25519-pub"
	privTag = "cimg-ed25519-key"
)

// Generate creates NAME.key and NAME.pub for the path prefix name. It never
// overwrites an existing file.
func Generate(name string) (privPath, pubPath string, err error) {
	pub, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return "", "", fmt.Errorf("generate key: %w", err)
	}
	label := filepath.Base(name)
	privPath, pubPath = name+".key", name+".pub"
	privLine := fmt.Sprintf("%s %s %s\n", privTag, base64.StdEncoding.EncodeToString(priv.Seed()), label)
	pubLine := fmt.Sprintf("%s %s %s\n", pubTag, base64.StdEncoding.EncodeToString(pub), label)
	if err := writeNew(privPath, privLine, 0o600); err != nil {
		return "", "", err
	}
	if err := writeNew(pubPath, pubLine, 0o644); err != nil {
		os.Remove(privPath)
		return "", "", err
	}
	return privPath, pubPath, nil
}

func writeNew(path, content string, mode fs.FileMode) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, mode)
	if err != nil {
		if errors.Is(err, fs.ErrExist) {
			return fmt.Errorf("%s exists already; not overwriting a key", path)
		}
		return err
	}
	_, err = f.WriteString(content)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		os.Remove(path)
		return fmt.Errorf("write %s: %w", path, err)
	}
	return nil
}

func parse(path, tag string, size int) ([]byte, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	fields := strings.Fields(string(b))
	if len(fields) < 2 || fields[0] != tag {
		return nil, fmt.Errorf("%s: not a %s file (want a line %q)", path, tag, tag+" <base64> <name>")
	}
	raw, err := base64.StdEncoding.DecodeString(fields[1])
	if err != nil || len(raw) != size {
		return nil, fmt.Errorf("%s: key is not %d bytes of base64", path, size)
	}
	return raw, nil
}

// LoadPrivate reads a NAME.key file. A key readable by group or others is
// refused, as ssh does.
func LoadPrivate(path string) (ed25519.PrivateKey, error) {
	fi, err := os.Stat(path)
	if err != nil {
		return nil, err
	}
	if fi.Mode().Perm()&0o077 != 0 {
		return nil, fmt.Errorf("%s: private key is accessible by others (mode %04o); chmod 600 it", path, fi.Mode().Perm())
	}
	seed, err := parse(path, privTag, ed25519.SeedSize)
	if err != nil {
		return nil, err
	}
	return ed25519.NewKeyFromSeed(seed), nil
}

// LoadPublic reads a NAME.pub file.
func LoadPublic(path string) (ed25519.PublicKey, error) {
	raw, err := parse(path, pubTag, ed25519.PublicKeySize)
	if err != nil {
		return nil, err
	}
	return ed25519.PublicKey(raw), nil
}

// LoadDir reads every *.pub in dir, in name order. A missing dir holds no
// keys; an unreadable or malformed key file is an error, since silently
// dropping a trusted key could turn verification off.
func LoadDir(dir string) ([]ed25519.PublicKey, error) {
	paths, err := filepath.Glob(filepath.Join(dir, "*.pub"))
	if err != nil {
		return nil, err
	}
	sort.Strings(paths)
	var out []ed25519.PublicKey
	for _, p := range paths {
		k, err := LoadPublic(p)
		if err != nil {
			return nil, err
		}
		out = append(out, k)
	}
	return out, nil
}
