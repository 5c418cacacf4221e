package launcher

import (
	"slices"
	"strings"
	"testing"
)

// The operator's settings replace the manifest's, and those that widen
// what the app may do grant it.
func TestOverridesApply(t *testing.T) {
	m := parse(t, `[app]
command = ["/bin/app"]
[security]
capabilities = ["CAP_CHOWN", "CAP_KILL"]
[[mounts]]
type = "volume"
source = "old"
target = "/data"
`)
	var g Grants
	ov := Overrides{Env: []string{"A=1", "PATH=/x"}, Volumes: []string{"/srv/in:/data:ro", "cache:/cache"}, Memory: "64MiB",
		CPUs: "0.5", PidsLimit: "20", Network: "host", CapAdd: []string{"net_raw"}, CapDrop: []string{"KILL"},
		User: "1000:1001", Workdir: "/data", Hostname: "box", ReadOnly: "false"}
	if err := ov.apply(m, &g); err != nil {
		t.Fatal(err)
	}
	if m.App.Env["A"] != "1" || m.App.Env["PATH"] != "/x" || m.Limits.Memory != 64<<20 || m.Limits.CPU != 0.5 || m.Limits.Pids != 20 ||
		m.Namespaces.Network != "host" || m.App.User != 1000 || m.App.Group != 1001 || m.App.Workdir != "/data" || m.Hostname != "box" || m.Security.ReadonlyRoot {
		t.Errorf("manifest after overrides: %+v", m)
	}
	if !slices.Equal(m.Security.Capabilities, []string{"CAP_CHOWN", "CAP_NET_RAW"}) {
		t.Errorf("capabilities %v", m.Security.Capabilities)
	}
	if len(m.Mounts) != 2 || m.Mounts[0].Type != "bind" || m.Mounts[0].Source != "/srv/in" || !m.Mounts[0].ReadOnly || m.Mounts[1].Type != "volume" {
		t.Errorf("mounts %+v (the -v at /data replaces the image's)", m.Mounts)
	}
	// Typed by the operator: granted; what the image asked for alone is not.
	if err := g.check("app.cimg", m); err == nil || !strings.Contains(err.Error(), "cap=CHOWN") || strings.Contains(err.Error(), "NET_RAW") ||
		strings.Contains(err.Error(), "bind") || strings.Contains(err.Error(), "net=host") {
		t.Errorf("grants after overrides: %v", err)
	}
}

// Bad settings are refused with the flag's name and the manifest's rule.
func TestOverridesRefused(t *testing.T) {
	for _, c := range []struct {
		ov   Overrides
		want string
	}{
		{Overrides{Memory: "1KiB"}, "--memory (limits.memory, with the command line's settings): 1KiB is below the 4MiB"},
		{Overrides{Memory: "lots"}, "--memory: \"lots\""},
		{Overrides{CPUs: "0"}, "--cpus: \"0\""},
		{Overrides{PidsLimit: "-1"}, "--pids-limit"},
		{Overrides{Network: "bridge"}, "--network (namespaces.network"},
		{Overrides{CapAdd: []string{"fly"}}, "--cap-add: unknown capability \"CAP_FLY\""},
		{Overrides{User: "root"}, "--user: \"root\": want UID or UID:GID"},
		{Overrides{User: "4294967295"}, "--user (app.user"},
		{Overrides{Workdir: "/proc/self/cwd"}, "--workdir (app.workdir"},
		{Overrides{Hostname: "not a name"}, "--hostname (hostname"},
		{Overrides{Volumes: []string{"/a:/proc/x"}}, "--volume (mounts[0].target"},
		{Overrides{Volumes: []string{"justone"}}, "--volume: \"justone\""},
		{Overrides{Env: []string{"NOVALUE"}}, "--env: \"NOVALUE\""},
		{Overrides{Env: []string{"1BAD=x"}}, "--env (app.env.1BAD"},
		{Overrides{ReadOnly: "maybe"}, "--read-only"},
	} {
		m := parse(t, "[app]\ncommand = [\"/bin/app\"]\n")
		var g Grants
		if err := c.ov.apply(m, &g); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%+v: %v, want an error saying %q", c.ov, err, c.want)
		}
	}
}
