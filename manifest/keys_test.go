package manifest

import (
	"os"
	"reflect"
	"strings"
	"testing"

	"github.com/BurntSushi/toml"
)

// TestTagsArePlain: plainKey may skip the schema walk only because every
// field a key can name has a toml tag of lowercase letters, digits and
// underscores; a field added without one would let a case-folded key
// through unseen, so it fails here.
func TestTagsArePlain(t *testing.T) {
	seen := map[reflect.Type]bool{}
	var walk func(typ reflect.Type, path string)
	walk = func(typ reflect.Type, path string) {
		for typ.Kind() == reflect.Pointer || typ.Kind() == reflect.Slice || typ.Kind() == reflect.Map {
			typ = typ.Elem()
		}
		if typ.Kind() != reflect.Struct || seen[typ] || reflect.PointerTo(typ).Implements(unmarshalerType) {
			return
		}
		seen[typ] = true
		for i := 0; i < typ.NumField(); i++ {
			f := typ.Field(i)
			if !f.IsExported() {
				continue
			}
			name, _, _ := strings.Cut(f.Tag.Get("toml"), ",")
			if name == "" || !plainKey(toml.Key{name}) {
				t.Errorf("%s%s (%s): toml tag %q is not lowercase letters, digits and underscores", path, f.Name, typ.Name(), name)
				continue
			}
			walk(f.Type, path+name+".")
		}
	}
	walk(reflect.TypeOf(Manifest{}), "")
	if len(seen) < 5 {
		t.Fatalf("walked %d struct types: the schema walk is broken", len(seen))
	}
}

// TestCaseFoldedKeysAreUnknown: the TOML decoder falls back to matching
// keys case-insensitively, with Unicode folding; a manifest is
// case-sensitive, so each of these is an unknown key, named as written.
func TestCaseFoldedKeysAreUnknown(t *testing.T) {
	base := "name = \"app\"\narch = \"amd64\"\n[app]\ncommand = [\"/bin/app\"]\n"
	for _, c := range []struct{ text, key string }{
		{"Name = \"other\"\n" + base, "Name"},
		{"NAME = \"other\"\n" + base, "NAME"},
		{base + "[Security]\nseccomp = \"unconfined\"\n", "Security"},
		{base + "[security]\n\"ſeccomp\" = \"unconfined\"\n", "security.ſeccomp"}, // ſ (U+017F) folds to s
		{base + "[limits]\n\"\u212aeep\" = 1\n", "limits.\u212aeep"},              // the Kelvin sign folds to k: unknown either way
		{base + "[namespaces]\nNetwork = \"host\"\n", "namespaces.Network"},
	} {
		_, err := Parse([]byte(c.text), "m.toml")
		if err == nil {
			t.Errorf("%q: parsed without error", c.text)
			continue
		}
		if want := c.key + ": unknown key"; !strings.Contains(err.Error(), want) {
			t.Errorf("%q: error %q does not say %q", c.text, err, want)
		}
	}
}

// TestPlainKeysAreKnown: for every key a full manifest sets, the fast path
// and the schema walk agree.
func TestPlainKeysAreKnown(t *testing.T) {
	data, err := os.ReadFile("testdata/good/full.toml")
	if err != nil {
		t.Fatal(err)
	}
	var m Manifest
	md, err := toml.Decode(string(data), &m)
	if err != nil {
		t.Fatal(err)
	}
	plain := 0
	for _, k := range md.Keys() {
		if plainKey(k) {
			plain++
			if !knownKey(reflect.TypeOf(m), k) {
				t.Errorf("%s: plainKey says known, knownKey says unknown", keyPath(k))
			}
		}
	}
	if plain < 20 {
		t.Fatalf("only %d plain keys in full.toml: the comparison covers too little", plain)
	}
}

// BenchmarkParse: the hello image's manifest as cimg-build writes it, which
// every launch parses.
func BenchmarkParse(b *testing.B) {
	data := []byte(`name = "hello"
version = "0.0.0"
arch = "amd64"

[app]
command = ["/hello"]
workdir = "/"
user = 0
group = 0
init = false

[limits]
memory = "64MiB"
pids = 64
tmp_size = "64MiB"
run_size = "16MiB"
shm_size = "64MiB"

[security]
capabilities = []
no_new_privileges = true
seccomp = "default"
readonly_root = true

[namespaces]
network = "none"
pid = "private"
ipc = "private"
uts = "private"
user = false
`)
	for b.Loop() {
		if _, err := Parse(data, "hello"); err != nil {
			b.Fatal(err)
		}
	}
}
