package manifest

import (
	"bytes"
	"flag"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/BurntSushi/toml"
)

var update = flag.Bool("update", false, "rewrite the .golden files")

// TestGoldenErrors parses every testdata/bad/*.toml and compares the full
// error text with its .golden file (regenerate with go test -update).
func TestGoldenErrors(t *testing.T) {
	files, _ := filepath.Glob("testdata/bad/*.toml")
	if len(files) == 0 {
		t.Fatal("no testdata/bad/*.toml")
	}
	for _, f := range files {
		t.Run(filepath.Base(f), func(t *testing.T) {
			data, err := os.ReadFile(f)
			if err != nil {
				t.Fatal(err)
			}
			_, err = Parse(data, filepath.Base(f))
			if err == nil {
				t.Fatal("bad manifest parsed without error")
			}
			got := err.Error() + "\n"
			golden := strings.TrimSuffix(f, ".toml") + ".golden"
			if *update {
				os.WriteFile(golden, []byte(got), 0o644)
			}
			want, err := os.ReadFile(golden)
			if err != nil {
				t.Fatalf("%v (run go test -update to create it)", err)
			}
			if got != string(want) {
				t.Errorf("error text differs from %s:\n--- got\n%s--- want\n%s", golden, got, want)
			}
		})
	}
}

func TestFullManifest(t *testing.T) {
	data, err := os.ReadFile("testdata/good/full.toml")
	if err != nil {
		t.Fatal(err)
	}
	m, err := Parse(data, "full.toml")
	if err != nil {
		t.Fatal(err)
	}
	checks := []struct {
		name      string
		got, want any
	}{
		{"arch canonical", m.Arch, "arm64"},
		{"memory", m.Limits.Memory, 32 * MiB},
		{"cpu", m.Limits.CPU, CPU(0.5)},
		{"caps canonical", m.Security.Capabilities, []string{"CAP_NET_BIND_SERVICE", "CAP_NET_RAW"}},
		{"core rlimit", m.Limits.Rlimits["core"], Rlimit{0, Unlimited}},
		{"nofile rlimit", m.Limits.Rlimits["nofile"], Rlimit{1024, 1024}},
		{"health default retries", m.Health.Retries, 3},
		{"default run size", m.Limits.RunSize, 16 * MiB},
		{"default ipc", m.Namespaces.IPC, "private"},
		{"argv", m.Argv(nil), []string{"/usr/bin/sensord", "--config", "/etc/sensord.conf", "--verbose"}},
		{"argv override", m.Argv([]string{"-x"}), []string{"/usr/bin/sensord", "--config", "/etc/sensord.conf", "-x"}},
	}
	for _, c := range checks {
		if !reflect.DeepEqual(c.got, c.want) {
			t.Errorf("%s: got %#v, want %#v", c.name, c.got, c.want)
		}
	}
}

// TestEncodeRoundTrip: the embedded form drops [build], parses back to the
// same manifest, and is stable.
func TestEncodeRoundTrip(t *testing.T) {
	data, _ := os.ReadFile("testdata/good/full.toml")
	m, err := Parse(data, "full.toml")
	if err != nil {
		t.Fatal(err)
	}
	enc, err := m.Encode()
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(string(enc), "[build]") {
		t.Errorf("embedded manifest carries [build]:\n%s", enc)
	}
	back, err := Parse(enc, "embedded")
	if err != nil {
		t.Fatalf("embedded manifest does not parse: %v\n%s", err, enc)
	}
	enc2, _ := back.Encode()
	if string(enc) != string(enc2) {
		t.Errorf("encoding is not stable:\n%s\n---\n%s", enc, enc2)
	}
	m.Build = nil
	back.source, back.text, m.source, m.text = "", nil, "", nil
	back.meta, m.meta = toml.MetaData{}, toml.MetaData{}
	if !reflect.DeepEqual(m, back) {
		t.Errorf("round trip changed the manifest:\n%#v\n%#v", m, back)
	}
}

func TestDefaultsOnly(t *testing.T) {
	m, err := Parse([]byte("name = \"a\"\narch = \"amd64\"\n[app]\ncommand = [\"/a\"]\n"), "min.toml")
	if err != nil {
		t.Fatal(err)
	}
	d := Default()
	if !m.Security.NoNewPrivileges || !m.Security.ReadonlyRoot || m.Security.Seccomp != "default" ||
		m.Namespaces.Network != "none" || len(m.Security.Capabilities) != 0 || m.App.Workdir != "/" ||
		m.Limits.TmpSize != d.Limits.TmpSize {
		t.Errorf("defaults not applied: %+v", m)
	}
}

func TestParseSize(t *testing.T) {
	for in, want := range map[string]Size{
		"512": 512, "64KiB": 64 << 10, "32MiB": 32 << 20, "1GiB": 1 << 30, "1G": 1 << 30,
		"32MB": 32e6, "4k": 4096, "10 MiB": 10 << 20, "7B": 7,
	} {
		got, err := ParseSize(in)
		if err != nil || got != want {
			t.Errorf("ParseSize(%q) = %d, %v; want %d", in, got, err, want)
		}
	}
	for _, in := range []string{"", "MiB", "1.5GiB", "-1", "99999999999999GiB", "1XB"} {
		if _, err := ParseSize(in); err == nil {
			t.Errorf("ParseSize(%q) succeeded", in)
		}
	}
}

// FuzzParse: any bytes either parse into a manifest whose embedded form
// parses back to the same encoding, or fail with an *Errors listing at
// least one problem with a message. The seeds (testdata/fuzz/FuzzParse)
// are one small table each, not whole manifests: the fuzzer's minimizer
// re-runs the target for every byte it tries to drop, and with kilobyte
// seeds at half a millisecond a parse it stalled fuzzing for a minute at
// a time (230 execs/s).
func FuzzParse(f *testing.F) {
	f.Fuzz(func(t *testing.T, data []byte) {
		m, err := Parse(data, "fuzz.toml")
		if err != nil {
			es, ok := err.(*Errors)
			if !ok || len(es.List) == 0 {
				t.Fatalf("error is not a non-empty *Errors: %T %v", err, err)
			}
			for _, e := range es.List {
				if e.Msg == "" {
					t.Fatalf("empty message in %v", err)
				}
			}
			return
		}
		enc, err := m.Encode()
		if err != nil {
			t.Fatal(err)
		}
		back, err := Parse(enc, "re")
		if err != nil {
			t.Fatalf("re-parse of encoded manifest: %v\n%s", err, enc)
		}
		if enc2, err := back.Encode(); err != nil || !bytes.Equal(enc, enc2) {
			t.Fatalf("encoding is not stable (%v):\n%s\n---\n%s", err, enc, enc2)
		}
	})
}
