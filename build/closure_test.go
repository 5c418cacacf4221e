package build

// End-to-end closure tests: programs packed with their libraries, mounted
// by the kernel and run in a chroot of the image — natively, and for
// armhf and arm64 under qemu-user — with the target loader's own --list
// as the reference for what the closure must be.

import (
	"bytes"
	"context"
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
