package main

import (
	"strings"
	"syscall"
	"testing"
)

// TestSeccompDefaultProfile: even with CAP_SYS_ADMIN kept, the default
// profile refuses unshare and keyctl; "unconfined" lets them through.
func TestSeccompDefaultProfile(t *testing.T) {
	state := stateDir(t)
	for _, tc := range []struct{ profile, nnp, want string }{
		{"default", "true", "unshare=operation not permitted keyctl=operation not permitted"},
		{"default", "false", "unshare=operation not permitted keyctl=operation not permitted"},
		{"unconfined", "true", "unshare=ok"},
	} {
		img := probeImage(t, "[app]\ncommand = [\"/usr/bin/probe\"]\n[security]\ncapabilities = [\"CAP_SYS_ADMIN\"]\nseccomp = \""+tc.profile+"\"\nno_new_privileges = "+tc.nnp+"\n")
		res := runImage(t, cimgRunCmd(state, "--grant", "cap=SYS_ADMIN", "--grant", "new-privileges", "--grant", "seccomp=unconfined", img, "--", "syscalls"))
		if res.code != 0 || !strings.HasPrefix(res.stdout, tc.want) {
			t.Errorf("%s (nnp %s): %q %q, want %q", tc.profile, tc.nnp, res.stdout, res.stderr, tc.want)
		}
	}
}

// TestInitFromSealedMemfd: with --init the app is not PID 1; PID 1 runs
// from a sealed memfd whose executable cannot be written from inside
// (CVE-2019-5736), and the exit status still comes through.
func TestInitFromSealedMemfd(t *testing.T) {
	state := stateDir(t)
	img := probeImage(t, "[app]\ncommand = [\"/usr/bin/probe\"]\n[security]\ncapabilities = [\"CAP_SYS_PTRACE\", \"CAP_DAC_OVERRIDE\"]\n")
	grants := []string{"--grant", "cap=SYS_PTRACE", "--grant", "cap=DAC_OVERRIDE", "--init", img}
	res := runImage(t, cimgRunCmd(state, append(grants, "--", "pid1")...))
	if res.code != 0 || strings.HasPrefix(res.stdout, "pid=1 ") || !strings.Contains(res.stdout, " exe=/memfd:cimg-init") || strings.Contains(res.stdout, "write=writable") {
		t.Errorf("exit %d\n%s%s", res.code, res.stdout, res.stderr)
	}
	if res := runImage(t, cimgRunCmd(state, append(grants, "--", "exit", "9")...)); res.code != 9 {
		t.Errorf("exit status through the init: %+v", res)
	}
	// SIGTERM reaches the app through the init.
	cmd, out := startSleeping(t, state, grants...)
	cmd.Process.Signal(syscall.SIGTERM)
	cmd.Wait()
	if !strings.Contains(out.String(), "got terminated") {
		t.Errorf("SIGTERM not forwarded by the init: %q", out.String())
	}
}
