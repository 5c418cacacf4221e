// Package manifest is the cimg manifest: the TOML file a build starts from
// (cimg.toml) and the copy embedded in every image, which the launcher
// obeys. One schema serves both; the [build] table is build input only and
// is dropped from the embedded copy.
//
// Parsing is strict: an unknown key is an error naming its key path and
// line, and Validate reports every problem at once rather than the first.
// Every default lives in Default; an embedded manifest has them all spelled
// out, so the launcher never guesses.
//
// This package imports nothing else of cimg's.
package manifest

import (
	"bytes"
	"fmt"
	"reflect"
	"strings"

	"github.com/BurntSushi/toml"
)

// Manifest describes one application image.
type Manifest struct {
	Name       string     `toml:"name"`
	Version    string     `toml:"version"`
	Arch       string     `toml:"arch"`
	Hostname   string     `toml:"hostname,omitempty"`
	App        App        `toml:"app"`
	Limits     Limits     `toml:"limits"`
	Security   Security   `toml:"security"`
	Namespaces Namespaces `toml:"namespaces"`
	Mounts     []Mount    `toml:"mounts,omitempty"`
	Health     *Health    `toml:"health,omitempty"`
	// Build holds build inputs; it is never embedded in an image.
	Build *Build `toml:"build,omitempty"`

	source     string        // file name for error messages
	text       []byte        // the TOML it was decoded from, for line numbers
	meta       toml.MetaData // which keys the TOML set
	decodeErrs []error       // unknown keys, reported by Validate with the rest
}

// App is what runs and how.
type App struct {
	// Command is the absolute path of the program and its fixed leading
	// arguments; Args follow and are replaced by arguments given at run time.
	Command []string          `toml:"command"`
	Args    []string          `toml:"args,omitempty"`
	Env     map[string]string `toml:"env,omitempty"`
	Workdir string            `toml:"workdir"`
	// User and Group are numeric: an image has no NSS to look names up.
	User   uint32   `toml:"user"`
	Group  uint32   `toml:"group"`
	Groups []uint32 `toml:"groups,omitempty"`
	// Init puts a minimal reaper in front of an app that does not reap
	// its children.
	Init bool `toml:"init"`
}

// Limits are cgroup limits and rlimits. Zero means unlimited.
type Limits struct {
	Memory     Size              `toml:"memory,omitzero"`
	MemorySwap Size              `toml:"memory_swap,omitzero"` // memory plus swap
	CPU        CPU               `toml:"cpu,omitzero"`         // fractional cores
	CPUWeight  int64             `toml:"cpu_weight,omitzero"`  // 1..10000, cgroup v2 scale
	Pids       int64             `toml:"pids,omitzero"`
	Cpuset     string            `toml:"cpuset,omitempty"`
	TmpSize    Size              `toml:"tmp_size"` // tmpfs /tmp
	RunSize    Size              `toml:"run_size"` // tmpfs /run
	ShmSize    Size              `toml:"shm_size"` // tmpfs /dev/shm
	Rlimits    map[string]Rlimit `toml:"rlimits,omitempty"`
}

// Security is what the app may do.
type Security struct {
	// Capabilities to keep; every other one is dropped from all sets.
	Capabilities    []string `toml:"capabilities"`
	NoNewPrivileges bool     `toml:"no_new_privileges"`
	// Seccomp is "default" (a deny-list like Docker's) or "unconfined".
	Seccomp      string `toml:"seccomp"`
	ReadonlyRoot bool   `toml:"readonly_root"`
}

// Namespaces say what the app shares with the host.
type Namespaces struct {
	Network string `toml:"network"` // "none" (private, loopback only) or "host"
	PID     string `toml:"pid"`     // "private" or "host"
	IPC     string `toml:"ipc"`
	UTS     string `toml:"uts"`
	User    bool   `toml:"user"` // a private user namespace
}

// Mount adds a filesystem at Target inside the app's root.
type Mount struct {
	// Type is "volume" (persistent data named Source, kept by the device
	// under its state directory), "bind" (host path Source), "tmpfs", or
	// "overlay" (a writable layer over the image's Target, kept in volume
	// Source, or in memory when Source is empty).
	Type     string `toml:"type"`
	Source   string `toml:"source,omitempty"`
	Target   string `toml:"target"`
	ReadOnly bool   `toml:"readonly,omitempty"`
	Size     Size   `toml:"size,omitzero"`  // tmpfs
	Mode     string `toml:"mode,omitempty"` // tmpfs, octal
}

// Health is a check run inside the app's namespaces.
type Health struct {
	Command     []string `toml:"command"`
	Interval    Duration `toml:"interval"`
	Timeout     Duration `toml:"timeout"`
	Retries     int      `toml:"retries"`
	StartPeriod Duration `toml:"start_period"`
}

// Build lists what goes into the image. Paths are relative to the
// manifest's directory unless absolute.
type Build struct {
	Binary      string   `toml:"binary,omitempty"`
	Rootfs      string   `toml:"rootfs,omitempty"`
	Add         []string `toml:"add,omitempty"` // "SRC:DST"
	Libs        []string `toml:"libs,omitempty"`
	Sysroot     string   `toml:"sysroot,omitempty"`
	Compression string   `toml:"compression,omitempty"`
	BlockSize   Size     `toml:"block_size,omitzero"`
}

// Default returns a manifest holding every default: a locked-down app
// with no capabilities, no_new_privs, the default seccomp profile, a
// read-only root, private namespaces and no network.
func Default() Manifest {
	return Manifest{
		Version: "0.0.0",
		App: App{
			Workdir: "/",
		},
		Limits: Limits{
			TmpSize: 64 * MiB,
			RunSize: 16 * MiB,
			ShmSize: 64 * MiB,
		},
		Security: Security{
			Capabilities:    []string{},
			NoNewPrivileges: true,
			Seccomp:         "default",
			ReadonlyRoot:    true,
		},
		Namespaces: Namespaces{
			Network: "none",
			PID:     "private",
			IPC:     "private",
			UTS:     "private",
		},
	}
}

// defaultHealth fills what a [health] table leaves out.
func (m *Manifest) defaultHealth() {
	h := m.Health
	if !m.defined("health", "interval") {
		h.Interval = Duration(30e9)
	}
	if !m.defined("health", "timeout") {
		h.Timeout = Duration(5e9)
	}
	if !m.defined("health", "retries") {
		h.Retries = 3
	}
}

// defined reports whether the decoded TOML set key.
func (m *Manifest) defined(key ...string) bool { return m.meta.IsDefined(key...) }

// Decode parses TOML onto the defaults. Syntax and type errors fail at
// once; unknown keys are kept and reported by Validate together with every
// other problem. source names the file in messages.
func Decode(data []byte, source string) (*Manifest, error) {
	m := Default()
	m.source, m.text = source, data
	md, err := toml.NewDecoder(bytes.NewReader(data)).Decode(&m)
	if err != nil {
		return nil, decodeError(source, err)
	}
	m.meta = md
	unknown := map[string]bool{}
	for _, k := range md.Undecoded() {
		unknown[keyPath(k)] = true
	}
	// The decoder matches keys case-insensitively as a fallback; a
	// manifest is case-sensitive, so "Name" is as unknown as "colour".
	for _, k := range md.Keys() {
		if !plainKey(k) && !knownKey(reflect.TypeOf(m), k) {
			unknown[keyPath(k)] = true
		}
	}
	for _, k := range sortedKeys(unknown) {
		m.decodeErrs = append(m.decodeErrs, m.errAt(k, "unknown key"))
	}
	if m.Health != nil {
		m.defaultHealth()
	}
	m.Arch = CanonicalArch(m.Arch)
	for i, c := range m.Security.Capabilities {
		m.Security.Capabilities[i] = CanonicalCap(c)
	}
	return &m, nil
}

// Parse is Decode followed by Validate: a complete, checked manifest, as
// the launcher reads it from an image.
func Parse(data []byte, source string) (*Manifest, error) {
	m, err := Decode(data, source)
	if err != nil {
		return nil, err
	}
	if err := m.Validate(); err != nil {
		return nil, err
	}
	return m, nil
}

func decodeError(source string, err error) error {
	if pe, ok := err.(toml.ParseError); ok {
		return &Errors{List: []*Error{{Source: source, Line: pe.Position.Line, Msg: strings.TrimSpace(pe.Message)}}}
	}
	return &Errors{List: []*Error{{Source: source, Msg: err.Error()}}}
}

// keyPath renders a toml.Key as a.b.c, with array-table indexes dropped
// (BurntSushi reports keys of [[mounts]] tables without the index).
func keyPath(k toml.Key) string {
	parts := make([]string, len(k))
	for i, p := range k {
		if strings.ContainsAny(p, ". \"") {
			p = fmt.Sprintf("%q", p)
		}
		parts[i] = p
	}
	return strings.Join(parts, ".")
}

// plainKey reports whether every part of a decoded key is made of
// lowercase ASCII letters, digits and underscores. Such a key was decoded
// by its exact name, so knownKey need not walk the schema for it: every
// field of the schema is named by a toml tag of those bytes
// (TestTagsArePlain), and the decoder's case-insensitive fallback
// (strings.EqualFold, Unicode folding included) can only have matched a
// key of other bytes: "Name", "NAME" or "ſeccomp" ("ſ" folds to "s").
// Why: knownKey took a quarter of Parse (CPU profile of a benchmark of the
// hello image's manifest), and Parse runs at every launch.
func plainKey(k toml.Key) bool {
	for _, part := range k {
		for i := 0; i < len(part); i++ {
			if c := part[i]; !isLower(c) && !isDigit(c) && c != '_' {
				return false
			}
		}
	}
	return true
}

var unmarshalerType = reflect.TypeOf((*toml.Unmarshaler)(nil)).Elem()

// knownKey walks the schema by exact toml tag: maps take any key, and
// types that decode themselves (Rlimit, Size) end the walk.
func knownKey(t reflect.Type, k toml.Key) bool {
	for _, part := range k {
		for t.Kind() == reflect.Pointer || t.Kind() == reflect.Slice {
			t = t.Elem()
		}
		if reflect.PointerTo(t).Implements(unmarshalerType) {
			return true
		}
		switch t.Kind() {
		case reflect.Map:
			t = t.Elem()
			continue
		case reflect.Struct:
		default:
			return false
		}
		found := false
		for i := 0; i < t.NumField(); i++ {
			f := t.Field(i)
			if name, _, _ := strings.Cut(f.Tag.Get("toml"), ","); name == part && f.IsExported() {
				t, found = f.Type, true
				break
			}
		}
		if !found {
			return false
		}
	}
	return true
}

// Source is the file name the manifest was read from.
func (m *Manifest) Source() string { return m.source }

// Encode returns the canonical TOML of m without the [build] table: the
// bytes embedded in an image. The same manifest always encodes the same.
func (m *Manifest) Encode() ([]byte, error) {
	c := *m
	c.Build = nil
	var buf bytes.Buffer
	enc := toml.NewEncoder(&buf)
	enc.Indent = ""
	if err := enc.Encode(c); err != nil {
		return nil, fmt.Errorf("encode manifest: %w", err)
	}
	return buf.Bytes(), nil
}

// Argv is the command line the app starts with: Command, then args given
// at run time, or Args when none are.
func (m *Manifest) Argv(runArgs []string) []string {
	argv := append([]string(nil), m.App.Command...)
	if len(runArgs) > 0 {
		return append(argv, runArgs...)
	}
	return append(argv, m.App.Args...)
}
