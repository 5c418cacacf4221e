package launcher

import (
	"fmt"
	"path/filepath"
	"slices"
	"strings"

	"cimg.dev/cimg/manifest"
)

// Grants are what the operator allows an image beyond the defaults. An
// image asks (its manifest); only the operator grants: a signed image can
// still be malicious, so whatever reaches the host — host paths,
// capabilities, host namespaces, unconfined seccomp, setuid programs —
// takes a grant on the command line (--grant), and an image that asks for
// more than it was granted is refused, naming each missing grant.
type Grants struct {
	Binds      []string        // host paths (and below) an image may bind read-write
	BindsRO    []string        // ... read-only
	Caps       map[string]bool // canonical names: CAP_NET_ADMIN
	HostNS     map[string]bool // network, pid, ipc, uts
	Unconfined bool            // seccomp = "unconfined"
	NewPrivs   bool            // no_new_privileges = false: setuid and file capabilities work
}

// GrantHelp lists the forms of --grant.
const GrantHelp = `bind=/host/path (read-write; bind-ro= read-only), cap=NET_ADMIN, net=host, pid=host, ipc=host, uts=host, seccomp=unconfined, new-privileges`

// Add parses one --grant value.
func (g *Grants) Add(s string) error {
	k, v, _ := strings.Cut(s, "=")
	switch {
	case k == "bind" || k == "bind-ro":
		if !filepath.IsAbs(v) || filepath.Clean(v) != v {
			return fmt.Errorf("--grant %s: want an absolute, clean host path", s)
		}
		if k == "bind" {
			g.Binds = append(g.Binds, v)
		} else {
			g.BindsRO = append(g.BindsRO, v)
		}
	case k == "cap":
		c := manifest.CanonicalCap(v)
		if _, ok := manifest.Capabilities[c]; !ok {
			return fmt.Errorf("--grant %s: unknown capability %q", s, v)
		}
		if g.Caps == nil {
			g.Caps = map[string]bool{}
		}
		g.Caps[c] = true
	case (k == "net" || k == "pid" || k == "ipc" || k == "uts") && v == "host":
		if g.HostNS == nil {
			g.HostNS = map[string]bool{}
		}
		name := k
		if k == "net" {
			name = "network" // the manifest's word
		}
		g.HostNS[name] = true
	case k == "seccomp" && v == "unconfined":
		g.Unconfined = true
	case k == "new-privileges" && v == "":
		g.NewPrivs = true
	default:
		return fmt.Errorf("--grant %q: want one of %s", s, GrantHelp)
	}
	return nil
}

// GrantError lists what an image asks for and was not granted.
type GrantError struct {
	Image   string
	Missing []Missing
}

// Missing is one privilege asked for: where the manifest asks, and the
// --grant that allows it.
type Missing struct{ What, Key, Grant string }

func (e *GrantError) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "%s asks for privileges the operator has not granted (an image asks, the operator grants):", e.Image)
	var flags []string
	for _, m := range e.Missing {
		fmt.Fprintf(&b, "\n  %s (%s): --grant %s", m.What, m.Key, m.Grant)
		flags = append(flags, "--grant "+m.Grant)
	}
	fmt.Fprintf(&b, "\nrun it with %s if you trust it with that", strings.Join(flags, " "))
	return b.String()
}

// check returns a *GrantError naming every privilege m asks for beyond g.
func (g *Grants) check(image string, m *manifest.Manifest) error {
	var miss []Missing
	for i, mt := range m.Mounts {
		if mt.Type != "bind" {
			continue
		}
		key := fmt.Sprintf("mounts[%d]", i)
		switch {
		case covers(g.Binds, mt.Source):
		case mt.ReadOnly && covers(g.BindsRO, mt.Source):
		case mt.ReadOnly:
			miss = append(miss, Missing{"read-only host path " + mt.Source, key, "bind-ro=" + mt.Source})
		default:
			miss = append(miss, Missing{"writable host path " + mt.Source, key, "bind=" + mt.Source})
		}
	}
	for i, c := range m.Security.Capabilities {
		c = manifest.CanonicalCap(c)
		if !g.Caps[c] {
			miss = append(miss, Missing{"capability " + c, fmt.Sprintf("security.capabilities[%d]", i), "cap=" + strings.TrimPrefix(c, "CAP_")})
		}
	}
	for _, ns := range []struct{ name, val, flag string }{{"network", m.Namespaces.Network, "net"}, {"pid", m.Namespaces.PID, "pid"},
		{"ipc", m.Namespaces.IPC, "ipc"}, {"uts", m.Namespaces.UTS, "uts"}} {
		if ns.val == "host" && !g.HostNS[ns.name] {
			miss = append(miss, Missing{"the host's " + ns.name + " namespace", "namespaces." + ns.name, ns.flag + "=host"})
		}
	}
	if m.Security.Seccomp == "unconfined" && !g.Unconfined {
		miss = append(miss, Missing{"no seccomp filter", "security.seccomp", "seccomp=unconfined"})
	}
	if !m.Security.NoNewPrivileges && !g.NewPrivs {
		miss = append(miss, Missing{"setuid and file-capability programs gaining privileges", "security.no_new_privileges", "new-privileges"})
	}
	if len(miss) == 0 {
		return nil
	}
	return &GrantError{Image: image, Missing: miss}
}

// covers reports whether p is one of the granted paths or below one.
func covers(granted []string, p string) bool {
	return slices.ContainsFunc(granted, func(g string) bool {
		return p == g || g == "/" || strings.HasPrefix(p, g+"/")
	})
}
