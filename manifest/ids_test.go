package manifest

import (
	"strings"
	"testing"
)

// user = 4294967295 is (uid_t)-1: setresuid(-1, -1, -1) changes nothing,
// and the app ran as root. Refused, as is the same gid.
func TestUnchangedIDRefused(t *testing.T) {
	for _, c := range []struct{ body, key string }{
		{"user = 4294967295", "app.user"},
		{"group = 4294967295", "app.group"},
		{"groups = [5, 4294967295]", "app.groups[1]"},
	} {
		_, err := Parse([]byte("name = \"x\"\narch = \"amd64\"\n[app]\ncommand = [\"/bin/x\"]\n"+c.body+"\n"), "t.toml")
		if err == nil || !strings.Contains(err.Error(), c.key) || !strings.Contains(err.Error(), "unchanged") {
			t.Errorf("%s: %v, want an error naming %s", c.body, err, c.key)
		}
	}
}
