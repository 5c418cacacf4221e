package launcher

import (
	"errors"
	"fmt"
	"maps"
	"os"
	"path"
	"slices"
	"sort"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"

	"cimg.dev/cimg/manifest"
)

// Plan is the launch, decided in one place (newPlan) from the embedded
// manifest, the operator's grants and the command line. enterRoot builds
// the app's world from Mounts; the child (fork.go) runs Proc and the rest
// through the forkPlan made of it. Nothing after newPlan reads the
// manifest.
type Plan struct {
	Name       string
	Memory     string // the memory limit, for the OOM report
	Argv       []string
	Env        []string
	Workdir    string
	UID, GID   uint32
	Groups     []uint32
	Hostname   string  // set when the uts namespace is private
	Unshare    uintptr // CLONE_NEW* the launch thread unshares (mount always, unless cimg-oci joined one)
	NewPID     bool    // the child is born in a new pid namespace
	Keep       []int   // capabilities kept; every other one is dropped
	NoNewPrivs bool
	Seccomp    string // "default" or "unconfined"
	Rlimits    []Rlimit
	Mounts     []MountSpec // enterRoot's, in order, below the new root
	Proc       []MountSpec // the child's, once it is in its pid namespace
	// ProcAfter, when not 0, puts /proc (Proc[0]) in after that many of
	// Mounts, in the order an OCI config lists it: the child is forked
	// there and mounts it first thing (cimg-oci). 0: the child mounts it
	// after all of them.
	ProcAfter int      `json:",omitempty"`
	Volumes   []Volume // host directories the mounts use, made first
	Init      bool     // exec the sealed init in front of the app
	UserNS    *IDMap   // a private user namespace with this mapping, or nil
	// Sysctl is written by the launch thread once in its namespaces
	// (cimg-oci: the config's linux.sysctl, namespaced keys only).
	Sysctl map[string]string `json:",omitempty"`
	// HostSlave: the launch thread's copy of the host's mounts is made
	// slave, not private, so that what the host mounts below the root
	// propagates in (cimg-oci's rootfsPropagation slave). Nothing
	// propagates out either way.
	HostSlave bool `json:",omitempty"`

	StateDir string
	Image    string // the image's squashfs: a cache mount, or (PrivateMount) empty
	// PrivateMount: the launch thread loop-mounts the verified image fd
	// itself (PayloadSize bytes of squashfs) instead of binding Image.
	PrivateMount bool
	PayloadSize  int64
}

// IDMap maps ids 0..Count-1 of the app's user namespace to UIDBase.. and
// GIDBase.. on the host; or, where UIDs and GIDs are set (an OCI config's
// mappings, several ranges each), as those say.
type IDMap struct {
	UIDBase, GIDBase, Count uint32
	UIDs, GIDs              []IDRange `json:",omitempty"`
}

// IDRange maps Size ids from Inside in the namespace to Host.. outside.
type IDRange struct{ Inside, Host, Size uint32 }

// overflowID is what the kernel shows for an id the namespace does not
// map (/proc/sys/kernel/overflowuid's default).
const overflowID = 65534

func hostID(ranges []IDRange, base, id uint32) uint32 {
	if ranges == nil {
		return base + id
	}
	for _, r := range ranges {
		if id >= r.Inside && id-r.Inside < r.Size {
			return r.Host + id - r.Inside
		}
	}
	return overflowID
}

// HostUID is the host's uid for the app's uid u.
func (m *IDMap) HostUID(u uint32) uint32 { return hostID(m.UIDs, m.UIDBase, u) }

// HostGID is the host's gid for the app's gid g.
func (m *IDMap) HostGID(g uint32) uint32 { return hostID(m.GIDs, m.GIDBase, g) }

// lines is the uid_map or gid_map text: one "inside host size" line a range.
func (m *IDMap) lines(ranges []IDRange, base uint32) string {
	if ranges == nil {
		return fmt.Sprintf("0 %d %d\n", base, m.Count)
	}
	var b strings.Builder
	for _, r := range ranges {
		fmt.Fprintf(&b, "%d %d %d\n", r.Inside, r.Host, r.Size)
	}
	return b.String()
}

// Rlimit is one setrlimit(2) call.
type Rlimit struct {
	Resource   int
	Soft, Hard uint64
}

// Volume is a host directory a mount uses, made (without following any
// symlink) under the volume directory before the app's world is built.
type Volume struct {
	Rel      string // below the volume directory: app/volume
	UID, GID uint32 // owner when created: the app's user
	Layer    bool   // an overlay's layer: upper and work inside it
}

// Mount kinds. The flags of each are in the plan, printable as words
// (MountSpec.String), which is what the table tests read.
const (
	KindImage    = "image"     // the image's squashfs as /
	KindOverlay  = "overlay"   // a writable layer over the image's Target
	KindTmpfs    = "tmpfs"     //
	KindDevNodes = "dev-nodes" // the six standard nodes, each bound onto itself
	KindDevpts   = "devpts"    //
	KindBind     = "bind"      // a host directory (volume or granted host path)
	KindRemount  = "remount"   // new flags for what is mounted at Target
	KindProc     = "proc"      //
	KindReadOnly = "read-only" // a bind of Target onto itself, then read-only
	KindMaskFile = "mask-file" // /dev/null bound over Target
	KindMaskDir  = "mask-dir"  // an empty read-only tmpfs over Target
	KindNotify   = "notify"    // the systemd unit's notify socket (Source) bound at NotifyPath
	// cimg-oci's (oci.go): a config's root, mounts and device nodes.
	KindRootfs   = "rootfs"    // the host directory Source bound as /
	KindOCI      = "oci"       // a config mount: FSType, Source, Flags, Data, then Propagation
	KindDevice   = "device"    // a linux.devices node, Data "c|b|p major minor mode uid gid"
	KindRootfsRO = "rootfs-ro" // root.readonly: / made read-only once all is mounted
)

// MountSpec is one step of building the app's filesystem.
type MountSpec struct {
	Kind      string
	Source    string // host path of a granted bind
	Volume    string // below the volume directory: a volume's bind, a kept overlay layer
	Target    string // absolute, inside the new root
	Flags     uintptr
	Data      string
	Recursive bool // the flags apply to every submount too
	Optional  bool // a Target the kernel may not have (masked /proc paths)
	// Alt: the child makes this mount only if the one before it failed
	// with ENOTDIR — a mask of a path the launcher could not see, whose
	// kind (file or directory) it could not know (OCI masks of /sys and
	// /proc under an init that hides some, as systemd-nspawn does).
	Alt bool `json:",omitempty"`

	FSType      string  `json:",omitempty"` // KindOCI: the filesystem type; "" for a bind
	Propagation uintptr `json:",omitempty"` // KindOCI: MS_SHARED/SLAVE/PRIVATE/UNBINDABLE (|MS_REC), set last
}

var flagWords = []struct {
	bit  uintptr
	word string
}{{unix.MS_RDONLY, "ro"}, {unix.MS_NOSUID, "nosuid"}, {unix.MS_NODEV, "nodev"}, {unix.MS_NOEXEC, "noexec"}}

// String is the step as the table tests and `--dry-run`-style output read
// it: "target kind flags [data] [recursive]".
func (m MountSpec) String() string {
	var words []string
	for _, f := range flagWords {
		if m.Flags&f.bit != 0 {
			words = append(words, f.word)
		}
	}
	if m.Flags&unix.MS_RDONLY == 0 {
		words = append([]string{"rw"}, words...)
	}
	s := m.Target + " " + m.Kind + " " + strings.Join(words, ",")
	if m.Source != "" {
		s += " from " + m.Source
	}
	if m.Volume != "" {
		s += " from volume " + m.Volume
	}
	if m.Data != "" {
		s += " " + m.Data
	}
	if m.Recursive {
		s += " recursive"
	}
	return s
}

// The /proc paths masked and made read-only, as runc and crun do: they
// reach the host kernel (core_pattern runs a program as host root,
// sysrq-trigger reboots, kcore reads memory). /proc/kmsg, /proc/kallsyms
// and /proc/modules go beyond their defaults: kernel log and addresses
// help an attacker and no app needs them.
var (
	procReadOnly  = []string{"/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger"}
	procMaskFiles = []string{"/proc/kcore", "/proc/keys", "/proc/latency_stats", "/proc/timer_list", "/proc/timer_stats",
		"/proc/sched_debug", "/proc/kmsg", "/proc/kallsyms", "/proc/modules"}
	procMaskDirs = []string{"/proc/acpi", "/proc/asound", "/proc/scsi", "/proc/driver"}
)

// Flags every mount the app can write carries: no device node and no
// setuid bit on it works, on either side of the container (CVE classes:
// host device access, setuid planted in a volume).
const writable = unix.MS_NOSUID | unix.MS_NODEV

// newPlan maps the manifest (already admitted: grants checked) onto the
// launch.
func newPlan(m *manifest.Manifest, o *Options) (*Plan, error) {
	p := &Plan{
		Name:       m.Name,
		Memory:     m.Limits.Memory.String(),
		Argv:       m.Argv(o.Args),
		Workdir:    m.App.Workdir,
		UID:        m.App.User,
		GID:        m.App.Group,
		Groups:     m.App.Groups,
		NoNewPrivs: m.Security.NoNewPrivileges,
		Seccomp:    m.Security.Seccomp,
		Init:       o.Init || m.App.Init,
		StateDir:   o.StateDir,
		NewPID:     m.Namespaces.PID != "host",
		Unshare:    unix.CLONE_NEWNS,
	}
	if m.Namespaces.User {
		var err error
		if p.UserNS, err = hostIDRange(o.SubIDFiles); err != nil {
			return nil, err
		}
		if m.App.User >= p.UserNS.Count || m.App.Group >= p.UserNS.Count {
			return nil, fmt.Errorf("app.user %d / app.group %d: outside the %d ids the user namespace maps", m.App.User, m.App.Group, p.UserNS.Count)
		}
	}
	if m.Health != nil && !o.NoHealth {
		return nil, errors.New("the manifest has a [health] check, which cimg-run does not run in the foreground yet: run with --no-health to start it without the check")
	}
	if m.Namespaces.Network != "host" {
		p.Unshare |= unix.CLONE_NEWNET
	}
	if m.Namespaces.IPC != "host" {
		p.Unshare |= unix.CLONE_NEWIPC
	}
	if m.Namespaces.UTS != "host" {
		p.Unshare |= unix.CLONE_NEWUTS
		if p.Hostname = m.Hostname; p.Hostname == "" {
			p.Hostname = m.Name
		}
	}
	if err := commandAllowed(p.Argv[0]); err != nil {
		return nil, err
	}
	env := map[string]string{"PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "HOME": "/", "TERM": os.Getenv("TERM")}
	for k, v := range m.App.Env {
		env[k] = v
	}
	for k, v := range env {
		if v != "" || k != "TERM" {
			p.Env = append(p.Env, k+"="+v)
		}
	}
	sort.Strings(p.Env)
	for _, name := range m.Security.Capabilities {
		p.Keep = append(p.Keep, manifest.Capabilities[manifest.CanonicalCap(name)])
	}
	slices.Sort(p.Keep)
	for _, name := range slices.Sorted(maps.Keys(m.Limits.Rlimits)) {
		r := m.Limits.Rlimits[name]
		res, ok := rlimitResource[name]
		if !ok {
			return nil, fmt.Errorf("limits.rlimits.%s is not known to this launcher", name)
		}
		p.Rlimits = append(p.Rlimits, Rlimit{Resource: res, Soft: r.Soft, Hard: r.Hard})
	}
	p.Mounts = rootMounts(m, o)
	if o.Systemd != nil && o.Systemd.AppNotifies {
		// The operator's unit says the app notifies systemd itself: it gets
		// the unit's socket, as crun passes it through.
		p.Mounts = append(p.Mounts, MountSpec{Kind: KindNotify, Source: o.Systemd.NotifySocket, Target: "/run"})
		p.Env = append(p.Env, "NOTIFY_SOCKET="+NotifyPath)
		sort.Strings(p.Env)
	}
	owner := func(u, g uint32) (uint32, uint32) { return u, g }
	if p.UserNS != nil {
		owner = func(u, g uint32) (uint32, uint32) { return p.UserNS.HostUID(u), p.UserNS.HostGID(g) }
	}
	for i, mt := range m.Mounts {
		spec, vol, err := appMount(m, mt, o)
		if err != nil {
			return nil, fmt.Errorf("mounts[%d]: %w", i, err)
		}
		p.Mounts = append(p.Mounts, spec)
		if vol != nil {
			vol.UID, vol.GID = owner(vol.UID, vol.GID)
			p.Volumes = append(p.Volumes, *vol)
		}
	}
	p.Proc = procMounts()
	return p, nil
}

// rootMounts are the mounts every app gets: the image (read-only unless
// the manifest asks for a writable root, which is an in-memory overlay),
// a fresh /dev, /tmp and /run.
func rootMounts(m *manifest.Manifest, o *Options) []MountSpec {
	ms := []MountSpec{{Kind: KindImage, Target: "/", Flags: unix.MS_RDONLY | writable, Recursive: true}}
	if !m.Security.ReadonlyRoot {
		ms = append(ms, MountSpec{Kind: KindOverlay, Target: "/", Flags: writable, Data: sizeData(int64(m.Limits.TmpSize))})
	}
	ms = append(ms,
		// /dev may hold the standard nodes only: they are bound onto
		// themselves before /dev turns nodev, so a node the app makes with
		// CAP_MKNOD opens nothing.
		MountSpec{Kind: KindTmpfs, Target: "/dev", Flags: unix.MS_NOSUID | unix.MS_NOEXEC, Data: "mode=755,size=65536"},
		MountSpec{Kind: KindDevNodes, Target: "/dev"},
		MountSpec{Kind: KindDevpts, Target: "/dev/pts", Flags: unix.MS_NOSUID | unix.MS_NOEXEC, Data: "newinstance,ptmxmode=0666,mode=0620"},
	)
	if m.Namespaces.IPC == "host" {
		// POSIX shared memory lives in /dev/shm: sharing IPC shares it.
		ms = append(ms, MountSpec{Kind: KindBind, Source: "/dev/shm", Target: "/dev/shm", Flags: writable | unix.MS_NOEXEC})
	} else {
		ms = append(ms, MountSpec{Kind: KindTmpfs, Target: "/dev/shm", Flags: writable | unix.MS_NOEXEC, Data: "mode=1777" + sizeOpt(int64(m.Limits.ShmSize))})
	}
	ms = append(ms,
		MountSpec{Kind: KindRemount, Target: "/dev", Flags: writable | unix.MS_NOEXEC, Data: "mode=755,size=65536"},
		MountSpec{Kind: KindTmpfs, Target: "/tmp", Flags: writable, Data: "mode=1777" + sizeOpt(int64(m.Limits.TmpSize))},
		MountSpec{Kind: KindTmpfs, Target: "/run", Flags: writable, Data: "mode=1777" + sizeOpt(int64(m.Limits.RunSize))},
	)
	return ms
}

// appMount maps one [[mounts]] entry. Host paths were granted by the
// operator (admit); volumes live under the operator's volume directory.
func appMount(m *manifest.Manifest, mt manifest.Mount, o *Options) (MountSpec, *Volume, error) {
	switch mt.Type {
	case "tmpfs":
		mode := "0755"
		if mt.Mode != "" {
			mode = mt.Mode
		}
		return MountSpec{Kind: KindTmpfs, Target: mt.Target, Flags: writable, Data: "mode=" + mode + sizeOpt(int64(mt.Size))}, nil, nil
	case "bind":
		s := MountSpec{Kind: KindBind, Source: mt.Source, Target: mt.Target, Flags: writable, Recursive: true}
		if mt.ReadOnly {
			s.Flags |= unix.MS_RDONLY
		}
		return s, nil, nil
	case "volume":
		v := &Volume{Rel: path.Join(m.Name, mt.Source), UID: m.App.User, GID: m.App.Group}
		s := MountSpec{Kind: KindBind, Volume: v.Rel, Target: mt.Target, Flags: writable, Recursive: true}
		if mt.ReadOnly {
			s.Flags |= unix.MS_RDONLY
		}
		return s, v, nil
	case "overlay":
		// A writable layer over the image's directory: kept in a volume, or
		// in memory (Source empty) for this run only.
		s := MountSpec{Kind: KindOverlay, Target: mt.Target, Flags: writable}
		if mt.Source == "" {
			s.Data = sizeData(int64(m.Limits.TmpSize))
			return s, nil, nil
		}
		v := &Volume{Rel: path.Join(m.Name, mt.Source), Layer: true}
		s.Volume = v.Rel
		return s, v, nil
	}
	return MountSpec{}, nil, fmt.Errorf("type %q is not supported by this cimg-run", mt.Type)
}

// procMounts is what the child mounts in its pid namespace: its /proc,
// with the paths that reach the host kernel read-only or masked.
func procMounts() []MountSpec {
	ms := []MountSpec{{Kind: KindProc, Target: "/proc", Flags: unix.MS_NOSUID | unix.MS_NODEV | unix.MS_NOEXEC}}
	for _, p := range procReadOnly {
		ms = append(ms, MountSpec{Kind: KindReadOnly, Target: p, Flags: unix.MS_RDONLY | unix.MS_NOSUID | unix.MS_NODEV | unix.MS_NOEXEC, Recursive: true, Optional: true})
	}
	for _, p := range procMaskFiles {
		ms = append(ms, MountSpec{Kind: KindMaskFile, Source: "/dev/null", Target: p, Flags: unix.MS_RDONLY, Optional: true})
	}
	for _, p := range procMaskDirs {
		ms = append(ms, MountSpec{Kind: KindMaskDir, Target: p, Flags: unix.MS_RDONLY | unix.MS_NOSUID | unix.MS_NODEV | unix.MS_NOEXEC, Data: "size=0,nr_inodes=1", Optional: true})
	}
	return ms
}

// commandAllowed refuses a command under /proc, /sys or /dev: there
// /proc/self/exe is the host's cimg-run until execve (CVE-2019-5736).
// Links inside the image that lead there are caught by resolveCommand.
func commandAllowed(p string) error {
	for _, r := range []string{"/proc", "/sys", "/dev"} {
		if p == r || strings.HasPrefix(p, r+"/") {
			return fmt.Errorf("app.command %s is under %s, where it could run the host's cimg-run inside the container (CVE-2019-5736): refused; point it at a program of the image", p, r)
		}
	}
	return nil
}

func sizeOpt(n int64) string {
	if n > 0 {
		return ",size=" + strconv.FormatInt(n, 10)
	}
	return ""
}

// sizeData is an in-memory overlay's layer size, as tmpfs data.
func sizeData(n int64) string { return strings.TrimPrefix(sizeOpt(n), ",") }

var rlimitResource = map[string]int{
	"as": unix.RLIMIT_AS, "core": unix.RLIMIT_CORE, "cpu": unix.RLIMIT_CPU, "data": unix.RLIMIT_DATA,
	"fsize": unix.RLIMIT_FSIZE, "locks": unix.RLIMIT_LOCKS, "memlock": unix.RLIMIT_MEMLOCK,
	"msgqueue": unix.RLIMIT_MSGQUEUE, "nice": unix.RLIMIT_NICE, "nofile": unix.RLIMIT_NOFILE,
	"nproc": unix.RLIMIT_NPROC, "rss": unix.RLIMIT_RSS, "rtprio": unix.RLIMIT_RTPRIO,
	"rttime": unix.RLIMIT_RTTIME, "sigpending": unix.RLIMIT_SIGPENDING, "stack": unix.RLIMIT_STACK,
}
