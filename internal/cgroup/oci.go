package cgroup

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	specs "github.com/opencontainers/runtime-spec/specs-go"
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

// NewOCI makes the cgroup rel (OCIPath) in every v1 hierarchy this host
// mounts and writes res there. It refuses, before making anything, the
// resources cimg-oci does not apply, naming the field: none is ignored.
// Pure cgroup v2 hosts are refused for now.
func NewOCI(rel string, res *specs.LinuxResources) (cg *Cgroup, err error) {
	if IsV2() {
		return nil, errors.New("linux.resources: cimg-oci supports cgroup v1 (and hybrid) hosts only; this host is pure cgroup v2")
	}
	if res == nil {
		res = &specs.LinuxResources{}
	}
	if err := ociUnsupported(res); err != nil {
		return nil, err
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
	return cg, cg.ociLimitsV1(res)
}

// ociUnsupported names the first resource cimg-oci would not apply.
func ociUnsupported(r *specs.LinuxResources) error {
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
	case len(r.Unified) > 0:
		return errors.New("linux.resources.unified is not supported by cimg-oci (cgroup v2 files on a v1 host)")
	}
	if m := r.Memory; m != nil {
		switch {
		case m.Kernel != nil:
			return errors.New("linux.resources.memory.kernel is not supported by cimg-oci (deprecated by the kernel)")
		case m.KernelTCP != nil:
			return errors.New("linux.resources.memory.kernelTCP is not supported by cimg-oci")
		case m.UseHierarchy != nil:
			return errors.New("linux.resources.memory.useHierarchy is not supported by cimg-oci")
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
	return cg.ociDevicesV1(r.Devices)
}

// ociDevicesV1 writes the config's device rules in order (a later rule
// wins), then allows the nodes every container's /dev gets (devNodes in
// the launcher, and the terminal): the floor runc and crun keep too.
func (cg *Cgroup) ociDevicesV1(rules []specs.LinuxDeviceCgroup) error {
	if _, ok := cg.Dirs["devices"]; !ok {
		if len(rules) > 0 {
			return errors.New("linux.resources.devices: this host mounts no cgroup v1 devices controller")
		}
		return nil
	}
	num := func(p *int64) string {
		if p == nil || *p < 0 {
			return "*"
		}
		return strconv.FormatInt(*p, 10)
	}
	for i, r := range rules {
		typ := r.Type
		if typ == "" {
			typ = "a"
		}
		if typ != "a" && typ != "c" && typ != "b" {
			return fmt.Errorf("linux.resources.devices[%d].type %q: want a, c or b", i, typ)
		}
		access := r.Access
		if access == "" {
			access = "rwm"
		}
		rule := typ + " " + num(r.Major) + ":" + num(r.Minor) + " " + access
		if typ == "a" {
			rule = "a"
		}
		file := "devices.deny"
		if r.Allow {
			file = "devices.allow"
		}
		if err := cg.ociWrite("devices", file, rule, fmt.Sprintf("linux.resources.devices[%d] (%s %s)", i, file, rule)); err != nil {
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
