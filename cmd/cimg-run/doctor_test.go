package main

import (
	"os/exec"
	"regexp"
	"strings"
	"testing"

	"cimg.dev/cimg/internal/mounttest"
)

func TestDoctor(t *testing.T) {
	mounttest.RequireRoot(t)
	res := runImage(t, exec.Command(cimgRun, "doctor"))
	// This machine has everything required (dm-verity is optional).
	if res.code != 0 {
		t.Errorf("doctor: exit %d\n%s", res.code, res.stdout)
	}
	for _, want := range []string{"squashfs zstd", "pid namespace", "cgroup memory", "seccomp filters", "device-mapper"} {
		if !strings.Contains(res.stdout, want) {
			t.Errorf("doctor does not report %q:\n%s", want, res.stdout)
		}
	}
	// The optional calls are probed, not guessed from the version: this
	// kernel has them, and a kernel that fails them with ENOSYS has not.
	for _, sc := range []string{"clone3", "close_range"} {
		if !regexp.MustCompile(`(?m)^` + sc + ` +ok `).MatchString(res.stdout) {
			t.Errorf("doctor on this kernel: %s not ok:\n%s", sc, res.stdout)
		}
		res := runImage(t, exec.Command(faultinject, sc+"-enosys", cimgRun, "doctor"))
		if res.code != 0 || !regexp.MustCompile(`(?m)^`+sc+` +absent \(optional\) `).MatchString(res.stdout) {
			t.Errorf("doctor with %s failing ENOSYS: exit %d\n%s%s", sc, res.code, res.stdout, res.stderr)
		}
	}
	if !regexp.MustCompile(`(?m)^pidfd_open +ok `).MatchString(res.stdout) {
		t.Errorf("doctor on this kernel: pidfd_open not ok:\n%s", res.stdout)
	}
}
