package yocto

import (
	"archive/zip"
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"cimg.dev/cimg/internal/mounttest"
	"cimg.dev/cimg/internal/testbin"
)

const layer = "meta-cimg"

var cimgBuild, cimgRun string

func TestMain(m *testing.M) {
	testbin.Main(m.Run, map[string]string{"cimg-build": "../cmd/cimg-build", "cimg-run": "../cmd/cimg-run"},
		func(p map[string]string) { cimgBuild, cimgRun = p["cimg-build"], p["cimg-run"] })
}

// A target of the pack test: a Debian cross toolchain whose sysroot
// stands in for the recipe's, and the qemu-user emulator that runs it.
type target struct {
	name, arch   string // Debian's name of the arch; cimg's
	gcc, sysroot string
	qemu         string
	tune         string // a TUNE_PKGARCH of a machine of this arch
	loader       string // the dynamic loader, in /lib of the sysroot
}

var targets = []target{
	{"armhf", "armhf", "arm-linux-gnueabihf-gcc", "/usr/arm-linux-gnueabihf", "qemu-arm-static", "cortexa15t2hf-neon", "ld-linux-armhf.so.3"},
	{"arm64", "arm64", "aarch64-linux-gnu-gcc", "/usr/aarch64-linux-gnu", "qemu-aarch64-static", "cortexa57", "ld-linux-aarch64.so.1"},
}

// requireTools fails (never skips) the test when a prerequisite is
// missing: make test installs them (Makefile TEST_DEPS).
func requireTools(t *testing.T, tools ...string) {
	t.Helper()
	for _, tool := range tools {
		if _, err := exec.LookPath(tool); err != nil {
			t.Fatalf("%s is not installed (make test installs it: crossbuild-essential-armhf/arm64, qemu-user-static, binfmt-support, python3)", tool)
		}
	}
}

// --- the class files, read as bitbake reads the parts the test needs

func readLayer(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(layer, path))
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// shellFunc is the body of the shell function NAME() { ... } of a
// bitbake file (closed by a "}" at the start of a line).
func shellFunc(t *testing.T, text, name string) string {
	t.Helper()
	re := regexp.MustCompile(`(?ms)^` + regexp.QuoteMeta(name) + ` ?\(\) \{\n(.*?)^\}$`)
	m := re.FindStringSubmatch(text)
	if m == nil {
		t.Fatalf("no shell function %s() in the class", name)
	}
	return m[1]
}

// pythonFunc is the body of "python NAME() {" ... "}".
func pythonFunc(t *testing.T, text, name string) string {
	t.Helper()
	re := regexp.MustCompile(`(?ms)^python ` + regexp.QuoteMeta(name) + ` ?\(\) \{\n(.*?)^\}$`)
	m := re.FindStringSubmatch(text)
	if m == nil {
		t.Fatalf("no python function %s() in the class", name)
	}
	return m[1]
}

var assignRE = regexp.MustCompile(`(?m)^([A-Za-z_][A-Za-z0-9_]*) (=|\?=|\?\?=) "(.*)"$`)

// vars is a bitbake datastore reduced to what the test needs: one-line
// assignments, in bitbake's order of strength.
type vars struct {
	set  map[string]string // = and ?= that took
	weak map[string]string // ??=
}

func newVars() *vars { return &vars{set: map[string]string{}, weak: map[string]string{}} }

// parse applies the file's one-line assignments: = sets, ?= sets if
// unset, ??= is a default under both.
func (v *vars) parse(text string) {
	for _, m := range assignRE.FindAllStringSubmatch(text, -1) {
		switch m[2] {
		case "=":
			v.set[m[1]] = m[3]
		case "?=":
			if _, ok := v.set[m[1]]; !ok {
				v.set[m[1]] = m[3]
			}
		case "??=":
			v.weak[m[1]] = m[3]
		}
	}
}

func (v *vars) get(name string) (string, bool) {
	if s, ok := v.set[name]; ok {
		return s, true
	}
	s, ok := v.weak[name]
	return s, ok
}

var refRE = regexp.MustCompile(`\$\{([A-Za-z0-9_+.:-]+)\}`)

// expand replaces ${VAR} as bitbake does, recursively; a reference to an
// unknown variable, or an inline python ${@...} the test did not
// compute, fails the test: a class that grew a variable the test does
// not know is the drift this test is for.
func (v *vars) expand(t *testing.T, s string) string {
	t.Helper()
	for i := 0; i < 20; i++ {
		missing := ""
		next := refRE.ReplaceAllStringFunc(s, func(ref string) string {
			name := ref[2 : len(ref)-1]
			if val, ok := v.get(name); ok {
				return val
			}
			missing = name
			return ref
		})
		if missing != "" {
			t.Fatalf("${%s} is not known to the test: give it a value as bitbake would", missing)
		}
		if next == s {
			break
		}
		s = next
	}
	if strings.Contains(s, "${@") {
		t.Fatalf("unexpanded inline python left in:\n%s", s)
	}
	return s
}

// recipe is the datastore of a recipe that inherits the class: the
// classes' defaults, the recipe's own assignments, and what bitbake.conf
// and the recipe's paths would give (work is its WORKDIR).
func recipe(t *testing.T, work, tune, recipeFile string, classes ...string) *vars {
	v := newVars()
	// bitbake.conf, for a recipe hello-cimg 1.0 in work.
	for k, val := range map[string]string{
		"PN": "hello-cimg", "PV": "1.0", "PR": "r0", "HOMEPAGE": "", "FILE_LAYERNAME": "cimg",
		"WORKDIR": work, "D": work + "/image", "UNPACKDIR": work + "/sources",
		"RECIPE_SYSROOT": work + "/recipe-sysroot", "RECIPE_SYSROOT_NATIVE": work + "/recipe-sysroot-native",
		"LICENSE_DIRECTORY": filepath.Dir(filepath.Dir(filepath.Dir(filepath.Dir(work)))) + "/deploy/licenses", // ${TMPDIR}/deploy/licenses
		"bindir":            "/usr/bin", "SOURCE_DATE_EPOCH": "1700000000", "TUNE_PKGARCH": tune,
	} {
		v.set[k] = val
	}
	for _, c := range classes {
		v.parse(readLayer(t, c))
	}
	if recipeFile != "" {
		v.parse(readLayer(t, recipeFile))
	}
	// The class's inline python, computed as it computes it.
	if s, ok := v.get("CIMG_BINARY"); ok {
		v.set["CIMG_COMMAND_DEFAULT"] = "/usr/bin/" + filepath.Base(v.expand(t, s))
	}
	return v
}

// --- a recipe work directory, as bitbake leaves it after do_install

// workdir makes TMP/work/TUNE-oe-linux/hello-cimg/1.0 with image/ (the
// program installed as do_install installs it), recipe-sysroot/ (the C
// library from the cross sysroot in base_libdir, /lib, where glibc's
// recipe stages it), recipe-sysroot-native/installeddeps/ (what bitbake's
// staging records: glibc staged those files) and the deployed
// recipeinfo of glibc.
func workdir(t *testing.T, tmp string, tg target, prog string) string {
	t.Helper()
	work := filepath.Join(tmp, "work", tg.tune+"-oe-linux", "hello-cimg", "1.0")
	sysroot := filepath.Join(work, "recipe-sysroot")
	for _, d := range []string{"image/usr/bin", "recipe-sysroot/lib", "recipe-sysroot/usr/lib", "recipe-sysroot-native/installeddeps"} {
		if err := os.MkdirAll(filepath.Join(work, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	copyFile(t, prog, filepath.Join(work, "image/usr/bin/hello-cimg"), 0o755)
	var staged []string
	for _, lib := range []string{tg.loader, "libc.so.6", "libm.so.6"} {
		dst := filepath.Join(sysroot, "lib", lib)
		copyFile(t, filepath.Join(tg.sysroot, "lib", lib), dst, 0o755)
		staged = append(staged, dst)
	}
	// The link the toolchain's -lm uses, as glibc-dev stages it.
	if err := os.Symlink("../../lib/libm.so.6", filepath.Join(sysroot, "usr/lib/libm.so")); err != nil {
		t.Fatal(err)
	}
	staged = append(staged, filepath.Join(sysroot, "usr/lib/libm.so"))
	deps := filepath.Join(work, "recipe-sysroot-native/installeddeps")
	write(t, filepath.Join(deps, "glibc.0123abcd"), strings.Join(staged, "\n")+"\n")
	if err := os.Symlink("glibc.0123abcd", filepath.Join(deps, "glibc")); err != nil {
		t.Fatal(err)
	}
	write(t, filepath.Join(deps, "index.do_prepare_recipe_sysroot"), "glibc\n")
	lic := filepath.Join(tmp, "deploy/licenses", tg.tune, "glibc")
	os.MkdirAll(lic, 0o755)
	write(t, filepath.Join(lic, "recipeinfo"), "LICENSE: GPL-2.0-only & LGPL-2.1-or-later\nPR: r0\nPV: 2.42+git\n")
	return work
}

func copyFile(t *testing.T, src, dst string, mode os.FileMode) {
	t.Helper()
	b, err := os.ReadFile(src)
	if err != nil {
		t.Fatalf("%v (is the cross toolchain installed?)", err)
	}
	if err := os.WriteFile(dst, b, mode); err != nil {
		t.Fatal(err)
	}
}

func write(t *testing.T, path, text string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
}

// crossCompile builds the example's C source as its recipe's do_compile
// does (${CC} ... -lm), with the Debian cross compiler.
func crossCompile(t *testing.T, tg target, out string) {
	t.Helper()
	src := filepath.Join(layer, "recipes-example/hello-cimg/files/hello-cimg.c")
	if b, err := exec.Command(tg.gcc, "-O2", "-o", out, src, "-lm").CombinedOutput(); err != nil {
		t.Fatalf("%s: %v\n%s", tg.gcc, err, b)
	}
}

// runShell runs a task's shell as bitbake does (sh -e), with the tools
// of the native sysroot (cimg-build) first in PATH.
func runShell(t *testing.T, script string) string {
	t.Helper()
	cmd := exec.Command("/bin/sh", "-e", "-c", script)
	cmd.Env = append(os.Environ(), "PATH="+filepath.Dir(cimgBuild)+":"+os.Getenv("PATH"))
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("the task's shell failed: %v\n%s\n--- script:\n%s", err, out, script)
	}
	return string(out)
}

type inspected struct {
	RootHash string `json:"root_hash"`
	Manifest struct {
		Name, Version, Arch string
		App                 struct {
			Command, Args []string
			Env           map[string]string
		}
		Limits struct {
			Memory string
			Pids   int64
		}
	} `json:"manifest"`
	Files []struct {
		Path, Source, Reason string
	} `json:"files"`
}

func inspect(t *testing.T, img string) inspected {
	t.Helper()
	out, err := exec.Command(cimgBuild, "inspect", "--files", "--json", img).Output()
	if err != nil {
		t.Fatalf("inspect %s: %v", img, err)
	}
	var in inspected
	if err := json.Unmarshal(out, &in); err != nil {
		t.Fatal(err)
	}
	return in
}

// runImage runs the image with cimg-run, as the device runs it (the ARM
// program under qemu-user through binfmt_misc), in a state directory of
// the test's own, mounted for this launch only.
func runImage(t *testing.T, img string, args ...string) string {
	t.Helper()
	state := t.TempDir()
	os.Chmod(state, 0o700)
	argv := append([]string{"--state-dir", state, "--private-mount", "-e", "HELLO_EVERY=0", img, "--"}, args...)
	out, err := exec.Command(cimgRun, argv...).CombinedOutput()
	t.Cleanup(func() {
		if b, err := exec.Command(cimgRun, "gc", "--state-dir", state).CombinedOutput(); err != nil {
			t.Errorf("cimg-run gc: %v\n%s", err, b)
		}
	})
	if err != nil {
		t.Fatalf("cimg-run %s: %v\n%s", img, err, out)
	}
	return string(out)
}

// TestPackCommandLine runs do_cimg_pack of cimg.bbclass, as the class
// file has it, expanded with the example recipe's variables, for a
// 32- and a 64-bit ARM target: the program cross-compiled, installed in
// ${D}, its libraries taken from a recipe-shaped sysroot. The image must
// carry the manifest the variables describe and the libraries of the
// sysroot named relative to WORKDIR, be the same bytes when TMPDIR
// moves, have a provenance record that names glibc and its license for
// the libraries, and run under cimg-run.
func TestPackCommandLine(t *testing.T) {
	mounttest.EnableBinfmt(t)
	base := readLayer(t, "classes-recipe/cimg-base.bbclass")
	class := readLayer(t, "classes-recipe/cimg.bbclass")
	for _, tg := range targets {
		t.Run(tg.name, func(t *testing.T) {
			requireTools(t, tg.gcc, tg.qemu, "python3", "realpath")
			if _, err := os.Stat(filepath.Join(tg.sysroot, "lib", tg.loader)); err != nil {
				t.Fatalf("no cross sysroot at %s (crossbuild-essential-%s; make test installs it): %v", tg.sysroot, tg.name, err)
			}
			prog := filepath.Join(t.TempDir(), "hello-cimg")
			crossCompile(t, tg, prog)

			var images [2]string
			for i, tmpdir := range []string{t.TempDir(), filepath.Join(t.TempDir(), "elsewhere", "tmp")} {
				work := workdir(t, tmpdir, tg, prog)
				v := recipe(t, work, tg.tune, "recipes-example/hello-cimg/hello-cimg_1.0.bb",
					"classes-recipe/cimg-base.bbclass", "classes-recipe/cimg.bbclass")
				v.set["CIMG_COMMAND"] = v.set["CIMG_COMMAND_DEFAULT"]
				v.set["CIMG_MANIFEST"] = "" // no file://cimg.toml in the recipe's SRC_URI
				if got := v.expand(t, "${CIMG_COMMAND}"); got != "/usr/bin/hello-cimg" {
					t.Fatalf("CIMG_COMMAND %q", got)
				}
				img := packRecipe(t, v, base, class, work)
				if want := "hello-cimg-1.0-" + tg.tune + ".cimg"; filepath.Base(img) != want {
					t.Errorf("CIMG_FILE %s, want %s", filepath.Base(img), want)
				}
				images[i] = img
				provenance(t, v, class, img)
			}
			a, _ := os.ReadFile(images[0])
			b, _ := os.ReadFile(images[1])
			if len(a) == 0 || !bytes.Equal(a, b) {
				t.Errorf("the same recipe in another TMPDIR gave another image (%d and %d bytes): not reproducible", len(a), len(b))
			}
			img := images[0]
			if out, err := exec.Command(cimgBuild, "verify", img).CombinedOutput(); err != nil {
				t.Fatalf("verify: %v\n%s", err, out)
			}
			in := inspect(t, img)
			m := in.Manifest
			if m.Name != "hello-cimg" || m.Version != "1.0" || m.Arch != tg.arch ||
				strings.Join(m.App.Command, " ") != "/usr/bin/hello-cimg" || strings.Join(m.App.Args, " ") != "device" ||
				m.App.Env["HELLO_EVERY"] != "5" || m.Limits.Memory != "16MiB" || m.Limits.Pids != 8 {
				t.Errorf("the manifest is not what the recipe's CIMG_* say: %+v", m)
			}
			sources := map[string]string{}
			for _, f := range in.Files {
				sources[f.Path] = f.Source
			}
			for path, src := range map[string]string{
				"/usr/bin/hello-cimg": "image/usr/bin/hello-cimg",
				"/lib/" + tg.loader:   "recipe-sysroot/lib/" + tg.loader,
				"/lib/libc.so.6":      "recipe-sysroot/lib/libc.so.6",
				"/lib/libm.so.6":      "recipe-sysroot/lib/libm.so.6",
			} {
				if sources[path] != src {
					t.Errorf("%s: source %q, want %q (relative to WORKDIR)", path, sources[path], src)
				}
			}
			out := runImage(t, img, "yocto")
			if !strings.Contains(out, "hello, yocto (sqrt(3) = 1.7321)") {
				t.Errorf("the packed program's output:\n%s", out)
			}
		})
	}
}

// packRecipe runs do_cimg_pack (with the manifest writer it calls) as
// the class has it, expanded with the recipe's variables, and returns
// the image it wrote.
func packRecipe(t *testing.T, v *vars, base, class, work string) string {
	t.Helper()
	outdir := v.expand(t, "${CIMG_OUTDIR}")
	os.MkdirAll(outdir, 0o755) // do_cimg_pack[cleandirs]
	script := "cimg_toml_list() {\n" + funcBody(t, base, "cimg_toml_list", v) + "}\ncimg_write_manifest() {\n" +
		funcBody(t, base, "cimg_write_manifest", v) + "}\n" + funcBody(t, class, "do_cimg_pack", v)
	if !strings.Contains(script, "--sysroot \"$(realpath -s --relative-to=. "+work+"/recipe-sysroot)\"") {
		t.Fatalf("the pack command does not take the recipe sysroot:\n%s", script)
	}
	runShell(t, script)
	return filepath.Join(outdir, v.expand(t, "${CIMG_FILE}"))
}

// TestManifestFromSRCURI: a file://cimg.toml in the recipe's SRC_URI is
// the manifest (cimg-base.bbclass's cimg_manifest_from_src_uri, run as
// the class has it), and do_cimg_pack packs with it: its app and limits
// are the image's, the recipe's name and version win, and its [build]
// inputs give way to the class's.
func TestManifestFromSRCURI(t *testing.T) {
	mounttest.EnableBinfmt(t)
	tg := targets[1]
	requireTools(t, tg.gcc, tg.qemu, "python3", "realpath")
	base := readLayer(t, "classes-recipe/cimg-base.bbclass")
	class := readLayer(t, "classes-recipe/cimg.bbclass")
	prog := filepath.Join(t.TempDir(), "hello-cimg")
	crossCompile(t, tg, prog)
	work := workdir(t, t.TempDir(), tg, prog)
	v := recipe(t, work, tg.tune, "recipes-example/hello-cimg/hello-cimg_1.0.bb",
		"classes-recipe/cimg-base.bbclass", "classes-recipe/cimg.bbclass")
	v.set["CIMG_COMMAND"] = v.set["CIMG_COMMAND_DEFAULT"]

	// The def and its indented (or blank) lines.
	def := regexp.MustCompile(`(?m)^def cimg_manifest_from_src_uri\(d\):\n(?:[ \t]+.*\n|\n)*`).FindString(base)
	if def == "" {
		t.Fatal("no def cimg_manifest_from_src_uri(d) in cimg-base.bbclass")
	}
	driver := `import sys, types
values = {'SRC_URI': sys.argv[1], 'UNPACKDIR': sys.argv[2]}
d = types.SimpleNamespace(getVar=lambda k: values.get(k))
g = {}
exec(sys.stdin.read(), g)
print(g['cimg_manifest_from_src_uri'](d))
`
	unpack := v.expand(t, "${UNPACKDIR}")
	for uri, want := range map[string]string{
		"file://hello-cimg.c":                            "",
		"file://hello-cimg.c file://cimg.toml":           unpack + "/cimg.toml",
		"file://hello-cimg.c file://conf/cimg.toml;md5=": unpack + "/conf/cimg.toml",
	} {
		cmd := exec.Command("python3", "-B", "-c", driver, uri, unpack)
		cmd.Stdin = strings.NewReader(def)
		out, err := cmd.CombinedOutput()
		if err != nil || strings.TrimSpace(string(out)) != want {
			t.Errorf("SRC_URI %q: CIMG_MANIFEST %q (%v), want %q", uri, out, err, want)
		}
	}

	os.MkdirAll(unpack, 0o755)
	write(t, unpack+"/cimg.toml", `name = "from-toml"
version = "9"

[app]
command = ["/usr/bin/hello-cimg"]
args = ["toml"]

[limits]
memory = "8MiB"

[build]
binary = "no/such/program"
`)
	v.set["CIMG_MANIFEST"] = unpack + "/cimg.toml"
	img := packRecipe(t, v, base, class, work)
	m := inspect(t, img).Manifest
	if m.Name != "hello-cimg" || m.Version != "1.0" || strings.Join(m.App.Args, " ") != "toml" || m.Limits.Memory != "8MiB" {
		t.Errorf("the manifest from cimg.toml: %+v", m)
	}
	if out := runImage(t, img); !strings.Contains(out, "hello, toml") {
		t.Errorf("output:\n%s", out)
	}
}

// funcBody is a shell function's body from the class, expanded.
func funcBody(t *testing.T, text, name string, v *vars) string {
	t.Helper()
	return v.expand(t, shellFunc(t, text, name))
}

// provenance runs the class's python cimg_provenance (the postfunc of
// do_cimg_pack) with a stand-in for bitbake's datastore, and checks the
// record it writes.
func provenance(t *testing.T, v *vars, class, img string) {
	t.Helper()
	body := pythonFunc(t, class, "cimg_provenance")
	values := map[string]string{}
	for _, k := range []string{"CIMG_OUTDIR", "CIMG_FILE", "PN", "PV", "PR", "LICENSE", "HOMEPAGE", "FILE_LAYERNAME",
		"WORKDIR", "D", "LICENSE_DIRECTORY", "RECIPE_SYSROOT_NATIVE"} {
		values[k] = v.expand(t, "${"+k+"}")
	}
	vj, _ := json.Marshal(values)
	lib, _ := filepath.Abs(filepath.Join(layer, "lib"))
	driver := `import json, os, re, sys, types
sys.path.insert(0, sys.argv[1])
values = json.loads(sys.argv[2])
class D:
    def getVar(self, k):
        return values.get(k)
    def expand(self, s):
        return re.sub(r'\$\{([^}]+)\}', lambda m: values[m.group(1)], s)
bb = types.SimpleNamespace(warn=lambda m: print('WARNING: ' + m, file=sys.stderr))
exec('def cimg_provenance(d):\n' + sys.stdin.read() + '\ncimg_provenance(D())', {'os': os, 'bb': bb, 'D': D, '__name__': 'cimg_provenance'})
`
	cmd := exec.Command("python3", "-B", "-c", driver, lib, string(vj))
	cmd.Stdin = strings.NewReader(body)
	// The record needs the inspect output do_cimg_pack wrote.
	if out, err := cmd.CombinedOutput(); err != nil || len(out) > 0 {
		t.Fatalf("cimg_provenance: %v\n%s", err, out)
	}
	var rec struct {
		Image struct {
			Name     string
			RootHash string `json:"root_hash"`
		}
		Files []struct {
			Path, Recipe, License string
		}
		Recipes      map[string]struct{ License string }
		Unattributed []string
	}
	b, err := os.ReadFile(img + ".provenance.json")
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(b, &rec); err != nil {
		t.Fatal(err)
	}
	owner := map[string]string{}
	for _, f := range rec.Files {
		owner[f.Path] = f.Recipe + ": " + f.License
	}
	if owner["/lib/libm.so.6"] != "glibc: GPL-2.0-only & LGPL-2.1-or-later" || owner["/lib/libc.so.6"] != "glibc: GPL-2.0-only & LGPL-2.1-or-later" ||
		owner["/usr/bin/hello-cimg"] != "hello-cimg: MIT" || len(rec.Unattributed) != 0 ||
		rec.Recipes["glibc"].License == "" || rec.Recipes["hello-cimg"].License != "MIT" || rec.Image.RootHash == "" {
		t.Errorf("the provenance record:\n%s", b)
	}
}

// TestImageTypeCommandLine runs IMAGE_CMD:cimg of image_types_cimg.bbclass
// on an arm64 rootfs (the example program and the C library) with the
// manifest written from CIMG_* variables, and runs the image.
func TestImageTypeCommandLine(t *testing.T) {
	mounttest.EnableBinfmt(t)
	tg := targets[1]
	requireTools(t, tg.gcc, tg.qemu)
	class := readLayer(t, "classes-recipe/image_types_cimg.bbclass")
	base := readLayer(t, "classes-recipe/cimg-base.bbclass")
	tmp := t.TempDir()
	rootfs := filepath.Join(tmp, "rootfs")
	for _, d := range []string{"usr/bin", "lib", "etc"} {
		os.MkdirAll(filepath.Join(rootfs, d), 0o755)
	}
	crossCompile(t, tg, filepath.Join(rootfs, "usr/bin/hello-cimg"))
	for _, lib := range []string{tg.loader, "libc.so.6", "libm.so.6"} {
		copyFile(t, filepath.Join(tg.sysroot, "lib", lib), filepath.Join(rootfs, "lib", lib), 0o755)
	}
	v := recipe(t, tmp, tg.tune, "", "classes-recipe/cimg-base.bbclass", "classes-recipe/image_types_cimg.bbclass")
	for k, val := range map[string]string{
		"PN": "cimg-image", "IMAGE_BASENAME": "cimg-image", "IMAGE_ROOTFS": rootfs, "IMGDEPLOYDIR": tmp + "/deploy",
		"IMAGE_NAME": "cimg-image-qemuarm64", "REPRODUCIBLE_TIMESTAMP_ROOTFS": "1520598896",
		"CIMG_VERSION":  "6.0", // ${@DISTRO_VERSION or PV}
		"CIMG_COMMAND":  "/usr/bin/hello-cimg",
		"CIMG_MANIFEST": "", // no file://cimg.toml in the image recipe's SRC_URI
	} {
		v.set[k] = val
	}
	os.MkdirAll(tmp+"/deploy", 0o755)
	script := "cimg_toml_list() {\n" + funcBody(t, base, "cimg_toml_list", v) + "}\ncimg_write_manifest() {\n" +
		funcBody(t, base, "cimg_write_manifest", v) + "}\n" + funcBody(t, class, "IMAGE_CMD:cimg", v)
	runShell(t, script)
	img := tmp + "/deploy/cimg-image-qemuarm64.cimg"
	in := inspect(t, img)
	if in.Manifest.Name != "cimg-image" || in.Manifest.Version != "6.0" || in.Manifest.Arch != "arm64" {
		t.Errorf("manifest %+v", in.Manifest)
	}
	if out := runImage(t, img, "rootfs"); !strings.Contains(out, "hello, rootfs") {
		t.Errorf("output:\n%s", out)
	}
}

// TestGoModulesCurrent: the tool recipes' source list
// (recipes-cimg/cimg/cimg-go-mods.inc) is what scripts/yocto-gomods.sh
// writes from go.mod and go.sum.
func TestGoModulesCurrent(t *testing.T) {
	out, err := exec.Command("../scripts/yocto-gomods.sh", "--check").CombinedOutput()
	if err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
}

var gomodRE = regexp.MustCompile(`(?m)^\s*gomod://([^;]+);version=([^;]+);(mod=1;)?sha256sum=([0-9a-f]{64})`)
var fileRE = regexp.MustCompile(`(?m)^\s*file://([^;]+);subdir=\$\{GO_SRCURI_DESTSUFFIX\}`)

// TestGoModulesBuildOffline does what bitbake does with that list and
// then builds the three tools with the network shut (GOPROXY=off): the
// file:// sources copied into src/cimg.dev/cimg (nothing else of the
// repository), every gomod:// file checked against its sha256sum and
// laid out in the module cache as the gomod fetcher unpacks it (the zip
// and the go.mod taken from it, or the go.mod alone).
func TestGoModulesBuildOffline(t *testing.T) {
	inc := readLayer(t, "recipes-cimg/cimg/cimg-go-mods.inc")
	tmp := t.TempDir()
	src := filepath.Join(tmp, "src/cimg.dev/cimg")
	for _, m := range fileRE.FindAllStringSubmatch(inc, -1) {
		if out, err := exec.Command("mkdir", "-p", filepath.Dir(filepath.Join(src, m[1]))).CombinedOutput(); err != nil {
			t.Fatalf("%v %s", err, out)
		}
		if out, err := exec.Command("cp", "-R", filepath.Join("..", m[1]), filepath.Join(src, m[1])).CombinedOutput(); err != nil {
			t.Fatalf("%v %s", err, out)
		}
	}
	gomodcache, err := exec.Command("go", "env", "GOMODCACHE").Output()
	if err != nil {
		t.Fatal(err)
	}
	from := filepath.Join(strings.TrimSpace(string(gomodcache)), "cache/download")
	cache := filepath.Join(tmp, "pkg/mod")
	mods := gomodRE.FindAllStringSubmatch(inc, -1)
	if len(mods) == 0 {
		t.Fatal("no gomod:// entries")
	}
	for _, m := range mods {
		mod, ver, modOnly, sum := m[1], m[2], m[3] != "", m[4]
		ext := ".zip"
		if modOnly {
			ext = ".mod"
		}
		rel := escape(mod) + "/@v/" + ver + ext
		b, err := os.ReadFile(filepath.Join(from, rel))
		if err != nil {
			t.Fatalf("%s@%s: %v (go mod download fills the module cache)", mod, ver, err)
		}
		if h := sha256.Sum256(b); hex.EncodeToString(h[:]) != sum {
			t.Fatalf("%s@%s%s: sha256 %x, the list says %s", mod, ver, ext, h, sum)
		}
		dst := filepath.Join(cache, "cache/download", rel)
		os.MkdirAll(filepath.Dir(dst), 0o755)
		write(t, dst, string(b))
		if !modOnly {
			write(t, strings.TrimSuffix(dst, ".zip")+".mod", goModFromZip(t, b, mod, ver))
		}
	}
	cmd := exec.Command("go", "build", "-trimpath", "-o", filepath.Join(tmp, "bin")+"/", "./cmd/cimg-run", "./cmd/cimg-fetch", "./cmd/cimg-build")
	cmd.Dir = src
	cmd.Env = append(os.Environ(), "GOMODCACHE="+cache, "GOPROXY=off", "GOFLAGS=-mod=readonly -modcacherw", "CGO_ENABLED=0",
		"GOWORK=off", "GOARCH=arm", "GOARM=7")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build offline from the recipe's sources: %v\n%s", err, out)
	}
	for _, p := range []string{"cimg-run", "cimg-fetch", "cimg-build"} {
		if _, err := os.Stat(filepath.Join(tmp, "bin", p)); err != nil {
			t.Error(err)
		}
	}
}

// escape is the module cache's case encoding: an upper-case letter is !
// and the letter in lower case.
func escape(path string) string {
	var b strings.Builder
	for _, r := range path {
		if r >= 'A' && r <= 'Z' {
			b.WriteByte('!')
			r += 'a' - 'A'
		}
		b.WriteRune(r)
	}
	return b.String()
}

// goModFromZip is the module's go.mod out of its zip, or a module line
// when it has none, as the gomod fetcher writes it.
func goModFromZip(t *testing.T, b []byte, mod, ver string) string {
	t.Helper()
	zr, err := zip.NewReader(bytes.NewReader(b), int64(len(b)))
	if err != nil {
		t.Fatal(err)
	}
	f, err := zr.Open(mod + "@" + ver + "/go.mod")
	if err != nil {
		return fmt.Sprintf("module %s\n", mod)
	}
	defer f.Close()
	data, err := io.ReadAll(f)
	if err != nil {
		t.Fatal(err)
	}
	return string(data)
}
