package main

import (
	"encoding/json"
	"strconv"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"cimg.dev/cimg/internal/vmtest"
)

// mknodImage is a probe image whose app runs as root and asks to keep
// CAP_MKNOD (which the operator grants with --grant cap=MKNOD).
func mknodImage(t *testing.T) string {
	return probeImage(t, "[app]\ncommand = [\"/usr/bin/probe\"]\n[security]\ncapabilities = [\"CAP_MKNOD\"]\n")
}

// mknodWant is the probe's "mknod" line when the device cgroup refuses
// the node (which so never exists) and lets /dev/null through.
const mknodWant = "mknod=operation not permitted open=no such file or directory null=ok"

// TestMknodHostDiskDeniedByDeviceCgroup: an app that keeps CAP_MKNOD
// cannot make, in its writable /dev, a node for the host's root disk —
// the device cgroup's allow-list refuses it — while /dev/null works.
// Without the allow-list the node was made and opened (the disk's data
// readable from inside).
func TestMknodHostDiskDeniedByDeviceCgroup(t *testing.T) {
	img := mknodImage(t)
	state := stateDir(t)
	// The capability is there: the refusal is the cgroup's.
	res := runImage(t, cimgRunCmd(state, "--grant", "cap=MKNOD", img))
	var r probeReport
	if err := json.Unmarshal([]byte(res.stdout), &r); err != nil || res.code != 0 {
		t.Fatalf("probe report: %v, exit %d\n%s%s", err, res.code, res.stdout, res.stderr)
	}
	if eff, _ := strconv.ParseUint(r.Status["CapEff"], 16, 64); eff&(1<<unix.CAP_MKNOD) == 0 {
		t.Fatalf("the app lacks CAP_MKNOD (CapEff %s): the test would prove nothing", r.Status["CapEff"])
	}
	// The host's root disk (a loop device where / is on no block device).
	var st unix.Stat_t
	if err := unix.Stat("/", &st); err != nil {
		t.Fatal(err)
	}
	major, minor := unix.Major(st.Dev), unix.Minor(st.Dev)
	if major == 0 {
		major, minor = 7, 0
	}
	res = runImage(t, cimgRunCmd(state, "--grant", "cap=MKNOD", img, "--", "mknod", "/dev/hostdisk",
		strconv.Itoa(int(major)), strconv.Itoa(int(minor))))
	if res.code != 0 || strings.TrimSpace(res.stdout) != mknodWant {
		t.Errorf("mknod of the root disk %d:%d: exit %d, %q%s; want %q", major, minor, res.code, res.stdout, res.stderr, mknodWant)
	}
	if strings.Contains(res.stderr, "device allow-list") {
		t.Errorf("warning on a host with the devices controller: %s", res.stderr)
	}
}

// TestMknodDeniedByDeviceFilterInVM: the same on cgroup v2, where the
// allow-list is a BPF program attached to the app's cgroup (the VM has
// no disk: the node is loop0's, 7:0, whose module is loaded).
func TestMknodDeniedByDeviceFilterInVM(t *testing.T) {
	img := mknodImage(t)
	out := vmtest.Run(t, map[string]string{"/cimg-run": cimgRun, "/probe.cimg": img}, `
/cimg-run --grant cap=MKNOD /probe.cimg -- mknod /dev/hostdisk 7 0; echo "MKNOD-EXIT $?"
echo "CGROUPS-LEFT $(ls /sys/fs/cgroup/cimg/ | grep -c probe-)"
`)
	for _, want := range []string{mknodWant, "MKNOD-EXIT 0", "CGROUPS-LEFT 0"} {
		if !strings.Contains(out, want) {
			t.Errorf("VM output lacks %q:\n%s", want, out)
		}
	}
	if strings.Contains(out, "device allow-list") {
		t.Errorf("warning on a kernel with cgroup BPF:\n%s", out)
	}
}
