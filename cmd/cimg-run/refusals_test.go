package main

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"cimg.dev/cimg/internal/mounttest"
)

func TestRefusals(t *testing.T) {
	state := stateDir(t)
	dir := t.TempDir()
	key := filepath.Join(dir, "k")
	if out, err := exec.Command(cimgBuild, "keygen", key).CombinedOutput(); err != nil {
		t.Fatalf("%v %s", err, out)
	}
	img := probeImage(t, "[app]\ncommand = [\"/usr/bin/probe\"]\n")
	signed := probeImage(t, "[app]\ncommand = [\"/usr/bin/probe\"]\n", "--sign", key+".key")
	other := filepath.Join(dir, "other")
	exec.Command(cimgBuild, "keygen", other).Run()
	tampered := filepath.Join(dir, "tampered.cimg")
	b, _ := os.ReadFile(img)
	b[100000] ^= 1
	os.WriteFile(tampered, b, 0o644)

	for _, tc := range []struct {
		name string
		args []string
		want string
	}{
		{"unsigned with a key", []string{"--key", key + ".pub", img}, "unsigned"},
		{"signed by another key", []string{"--key", other + ".pub", signed}, "untrusted"},
		{"tampered payload", []string{"--verify", "always", tampered}, "payload"},
		{"not an image", []string{"/etc/passwd"}, "not a cimg image"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			res := runImage(t, cimgRunCmd(state, tc.args...))
			if res.code != 125 || !strings.Contains(res.stderr, tc.want) || strings.Count(strings.TrimSpace(res.stderr), "\n") > 1 {
				t.Errorf("exit %d, stderr %q; want 125 and %q", res.code, res.stderr, tc.want)
			}
		})
	}
	if res := runImage(t, cimgRunCmd(state, "--key", key+".pub", signed, "--", "exit", "0")); res.code != 0 {
		t.Errorf("signed image with its key: %+v", res)
	}
	nobody := cimgRunCmd(state, img)
	nobody.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65534, Gid: 65534}}
	if res := runImage(t, nobody); res.code != 125 || !strings.Contains(res.stderr, "must run as root") {
		t.Errorf("as nobody: %+v", res)
	}
}

// TestForeignArch: an arm64 image runs on this amd64 host under
// qemu-user-static's binfmt_misc handler (registered with the F flag, so
// the emulator works inside the container), with a warning, as docker and
// podman run such images; where no such handler is registered (binfmt_misc
// unmounted in a private mount namespace) it is refused with advice.
func TestForeignArch(t *testing.T) {
	state := stateDir(t)
	mounttest.EnableBinfmt(t)
	dir := t.TempDir()
	bin := filepath.Join(dir, "probe-arm64")
	build := exec.Command("go", "build", "-o", bin, "../../testdata/probe")
	build.Env = append(os.Environ(), "CGO_ENABLED=0", "GOARCH=arm64")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("build the arm64 probe: %v\n%s", err, out)
	}
	root := filepath.Join(dir, "root")
	os.MkdirAll(filepath.Join(root, "usr/bin"), 0o755)
	b, _ := os.ReadFile(bin)
	os.WriteFile(filepath.Join(root, "usr/bin/probe"), b, 0o755)
	img := filepath.Join(dir, "arm.cimg")
	if out, err := exec.Command(cimgBuild, "-q", "--rootfs", root, "--entrypoint", "/usr/bin/probe", "--arch", "arm64", "-o", img).CombinedOutput(); err != nil {
		t.Fatalf("%v %s", err, out)
	}
	res := runImage(t, cimgRunCmd(state, img, "--", "exit", "7"))
	if res.code != 7 || !strings.Contains(res.stderr, "built for arm64, this machine is amd64: running it under the emulator") {
		t.Errorf("with the binfmt handler: %+v; want exit 7 and the emulator warning", res)
	}
	argv := append([]string{"-m", "sh", "-c", `umount /proc/sys/fs/binfmt_misc && exec "$@"`, "sh"}, runArgs(state, img)...)
	res = runImage(t, exec.Command("unshare", argv...))
	if res.code != 125 || !strings.Contains(res.stderr, "built for arm64, this machine is amd64; to run it emulated, register") {
		t.Errorf("without a handler: %+v", res)
	}
}
