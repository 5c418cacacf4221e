package seccompgen

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"testing"
)

func TestPolicyAssembles(t *testing.T) {
	prog, err := Program()
	if err != nil || len(prog) < 20 {
		t.Fatalf("%d instructions, %v", len(prog), err)
	}
}

// The launcher's committed tables must be what the library makes of
// today's profile, for every arch a table exists for: the native one
// here, the ARM ones by running the generator under qemu-user.
func TestLauncherTablesCurrent(t *testing.T) {
	native, err := Source()
	if err != nil {
		t.Fatal(err)
	}
	check := func(goarch string, got []byte) {
		t.Helper()
		want, err := os.ReadFile(filepath.Join("..", "..", "launcher", "zseccomp_"+goarch+".go"))
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got, want) {
			t.Errorf("launcher/zseccomp_%s.go is stale: run make seccomp", goarch)
		}
	}
	check(runtime.GOARCH, native)
	if runtime.GOARCH != "amd64" {
		return // the cross runs below are for the amd64 CI host
	}
	for _, c := range []struct{ goarch, qemu string }{{"arm64", "qemu-aarch64-static"}, {"arm", "qemu-arm-static"}} {
		qemu, err := exec.LookPath(c.qemu)
		if err != nil {
			t.Fatalf("%s not found (apt-get install qemu-user-static; make test installs it): %v", c.qemu, err)
		}
		bin := filepath.Join(t.TempDir(), "gen-"+c.goarch)
		build := exec.Command("go", "build", "-o", bin, "./gen")
		build.Env = append(os.Environ(), "GOARCH="+c.goarch, "GOARM=7", "CGO_ENABLED=0")
		if out, err := build.CombinedOutput(); err != nil {
			t.Fatalf("build the %s generator: %v\n%s", c.goarch, err, out)
		}
		out, err := exec.Command(qemu, bin).Output()
		if err != nil {
			t.Fatalf("run the %s generator: %v", c.goarch, err)
		}
		check(c.goarch, out)
	}
}
