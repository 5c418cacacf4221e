// probe runs inside a test image and prints, as JSON, what the launcher
// gave it: identity, capabilities, namespaces' view, mounts, fds, limits.
// With the argument "sleep" it waits for a signal first (so the test can
// look at it from outside), "deaf" ignores SIGTERM; "exit N" exits with N; "hog" allocates until
// killed; "forkbomb" forks until it cannot; the other modes are described
// at their case.
package main

import (
	"encoding/json"
	"io"
	"net"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

type report struct {
	PID          int               `json:"pid"`
	UID, GID     int               `json:"-"`
	IDs          []int             `json:"ids"` // uid, euid, gid, egid
	Groups       []int             `json:"groups"`
	Status       map[string]string `json:"status"` // Cap*, NoNewPrivs, Seccomp
	Hostname     string            `json:"hostname"`
	Cwd          string            `json:"cwd"`
	Env          []string          `json:"env"`
	FDs          []string          `json:"fds"`
	Mounts       []string          `json:"mounts"`
	Cgroup       string            `json:"cgroup"`
	NS           map[string]string `json:"ns"`     // /proc/self/ns/* links: which namespaces it is in
	NoFile       [2]uint64         `json:"nofile"` // the Go runtime raises the soft limit: compare Max
	Core         [2]uint64         `json:"core"`
	WriteErrors  map[string]string `json:"write_errors"`
	SetuidResult string            `json:"setuid_result"`
}

func main() {
	args := os.Args[1:]
	if len(args) > 0 {
		switch args[0] {
		case "exit":
			n, _ := strconv.Atoi(args[1])
			os.Exit(n)
		case "sleep":
			c := make(chan os.Signal, 1)
			signal.Notify(c, syscall.SIGTERM, syscall.SIGUSR1)
			os.Stdout.WriteString("ready\n")
			s := <-c
			os.Stdout.WriteString("got " + s.String() + "\n")
			os.Exit(0)
		case "deaf": // ignores SIGTERM: only the stop timeout ends it
			signal.Ignore(syscall.SIGTERM)
			os.Stdout.WriteString("ready\n")
			for {
				time.Sleep(time.Hour)
			}
		case "hog":
			var keep [][]byte
			for {
				b := make([]byte, 1<<20)
				for i := range b {
					b[i] = 1
				}
				keep = append(keep, b)
			}
		case "forkbomb":
			n := 0
			for ; n < 1000; n++ {
				cmd := exec.Command("/proc/self/exe", "sleep")
				if err := cmd.Start(); err != nil {
					break
				}
			}
			os.Stdout.WriteString("started " + strconv.Itoa(n) + "\n")
			os.Exit(0)
		case "syscalls":
			// What the seccomp profile lets through: unshare and keyctl.
			_, _, e1 := syscall.RawSyscall(syscall.SYS_UNSHARE, syscall.CLONE_NEWUTS, 0, 0)
			_, _, e2 := syscall.RawSyscall(syscall.SYS_KEYCTL, 0, 0, 0)
			os.Stdout.WriteString("unshare=" + errName(e1) + " keyctl=" + errName(e2) + "\n")
			os.Exit(0)
		case "pid1":
			// Who is PID 1, and can its executable be written?
			exe, _ := os.Readlink("/proc/1/exe")
			res := "writable"
			f, err := os.OpenFile("/proc/1/exe", os.O_WRONLY, 0)
			if err != nil {
				res = err.Error()
			} else if _, err := f.Write([]byte{0}); err != nil {
				res = err.Error()
			}
			os.Stdout.WriteString("pid=" + strconv.Itoa(os.Getpid()) + " exe=" + exe + " write=" + res + "\n")
			// Leave an orphan behind for the init to reap.
			exec.Command("/proc/self/exe", "exit", "0").Start()
			os.Exit(0)
		case "read":
			b, err := os.ReadFile(args[1])
			if err != nil {
				os.Stdout.WriteString(err.Error() + "\n")
				os.Exit(1)
			}
			os.Stdout.WriteString("read " + args[1] + ": " + strconv.Itoa(len(b)) + " bytes\n")
			os.Exit(0)
		case "write":
			if err := os.WriteFile(args[1], []byte(args[2]), 0o644); err != nil {
				os.Stdout.WriteString(err.Error() + "\n")
				os.Exit(1)
			}
			os.Stdout.WriteString("wrote " + args[1] + "\n")
			os.Exit(0)
		case "euid":
			os.Stdout.WriteString(strconv.Itoa(os.Geteuid()) + "\n")
			os.Exit(0)
		case "mknod": // mknod PATH MAJ MIN: a block node; then open it, and write to /dev/null
			ma, _ := strconv.Atoi(args[2])
			mi, _ := strconv.Atoi(args[3])
			res := func(err error) string {
				if err != nil {
					return err.Error()
				}
				return "ok"
			}
			mk := res(syscall.Mknod(args[1], syscall.S_IFBLK|0o600, ma<<8|mi&0xff|(mi&^0xff)<<12))
			fd, err := syscall.Open(args[1], syscall.O_RDONLY|syscall.O_CLOEXEC, 0)
			if err == nil {
				syscall.Close(fd)
			}
			op := res(err)
			fd, err = syscall.Open("/dev/null", syscall.O_RDWR|syscall.O_CLOEXEC, 0)
			if err == nil {
				_, err = syscall.Write(fd, []byte("x"))
				syscall.Close(fd)
			}
			os.Stdout.WriteString("mknod=" + mk + " open=" + op + " null=" + res(err) + "\n")
			os.Exit(0)
		case "proc": // proc PATH...: for each, its mount (if one is there), what reading it gives, and opening it for writing (nothing is written)
			mounts := map[string]string{}
			if b, err := os.ReadFile("/proc/self/mountinfo"); err == nil {
				for _, l := range strings.Split(string(b), "\n") {
					pre, post, _ := strings.Cut(l, " - ")
					if f, g := strings.Fields(pre), strings.Fields(post); len(f) > 5 && len(g) > 1 {
						mounts[f[4]] = f[5] + " " + g[0] + " " + g[1]
					}
				}
			}
			type seen struct {
				Mount  string `json:"mount"`
				Exists bool   `json:"exists"`
				Read   string `json:"read"`
				OpenW  string `json:"open_w"`
			}
			all := map[string]seen{}
			for _, p := range args[1:] {
				s := seen{Mount: mounts[p]}
				fi, err := os.Lstat(p)
				if s.Exists = err == nil; s.Exists && fi.IsDir() {
					ents, err := os.ReadDir(p)
					s.Read = strconv.Itoa(len(ents)) + " entries"
					if err != nil {
						s.Read = err.Error()
					}
				} else if s.Exists {
					s.Read = readHead(p)
					fd, err := syscall.Open(p, syscall.O_WRONLY|syscall.O_CLOEXEC, 0)
					if s.OpenW = "opened"; err != nil {
						s.OpenW = err.Error()
					} else {
						syscall.Close(fd)
					}
				}
				all[p] = s
			}
			json.NewEncoder(os.Stdout).Encode(all)
			os.Exit(0)
		case "mkdir": // mkdir DIR...: make (and remove) a fresh directory in each; one "DIR ok|error" line each
			for _, d := range args[1:] {
				p := d + "/.cimg-probe-" + strconv.Itoa(os.Getpid())
				res := "ok"
				if err := syscall.Mkdir(p, 0o700); err != nil {
					res = err.Error()
				} else {
					syscall.Rmdir(p)
				}
				os.Stdout.WriteString(d + " " + res + "\n")
			}
			os.Exit(0)
		case "plant-suid": // plant-suid PATH: a setuid copy of this program, in a directory anyone may enter
			b, err := os.ReadFile("/proc/self/exe")
			if err == nil {
				err = os.WriteFile(args[1], b, 0o755)
			}
			if err == nil { // raw mode bits: os.Chmod drops 04000 (its setuid flag is os.ModeSetuid)
				err = syscall.Chmod(args[1], 0o4755)
			}
			if err == nil { // and the volume opened up, for the other users of it
				err = syscall.Chmod(filepath.Dir(args[1]), 0o755)
			}
			if err != nil {
				os.Stdout.WriteString(err.Error() + "\n")
				os.Exit(1)
			}
			os.Stdout.WriteString("planted " + args[1] + " as uid " + strconv.Itoa(os.Geteuid()) + "\n")
			os.Exit(0)
		case "symlink": // symlink TARGET LINK
			if err := os.Symlink(args[1], args[2]); err != nil {
				os.Stdout.WriteString(err.Error() + "\n")
				os.Exit(1)
			}
			os.Stdout.WriteString("linked " + args[2] + "\n")
			os.Exit(0)
		case "caps": // euid and capability sets after exec
			line := "euid=" + strconv.Itoa(os.Geteuid())
			b, _ := os.ReadFile("/proc/self/status")
			for _, l := range strings.Split(string(b), "\n") {
				if k, v, _ := strings.Cut(l, ":"); k == "CapPrm" || k == "CapEff" {
					line += " " + k + "=" + strings.TrimSpace(v)
				}
			}
			os.Stdout.WriteString(line + "\n")
			os.Exit(0)
		case "show": // show PATH...: "PATH=" and a link's target or a file's first line, or the error
			for _, p := range args[1:] {
				v, err := os.Readlink(p)
				if err != nil {
					var b []byte
					if b, err = os.ReadFile(p); err == nil {
						v, _, _ = strings.Cut(strings.TrimSpace(string(b)), "\n")
						v = strings.Join(strings.Fields(v), " ")
					}
				}
				if err != nil {
					v = "error: " + err.Error()
				}
				os.Stdout.WriteString(p + "=" + v + "\n")
			}
			os.Exit(0)
		case "cat": // cat PATH: the file as it is, or the error
			b, err := os.ReadFile(args[1])
			if err != nil {
				os.Stdout.WriteString("error: " + err.Error() + "\n")
				os.Exit(1)
			}
			os.Stdout.Write(b)
			os.Exit(0)
		case "parent-exe": // parent-exe [DELAY]: after DELAY, open the parent's /proc/PID/exe (the launcher's, with pid = "host")
			if len(args) > 1 {
				d, _ := time.ParseDuration(args[1])
				time.Sleep(d)
			}
			p := "/proc/" + strconv.Itoa(os.Getppid()) + "/exe"
			f, err := os.Open(p)
			if err != nil {
				os.Stdout.WriteString("parent-exe " + p + ": " + err.Error() + "\n")
				os.Exit(0)
			}
			f.Close()
			os.Stdout.WriteString("parent-exe " + p + ": opened\n")
			os.Exit(0)
		case "notify": // waits for SIGUSR1, then tells systemd READY=1 at $NOTIFY_SOCKET, then as "sleep": an app that is ready late
			c := make(chan os.Signal, 1)
			signal.Notify(c, syscall.SIGUSR1, syscall.SIGTERM)
			os.Stdout.WriteString("waiting\n")
			if s := <-c; s == syscall.SIGTERM {
				os.Exit(0)
			}
			addr := &net.UnixAddr{Name: os.Getenv("NOTIFY_SOCKET"), Net: "unixgram"}
			conn, err := net.DialUnix("unixgram", nil, addr)
			if err == nil {
				_, err = conn.Write([]byte("READY=1\nSTATUS=probe ready\n"))
				conn.Close()
			}
			if err != nil {
				os.Stdout.WriteString("notify: " + err.Error() + "\n")
				os.Exit(1)
			}
			os.Stdout.WriteString("notified\n")
			<-c
			os.Exit(0)
		case "report-sleep": // the report, then as "sleep": what the app itself sees, for exec to compare
			json.NewEncoder(os.Stdout).Encode(fullReport())
			c := make(chan os.Signal, 1)
			signal.Notify(c, syscall.SIGTERM)
			<-c
			os.Exit(0)
		case "watch-exe": // watch-exe DURATION: open every other process's /proc/PID/exe, over and over; print each that opens and is not this image's probe
			d, _ := time.ParseDuration(args[1])
			seen := map[string]bool{}
			for end := time.Now().Add(d); time.Now().Before(end); {
				ents, _ := os.ReadDir("/proc")
				for _, e := range ents {
					if _, err := strconv.Atoi(e.Name()); err != nil || e.Name() == strconv.Itoa(os.Getpid()) {
						continue
					}
					f, err := os.Open("/proc/" + e.Name() + "/exe")
					if err != nil {
						continue
					}
					// What was opened, not what the pid is now: it may be gone.
					target, _ := os.Readlink("/proc/self/fd/" + strconv.Itoa(int(f.Fd())))
					f.Close()
					if target != "/usr/bin/probe" && !seen[target] {
						seen[target] = true
						os.Stdout.WriteString("OPENED " + target + "\n")
					}
				}
			}
			os.Stdout.WriteString("watch done\n")
			os.Exit(0)
		case "exec": // exec PATH ARGS...: run a program, pass on its output
			out, err := exec.Command(args[1], args[2:]...).CombinedOutput()
			os.Stdout.Write(out)
			if err != nil {
				os.Stdout.WriteString("exec: " + err.Error() + "\n")
			}
			os.Exit(0)
		}
	}
	json.NewEncoder(os.Stdout).Encode(fullReport())
}

// fullReport is what the process sees of itself.
func fullReport() report {
	r := report{PID: os.Getpid(), Status: map[string]string{}, WriteErrors: map[string]string{}, NS: map[string]string{}}
	for _, n := range []string{"mnt", "pid", "net", "ipc", "uts", "cgroup", "user"} {
		r.NS[n], _ = os.Readlink("/proc/self/ns/" + n)
	}
	r.IDs = []int{os.Getuid(), os.Geteuid(), os.Getgid(), os.Getegid()}
	r.Groups, _ = os.Getgroups()
	if b, err := os.ReadFile("/proc/self/status"); err == nil {
		for _, l := range strings.Split(string(b), "\n") {
			k, v, _ := strings.Cut(l, ":")
			if strings.HasPrefix(k, "Cap") || k == "NoNewPrivs" || k == "Seccomp" {
				r.Status[k] = strings.TrimSpace(v)
			}
		}
	}
	r.Hostname, _ = os.Hostname()
	r.Cwd, _ = os.Getwd()
	r.Env = os.Environ()
	ents, _ := os.ReadDir("/proc/self/fd")
	for _, e := range ents {
		t, _ := os.Readlink("/proc/self/fd/" + e.Name())
		r.FDs = append(r.FDs, e.Name()+"="+t)
	}
	if b, err := os.ReadFile("/proc/self/mountinfo"); err == nil {
		for _, l := range strings.Split(strings.TrimSpace(string(b)), "\n") {
			f := strings.Fields(l)
			if len(f) > 4 {
				r.Mounts = append(r.Mounts, f[4])
			}
		}
	}
	cg, _ := os.ReadFile("/proc/self/cgroup")
	r.Cgroup = strings.TrimSpace(string(cg))
	var rl syscall.Rlimit
	syscall.Getrlimit(syscall.RLIMIT_NOFILE, &rl)
	r.NoFile = [2]uint64{rl.Cur, rl.Max}
	syscall.Getrlimit(syscall.RLIMIT_CORE, &rl)
	r.Core = [2]uint64{rl.Cur, rl.Max}
	for _, p := range []string{"/proc/sys/kernel/core_pattern", "/proc/sysrq-trigger", "/usr/bin/probe", "/etc/newfile"} {
		f, err := os.OpenFile(p, os.O_WRONLY|os.O_CREATE, 0o644)
		if err == nil {
			f.Close()
			r.WriteErrors[p] = ""
		} else {
			r.WriteErrors[p] = err.Error()
		}
	}
	// A setuid-root copy of ourselves, if the image has one: with
	// no_new_privs (and nosuid) it must not run as root.
	if _, err := os.Stat("/usr/bin/probe-suid"); err == nil {
		out, err := exec.Command("/usr/bin/probe-suid", "euid").Output()
		r.SetuidResult = strings.TrimSpace(string(out))
		if err != nil {
			r.SetuidResult += " (" + err.Error() + ")"
		}
	}
	return r
}

func errName(e syscall.Errno) string {
	if e == 0 {
		return "ok"
	}
	return e.Error()
}

// readHead says how many bytes of the file p read, up to 64 KiB (a
// masked /proc file reads empty; an unmasked /proc/kcore would not end),
// or why it could not be read.
func readHead(p string) string {
	f, err := os.Open(p)
	if err != nil {
		return err.Error()
	}
	defer f.Close()
	n, err := io.ReadFull(f, make([]byte, 64<<10))
	if err != nil && err != io.EOF && err != io.ErrUnexpectedEOF {
		return err.Error()
	}
	return strconv.Itoa(n) + " bytes"
}
