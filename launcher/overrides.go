package launcher

import (
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"

	"cimg.dev/cimg/manifest"
)

// Overrides are the operator's settings at launch, spelled as docker and
// podman spell them. They replace the manifest's values and are checked
// by the manifest's own rules. The operator typing them is the grant:
// a host path given with -v, a capability given with --cap-add and
// --network host are granted as --grant would grant them.
type Overrides struct {
	Env       []string // -e KEY=VALUE
	Volumes   []string // -v SRC:DST[:ro]: SRC absolute is a host path, else a volume's name
	Memory    string   // --memory 64MiB
	CPUs      string   // --cpus 0.5
	PidsLimit string   // --pids-limit 64
	Network   string   // --network none|host
	CapAdd    []string // --cap-add NET_RAW
	CapDrop   []string // --cap-drop NET_RAW, or ALL
	User      string   // --user UID[:GID]
	Workdir   string   // --workdir /data
	Hostname  string   // --hostname name
	ReadOnly  string   // --read-only[=true|false]: "" when not given
}

// none reports whether no setting was given.
func (ov *Overrides) none() bool {
	return len(ov.Env)+len(ov.Volumes)+len(ov.CapAdd)+len(ov.CapDrop) == 0 &&
		ov.Memory+ov.CPUs+ov.PidsLimit+ov.Network+ov.User+ov.Workdir+ov.Hostname+ov.ReadOnly == ""
}

// flagOf names the flag behind a manifest key, for errors.
var flagOf = []struct{ key, flag string }{
	{"limits.memory", "--memory"}, {"limits.cpu", "--cpus"}, {"limits.pids", "--pids-limit"},
	{"namespaces.network", "--network"}, {"security.capabilities", "--cap-add"}, {"app.user", "--user"},
	{"app.group", "--user"}, {"app.workdir", "--workdir"}, {"hostname", "--hostname"}, {"app.env", "--env"},
	{"mounts", "--volume"},
}

// apply puts the overrides into m (an image's parsed manifest) and g,
// then validates m again; an error names the flag at fault.
func (ov *Overrides) apply(m *manifest.Manifest, g *Grants) error {
	if ov.none() {
		return nil // the image's manifest, validated when it was parsed
	}
	var errs []error
	bad := func(flag, format string, a ...any) { errs = append(errs, fmt.Errorf(flag+": "+format, a...)) }
	for _, kv := range ov.Env {
		k, v, ok := strings.Cut(kv, "=")
		if !ok {
			bad("--env", "%q: want KEY=VALUE", kv)
			continue
		}
		if m.App.Env == nil {
			m.App.Env = map[string]string{}
		}
		m.App.Env[k] = v
	}
	for _, vol := range ov.Volumes {
		parts := strings.Split(vol, ":")
		ro := len(parts) == 3 && parts[2] == "ro"
		if len(parts) < 2 || len(parts) > 3 || (len(parts) == 3 && parts[2] != "ro" && parts[2] != "rw") {
			bad("--volume", "%q: want SRC:DST[:ro], SRC a host path or a volume name", vol)
			continue
		}
		mt := manifest.Mount{Type: "volume", Source: parts[0], Target: parts[1], ReadOnly: ro}
		if strings.HasPrefix(parts[0], "/") {
			mt.Type = "bind"
			if ro {
				g.BindsRO = append(g.BindsRO, parts[0])
			} else {
				g.Binds = append(g.Binds, parts[0])
			}
		}
		// The operator's mount replaces one the image has at that target.
		m.Mounts = slices.DeleteFunc(m.Mounts, func(x manifest.Mount) bool { return x.Target == mt.Target })
		m.Mounts = append(m.Mounts, mt)
	}
	if ov.Memory != "" {
		if n, err := manifest.ParseSize(ov.Memory); err != nil || n <= 0 {
			bad("--memory", "%q: want a size greater than 0, like 64MiB", ov.Memory)
		} else {
			m.Limits.Memory = n
			if m.Limits.MemorySwap > 0 && m.Limits.MemorySwap < n {
				m.Limits.MemorySwap = n // the manifest's swap allowance cannot be below the new limit
			}
		}
	}
	if ov.CPUs != "" {
		if f, err := strconv.ParseFloat(ov.CPUs, 64); err != nil || !(f > 0) {
			bad("--cpus", "%q: want a number of cores greater than 0, like 0.5", ov.CPUs)
		} else {
			m.Limits.CPU = manifest.CPU(f)
		}
	}
	if ov.PidsLimit != "" {
		if n, err := strconv.ParseInt(ov.PidsLimit, 10, 64); err != nil || n <= 0 {
			bad("--pids-limit", "%q: want a number of processes greater than 0", ov.PidsLimit)
		} else {
			m.Limits.Pids = n
		}
	}
	if ov.Network != "" {
		m.Namespaces.Network = ov.Network
		if ov.Network == "host" {
			if g.HostNS == nil {
				g.HostNS = map[string]bool{}
			}
			g.HostNS["network"] = true
		}
	}
	for _, c := range ov.CapAdd {
		c = manifest.CanonicalCap(c)
		if _, ok := manifest.Capabilities[c]; !ok {
			bad("--cap-add", "unknown capability %q", c)
			continue
		}
		if !slices.Contains(m.Security.Capabilities, c) {
			m.Security.Capabilities = append(m.Security.Capabilities, c)
		}
		if g.Caps == nil {
			g.Caps = map[string]bool{}
		}
		g.Caps[c] = true
	}
	for _, c := range ov.CapDrop {
		if strings.EqualFold(c, "all") {
			m.Security.Capabilities = nil
			continue
		}
		c = manifest.CanonicalCap(c)
		m.Security.Capabilities = slices.DeleteFunc(m.Security.Capabilities, func(x string) bool { return x == c })
	}
	if ov.User != "" {
		u, gid, hasGID := strings.Cut(ov.User, ":")
		uid, err1 := strconv.ParseUint(u, 10, 32)
		var g64 uint64
		var err2 error
		if hasGID {
			g64, err2 = strconv.ParseUint(gid, 10, 32)
		}
		if err1 != nil || err2 != nil {
			bad("--user", "%q: want UID or UID:GID, numbers (an image has no user database to look names up)", ov.User)
		} else {
			m.App.User = uint32(uid)
			if hasGID {
				m.App.Group = uint32(g64)
			}
		}
	}
	if ov.Workdir != "" {
		m.App.Workdir = ov.Workdir
	}
	if ov.Hostname != "" {
		m.Hostname = ov.Hostname
	}
	switch ov.ReadOnly {
	case "":
	case "true":
		m.Security.ReadonlyRoot = true
	case "false":
		m.Security.ReadonlyRoot = false
	default:
		bad("--read-only", "%q: want true or false", ov.ReadOnly)
	}
	if len(errs) > 0 {
		return errors.Join(errs...)
	}
	return namedByFlag(m.Validate())
}

// namedByFlag rewrites the manifest's errors about values a flag set so
// that they name the flag.
func namedByFlag(err error) error {
	var me *manifest.Errors
	if !errors.As(err, &me) {
		return err
	}
	var out []error
	for _, e := range me.List {
		flag := ""
		for _, f := range flagOf {
			if e.Key == f.key || strings.HasPrefix(e.Key, f.key+".") || strings.HasPrefix(e.Key, f.key+"[") {
				flag = f.flag
				break
			}
		}
		if flag == "" {
			out = append(out, e)
			continue
		}
		out = append(out, fmt.Errorf("%s (%s, with the command line's settings): %s", flag, e.Key, e.Msg))
	}
	return errors.Join(out...)
}
