package launcher

import (
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"cimg.dev/cimg/manifest"
)

func TestChildConfigFromManifest(t *testing.T) {
	m, err := manifest.Parse([]byte(`name = "app"
arch = "amd64"
[app]
command = ["/bin/app", "-v"]
args = ["default"]
user = 7
[app.env]
PATH = "/opt/bin"
[limits.rlimits]
nofile = 100
[security]
capabilities = ["net_raw", "CAP_CHOWN"]
[[mounts]]
type = "tmpfs"
target = "/cache"
size = "1MiB"
mode = "0700"
`), "t.toml")
	if err != nil {
		t.Fatal(err)
	}
	c, err := childConfig(m, "/run/cimg/images/x", []string{"run", "args"})
	if err != nil {
		t.Fatal(err)
	}
	if strings.Join(c.Argv, " ") != "/bin/app -v run args" {
		t.Errorf("argv %q", c.Argv)
	}
	env := strings.Join(c.Env, " ")
	if !strings.Contains(env, "PATH=/opt/bin") || !strings.Contains(env, "HOME=/") {
		t.Errorf("env %q: the manifest's PATH must win, HOME defaults", env)
	}
	if len(c.Keep) != 2 || c.Keep[0] != 13 || c.Keep[1] != 0 {
		t.Errorf("caps %v, want [13 0]", c.Keep)
	}
	if len(c.Rlimits) != 1 || c.Rlimits[0].Resource != unix.RLIMIT_NOFILE || c.Rlimits[0].Soft != 100 {
		t.Errorf("rlimits %+v", c.Rlimits)
	}
	if len(c.Mounts) != 1 || c.Mounts[0].Mode != 0o700 || c.Mounts[0].Size != 1<<20 {
		t.Errorf("mounts %+v", c.Mounts)
	}
	if c.UID != 7 || c.Hostname != "app" || !c.NetNone || !c.NoNewPrivs || c.Seccomp != "default" {
		t.Errorf("config %+v", c)
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
