package build

// End-to-end closure tests: programs packed with their libraries, mounted
// by the kernel and run in a chroot of the image — natively, and for
// armhf and arm64 under qemu-user — with the target loader's own --list
// as the reference for what the closure must be.

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"testing"

	"cimg.dev/cimg/internal/mounttest"
)

func buildBinary(t *testing.T, bin, sysroot string, libs ...string) (string, *Result) {
	t.Helper()
	out := filepath.Join(t.TempDir(), filepath.Base(bin)+".cimg")
	var warnings []string
	res, err := Build(context.Background(), Spec{Binary: bin, Sysroot: sysroot, Libs: libs, Output: out,
		Warn: func(m string) { warnings = append(warnings, m) }})
	if err != nil {
		t.Fatalf("build %s: %v", bin, err)
	}
	return out, res
}

func chrootRun(t *testing.T, root string, args ...string) string {
	t.Helper()
	out, err := exec.Command("chroot", append([]string{root}, args...)...).CombinedOutput()
	if err != nil {
		t.Fatalf("chroot %s %s: %v\n%s", root, strings.Join(args, " "), err, out)
	}
	return string(out)
}

// TestHostProgramsRunFromImage packs Debian's own programs from the host
// root and runs them from a kernel mount with nothing but the image.
func TestHostProgramsRunFromImage(t *testing.T) {
	mounttest.RequireRoot(t)
	for _, prog := range []string{"/usr/bin/curl", "/usr/bin/sqlite3", "/usr/bin/python3.11"} {
		t.Run(filepath.Base(prog), func(t *testing.T) {
			if _, err := os.Stat(prog); err != nil {
				t.Fatalf("%s missing: install curl and sqlite3 (make test does)", prog)
			}
			img, res := buildBinary(t, prog, "")
			if res.Manifest.Arch != hostArch() {
				t.Errorf("arch %s", res.Manifest.Arch)
			}
			want, err := exec.Command(prog, "--version").CombinedOutput()
			if err != nil {
				t.Fatal(err)
			}
			mnt := mounttest.Mount(t, img)
			if got := chrootRun(t, mnt, "/usr/bin/"+filepath.Base(prog), "--version"); got != string(want) {
				t.Errorf("from the image:\n%s\non the host:\n%s", got, want)
			}
			// The host's loader, run inside the image, maps exactly what we packed.
			var ours []string
			for _, r := range res.Records {
				if r.Reason == "interpreter" || strings.HasPrefix(r.Reason, "needed by") {
					ours = append(ours, r.Path)
				}
			}
			sort.Strings(ours)
			theirs := loaderList(t, mnt, "/lib64/ld-linux-x86-64.so.2", "/usr/bin/"+filepath.Base(prog))
			if strings.Join(ours, " ") != strings.Join(theirs, " ") {
				t.Errorf("closure differs from the loader's --list:\n ours:   %v\n loader: %v", ours, theirs)
			}
			prov, err := os.ReadFile(filepath.Join(mnt, ProvenancePath))
			if err != nil || !bytes.Contains(prov, []byte(`"reason": "needed by /usr/bin/`)) {
				t.Errorf("provenance: %v\n%.300s", err, prov)
			}
		})
	}
}

type crossCase struct {
	arch, cc, sysroot, interp string
	qemu                      bool
}

var crossCases = []crossCase{
	{"amd64", "gcc", "/", "/lib64/ld-linux-x86-64.so.2", false},
	{"armhf", "arm-linux-gnueabihf-gcc", "/usr/arm-linux-gnueabihf", "/lib/ld-linux-armhf.so.3", true},
	{"arm64", "aarch64-linux-gnu-gcc", "/usr/aarch64-linux-gnu", "/lib/ld-linux-aarch64.so.1", true},
}

// compileApp builds testdata/cross into dir/bin/app and dir/lib/libpriv.so.
func compileApp(t *testing.T, cc, dir string) string {
	t.Helper()
	if _, err := exec.LookPath(cc); err != nil {
		t.Fatalf("%s not found: install crossbuild-essential-armhf and -arm64 (make test does)", cc)
	}
	os.MkdirAll(filepath.Join(dir, "bin"), 0o755)
	os.MkdirAll(filepath.Join(dir, "lib"), 0o755)
	src, _ := filepath.Abs("testdata/cross")
	for _, args := range [][]string{
		{"-shared", "-fPIC", "-o", filepath.Join(dir, "lib/libpriv.so"), filepath.Join(src, "priv.c")},
		{"-o", filepath.Join(dir, "bin/app"), filepath.Join(src, "app.c"), "-L" + filepath.Join(dir, "lib"), "-lpriv", "-lm", "-pthread",
			"-Wl,--enable-new-dtags,-rpath,$ORIGIN/../lib"},
	} {
		if out, err := exec.Command(cc, args...).CombinedOutput(); err != nil {
			t.Fatalf("%s %s: %v\n%s", cc, strings.Join(args, " "), err, out)
		}
	}
	return filepath.Join(dir, "bin/app")
}

var listLine = regexp.MustCompile(`^\s*(\S*)(?: => (\S+))?\s*\(0x[0-9a-f]+\)$`)

// loaderList runs the target loader's --list inside the image and
// returns the paths it maps.
func loaderList(t *testing.T, mnt, interp, prog string) []string {
	out := chrootRun(t, mnt, interp, "--list", prog)
	var paths []string
	for _, l := range strings.Split(strings.TrimSpace(out), "\n") {
		m := listLine.FindStringSubmatch(l)
		if m == nil {
			t.Fatalf("unexpected --list line %q in:\n%s", l, out)
		}
		p := m[1]
		if m[2] != "" {
			p = m[2]
		}
		if p == "" || strings.HasPrefix(p, "linux-vdso") || strings.HasPrefix(p, "linux-gate") {
			continue
		}
		paths = append(paths, filepath.Clean(p))
	}
	sort.Strings(paths)
	return paths
}

func TestCrossClosureRunsAndMatchesLoader(t *testing.T) {
	mounttest.RequireRoot(t)
	for _, tc := range crossCases {
		t.Run(tc.arch, func(t *testing.T) {
			if tc.qemu {
				mounttest.EnableBinfmt(t)
			}
			bin := compileApp(t, tc.cc, t.TempDir())
			img, res := buildBinary(t, bin, tc.sysroot)
			if res.Manifest.Arch != tc.arch {
				t.Errorf("manifest arch %s, want %s", res.Manifest.Arch, tc.arch)
			}
			mnt := mounttest.Mount(t, img)
			if got := chrootRun(t, mnt, "/usr/bin/app"); got != "sqrt=42 priv=42 cos0=1\n" {
				t.Errorf("app printed %q", got)
			}
			var ours []string
			for _, r := range res.Records {
				if r.Reason == "interpreter" || strings.HasPrefix(r.Reason, "needed by") {
					ours = append(ours, r.Path)
				}
			}
			sort.Strings(ours)
			theirs := loaderList(t, mnt, tc.interp, "/usr/bin/app")
			if strings.Join(ours, " ") != strings.Join(theirs, " ") {
				t.Errorf("closure differs from the target loader's --list:\n ours:   %v\n loader: %v", ours, theirs)
			}
		})
	}
}

func TestMissingLibraryFailsWithChain(t *testing.T) {
	dir := t.TempDir()
	bin := compileApp(t, "gcc", dir)
	os.Remove(filepath.Join(dir, "lib/libpriv.so"))
	_, err := Build(context.Background(), Spec{Binary: bin, Output: filepath.Join(dir, "x.cimg")})
	if err == nil || !strings.Contains(err.Error(), "app → libpriv.so: not found (searched: RUNPATH $ORIGIN/../lib=/usr/lib") {
		t.Fatalf("got %v", err)
	}
	if _, serr := os.Stat(filepath.Join(dir, "x.cimg")); serr == nil {
		t.Error("output written despite the error")
	}
}

func TestWrongArchBinaryForSysroot(t *testing.T) {
	bin := compileApp(t, "gcc", t.TempDir())
	_, err := Build(context.Background(), Spec{Binary: bin, Sysroot: "/usr/arm-linux-gnueabihf", Output: filepath.Join(t.TempDir(), "x.cimg")})
	if err == nil || !strings.Contains(err.Error(), "not found") {
		t.Fatalf("an amd64 binary resolved against an armhf sysroot: %v", err)
	}
}

// Inputs beyond the binary's own closure: symlinked programs, followed
// inside the sysroot, and the libraries of the ELF objects in added
// trees (extension modules, plugins).

// pluginFixture is testdata/plugin compiled: a static program, a module
// tree mods/ (mod.so needs libcimgdep.so.1) and a sysroot whose /usr/lib
// holds libcimgdep.so.1 and the libcimgdep2.so.1 it needs.
type pluginFixture struct{ app, mods, sysroot string }

func gcc(t *testing.T, cc string, args ...string) {
	t.Helper()
	if _, err := exec.LookPath(cc); err != nil {
		t.Fatalf("%s not found: install gcc and crossbuild-essential-arm64 (make test does)", cc)
	}
	if out, err := exec.Command(cc, args...).CombinedOutput(); err != nil {
		t.Fatalf("%s %s: %v\n%s", cc, strings.Join(args, " "), err, out)
	}
}

func buildPlugins(t *testing.T) pluginFixture {
	t.Helper()
	dir := t.TempDir()
	src, _ := filepath.Abs("testdata/plugin")
	f := pluginFixture{app: filepath.Join(dir, "app"), mods: filepath.Join(dir, "mods"), sysroot: filepath.Join(dir, "sysroot")}
	lib := filepath.Join(f.sysroot, "usr/lib")
	os.MkdirAll(lib, 0o755)
	os.MkdirAll(f.mods, 0o755)
	so := []string{"-shared", "-fPIC", "-nostdlib"}
	gcc(t, "gcc", "-static", "-o", f.app, filepath.Join(src, "app.c"))
	gcc(t, "gcc", append(so, "-Wl,-soname,libcimgdep2.so.1", "-o", filepath.Join(lib, "libcimgdep2.so.1"), filepath.Join(src, "dep2.c"))...)
	gcc(t, "gcc", append(so, "-Wl,-soname,libcimgdep.so.1", "-o", filepath.Join(lib, "libcimgdep.so.1"), filepath.Join(src, "dep.c"),
		"-L"+lib, "-l:libcimgdep2.so.1")...)
	gcc(t, "gcc", append(so, "-o", filepath.Join(f.mods, "mod.so"), filepath.Join(src, "mod.c"), "-L"+lib, "-l:libcimgdep.so.1")...)
	return f
}

func build(t *testing.T, spec Spec) (string, *Result, error) {
	t.Helper()
	spec.Output = filepath.Join(t.TempDir(), "x.cimg")
	res, err := Build(context.Background(), spec)
	return spec.Output, res, err
}

func reasons(res *Result) map[string]string {
	out := map[string]string{}
	for _, r := range res.Records {
		out[r.Path] = r.Reason
	}
	return out
}

// provenanceNeeds reads the image's provenance as a user would: who
// needed each library.
func provenanceNeeds(t *testing.T, mnt string) map[string][]string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(mnt, ProvenancePath))
	if err != nil {
		t.Fatal(err)
	}
	var recs []struct {
		Path     string
		NeededBy []string `json:"needed_by"`
	}
	if err := json.Unmarshal(b, &recs); err != nil {
		t.Fatalf("provenance: %v\n%.300s", err, b)
	}
	out := map[string][]string{}
	for _, r := range recs {
		out[r.Path] = r.NeededBy
	}
	return out
}

func TestAddedModuleClosureFromSysroot(t *testing.T) {
	f := buildPlugins(t)
	// Data that merely looks like ELF: an arm64 relative object, never
	// mapped by a loader, so neither resolved nor refused.
	gcc(t, "aarch64-linux-gnu-gcc", "-c", "-o", filepath.Join(f.mods, "data.o"), "testdata/plugin/dep2.c")
	os.WriteFile(filepath.Join(f.mods, "README"), []byte("not ELF\n"), 0o644)
	img, res, err := build(t, Spec{Binary: f.app, Sysroot: f.sysroot, Add: []string{f.mods + ":/opt/app/mods"}})
	if err != nil {
		t.Fatal(err)
	}
	why := reasons(res)
	if why["/usr/lib/libcimgdep.so.1"] != "needed by /opt/app/mods/mod.so" ||
		why["/usr/lib/libcimgdep2.so.1"] != "needed by /usr/lib/libcimgdep.so.1" {
		t.Errorf("the module's closure is not packed: %v", why)
	}
	if !strings.Contains(why["/etc/ld.so.cache"], "loader cache") {
		t.Error("no loader cache naming the module's libraries")
	}
	needs := provenanceNeeds(t, mounttest.Mount(t, img))
	if got := needs["/usr/lib/libcimgdep.so.1"]; len(got) != 1 || got[0] != "/opt/app/mods/mod.so" {
		t.Errorf("provenance needed_by of libcimgdep.so.1: %v", got)
	}
}

func TestAddedLibraryInImageWinsOverSysroot(t *testing.T) {
	// The module's libraries come in an --add tree at a default path and
	// the sysroot has none: the search finds them in the image.
	f := buildPlugins(t)
	empty := t.TempDir()
	img, res, err := build(t, Spec{Binary: f.app, Sysroot: empty,
		Add: []string{f.mods + ":/opt/app/mods", filepath.Join(f.sysroot, "usr/lib") + ":/usr/lib"}})
	if err != nil {
		t.Fatal(err)
	}
	if why := reasons(res); why["/usr/lib/libcimgdep.so.1"] != "added" {
		t.Errorf("libcimgdep.so.1: %q", why["/usr/lib/libcimgdep.so.1"])
	}
	needs := provenanceNeeds(t, mounttest.Mount(t, img))
	if got := needs["/usr/lib/libcimgdep2.so.1"]; len(got) != 1 || got[0] != "/usr/lib/libcimgdep.so.1" {
		t.Errorf("needed by: %v", needs)
	}
	// Without them the build says what is missing for which module.
	_, _, err = build(t, Spec{Binary: f.app, Sysroot: empty, Add: []string{f.mods + ":/opt/app/mods"}})
	if err == nil || !strings.Contains(err.Error(), "mod.so → libcimgdep.so.1: not found") {
		t.Errorf("got %v", err)
	}
}

func TestWrongArchModuleInAddedTreeIsRefused(t *testing.T) {
	f := buildPlugins(t)
	arm := filepath.Join(f.mods, "sub", "mod-arm64.so")
	os.MkdirAll(filepath.Dir(arm), 0o755)
	gcc(t, "aarch64-linux-gnu-gcc", "-shared", "-fPIC", "-o", arm, "testdata/plugin/dep2.c")
	_, _, err := build(t, Spec{Binary: f.app, Sysroot: f.sysroot, Add: []string{f.mods + ":/opt/app/mods"}})
	if err == nil || !strings.Contains(err.Error(), arm) || !strings.Contains(err.Error(), "machine EM_AARCH64") ||
		!strings.Contains(err.Error(), "/opt/app/mods/sub/mod-arm64.so in the image") {
		t.Fatalf("an arm64 module in an amd64 image: %v", err)
	}
}

func TestSymlinkedBinaryFollowedInSysroot(t *testing.T) {
	f := buildPlugins(t)
	// app -> /opt/app/bin/app (absolute: the sysroot's, not the host's,
	// which has none) -> ../../../usr/libexec/app-1.0, the real file.
	s := f.sysroot
	os.MkdirAll(filepath.Join(s, "usr/libexec"), 0o755)
	os.MkdirAll(filepath.Join(s, "opt/app/bin"), 0o755)
	os.MkdirAll(filepath.Join(s, "usr/bin"), 0o755)
	b, _ := os.ReadFile(f.app)
	os.WriteFile(filepath.Join(s, "usr/libexec/app-1.0"), b, 0o755)
	os.Symlink("../../../usr/libexec/app-1.0", filepath.Join(s, "opt/app/bin/app"))
	os.Symlink("/opt/app/bin/app", filepath.Join(s, "usr/bin/app"))
	img, res, err := build(t, Spec{Binary: filepath.Join(s, "usr/bin/app"), Sysroot: s})
	if err != nil {
		t.Fatal(err)
	}
	why := reasons(res)
	if why["/usr/bin/app"] != "binary" || why["/opt/app/bin/app"] != "binary: target of the symlink /usr/bin/app" ||
		why["/usr/libexec/app-1.0"] != "binary: target of the symlink /opt/app/bin/app" {
		t.Errorf("records: %v", why)
	}
	mnt := mounttest.Mount(t, img)
	for p, want := range map[string]string{"/usr/bin/app": "/opt/app/bin/app", "/opt/app/bin/app": "../../../usr/libexec/app-1.0"} {
		if got, err := os.Readlink(filepath.Join(mnt, p)); err != nil || got != want {
			t.Errorf("%s -> %q (%v), want the sysroot's link text %q", p, got, err, want)
		}
	}
	if got := chrootRun(t, mnt, "/usr/bin/app"); got != "static app\n" {
		t.Errorf("the symlinked program printed %q", got)
	}
}

func TestSymlinkEscapingSysrootIsRefused(t *testing.T) {
	f := buildPlugins(t)
	// The link climbs out of the sysroot to a program beside it on the
	// host: that must not be packed into an image built from the sysroot.
	outside := filepath.Join(filepath.Dir(f.sysroot), "outside")
	os.MkdirAll(outside, 0o755)
	b, _ := os.ReadFile(f.app)
	os.WriteFile(filepath.Join(outside, "app"), b, 0o755)
	bin := filepath.Join(f.sysroot, "usr/bin/app")
	os.MkdirAll(filepath.Dir(bin), 0o755)
	os.Symlink("../../../outside/app", bin)
	_, _, err := build(t, Spec{Binary: bin, Sysroot: f.sysroot})
	if err == nil || !strings.Contains(err.Error(), "leads out of the root") {
		t.Fatalf("a symlink out of the sysroot: %v", err)
	}
}

// TestPythonSymlinkAndExtensionModules packs Debian's python3 as the
// issue did — the symlink python3 -> python3.11 and the standard library
// as an --add tree — and imports sqlite3 inside the image, whose
// extension module needs libsqlite3.so.0.
func TestPythonSymlinkAndExtensionModules(t *testing.T) {
	mounttest.RequireRoot(t)
	if fi, err := os.Lstat("/usr/bin/python3"); err != nil || fi.Mode()&os.ModeSymlink == 0 {
		t.Fatalf("/usr/bin/python3 is not the symlink to python3.11 (make deps-test installs it): %v", err)
	}
	for _, bin := range []string{"/usr/bin/python3", "/usr/bin/python3.11"} {
		t.Run(filepath.Base(bin), func(t *testing.T) {
			img, res, err := build(t, Spec{Binary: bin, Add: []string{"/usr/lib/python3.11:/usr/lib/python3.11"}})
			if err != nil {
				t.Fatal(err)
			}
			if res.Manifest.App.Command[0] != bin {
				t.Errorf("command %v", res.Manifest.App.Command)
			}
			mnt := mounttest.Mount(t, img)
			out := chrootRun(t, mnt, bin, "-c", "import sqlite3, sys; print(sys.executable, sqlite3.connect(':memory:').execute('select 6*7').fetchone()[0])")
			if out != bin+" 42\n" {
				t.Errorf("python printed %q", out)
			}
			var sqlite []string
			for lib, by := range provenanceNeeds(t, mnt) {
				if filepath.Base(lib) == "libsqlite3.so.0" {
					sqlite = by
				}
			}
			if len(sqlite) == 0 || !strings.Contains(sqlite[0], "/usr/lib/python3.11/lib-dynload/_sqlite3") {
				t.Errorf("provenance of libsqlite3.so.0: needed by %v", sqlite)
			}
		})
	}
}
