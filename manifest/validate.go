package manifest

import (
	"fmt"
	"path"
	"sort"
	"strconv"
	"strings"
)

// The names, keys and lists the manifest allows, checked by hand rather
// than with regexps: the launcher validates an image's manifest on every
// start, and compiling the regexps there cost about 150 µs of a 5 ms
// launch (the first Parse in a fresh process took 300-440 µs with them).
func isLower(c byte) bool { return c >= 'a' && c <= 'z' }
func isUpper(c byte) bool { return c >= 'A' && c <= 'Z' }
func isDigit(c byte) bool { return c >= '0' && c <= '9' }

// word reports whether s is 1..max bytes, the first allowed by first and
// the rest by rest.
func word(s string, max int, first, rest func(byte) bool) bool {
	if len(s) == 0 || len(s) > max || !first(s[0]) {
		return false
	}
	for i := 1; i < len(s); i++ {
		if !rest(s[i]) {
			return false
		}
	}
	return true
}

// validName: 1-64 of a-z 0-9 . _ -, starting with a letter or digit.
func validName(s string) bool {
	lowerDigit := func(c byte) bool { return isLower(c) || isDigit(c) }
	return word(s, 64, lowerDigit, func(c byte) bool { return lowerDigit(c) || c == '.' || c == '_' || c == '-' })
}

// validVolume: as validName, upper case allowed.
func validVolume(s string) bool {
	alnum := func(c byte) bool { return isLower(c) || isUpper(c) || isDigit(c) }
	return word(s, 64, alnum, func(c byte) bool { return alnum(c) || c == '.' || c == '_' || c == '-' })
}

// validEnvKey: a C identifier.
func validEnvKey(s string) bool {
	alpha := func(c byte) bool { return isLower(c) || isUpper(c) || c == '_' }
	return word(s, len(s), alpha, func(c byte) bool { return alpha(c) || isDigit(c) })
}

// validHostname: dot-separated labels of 1-63 letters, digits and
// hyphens, neither starting nor ending with a hyphen.
func validHostname(s string) bool {
	for _, label := range strings.Split(s, ".") {
		alnum := func(c byte) bool { return isLower(c) || isUpper(c) || isDigit(c) }
		if !word(label, 63, alnum, func(c byte) bool { return alnum(c) || c == '-' }) || label[len(label)-1] == '-' {
			return false
		}
	}
	return true
}

// validCpuset: a CPU list like 0-1,3.
func validCpuset(s string) bool {
	for _, r := range strings.Split(s, ",") {
		lo, hi, isRange := strings.Cut(r, "-")
		if !word(lo, 10, isDigit, isDigit) || (isRange && !word(hi, 10, isDigit, isDigit)) {
			return false
		}
	}
	return true
}

// validOctal: a file mode like 755 or 1777.
func validOctal(s string) bool {
	octal := func(c byte) bool { return c >= '0' && c <= '7' }
	return len(s) >= 3 && word(s, 4, octal, octal)
}

// Validate checks the whole manifest and returns every problem it finds
// (an *Errors), unknown keys from Decode included, or nil.
func (m *Manifest) Validate() error {
	v := &validator{m: m}
	for _, e := range m.decodeErrs {
		v.errs = append(v.errs, e.(*Error))
	}
	v.top()
	v.app()
	v.limits()
	v.security()
	v.namespaces()
	v.mounts()
	v.health()
	if len(v.errs) == 0 {
		return nil
	}
	sort.SliceStable(v.errs, func(i, j int) bool {
		a, b := v.errs[i], v.errs[j]
		if (a.Line == 0) != (b.Line == 0) {
			return a.Line != 0
		}
		return a.Line < b.Line
	})
	return &Errors{List: v.errs}
}

type validator struct {
	m    *Manifest
	errs []*Error
}

func (v *validator) add(key, format string, args ...any) {
	v.errs = append(v.errs, v.m.errAt(key, format, args...))
}

// imagePath checks an absolute path inside the image: clean, without
// "..", so it can never name something outside the app's root.
func (v *validator) imagePath(key, p string) {
	switch {
	case p == "":
		v.add(key, "must not be empty")
	case !strings.HasPrefix(p, "/"):
		v.add(key, "%q is not an absolute path", p)
	case hasDotDot(p):
		v.add(key, "%q contains \"..\", which could leave the image root", p)
	case strings.ContainsRune(p, 0):
		v.add(key, "contains a NUL byte")
	case path.Clean(p) != p:
		v.add(key, "%q is not clean (want %q)", p, path.Clean(p))
	}
}

func hasDotDot(p string) bool {
	for _, part := range strings.Split(p, "/") {
		if part == ".." {
			return true
		}
	}
	return false
}

func (v *validator) top() {
	m := v.m
	if m.Name == "" {
		v.add("name", "is required")
	} else if !validName(m.Name) {
		v.add("name", "%q: use 1-64 of a-z 0-9 . _ - starting with a letter or digit", m.Name)
	}
	if m.Version == "" || strings.ContainsAny(m.Version, " \t\n/") {
		v.add("version", "%q: want a non-empty version without spaces or slashes", m.Version)
	}
	if m.Arch == "" {
		v.add("arch", "is required (one of %s)", strings.Join(sortedKeys(Arches), ", "))
	} else if _, ok := Arches[m.Arch]; !ok {
		v.add("arch", "unknown architecture %q (want one of %s)", m.Arch, strings.Join(sortedKeys(Arches), ", "))
	}
	if m.Hostname != "" && (len(m.Hostname) > 64 || !validHostname(m.Hostname)) {
		v.add("hostname", "%q is not a valid hostname", m.Hostname)
	}
}

func (v *validator) app() {
	a := v.m.App
	if len(a.Command) == 0 {
		v.add("app.command", "is required: the absolute path of the program to run")
	} else {
		v.imagePath("app.command[0]", a.Command[0])
	}
	for k, val := range a.Env {
		if !validEnvKey(k) {
			v.add("app.env."+k, "%q is not a valid environment variable name", k)
		}
		if strings.ContainsRune(val, 0) {
			v.add("app.env."+k, "value contains a NUL byte")
		}
	}
	// (uid_t)-1 tells setresuid and setresgid "leave unchanged": the app
	// would keep the launcher's root.
	const unchanged = 1<<32 - 1
	if a.User == unchanged {
		v.add("app.user", "%d is (uid_t)-1, which the kernel reads as \"unchanged\" (the app would run as root): pick a real uid", a.User)
	}
	if a.Group == unchanged {
		v.add("app.group", "%d is (gid_t)-1, which the kernel reads as \"unchanged\" (the app would keep gid 0): pick a real gid", a.Group)
	}
	for i, g := range a.Groups {
		if g == unchanged {
			v.add("app.groups["+strconv.Itoa(i)+"]", "%d is (gid_t)-1, which the kernel reads as \"unchanged\": not a group", g)
		}
	}
	v.imagePath("app.workdir", a.Workdir)
	for _, r := range reserved {
		if a.Workdir == r || strings.HasPrefix(a.Workdir, r+"/") {
			v.add("app.workdir", "%s is under %s, whose entries can lead outside the image", a.Workdir, r)
		}
	}
}

func (v *validator) limits() {
	l := v.m.Limits
	defined := func(k string) bool { return v.m.defined(strings.Split(k, ".")...) }
	positive := func(key string, n int64) {
		if n <= 0 && defined(key) {
			v.add(key, "must be greater than 0 (leave it out for no limit)")
		}
	}
	positive("limits.memory", int64(l.Memory))
	positive("limits.memory_swap", int64(l.MemorySwap))
	positive("limits.pids", l.Pids)
	positive("limits.tmp_size", int64(l.TmpSize))
	positive("limits.run_size", int64(l.RunSize))
	positive("limits.shm_size", int64(l.ShmSize))
	if l.Memory > 0 && l.Memory < 4*MiB {
		v.add("limits.memory", "%s is below the 4MiB any process needs to start", l.Memory)
	}
	if l.MemorySwap > 0 {
		if l.Memory == 0 {
			v.add("limits.memory_swap", "needs limits.memory (memory_swap is memory plus swap)")
		} else if l.MemorySwap < l.Memory {
			v.add("limits.memory_swap", "%s is less than limits.memory %s (memory_swap is memory plus swap)", l.MemorySwap, l.Memory)
		}
	}
	if l.CPU < 0 || (l.CPU == 0 && defined("limits.cpu")) {
		v.add("limits.cpu", "must be greater than 0 cores")
	} else if l.CPU > 1024 {
		v.add("limits.cpu", "%v cores is more than any device has", float64(l.CPU))
	} else if l.CPU > 0 && l.CPU < 0.01 {
		v.add("limits.cpu", "%v cores is below the 0.01 the kernel can enforce", float64(l.CPU))
	}
	if (l.CPUWeight != 0 || defined("limits.cpu_weight")) && (l.CPUWeight < 1 || l.CPUWeight > 10000) {
		v.add("limits.cpu_weight", "%d is outside 1..10000", l.CPUWeight)
	}
	if l.Cpuset != "" && !validCpuset(l.Cpuset) {
		v.add("limits.cpuset", "%q: want a CPU list like 0-1,3", l.Cpuset)
	}
	for _, name := range sortedKeys(l.Rlimits) {
		r := l.Rlimits[name]
		key := "limits.rlimits." + name
		if !Rlimits[name] {
			v.add(key, "unknown rlimit (want one of %s)", strings.Join(sortedKeys(Rlimits), ", "))
			continue
		}
		if r.Soft > r.Hard {
			v.add(key, "soft limit %d exceeds hard limit %d", r.Soft, r.Hard)
		}
	}
}

func (v *validator) security() {
	s := v.m.Security
	seen := map[string]bool{}
	for i, c := range s.Capabilities {
		key := "security.capabilities[" + strconv.Itoa(i) + "]"
		if _, ok := Capabilities[c]; !ok {
			v.add(key, "unknown capability %q", c)
		} else if seen[c] {
			v.add(key, "%s is listed twice", c)
		}
		seen[c] = true
	}
	if s.Seccomp != "default" && s.Seccomp != "unconfined" {
		v.add("security.seccomp", "%q: want \"default\" or \"unconfined\"", s.Seccomp)
	}
}

func (v *validator) namespaces() {
	n := v.m.Namespaces
	if n.Network != "none" && n.Network != "host" {
		v.add("namespaces.network", "%q: want \"none\" (private, loopback only) or \"host\"", n.Network)
	}
	for _, ns := range []struct{ key, val string }{{"namespaces.pid", n.PID}, {"namespaces.ipc", n.IPC}, {"namespaces.uts", n.UTS}} {
		if ns.val != "private" && ns.val != "host" {
			v.add(ns.key, "%q: want \"private\" or \"host\"", ns.val)
		}
	}
	if v.m.Hostname != "" && n.UTS == "host" {
		v.add("hostname", "cannot be set when namespaces.uts is \"host\"")
	}
}

// reserved are the mount points the launcher owns.
var reserved = []string{"/proc", "/dev", "/sys"}

func (v *validator) mounts() {
	targets := map[string]int{}
	for i, mt := range v.m.Mounts {
		key := fmt.Sprintf("mounts[%d]", i)
		v.imagePath(key+".target", mt.Target)
		if mt.Target == "/" {
			v.add(key+".target", "cannot mount over the image root")
		}
		for _, r := range reserved {
			if mt.Target == r || strings.HasPrefix(mt.Target, r+"/") {
				v.add(key+".target", "%s is managed by the launcher", r)
			}
		}
		if j, dup := targets[mt.Target]; dup {
			v.add(key+".target", "%s is also the target of mounts[%d]", mt.Target, j)
		}
		targets[mt.Target] = i
		switch mt.Type {
		case "volume":
			if !validVolume(mt.Source) {
				v.add(key+".source", "%q: a volume needs a name of a-z A-Z 0-9 . _ -", mt.Source)
			}
		case "bind":
			if !strings.HasPrefix(mt.Source, "/") || hasDotDot(mt.Source) {
				v.add(key+".source", "%q: a bind mount needs an absolute host path without ..", mt.Source)
			}
		case "tmpfs":
			if mt.Source != "" {
				v.add(key+".source", "a tmpfs has no source")
			}
			if mt.Size <= 0 {
				v.add(key+".size", "a tmpfs needs a size greater than 0, like \"16MiB\"")
			}
			if mt.Mode != "" && !validOctal(mt.Mode) {
				v.add(key+".mode", "%q: want octal like \"1777\"", mt.Mode)
			}
		case "overlay":
			if mt.Source != "" && !validVolume(mt.Source) {
				v.add(key+".source", "%q: an overlay keeps its layer in a volume named a-z A-Z 0-9 . _ -", mt.Source)
			}
		default:
			v.add(key+".type", "%q: want volume, bind, tmpfs or overlay", mt.Type)
		}
		if mt.Type != "tmpfs" && (mt.Size != 0 || mt.Mode != "") {
			v.add(key, "size and mode apply only to tmpfs")
		}
	}
}

func (v *validator) health() {
	h := v.m.Health
	if h == nil {
		return
	}
	if len(h.Command) == 0 {
		v.add("health.command", "is required")
	} else {
		v.imagePath("health.command[0]", h.Command[0])
	}
	if h.Interval <= 0 {
		v.add("health.interval", "must be greater than 0")
	}
	if h.Timeout <= 0 {
		v.add("health.timeout", "must be greater than 0")
	}
	if h.Retries < 1 {
		v.add("health.retries", "must be at least 1")
	}
	if h.StartPeriod < 0 {
		v.add("health.start_period", "must not be negative")
	}
}

func sortedKeys[V any](m map[string]V) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}
