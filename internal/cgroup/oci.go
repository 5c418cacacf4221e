package cgroup

import (
	"errors"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"
)

// OCIPath is where an OCI config's cgroupsPath puts the container, below
// each hierarchy's root: a path as given (cgroupfs driver), or, with the
// systemd driver, slice:prefix:name as systemd names it — each slice
// level nested (a-b.slice lives in a.slice) and the scope prefix-name.scope.
// An empty cgroupsPath is the container's id under cimg-oci/.
func OCIPath(p string, systemd bool, id string) (string, error) {
	if p == "" {
		if systemd {
			return "system.slice/cimg-oci-" + id + ".scope", nil
		}
		return "cimg-oci/" + id, nil
	}
	if !systemd {
		if strings.Contains(p, ":") {
			return "", fmt.Errorf("linux.cgroupsPath %q is in systemd's slice:prefix:name form: pass --systemd-cgroup", p)
		}
		clean := filepath.Clean("/" + p)
		if clean == "/" {
			return "", fmt.Errorf("linux.cgroupsPath %q is the root cgroup", p)
		}
		return strings.TrimPrefix(clean, "/"), nil
	}
	parts := strings.Split(p, ":")
	if len(parts) != 3 {
		return "", fmt.Errorf("linux.cgroupsPath %q: the systemd driver takes slice:prefix:name", p)
	}
	slice, prefix, name := parts[0], parts[1], parts[2]
	if slice == "" {
		slice = "system.slice"
	}
	if !strings.HasSuffix(slice, ".slice") || strings.Contains(slice, "/") || strings.Contains(name, "/") || strings.Contains(prefix, "/") {
		return "", fmt.Errorf("linux.cgroupsPath %q: not a systemd slice:prefix:name", p)
	}
	var dirs []string
	if slice != "-.slice" {
		words := strings.Split(strings.TrimSuffix(slice, ".slice"), "-")
		for i := range words {
			dirs = append(dirs, strings.Join(words[:i+1], "-")+".slice")
		}
	}
	unit := name
	if !strings.HasSuffix(name, ".slice") {
		if prefix != "" {
			unit = prefix + "-" + name
		}
		unit += ".scope"
	}
	return filepath.Join(append(dirs, unit)...), nil
}

// ociV1 are the v1 hierarchies an OCI container gets a cgroup in: those
// its resources write to, and freezer and devices.
var ociV1 = []string{"memory", "pids", "cpu", "cpuacct", "cpuset", "devices", "freezer", "blkio"}

// NewOCI makes the cgroup rel (OCIPath) — on a cgroup v2 host one
// directory, else one in every v1 hierarchy this host mounts — and
// writes res there. It refuses, before making anything, the resources
// cimg-oci does not apply, naming the field: none is ignored.
func NewOCI(rel string, res *specs.LinuxResources) (cg *Cgroup, err error) {
	if res == nil {
		res = &specs.LinuxResources{}
	}
	v2 := IsV2()
	if err := ociUnsupported(res, v2); err != nil {
		return nil, err
	}
	rules, err := ociDeviceRules(res.Devices)
	if err != nil {
		return nil, err
	}
	if v2 {
		return newOCIV2(rel, res, rules)
	}
	cg = newCgroup(filepath.Base(rel), false)
	defer func() {
		if err != nil {
			RemoveLeft(cg.ID, false, cg.Dirs)
			cg = nil
		}
	}()
	seen := map[string]bool{}
	for _, c := range ociV1 {
		base := filepath.Join(Root, c)
		real, err := filepath.EvalSymlinks(base) // cpu and cpuacct share one
		if err != nil || seen[real] {
			continue
		}
		if _, err := os.Stat(filepath.Join(real, "cgroup.procs")); err != nil {
			continue
		}
		seen[real] = true
		dir := filepath.Join(base, rel)
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return cg, fmt.Errorf("create cgroup %s: %w", dir, err)
		}
		cg.Dirs[c] = dir
		if c == "cpuset" {
			// A v1 cpuset is empty until cpus and mems are set: each new
			// level inherits its parent's.
			var chain []string
			for d := dir; d != base && d != "/"; d = filepath.Dir(d) {
				chain = append([]string{d}, chain...)
			}
			for _, d := range chain {
				for _, f := range []string{"cpuset.cpus", "cpuset.mems"} {
					if cur, _ := os.ReadFile(filepath.Join(d, f)); len(strings.TrimSpace(string(cur))) == 0 {
						parent, _ := os.ReadFile(filepath.Join(filepath.Dir(d), f))
						writeFile(filepath.Join(d, f), strings.TrimSpace(string(parent)))
					}
				}
			}
		}
	}
	if err := cg.ociLimitsV1(res); err != nil {
		return cg, err
	}
	return cg, cg.ociDevicesV1(rules)
}

// ociUnsupported names the first resource cimg-oci would not apply on
// this host (v2: a pure cgroup v2 host).
func ociUnsupported(r *specs.LinuxResources, v2 bool) error {
	switch {
	case r.BlockIO != nil && (r.BlockIO.Weight != nil || r.BlockIO.LeafWeight != nil || len(r.BlockIO.WeightDevice) > 0 ||
		len(r.BlockIO.ThrottleReadBpsDevice) > 0 || len(r.BlockIO.ThrottleWriteBpsDevice) > 0 ||
		len(r.BlockIO.ThrottleReadIOPSDevice) > 0 || len(r.BlockIO.ThrottleWriteIOPSDevice) > 0):
		return errors.New("linux.resources.blockIO is not supported by cimg-oci")
	case len(r.HugepageLimits) > 0:
		return errors.New("linux.resources.hugepageLimits is not supported by cimg-oci")
	case r.Network != nil:
		return errors.New("linux.resources.network is not supported by cimg-oci")
	case len(r.Rdma) > 0:
		return errors.New("linux.resources.rdma is not supported by cimg-oci")
	case len(r.Unified) > 0 && !v2:
		return errors.New("linux.resources.unified: cgroup v2 files, and this host's controllers are on cgroup v1")
	}
	if m := r.Memory; m != nil {
		switch {
		case m.Kernel != nil:
			return errors.New("linux.resources.memory.kernel is not supported by cimg-oci (deprecated by the kernel)")
		case m.KernelTCP != nil:
			return errors.New("linux.resources.memory.kernelTCP is not supported by cimg-oci")
		case m.UseHierarchy != nil:
			return errors.New("linux.resources.memory.useHierarchy is not supported by cimg-oci")
		case v2 && m.Swappiness != nil:
			return errors.New("linux.resources.memory.swappiness: cgroup v2 has no per-cgroup swappiness (this host is cgroup v2)")
		case v2 && m.DisableOOMKiller != nil && *m.DisableOOMKiller:
			return errors.New("linux.resources.memory.disableOOMKiller: cgroup v2 cannot turn the OOM killer off (this host is cgroup v2)")
		case v2 && m.Swap != nil && m.Limit == nil:
			return errors.New("linux.resources.memory.swap: needs memory.limit on cgroup v2, where swap is limited apart from memory (swap.max = swap - limit)")
		}
	}
	if c := r.CPU; c != nil {
		switch {
		case c.RealtimeRuntime != nil || c.RealtimePeriod != nil:
			return errors.New("linux.resources.cpu.realtimeRuntime/realtimePeriod are not supported by cimg-oci")
		case c.Idle != nil:
			return errors.New("linux.resources.cpu.idle is not supported by cimg-oci")
		case c.Burst != nil:
			return errors.New("linux.resources.cpu.burst is not supported by cimg-oci")
		}
	}
	return nil
}

func (cg *Cgroup) ociWrite(c, file, v, field string) error {
	dir, ok := cg.Dirs[c]
	if !ok {
		return fmt.Errorf("%s: this host mounts no cgroup v1 %s controller", field, c)
	}
	if err := writeFile(filepath.Join(dir, file), v); err != nil {
		return fmt.Errorf("%s: %w", field, err)
	}
	return nil
}

// ociLimitsV1 writes the resources, each to its v1 file.
func (cg *Cgroup) ociLimitsV1(r *specs.LinuxResources) error {
	i64 := func(v int64) string { return strconv.FormatInt(v, 10) }
	if m := r.Memory; m != nil {
		if m.Limit != nil {
			if err := cg.ociWrite("memory", "memory.limit_in_bytes", i64(*m.Limit), "linux.resources.memory.limit"); err != nil {
				return err
			}
		}
		if m.Swap != nil {
			if err := cg.ociWrite("memory", "memory.memsw.limit_in_bytes", i64(*m.Swap), "linux.resources.memory.swap"); err != nil {
				return fmt.Errorf("%w (swap accounting off? boot with swapaccount=1)", err)
			}
		}
		if m.Reservation != nil {
			if err := cg.ociWrite("memory", "memory.soft_limit_in_bytes", i64(*m.Reservation), "linux.resources.memory.reservation"); err != nil {
				return err
			}
		}
		if m.Swappiness != nil {
			if err := cg.ociWrite("memory", "memory.swappiness", strconv.FormatUint(*m.Swappiness, 10), "linux.resources.memory.swappiness"); err != nil {
				return err
			}
		}
		if m.DisableOOMKiller != nil && *m.DisableOOMKiller {
			if err := cg.ociWrite("memory", "memory.oom_control", "1", "linux.resources.memory.disableOOMKiller"); err != nil {
				return err
			}
		}
	}
	if p := r.Pids; p != nil && p.Limit > 0 {
		if err := cg.ociWrite("pids", "pids.max", i64(p.Limit), "linux.resources.pids.limit"); err != nil {
			return err
		}
	}
	if c := r.CPU; c != nil {
		if c.Shares != nil && *c.Shares > 0 {
			if err := cg.ociWrite("cpu", "cpu.shares", strconv.FormatUint(*c.Shares, 10), "linux.resources.cpu.shares"); err != nil {
				return err
			}
		}
		if c.Period != nil && *c.Period > 0 {
			if err := cg.ociWrite("cpu", "cpu.cfs_period_us", strconv.FormatUint(*c.Period, 10), "linux.resources.cpu.period"); err != nil {
				return err
			}
		}
		if c.Quota != nil && *c.Quota != 0 {
			if err := cg.ociWrite("cpu", "cpu.cfs_quota_us", i64(*c.Quota), "linux.resources.cpu.quota"); err != nil {
				return err
			}
		}
		if c.Cpus != "" {
			if err := cg.ociWrite("cpuset", "cpuset.cpus", c.Cpus, "linux.resources.cpu.cpus"); err != nil {
				return err
			}
		}
		if c.Mems != "" {
			if err := cg.ociWrite("cpuset", "cpuset.mems", c.Mems, "linux.resources.cpu.mems"); err != nil {
				return err
			}
		}
	}
	return nil
}

// ociDeviceRules checks the config's device rules and turns them into
// devRules, in order.
func ociDeviceRules(rules []specs.LinuxDeviceCgroup) ([]devRule, error) {
	var out []devRule
	for i, r := range rules {
		d := devRule{allow: r.Allow, major: -1, minor: -1}
		switch r.Type {
		case "", "a":
			d.typ = 'a'
		case "c", "b":
			d.typ = r.Type[0]
		default:
			return nil, fmt.Errorf("linux.resources.devices[%d].type %q: want a, c or b", i, r.Type)
		}
		for _, n := range []struct {
			v   *int64
			to  *int32
			key string
		}{{r.Major, &d.major, "major"}, {r.Minor, &d.minor, "minor"}} {
			if n.v != nil && *n.v >= 0 {
				if *n.v > 1<<31-1 {
					return nil, fmt.Errorf("linux.resources.devices[%d].%s %d: too large", i, n.key, *n.v)
				}
				*n.to = int32(*n.v)
			}
		}
		access := r.Access
		if access == "" {
			access = "rwm"
		}
		for _, c := range access {
			switch c {
			case 'r':
				d.access |= unix.BPF_DEVCG_ACC_READ
			case 'w':
				d.access |= unix.BPF_DEVCG_ACC_WRITE
			case 'm':
				d.access |= unix.BPF_DEVCG_ACC_MKNOD
			default:
				return nil, fmt.Errorf("linux.resources.devices[%d].access %q: letters r, w and m only", i, r.Access)
			}
		}
		out = append(out, d)
	}
	return out, nil
}

// v1 is the rule as devices.allow and devices.deny take it.
func (d devRule) v1() string {
	if d.typ == 'a' {
		return "a"
	}
	num := func(n int32) string {
		if n < 0 {
			return "*"
		}
		return strconv.Itoa(int(n))
	}
	access := ""
	for _, a := range []struct {
		bit uint32
		c   string
	}{{unix.BPF_DEVCG_ACC_READ, "r"}, {unix.BPF_DEVCG_ACC_WRITE, "w"}, {unix.BPF_DEVCG_ACC_MKNOD, "m"}} {
		if d.access&a.bit != 0 {
			access += a.c
		}
	}
	return string(d.typ) + " " + num(d.major) + ":" + num(d.minor) + " " + access
}

// ociDevicesV1 writes the config's device rules in order (a later rule
// wins), then allows the nodes every container's /dev gets (devNodes in
// the launcher, and the terminal): the floor runc and crun keep too.
func (cg *Cgroup) ociDevicesV1(rules []devRule) error {
	if _, ok := cg.Dirs["devices"]; !ok {
		if len(rules) > 0 {
			return errors.New("linux.resources.devices: this host mounts no cgroup v1 devices controller")
		}
		return nil
	}
	for i, r := range rules {
		file := "devices.deny"
		if r.allow {
			file = "devices.allow"
		}
		if err := cg.ociWrite("devices", file, r.v1(), fmt.Sprintf("linux.resources.devices[%d] (%s %s)", i, file, r.v1())); err != nil {
			return err
		}
	}
	for _, e := range devicesList() {
		if err := cg.ociWrite("devices", "devices.allow", e, "default devices"); err != nil {
			return err
		}
	}
	return nil
}

// newOCIV2 makes the container's cgroup on a cgroup v2 host: each level
// above it made where missing, with the controllers the host offers
// (cpu, cpuset, memory, pids) enabled for its children, and the
// resources written to their v2 files. The device rules become a BPF
// device program (the config's rules, then the nodes every container's
// /dev gets; no rule matching leaves a device allowed, as a v1 cgroup
// below the root inherits "a *:* rwm").
func newOCIV2(rel string, res *specs.LinuxResources, rules []devRule) (cg *Cgroup, err error) {
	cg = newCgroup(filepath.Base(rel), true)
	defer func() {
		if err != nil {
			cg.release() // let go of the flock, or RemoveLeft would think it in use
			RemoveLeft(cg.ID, true, cg.Dirs)
			cg = nil
		}
	}()
	var need []string
	if m := res.Memory; m != nil && (m.Limit != nil || m.Reservation != nil || m.Swap != nil) {
		need = append(need, "memory")
	}
	if res.Pids != nil && res.Pids.Limit != 0 {
		need = append(need, "pids")
	}
	if c := res.CPU; c != nil {
		if c.Shares != nil || c.Quota != nil || c.Period != nil {
			need = append(need, "cpu")
		}
		if c.Cpus != "" || c.Mems != "" {
			need = append(need, "cpuset")
		}
	}
	avail, _ := os.ReadFile(filepath.Join(Root, "cgroup.controllers"))
	enable, missing := subtreeControl(string(avail), need)
	if len(missing) > 0 {
		return cg, fmt.Errorf("linux.resources: cgroup v2 controller %s is not available (%s: %q)", missing[0],
			filepath.Join(Root, "cgroup.controllers"), strings.TrimSpace(string(avail)))
	}
	dir := filepath.Join(Root, rel)
	for d := Root; d != dir; d = filepath.Join(d, strings.Split(strings.TrimPrefix(dir, d+"/"), "/")[0]) {
		if err := os.Mkdir(d, 0o755); err != nil && !errors.Is(err, os.ErrExist) {
			return cg, fmt.Errorf("create cgroup %s: %w", d, err)
		}
		if enable != "" {
			if err := writeFile(filepath.Join(d, "cgroup.subtree_control"), enable); err != nil {
				return cg, fmt.Errorf("enable controllers %q in %s: %w (a cgroup with processes of its own cannot pass controllers on)", enable, d, err)
			}
		}
	}
	if err := os.Mkdir(dir, 0o755); err != nil && !errors.Is(err, os.ErrExist) {
		return cg, fmt.Errorf("create cgroup %s: %w", dir, err)
	}
	cg.Dirs[""] = dir
	if err := cg.hold("", dir); err != nil {
		return cg, err
	}
	if err := ociLimitsV2(dir, res); err != nil {
		return cg, err
	}
	err = devicesV2(int(cg.held[""].Fd()), devicesProgram(append(rules, allowListRules()...), 1))
	if errors.Is(err, errNoDeviceBPF) && len(rules) == 0 {
		err = nil // nothing asked for: without the feature, nothing to refuse
	}
	if err != nil {
		return cg, fmt.Errorf("linux.resources.devices: %w", err)
	}
	// Held only while being set up: the container's cgroup outlives this
	// process, and delete removes it by its path (RemoveLeft), as on v1.
	cg.release()
	return cg, nil
}

// ociLimitsV2 writes the resources to their v2 files in dir.
func ociLimitsV2(dir string, res *specs.LinuxResources) error {
	w := func(file, v, field string) error {
		if err := writeFile(filepath.Join(dir, file), v); err != nil {
			return fmt.Errorf("%s (%s): %w", field, file, err)
		}
		return nil
	}
	limit := func(v int64) string {
		if v < 0 {
			return "max"
		}
		return strconv.FormatInt(v, 10)
	}
	var errs []error
	if m := res.Memory; m != nil {
		if m.Limit != nil {
			errs = append(errs, w("memory.max", limit(*m.Limit), "linux.resources.memory.limit"))
		}
		if m.Swap != nil { // ociUnsupported saw m.Limit set
			// OCI's swap is memory and swap together, as v1's memsw;
			// v2 limits swap alone.
			swap := *m.Swap
			if swap >= 0 && *m.Limit >= 0 {
				swap -= *m.Limit
			}
			if swap < 0 && *m.Swap >= 0 {
				errs = append(errs, fmt.Errorf("linux.resources.memory.swap %d: less than memory.limit %d (swap counts memory and swap together)", *m.Swap, *m.Limit))
			} else {
				errs = append(errs, w("memory.swap.max", limit(swap), "linux.resources.memory.swap"))
			}
		}
		if m.Reservation != nil {
			errs = append(errs, w("memory.low", limit(*m.Reservation), "linux.resources.memory.reservation"))
		}
	}
	if p := res.Pids; p != nil && p.Limit != 0 {
		errs = append(errs, w("pids.max", limit(p.Limit), "linux.resources.pids.limit"))
	}
	if c := res.CPU; c != nil {
		if c.Shares != nil && *c.Shares > 0 {
			// v1's shares (2..262144) onto v2's weight (1..10000), both ends
			// and the default (1024 → 39, near 100 by design of the scale)
			// mapped linearly, as the other runtimes convert them.
			sh := min(max(*c.Shares, 2), 262144)
			errs = append(errs, w("cpu.weight", strconv.FormatUint(1+((sh-2)*9999)/262142, 10), "linux.resources.cpu.shares"))
		}
		if c.Quota != nil || c.Period != nil {
			quota, period := "max", "100000"
			if c.Quota != nil && *c.Quota > 0 {
				quota = strconv.FormatInt(*c.Quota, 10)
			}
			if c.Period != nil && *c.Period > 0 {
				period = strconv.FormatUint(*c.Period, 10)
			}
			errs = append(errs, w("cpu.max", quota+" "+period, "linux.resources.cpu.quota/period"))
		}
		if c.Cpus != "" {
			errs = append(errs, w("cpuset.cpus", c.Cpus, "linux.resources.cpu.cpus"))
		}
		if c.Mems != "" {
			errs = append(errs, w("cpuset.mems", c.Mems, "linux.resources.cpu.mems"))
		}
	}
	for _, k := range slices.Sorted(maps.Keys(res.Unified)) {
		if k == "" || strings.ContainsAny(k, "/\x00") || strings.HasPrefix(k, ".") || !strings.Contains(k, ".") {
			errs = append(errs, fmt.Errorf("linux.resources.unified %q: not a cgroup file name", k))
			continue
		}
		if _, err := os.Stat(filepath.Join(dir, k)); err != nil {
			errs = append(errs, fmt.Errorf("linux.resources.unified %q: no such file in the container's cgroup (is its controller enabled?)", k))
			continue
		}
		errs = append(errs, w(k, res.Unified[k], "linux.resources.unified"))
	}
	return errors.Join(errs...)
}

// UpdateOCI writes new resources to a container's cgroup, by the
// directories NewOCI made (v2: one, under ""). What NewOCI refuses is
// refused here too; device rules are refused as well: on v2 a second
// device program could only narrow the first (both must allow).
func UpdateOCI(v2 bool, dirs map[string]string, res *specs.LinuxResources) error {
	if err := ociUnsupported(res, v2); err != nil {
		return err
	}
	if len(res.Devices) > 0 {
		return errors.New("linux.resources.devices: not updatable by cimg-oci (set them at create)")
	}
	if v2 {
		dir, ok := dirs[""]
		if !ok {
			return errors.New("the container's cgroup v2 directory is not recorded")
		}
		return ociLimitsV2(dir, res)
	}
	cg := newCgroup("", false)
	maps.Copy(cg.Dirs, dirs)
	return cg.ociLimitsV1(res)
}

// Freeze stops every process of a container's cgroup (frozen) or lets
// them go on, and returns once the kernel says it is done: v2's
// cgroup.freeze (cgroup.events reads "frozen 1"), v1's freezer.state
// (FREEZING until every task stopped: written again meanwhile, as a
// task forked during the freeze may have escaped the first pass).
func Freeze(v2 bool, dirs map[string]string, frozen bool) error {
	deadline := time.Now().Add(5 * time.Second)
	if v2 {
		dir, ok := dirs[""]
		if !ok {
			return errors.New("the container's cgroup v2 directory is not recorded")
		}
		v, want := "0", "frozen 0"
		if frozen {
			v, want = "1", "frozen 1"
		}
		if err := writeFile(filepath.Join(dir, "cgroup.freeze"), v); err != nil {
			return fmt.Errorf("cgroup.freeze: %w (Linux 5.2 or later has it)", err)
		}
		for {
			b, err := os.ReadFile(filepath.Join(dir, "cgroup.events"))
			if err != nil {
				return err
			}
			if strings.Contains(string(b), want) {
				return nil
			}
			if time.Now().After(deadline) {
				return fmt.Errorf("%s: not %q after 5 s", filepath.Join(dir, "cgroup.events"), want)
			}
			time.Sleep(time.Millisecond)
		}
	}
	dir, ok := dirs["freezer"]
	if !ok {
		return errors.New("this host mounts no cgroup v1 freezer controller")
	}
	v := "THAWED"
	if frozen {
		v = "FROZEN"
	}
	for {
		if err := writeFile(filepath.Join(dir, "freezer.state"), v); err != nil {
			return fmt.Errorf("freezer.state: %w", err)
		}
		b, err := os.ReadFile(filepath.Join(dir, "freezer.state"))
		if err != nil {
			return err
		}
		if strings.TrimSpace(string(b)) == v {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s: %s, not %s after 5 s", filepath.Join(dir, "freezer.state"), strings.TrimSpace(string(b)), v)
		}
		time.Sleep(time.Millisecond)
	}
}

// Frozen reports whether a container's cgroup is frozen (or freezing).
func Frozen(v2 bool, dirs map[string]string) bool {
	if v2 {
		b, _ := os.ReadFile(filepath.Join(dirs[""], "cgroup.freeze"))
		return strings.TrimSpace(string(b)) == "1"
	}
	d, ok := dirs["freezer"]
	if !ok {
		return false
	}
	b, _ := os.ReadFile(filepath.Join(d, "freezer.state"))
	return strings.TrimSpace(string(b)) != "THAWED"
}
