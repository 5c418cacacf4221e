package elfdeps

import (
	"debug/elf"
	"encoding/binary"
	"errors"
	"strings"
	"testing"
)

const ldso = "/lib64/ld-linux-x86-64.so.2"
const mlib = "/lib/x86_64-linux-gnu"

// base is a Debian-like amd64 root with a loader and libc.
func base(t *testing.T) *fsTree {
	return newRoot(t).
		elf("/usr/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2", amd64(spec{soname: "ld-linux-x86-64.so.2"})).
		link(ldso, "../lib/x86_64-linux-gnu/ld-linux-x86-64.so.2").
		link("/lib", "usr/lib").
		elf("/usr/lib/x86_64-linux-gnu/libc.so.6", amd64(spec{soname: "libc.so.6", needed: []string{"ld-linux-x86-64.so.2"}}))
}

func exe(s spec) spec {
	s = amd64(s)
	s.exec, s.interp = true, ldso
	s.needed = append(s.needed, "libc.so.6")
	return s
}

func resolve(t *testing.T, root *fsTree, prog string) (*Result, error) {
	t.Helper()
	return Resolve([]string{prog}, Options{Root: Root{Dir: root.root}})
}

// where returns name → path of the closure.
func where(res *Result) map[string]string {
	m := map[string]string{}
	for _, o := range res.Objects {
		m[o.Name] = o.Path
	}
	return m
}

func mustFind(t *testing.T, res *Result, err error, name, path string) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
	if got := where(res)[name]; got != path {
		t.Fatalf("%s found at %q, want %q (closure %v)", name, got, path, where(res))
	}
}

func TestDefaultsCacheAndInterpreter(t *testing.T) {
	r := base(t).elf("/usr/bin/app", exe(spec{needed: []string{"libfoo.so.1"}})).
		elf("/usr/lib/x86_64-linux-gnu/libfoo.so.1", amd64(spec{soname: "libfoo.so.1"}))
	res, err := resolve(t, r, "/usr/bin/app")
	mustFind(t, res, err, "libfoo.so.1", mlib+"/libfoo.so.1")
	if res.Interp == nil || res.Interp.Path != ldso || res.Interp.Real != "/usr/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2" {
		t.Errorf("interpreter %+v", res.Interp)
	}
	// libc's DT_NEEDED on the loader reuses the interpreter by SONAME.
	if n := len(res.Objects); n != 4 {
		t.Errorf("%d objects, want 4: %v", n, where(res))
	}
}

func TestRpathBeforeDefaultsAndInherited(t *testing.T) {
	r := base(t).
		elf("/usr/bin/app", exe(spec{rpath: "/opt/a", needed: []string{"libx.so.1", "liby.so.1"}})).
		elf("/opt/a/libx.so.1", amd64(spec{soname: "libx.so.1"})).
		elf(mlib+"/libx.so.1", amd64(spec{soname: "libx.so.1"})).
		elf(mlib+"/liby.so.1", amd64(spec{soname: "liby.so.1", needed: []string{"libz.so.1"}})).
		elf("/opt/a/libz.so.1", amd64(spec{soname: "libz.so.1"}))
	res, err := resolve(t, r, "/usr/bin/app")
	mustFind(t, res, err, "libx.so.1", "/opt/a/libx.so.1")
	// liby has no paths; its loader's (the app's) RPATH finds libz.
	mustFind(t, res, err, "libz.so.1", "/opt/a/libz.so.1")
}

func TestRunpathDisablesRpathAndIsNotInherited(t *testing.T) {
	r := base(t).
		elf("/usr/bin/app", exe(spec{rpath: "/opt/a", runpath: "/opt/b", needed: []string{"libx.so.1", "liby.so.1"}})).
		elf("/opt/a/libx.so.1", amd64(spec{soname: "libx.so.1"})).
		elf("/opt/b/libx.so.1", amd64(spec{soname: "libx.so.1"})).
		elf(mlib+"/liby.so.1", amd64(spec{soname: "liby.so.1", needed: []string{"libz.so.1"}})).
		elf("/opt/b/libz.so.1", amd64(spec{soname: "libz.so.1"}))
	_, err := resolve(t, r, "/usr/bin/app")
	var nf *NotFoundError
	if !errors.As(err, &nf) || nf.Chain[len(nf.Chain)-1] != "libz.so.1" {
		t.Fatalf("libz must not be found through the app's RUNPATH from liby: %v", err)
	}
	want := "app → liby.so.1 → libz.so.1: not found (searched: "
	if !strings.HasPrefix(err.Error(), want) || !strings.Contains(err.Error(), mlib) {
		t.Errorf("message %q, want it to start %q and list %s", err, want, mlib)
	}
	// And with RPATH and RUNPATH both set, RPATH is ignored.
	r.elf(mlib+"/libz.so.1", amd64(spec{soname: "libz.so.1"}))
	res, err := resolve(t, r, "/usr/bin/app")
	mustFind(t, res, err, "libx.so.1", "/opt/b/libx.so.1")
}

func TestOriginLibPlatform(t *testing.T) {
	r := base(t).
		elf("/app/bin/run", exe(spec{runpath: "$ORIGIN/../lib:/opt/$LIB/x:/opt/${PLATFORM}", needed: []string{"libp.so", "libl.so", "libq.so"}})).
		link("/usr/bin/run", "../../app/bin/run").
		elf("/app/lib/libp.so", amd64(spec{soname: "libp.so"})).
		elf("/opt/lib/x86_64-linux-gnu/x/libl.so", amd64(spec{})).
		elf("/opt/x86_64/libq.so", amd64(spec{}))
	// Started through a symlink: $ORIGIN is the real program's directory.
	res, err := resolve(t, r, "/usr/bin/run")
	mustFind(t, res, err, "libp.so", "/app/lib/libp.so")
	mustFind(t, res, err, "libl.so", "/opt/lib/x86_64-linux-gnu/x/libl.so")
	mustFind(t, res, err, "libq.so", "/opt/x86_64/libq.so")
}

func TestWrongArchDecoysAreSkipped(t *testing.T) {
	r := base(t).
		elf("/usr/bin/app", exe(spec{rpath: "/opt/a:/opt/b:/opt/c", needed: []string{"libd.so.1"}})).
		elf("/opt/a/libd.so.1", spec{class: elf.ELFCLASS32, machine: elf.EM_386}).
		elf("/opt/b/libd.so.1", spec{class: elf.ELFCLASS64, machine: elf.EM_AARCH64}).
		file("/opt/c/libd.so.1", []byte("not an ELF file")).
		elf(mlib+"/libd.so.1", amd64(spec{soname: "libd.so.1"}))
	res, err := resolve(t, r, "/usr/bin/app")
	mustFind(t, res, err, "libd.so.1", mlib+"/libd.so.1")
	// Only decoys: the error lists why each was skipped.
	r.elf("/usr/bin/app2", exe(spec{rpath: "/opt/a:/opt/b", needed: []string{"libd.so.2"}})).
		elf("/opt/a/libd.so.2", spec{class: elf.ELFCLASS32, machine: elf.EM_386}).
		elf("/opt/b/libd.so.2", spec{class: elf.ELFCLASS64, machine: elf.EM_AARCH64})
	_, err = resolve(t, r, "/usr/bin/app2")
	if err == nil || !strings.Contains(err.Error(), "/opt/a/libd.so.2 (class ELFCLASS32)") || !strings.Contains(err.Error(), "machine EM_AARCH64") {
		t.Errorf("got %v", err)
	}
}

func TestARMFloatABI(t *testing.T) {
	arm := func(s spec, hard bool) spec {
		s.class, s.machine = elf.ELFCLASS32, elf.EM_ARM
		s.flags = efARMABIFloatSoft
		if hard {
			s.flags = efARMABIFloatHard
		}
		return s
	}
	r := newRoot(t).
		elf("/lib/ld-linux-armhf.so.3", arm(spec{soname: "ld-linux-armhf.so.3"}, true)).
		elf("/usr/bin/app", arm(spec{exec: true, interp: "/lib/ld-linux-armhf.so.3", rpath: "/opt/soft", needed: []string{"libm.so.6"}}, true)).
		elf("/opt/soft/libm.so.6", arm(spec{soname: "libm.so.6"}, false)).
		elf("/lib/arm-linux-gnueabihf/libm.so.6", arm(spec{soname: "libm.so.6"}, true))
	res, err := resolve(t, r, "/usr/bin/app")
	mustFind(t, res, err, "libm.so.6", "/lib/arm-linux-gnueabihf/libm.so.6")
	if res.Target.Arch != "armhf" {
		t.Errorf("target %s", res.Target.Arch)
	}
}

func TestNodeflib(t *testing.T) {
	r := base(t).
		elf("/usr/bin/app", exe(spec{nodeflib: true, needed: []string{"libn.so"}})).
		elf(mlib+"/libn.so", amd64(spec{}))
	_, err := resolve(t, r, "/usr/bin/app")
	if err == nil || !strings.Contains(err.Error(), "DF_1_NODEFLIB") {
		t.Errorf("got %v", err)
	}
}

func TestSymlinksStayInsideRootAndLoopsEnd(t *testing.T) {
	r := base(t).
		elf("/usr/bin/app", exe(spec{needed: []string{"libabs.so", "libloop.so"}})).
		// An absolute link target means the root's /, not the host's.
		link(mlib+"/libabs.so", "/opt/real/libabs.so.1.2").
		elf("/opt/real/libabs.so.1.2", amd64(spec{})).
		link(mlib+"/libloop.so", "libloop2.so").
		link(mlib+"/libloop2.so", "libloop.so")
	_, err := resolve(t, r, "/usr/bin/app")
	if err == nil || !strings.Contains(err.Error(), "libloop.so: not found") {
		t.Fatalf("loop: %v", err)
	}
	if _, lerr := (Root{Dir: r.root}).Resolve(mlib + "/libloop.so"); !errors.Is(lerr, ErrSymlinkLoop) {
		t.Errorf("Resolve of a loop: %v", lerr)
	}
	real, err := (Root{Dir: r.root}).Resolve(mlib + "/libabs.so")
	if err != nil || real != "/opt/real/libabs.so.1.2" {
		t.Errorf("absolute symlink resolved to %q, %v", real, err)
	}
}

func TestLdSoCacheAndConf(t *testing.T) {
	r := base(t).
		elf("/usr/bin/app", exe(spec{needed: []string{"libc1.so", "libc2.so"}})).
		elf("/weird/dir/libc1.so", amd64(spec{soname: "libc1.so"})).
		elf("/arm/dir/libc2.so", spec{class: elf.ELFCLASS64, machine: elf.EM_AARCH64}).
		elf("/other/dir/libc2.so", amd64(spec{soname: "libc2.so"}))
	// A cache with an entry of another arch first: it must be filtered out.
	cache := BuildCache([]CacheEntry{
		{Flags: flagELFLibc6 | flagX8664Lib64, Name: "libc1.so", Path: "/weird/dir/libc1.so"},
		{Flags: flagELFLibc6 | flagAArch64Lib64, Name: "libc2.so", Path: "/arm/dir/libc2.so"},
		{Flags: flagELFLibc6 | flagX8664Lib64, Name: "libc2.so", Path: "/other/dir/libc2.so"},
	}, binary.LittleEndian)
	r.file("/etc/ld.so.cache", cache)
	res, err := resolve(t, r, "/usr/bin/app")
	mustFind(t, res, err, "libc1.so", "/weird/dir/libc1.so")
	mustFind(t, res, err, "libc2.so", "/other/dir/libc2.so")

	// Without a cache, ld.so.conf and its includes stand in for it.
	r2 := base(t).
		elf("/usr/bin/app", exe(spec{needed: []string{"libconf.so"}})).
		file("/etc/ld.so.conf", []byte("# comment\ninclude /etc/ld.so.conf.d/*.conf\n")).
		file("/etc/ld.so.conf.d/vendor.conf", []byte("/opt/vendor/lib # trailing comment\n")).
		elf("/opt/vendor/lib/libconf.so", amd64(spec{}))
	res, err = resolve(t, r2, "/usr/bin/app")
	mustFind(t, res, err, "libconf.so", "/opt/vendor/lib/libconf.so")
}

func TestMusl(t *testing.T) {
	r := newRoot(t).
		elf("/lib/ld-musl-x86_64.so.1", amd64(spec{soname: "libc.musl-x86_64.so.1"})).
		elf("/usr/bin/app", amd64(spec{exec: true, interp: "/lib/ld-musl-x86_64.so.1", needed: []string{"libm1.so", "libm2.so"}})).
		elf("/usr/lib/libm1.so", amd64(spec{})).
		elf("/srv/lib/libm2.so", amd64(spec{})).
		file("/etc/ld-musl-x86_64.path", []byte("/lib:/usr/lib\n/srv/lib\n"))
	res, err := resolve(t, r, "/usr/bin/app")
	mustFind(t, res, err, "libm2.so", "/srv/lib/libm2.so")
	if !res.Musl {
		t.Error("musl not detected")
	}
}

func TestProgramOutsideRoot(t *testing.T) {
	// A freshly built program in a build tree, its private library in
	// ../lib via $ORIGIN; libc from the (sys)root.
	r := base(t)
	build := newRoot(t).
		elf("/out/bin/app", exe(spec{runpath: "$ORIGIN/../lib", needed: []string{"libpriv.so"}})).
		elf("/out/lib/libpriv.so", amd64(spec{soname: "libpriv.so", runpath: "$ORIGIN", needed: []string{"libpriv2.so"}})).
		elf("/out/lib/libpriv2.so", amd64(spec{}))
	res, err := ResolvePrograms([]Program{{Path: "/usr/bin/app", Host: build.root + "/out/bin/app"}}, Options{Root: Root{Dir: r.root}})
	mustFind(t, res, err, "libpriv.so", "/usr/lib/libpriv.so")
	mustFind(t, res, err, "libpriv2.so", "/usr/lib/libpriv2.so")
	if o := res.Objects[len(res.Objects)-1]; !strings.HasPrefix(o.Host, build.root) {
		t.Errorf("libpriv2 content from %s", o.Host)
	}
}

func TestDeclaredLibraries(t *testing.T) {
	r := base(t).elf("/usr/bin/app", exe(spec{})).
		elf(mlib+"/libplugin.so", amd64(spec{needed: []string{"libdep.so"}})).
		elf(mlib+"/libdep.so", amd64(spec{}))
	res, err := Resolve([]string{"/usr/bin/app"}, Options{Root: Root{Dir: r.root}, Extra: []string{"libplugin.so"}})
	mustFind(t, res, err, "libdep.so", mlib+"/libdep.so")
	_, err = Resolve([]string{"/usr/bin/app"}, Options{Root: Root{Dir: r.root}, Extra: []string{"libnope.so"}})
	if err == nil || !strings.Contains(err.Error(), "app → declared → libnope.so: not found") {
		t.Errorf("got %v", err)
	}
}

func TestCheckVersions(t *testing.T) {
	r := base(t).
		elf("/usr/bin/app", exe(spec{needed: []string{"libv.so.1"}, verneed: map[string][]string{"libv.so.1": {"V_1", "V_3"}}})).
		elf(mlib+"/libv.so.1", amd64(spec{soname: "libv.so.1", verdef: []string{"V_1", "V_2"}}))
	res, err := resolve(t, r, "/usr/bin/app")
	if err != nil {
		t.Fatal(err)
	}
	err = CheckVersions(res)
	if err == nil || !strings.Contains(err.Error(), "/usr/bin/app needs V_3 from libv.so.1") {
		t.Errorf("got %v", err)
	}
}

func TestLibcmpOrder(t *testing.T) {
	for _, c := range []struct {
		a, b string
		sign int
	}{
		{"libfoo.so.10", "libfoo.so.9", 1}, {"libfoo.so.9", "libfoo.so.10", -1}, {"libc.so.6", "libc.so.6", 0},
		{"liba.so", "libb.so", -1}, {"lib1", "liba", 1}, {"liba", "lib1", -1}, {"libx.so", "libx.so.1", -1},
	} {
		got := libcmp(c.a, c.b)
		if (got > 0) != (c.sign > 0) || (got < 0) != (c.sign < 0) {
			t.Errorf("libcmp(%q, %q) = %d, want sign %d", c.a, c.b, got, c.sign)
		}
	}
}

// TestCacheAgainstLdconfig: the host's ldconfig reads a cache we write.
func TestCacheReadByHostLdconfig(t *testing.T) {
	r := newRoot(t)
	cache := BuildCache([]CacheEntry{
		{Flags: flagELFLibc6 | flagX8664Lib64, Name: "libfoo.so.1", Path: "/opt/lib/libfoo.so.1"},
		{Flags: flagELFLibc6 | flagX8664Lib64, Name: "libbar.so.10", Path: "/opt/lib/libbar.so.10"},
		{Flags: flagELFLibc6 | flagX8664Lib64, Name: "libbar.so.9", Path: "/opt/lib/libbar.so.9"},
	}, binary.LittleEndian)
	r.file("/ld.so.cache", cache)
	out, err := execOut("ldconfig", "-p", "-C", r.root+"/ld.so.cache")
	if err != nil {
		t.Fatalf("ldconfig -p: %v\n%s", err, out)
	}
	for _, want := range []string{"3 libs found", "libfoo.so.1 (libc6,x86-64) => /opt/lib/libfoo.so.1", "libbar.so.10 (libc6,x86-64) => /opt/lib/libbar.so.10"} {
		if !strings.Contains(out, want) {
			t.Errorf("ldconfig -p output lacks %q:\n%s", want, out)
		}
	}
	// And the host's own cache parses and agrees with ldconfig.
	host, err := ParseCacheFile("/etc/ld.so.cache", binary.LittleEndian)
	if err != nil {
		t.Fatal(err)
	}
	if p, ok := LookupCache(host, "libc.so.6", flagELFLibc6|flagX8664Lib64); !ok || !strings.HasSuffix(p, "/libc.so.6") {
		t.Errorf("host cache: libc.so.6 → %q %v", p, ok)
	}
}

func TestLocateRefusesEscapesAndKeepsTheLastLink(t *testing.T) {
	r := base(t).
		elf("/usr/bin/python3.11", exe(spec{})).
		link("/usr/bin/python3", "python3.11").
		link("/bin/out", "../../../etc/passwd")
	root := Root{Dir: r.root}
	// Directories are followed, the last component is not.
	real, host, err := root.Locate("/usr/bin/python3")
	if err != nil || real != "/usr/bin/python3" || host != r.root+"/usr/bin/python3" {
		t.Errorf("Locate python3: %q %q %v", real, host, err)
	}
	if _, _, err := root.Locate("/bin/out/x"); !errors.Is(err, ErrEscapesRoot) {
		t.Errorf("a link above the root: %v", err)
	}
	// Resolve keeps the chroot rule: ".." at the root stays there.
	if _, err := root.Resolve("/bin/out"); errors.Is(err, ErrEscapesRoot) {
		t.Errorf("Resolve refused: %v", err)
	}
}

func TestPluginsImageAndNeeds(t *testing.T) {
	// A module needs libdep.so.1, which only the image holds (an --add
	// tree put it on the default path), and libc from the root; a second plugin's SONAME matches the
	// program's DT_NEEDED but must not satisfy it.
	r := base(t).
		elf("/usr/bin/app", exe(spec{needed: []string{"libshared.so.1"}})).
		elf(mlib+"/libshared.so.1", amd64(spec{soname: "libshared.so.1"}))
	img := newRoot(t).
		elf("/mod.so", amd64(spec{needed: []string{"libdep.so.1", "libc.so.6"}})).
		elf("/other.so", amd64(spec{soname: "libshared.so.1"})).
		elf("/libdep.so.1", amd64(spec{soname: "libdep.so.1"}))
	staged := map[string]string{"/opt/mods/mod.so": img.root + "/mod.so", "/opt/mods/other.so": img.root + "/other.so",
		mlib + "/libdep.so.1": img.root + "/libdep.so.1"}
	res, err := ResolvePrograms([]Program{{Path: "/usr/bin/app"}, {Path: "/opt/mods/mod.so", Plugin: true}, {Path: "/opt/mods/other.so", Plugin: true}},
		Options{Root: Root{Dir: r.root}, Image: staged})
	mustFind(t, res, err, "libshared.so.1", mlib+"/libshared.so.1")
	mustFind(t, res, err, "libdep.so.1", mlib+"/libdep.so.1")
	by := map[string][]string{}
	for _, n := range res.Needs {
		by[n.Library] = append(by[n.Library], n.NeededBy)
	}
	if got := strings.Join(by[mlib+"/libdep.so.1"], ","); got != "/opt/mods/mod.so" {
		t.Errorf("libdep.so.1 needed by %q", got)
	}
	if got := strings.Join(by[mlib+"/libc.so.6"], ","); got != "/usr/bin/app,/opt/mods/mod.so" {
		t.Errorf("libc needed by %q", got)
	}
	for _, o := range res.Objects {
		if o.Path == mlib+"/libdep.so.1" && o.Host != img.root+"/libdep.so.1" {
			t.Errorf("libdep.so.1 read from %s, not from what the image holds", o.Host)
		}
	}
}
