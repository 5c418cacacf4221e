// Package launcher runs a .cimg: the parent side (open, verify, mount
// cache, cgroup, start, wait, clean up) in parent.go and the child side —
// PID 1 of the new namespaces, which builds the app's root and execs it —
// in child.go. Each reads top to bottom; every step says why it is there.
//
// The parent and child are one binary: the parent re-executes
// /proc/self/exe with ChildArg, and hands the child a Config over one
// pipe; the child reports a setup failure over another, whose close on
// exec means success.
package launcher

// ChildArg as argv[1] makes cimg-run the child side.
const ChildArg = "__cimg_child__"

// Config is everything the child needs, decided by the parent.
type Config struct {
	Root       string // the image's squashfs mount (host path) to bind as /
	Argv       []string
	Env        []string
	Workdir    string
	UID, GID   uint32
	Groups     []uint32
	Hostname   string
	NetNone    bool
	Keep       []int // capabilities kept; every other one is dropped
	NoNewPrivs bool
	Seccomp    string // "default" or "unconfined"
	Rlimits    []Rlimit
	TmpSize    int64
	RunSize    int64
	ShmSize    int64
	Mounts     []Mount
	Init       bool // exec the sealed init (fd 5) in front of the app
	// PrivateMount: the child loop-mounts the verified image (fd 6,
	// PayloadSize bytes of squashfs) itself instead of binding Root.
	PrivateMount bool
	PayloadSize  int64
	StateDir     string
}

// Rlimit is one setrlimit(2) call.
type Rlimit struct {
	Resource   int
	Soft, Hard uint64
}

// Mount is a volume or tmpfs from the manifest, resolved by the parent.
type Mount struct {
	Type     string // "bind" or "tmpfs"
	Source   string // host path for bind
	Target   string
	ReadOnly bool
	Size     int64
	Mode     uint32
}
