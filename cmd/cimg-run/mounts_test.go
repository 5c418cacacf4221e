package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"cimg.dev/cimg/internal/mounttest"
)

// TestOverlayMounts: an overlay makes a directory of the read-only image
// writable — kept in a volume across runs, or in memory for one run —
// while the image's own files show through and the image stays as built.
func TestOverlayMounts(t *testing.T) {
	state := stateDir(t)
	vol := "ovl"
	img := probeImage(t, fmt.Sprintf(`[app]
command = ["/usr/bin/probe"]
[[mounts]]
type = "overlay"
source = %q
target = "/usr/bin"
[[mounts]]
type = "overlay"
target = "/etc"
`, vol))
	built, _ := os.ReadFile(img)
	run := func(args ...string) result {
		t.Helper()
		return runImage(t, cimgRunCmd(state, append([]string{img, "--"}, args...)...))
	}
	for _, step := range []struct {
		args []string
		want string
	}{
		{[]string{"write", "/usr/bin/note", "kept"}, "wrote /usr/bin/note"},
		{[]string{"write", "/etc/note", "gone"}, "wrote /etc/note"},
		{[]string{"read", "/usr/bin/note"}, "read /usr/bin/note: 4 bytes"},     // persisted in the volume
		{[]string{"read", "/usr/bin/probe-suid"}, "read /usr/bin/probe-suid:"}, // the image shows through
		{[]string{"read", "/etc/note"}, "no such file"},                        // the in-memory layer went
	} {
		if res := run(step.args...); !strings.Contains(res.stdout, step.want) {
			t.Errorf("%v: %+v; want %q", step.args, res, step.want)
		}
	}
	if _, err := os.Stat(filepath.Join(volumeDir(state), "probe", vol, "upper/note")); err != nil {
		t.Errorf("the overlay's upper layer on the host: %v", err)
	}
	if after, _ := os.ReadFile(img); !bytes.Equal(after, built) {
		t.Error("the image file changed")
	}
}

// TestPrivateMount: the image is mounted inside the instance only; the
// host sees no new mount and no loop device survives the launch.
func TestPrivateMount(t *testing.T) {
	state := stateDir(t)
	img := probeImage(t, "[app]\ncommand = [\"/usr/bin/probe\"]\n")
	before := counts(t)
	for i := 0; i < 20; i++ {
		if res := runImage(t, cimgRunCmd(state, "--private-mount", img, "--", "exit", "4")); res.code != 4 {
			t.Fatalf("%+v", res)
		}
	}
	expectCounts(t, before, "after 20 private-mount launches")
	res := runImage(t, cimgRunCmd(state, "--private-mount", img))
	var r probeReport
	if err := json.Unmarshal([]byte(res.stdout), &r); err != nil || r.PID != 1 || r.Status["NoNewPrivs"] != "1" {
		t.Errorf("probe under --private-mount: %v %+v %s", err, r, res.stderr)
	}
}

// TestWorkdirEscapesRefused: a working directory that leads out of the
// image — through a leaked fd's /proc magic link, or a symlink in the
// image — is refused, never entered (CVE-2024-21626).
func TestWorkdirEscapesRefused(t *testing.T) {
	state := stateDir(t)
	mounttest.RequireRoot(t)
	dir := t.TempDir()
	root := filepath.Join(dir, "root")
	os.MkdirAll(filepath.Join(root, "usr/bin"), 0o755)
	pb, _ := os.ReadFile(probe)
	os.WriteFile(filepath.Join(root, "usr/bin/probe"), pb, 0o755)
	os.MkdirAll(filepath.Join(root, "etc"), 0o755)
	os.Symlink("/etc", filepath.Join(root, "wd-link")) // absolute: inside the image, /etc
	os.Symlink("../../../../..", filepath.Join(root, "usr/up"))
	build := func(workdir string) (string, string) {
		mf := filepath.Join(dir, "m.toml")
		os.WriteFile(mf, []byte("name = \"wd\"\n[app]\ncommand = [\"/usr/bin/probe\"]\nworkdir = \""+workdir+"\"\n"), 0o644)
		img := filepath.Join(dir, strings.ReplaceAll(workdir, "/", "_")+".cimg")
		out, err := exec.Command(cimgBuild, "-q", "-f", mf, "--rootfs", root, "--entrypoint", "/usr/bin/probe", "-o", img).CombinedOutput()
		if err != nil {
			return "", string(out)
		}
		return img, ""
	}
	// Caught at build time by the manifest rules.
	for _, wd := range []string{"/proc/self/fd/7", "/usr/../..", "relative"} {
		if _, out := build(wd); out == "" {
			t.Errorf("workdir %q built", wd)
		}
	}
	// Symlinks are only known at run time: the launcher checks where chdir
	// really landed.
	for _, wd := range []string{"/wd-link", "/usr/up"} {
		img, out := build(wd)
		if img == "" {
			t.Fatalf("build with workdir %s: %s", wd, out)
		}
		cmd := cimgRunCmd(state, img, "--", "exit", "0")
		for i := 0; i < 8; i++ {
			f, _ := os.Open("/")
			defer f.Close()
			cmd.ExtraFiles = append(cmd.ExtraFiles, f)
		}
		res := runImage(t, cmd)
		if res.code != 125 || !strings.Contains(res.stderr, "refused") {
			t.Errorf("workdir %s: %+v", wd, res)
		}
	}
}
