package launcher

import (
	"strings"
	"testing"
)

// The slim waiter is the app's only supervisor: argv it cannot read is an
// error (it then kills the app), never a zero value taken silently.
func TestParseWaiterArgs(t *testing.T) {
	s, err := parseWaiterArgs([]string{"pid=42", "pidfd=7", "name=app", "memory=32MiB", "stop-timeout=3s", "id=app-42", "v2"})
	if err != nil || s.pid != 42 || s.pidfd != 7 || s.name != "app" || s.stopTimeout.String() != "3s" || s.cg.ID != "app-42" || !s.cg.V2 {
		t.Fatalf("%+v, %v", s, err)
	}
	for _, c := range []struct{ args, want string }{
		{"pid=x pidfd=7", `pid="x"`},
		{"pid=42 pidfd=7 stop-timeout=soon", "stop-timeout"},
		{"pid=42 pidfd=7 colour=blue", `unknown argument "colour=blue"`},
		{"pidfd=7", "no pid="},
		{"pid=42 pidfd=7 cgroup=memory:3", "cgroup hand-over"},
		{"pid=42 pidfd=7 cgroup=memory", "cgroup hand-over"},
	} {
		if _, err := parseWaiterArgs(strings.Fields(c.args)); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: %v, want an error saying %s", c.args, err, c.want)
		}
	}
}
