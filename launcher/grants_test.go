package launcher

import (
	"strings"
	"testing"
)

// The image asks, the operator grants: every privilege that reaches the
// host is refused without its grant, and the error says which --grant
// allows it.
func TestGrantsCheck(t *testing.T) {
	const cmd = "[app]\ncommand = [\"/bin/app\"]\n"
	for _, c := range []struct {
		name, body string
		grants     []string
		missing    []string // --grant values the error must name; none: allowed
	}{
		{"defaults need nothing", "", nil, nil},
		{"bind of / (host escape)", "[[mounts]]\ntype = \"bind\"\nsource = \"/\"\ntarget = \"/host\"\n", nil, []string{"bind=/"}},
		{"read-only bind takes bind-ro", "[[mounts]]\ntype = \"bind\"\nsource = \"/srv/a\"\ntarget = \"/a\"\nreadonly = true\n", []string{"bind-ro=/srv"}, nil},
		{"bind-ro does not grant writing", "[[mounts]]\ntype = \"bind\"\nsource = \"/srv/a\"\ntarget = \"/a\"\n", []string{"bind-ro=/srv"}, []string{"bind=/srv/a"}},
		{"a granted prefix is not a string prefix", "[[mounts]]\ntype = \"bind\"\nsource = \"/srv2\"\ntarget = \"/a\"\n", []string{"bind=/srv"}, []string{"bind=/srv2"}},
		{"capabilities one by one", "[security]\ncapabilities = [\"net_admin\", \"CAP_SYS_ADMIN\"]\n", []string{"cap=net_admin"}, []string{"cap=SYS_ADMIN"}},
		{"host namespaces", "[namespaces]\nnetwork = \"host\"\npid = \"host\"\nipc = \"host\"\nuts = \"host\"\n", []string{"pid=host"}, []string{"net=host", "ipc=host", "uts=host"}},
		{"unconfined seccomp", "[security]\nseccomp = \"unconfined\"\n", nil, []string{"seccomp=unconfined"}},
		{"setuid programs", "[security]\nno_new_privileges = false\n", nil, []string{"new-privileges"}},
		{"all granted", "[security]\nno_new_privileges = false\nseccomp = \"unconfined\"\n", []string{"new-privileges", "seccomp=unconfined"}, nil},
	} {
		t.Run(c.name, func(t *testing.T) {
			var g Grants
			for _, s := range c.grants {
				if err := g.Add(s); err != nil {
					t.Fatal(err)
				}
			}
			err := g.check("app.cimg", parse(t, cmd+c.body))
			if len(c.missing) == 0 {
				if err != nil {
					t.Fatalf("refused: %v", err)
				}
				return
			}
			ge, ok := err.(*GrantError)
			if !ok {
				t.Fatalf("%v, want a *GrantError", err)
			}
			if len(ge.Missing) != len(c.missing) {
				t.Errorf("missing %+v, want %v", ge.Missing, c.missing)
			}
			for _, want := range c.missing {
				if !strings.Contains(err.Error(), "--grant "+want) {
					t.Errorf("error does not say --grant %s:\n%v", want, err)
				}
			}
		})
	}
}

func TestGrantAddRefusesNonsense(t *testing.T) {
	for _, s := range []string{"bind=relative", "bind=/a/../b", "cap=NOPE", "net=none", "everything", "seccomp=off"} {
		var g Grants
		if err := g.Add(s); err == nil {
			t.Errorf("--grant %s accepted", s)
		}
	}
}
