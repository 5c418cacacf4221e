package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path"
	"strings"
	"time"

	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"

	"cimg.dev/cimg/launcher"
)

// runHooks runs hooks in order with the state on stdin and dir as their
// working directory (""; this process's), each within its timeout; the
// first failure stops them. They are the operator's programs, run as
// this process runs (the createContainer hooks on the thread that built
// the container's root, in its namespaces).
func runHooks(hooks []specs.Hook, st *state, dir string) error {
	b, err := json.Marshal(st.State)
	if err != nil {
		return err
	}
	for _, h := range hooks {
		ctx := context.Background()
		if h.Timeout != nil {
			var cancel context.CancelFunc
			ctx, cancel = context.WithTimeout(ctx, time.Duration(*h.Timeout)*time.Second)
			defer cancel()
		}
		cmd := exec.CommandContext(ctx, h.Path)
		if len(h.Args) > 0 {
			cmd.Args = h.Args
		}
		cmd.Env, cmd.Dir = h.Env, dir
		cmd.Stdin = bytes.NewReader(b)
		var out bytes.Buffer
		cmd.Stdout, cmd.Stderr = &out, &out
		if err := cmd.Run(); err != nil {
			return fmt.Errorf("hook %s: %w: %s", h.Path, err, strings.TrimSpace(out.String()))
		}
	}
	return nil
}

// startContainerHooks runs the startContainer hooks in the created
// container: their paths resolve in its root, and each runs as cimg-oci
// exec runs a process there, under the config's user, capabilities,
// no_new_privs and seccomp profile and in its cgroups. The path is the
// image's, so the hook is confined as the image's process is.
func startContainerHooks(st *state, hooks []specs.Hook) error {
	spec, err := g.config(st.ID)
	if err != nil {
		return err
	}
	filter, err := seccompOf(spec)
	if err != nil {
		return err
	}
	b, err := json.Marshal(st.State)
	if err != nil {
		return err
	}
	for _, h := range hooks {
		// Each on a goroutine of its own, which ends once the hook has:
		// OCIExec leaves its thread locked, its pid namespace for children
		// the container's, and the thread goes with the goroutine. Run on
		// start's own goroutine, the poststart hooks forked after it went
		// into the container's pid namespace.
		errc := make(chan error, 1)
		go func() { errc <- startContainerHook(st, spec, filter, h, b) }()
		if err := <-errc; err != nil {
			return fmt.Errorf("hooks.startContainer %s: %w", h.Path, err)
		}
	}
	return nil
}

func startContainerHook(st *state, spec *specs.Spec, filter *unix.SockFprog, h specs.Hook, stateJSON []byte) error {
	if !path.IsAbs(h.Path) {
		return errors.New("path: must be absolute")
	}
	proc := *spec.Process
	proc.Args = []string{h.Path}
	if len(h.Args) > 1 {
		proc.Args = append(proc.Args, h.Args[1:]...)
	}
	proc.Env, proc.Terminal, proc.ConsoleSize = h.Env, false, nil
	argv0 := h.Path
	if len(h.Args) > 0 {
		argv0 = h.Args[0]
	}
	// The state to read on stdin and the output for the error message,
	// as files: nothing has to be copied while the hook runs.
	in, err := memfile("hook-stdin", stateJSON)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := memfile("hook-output", nil)
	if err != nil {
		return err
	}
	defer out.Close()
	pid, _, err := launcher.OCIExec(launcher.OCIExecOptions{Pid: st.Pid, Spec: spec, Seccomp: filter, Process: &proc, Argv0: argv0,
		Cgroup: st.Cgroup, Detach: true, Stdio: [3]*os.File{in, out, out}})
	if err != nil {
		return err
	}
	status, err := waitTimeout(pid, h.Timeout)
	if err == nil && status != 0 {
		err = fmt.Errorf("exit status %d", status)
		if status > 128 {
			err = fmt.Errorf("killed by signal %d", status-128)
		}
	}
	if err != nil {
		msg := make([]byte, 4096)
		n, _ := out.ReadAt(msg, 0)
		if s := strings.TrimSpace(string(msg[:n])); s != "" {
			err = fmt.Errorf("%w: %s", err, s)
		}
	}
	return err
}

// memfile is an anonymous file holding b, read from its start.
func memfile(name string, b []byte) (*os.File, error) {
	fd, err := unix.MemfdCreate(name, unix.MFD_CLOEXEC)
	if err != nil {
		return nil, fmt.Errorf("memfd: %w", err)
	}
	f := os.NewFile(uintptr(fd), name)
	if _, err := f.Write(b); err != nil {
		f.Close()
		return nil, err
	}
	if _, err := f.Seek(0, 0); err != nil {
		f.Close()
		return nil, err
	}
	return f, nil
}

// waitTimeout reaps child pid, killing it once timeout seconds (nil: no
// limit) have passed, and returns its status (128+N for signal N).
func waitTimeout(pid int, timeout *int) (int, error) {
	if timeout != nil {
		pidfd, err := unix.PidfdOpen(pid, 0)
		if err != nil {
			unix.Kill(pid, unix.SIGKILL)
			unix.Wait4(pid, nil, 0, nil)
			return 0, err
		}
		deadline := time.Now().Add(time.Duration(*timeout) * time.Second)
		for {
			ms := max(int(time.Until(deadline).Milliseconds()), 0)
			n, err := unix.Poll([]unix.PollFd{{Fd: int32(pidfd), Events: unix.POLLIN}}, ms)
			if err == unix.EINTR {
				continue
			}
			if n == 0 && err == nil {
				unix.PidfdSendSignal(pidfd, unix.SIGKILL, nil, 0)
				unix.Wait4(pid, nil, 0, nil)
				unix.Close(pidfd)
				return 0, fmt.Errorf("timed out after %d s", *timeout)
			}
			break
		}
		unix.Close(pidfd)
	}
	return launcher.Reap(pid)
}

// selinuxLabels takes the config's SELinux labels out of spec where the
// host runs without SELinux: there no file or process has a label, so
// the label has nothing to apply to (runc and crun pass them over the
// same way), and a warning says so. Where SELinux runs, they are left in,
// and the launcher refuses them: cimg-oci does not apply labels.
func selinuxLabels(spec *specs.Spec) error {
	var fields []string
	if spec.Process != nil && spec.Process.SelinuxLabel != "" {
		fields = append(fields, "process.selinuxLabel")
	}
	if spec.Linux != nil && spec.Linux.MountLabel != "" {
		fields = append(fields, "linux.mountLabel")
	}
	if len(fields) == 0 {
		return nil
	}
	if selinuxEnabled() {
		return fmt.Errorf("%s: SELinux runs on this host and cimg-oci does not apply labels; leave them out of the config, or use runc or crun", strings.Join(fields, ", "))
	}
	msg := strings.Join(fields, ", ") + ": SELinux is not enabled on this host; no label applies"
	logLine("warning", msg)
	fmt.Fprintln(os.Stderr, "cimg-oci: warning:", msg)
	if spec.Process != nil {
		spec.Process.SelinuxLabel = ""
	}
	if spec.Linux != nil {
		spec.Linux.MountLabel = ""
	}
	return nil
}

// selinuxEnabled reports whether SELinux is the host's: its filesystem
// mounted, or securityfs listing it among the active modules.
func selinuxEnabled() bool {
	var fs unix.Statfs_t
	if unix.Statfs("/sys/fs/selinux", &fs) == nil && fs.Type == unix.SELINUX_MAGIC {
		return true
	}
	b, err := os.ReadFile("/sys/kernel/security/lsm")
	return err == nil && strings.Contains(","+strings.TrimSpace(string(b))+",", ",selinux,")
}
