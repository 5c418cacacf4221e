package launcher

// Table tests of the launch plan: what newPlan makes of a manifest and
// grants (mounts with their flags as words, /proc's masked and read-only
// paths among them), and the child's raw plan (capability masks, the
// bounding-set drop list, clone flags). No root needed.

import (
	"os"
	"slices"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"cimg.dev/cimg/manifest"
)

func parse(t *testing.T, body string) *manifest.Manifest {
	t.Helper()
	m, err := manifest.Parse([]byte("name = \"app\"\narch = \"amd64\"\n"+body), "t.toml")
	if err != nil {
		t.Fatal(err)
	}
	return m
}

func plan(t *testing.T, body string, args ...string) *Plan {
	t.Helper()
	o := &Options{Args: args, StateDir: "/run/cimg", VolumeDir: "/var/lib/cimg/volumes"}
	p, err := newPlan(parse(t, body), o)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func words(ms []MountSpec) string {
	var out []string
	for _, m := range ms {
		out = append(out, m.String())
	}
	return strings.Join(out, "\n")
}

func TestPlanFromManifest(t *testing.T) {
	p := plan(t, `[app]
command = ["/bin/app", "-v"]
args = ["default"]
user = 7
[app.env]
PATH = "/opt/bin"
[limits.rlimits]
nofile = 100
[security]
capabilities = ["net_raw", "CAP_CHOWN"]
`, "run", "args")
	if strings.Join(p.Argv, " ") != "/bin/app -v run args" {
		t.Errorf("argv %q", p.Argv)
	}
	env := strings.Join(p.Env, " ")
	if !strings.Contains(env, "PATH=/opt/bin") || !strings.Contains(env, "HOME=/") {
		t.Errorf("env %q: the manifest's PATH must win, HOME defaults", env)
	}
	if !slices.Equal(p.Keep, []int{0, 13}) {
		t.Errorf("caps %v, want [0 13]", p.Keep)
	}
	if len(p.Rlimits) != 1 || p.Rlimits[0].Resource != unix.RLIMIT_NOFILE || p.Rlimits[0].Soft != 100 {
		t.Errorf("rlimits %+v", p.Rlimits)
	}
	if p.UID != 7 || p.Hostname != "app" || !p.NoNewPrivs || p.Seccomp != "default" || !p.NewPID {
		t.Errorf("plan %+v", p)
	}
	if want := uintptr(unix.CLONE_NEWNS | unix.CLONE_NEWNET | unix.CLONE_NEWIPC | unix.CLONE_NEWUTS); p.Unshare != want {
		t.Errorf("unshare %#x, want %#x", p.Unshare, want)
	}
}

// The default mounts, in order, with every flag: the image read-only, and
// nothing writable that allows devices or setuid; /dev's nodes bound
// before /dev turns nodev.
func TestMountPlanDefaults(t *testing.T) {
	p := plan(t, `[app]
command = ["/bin/app"]
`)
	want := `/ image ro,nosuid,nodev recursive
/dev tmpfs rw,nosuid,noexec mode=755,size=65536
/dev dev-nodes rw
/dev/pts devpts rw,nosuid,noexec newinstance,ptmxmode=0666,mode=0620
/dev/shm tmpfs rw,nosuid,nodev,noexec mode=1777,size=67108864
/dev remount rw,nosuid,nodev,noexec mode=755,size=65536
/tmp tmpfs rw,nosuid,nodev mode=1777,size=67108864
/run tmpfs rw,nosuid,nodev mode=1777,size=16777216`
	if got := words(p.Mounts); got != want {
		t.Errorf("mounts:\n%s\nwant:\n%s", got, want)
	}
}

// /proc as runc and crun set it up, and then some: what reaches the host
// kernel is read-only (core_pattern, sysrq-trigger) or masked (kcore,
// keys, timer_list, ...).
func TestMountPlanProcMaskedAndReadOnly(t *testing.T) {
	p := plan(t, `[app]
command = ["/bin/app"]
`)
	want := `/proc proc rw,nosuid,nodev,noexec
/proc/bus read-only ro,nosuid,nodev,noexec recursive
/proc/fs read-only ro,nosuid,nodev,noexec recursive
/proc/irq read-only ro,nosuid,nodev,noexec recursive
/proc/sys read-only ro,nosuid,nodev,noexec recursive
/proc/sysrq-trigger read-only ro,nosuid,nodev,noexec recursive
/proc/kcore mask-file ro from /dev/null
/proc/keys mask-file ro from /dev/null
/proc/latency_stats mask-file ro from /dev/null
/proc/timer_list mask-file ro from /dev/null
/proc/timer_stats mask-file ro from /dev/null
/proc/sched_debug mask-file ro from /dev/null
/proc/kmsg mask-file ro from /dev/null
/proc/kallsyms mask-file ro from /dev/null
/proc/modules mask-file ro from /dev/null
/proc/acpi mask-dir ro,nosuid,nodev,noexec size=0,nr_inodes=1
/proc/asound mask-dir ro,nosuid,nodev,noexec size=0,nr_inodes=1
/proc/scsi mask-dir ro,nosuid,nodev,noexec size=0,nr_inodes=1
/proc/driver mask-dir ro,nosuid,nodev,noexec size=0,nr_inodes=1`
	if got := words(p.Proc); got != want {
		t.Errorf("proc mounts:\n%s\nwant:\n%s", got, want)
	}
	// Every path runc masks or makes read-only by default is covered.
	runc := []string{"/proc/acpi", "/proc/asound", "/proc/kcore", "/proc/keys", "/proc/latency_stats", "/proc/timer_list",
		"/proc/timer_stats", "/proc/sched_debug", "/proc/scsi", "/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger"}
	for _, r := range runc {
		if !slices.ContainsFunc(p.Proc, func(m MountSpec) bool { return m.Target == r }) {
			t.Errorf("%s is neither masked nor read-only", r)
		}
	}
	raw, err := rawMounts(p.Proc)
	if err != nil || len(raw) != len(p.Proc)+len(procReadOnly) {
		t.Errorf("raw mounts: %d, %v (want a bind and a remount per read-only path)", len(raw), err)
	}
}

// Volumes, binds and overlays: every one nosuid,nodev, recursive where it
// can hold submounts; read-only binds read-only all the way down.
func TestMountPlanAppMounts(t *testing.T) {
	p := plan(t, `[app]
command = ["/bin/app"]
user = 1000
group = 1000
[security]
readonly_root = false
[[mounts]]
type = "volume"
source = "data"
target = "/data"
[[mounts]]
type = "bind"
source = "/"
target = "/host"
readonly = true
[[mounts]]
type = "overlay"
source = "layer"
target = "/etc"
[[mounts]]
type = "overlay"
target = "/var"
[[mounts]]
type = "tmpfs"
target = "/cache"
size = "1MiB"
mode = "0700"
`)
	var got []string
	for _, m := range p.Mounts {
		if m.Target != "/dev" && !strings.HasPrefix(m.Target, "/dev/") && m.Target != "/tmp" && m.Target != "/run" {
			got = append(got, m.String())
		}
	}
	want := `/ image ro,nosuid,nodev recursive
/ overlay rw,nosuid,nodev size=67108864
/data bind rw,nosuid,nodev from volume app/data recursive
/host bind ro,nosuid,nodev from / recursive
/etc overlay rw,nosuid,nodev from volume app/layer
/var overlay rw,nosuid,nodev size=67108864
/cache tmpfs rw,nosuid,nodev mode=0700,size=1048576`
	if strings.Join(got, "\n") != want {
		t.Errorf("mounts:\n%s\nwant:\n%s", strings.Join(got, "\n"), want)
	}
	wantVols := []Volume{{Rel: "app/data", UID: 1000, GID: 1000}, {Rel: "app/layer", Layer: true}}
	if !slices.Equal(p.Volumes, wantVols) {
		t.Errorf("volumes %+v, want %+v", p.Volumes, wantVols)
	}
}

// Host namespaces: nothing unshared that the manifest shares (the grant
// is checked before, in Run); ipc = host shares /dev/shm too.
func TestPlanHostNamespaces(t *testing.T) {
	p := plan(t, `[app]
command = ["/bin/app"]
[namespaces]
network = "host"
pid = "host"
ipc = "host"
uts = "host"
`)
	if p.Unshare != unix.CLONE_NEWNS || p.NewPID || p.Hostname != "" {
		t.Errorf("unshare %#x, new pid %v, hostname %q: want only a mount namespace", p.Unshare, p.NewPID, p.Hostname)
	}
	if !strings.Contains(words(p.Mounts), "/dev/shm bind rw,nosuid,nodev,noexec from /dev/shm") {
		t.Errorf("ipc = host without the host's /dev/shm:\n%s", words(p.Mounts))
	}
}

// namespaces.user: the app's ids map to the cimg user's subordinate range
// (or the default), and its volumes are owned by the mapped ids.
func TestPlanUserNamespace(t *testing.T) {
	dir := t.TempDir()
	sub := [2]string{dir + "/subuid", dir + "/subgid"}
	os.WriteFile(sub[0], []byte("alice:100000:65536\ncimg:300000:65536\n"), 0o644)
	os.WriteFile(sub[1], []byte("cimg:400000:70000\n"), 0o644)
	m := parse(t, "[app]\ncommand = [\"/bin/app\"]\nuser = 7\ngroup = 8\n[namespaces]\nuser = true\n[[mounts]]\ntype = \"volume\"\nsource = \"d\"\ntarget = \"/d\"\n")
	p, err := newPlan(m, &Options{StateDir: "/s", VolumeDir: "/v", SubIDFiles: sub})
	if err != nil {
		t.Fatal(err)
	}
	if u := p.UserNS; u.UIDBase != 300000 || u.GIDBase != 400000 || u.Count != 65536 || u.UIDs != nil || u.GIDs != nil {
		t.Errorf("map %+v", *p.UserNS)
	}
	if v := p.Volumes[0]; v.UID != 300007 || v.GID != 400008 {
		t.Errorf("volume owner %d:%d, want the mapped 300007:400008", v.UID, v.GID)
	}
	// Without a cimg range: the default, far above useradd's.
	p, err = newPlan(m, &Options{StateDir: "/s", VolumeDir: "/v", SubIDFiles: [2]string{dir + "/none", dir + "/none"}})
	if err != nil || p.UserNS.UIDBase != defaultIDBase {
		t.Errorf("default map: %+v, %v", p.UserNS, err)
	}
	os.WriteFile(sub[0], []byte("cimg:300000:100\n"), 0o644)
	if _, err := newPlan(m, &Options{StateDir: "/s", VolumeDir: "/v", SubIDFiles: sub}); err == nil || !strings.Contains(err.Error(), "needs 65536") {
		t.Errorf("a short range: %v", err)
	}
	fp, err := newForkPlan(p)
	if err != nil || !fp.userNS {
		t.Errorf("fork plan without the user namespace: %v", err)
	}
}

// What the plan refuses rather than ignore.
func TestPlanRefuses(t *testing.T) {
	for _, c := range []struct{ name, body, want string }{
		{"proc self exe (CVE-2019-5736)", "[app]\ncommand = [\"/proc/self/exe\"]\n", "CVE-2019-5736"},
		{"a /dev command", "[app]\ncommand = [\"/dev/shm/x\"]\n", "under /dev"},
		{"user outside the user namespace's ids", "[app]\ncommand = [\"/bin/app\"]\nuser = 70000\n[namespaces]\nuser = true\n", "outside the 65536 ids"},
		{"health check", "[app]\ncommand = [\"/bin/app\"]\n[health]\ncommand = [\"/bin/true\"]\n", "--no-health"},
	} {
		_, err := newPlan(parse(t, c.body), &Options{StateDir: "/s", VolumeDir: "/v"})
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: %v, want an error saying %q", c.name, err, c.want)
		}
	}
}

// The child's raw plan: capability sets hold exactly the kept ones, the
// bounding set loses every other one up to lastCap, and the pid namespace
// is the child's.
func TestForkPlan(t *testing.T) {
	for _, c := range []struct {
		name       string
		body       string
		keep       []uintptr
		mask0      uint32
		mask1      uint32
		cloneFlags uintptr
	}{
		{"no capabilities", "", nil, 0, 0, unix.CLONE_NEWPID},
		{"net_bind_service", "[security]\ncapabilities = [\"net_bind_service\"]\n", []uintptr{10}, 1 << 10, 0, unix.CLONE_NEWPID},
		{"above 31: syslog, bpf", "[security]\ncapabilities = [\"syslog\", \"bpf\"]\n", []uintptr{34, 39}, 0, 1<<2 | 1<<7, unix.CLONE_NEWPID},
		{"host pid", "[namespaces]\npid = \"host\"\n", nil, 0, 0, 0},
	} {
		t.Run(c.name, func(t *testing.T) {
			fp, err := newForkPlan(plan(t, "[app]\ncommand = [\"/bin/app\"]\n"+c.body))
			if err != nil {
				t.Fatal(err)
			}
			if !slices.Equal(fp.keep, c.keep) {
				t.Errorf("ambient %v, want %v", fp.keep, c.keep)
			}
			for i, want := range []uint32{c.mask0, c.mask1} {
				d := fp.capData[i]
				if d.Effective != want || d.Permitted != want || d.Inheritable != want {
					t.Errorf("capset word %d: %+v, want %#x in each set", i, d, want)
				}
			}
			if len(fp.drop)+len(fp.keep) != lastCap+1 {
				t.Errorf("drop %d + keep %d != %d capabilities", len(fp.drop), len(fp.keep), lastCap+1)
			}
			for _, k := range c.keep {
				if slices.Contains(fp.drop, k) {
					t.Errorf("kept capability %d is dropped from the bounding set", k)
				}
			}
			if fp.cloneFlags != c.cloneFlags || !fp.noNewPrivs || fp.filter == nil {
				t.Errorf("clone flags %#x (want %#x), no_new_privs %v, filter %v", fp.cloneFlags, c.cloneFlags, fp.noNewPrivs, fp.filter != nil)
			}
		})
	}
}

func TestSeccompProgram(t *testing.T) {
	p, err := seccompProgram("default")
	if err != nil || p == nil || int(p.Len) != len(defaultFilter) || p.Len < 20 {
		t.Fatalf("default: %+v, %v", p, err)
	}
	if p, err := seccompProgram("unconfined"); p != nil || err != nil {
		t.Fatalf("unconfined: %+v, %v", p, err)
	}
}

func TestKernelAtLeast(t *testing.T) {
	for _, c := range []struct {
		rel  string
		want bool
	}{{"5.8.0", true}, {"6.1.0-13-amd64", true}, {"5.7.19", false}, {"4.19.0", false}} {
		if got := kernelAtLeast(c.rel, 5, 8); got != c.want {
			t.Errorf("%s: %v", c.rel, got)
		}
	}
}

// TestIDMapRanges: an OCI config's several ranges map each id by the
// range that holds it; an id no range holds is the kernel's overflow id;
// the map files get one line a range.
func TestIDMapRanges(t *testing.T) {
	m := &IDMap{UIDs: []IDRange{{0, 100000, 1000}, {1000, 1000, 1}, {1001, 101001, 64535}}, GIDs: []IDRange{{0, 200000, 65536}}}
	for _, c := range []struct{ in, want uint32 }{{0, 100000}, {999, 100999}, {1000, 1000}, {1001, 101001}, {65535, 165535}, {70000, overflowID}} {
		if got := m.HostUID(c.in); got != c.want {
			t.Errorf("HostUID(%d) = %d, want %d", c.in, got, c.want)
		}
	}
	if got := m.HostGID(5); got != 200005 {
		t.Errorf("HostGID(5) = %d", got)
	}
	if got := m.lines(m.UIDs, m.UIDBase); got != "0 100000 1000\n1000 1000 1\n1001 101001 64535\n" {
		t.Errorf("uid_map text %q", got)
	}
	single := &IDMap{UIDBase: 300000, GIDBase: 400000, Count: 65536}
	if got := single.lines(single.UIDs, single.UIDBase); got != "0 300000 65536\n" || single.HostUID(7) != 300007 {
		t.Errorf("single range: %q, HostUID(7) %d", got, single.HostUID(7))
	}
}
