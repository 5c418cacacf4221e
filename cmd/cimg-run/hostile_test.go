package main

// The hostile-image suite: images built (or forged) to attack the host,
// each test named after the CVE or class it guards. Every hostile launch
// is either refused with an error naming the problem, or runs neutralised
// (asserted from what the probe inside saw) — and the host's canaries
// (/etc, /root, a file in /tmp, the test's state and volume directories)
// are the same after it as before.

import (
	"bytes"
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"cimg.dev/cimg/format"
	"cimg.dev/cimg/internal/keys"
	"cimg.dev/cimg/internal/mounttest"
)

// ---- canaries ----

// rootToolDirs are the busy directories of /root that other work on this
// machine writes while the suite runs (build caches, toolchains, the
// session's own files): listed, not read.
var rootToolDirs = map[string]bool{".cache": true, "go": true, ".pyenv": true, ".rustup": true, ".cargo": true, ".npm": true, ".claude": true, ".config": true}

// canaries snapshots /etc, /root, a canary file it places in /tmp and
// the given directories, and returns a checker that fails the test for
// any entry added, removed or changed since (type, mode, owner, size,
// content, link target). Symlinks are not followed, unreadable files are
// compared by their metadata, and no directory on another filesystem is
// entered (the state directory's cache mounts).
func canaries(t *testing.T, dirs ...string) func() {
	t.Helper()
	f, err := os.CreateTemp("/tmp", "cimg-hostile-canary-")
	if err != nil {
		t.Fatal(err)
	}
	fmt.Fprintf(f, "canary of %s at %v\n", t.Name(), time.Now())
	f.Close()
	t.Cleanup(func() { os.Remove(f.Name()) })
	trees := append([]string{"/etc", "/root", f.Name()}, dirs...)
	before := snapshot(trees)
	return func() {
		t.Helper()
		if diff := snapshotDiff(before, snapshot(trees)); len(diff) > 0 {
			t.Errorf("host canaries changed (%d entries):\n%s", len(diff), strings.Join(diff[:min(len(diff), 20)], "\n"))
		}
	}
}

// snapshotDiff lists the entries added, removed or changed.
func snapshotDiff(before, after map[string]string) []string {
	var diff []string
	for p, d := range before {
		if after[p] != d {
			diff = append(diff, fmt.Sprintf("%s: %q -> %q", p, d, after[p]))
		}
	}
	for p, d := range after {
		if _, ok := before[p]; !ok {
			diff = append(diff, fmt.Sprintf("%s: added %q", p, d))
		}
	}
	sort.Strings(diff)
	return diff
}

// TestHostileCanariesSeeChanges: the canaries' snapshots tell a new
// file, new content of the same size, a mode, an owner and a retargeted
// symlink apart — or every guarded launch would pass vacuously.
func TestHostileCanariesSeeChanges(t *testing.T) {
	dir := t.TempDir()
	f := filepath.Join(dir, "f")
	os.WriteFile(f, []byte("one"), 0o644)
	os.Symlink("/etc", filepath.Join(dir, "l"))
	for _, change := range []func(){
		func() { os.WriteFile(filepath.Join(dir, "new"), nil, 0o644) },
		func() { os.WriteFile(f, []byte("two"), 0o644); os.Chtimes(f, time.Unix(1, 0), time.Unix(1, 0)) },
		func() { os.Chmod(f, 0o600) },
		func() { os.Chown(f, 1000, 1000) },
		func() { os.Remove(filepath.Join(dir, "l")); os.Symlink("/root", filepath.Join(dir, "l")) },
	} {
		before := snapshot([]string{dir})
		change()
		if diff := snapshotDiff(before, snapshot([]string{dir})); len(diff) != 1 {
			t.Errorf("a change seen as %q", diff)
		}
	}
}

// snapshot describes every entry below the trees, by path.
func snapshot(trees []string) map[string]string {
	out := map[string]string{}
	for _, tree := range trees {
		var top unix.Stat_t
		if unix.Lstat(tree, &top) != nil {
			out[tree] = "missing"
			continue
		}
		filepath.WalkDir(tree, func(p string, d os.DirEntry, err error) error {
			var st unix.Stat_t
			if err != nil || unix.Lstat(p, &st) != nil {
				out[p] = "unreadable"
				return nil
			}
			desc := fmt.Sprintf("%o %d:%d", st.Mode, st.Uid, st.Gid)
			switch st.Mode & unix.S_IFMT {
			case unix.S_IFREG:
				desc += fmt.Sprintf(" %d bytes mtime %d.%d", st.Size, st.Mtim.Sec, st.Mtim.Nsec)
				if b, err := os.ReadFile(p); err == nil {
					sum := sha256.Sum256(b)
					desc += " " + hex.EncodeToString(sum[:8])
				}
			case unix.S_IFLNK:
				target, _ := os.Readlink(p)
				desc += " -> " + target
			case unix.S_IFDIR:
				if st.Dev != top.Dev {
					out[p] = desc + " (a mount)"
					return filepath.SkipDir
				}
				if filepath.Dir(p) == "/root" && rootToolDirs[d.Name()] {
					out[p] = fmt.Sprintf("%o %d:%d (not read)", st.Mode, st.Uid, st.Gid)
					return filepath.SkipDir
				}
			}
			out[p] = desc
			return nil
		})
	}
	return out
}

// ---- images and launches ----

var hostileKeyOnce sync.Once
var hostileKeyPrefix, hostileKeyErr string

// hostileSuite is one test's world: its own state and volume directories
// (root's, 0700) and the suite's signing key (PREFIX.key, PREFIX.pub):
// every image is signed and every launch checks it, so what lies behind
// the signature gate is what is tested.
type hostileSuite struct {
	t                *testing.T
	state, vols, key string
}

func newHostile(t *testing.T) *hostileSuite {
	t.Helper()
	state := stateDir(t)
	hostileKeyOnce.Do(func() {
		hostileKeyPrefix = filepath.Join(testRoot, "hostile-key")
		if out, err := exec.Command(cimgBuild, "keygen", hostileKeyPrefix).CombinedOutput(); err != nil {
			hostileKeyErr = fmt.Sprintf("cimg-build keygen: %v\n%s", err, out)
		}
	})
	if hostileKeyErr != "" {
		t.Fatal(hostileKeyErr)
	}
	vols := t.TempDir()
	if err := os.Chmod(vols, 0o700); err != nil {
		t.Fatal(err)
	}
	return &hostileSuite{t: t, state: state, vols: vols, key: hostileKeyPrefix}
}

// image is the probe image with this manifest body, signed.
func (h *hostileSuite) image(body string, extra ...string) string {
	h.t.Helper()
	return probeImage(h.t, body, append([]string{"--sign", h.key + ".key"}, extra...)...)
}

// rootfsImage builds a signed image named "probe" of a root holding the
// probe as /usr/bin/probe, changed by prep; it returns the image, or ""
// and cimg-build's output.
func (h *hostileSuite) rootfsImage(body string, prep func(root string)) (string, string) {
	h.t.Helper()
	dir := h.t.TempDir()
	root := filepath.Join(dir, "rootfs")
	pb, err := os.ReadFile(probe)
	if err != nil {
		h.t.Fatal(err)
	}
	for _, d := range []string{"usr/bin", "etc"} {
		os.MkdirAll(filepath.Join(root, d), 0o755)
	}
	if err := os.WriteFile(filepath.Join(root, "usr/bin/probe"), pb, 0o755); err != nil {
		h.t.Fatal(err)
	}
	prep(root)
	mf := filepath.Join(dir, "hostile.toml")
	os.WriteFile(mf, []byte("name = \"probe\"\n"+body), 0o644)
	img := filepath.Join(dir, "hostile.cimg")
	out, err := exec.Command(cimgBuild, "-q", "-f", mf, "--rootfs", root, "--sign", h.key+".key", "-o", img).CombinedOutput()
	if err != nil {
		return "", string(out)
	}
	return img, ""
}

// mustRootfsImage is rootfsImage that stops the test if the build fails.
func (h *hostileSuite) mustRootfsImage(body string, prep func(root string)) string {
	h.t.Helper()
	img, out := h.rootfsImage(body, prep)
	if img == "" {
		h.t.Fatalf("cimg-build: %s", out)
	}
	return img
}

// forge rewrites a built image the way an attacker with the signing key
// (or a buggy builder) could: its payload and manifest text edited, then
// a fresh hash tree, footer and signature by the suite's key. The result
// passes every check of the format and the signature gate, and carries
// what cimg-build would have refused to write.
func (h *hostileSuite) forge(img string, payload func([]byte), manifest func(string) string) string {
	h.t.Helper()
	b, err := os.ReadFile(img)
	if err != nil {
		h.t.Fatal(err)
	}
	im, err := format.Open(bytes.NewReader(b), int64(len(b)))
	if err != nil {
		h.t.Fatal(err)
	}
	data := bytes.Clone(b[:im.Footer.PayloadSize])
	if payload != nil {
		payload(data)
	}
	text := string(im.Manifest)
	if manifest != nil {
		if text = manifest(text); text == string(im.Manifest) {
			h.t.Fatalf("forge: the manifest edit changed nothing in\n%s", im.Manifest)
		}
	}
	priv, err := keys.LoadPrivate(h.key + ".key")
	if err != nil {
		h.t.Fatal(err)
	}
	out := filepath.Join(h.t.TempDir(), "forged.cimg")
	f, err := os.OpenFile(out, os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o644)
	if err != nil {
		h.t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.WriteAt(data, 0); err != nil {
		h.t.Fatal(err)
	}
	_, size, err := format.Finish(f, int64(len(data)), format.FinishOptions{Manifest: []byte(text), Signers: []ed25519.PrivateKey{priv}})
	if err == nil {
		err = f.Truncate(size)
	}
	if err != nil {
		h.t.Fatal(err)
	}
	return out
}

// patchFooter writes a copy of img whose footer edit changed, with the
// footer's checksum made right again (the checksum guards against damage,
// not forgery: it is no obstacle to an attacker).
func patchFooter(t *testing.T, img string, edit func(footer []byte)) string {
	t.Helper()
	b, err := os.ReadFile(img)
	if err != nil {
		t.Fatal(err)
	}
	ft := b[len(b)-format.FooterSize:]
	edit(ft)
	sum := sha256.Sum256(ft[:224])
	copy(ft[224:], sum[:])
	out := filepath.Join(t.TempDir(), "patched.cimg")
	if err := os.WriteFile(out, b, 0o644); err != nil {
		t.Fatal(err)
	}
	return out
}

// cmd is a launch with the test's state and volume directories, trusting
// the suite's key.
func (h *hostileSuite) cmd(args ...string) *exec.Cmd {
	return cimgRunCmd(h.state, append([]string{"--volume-dir", h.vols, "--key", h.key + ".pub"}, args...)...)
}

func (h *hostileSuite) run(args ...string) result {
	h.t.Helper()
	return runImage(h.t, h.cmd(args...))
}

// guarded launches twice, calling check on each result: the first launch
// with the host's canaries watched, the second (the image's cache mount
// and the volumes now made) with the state and volume directories too.
func (h *hostileSuite) guarded(check func(result), args ...string) {
	h.t.Helper()
	h.guardedCmd(check, func() *exec.Cmd { return h.cmd(args...) })
}

// guardedCmd is guarded for the launches mk makes.
func (h *hostileSuite) guardedCmd(check func(result), mk func() *exec.Cmd) {
	h.t.Helper()
	host := canaries(h.t)
	check(runImage(h.t, mk()))
	all := canaries(h.t, h.state, h.vols)
	check(runImage(h.t, mk()))
	host()
	all()
}

// in is a copy of the suite for the subtest t.
func (h *hostileSuite) in(t *testing.T) *hostileSuite {
	c := *h
	c.t = t
	return &c
}

// refused launches (guarded) and wants exit 125 with every want in the
// error, which is cimg-run's own (no panic, no stack).
func (h *hostileSuite) refused(want []string, args ...string) {
	h.t.Helper()
	h.guarded(func(r result) {
		h.t.Helper()
		if r.code != 125 || !strings.HasPrefix(r.stderr, "cimg-run: ") || notPanic(r.stderr) != nil {
			h.t.Errorf("%v: exit %d, stderr %q; want exit 125 and a cimg-run error", args, r.code, r.stderr)
			return
		}
		for _, w := range want {
			if !strings.Contains(r.stderr, w) {
				h.t.Errorf("%v: stderr %q does not say %q", args, r.stderr, w)
			}
		}
	}, args...)
}

// notPanic is an error if the output carries a panic or fatal error of
// cimg-run (a Go stack through cimg's packages: the probe imports none).
func notPanic(out string) error {
	if strings.Contains(out, "goroutine ") && strings.Contains(out, "cimg.dev/cimg/") {
		return fmt.Errorf("a cimg-run stack in the output")
	}
	return nil
}

// probeLine runs the probe (guarded) and wants exit 0 and output lines
// for which ok holds.
func (h *hostileSuite) probeLine(ok func(line string) bool, args ...string) {
	h.t.Helper()
	h.guarded(func(r result) {
		h.t.Helper()
		if r.code != 0 || !ok(strings.TrimSpace(r.stdout)) {
			h.t.Errorf("%v: exit %d, stdout %q, stderr %q", args, r.code, r.stdout, r.stderr)
		}
	}, args...)
}

const probeCmd = "[app]\ncommand = [\"/usr/bin/probe\"]\n"

// ---- 1. /proc ----

// procSeen is the probe's "proc" report of one path.
type procSeen struct {
	Mount  string `json:"mount"` // "opts fstype source" when a mount is there
	Exists bool   `json:"exists"`
	Read   string `json:"read"`
	OpenW  string `json:"open_w"`
}

// procReport runs the probe's "proc" mode over paths (guarded).
func (h *hostileSuite) procReport(img string, paths ...string) map[string]procSeen {
	h.t.Helper()
	var rep map[string]procSeen
	h.guarded(func(r result) {
		h.t.Helper()
		if err := json.Unmarshal([]byte(r.stdout), &rep); err != nil || r.code != 0 {
			h.t.Fatalf("probe proc: exit %d, %v\n%s%s", r.code, err, r.stdout, r.stderr)
		}
	}, append([]string{img, "--", "proc"}, paths...)...)
	return rep
}

// TestHostileProcSysCorePatternReadOnly_CoreDumpEscape: an app running as
// uid 0 under the default manifest cannot open the kernel knobs that act
// on the host for writing — core_pattern (a program run as host root on
// the next crash), drop_caches, sysrq-trigger: the mount refuses (EROFS)
// or the permission does. Nothing is written even if one opened.
func TestHostileProcSysCorePatternReadOnly_CoreDumpEscape(t *testing.T) {
	h := newHostile(t)
	img := h.image(probeCmd)
	knobs := []string{"/proc/sys/kernel/core_pattern", "/proc/sys/vm/drop_caches", "/proc/sysrq-trigger", "/proc/sys/kernel/modprobe", "/proc/sys/fs/binfmt_misc/register"}
	rep := h.procReport(img, knobs...)
	for _, k := range knobs {
		s := rep[k]
		switch {
		case !s.Exists:
			t.Logf("%s: not on this kernel", k)
		case s.OpenW != "read-only file system" && s.OpenW != "permission denied":
			t.Errorf("%s opened for writing by the app: %q; want EROFS or EACCES", k, s.OpenW)
		}
	}
	if !rep["/proc/sys/kernel/core_pattern"].Exists {
		t.Error("/proc/sys/kernel/core_pattern is missing inside: the test proves nothing")
	}
}

// runcMasked and runcReadOnly are runc's default masked and read-only
// /proc paths (its spec's linux.maskedPaths and readonlyPaths).
var (
	runcMasked   = []string{"/proc/acpi", "/proc/asound", "/proc/kcore", "/proc/keys", "/proc/latency_stats", "/proc/timer_list", "/proc/timer_stats", "/proc/sched_debug", "/proc/scsi"}
	runcReadOnly = []string{"/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger"}
)

// TestHostileProcMasksCoverRuncDefaults: /proc is nosuid, nodev, noexec;
// every path runc masks is masked here (a mount over it that reads
// empty) and every path runc makes read-only is a read-only mount here,
// or the kernel has no such path at all.
func TestHostileProcMasksCoverRuncDefaults(t *testing.T) {
	h := newHostile(t)
	img := h.image(probeCmd)
	rep := h.procReport(img, append(append([]string{"/proc"}, runcMasked...), runcReadOnly...)...)
	opts := strings.Split(strings.Fields(rep["/proc"].Mount + " ")[0], ",")
	for _, want := range []string{"nosuid", "nodev", "noexec"} {
		if !contains(opts, want) {
			t.Errorf("/proc mounted %q, without %s", rep["/proc"].Mount, want)
		}
	}
	for _, p := range runcMasked {
		s := rep[p]
		readOnly := s.Mount != "" && contains(strings.Split(strings.Fields(s.Mount)[0], ","), "ro")
		switch {
		case !s.Exists:
			t.Logf("%s: not on this kernel", p)
		case s.Mount == "":
			t.Errorf("%s is not masked (no mount over it; reads %s)", p, s.Read)
		case s.Read != "0 bytes" && s.Read != "0 entries" && !readOnly:
			t.Errorf("%s is mounted over (%s) but reads %s", p, s.Mount, s.Read)
		}
	}
	for _, p := range runcReadOnly {
		s := rep[p]
		switch {
		case !s.Exists:
			t.Logf("%s: not on this kernel", p)
		case s.Mount == "" || !contains(strings.Split(strings.Fields(s.Mount)[0], ","), "ro"):
			t.Errorf("%s is not read-only: mount %q", p, s.Mount)
		}
	}
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

// ---- 2. grants ----

const bindRoot = "[[mounts]]\ntype = \"bind\"\nsource = \"/\"\ntarget = \"/host\"\n"

// TestHostileBindRootRefusedWithoutGrant: an image asking for the host's
// / is refused unless the operator grants it, and the error names the
// grant; a read-only grant does not cover a writable bind.
func TestHostileBindRootRefusedWithoutGrant(t *testing.T) {
	h := newHostile(t)
	rw := h.image(probeCmd + bindRoot)
	h.refused([]string{"writable host path /", "--grant bind=/"}, rw, "--", "exit", "0")
	h.refused([]string{"--grant bind=/"}, "--grant", "bind-ro=/", rw, "--", "exit", "0")
	h.refused([]string{"--grant bind=/"}, "--grant", "bind=/etc", rw, "--", "exit", "0")
	ro := h.image(probeCmd + bindRoot + "readonly = true\n")
	h.refused([]string{"read-only host path /", "--grant bind-ro=/"}, ro, "--", "exit", "0")
}

// TestHostileBindRootReadOnlyIsRecursive: with --grant bind-ro=/ and
// readonly = true, the app (uid 0, owner of the host's files) can write
// neither the host's / nor any filesystem mounted below it — /dev/shm,
// /run, /sys/fs/cgroup, /proc/sys and every other mount the host has:
// each is EROFS (a non-recursive read-only bind leaves them writable).
func TestHostileBindRootReadOnlyIsRecursive(t *testing.T) {
	h := newHostile(t)
	img := h.image(probeCmd + bindRoot + "readonly = true\n")
	dirs := []string{"/host", "/host/tmp", "/host/etc", "/host/dev/shm", "/host/run", "/host/sys/fs/cgroup", "/host/proc/sys"}
	mi, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range strings.Split(string(mi), "\n") {
		f := strings.Fields(l)
		if len(f) < 5 || f[4] == "/" || strings.HasPrefix(f[4], "/tmp/") || strings.HasPrefix(f[4], "/mnt/") || strings.Contains(f[4], `\`) {
			continue // tests' image mounts come and go; /mnt holds the machinery's
		}
		if fi, err := os.Stat(f[4]); err == nil && fi.IsDir() && !contains(dirs, "/host"+f[4]) {
			dirs = append(dirs, "/host"+f[4])
		}
	}
	if len(dirs) > 60 {
		dirs = dirs[:60]
	}
	h.guarded(func(r result) {
		t.Helper()
		if r.code != 0 {
			t.Fatalf("exit %d: %s%s", r.code, r.stdout, r.stderr)
		}
		checked := 0
		for _, l := range strings.Split(strings.TrimSpace(r.stdout), "\n") {
			d, res, _ := strings.Cut(l, " ")
			switch res {
			case "read-only file system":
				checked++
			case "no such file or directory", "not a directory": // gone meanwhile, or a mount of another test's
			default:
				t.Errorf("mkdir in %s (the host's %s) from the app: %s; want EROFS", d, strings.TrimPrefix(d, "/host"), res)
			}
		}
		t.Logf("%d host mounts (and / itself) read-only through the bind", checked)
		if checked < 5 {
			t.Errorf("only %d host mounts checked:\n%s", checked, r.stdout)
		}
	}, append([]string{"--grant", "bind-ro=/", img, "--", "mkdir"}, dirs...)...)
}

// TestHostilePrivilegesRefusedWithoutGrant: every privilege that reaches
// the host is refused without its grant, and the error names the grant;
// with it, the image runs.
func TestHostilePrivilegesRefusedWithoutGrant(t *testing.T) {
	h := newHostile(t)
	for _, tc := range []struct{ body, grant string }{
		{"[security]\ncapabilities = [\"CAP_SYS_ADMIN\"]\n", "cap=SYS_ADMIN"},
		{"[security]\ncapabilities = [\"CAP_NET_RAW\"]\n", "cap=NET_RAW"},
		{"[namespaces]\nnetwork = \"host\"\n", "net=host"},
		{"[namespaces]\npid = \"host\"\n", "pid=host"},
		{"[namespaces]\nipc = \"host\"\n", "ipc=host"},
		{"[namespaces]\nuts = \"host\"\n", "uts=host"},
		{"[security]\nseccomp = \"unconfined\"\n", "seccomp=unconfined"},
		{"[security]\nno_new_privileges = false\n", "new-privileges"},
	} {
		img := h.image(probeCmd + tc.body)
		h.refused([]string{"--grant " + tc.grant}, img, "--", "exit", "0")
		if res := h.run("--grant", tc.grant, img, "--", "exit", "7"); res.code != 7 {
			t.Errorf("with --grant %s: %+v", tc.grant, res)
		}
	}
}

// ---- 3, 13. volumes, setuid and file capabilities ----

// TestHostileSetuidInVolume: an app running as root plants a setuid-root
// copy of itself in its volume. On the host it is out of every other
// user's reach (the volume directory's app directory is root's, 0700,
// even if the operator loosens the volume directory); inside, an app
// running as uid 1000 gains nothing from it — the volume is nosuid, so
// not even --grant new-privileges with no_new_privileges = false helps.
func TestHostileSetuidInVolume(t *testing.T) {
	h := newHostile(t)
	planter := h.image(probeCmd + "[[mounts]]\ntype = \"volume\"\nsource = \"data\"\ntarget = \"/data\"\n")
	if res := h.run(planter, "--", "plant-suid", "/data/probe-suid"); res.code != 0 || !strings.Contains(res.stdout, "as uid 0") {
		t.Fatalf("plant: %+v", res)
	}
	planted := filepath.Join(h.vols, "probe/data/probe-suid")
	if fi, err := os.Stat(planted); err != nil || fi.Mode()&os.ModeSetuid == 0 || fi.Sys().(*syscall.Stat_t).Uid != 0 {
		t.Fatalf("the planted file on the host: %v %v", fi, err)
	}
	for _, d := range []string{h.vols, filepath.Join(h.vols, "probe")} {
		expectOwnerMode(t, d, 0, 0o700)
	}
	// Loosened by a careless operator: still no way in for anyone else.
	os.Chmod(h.vols, 0o755)
	os.Chmod(filepath.Dir(h.vols), 0o755)
	stat := exec.Command("stat", planted)
	stat.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65534, Gid: 65534}}
	out, err := stat.CombinedOutput()
	os.Chmod(h.vols, 0o700)
	if err == nil || !strings.Contains(string(out), "Permission denied") {
		t.Errorf("nobody reaching the planted setuid file: %v %s", err, out)
	}

	user := probeCmd + "user = 1000\ngroup = 1000\n[[mounts]]\ntype = \"volume\"\nsource = \"data\"\ntarget = \"/data\"\n[[mounts]]\ntype = \"volume\"\nsource = \"home\"\ntarget = \"/home\"\n"
	img := h.image(user)
	h.probeLine(func(l string) bool { return l == "euid=1000 CapPrm=0000000000000000 CapEff=0000000000000000" }, img, "--", "exec", "/data/probe-suid", "caps")
	expectOwnerMode(t, filepath.Join(h.vols, "probe/home"), 1000, 0o700)
	nnp := h.image(strings.Replace(user, "[[mounts]]", "[security]\nno_new_privileges = false\n[[mounts]]", 1))
	h.probeLine(func(l string) bool { return strings.HasPrefix(l, "euid=1000 ") }, "--grant", "new-privileges", nnp, "--", "exec", "/data/probe-suid", "caps")
}

func expectOwnerMode(t *testing.T, p string, uid uint32, mode os.FileMode) {
	t.Helper()
	fi, err := os.Lstat(p)
	if err != nil {
		t.Error(err)
		return
	}
	if st := fi.Sys().(*syscall.Stat_t); st.Uid != uid || st.Gid != uid || fi.Mode() != os.ModeDir|mode {
		t.Errorf("%s: uid %d gid %d mode %v; want %d:%d %v", p, st.Uid, st.Gid, fi.Mode(), uid, uid, os.ModeDir|mode)
	}
}

// TestHostileSetuidAndFileCapsGainNothing: run as uid 1000 with the
// default no_new_privileges, the image's setuid-root probe runs as 1000,
// a file capability set on the image's file never reaches the image
// (cimg-build stores no xattrs), and one set by the host on a file in the
// app's volume (cap_net_raw+ep) gives nothing (nosuid volume, and
// no_new_privs).
func TestHostileSetuidAndFileCapsGainNothing(t *testing.T) {
	setcap, err := exec.LookPath("setcap")
	if err != nil {
		t.Fatalf("setcap is missing: install libcap2-bin (apt-get install libcap2-bin; add setcap:libcap2-bin to TEST_DEPS)")
	}
	h := newHostile(t)
	body := probeCmd + "user = 1000\ngroup = 1000\n[[mounts]]\ntype = \"volume\"\nsource = \"data\"\ntarget = \"/data\"\n"
	img := h.mustRootfsImage(body, func(root string) {
		b, _ := os.ReadFile(probe)
		p := filepath.Join(root, "usr/bin/probe-cap")
		os.WriteFile(p, b, 0o755)
		if out, err := exec.Command(setcap, "cap_net_raw+ep", p).CombinedOutput(); err != nil {
			t.Fatalf("setcap: %v %s", err, out)
		}
		os.WriteFile(filepath.Join(root, "usr/bin/probe-suid"), b, 0o755)
		syscall.Chmod(filepath.Join(root, "usr/bin/probe-suid"), 0o4755) // os.Chmod would drop 04000
	})
	// The image really holds a setuid-root program (os.Chmod would have
	// dropped the bit, and cimg-build could).
	if fi, err := os.Stat(filepath.Join(mounttest.Mount(t, img), "usr/bin/probe-suid")); err != nil || fi.Mode()&os.ModeSetuid == 0 || fi.Sys().(*syscall.Stat_t).Uid != 0 {
		t.Fatalf("the image's probe-suid is not setuid root: %v %v", fi, err)
	}
	const nothing = "euid=1000 CapPrm=0000000000000000 CapEff=0000000000000000"
	is := func(l string) bool { return l == nothing }
	h.probeLine(is, img, "--", "exec", "/usr/bin/probe-suid", "caps")
	h.probeLine(is, img, "--", "exec", "/usr/bin/probe-cap", "caps")
	// The volume exists now: the host puts a capability-carrying file in it.
	capped := filepath.Join(h.vols, "probe/data/probe-cap")
	b, _ := os.ReadFile(probe)
	os.WriteFile(capped, b, 0o755)
	if out, err := exec.Command(setcap, "cap_net_raw+ep", capped).CombinedOutput(); err != nil {
		t.Fatalf("setcap: %v %s", err, out)
	}
	h.probeLine(is, img, "--", "exec", "/data/probe-cap", "caps")
}

// ---- 4. overlay layers ----

// TestHostileOverlayUpperSymlink: an app plants, in the volume that
// another image of the same name keeps its overlay layer in, a symlink
// upper -> /etc. The overlay launch is refused (the layer's upper is a
// symlink) and the host's /etc never becomes the layer.
func TestHostileOverlayUpperSymlink(t *testing.T) {
	h := newHostile(t)
	planter := h.image(probeCmd + "[[mounts]]\ntype = \"volume\"\nsource = \"ovl\"\ntarget = \"/vol\"\n")
	for _, l := range []string{"upper", "work"} {
		if res := h.run(planter, "--", "symlink", "/etc", "/vol/"+l); res.code != 0 {
			t.Fatalf("plant %s: %+v", l, res)
		}
	}
	if target, err := os.Readlink(filepath.Join(h.vols, "probe/ovl/upper")); err != nil || target != "/etc" {
		t.Fatalf("the planted link on the host: %q %v", target, err)
	}
	img := h.image(probeCmd + "[[mounts]]\ntype = \"overlay\"\nsource = \"ovl\"\ntarget = \"/usr\"\n")
	h.refused([]string{"upper", "symlink"}, img, "--", "write", "/usr/owned", "x")
}

// ---- 5, 12. entrypoint and workdir escapes ----

// TestHostileEntrypointProcSelfExe_CVE_2019_5736: until its execve the
// app's process is the host's cimg-run, so a command that leads to
// /proc/self/exe — named directly, through a symlink in the image, as a
// script's interpreter, or as an ELF's PT_INTERP — would run (and let
// the app overwrite) the host binary. Each is refused before the fork.
func TestHostileEntrypointProcSelfExe_CVE_2019_5736(t *testing.T) {
	gcc, err := exec.LookPath("gcc")
	if err != nil {
		t.Fatal("gcc is missing: install it (it is in the Makefile's TEST_DEPS)")
	}
	h := newHostile(t)
	img := h.mustRootfsImage(probeCmd, func(root string) {
		bin := filepath.Join(root, "usr/bin")
		os.Symlink("/proc/self/exe", filepath.Join(bin, "app"))
		os.Symlink("app", filepath.Join(bin, "app2"))
		os.Symlink("../../proc/self/exe", filepath.Join(bin, "app3"))
		os.WriteFile(filepath.Join(bin, "script"), []byte("#!/proc/self/exe\n"), 0o755)
		os.WriteFile(filepath.Join(bin, "script2"), []byte("#!/usr/bin/app -x\n"), 0o755)
		src := filepath.Join(t.TempDir(), "interp.c")
		os.WriteFile(src, []byte("int main(void) { return 0; }\n"), 0o644)
		if out, err := exec.Command(gcc, "-o", filepath.Join(bin, "interp"), src, "-Wl,--dynamic-linker=/proc/self/exe").CombinedOutput(); err != nil {
			t.Fatalf("gcc: %v %s", err, out)
		}
	})
	for _, cmd := range []string{"/proc/self/exe", "/usr/bin/app", "/usr/bin/app2", "/usr/bin/app3", "/usr/bin/script", "/usr/bin/script2", "/usr/bin/interp"} {
		forged := h.forge(img, nil, func(m string) string {
			return strings.Replace(m, `command = ["/usr/bin/probe"]`, `command = ["`+cmd+`"]`, 1)
		})
		h.refused([]string{"CVE-2019-5736"}, forged)
	}
}

// TestHostileWorkdirEscape_CVE_2024_21626: a working directory that
// leads out of the image — a /proc/self/fd magic link to a leaked host
// fd, a symlink in the image to /proc/self/cwd, ".." — is refused, at
// build and (in a forged image) at run; never entered.
func TestHostileWorkdirEscape_CVE_2024_21626(t *testing.T) {
	h := newHostile(t)
	img := h.mustRootfsImage(probeCmd, func(root string) {
		os.Symlink("/proc/self/cwd", filepath.Join(root, "wd-cwd"))
		os.Symlink("/proc/self/fd/7", filepath.Join(root, "wd-fd"))
		os.Symlink("../../../../../..", filepath.Join(root, "usr/wd-up"))
	})
	for _, wd := range []string{"/wd-cwd", "/wd-fd", "/usr/wd-up"} {
		forged := h.forge(img, nil, func(m string) string { return strings.Replace(m, `workdir = "/"`, `workdir = "`+wd+`"`, 1) })
		// Host directories leaked to cimg-run as fds 3..20: fd 7 is one.
		h.guardedCmd(func(r result) {
			t.Helper()
			if r.code != 125 || !strings.Contains(r.stderr, wd) || !strings.Contains(r.stderr, "dir") || r.stdout != "" {
				t.Errorf("workdir %s: exit %d, %q %q; want it refused", wd, r.code, r.stdout, r.stderr)
			}
		}, func() *exec.Cmd { c := h.cmd(forged, "--", "exit", "0"); passHostFDs(t, c); return c })
	}
	for wd, why := range map[string]string{"/proc/self/fd/7": "under /proc", "/usr/../..": `contains ".."`, "/proc/self/cwd": "under /proc"} {
		if img, out := h.rootfsImage(probeCmd+"workdir = \""+wd+"\"\n", func(string) {}); img != "" || !strings.Contains(out, why) {
			t.Errorf("build with workdir %s: %q; want refused, %q", wd, out, why)
		}
		forged := h.forge(img, nil, func(m string) string { return strings.Replace(m, `workdir = "/"`, `workdir = "`+wd+`"`, 1) })
		h.refused([]string{"app.workdir", why}, forged)
	}
}

// TestHostileEntrypointDotDot: a command path with ".." is refused by
// the manifest rules, at build and at run.
func TestHostileEntrypointDotDot(t *testing.T) {
	h := newHostile(t)
	img := h.image(probeCmd)
	const bad = "/usr/bin/../../../usr/bin/probe"
	if img, out := h.rootfsImage("[app]\ncommand = [\""+bad+"\"]\n", func(string) {}); img != "" {
		t.Errorf("built with command %s", bad)
	} else {
		t.Logf("cimg-build: %s", out) // "not in the image": staged paths are clean
	}
	forged := h.forge(img, nil, func(m string) string { return strings.Replace(m, `"/usr/bin/probe"`, `"`+bad+`"`, 1) })
	h.refused([]string{"app.command", `contains ".."`}, forged)
}

// ---- 6. devices ----

// TestHostileMknodHostRootDisk: an app granted CAP_MKNOD makes a node
// for the host's root disk in /dev, /tmp, /dev/shm and /run. Making it
// may work or not (device cgroup); opening it never does (nodev mounts,
// device cgroup), while /dev/null still works.
func TestHostileMknodHostRootDisk(t *testing.T) {
	h := newHostile(t)
	img := h.image(probeCmd + "[security]\ncapabilities = [\"CAP_MKNOD\"]\n")
	var st unix.Stat_t
	if err := unix.Stat("/", &st); err != nil {
		t.Fatal(err)
	}
	major, minor := unix.Major(st.Dev), unix.Minor(st.Dev)
	if major == 0 {
		major, minor = 7, 0 // / on no block device: a loop device's numbers
	}
	for _, dir := range []string{"/dev", "/tmp", "/dev/shm", "/run"} {
		h.probeLine(func(l string) bool {
			f := map[string]string{}
			for _, kv := range strings.Split(strings.TrimPrefix(l, "mknod="), " ") {
				k, v, _ := strings.Cut(kv, "=")
				f[k] = v
			}
			mk, _, _ := strings.Cut(l, " open=")
			return f["open"] != "ok" && f["open"] != "" && f["null"] == "ok" && strings.HasPrefix(mk, "mknod=")
		}, "--grant", "cap=MKNOD", img, "--", "mknod", dir+"/hostdisk", strconv.Itoa(int(major)), strconv.Itoa(int(minor)))
	}
}

// ---- 7, 14. absurd values ----

// TestHostileUserMinusOne: user or group 4294967295 is (uid_t)-1, which
// setresuid reads as "unchanged": the app would stay root. Refused by
// cimg-build and, in a forged image, by cimg-run.
func TestHostileUserMinusOne(t *testing.T) {
	h := newHostile(t)
	img := h.image(probeCmd)
	for _, key := range []string{"user", "group"} {
		body := probeCmd + key + " = 4294967295\n"
		if built, out := h.rootfsImage(body, func(string) {}); built != "" || !strings.Contains(out, "4294967295") {
			t.Errorf("build with %s = 4294967295: %q", key, out)
		}
		forged := h.forge(img, nil, func(m string) string { return strings.Replace(m, key+" = 0\n", key+" = 4294967295\n", 1) })
		h.refused([]string{"app." + key, "4294967295", "unchanged"}, forged)
	}
}

// TestHostileAbsurdValues: huge environment values and argument lists,
// tiny memory limits, too many groups, no file descriptors: each is a
// validation error or a clear runtime error (exit 125), or the app runs
// and exits with its own status — never a panic.
func TestHostileAbsurdValues(t *testing.T) {
	h := newHostile(t)
	img := h.image(probeCmd)
	many := make([]string, 10000)
	for i := range many {
		many[i] = fmt.Sprintf("%q", "arg"+strconv.Itoa(i))
	}
	groups := make([]string, 70000)
	for i := range groups {
		groups[i] = strconv.Itoa(i + 1)
	}
	for _, tc := range []struct {
		name, from, to string
		code           int      // 0: 125
		want           []string // in stderr
	}{
		{"1 MiB env value", "[app]\n", "[app]\nenv = { BIG = \"" + strings.Repeat("x", 1<<20-4096) + "\" }\n", 0, []string{"larger than the kernel takes"}},
		{"10000 args", `command = ["/usr/bin/probe"]`, `command = ["/usr/bin/probe"]` + "\nargs = [\"exit\", \"3\", " + strings.Join(many, ", ") + "]", 3, nil},
		{"memory 1 byte", "[limits]\n", "[limits]\nmemory = 1\n", 0, []string{"limits.memory", "below the 4MiB"}},
		{"70000 groups", "[app]\n", "[app]\ngroups = [" + strings.Join(groups, ",") + "]\n", 0, []string{"setgroups"}},
		{"nofile 0", "[limits]\n", "[limits]\nrlimits = { nofile = { soft = 0, hard = 0 } }\n", -1, nil},
		{"pids 1", "[limits]\n", "[limits]\npids = 1\n", -1, nil},
		{"stack 4 KiB", "[limits]\n", "[limits]\nrlimits = { stack = { soft = 4096, hard = 4096 } }\n", -1, nil},
		{"cpu 1e9", "[limits]\n", "[limits]\ncpu = 1e9\n", 0, []string{"limits.cpu"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := h.in(t)
			forged := h.forge(img, nil, func(m string) string { return strings.Replace(m, tc.from, tc.to, 1) })
			launch := []string{forged, "--", "exit", "4"}
			if tc.code > 0 {
				launch = launch[:1] // the manifest's args
			}
			h.guarded(func(r result) {
				t.Helper()
				if err := notPanic(r.stderr); err != nil {
					t.Errorf("exit %d: %v\n%.2000s", r.code, err, r.stderr)
				}
				switch {
				case tc.code < 0: // the app's own status, or cimg-run's clear error
					if r.code == 125 && !strings.HasPrefix(r.stderr, "cimg-run: ") {
						t.Errorf("exit 125 without a cimg-run error: %.2000s", r.stderr)
					}
					t.Logf("exit %d: %.300s", r.code, r.stderr)
				case tc.code > 0 && r.code != tc.code:
					t.Errorf("exit %d, want the app's %d: %.2000s", r.code, tc.code, r.stderr)
				case tc.code == 0:
					if r.code != 125 || !strings.HasPrefix(r.stderr, "cimg-run: ") {
						t.Errorf("exit %d, want 125: %.2000s", r.code, r.stderr)
					}
					for _, w := range tc.want {
						if !strings.Contains(r.stderr, w) {
							t.Errorf("stderr does not say %q: %.2000s", w, r.stderr)
						}
					}
				}
			}, launch...)
		})
	}
}

// ---- 8. the app outlives its launcher ----

// TestHostileAppOutlivesLauncher: an app running as uid 1000 (the kernel
// clears the parent-death signal at setuid) dies within a second of its
// launcher being SIGKILLed — before and after the launcher turned into
// the slim waiter.
func TestHostileAppOutlivesLauncher(t *testing.T) {
	h := newHostile(t)
	img := h.image(probeCmd + "user = 1000\ngroup = 1000\n")
	runExit0(t, h.state, img) // the cache mount
	check := canaries(t, h.state, h.vols)
	for _, waiter := range []bool{false, true} {
		cmd, _ := startSleeping(t, h.state, "--volume-dir", h.vols, "--key", h.key+".pub", img)
		if waiter {
			waitFor(t, func() bool { return isWaiter(cmd.Process.Pid) })
		}
		app := childOf(cmd.Process.Pid)
		if app == 0 {
			cmd.Process.Kill()
			cmd.Wait()
			t.Fatalf("no app process under cimg-run %d", cmd.Process.Pid)
		}
		if uid := procStatus(app, "Uid"); !strings.HasPrefix(uid, "1000\t") {
			t.Errorf("app %d runs as %q", app, uid)
		}
		wasWaiter := isWaiter(cmd.Process.Pid)
		cmd.Process.Kill()
		cmd.Wait()
		if !settleFor(time.Second, func() bool { s := procStatus(app, "State"); return s == "" || strings.HasPrefix(s, "Z") }) {
			t.Errorf("app %d (uid 1000) still %q a second after its launcher (slim waiter: %v) was killed", app, procStatus(app, "State"), wasWaiter)
			syscall.Kill(app, syscall.SIGKILL)
		}
	}
	runExit0(t, h.state, img) // removes the killed launches' cgroups
	check()
}

// childOf finds the process whose parent is pid.
func childOf(pid int) int {
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		if n, err := strconv.Atoi(e.Name()); err == nil && procStatus(n, "PPid") == strconv.Itoa(pid) {
			return n
		}
	}
	return 0
}

// procStatus is a field of /proc/PID/status, "" if the process is gone.
func procStatus(pid int, key string) string {
	b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	for _, l := range strings.Split(string(b), "\n") {
		if k, v, _ := strings.Cut(l, ":"); k == key {
			return strings.TrimSpace(v)
		}
	}
	return ""
}

// ---- 9. image files others could change ----

// TestHostileImageFileWritableByOthers: an image file another user could
// change between its verification and its mount is refused: writable by
// group or others, owned by a user, or in a directory others may write
// (a sticky one such as /tmp is fine).
func TestHostileImageFileWritableByOthers(t *testing.T) {
	h := newHostile(t)
	img := h.image(probeCmd)
	b, _ := os.ReadFile(img)
	place := func(dirMode, fileMode os.FileMode, uid int) string {
		dir := filepath.Join(t.TempDir(), "d")
		os.Mkdir(dir, 0o755)
		syscall.Chmod(dir, uint32(dirMode)) // raw bits: os.Chmod reads 01000 as no sticky bit
		p := filepath.Join(dir, "app.cimg")
		os.WriteFile(p, b, 0o644)
		syscall.Chmod(p, uint32(fileMode))
		os.Chown(p, uid, uid)
		return p
	}
	h.refused([]string{"writable by group or others", "chmod go-w"}, place(0o755, 0o666, 0), "--", "exit", "0")
	h.refused([]string{"writable by group or others"}, place(0o755, 0o620, 0), "--", "exit", "0")
	h.refused([]string{"owned by uid 1000, not root"}, place(0o755, 0o644, 1000), "--", "exit", "0")
	h.refused([]string{"directory", "writable by group or others (mode 0777)"}, place(0o777, 0o644, 0), "--", "exit", "0")
	if res := h.run(place(0o1777, 0o644, 0), "--", "exit", "5"); res.code != 5 {
		t.Errorf("in a sticky 1777 directory: %+v", res)
	}
}

// ---- 10. unbounded allocation ----

// TestHostileFooterClaimsHugeSections: a footer claiming a 2 GiB
// signatures or manifest section (checksum fixed up: it is no signature)
// is refused, naming the field, without cimg-run ever holding the
// claimed size (max RSS under 64 MiB).
//
// The RSS is GNU time's report of its child: the rusage of a child this
// test starts itself would not do, since os/exec starts it with vfork,
// and the kernel counts the test binary's own peak (hundreds of MiB once
// the delivery tests have held 50 MB images) as the child's at its exec.
func TestHostileFooterClaimsHugeSections(t *testing.T) {
	h := newHostile(t)
	img := h.image(probeCmd)
	timeBin, err := exec.LookPath("/usr/bin/time")
	if err != nil {
		t.Fatalf("GNU time measures cimg-run's peak memory here (make test installs it, package time): %v", err)
	}
	for _, tc := range []struct {
		at    int
		field string
	}{{216, "sig_size"}, {168, "manifest_size"}} {
		bad := patchFooter(t, img, func(ft []byte) { binary.LittleEndian.PutUint64(ft[tc.at:], 2<<30) })
		h.refused([]string{tc.field, "2147483648", "cap"}, bad)
		cmd := h.cmd(bad)
		out := filepath.Join(t.TempDir(), "rss")
		cmd.Args = append([]string{timeBin, "-f", "%M", "-o", out}, cmd.Args...)
		cmd.Path = timeBin
		runImage(t, cmd)
		b, err := os.ReadFile(out)
		lines := strings.Split(strings.TrimSpace(string(b)), "\n") // "Command exited with non-zero status 125", then %M
		rss, perr := strconv.Atoi(lines[len(lines)-1])
		if err != nil || perr != nil {
			t.Fatalf("GNU time's report: %q %v %v", b, err, perr)
		}
		if rss > 64<<10 {
			t.Errorf("%s of 2 GiB: cimg-run's max RSS %d KiB", tc.field, rss)
		}
	}
}

// ---- 11. /proc, /dev, /tmp, /run that are not directories ----

// TestHostileSymlinkedProcDir: an image whose /proc, /dev, /tmp or /run
// is a symlink (to /etc, to /) or a regular file is refused, naming the
// path: the launcher's own mounts must land on the image's directories,
// not wherever a link points (runc refuses a symlinked /proc too,
// CVE-2019-19921 and CVE-2019-16884).
func TestHostileSymlinkedProcDir(t *testing.T) {
	h := newHostile(t)
	for _, tc := range []struct{ path, link string }{
		{"/proc", "/etc"}, {"/proc", ""}, {"/dev", "/"}, {"/dev", ""}, {"/tmp", "/etc"}, {"/tmp", ""}, {"/run", "/etc"}, {"/run", ""},
	} {
		name := tc.path + " -> " + tc.link
		if tc.link == "" {
			name = tc.path + " a file"
		}
		t.Run(name, func(t *testing.T) {
			h := h.in(t)
			img := h.mustRootfsImage(probeCmd, func(root string) {
				p := filepath.Join(root, tc.path)
				os.RemoveAll(p)
				if tc.link != "" {
					os.Symlink(tc.link, p)
				} else {
					os.WriteFile(p, []byte("not a directory\n"), 0o644)
				}
			})
			h.guarded(func(r result) {
				t.Helper()
				if r.code != 125 || !strings.Contains(r.stderr, tc.path) || !strings.Contains(r.stderr, "non-directory") && !strings.Contains(r.stderr, "symlink") && !strings.Contains(r.stderr, "not a directory") {
					t.Errorf("image with %s: exit %d, stdout %.200q, stderr %q; want refused (exit 125), naming %s as a symlink or non-directory", name, r.code, r.stdout, r.stderr, tc.path)
				}
			}, img, "--", "proc", "/proc/sys", "/proc/kcore", "/proc/keys")
		})
	}
}

// ---- 15. corrupt images ----

// TestHostileCorruptImages: a flipped payload byte (--verify always) and
// a flipped hash-tree byte are refused by verification; a manifest
// rewritten to ask for the host's network, with its hash in the footer
// fixed up, is refused by the signature; and squashfs payloads damaged
// before the hash tree was computed (so verification and signature pass)
// fail to mount with an error, harming nothing.
func TestHostileCorruptImages(t *testing.T) {
	h := newHostile(t)
	img := h.image(probeCmd)
	b, _ := os.ReadFile(img)
	im, err := format.Open(bytes.NewReader(b), int64(len(b)))
	if err != nil {
		t.Fatal(err)
	}
	flip := func(at int64) string {
		c := bytes.Clone(b)
		c[at] ^= 0x40
		p := filepath.Join(t.TempDir(), "flipped.cimg")
		os.WriteFile(p, c, 0o644)
		return p
	}
	h.refused([]string{"payload", "integrity check failed"}, "--verify", "always", flip(im.Footer.PayloadSize/2), "--", "exit", "0")
	h.refused([]string{"integrity check failed"}, "--verify", "always", flip(im.Footer.TreeOffset+im.Footer.TreeSize-100), "--", "exit", "0")

	// The manifest asks for the host's network; the footer's hash of it is
	// fixed up, but the signature covers that hash.
	text := string(im.Manifest)
	evil := strings.Replace(text, `network = "none"`, `network = "host"`, 1)
	if evil == text || len(evil) != len(text) {
		t.Fatalf("manifest without network = \"none\":\n%s", text)
	}
	c := bytes.Clone(b)
	copy(c[im.Footer.ManifestOffset:], evil)
	p := filepath.Join(t.TempDir(), "evil-manifest.cimg")
	os.WriteFile(p, c, 0o644)
	p = patchFooter(t, p, func(ft []byte) { sum := sha256.Sum256([]byte(evil)); copy(ft[176:208], sum[:]) })
	h.refused([]string{"signature check failed"}, "--grant", "net=host", p, "--", "exit", "0")

	// Damaged squashfs behind a valid tree and signature: the superblock's
	// magic, its table pointers, and the metadata at the payload's end.
	for name, damage := range map[string]func([]byte){ // must fail: the magic and bytes_used
		"magic":       func(d []byte) { copy(d, "XXXX") },
		"bytes_used":  func(d []byte) { binary.LittleEndian.PutUint64(d[40:], 1<<62) },
		"inode table": func(d []byte) { binary.LittleEndian.PutUint64(d[64:], binary.LittleEndian.Uint64(d[40:])-3) },
		"metadata": func(d []byte) {
			end := int(binary.LittleEndian.Uint64(d[40:]))
			for i := max(end-8192, 96); i < end; i += 7 {
				d[i] ^= 0xa5
			}
		},
	} {
		t.Run(name, func(t *testing.T) {
			h := h.in(t)
			forged := h.forge(img, damage, nil)
			h.guarded(func(r result) {
				t.Helper()
				mustFail := name == "magic" || name == "bytes_used"
				if r.code == 0 && mustFail || notPanic(r.stderr) != nil || r.code == 125 && !strings.HasPrefix(r.stderr, "cimg-run: ") {
					t.Errorf("exit %d, stdout %.200q, stderr %.1000q; want a clean failure", r.code, r.stdout, r.stderr)
				}
				t.Logf("exit %d: %s", r.code, strings.TrimSpace(r.stderr))
			}, "--verify", "always", forged, "--", "exit", "0")
		})
	}
}
