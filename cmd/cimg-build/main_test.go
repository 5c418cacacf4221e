package main

// End-to-end tests of the cimg-build binary as a user runs it.

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"cimg.dev/cimg/internal/testbin"
)

var cimgBuild, helloBin string

func TestMain(m *testing.M) {
	testbin.Main(m.Run, map[string]string{"cimg-build": ".", "hello": "../../testdata/demo/hello"},
		func(p map[string]string) { cimgBuild, helloBin = p["cimg-build"], p["hello"] })
}

// cli runs cimg-build and returns stdout, stderr and the exit code.
func cli(t *testing.T, env []string, args ...string) (string, string, int) {
	t.Helper()
	cmd := exec.Command(cimgBuild, args...)
	cmd.Env = append(os.Environ(), env...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	code := 0
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatal(err)
	}
	return out.String(), errb.String(), code
}

func mustCLI(t *testing.T, args ...string) string {
	t.Helper()
	out, errs, code := cli(t, nil, args...)
	if code != 0 {
		t.Fatalf("cimg-build %s: exit %d\n%s%s", strings.Join(args, " "), code, out, errs)
	}
	return out + errs
}

type inspectJSON struct {
	Size        int64
	Compression string
	Signers     []string
	RootHash    string `json:"root_hash"`
	Salt        string
	Sections    []struct {
		Name         string
		Offset, Size int64
	}
	Manifest struct {
		Name, Version, Arch string
		App                 struct{ Command []string }
	}
	Files []struct{ Path, Mode string }
}

func inspectImage(t *testing.T, img string) inspectJSON {
	t.Helper()
	var r inspectJSON
	if err := json.Unmarshal([]byte(mustCLI(t, "inspect", "--json", "--files", img)), &r); err != nil {
		t.Fatal(err)
	}
	return r
}

func TestHelpListsEverything(t *testing.T) {
	out := mustCLI(t, "help")
	for _, want := range []string{"inspect", "verify", "keygen", "sign", "--compression", "--block-size",
		"--source-date-epoch", "--name", "--version", "--sign", "--rootfs", "--entrypoint", "--add", "--quiet", "--manifest"} {
		if !strings.Contains(out, want) {
			t.Errorf("help does not mention %s", want)
		}
	}
}

func TestBuildSignInspectVerify(t *testing.T) {
	dir := t.TempDir()
	key := filepath.Join(dir, "release")
	mustCLI(t, "keygen", key)
	if fi, err := os.Stat(key + ".key"); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("private key: %v %v", fi, err)
	}
	other := filepath.Join(dir, "other")
	mustCLI(t, "keygen", other)

	conf := filepath.Join(dir, "hello.conf")
	os.WriteFile(conf, []byte("greeting\n"), 0o644)
	img := filepath.Join(dir, "hello.cimg")
	mustCLI(t, helloBin, "-o", img, "--add", conf+":/etc/hello.conf", "--name", "hello", "--version", "2.0",
		"--compression", "xz", "--block-size", "65536", "--sign", key+".key", "--source-date-epoch", "1700000000")

	r := inspectImage(t, img)
	if r.Manifest.Name != "hello" || r.Manifest.Version != "2.0" || r.Compression != "xz" || len(r.Signers) != 1 ||
		r.Manifest.App.Command[0] != "/usr/bin/hello" {
		t.Errorf("inspect: %+v", r)
	}
	paths := map[string]bool{}
	for _, f := range r.Files {
		paths[f.Path] = true
	}
	if !paths["/usr/bin/hello"] || !paths["/etc/hello.conf"] {
		t.Errorf("files: %v", r.Files)
	}

	if out := mustCLI(t, "verify", "--key", key+".pub", img); !strings.Contains(out, "OK") {
		t.Errorf("verify: %s", out)
	}
	_, errs, code := cli(t, nil, "verify", "--key", other+".pub", img)
	if code == 0 || strings.Count(strings.TrimSpace(errs), "\n") != 0 || !strings.Contains(errs, "untrusted") {
		t.Errorf("verify with the wrong key: exit %d, %q", code, errs)
	}

	// A payload byte changed: one line naming the section.
	b, _ := os.ReadFile(img)
	b[5000] ^= 0x10
	bad := filepath.Join(dir, "bad.cimg")
	os.WriteFile(bad, b, 0o644)
	_, errs, code = cli(t, nil, "verify", "--key", key+".pub", bad)
	if code == 0 || strings.Count(strings.TrimSpace(errs), "\n") != 0 || !strings.Contains(errs, "payload") {
		t.Errorf("verify tampered: exit %d, %q", code, errs)
	}

	// Second signature by another key; both verify.
	mustCLI(t, "sign", "--key", other+".key", img)
	for _, k := range []string{key, other} {
		mustCLI(t, "verify", "--key", k+".pub", img)
	}

	// The hash tree is what veritysetup computes.
	r = inspectImage(t, img)
	var sq, tree struct{ Offset, Size int64 }
	for _, s := range r.Sections {
		switch s.Name {
		case "squashfs":
			sq.Offset, sq.Size = s.Offset, s.Size
		case "verity":
			tree.Offset, tree.Size = s.Offset, s.Size
		}
	}
	vs, err := exec.LookPath("veritysetup")
	if err != nil {
		t.Fatal("veritysetup not found: install cryptsetup-bin (make test does)")
	}
	args := []string{"verify", "--no-superblock", "--data-blocks", fmt.Sprint(sq.Size / 4096), "--hash-offset", fmt.Sprint(tree.Offset),
		"--salt", r.Salt, img, img, r.RootHash}
	if out, err := exec.Command(vs, args...).CombinedOutput(); err != nil {
		t.Errorf("veritysetup %v: %v\n%s", args, err, out)
	}
}

func TestBuildFromManifestAndRootfs(t *testing.T) {
	dir := t.TempDir()
	// The demo manifest names ../../bin/hello; stage the repo layout.
	bin := filepath.Join(dir, "bin")
	demo := filepath.Join(dir, "testdata", "demo")
	os.MkdirAll(bin, 0o755)
	os.MkdirAll(filepath.Join(demo, "etc"), 0o755)
	copyFile(t, helloBin, filepath.Join(bin, "hello"))
	copyFile(t, "../../testdata/demo/cimg.toml", filepath.Join(demo, "cimg.toml"))
	copyFile(t, "../../testdata/demo/etc/greeting.txt", filepath.Join(demo, "etc", "greeting.txt"))
	img := filepath.Join(dir, "demo.cimg")
	mustCLI(t, "-f", filepath.Join(demo, "cimg.toml"), "-o", img)
	r := inspectImage(t, img)
	if r.Manifest.Name != "hello" || r.Compression != "zstd" {
		t.Errorf("manifest build: %+v", r)
	}

	root := filepath.Join(dir, "rootfs")
	os.MkdirAll(filepath.Join(root, "opt/app"), 0o755)
	copyFile(t, helloBin, filepath.Join(root, "opt/app/run"))
	img2 := filepath.Join(dir, "rootfs.cimg")
	mustCLI(t, "--rootfs", root, "--entrypoint", "/opt/app/run", "-o", img2)
	if r := inspectImage(t, img2); r.Manifest.App.Command[0] != "/opt/app/run" || r.Manifest.Arch == "" {
		t.Errorf("rootfs build: %+v", r.Manifest)
	}

	// Errors: bad manifest reports all problems, one per line.
	badm := filepath.Join(dir, "bad.toml")
	os.WriteFile(badm, []byte("name = \"Bad Name\"\ncolour = 1\n[limits]\npids = 0\n[app]\ncommand = [\"/opt/app/run\"]\n"), 0o644)
	_, errs, code := cli(t, nil, "-f", badm, "--rootfs", root, "-o", filepath.Join(dir, "x.cimg"))
	if code == 0 || !strings.Contains(errs, "bad.toml:1: name") || !strings.Contains(errs, "bad.toml:2: colour: unknown key") ||
		!strings.Contains(errs, "bad.toml:4: limits.pids") {
		t.Errorf("bad manifest: exit %d\n%s", code, errs)
	}
}

func TestReproducibleAcrossGOMAXPROCS(t *testing.T) {
	dir := t.TempDir()
	root := filepath.Join(dir, "root")
	os.MkdirAll(filepath.Join(root, "data"), 0o755)
	copyFile(t, helloBin, filepath.Join(root, "app"))
	rng := rand.New(rand.NewPCG(1, 2))
	for i := 0; i < 50; i++ {
		b := make([]byte, rng.IntN(300000))
		for j := range b {
			b[j] = byte(rng.IntN(16))
		}
		os.WriteFile(filepath.Join(root, "data", fmt.Sprint(i)), b, 0o644)
	}
	var imgs [][]byte
	for i, procs := range []string{"1", "2", "4"} {
		img := filepath.Join(dir, fmt.Sprint(i)+".cimg")
		out, errs, code := cli(t, []string{"GOMAXPROCS=" + procs, "SOURCE_DATE_EPOCH=1600000000"}, "--rootfs", root, "--entrypoint", "/app", "-o", img)
		if code != 0 {
			t.Fatalf("%s%s", out, errs)
		}
		b, _ := os.ReadFile(img)
		imgs = append(imgs, b)
	}
	if !bytes.Equal(imgs[0], imgs[1]) || !bytes.Equal(imgs[1], imgs[2]) {
		t.Fatal("images differ across GOMAXPROCS")
	}
}

// TestInterruptLeavesNoFile: Ctrl-C during a long build leaves no output
// and no temporary file.
func TestInterruptLeavesNoFile(t *testing.T) {
	dir := t.TempDir()
	root := filepath.Join(dir, "root")
	os.MkdirAll(root, 0o755)
	copyFile(t, helloBin, filepath.Join(root, "app"))
	f, _ := os.Create(filepath.Join(root, "big"))
	io.CopyN(f, rand.NewChaCha8([32]byte{}), 400<<20)
	f.Close()
	out := filepath.Join(dir, "out")
	os.MkdirAll(out, 0o755)
	cmd := exec.Command(cimgBuild, "--rootfs", root, "--entrypoint", "/app", "--compression", "xz", "-o", filepath.Join(out, "app.cimg"))
	var errb bytes.Buffer
	cmd.Stderr = &errb
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	// Wait until the temporary file exists, then interrupt.
	deadline := time.Now().Add(20 * time.Second)
	for {
		ents, _ := os.ReadDir(out)
		if len(ents) > 0 || time.Now().After(deadline) {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	time.Sleep(200 * time.Millisecond)
	cmd.Process.Signal(syscall.SIGINT)
	err := cmd.Wait()
	if err == nil {
		t.Fatalf("interrupted build exited 0 (did it finish first?)\n%s", errb.String())
	}
	if !strings.Contains(errb.String(), "interrupted") {
		t.Errorf("stderr: %s", errb.String())
	}
	if ents, _ := os.ReadDir(out); len(ents) != 0 {
		t.Errorf("left behind: %v", ents)
	}
}

func copyFile(t *testing.T, src, dst string) {
	t.Helper()
	b, err := os.ReadFile(src)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(dst, b, 0o755); err != nil {
		t.Fatal(err)
	}
}

// TestProgressBarOnTerminal: a long build shows a progress bar when
// stderr is a terminal (script(1) gives it one), and --quiet silences it.
func TestProgressBarOnTerminal(t *testing.T) {
	script, err := exec.LookPath("script")
	if err != nil {
		t.Fatal("script(1) not found: install bsdutils")
	}
	dir := t.TempDir()
	root := filepath.Join(dir, "root")
	os.MkdirAll(root, 0o755)
	copyFile(t, helloBin, filepath.Join(root, "app"))
	f, _ := os.Create(filepath.Join(root, "big"))
	io.CopyN(f, rand.NewChaCha8([32]byte{1}), 96<<20)
	f.Close()
	for _, quiet := range []bool{false, true} {
		cmdline := cimgBuild + " --rootfs " + root + " --entrypoint /app --compression lz4 -o " + filepath.Join(dir, "out.cimg")
		if quiet {
			cmdline += " --quiet"
		}
		out, err := exec.Command(script, "-qec", cmdline, "/dev/null").CombinedOutput()
		if err != nil {
			t.Fatalf("%v\n%s", err, out)
		}
		if has := strings.Contains(string(out), "packing"); has == quiet {
			t.Errorf("quiet=%v: progress bar shown=%v:\n%q", quiet, has, out)
		}
	}
}

// TestInputClosures builds as the issue did: the python3 symlink with
// the standard library added, and a rootfs holding an extension module
// whose library comes from a sysroot only with --resolve-rootfs.
func TestInputClosures(t *testing.T) {
	dir := t.TempDir()
	py := filepath.Join(dir, "py.cimg")
	mustCLI(t, "/usr/bin/python3", "--add", "/usr/lib/python3.11:/usr/lib/python3.11", "-o", py)
	files := map[string]string{}
	for _, f := range inspectImage(t, py).Files {
		files[f.Path] = f.Mode
	}
	if !strings.HasPrefix(files["/usr/bin/python3"], "L") || !strings.HasPrefix(files["/usr/bin/python3.11"], "-") {
		t.Errorf("python3 symlink and target: %q %q", files["/usr/bin/python3"], files["/usr/bin/python3.11"])
	}
	if text := mustCLI(t, "inspect", "--files", py); !regexp.MustCompile(`libsqlite3\.so\.0 .*\(needed by /usr/lib/python3\.11/lib-dynload/_sqlite3`).MatchString(text) {
		t.Errorf("inspect does not say libsqlite3.so.0 is needed by the _sqlite3 module:\n%.2000s", text)
	}

	src, _ := filepath.Abs("../../build/testdata/plugin")
	root, sysroot := filepath.Join(dir, "rootfs"), filepath.Join(dir, "sysroot")
	os.MkdirAll(filepath.Join(root, "opt/app"), 0o755)
	os.MkdirAll(filepath.Join(sysroot, "usr/lib"), 0o755)
	copyFile(t, helloBin, filepath.Join(root, "opt/app/run"))
	lib := filepath.Join(sysroot, "usr/lib", "libcimgdep.so.1")
	for _, args := range [][]string{
		{"-Wl,-soname,libcimgdep.so.1", "-o", lib, filepath.Join(src, "dep.c")},
		{"-o", filepath.Join(root, "opt/app/mod.so"), filepath.Join(src, "mod.c"), lib},
	} {
		if out, err := exec.Command("gcc", append([]string{"-shared", "-fPIC", "-nostdlib"}, args...)...).CombinedOutput(); err != nil {
			t.Fatalf("gcc %v: %v\n%s", args, err, out)
		}
	}
	has := func(img string) bool {
		for _, f := range inspectImage(t, img).Files {
			if f.Path == "/usr/lib/libcimgdep.so.1" {
				return true
			}
		}
		return false
	}
	for _, resolve := range []bool{false, true} {
		img := filepath.Join(dir, fmt.Sprintf("rootfs-%v.cimg", resolve))
		args := []string{"--rootfs", root, "--sysroot", sysroot, "--entrypoint", "/opt/app/run", "-o", img}
		if resolve {
			args = append(args, "--resolve-rootfs")
		}
		mustCLI(t, args...)
		if has(img) != resolve {
			t.Errorf("--resolve-rootfs=%v: libcimgdep.so.1 packed: %v", resolve, !resolve)
		}
	}
}
