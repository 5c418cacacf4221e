package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	specs "github.com/opencontainers/runtime-spec/specs-go"

	"cimg.dev/cimg/internal/vmtest"
)

// TestCgroupV2InVM runs cimg-oci on a pure cgroup v2 kernel (the VM of
// internal/vmtest, booted with cgroup_no_v1=all), which this hybrid host
// cannot show: the config's resources land in their v2 files (shares as
// weight, swap apart from memory, unified keys as given), the device
// rules become a BPF program that allows per access (a rule allowing
// writes lets a write open through and not a read), the process is in
// the container's cgroup, pause freezes it (cgroup.freeze) and resume
// thaws it, update rewrites a limit, kill --all reaches it, and delete
// leaves no cgroup. It also runs TestSignalProcessReapedLeader (this
// test binary) on the VM's kernel, 6.1, whose pidfd_open is the one that
// says EINVAL for a reaped process.
func TestCgroupV2InVM(t *testing.T) {
	limit, swap, shares, quota, period := int64(64<<20), int64(64<<20), uint64(1024), int64(50000), uint64(100000)
	major, minor := int64(1), int64(11)
	b := bundle(t, func(s *specs.Spec) {
		s.Linux.Resources = &specs.LinuxResources{
			Memory:  &specs.LinuxMemory{Limit: &limit, Swap: &swap},
			Pids:    &specs.LinuxPids{Limit: 32},
			CPU:     &specs.LinuxCPU{Shares: &shares, Quota: &quota, Period: &period},
			Unified: map[string]string{"memory.high": "61440000"},
			Devices: []specs.LinuxDeviceCgroup{{Allow: false, Access: "rwm"},
				{Allow: true, Type: "c", Major: &major, Minor: &minor, Access: "w"}},
		}
		s.Linux.Devices = []specs.LinuxDevice{{Path: "/dev/kmsg-test", Type: "c", Major: major, Minor: minor}}
		s.Process.Args = []string{"/bin/app", "write", "/dev/kmsg-test", "cimg-oci v2 device test\n"}
	})
	files := map[string]string{"/cimg-oci": cimgOCI, "/b/config.json": filepath.Join(b, "config.json"),
		"/b/rootfs/bin/app": filepath.Join(b, "rootfs/bin/app"), "/oci.test": testBinary(t)}
	out := vmtest.Run(t, files, `
O="/cimg-oci --root /run/oci"
$O create --bundle /b c1; echo "CREATE-EXIT $?"
d=/sys/fs/cgroup/cimg-oci/c1
for f in memory.max memory.swap.max memory.high pids.max cpu.weight cpu.max; do echo "V2 $f=$(cat $d/$f)"; done
echo "PROCS $(cat $d/cgroup.procs | wc -l)"
$O start c1 > /tmp/c1.out; echo "START-EXIT $?"
i=0; until $O state c1 2>/dev/null | grep -q stopped; do i=$((i+1)); [ $i -gt 100 ] && break; sleep 0.1; done
cat /tmp/c1.out
$O delete c1; echo "DELETE-EXIT $?"
sed -i 's#"write","/dev/kmsg-test","cimg-oci v2 device test\\n"#"show","/dev/kmsg-test","/proc/self/cgroup"#' /b/config.json
$O run --bundle /b c2; echo "RUN-EXIT $?"
sed -i 's#"show","/dev/kmsg-test","/proc/self/cgroup"#"sleep"#' /b/config.json
$O create --bundle /b c3 && $O start c3
$O pause c3; echo "PAUSE-EXIT $?"; echo "EVENTS $(grep frozen /sys/fs/cgroup/cimg-oci/c3/cgroup.events)"
$O state c3 | grep -o '"status": *"[a-z]*"'
$O update --memory 33554432 c3; echo "UPDATE $(cat /sys/fs/cgroup/cimg-oci/c3/memory.max)"
$O resume c3; echo "RESUME-EXIT $?"; echo "EVENTS $(grep frozen /sys/fs/cgroup/cimg-oci/c3/cgroup.events)"
$O kill --all c3 KILL; echo "KILL-EXIT $?"
i=0; until $O state c3 2>/dev/null | grep -q stopped; do i=$((i+1)); [ $i -gt 100 ] && break; sleep 0.1; done
$O state c3 | grep -o '"status": *"[a-z]*"'
$O delete c3; echo "DELETE3-EXIT $?"
echo "LEFT $(find /sys/fs/cgroup/cimg-oci -mindepth 1 -type d | wc -l)"
`+inVMEnv+`=1 /oci.test -test.run '^TestSignalProcessReapedLeader$' -test.v
`)
	for _, want := range []string{"CREATE-EXIT 0", "V2 memory.max=67108864", "V2 memory.swap.max=0", "V2 memory.high=61440000",
		"V2 pids.max=32", "V2 cpu.weight=39", "V2 cpu.max=50000 100000", "PROCS 1", "START-EXIT 0", "wrote /dev/kmsg-test",
		"DELETE-EXIT 0", "/dev/kmsg-test=error: open /dev/kmsg-test: operation not permitted", "/proc/self/cgroup=0::/", "RUN-EXIT 0",
		"PAUSE-EXIT 0", "EVENTS frozen 1", `"paused"`, "UPDATE 33554432", "RESUME-EXIT 0", "EVENTS frozen 0",
		"KILL-EXIT 0", `"stopped"`, "DELETE3-EXIT 0", "LEFT 0",
		"--- PASS: TestSignalProcessReapedLeader"} {
		if !strings.Contains(out, want) {
			t.Errorf("VM output lacks %q:\n%s", want, out)
		}
	}
}

// inVMEnv tells this test binary that it runs inside the VM.
const inVMEnv = "CIMG_OCI_TEST_IN_VM"

// testBinary is this test binary, which must be static to run in the
// VM's initramfs.
func testBinary(t *testing.T) string {
	if !vmtest.Static(os.Args[0]) {
		t.Fatalf("%s is not a static program and cannot run in the VM: run the tests with CGO_ENABLED=0 (make test does)", os.Args[0])
	}
	return os.Args[0]
}
