package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"cimg.dev/cimg/internal/mounttest"
	"cimg.dev/cimg/internal/vmtest"
)

// TestCgroupV2InVM runs the launcher on a second kernel (Debian 6.1)
// booted with cgroup_no_v1=all: real cgroup v2 limits, CLONE_INTO_CGROUP,
// the OOM report and cleanup, which this hybrid host cannot show.
func TestCgroupV2InVM(t *testing.T) {
	img := probeImage(t, "[app]\ncommand = [\"/usr/bin/probe\"]\n[limits]\nmemory = \"48MiB\"\npids = 16\ncpu = 0.5\n")
	out := vmtest.Run(t, map[string]string{"/cimg-run": cimgRun, "/probe.cimg": img, "/faultinject": faultinject}, `
/faultinject clone3-enosys /cimg-run /probe.cimg -- hog; echo "HOG-NOCLONE3-EXIT $?"
/cimg-run /probe.cimg > /tmp/probe.json; echo "PROBE-EXIT $?"; cat /tmp/probe.json
/cimg-run /probe.cimg -- sleep > /tmp/sleep.out &
pid=$!
# Ready, and handed to the slim waiter: a SIGUSR1 during that exec can be
# lost (README), and a loaded emulated VM may take seconds to get there.
i=0; until grep -q ready /tmp/sleep.out && grep -q __cimg_wait__ /proc/$pid/cmdline; do i=$((i+1)); [ $i -gt 600 ] && break; sleep 0.1; done
for f in memory.max pids.max cpu.max; do echo "LIMIT $f=$(cat /sys/fs/cgroup/cimg/probe-*/$f)"; done
(sleep 30; kill -KILL $pid) 2>/dev/null &
kill -USR1 $pid; wait $pid; echo "SLEEP-EXIT $?"
/cimg-run /probe.cimg -- hog; echo "HOG-EXIT $?"
# exec joins the instance's cgroup: by clone3, and without it (the vfork
# child writes itself into cgroup.procs).
/cimg-run run -d --name x /probe.cimg -- sleep >/dev/null # the VM's own /run/cimg
/cimg-run exec x -- /usr/bin/probe show /proc/self/cgroup; echo "EXEC-EXIT $?"
/faultinject clone3-enosys /cimg-run exec x -- /usr/bin/probe show /proc/self/cgroup; echo "EXEC-NOCLONE3-EXIT $?"
/cimg-run stop -t 0 x >/dev/null; /cimg-run rm x
echo "LEFT $(ls /sys/fs/cgroup/cimg/ | grep -c probe-)"
`)
	if n := strings.Count(out, "/proc/self/cgroup=0::/\n"); n != 2 {
		t.Errorf("exec'd processes in the instance's cgroup: %d of 2:\n%s", n, out)
	}
	for _, want := range []string{"PROBE-EXIT 0", "LIMIT memory.max=50331648", "LIMIT pids.max=16", "LIMIT cpu.max=50000 100000",
		"SLEEP-EXIT 0", "HOG-EXIT 137", "killed by the OOM killer", "LEFT 0", "EXEC-EXIT 0", "EXEC-NOCLONE3-EXIT 0",
		"HOG-NOCLONE3-EXIT 137"} { // without clone3 (Linux < 5.3): joined by cgroup.procs, limits hold
		if !strings.Contains(out, want) {
			t.Errorf("VM output lacks %q:\n%s", want, out)
		}
	}
	var r probeReport
	if i := strings.Index(out, "{"); i >= 0 {
		json.NewDecoder(strings.NewReader(out[i:])).Decode(&r)
	}
	if r.PID != 1 || r.Cgroup != "0::/" || r.Status["Seccomp"] != "2" {
		t.Errorf("probe in the VM: pid %d, cgroup %q, seccomp %q", r.PID, r.Cgroup, r.Status["Seccomp"])
	}
}

// TestLauncherInVM runs the launcher's isolation, init, private-mount,
// overlay and seccomp cases on the second kernel too, and checks that a
// run leaves no mount, loop device or cgroup behind there.
func TestLauncherInVM(t *testing.T) {
	img := probeImage(t, `hostname = "vm-probe"
[app]
command = ["/usr/bin/probe"]
user = 1000
group = 1000
[security]
capabilities = ["CAP_NET_RAW"]
[limits]
pids = 32
`)
	ovl := probeImage(t, "[app]\ncommand = [\"/usr/bin/probe\"]\n[[mounts]]\ntype = \"overlay\"\ntarget = \"/etc\"\n")
	uns := probeImage(t, "[app]\ncommand = [\"/usr/bin/probe\"]\n[namespaces]\nuser = true\n")
	out := vmtest.Run(t, map[string]string{"/cimg-run": cimgRun, "/probe.cimg": img, "/ovl.cimg": ovl, "/uns.cimg": uns}, `
G="--grant cap=NET_RAW"
/cimg-run $G /probe.cimg -- exit 0; /cimg-run /ovl.cimg -- exit 0; /cimg-run /uns.cimg -- exit 0  # the cache mounts, meant to stay
m0=$(wc -l < /proc/self/mountinfo); l0=$(losetup -a | wc -l)
/cimg-run $G /probe.cimg > /tmp/probe.json; echo "PROBE-EXIT $?"; cat /tmp/probe.json; echo
/cimg-run $G /probe.cimg -- syscalls
/cimg-run /ovl.cimg -- write /etc/x y
/cimg-run $G --private-mount /probe.cimg -- read /usr/bin/probe
/cimg-run $G --init /probe.cimg -- pid1
/cimg-run $G /probe.cimg -- exit 7; echo "EXIT $?"
/cimg-run /uns.cimg -- show /proc/self/uid_map
echo "MOUNTS-DIFF $(( $(wc -l < /proc/self/mountinfo) - m0 )) LOOPS-DIFF $(( $(losetup -a | wc -l) - l0 ))"
echo "CGROUPS-LEFT $(ls /sys/fs/cgroup/cimg/ | grep -c probe-)"
`)
	for _, want := range []string{"PROBE-EXIT 0", "unshare=operation not permitted keyctl=operation not permitted",
		"wrote /etc/x", "read /usr/bin/probe:", "exe=/memfd:cimg-init", "EXIT 7", "/proc/self/uid_map=0 1000000000 65536", "MOUNTS-DIFF 0 LOOPS-DIFF 0", "CGROUPS-LEFT 0"} {
		if !strings.Contains(out, want) {
			t.Errorf("VM output lacks %q:\n%s", want, out)
		}
	}
	if strings.Contains(out, "write=writable") {
		t.Errorf("the init's executable was writable from inside:\n%s", out)
	}
	var r probeReport
	if i := strings.Index(out, "{"); i >= 0 {
		json.NewDecoder(strings.NewReader(out[i:])).Decode(&r)
	}
	if r.PID != 1 || fmt.Sprint(r.IDs) != "[1000 1000 1000 1000]" || r.Hostname != "vm-probe" ||
		r.Status["CapEff"] != "0000000000002000" || r.Status["CapBnd"] != "0000000000002000" || r.Status["NoNewPrivs"] != "1" {
		t.Errorf("probe in the VM: %+v", r)
	}
}

// TestMissingCgroupControllerInVM: on a cgroup v2 kernel booted with the
// memory controller disabled, a memory limit is refused with advice and
// leaves no cgroup; an image without one still runs.
func TestMissingCgroupControllerInVM(t *testing.T) {
	limited := probeImage(t, "[app]\ncommand = [\"/usr/bin/probe\"]\n[limits]\nmemory = \"32MiB\"\n")
	plain := probeImage(t, "[app]\ncommand = [\"/usr/bin/probe\"]\n")
	out := vmtest.Run(t, map[string]string{"/cimg-run": cimgRun, "/limited.cimg": limited, "/plain.cimg": plain}, `
/cimg-run /limited.cimg -- exit 0; echo "LIMITED-EXIT $?"
/cimg-run /plain.cimg -- exit 0; echo "PLAIN-EXIT $?"
echo "CGROUPS-LEFT $(ls /sys/fs/cgroup/cimg/ | grep -c probe-)"
`, "cgroup_disable=memory")
	for _, want := range []string{"cgroup v2 controller memory is not available", "LIMITED-EXIT 125", "PLAIN-EXIT 0", "CGROUPS-LEFT 0"} {
		if !strings.Contains(out, want) {
			t.Errorf("VM output lacks %q:\n%s", want, out)
		}
	}
}

// TestDMVerityInVM: where the kernel has device-mapper, the image is
// mounted through dm-verity set up from Go, so a tampered block reaches
// the app as an error — EIO from read(2), SIGBUS for a mapped page of a
// program — never as bad data; the device goes away with the mount.
func TestDMVerityInVM(t *testing.T) {
	mounttest.RequireRoot(t)
	dir := t.TempDir()
	root := filepath.Join(dir, "root")
	os.MkdirAll(filepath.Join(root, "usr/bin"), 0o755)
	os.MkdirAll(filepath.Join(root, "data"), 0o755)
	pb, _ := os.ReadFile(probe)
	os.WriteFile(filepath.Join(root, "usr/bin/probe"), pb, 0o755)
	blob := make([]byte, 1<<20)
	rand.NewChaCha8([32]byte{3}).Read(blob) // incompressible: stored verbatim
	os.WriteFile(filepath.Join(root, "data/blob"), blob, 0o644)
	img := filepath.Join(dir, "good.cimg")
	if out, err := exec.Command(cimgBuild, "-q", "--rootfs", root, "--entrypoint", "/usr/bin/probe", "-o", img).CombinedOutput(); err != nil {
		t.Fatalf("%v %s", err, out)
	}
	b, _ := os.ReadFile(img)
	at := bytes.Index(b, blob[500000:500064])
	if at < 0 {
		t.Fatal("blob not found verbatim in the image")
	}
	readBad := append([]byte(nil), b...)
	readBad[at] ^= 0x55 // a block of /data/blob
	execBad := append([]byte(nil), b...)
	execBad[at+548576+100000] ^= 0x55 // past the blob: the probe's pages
	for name, data := range map[string][]byte{"read-bad.cimg": readBad, "exec-bad.cimg": execBad} {
		os.WriteFile(filepath.Join(dir, name), data, 0o644)
	}
	out := vmtest.Run(t, map[string]string{"/cimg-run": cimgRun, "/good.cimg": img,
		"/read-bad.cimg": filepath.Join(dir, "read-bad.cimg"), "/exec-bad.cimg": filepath.Join(dir, "exec-bad.cimg")}, `
/cimg-run /read-bad.cimg -- read /data/blob; echo "READ-BAD-EXIT $?"
echo "DM-NAME $(cat /sys/block/dm-*/dm/name)"
/cimg-run gc >/dev/null; sleep 1; echo "DM-AFTER-GC $(ls /sys/block | grep -c dm-)"
/cimg-run /exec-bad.cimg -- exit 3; echo "EXEC-BAD-EXIT $?"
/cimg-run gc >/dev/null; sleep 1
/cimg-run /good.cimg -- read /data/blob; echo "GOOD-EXIT $?"
/cimg-run gc >/dev/null; sleep 1; echo "DM-END $(ls /sys/block | grep -c dm-) LOOPS $(cat /sys/block/loop*/loop/backing_file 2>/dev/null | wc -l)"
`)
	for _, want := range []string{"read /data/blob: input/output error", "READ-BAD-EXIT 1", "DM-NAME cimg-", "DM-AFTER-GC 0",
		"read /data/blob: 1048576 bytes", "GOOD-EXIT 0", "DM-END 0 LOOPS 0"} {
		if !strings.Contains(out, want) {
			t.Errorf("VM output lacks %q:\n%s", want, out)
		}
	}
	// A bad page of the program itself: SIGBUS (128+7) or, if the kernel
	// reads it through read(2) at exec, a failed exec (125).
	if !strings.Contains(out, "EXEC-BAD-EXIT 135") && !strings.Contains(out, "EXEC-BAD-EXIT 125") {
		t.Errorf("tampered program page: %s", out)
	}
}
