// Package launcher runs a .cimg: the parent side (open, verify, mount
// cache, cgroup, start, wait, clean up) in parent.go; the app's world —
// namespaces, mounts, pivot_root — built on a dedicated thread in root.go;
// and the app's process forked from that thread in fork.go, which runs
// only raw system calls (cgroup namespace, /proc, rlimits, seccomp,
// identity, capabilities) up to execve. Each reads top to bottom; every
// step says why it is there.
//
// One Go runtime starts per launch: the child is a fork, not a second
// cimg-run, and reports a setup failure over a pipe whose close on exec
// means success. An app that outlives its first 100 ms is then watched by
// the slim waiter (wait.go): the launcher re-executes itself as a process
// that only waits, relays signals and cleans up, to hold less memory.
package launcher

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
