package launcher

// Which launches fork their child as a vfork. The parent thread of a
// vfork child is stopped until its execve, so a launch whose parent must
// act in between (write the id maps of a user namespace, tell systemd the
// main pid, hold for an update) would wait for ever if it vforked: those
// must fork. No root needed.

import "testing"

func TestVforkOnlyWithNothingBetweenForkAndExec(t *testing.T) {
	for _, c := range []struct {
		name  string
		setup func(*Plan, *Options)
		want  bool
	}{
		{"plain launch", func(*Plan, *Options) {}, canVfork},
		{"user namespace: the parent writes the id maps", func(p *Plan, _ *Options) { p.UserNS = &IDMap{UIDBase: 100000, GIDBase: 100000, Count: 65536} }, false},
		{"systemd: the parent tells the main pid", func(_ *Plan, o *Options) { o.Systemd = &Systemd{} }, false},
		{"update's standby: the parent holds", func(_ *Plan, o *Options) { o.Hold = func() error { return nil } }, false},
	} {
		t.Run(c.name, func(t *testing.T) {
			p := plan(t, "[app]\ncommand = [\"/bin/app\"]\n")
			o := &Options{}
			c.setup(p, o)
			l := &launch{plan: p, opts: o}
			defer l.close()
			if err := l.prepare(); err != nil {
				t.Fatal(err)
			}
			if l.fp.vfork != c.want {
				t.Errorf("vfork = %v, want %v", l.fp.vfork, c.want)
			}
		})
	}
}
