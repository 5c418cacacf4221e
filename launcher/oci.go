package launcher

import (
	"errors"
	"fmt"
	"maps"
	"os"
	"path"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"unsafe"

	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"

	"cimg.dev/cimg/internal/cgroup"
	"cimg.dev/cimg/manifest"
)

// OCIContainer is a container as cimg-oci's create asks the launch
// sequence for it: the same enterRoot, fork child and cgroup join as a
// cimg-run launch, planned from an OCI runtime-spec config instead of a
// manifest. The config is the operator's: it is applied as written, with
// runc's default masked and read-only paths kept as a floor, and every
// field this launcher does not apply is refused (ociRefuse), never
// ignored.
type OCIContainer struct {
	ID       string
	Spec     *specs.Spec
	Rootfs   string         // absolute host directory: root.path, or a .cimg mounted from the cache
	Bundle   string         // relative bind sources are below it
	StateDir string         // the container's state directory; its root is assembled on StateDir/root
	Fifo     string         // the exec fifo the child waits on until start
	Console  *os.File       // connected --console-socket, when process.terminal
	Cgroup   *cgroup.Cgroup // made by the caller (cgroup.NewOCI)
	// Seccomp is Spec's linux.seccomp compiled by the caller
	// (internal/ociseccomp), nil for none: the compiler stays out of this
	// package, which cimg-run links too.
	Seccomp *unix.SockFprog
	// CreateContainer, when set, runs the config's createContainer hooks
	// (the caller's runner, given the process's pid; its error is
	// returned as it is): on the thread that built the root, once every
	// mount is in and before pivot_root, so a hook's path resolves in the
	// runtime's view while the hook runs in the container's mount,
	// network, UTS, IPC and pid namespaces. The hooks due before them
	// (createRuntime) the runner runs on a goroutine of their own.
	CreateContainer func(pid int) error
}

// ociExtra is what the Plan does not carry for an OCI launch.
type ociExtra struct {
	joins      []ociJoin // namespaces joined by path, by the launch thread
	noCgroupNS bool
	filter     *unix.SockFprog
	caps       *specs.LinuxCapabilities
	umask      *uint32
	oomAdj     *int
}

type ociJoin struct {
	typ  specs.LinuxNamespaceType
	path string
	flag int
}

var nsFlags = map[specs.LinuxNamespaceType]int{
	specs.PIDNamespace: unix.CLONE_NEWPID, specs.NetworkNamespace: unix.CLONE_NEWNET, specs.MountNamespace: unix.CLONE_NEWNS,
	specs.IPCNamespace: unix.CLONE_NEWIPC, specs.UTSNamespace: unix.CLONE_NEWUTS, specs.UserNamespace: unix.CLONE_NEWUSER,
	specs.CgroupNamespace: unix.CLONE_NEWCGROUP, specs.TimeNamespace: unix.CLONE_NEWTIME,
}

// runc's default masks: the floor every cimg-oci container keeps, on top
// of the launcher's own (procMaskFiles, procMaskDirs, procReadOnly).
var ociMaskFloor = []string{"/proc/acpi", "/proc/asound", "/proc/kcore", "/proc/keys", "/proc/latency_stats",
	"/proc/timer_list", "/proc/timer_stats", "/proc/sched_debug", "/proc/scsi", "/sys/firmware", "/sys/devices/virtual/powercap"}

// ociRefuse names the first field of s that cimg-oci does not apply.
func ociRefuse(s *specs.Spec) error {
	switch {
	case s.Process == nil:
		return errors.New("process: missing (cimg-oci starts a process; there is nothing to run)")
	case len(s.Process.Args) == 0:
		return errors.New("process.args: empty")
	case s.Root == nil || s.Root.Path == "":
		return errors.New("root.path: missing")
	case s.Linux == nil:
		return errors.New("linux: missing; cimg-oci runs Linux containers only")
	case s.Solaris != nil, s.Windows != nil, s.VM != nil, s.ZOS != nil:
		return errors.New("solaris/windows/vm/zos: not supported by cimg-oci")
	case s.Process.ApparmorProfile != "":
		return errors.New("process.apparmorProfile: AppArmor is not supported by cimg-oci")
	case s.Process.SelinuxLabel != "", s.Linux.MountLabel != "":
		return errors.New("process.selinuxLabel / linux.mountLabel: SELinux is not supported by cimg-oci")
	case s.Process.Scheduler != nil:
		return errors.New("process.scheduler: not supported by cimg-oci")
	case s.Process.IOPriority != nil:
		return errors.New("process.ioPriority: not supported by cimg-oci")
	case s.Process.ExecCPUAffinity != nil:
		return errors.New("process.execCPUAffinity: not supported by cimg-oci")
	case s.Process.CommandLine != "", s.Process.User.Username != "":
		return errors.New("process.commandLine / process.user.username: Windows fields, not supported")
	case s.Linux.IntelRdt != nil:
		return errors.New("linux.intelRdt: not supported by cimg-oci")
	case s.Linux.Personality != nil:
		return errors.New("linux.personality: not supported by cimg-oci")
	case len(s.Linux.TimeOffsets) > 0:
		return errors.New("linux.timeOffsets: time namespaces are not supported by cimg-oci")
	}
	if s.Hooks != nil && len(s.Hooks.CreateContainer) > 0 {
		for _, ns := range s.Linux.Namespaces {
			if ns.Type == specs.UserNamespace {
				// The launch thread that runs them cannot enter a user
				// namespace (the process is multithreaded): they would
				// run as the host's root.
				return errors.New("hooks.createContainer with a user namespace: not supported by cimg-oci")
			}
		}
	}
	if _, ok := ociPropagation[s.Linux.RootfsPropagation]; !ok && s.Linux.RootfsPropagation != "" {
		return fmt.Errorf("linux.rootfsPropagation %q: not a propagation (want [r]private, [r]shared, [r]slave or [r]unbindable)", s.Linux.RootfsPropagation)
	}
	return nil
}

// ociPlan maps the config onto the launch: namespaces, the root and its
// mounts, /proc with its masks, the process.
func ociPlan(c *OCIContainer) (*Plan, *ociExtra, error) {
	s := c.Spec
	if err := ociRefuse(s); err != nil {
		return nil, nil, err
	}
	p := &Plan{Name: c.ID, StateDir: c.StateDir}
	x := &ociExtra{noCgroupNS: true, oomAdj: s.Process.OOMScoreAdj}
	has := map[specs.LinuxNamespaceType]bool{}
	for i, ns := range s.Linux.Namespaces {
		flag, ok := nsFlags[ns.Type]
		if !ok || ns.Type == specs.TimeNamespace {
			return nil, nil, fmt.Errorf("linux.namespaces[%d]: type %q is not supported by cimg-oci", i, ns.Type)
		}
		if has[ns.Type] {
			return nil, nil, fmt.Errorf("linux.namespaces[%d]: %s given twice", i, ns.Type)
		}
		has[ns.Type] = true
		if ns.Path != "" {
			// Joined by the launch thread (ociSpawn), which then builds the
			// root in them and forks the process. Not a user namespace: its
			// ids would have to be the holder's and it must come before
			// the others; nor a cgroup namespace, entered only after the
			// cgroup join, by the child.
			switch ns.Type {
			case specs.NetworkNamespace, specs.IPCNamespace, specs.UTSNamespace, specs.MountNamespace, specs.PIDNamespace:
				x.joins = append(x.joins, ociJoin{ns.Type, ns.Path, flag})
				continue
			}
			return nil, nil, fmt.Errorf("linux.namespaces[%d]: joining an existing %s namespace (path %s) is not supported by cimg-oci", i, ns.Type, ns.Path)
		}
		switch ns.Type {
		case specs.PIDNamespace:
			p.NewPID = true
		case specs.CgroupNamespace:
			x.noCgroupNS = false
		case specs.UserNamespace:
		default:
			p.Unshare |= uintptr(flag)
		}
	}
	p.HostSlave = s.Linux.RootfsPropagation == "slave" || s.Linux.RootfsPropagation == "rslave"
	if !has[specs.MountNamespace] {
		return nil, nil, errors.New("linux.namespaces: a container without a mount namespace of its own is not supported by cimg-oci")
	}
	if has[specs.UserNamespace] {
		m, err := ociIDMap(s.Linux)
		if err != nil {
			return nil, nil, err
		}
		p.UserNS = m
	} else if len(s.Linux.UIDMappings)+len(s.Linux.GIDMappings) > 0 {
		return nil, nil, errors.New("linux.uidMappings/gidMappings: given without a user namespace")
	}
	if s.Hostname != "" || s.Domainname != "" {
		if !has[specs.UTSNamespace] {
			return nil, nil, errors.New("hostname: needs a uts namespace of the container's own")
		}
		if s.Domainname != "" {
			return nil, nil, errors.New("domainname: not supported by cimg-oci")
		}
		p.Hostname = s.Hostname
	}
	for k, v := range s.Linux.Sysctl {
		if err := ociSysctlAllowed(k, has); err != nil {
			return nil, nil, err
		}
		if p.Sysctl == nil {
			p.Sysctl = map[string]string{}
		}
		p.Sysctl[k] = v
	}
	x.filter = c.Seccomp
	if err := ociProcess(p, x, s.Process, s, c.Rootfs); err != nil {
		return nil, nil, err
	}
	var dirs map[string]string
	if c.Cgroup != nil {
		dirs = c.Cgroup.Dirs
	}
	if err := ociMounts(p, s, c.Rootfs, c.Bundle, dirs); err != nil {
		return nil, nil, err
	}
	return p, x, nil
}

// ociIDMap takes the config's uid and gid mappings, each range as given.
func ociIDMap(l *specs.Linux) (*IDMap, error) {
	if len(l.UIDMappings) == 0 || len(l.GIDMappings) == 0 {
		return nil, fmt.Errorf("linux.uidMappings/gidMappings: a user namespace needs both (%d and %d ranges given)", len(l.UIDMappings), len(l.GIDMappings))
	}
	m := &IDMap{}
	for _, set := range []struct {
		name string
		in   []specs.LinuxIDMapping
		out  *[]IDRange
	}{{"uidMappings", l.UIDMappings, &m.UIDs}, {"gidMappings", l.GIDMappings, &m.GIDs}} {
		for i, r := range set.in {
			if r.Size == 0 || r.ContainerID+r.Size < r.ContainerID || r.HostID+r.Size < r.HostID {
				return nil, fmt.Errorf("linux.%s[%d]: size %d from %d (host %d): empty or past the last id", set.name, i, r.Size, r.ContainerID, r.HostID)
			}
			*set.out = append(*set.out, IDRange{Inside: r.ContainerID, Host: r.HostID, Size: r.Size})
		}
	}
	return m, nil
}

// ociSysctlAllowed admits the sysctls that belong to a namespace the
// container has: anything else would change the host.
func ociSysctlAllowed(k string, has map[specs.LinuxNamespaceType]bool) error {
	switch {
	case strings.HasPrefix(k, "net."):
		if has[specs.NetworkNamespace] {
			return nil
		}
	case slices.Contains([]string{"kernel.msgmax", "kernel.msgmnb", "kernel.msgmni", "kernel.sem", "kernel.shmall", "kernel.shmmax", "kernel.shmmni", "kernel.shm_rmid_forced"}, k),
		strings.HasPrefix(k, "fs.mqueue."):
		if has[specs.IPCNamespace] {
			return nil
		}
	default:
		return fmt.Errorf("linux.sysctl %s: not a namespaced sysctl; it would change the host: refused", k)
	}
	return fmt.Errorf("linux.sysctl %s: the container shares that namespace with the host: refused", k)
}

// ociProcess plans the process: command, environment, ids, rlimits,
// capabilities, no_new_privs (the seccomp filter comes compiled: x.filter).
func ociProcess(p *Plan, x *ociExtra, pr *specs.Process, s *specs.Spec, rootfs string) error {
	if !path.IsAbs(pr.Cwd) {
		return fmt.Errorf("process.cwd %q: must be absolute", pr.Cwd)
	}
	p.Workdir = path.Clean(pr.Cwd)
	p.Env = pr.Env
	p.Argv = slices.Clone(pr.Args)
	if !strings.Contains(p.Argv[0], "/") {
		// Looked up in the process's $PATH, in the container's root, as
		// runc does before it starts anything.
		found := ""
		for _, d := range strings.Split(envValue(pr.Env, "PATH", "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"), ":") {
			if !path.IsAbs(d) {
				continue
			}
			if st, err := os.Stat(filepath.Join(rootfs, d, p.Argv[0])); err == nil && st.Mode().IsRegular() && st.Mode()&0o111 != 0 {
				found = path.Join(d, p.Argv[0])
				break
			}
		}
		if found == "" {
			return fmt.Errorf("exec: %q: executable file not found in $PATH", p.Argv[0])
		}
		p.Argv[0] = found
	}
	if err := commandAllowed(p.Argv[0]); err != nil {
		return err
	}
	p.UID, p.GID = pr.User.UID, pr.User.GID
	p.Groups = pr.User.AdditionalGids
	p.NoNewPrivs = pr.NoNewPrivileges
	x.umask = pr.User.Umask
	for i, r := range pr.Rlimits {
		res, ok := rlimitResource[strings.ToLower(strings.TrimPrefix(r.Type, "RLIMIT_"))]
		if !ok {
			return fmt.Errorf("process.rlimits[%d]: %s is not known to cimg-oci", i, r.Type)
		}
		p.Rlimits = append(p.Rlimits, Rlimit{Resource: res, Soft: r.Soft, Hard: r.Hard})
	}
	if pr.Capabilities != nil {
		for _, set := range [][]string{pr.Capabilities.Bounding, pr.Capabilities.Effective, pr.Capabilities.Permitted,
			pr.Capabilities.Inheritable, pr.Capabilities.Ambient} {
			for _, n := range set {
				if _, ok := manifest.Capabilities[manifest.CanonicalCap(n)]; !ok {
					return fmt.Errorf("process.capabilities: %s is not known to cimg-oci", n)
				}
			}
		}
	}
	x.caps = pr.Capabilities
	return nil
}

// ociCaps sets the child's capability sets exactly as the config has them
// (the launcher's own launches keep one list in every set).
func ociCaps(fp *forkPlan, c *specs.LinuxCapabilities) {
	fp.capData = [2]unix.CapUserData{}
	fp.keep, fp.drop = nil, nil
	if c == nil {
		c = &specs.LinuxCapabilities{}
	}
	num := func(n string) int { return manifest.Capabilities[manifest.CanonicalCap(n)] }
	set := func(names []string, f func(d *unix.CapUserData, bit uint32)) {
		for _, n := range names {
			k := num(n)
			f(&fp.capData[k/32], 1<<(k%32))
		}
	}
	set(c.Effective, func(d *unix.CapUserData, b uint32) { d.Effective |= b })
	set(c.Permitted, func(d *unix.CapUserData, b uint32) { d.Permitted |= b })
	set(c.Inheritable, func(d *unix.CapUserData, b uint32) { d.Inheritable |= b })
	bounding := map[int]bool{}
	for _, n := range c.Bounding {
		bounding[num(n)] = true
	}
	for k := 0; k <= lastCap; k++ {
		if !bounding[k] {
			fp.drop = append(fp.drop, uintptr(k))
		}
	}
	for _, n := range c.Ambient {
		fp.keep = append(fp.keep, uintptr(num(n)))
	}
}

// ociMountFlags are the mount options that are flags; the rest are the
// filesystem's data.
var ociMountFlags = map[string]struct {
	clear bool
	flag  uintptr
}{
	"defaults": {false, 0}, "ro": {false, unix.MS_RDONLY}, "rw": {true, unix.MS_RDONLY},
	"nosuid": {false, unix.MS_NOSUID}, "suid": {true, unix.MS_NOSUID}, "nodev": {false, unix.MS_NODEV}, "dev": {true, unix.MS_NODEV},
	"noexec": {false, unix.MS_NOEXEC}, "exec": {true, unix.MS_NOEXEC}, "sync": {false, unix.MS_SYNCHRONOUS}, "async": {true, unix.MS_SYNCHRONOUS},
	"dirsync": {false, unix.MS_DIRSYNC}, "mand": {false, unix.MS_MANDLOCK}, "nomand": {true, unix.MS_MANDLOCK},
	"noatime": {false, unix.MS_NOATIME}, "atime": {true, unix.MS_NOATIME}, "nodiratime": {false, unix.MS_NODIRATIME}, "diratime": {true, unix.MS_NODIRATIME},
	"relatime": {false, unix.MS_RELATIME}, "norelatime": {true, unix.MS_RELATIME}, "strictatime": {false, unix.MS_STRICTATIME}, "nostrictatime": {true, unix.MS_STRICTATIME},
	"bind": {false, unix.MS_BIND}, "rbind": {false, unix.MS_BIND | unix.MS_REC},
}

var ociPropagation = map[string]uintptr{
	"private": unix.MS_PRIVATE, "rprivate": unix.MS_PRIVATE | unix.MS_REC, "shared": unix.MS_SHARED, "rshared": unix.MS_SHARED | unix.MS_REC,
	"slave": unix.MS_SLAVE, "rslave": unix.MS_SLAVE | unix.MS_REC, "unbindable": unix.MS_UNBINDABLE, "runbindable": unix.MS_UNBINDABLE | unix.MS_REC,
}

// ociMounts plans the root, the config's mounts in order, its devices,
// and /proc with the masked and read-only paths.
func ociMounts(p *Plan, s *specs.Spec, rootfs, bundle string, cgroupDirs map[string]string) error {
	p.Mounts = []MountSpec{{Kind: KindRootfs, Source: rootfs, Target: "/"}}
	var proc *MountSpec
	for i, m := range s.Mounts {
		if !path.IsAbs(m.Destination) {
			return fmt.Errorf("mounts[%d].destination %q: must be absolute", i, m.Destination)
		}
		if len(m.UIDMappings)+len(m.GIDMappings) > 0 {
			return fmt.Errorf("mounts[%d] (%s): idmapped mounts are not supported by cimg-oci", i, m.Destination)
		}
		ms := MountSpec{Kind: KindOCI, Source: m.Source, Target: path.Clean(m.Destination), FSType: m.Type}
		var data []string
		for _, o := range m.Options {
			if f, ok := ociMountFlags[o]; ok {
				if f.clear {
					ms.Flags &^= f.flag
				} else {
					ms.Flags |= f.flag
				}
				continue
			}
			if f, ok := ociPropagation[o]; ok {
				ms.Propagation = f
				continue
			}
			switch o {
			case "idmap", "ridmap", "tmpcopyup", "copy-symlink", "remount", "recursive", "rro", "rrw", "rnosuid", "rnodev", "rnoexec":
				return fmt.Errorf("mounts[%d] (%s): option %q is not supported by cimg-oci", i, m.Destination, o)
			}
			data = append(data, o)
		}
		ms.Data = strings.Join(data, ",")
		if m.Type == "bind" {
			ms.Flags |= unix.MS_BIND
			ms.FSType = ""
		}
		if ms.Flags&unix.MS_BIND != 0 {
			if !path.IsAbs(ms.Source) {
				ms.Source = filepath.Join(bundle, ms.Source)
			}
			// Filesystem options of a bind (runtime-tools' tests give
			// tmpfs ones) are the kernel's to ignore: MS_BIND takes none.
			ms.FSType, ms.Data = "", ""
		}
		switch {
		case m.Type == "proc":
			if ms.Target != "/proc" {
				return fmt.Errorf("mounts[%d]: proc at %s: cimg-oci mounts proc at /proc only", i, ms.Target)
			}
			ms.Kind = KindProc
			proc = &ms
			p.ProcAfter = len(p.Mounts)
			continue
		case ms.Target == "/proc" || strings.HasPrefix(ms.Target, "/proc/"):
			return fmt.Errorf("mounts[%d]: %s is under /proc, which the container's process mounts after these: not supported by cimg-oci", i, ms.Target)
		case m.Type == "cgroup" || m.Type == "cgroup2":
			// The container's own cgroups, as runc gives them on a v1
			// host: a tmpfs with each controller's directory of this
			// container bound read-only at its name. The host's tree
			// stays out of sight.
			flags := ms.Flags | unix.MS_RDONLY
			p.Mounts = append(p.Mounts, MountSpec{Kind: KindOCI, Source: "tmpfs", FSType: "tmpfs", Target: ms.Target,
				Flags: ms.Flags &^ unix.MS_RDONLY, Data: "mode=755,size=4k"})
			for _, c := range slices.Sorted(maps.Keys(cgroupDirs)) {
				p.Mounts = append(p.Mounts, MountSpec{Kind: KindOCI, Source: cgroupDirs[c], Target: path.Join(ms.Target, c),
					Flags: flags | unix.MS_BIND})
			}
			p.Mounts = append(p.Mounts, MountSpec{Kind: KindOCI, Source: "", Target: ms.Target, Flags: flags | unix.MS_BIND | unix.MS_REMOUNT})
			continue
		}
		p.Mounts = append(p.Mounts, ms)
	}
	if proc == nil {
		return errors.New("mounts: no proc at /proc; cimg-oci needs one (the container's process mounts it in its pid namespace)")
	}
	for i, d := range s.Linux.Devices {
		if !path.IsAbs(d.Path) || !strings.HasPrefix(path.Clean(d.Path), "/dev/") {
			return fmt.Errorf("linux.devices[%d].path %q: must be below /dev", i, d.Path)
		}
		if !slices.Contains([]string{"c", "u", "b", "p"}, d.Type) {
			return fmt.Errorf("linux.devices[%d].type %q: want c, u, b or p", i, d.Type)
		}
		mode, uid, gid := uint32(0o666), uint32(0), uint32(0)
		if d.FileMode != nil {
			mode = uint32(d.FileMode.Perm())
		}
		if d.UID != nil {
			uid = *d.UID
		}
		if d.GID != nil {
			gid = *d.GID
		}
		if p.UserNS != nil {
			uid, gid = p.UserNS.HostUID(uid), p.UserNS.HostGID(gid)
		}
		p.Mounts = append(p.Mounts, MountSpec{Kind: KindDevice, Target: path.Clean(d.Path),
			Data: fmt.Sprintf("%s %d %d %#o %d %d", d.Type, d.Major, d.Minor, mode, uid, gid)})
	}
	if s.Root.Readonly || s.Linux.RootfsPropagation != "" {
		// Last, once the root's submounts are there: read-only, and the
		// root's propagation (a new peer group of the container's own for
		// shared: the host's / was made private first; for slave it was
		// made slave, so the root stays a slave of the host's group).
		m := MountSpec{Kind: KindRootfsRO, Target: "/", Propagation: ociPropagation[s.Linux.RootfsPropagation]}
		if s.Root.Readonly {
			m.Flags = unix.MS_RDONLY
		}
		p.Mounts = append(p.Mounts, m)
	}
	// /proc, mounted by the process in its pid namespace, then what must
	// not be written or read: the config's paths and the floor.
	p.Proc = []MountSpec{*proc}
	ro := slices.Concat(s.Linux.ReadonlyPaths, procReadOnly)
	masked := slices.Concat(s.Linux.MaskedPaths, ociMaskFloor, procMaskFiles, procMaskDirs)
	seen := map[string]bool{}
	for _, t := range ro {
		t = path.Clean(t)
		if !seen["ro "+t] {
			seen["ro "+t] = true
			p.Proc = append(p.Proc, MountSpec{Kind: KindReadOnly, Target: t, Flags: unix.MS_RDONLY | unix.MS_NOSUID | unix.MS_NODEV | unix.MS_NOEXEC, Recursive: true, Optional: true})
		}
	}
	for _, t := range masked {
		t = path.Clean(t)
		if seen["mask "+t] {
			continue
		}
		seen["mask "+t] = true
		// /proc and /sys are this kernel's: their files are the host's
		// kind; the rest is the root's.
		where := t
		if !strings.HasPrefix(t, "/proc/") && !strings.HasPrefix(t, "/sys/") {
			where = filepath.Join(rootfs, t)
		}
		p.Proc = append(p.Proc, maskOf(t, where)...)
	}
	return nil
}

// maskOf is the mask of target t, whose kind is that of where in the
// launcher's view: a directory gets an empty read-only tmpfs, anything
// else /dev/null.
func maskOf(t, where string) []MountSpec {
	dir := MountSpec{Kind: KindMaskDir, Target: t, Flags: unix.MS_RDONLY | unix.MS_NOSUID | unix.MS_NODEV | unix.MS_NOEXEC, Data: "size=0,nr_inodes=1", Optional: true}
	file := MountSpec{Kind: KindMaskFile, Source: "/dev/null", Target: t, Flags: unix.MS_RDONLY, Optional: true}
	st, err := os.Lstat(where)
	switch {
	case err == nil && st.IsDir():
		return []MountSpec{dir}
	case err == nil || where != t:
		return []MountSpec{file}
	}
	// Not in this launcher's /proc or /sys, which its init may have
	// trimmed (systemd-nspawn shows no /sys/firmware), but maybe in the
	// container's fresh ones: a file, or else (the child sees ENOTDIR) a
	// directory.
	dir.Alt = true
	return []MountSpec{file, dir}
}

// OCICreate builds the container and leaves its process waiting on the
// exec fifo (fork.go, stepFifo): it returns the process's pid once it
// waits there. It locks the calling goroutine to its thread for good,
// like Exec: call it from main, and exit soon after. The process outlives
// this one (no parent-death signal): the caller (conmon, a shim) reaps it.
func OCICreate(c *OCIContainer) (int, error) {
	if os.Geteuid() != 0 {
		return 0, errors.New("cimg-oci must run as root")
	}
	p, x, err := ociPlan(c)
	if err != nil {
		return 0, err
	}
	// Until its execve the process is this binary: never dumpable, and it
	// carries no fd its caller leaked (CVE-2019-5736, CVE-2024-21626).
	if err := unix.Prctl(unix.PR_SET_DUMPABLE, 0, 0, 0, 0); err != nil {
		return 0, err
	}
	if err := cloexecAll(); err != nil {
		return 0, err
	}
	if x.umask != nil {
		syscall.Umask(int(*x.umask))
	}
	l := &launch{plan: p, opts: &Options{}, cg: c.Cgroup}
	defer l.close()
	if l.fp, err = newForkPlan(p); err != nil {
		return 0, err
	}
	l.fp.filter = x.filter
	l.fp.noPdeathsig = true
	l.fp.noCgroupNS = x.noCgroupNS
	ociCaps(l.fp, x.caps)
	fifo, err := os.OpenFile(c.Fifo, unix.O_PATH|unix.O_CLOEXEC, 0)
	if err != nil {
		return 0, fmt.Errorf("exec fifo: %w", err)
	}
	defer fifo.Close()
	if l.fp.fifoPath, err = syscall.BytePtrFromString("/proc/self/fd/" + strconv.Itoa(int(fifo.Fd()))); err != nil {
		return 0, err
	}
	l.sync, l.errp = [2]int{-1, -1}, [2]int{-1, -1}
	if err := unix.Pipe2(l.sync[:], unix.O_CLOEXEC); err != nil {
		return 0, err
	}
	if err := unix.Pipe2(l.errp[:], unix.O_CLOEXEC); err != nil {
		return 0, err
	}
	l.fp.syncR, l.fp.syncW, l.fp.errR, l.fp.errW = l.sync[0], l.sync[1], l.errp[0], l.errp[1]
	if err := l.cgroupEntry(c.Cgroup); err != nil {
		return 0, err
	}
	if p.UserNS != nil {
		if l.proc, err = os.Open("/proc"); err != nil {
			return 0, err
		}
	}
	var joins []*os.File
	for _, j := range x.joins {
		f, err := os.Open(j.path)
		if err != nil {
			return 0, fmt.Errorf("linux.namespaces %s: %w", j.typ, err)
		}
		defer f.Close()
		joins = append(joins, f)
	}
	// The container's world is built on a thread of its own, locked and
	// never unlocked: its namespaces and root are the container's, and it
	// ends with its goroutine, leaving this one on the host.
	type result struct {
		pid int
		err error
	}
	done := make(chan result, 1)
	go func() {
		runtime.LockOSThread()
		pid, err := l.ociSpawn(c, p, x, joins)
		done <- result{pid, err}
	}()
	r := <-done
	if r.err == nil && x.oomAdj != nil {
		// From this thread: the host's /proc.
		if err := os.WriteFile("/proc/"+strconv.Itoa(r.pid)+"/oom_score_adj", []byte(strconv.Itoa(*x.oomAdj)), 0); err != nil {
			unix.Kill(r.pid, unix.SIGKILL)
			return 0, fmt.Errorf("process.oomScoreAdj: %w", err)
		}
	}
	return r.pid, r.err
}

// ociSpawn builds the root on the calling (locked) thread, forks the
// container's process from it and waits until that process waits on the
// exec fifo.
func (l *launch) ociSpawn(c *OCIContainer, p *Plan, x *ociExtra, joins []*os.File) (int, error) {
	for i, j := range x.joins {
		// A mount namespace is refused to a thread that shares its root
		// and working directory with others: this one (never returned
		// to the runtime) gets its own first.
		if j.flag == unix.CLONE_NEWNS {
			if err := unix.Unshare(unix.CLONE_FS); err != nil {
				return 0, fmt.Errorf("linux.namespaces: join mount %s: unshare the thread's filesystem context: %w", j.path, err)
			}
		}
		if err := unix.Setns(int(joins[i].Fd()), j.flag); err != nil {
			return 0, fmt.Errorf("linux.namespaces: join %s %s: %w", j.typ, j.path, err)
		}
	}
	// /proc goes in where the config lists it (the runtime spec wants
	// the mounts in order, as mountinfo shows them): the child is forked
	// there, mounts it in its pid namespace and waits. Not with a terminal,
	// which is opened on the container's devpts after the mounts, and the
	// child must hold it from the fork: then /proc comes last.
	early, pts := 0, -1
	defer func() {
		if pts >= 0 {
			unix.Close(pts)
		}
	}()
	atProc := func(root, proc *os.File) (err error) {
		if c.Spec.Process.Terminal {
			if pts, err = l.ociTerminal(c, p, int(root.Fd())); err != nil {
				return err
			}
		}
		early, err = l.forkAtProc(p, root, proc)
		return err
	}
	var beforePivot func() error
	switch {
	case c.CreateContainer != nil:
		// The hooks want the process (its pid, its pid namespace) before
		// pivot_root: it is forked there at the latest, and /proc comes
		// last where it would have come after the pivot.
		if c.Spec.Process.Terminal || p.ProcAfter == 0 {
			p.ProcAfter = len(p.Mounts)
		}
		beforePivot = func() error {
			if early == 0 {
				return errors.New("hooks.createContainer: the process was not forked before pivot_root") // atProc always runs with hooks
			}
			// What this thread forks from here on (only the hooks: the
			// process is forked) starts in the process's pid namespace.
			pidfd, err := unix.PidfdOpen(early, 0)
			if err != nil {
				return fmt.Errorf("hooks.createContainer: the container's process: %w", err)
			}
			err = unix.Setns(pidfd, unix.CLONE_NEWPID)
			unix.Close(pidfd)
			if err != nil {
				return fmt.Errorf("hooks.createContainer: join the container's pid namespace: %w", err)
			}
			return c.CreateContainer(early)
		}
	case c.Spec.Process.Terminal || p.ProcAfter == 0:
		atProc = nil
	}
	// fail ends a child forked early: never released, it ran nothing of
	// the container's.
	fail := func(err error) (int, error) {
		if early > 0 {
			unix.Kill(early, unix.SIGKILL)
			unix.Wait4(early, nil, 0, nil)
		}
		return 0, err
	}
	if err := enterRoot(p, nil, "", atProc, beforePivot); err != nil {
		return fail(fmt.Errorf("build the container's root: %w", err))
	}
	// The command must be there now, as runc checks before it waits for
	// start: a failed execve after start would only be an exit status
	// (callers map these errors to 127 and 126).
	if err := unix.Access(p.Argv[0], unix.X_OK); err != nil {
		return fail(fmt.Errorf("exec: %q: %w", p.Argv[0], err))
	}
	pid := early
	if pid == 0 {
		if c.Spec.Process.Terminal {
			root, err := unix.Open("/", unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
			if err != nil {
				return 0, err
			}
			pts, err = l.ociTerminal(c, p, root)
			unix.Close(root)
			if err != nil {
				return 0, err
			}
		}
		var err error
		if pid, err = l.fork(); err != nil {
			return 0, err
		}
	}
	if err := l.releaseChild(pid); err != nil {
		unix.Kill(pid, unix.SIGKILL)
		unix.Wait4(pid, nil, 0, nil)
		if ce, ok := err.(childError); ok && ce.step == stepExec {
			err = fmt.Errorf("%w: %s", err, explainExec(p, unix.Errno(ce.errno)))
		}
		return 0, fmt.Errorf("container setup, %w", err)
	}
	return pid, nil
}

// ociTerminal opens the process's terminal on the devpts below root (the
// container's root directory), sends its master to the console socket and
// makes the other side the child's stdio; it returns that side, which the
// caller closes once the child is forked.
func (l *launch) ociTerminal(c *OCIContainer, p *Plan, root int) (int, error) {
	if c.Console == nil {
		return -1, errors.New("process.terminal: needs --console-socket")
	}
	ptm, pts, err := openPTY(root, p, c.Spec.Process.ConsoleSize)
	if err != nil {
		return -1, fmt.Errorf("process.terminal: %w", err)
	}
	err = sendFD(c.Console, ptm)
	unix.Close(ptm)
	if err != nil {
		unix.Close(pts)
		return -1, fmt.Errorf("--console-socket: send the terminal: %w", err)
	}
	l.fp.stdio = [3]int{pts, pts, pts}
	l.fp.tty = true
	return pts, nil
}

// forkAtProc forks the child while the root is half built, to mount
// /proc on dir (the new root's /proc) in its pid namespace before the
// mounts listed after it; it returns once the child has. The child then
// waits to be released as after l.fork, and enters root (an fd of the
// new root's directory) and the working directory itself: it was forked
// before the launch thread switched root, which moves it along with
// pivot_root but not where chroot has to stand in (an initramfs, a
// shared root).
func (l *launch) forkAtProc(p *Plan, root, dir *os.File) (int, error) {
	proc := p.Proc[0]
	proc.Target = "/proc/self/fd/" + strconv.Itoa(int(dir.Fd())) // the child's own fd (its /proc is still the host's)
	m, err := rawMounts([]MountSpec{proc})
	if err != nil {
		return 0, err
	}
	if l.fp.procMounts, err = rawMounts(p.Proc[1:]); err != nil {
		return 0, err
	}
	if l.fp.chdir, err = syscall.BytePtrFromString(p.Workdir); err != nil {
		return 0, err
	}
	l.fp.earlyProc, l.fp.rootFD = &m[0], int(root.Fd())
	pid, err := l.fork()
	if err != nil {
		return 0, err
	}
	var report childError
	buf := (*[unsafe.Sizeof(report)]byte)(unsafe.Pointer(&report))[:]
	if n, _ := readFull(l.errp[0], buf); n == 0 || report.step != stepProc || report.errno != 0 {
		unix.Kill(pid, unix.SIGKILL)
		unix.Wait4(pid, nil, 0, nil)
		if n == 0 {
			return 0, errors.New("container setup: the process ended before mounting /proc")
		}
		return 0, fmt.Errorf("container setup, %w", report)
	}
	return pid, nil
}

// openPTY opens a new terminal on the devpts of the root dirfd root (its
// dev/pts/ptmx, checked to be one): the master for the caller, the other
// side owned by the process's user.
func openPTY(root int, p *Plan, size *specs.Box) (ptm, pts int, err error) {
	fd, err := unix.Openat2(root, "dev/pts/ptmx", &unix.OpenHow{
		Flags:   unix.O_RDWR | unix.O_NOCTTY | unix.O_CLOEXEC,
		Resolve: unix.RESOLVE_BENEATH | unix.RESOLVE_NO_SYMLINKS | unix.RESOLVE_NO_MAGICLINKS,
	})
	if err != nil {
		return -1, -1, fmt.Errorf("open the container's /dev/pts/ptmx: %w", err)
	}
	var st unix.Stat_t
	var sfs unix.Statfs_t
	if err := unix.Fstat(fd, &st); err != nil || st.Mode&unix.S_IFMT != unix.S_IFCHR || unix.Major(st.Rdev) != 5 || unix.Minor(st.Rdev) != 2 ||
		unix.Fstatfs(fd, &sfs) != nil || sfs.Type != unix.DEVPTS_SUPER_MAGIC {
		unix.Close(fd)
		return -1, -1, errors.New("the container's /dev/pts/ptmx is not a devpts ptmx: refused")
	}
	if err := unix.IoctlSetPointerInt(fd, unix.TIOCSPTLCK, 0); err != nil {
		unix.Close(fd)
		return -1, -1, fmt.Errorf("unlock the pty: %w", err)
	}
	peer, _, errno := unix.Syscall(unix.SYS_IOCTL, uintptr(fd), unix.TIOCGPTPEER, unix.O_RDWR|unix.O_NOCTTY|unix.O_CLOEXEC)
	if errno != 0 {
		unix.Close(fd)
		return -1, -1, fmt.Errorf("open the pty's other side: %w", errno)
	}
	uid, gid := p.UID, p.GID
	if m := p.UserNS; m != nil {
		uid, gid = m.HostUID(uid), m.HostGID(gid)
	}
	unix.Fchown(int(peer), int(uid), int(gid))
	if size != nil {
		unix.IoctlSetWinsize(fd, unix.TIOCSWINSZ, &unix.Winsize{Row: uint16(size.Height), Col: uint16(size.Width)})
	}
	return fd, int(peer), nil
}

// sendFD passes fd over the connected unix socket sock (SCM_RIGHTS), as
// --console-socket callers (conmon, containerd) expect.
func sendFD(sock *os.File, fd int) error {
	rights := unix.UnixRights(fd)
	return unix.Sendmsg(int(sock.Fd()), []byte("/dev/ptmx"), rights, nil, 0)
}
