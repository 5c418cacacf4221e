package main

import (
	"encoding/json"
	"fmt"
	"os/exec"
	"strings"
	"testing"
)

// TestLoopDevicesExhausted: when the kernel has no loop device to give,
// cimg-run says so with advice, exits 125 and leaves nothing behind —
// both when it fills the mount cache and with --private-mount.
func TestLoopDevicesExhausted(t *testing.T) {
	state := stateDir(t)
	for _, private := range []bool{false, true} {
		img := probeImage(t, "[app]\ncommand = [\"/usr/bin/probe\"]\n") // new, so never cached
		before := counts(t)
		args := append([]string{"loop-enospc"}, runArgs(state, img, "--", "exit", "0")...)
		if private {
			args = append([]string{"loop-enospc"}, runArgs(state, "--private-mount", img, "--", "exit", "0")...)
		}
		res := runImage(t, exec.Command(faultinject, args...))
		if res.code != 125 || !strings.Contains(res.stderr, "loop devices exhausted (raise max_loop, or free some with losetup -D)") ||
			strings.Count(strings.TrimSpace(res.stderr), "\n") > 0 {
			t.Errorf("private-mount=%v: exit %d, stderr %q", private, res.code, res.stderr)
		}
		expectCounts(t, before, fmt.Sprintf("after the failed launch (private-mount=%v)", private))
	}
}

// TestLeakedFDsWithoutCloseRange: on a kernel without close_range (here:
// the call fails with ENOSYS), host fds handed to cimg-run still never
// reach the app.
func TestLeakedFDsWithoutCloseRange(t *testing.T) {
	state := stateDir(t)
	img := probeImage(t, "[app]\ncommand = [\"/usr/bin/probe\"]\n")
	cmd := exec.Command(faultinject, append([]string{"close_range-enosys"}, runArgs(state, img)...)...)
	passHostFDs(t, cmd)
	res := runImage(t, cmd)
	var r probeReport
	if err := json.Unmarshal([]byte(res.stdout), &r); err != nil || res.code != 0 {
		t.Fatalf("exit %d, %v\n%s%s", res.code, err, res.stdout, res.stderr)
	}
	expectNoHostFDs(t, r)
}
