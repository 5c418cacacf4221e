// Command cimg-oci is cimg's launcher as an OCI runtime: the command line
// runc and crun have (create, start, state, kill, delete, run, exec,
// features, spec), driven by podman, conmon or a containerd shim, over
// an OCI runtime-spec bundle. The launch itself is package launcher's
// (OCICreate, OCIExec); this command keeps the state under --root and
// runs the hooks.
package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	specs "github.com/opencontainers/runtime-spec/specs-go"
	flag "github.com/spf13/pflag"
	"golang.org/x/sys/unix"

	"cimg.dev/cimg/internal/cgroup"
	"cimg.dev/cimg/internal/ociseccomp"
	"cimg.dev/cimg/internal/sdscope"
	"cimg.dev/cimg/launcher"
)

const version = "0.1.0"

type globals struct {
	root          string
	log           string
	logFormat     string
	systemdCgroup bool
	debug         bool
}

var g globals

func main() {
	fs := flag.NewFlagSet("cimg-oci", flag.ContinueOnError)
	fs.SetInterspersed(false)
	fs.StringVar(&g.root, "root", "/run/cimg-oci", "directory of the containers' state")
	fs.StringVar(&g.log, "log", "", "append errors to this file")
	fs.StringVar(&g.logFormat, "log-format", "text", "text or json")
	fs.BoolVar(&g.systemdCgroup, "systemd-cgroup", false, "cgroupsPath is systemd's slice:prefix:name")
	fs.BoolVar(&g.debug, "debug", false, "log each command")
	showVersion := fs.BoolP("version", "v", false, "print the version")
	if err := fs.Parse(os.Args[1:]); err != nil {
		fail(err)
	}
	if g.logFormat != "text" && g.logFormat != "json" {
		fail(fmt.Errorf("--log-format %q: want text or json", g.logFormat))
	}
	if *showVersion {
		fmt.Printf("cimg-oci version %s\nspec: %s\n", version, specs.Version)
		return
	}
	args := fs.Args()
	if len(args) == 0 {
		fail(errors.New("usage: cimg-oci [global flags] create|start|state|kill|delete|run|exec|pause|resume|ps|update|features|spec ..."))
	}
	if g.debug {
		logLine("debug", strings.Join(os.Args, " "))
	}
	cmds := map[string]func([]string) (int, error){
		"create": cmdCreate, "start": cmdStart, "state": cmdState, "kill": cmdKill, "delete": cmdDelete,
		"run": cmdRun, "exec": cmdExec, "features": cmdFeatures, "spec": cmdSpec,
		"pause": cmdPause, "resume": cmdResume, "ps": cmdPs, "update": cmdUpdate,
	}
	run, ok := cmds[args[0]]
	if !ok {
		fail(fmt.Errorf("unknown command %q", args[0]))
	}
	code, err := run(args[1:])
	if err != nil {
		fail(err)
	}
	os.Exit(code)
}

// fail reports err on stderr and, with --log, in the log file as the
// caller asked for it (conmon reads the json form back to show podman's
// user the runtime's error).
func fail(err error) {
	fmt.Fprintln(os.Stderr, "cimg-oci:", err)
	logLine("error", err.Error())
	os.Exit(1)
}

func logLine(level, msg string) {
	if g.log == "" {
		return
	}
	f, err := os.OpenFile(g.log, os.O_WRONLY|os.O_APPEND|os.O_CREATE|unix.O_CLOEXEC, 0o600)
	if err != nil {
		return
	}
	defer f.Close()
	if g.logFormat == "json" {
		b, _ := json.Marshal(map[string]string{"level": level, "msg": msg, "time": time.Now().UTC().Format(time.RFC3339Nano)})
		f.Write(append(b, '\n'))
		return
	}
	fmt.Fprintf(f, "%s %s: %s\n", time.Now().UTC().Format(time.RFC3339), level, msg)
}

func oneID(fs *flag.FlagSet, args []string) (string, error) {
	if err := fs.Parse(args); err != nil {
		return "", err
	}
	if fs.NArg() != 1 {
		return "", fmt.Errorf("%s: want one container id", fs.Name())
	}
	return fs.Arg(0), validID(fs.Arg(0))
}

type createFlags struct {
	bundle, consoleSocket, pidFile string
	preserveFDs                    int
}

func (c *createFlags) add(fs *flag.FlagSet) {
	fs.StringVarP(&c.bundle, "bundle", "b", ".", "the bundle directory")
	fs.StringVar(&c.consoleSocket, "console-socket", "", "unix socket to send the terminal's master to")
	fs.StringVar(&c.pidFile, "pid-file", "", "write the process's pid here")
	fs.IntVar(&c.preserveFDs, "preserve-fds", 0, "pass this many fds above stderr")
	fs.Bool("no-pivot", false, "refused: cimg-oci always uses pivot_root")
	fs.Bool("no-new-keyring", false, "accepted: cimg-oci never makes a session keyring")
}

func cmdCreate(args []string) (int, error) {
	fs := flag.NewFlagSet("create", flag.ContinueOnError)
	var c createFlags
	c.add(fs)
	id, err := oneID(fs, args)
	if err != nil {
		return 0, err
	}
	if v, _ := fs.GetBool("no-pivot"); v {
		return 0, errors.New("--no-pivot: not supported (cimg-oci always pivots; a chroot can be climbed out of)")
	}
	_, err = create(id, &c)
	return 0, err
}

// seccompOf compiles the config's seccomp profile (nil: none).
func seccompOf(spec *specs.Spec) (*unix.SockFprog, error) {
	if spec.Linux == nil {
		return nil, nil
	}
	return ociseccomp.Compile(spec.Linux.Seccomp)
}

// create makes container id and leaves its process waiting for start.
func create(id string, c *createFlags) (*state, error) {
	if c.preserveFDs > 0 {
		return nil, errors.New("--preserve-fds: not supported by cimg-oci")
	}
	bundle, err := filepath.Abs(c.bundle)
	if err != nil {
		return nil, err
	}
	raw, err := os.ReadFile(filepath.Join(bundle, "config.json"))
	if err != nil {
		return nil, fmt.Errorf("bundle: %w", err)
	}
	spec := &specs.Spec{}
	if err := json.Unmarshal(raw, spec); err != nil {
		return nil, fmt.Errorf("bundle config.json: %w", err)
	}
	if !strings.HasPrefix(spec.Version, "1.") {
		return nil, fmt.Errorf("ociVersion %q: cimg-oci runs runtime-spec 1.x configs", spec.Version)
	}
	if err := selinuxLabels(spec); err != nil {
		return nil, err
	}
	filter, err := seccompOf(spec)
	if err != nil {
		return nil, err
	}
	if err := os.MkdirAll(g.root, 0o700); err != nil {
		return nil, err
	}
	dir := g.dir(id)
	if err := os.Mkdir(dir, 0o700); err != nil {
		if errors.Is(err, os.ErrExist) {
			return nil, fmt.Errorf("container %s: already exists", id)
		}
		return nil, err
	}
	st := &state{State: specs.State{Version: specs.Version, ID: id, Status: specs.StateCreating, Bundle: bundle, Annotations: spec.Annotations},
		Created: time.Now().UTC()}
	ok := false
	var cg *cgroup.Cgroup
	defer func() {
		if !ok {
			if st.Unit != "" {
				sdscope.Stop(st.Unit)
			}
			if cg != nil {
				cgroup.RemoveLeft(cg.ID, cg.V2, cg.Dirs)
			}
			os.RemoveAll(dir)
		}
	}()
	if err := writeAtomic(dir, configFile, raw); err != nil {
		return nil, err
	}
	if err := g.save(st); err != nil {
		return nil, err
	}
	if err := unix.Mkfifo(filepath.Join(dir, fifoName), 0o600); err != nil {
		return nil, fmt.Errorf("exec fifo: %w", err)
	}
	if err := os.Mkdir(filepath.Join(dir, "root"), 0o700); err != nil {
		return nil, err
	}
	rootfs, release, err := rootfsOf(spec, bundle, st)
	if err != nil {
		return nil, err
	}
	defer release()
	rel, err := cgroup.OCIPath(spec.Linux.CgroupsPath, g.systemdCgroup, id)
	if err != nil {
		return nil, err
	}
	if cg, err = cgroup.NewOCI(rel, spec.Linux.Resources); err != nil {
		return nil, err
	}
	st.Cgroup = cg.Dirs
	var console *os.File
	if c.consoleSocket != "" {
		if console, err = dialConsole(c.consoleSocket); err != nil {
			return nil, err
		}
		defer console.Close()
	}
	oc := &launcher.OCIContainer{ID: id, Spec: spec, Rootfs: rootfs, Bundle: bundle, StateDir: dir,
		Fifo: filepath.Join(dir, fifoName), Console: console, Cgroup: cg, Seccomp: filter}
	// The createRuntime and prestart hooks: after the create, or, where
	// there are createContainer hooks, before those (the spec's order).
	var early []specs.Hook
	if spec.Hooks != nil {
		early = append(slices.Clone(spec.Hooks.CreateRuntime), spec.Hooks.Prestart...) //nolint:staticcheck // prestart: deprecated, still run
	}
	if spec.Hooks != nil && len(spec.Hooks.CreateContainer) > 0 {
		oc.CreateContainer = func(pid int) error {
			s := *st
			s.Pid, s.Status = pid, specs.StateCreated // as they get it without createContainer hooks
			// In the runtime's namespaces: on a goroutine of their own,
			// which never runs on this locked thread.
			errc := make(chan error, 1)
			go func() { errc <- runHooks(early, &s, "") }()
			if err := <-errc; err != nil {
				return err
			}
			early = nil
			s.Status = specs.StateCreating
			// In the assembled root: the mounts are below it, not below
			// root.path as with runc.
			if err := runHooks(spec.Hooks.CreateContainer, &s, filepath.Join(dir, "root")); err != nil {
				return fmt.Errorf("hooks.createContainer: %w", err)
			}
			return nil
		}
	}
	pid, err := launcher.OCICreate(oc)
	if err != nil {
		return nil, err
	}
	kill := func() { unix.Kill(pid, unix.SIGKILL) }
	st.Pid = pid
	if st.PidStart, _, err = procStat(pid); err != nil {
		kill()
		return nil, err
	}
	// systemd as the cgroup manager, where it is init: the container's
	// scope becomes a unit of systemd's, which lists, accounts and stops it.
	if g.systemdCgroup && sdscope.Running() {
		if st.Unit, err = registerScope(id, rel, pid, spec.Linux.Resources, cg); err != nil {
			kill()
			return nil, err
		}
	}
	if err := g.save(st); err != nil {
		kill()
		return nil, err
	}
	st.Status = specs.StateCreated
	if err := runHooks(early, st, ""); err != nil {
		kill()
		return nil, err
	}
	if c.pidFile != "" {
		pf, _ := filepath.Abs(c.pidFile)
		if err := writeAtomic(filepath.Dir(pf), filepath.Base(pf), []byte(strconv.Itoa(pid))); err != nil {
			kill()
			return nil, fmt.Errorf("--pid-file: %w", err)
		}
	}
	ok = true
	return st, nil
}

// registerScope makes the container's cgroup (rel: slice directories,
// then the scope's) the transient scope unit systemd knows it by, and
// returns the unit's name. systemd writes the scope's cgroup as it starts
// the unit: the limits it manages are given as the unit's properties, and
// the config's other resources are written again after it.
func registerScope(id, rel string, pid int, res *specs.LinuxResources, cg *cgroup.Cgroup) (string, error) {
	unit, slice := path.Base(rel), path.Base(path.Dir(rel))
	if slice == "." {
		slice = "-.slice"
	}
	if !strings.HasSuffix(unit, ".scope") {
		return "", fmt.Errorf("linux.cgroupsPath: %s is not a scope: with systemd as the cgroup manager a container is a scope of its own", unit)
	}
	var l sdscope.Limits
	if res != nil {
		if res.Memory != nil {
			l.Memory = res.Memory.Limit
		}
		if res.Pids != nil {
			l.Tasks = &res.Pids.Limit
		}
	}
	if err := sdscope.Start(unit, slice, "cimg-oci container "+id, pid, l); err != nil {
		return "", err
	}
	if cg.V2 {
		if res != nil {
			again := *res
			again.Devices = nil // a program of ours, attached beside systemd's
			if err := cgroup.UpdateOCI(true, cg.Dirs, &again); err != nil {
				sdscope.Stop(unit)
				return "", fmt.Errorf("linux.resources, after systemd started %s: %w", unit, err)
			}
		}
		return unit, nil
	}
	// On v1 systemd moved the process to the top of each hierarchy it
	// does not delegate (devices, freezer) and removed the container's
	// cgroups there, its device rules with them: they are made again, with
	// every limit, and the process, not yet past its exec fifo, put back.
	again, err := cgroup.NewOCI(rel, res)
	if err == nil {
		err = again.Join(pid)
	}
	if err != nil {
		sdscope.Stop(unit)
		return "", fmt.Errorf("the container's cgroups, after systemd started %s: %w", unit, err)
	}
	return unit, nil
}

func dialConsole(path string) (*os.File, error) {
	fd, err := unix.Socket(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, err
	}
	if err := unix.Connect(fd, &unix.SockaddrUnix{Name: path}); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("--console-socket %s: %w", path, err)
	}
	return os.NewFile(uintptr(fd), path), nil
}

func cmdStart(args []string) (int, error) {
	id, err := oneID(flag.NewFlagSet("start", flag.ContinueOnError), args)
	if err != nil {
		return 0, err
	}
	st, err := g.load(id)
	if err != nil {
		return 0, err
	}
	return 0, start(st)
}

// start lets the created process go on to execve: it opens the exec
// fifo, which the process blocks opening from its side, and takes the
// byte it writes; the fifo's removal marks the container running.
func start(st *state) error {
	if st.Status != specs.StateCreated {
		return fmt.Errorf("container %s is %s, not created: cannot start", st.ID, st.Status)
	}
	// The startContainer hooks run before the process may go on, in the
	// container; a failed one stops it (the spec: the container is then
	// stopped, and delete ends its lifecycle).
	if hooks, err := g.hooks(st.ID); err == nil && hooks != nil && len(hooks.StartContainer) > 0 {
		if err := startContainerHooks(st, hooks.StartContainer); err != nil {
			unix.Kill(st.Pid, unix.SIGKILL)
			return err
		}
	}
	fifo := filepath.Join(g.dir(st.ID), fifoName)
	fd, err := unix.Open(fifo, unix.O_RDONLY|unix.O_NONBLOCK|unix.O_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("exec fifo: %w", err)
	}
	defer unix.Close(fd)
	// Poll in short rounds: a process that died while waiting never
	// writes, and must not hang start.
	for {
		pfd := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN}}
		n, err := unix.Poll(pfd, 100)
		if err != nil && err != unix.EINTR {
			return err
		}
		if n > 0 {
			var b [1]byte
			if m, _ := unix.Read(fd, b[:]); m == 1 {
				break
			}
		}
		if !alive(st) {
			return fmt.Errorf("container %s: its process ended before start", st.ID)
		}
	}
	os.Remove(fifo)
	if hooks, err := g.hooks(st.ID); err == nil && hooks != nil {
		st.Status = specs.StateRunning
		if err := runHooks(hooks.Poststart, st, ""); err != nil {
			logLine("warning", err.Error()) // the spec: a poststart failure is a warning
			fmt.Fprintln(os.Stderr, "cimg-oci: warning:", err)
		}
	}
	return nil
}

func cmdState(args []string) (int, error) {
	id, err := oneID(flag.NewFlagSet("state", flag.ContinueOnError), args)
	if err != nil {
		return 0, err
	}
	st, err := g.load(id)
	if err != nil {
		return 0, err
	}
	out := st.State
	if out.Status == specs.StateStopped {
		out.Pid = 0
	}
	b, _ := json.MarshalIndent(out, "", "  ")
	fmt.Println(string(b))
	return 0, nil
}

func cmdKill(args []string) (int, error) {
	fs := flag.NewFlagSet("kill", flag.ContinueOnError)
	all := fs.BoolP("all", "a", false, "signal every process of the container's cgroup")
	if err := fs.Parse(args); err != nil {
		return 0, err
	}
	if fs.NArg() < 1 || fs.NArg() > 2 {
		return 0, errors.New("kill: want ID [SIGNAL]")
	}
	sig := syscall.SIGTERM
	if fs.NArg() == 2 {
		var err error
		if sig, err = launcher.ParseSignal(fs.Arg(1)); err != nil {
			return 0, err
		}
	}
	st, err := g.load(fs.Arg(0))
	if err != nil {
		return 0, err
	}
	if st.Status != specs.StateCreated && st.Status != specs.StateRunning && st.Status != statePaused {
		return 0, fmt.Errorf("container %s is %s: not running", st.ID, st.Status)
	}
	if *all {
		cgroup.Signal(st.cgroupV2(), st.Cgroup, sig)
	}
	if err := signalProcess(st, unix.Signal(sig)); err != nil && !(*all && err == unix.ESRCH) {
		return 0, fmt.Errorf("kill %s: %w", st.ID, err)
	}
	return 0, nil
}

func cmdDelete(args []string) (int, error) {
	fs := flag.NewFlagSet("delete", flag.ContinueOnError)
	force := fs.BoolP("force", "f", false, "kill a running container first")
	id, err := oneID(fs, args)
	if err != nil {
		return 0, err
	}
	st, err := g.load(id)
	if errors.Is(err, errNotExist) && *force {
		return 0, nil
	}
	if err != nil {
		return 0, err
	}
	return 0, remove(st, *force)
}

// remove deletes a stopped container (or one whose create died before
// it recorded a process), or with force any: its process and cgroup go,
// then the poststop hooks run and the state goes. A created container is
// not stopped: the runtime spec wants an error without force.
func remove(st *state, force bool) error {
	switch st.Status {
	case specs.StateStopped, specs.StateCreating:
	default:
		if !force {
			return fmt.Errorf("container %s is %s: stop it first, or delete --force", st.ID, st.Status)
		}
	}
	if st.Pid > 0 && alive(st) {
		killAndWait(st)
	}
	if st.Unit != "" {
		if err := sdscope.Stop(st.Unit); err != nil {
			return err
		}
	}
	if len(st.Cgroup) > 0 {
		id := filepath.Base(firstValue(st.Cgroup))
		if err := cgroup.RemoveLeft(id, st.cgroupV2(), st.Cgroup); err != nil {
			return err
		}
	}
	if hooks, err := g.hooks(st.ID); err == nil && hooks != nil {
		st.Status = specs.StateStopped
		if err := runHooks(hooks.Poststop, st, ""); err != nil {
			logLine("warning", err.Error())
			fmt.Fprintln(os.Stderr, "cimg-oci: warning:", err)
		}
	}
	return os.RemoveAll(g.dir(st.ID))
}

func firstValue(m map[string]string) string {
	for _, v := range m {
		return v
	}
	return ""
}

func cmdRun(args []string) (int, error) {
	fs := flag.NewFlagSet("run", flag.ContinueOnError)
	var c createFlags
	c.add(fs)
	detach := fs.BoolP("detach", "d", false, "return once the container runs")
	keep := fs.Bool("keep", false, "keep the container's state after it exits")
	id, err := oneID(fs, args)
	if err != nil {
		return 0, err
	}
	// This process is the container's parent: its signals go on to it.
	sigs := launcher.RelaySignals()
	st, err := create(id, &c)
	if err != nil {
		return 0, err
	}
	if err := start(st); err != nil {
		st.Status = g.status(st)
		remove(st, true)
		return 0, err
	}
	if *detach {
		return 0, nil
	}
	code := launcher.WaitRelay(st.Pid, sigs)
	if !*keep {
		if st, err := g.load(id); err == nil {
			remove(st, true)
		}
	}
	return code, nil
}

func cmdExec(args []string) (int, error) {
	fs := flag.NewFlagSet("exec", flag.ContinueOnError)
	fs.SetInterspersed(false)
	processFile := fs.StringP("process", "p", "", "the process, as config.json's process object")
	consoleSocket := fs.String("console-socket", "", "unix socket to send the terminal's master to")
	pidFile := fs.String("pid-file", "", "write the process's pid here")
	detach := fs.BoolP("detach", "d", false, "return once the process runs")
	tty := fs.BoolP("tty", "t", false, "a terminal (with --console-socket)")
	cwd := fs.String("cwd", "", "working directory")
	env := fs.StringArrayP("env", "e", nil, "KEY=VALUE to add")
	user := fs.StringP("user", "u", "", "UID[:GID]")
	caps := fs.StringArray("cap", nil, "a capability to add")
	nnp := fs.Bool("no-new-privs", false, "set no_new_privs")
	preserve := fs.Int("preserve-fds", 0, "refused when non-zero")
	fs.String("process-label", "", "refused when set")
	fs.String("apparmor", "", "refused when set")
	if err := fs.Parse(args); err != nil {
		return 0, err
	}
	if fs.NArg() < 1 {
		return 0, errors.New("exec: want ID [COMMAND ARG...]")
	}
	if *preserve > 0 {
		return 0, errors.New("exec --preserve-fds: not supported by cimg-oci")
	}
	for _, f := range []string{"process-label", "apparmor"} {
		if v, _ := fs.GetString(f); v != "" {
			return 0, fmt.Errorf("exec --%s: not supported by cimg-oci", f)
		}
	}
	st, err := g.load(fs.Arg(0))
	if err != nil {
		return 0, err
	}
	if st.Status != specs.StateRunning {
		return 0, fmt.Errorf("container %s is %s: exec needs it running", st.ID, st.Status)
	}
	spec, err := g.config(st.ID)
	if err != nil {
		return 0, err
	}
	var proc *specs.Process
	if *processFile != "" {
		b, err := os.ReadFile(*processFile)
		if err != nil {
			return 0, fmt.Errorf("--process: %w", err)
		}
		proc = &specs.Process{}
		if err := json.Unmarshal(b, proc); err != nil {
			return 0, fmt.Errorf("--process: %w", err)
		}
	} else {
		if fs.NArg() < 2 {
			return 0, errors.New("exec: no command (give one, or --process)")
		}
		p := *spec.Process
		proc = &p
		proc.Args = fs.Args()[1:]
		proc.Terminal = *tty
		proc.Env = append(append([]string{}, p.Env...), *env...)
		if *cwd != "" {
			proc.Cwd = *cwd
		}
		if *nnp {
			proc.NoNewPrivileges = true
		}
		if *user != "" {
			u, gr, _ := strings.Cut(*user, ":")
			uid, err := strconv.ParseUint(u, 10, 32)
			if err != nil {
				return 0, fmt.Errorf("--user %q: want UID[:GID]", *user)
			}
			proc.User = specs.User{UID: uint32(uid)}
			if gr != "" {
				gid, err := strconv.ParseUint(gr, 10, 32)
				if err != nil {
					return 0, fmt.Errorf("--user %q: want UID[:GID]", *user)
				}
				proc.User.GID = uint32(gid)
			}
		}
		if len(*caps) > 0 && proc.Capabilities != nil {
			c := *proc.Capabilities
			for _, n := range *caps {
				c.Bounding = append(c.Bounding, n)
				c.Effective = append(c.Effective, n)
				c.Permitted = append(c.Permitted, n)
			}
			proc.Capabilities = &c
		}
	}
	var console *os.File
	if *consoleSocket != "" {
		if console, err = dialConsole(*consoleSocket); err != nil {
			return 0, err
		}
		defer console.Close()
	}
	filter, err := seccompOf(spec)
	if err != nil {
		return 0, err
	}
	_, code, err := launcher.OCIExec(launcher.OCIExecOptions{Pid: st.Pid, Spec: spec, Seccomp: filter, Process: proc, Cgroup: st.Cgroup,
		Detach: *detach, Console: console, Started: func(pid int) error {
			if *pidFile == "" {
				return nil
			}
			pf, _ := filepath.Abs(*pidFile)
			return writeAtomic(filepath.Dir(pf), filepath.Base(pf), []byte(strconv.Itoa(pid)))
		}})
	return code, err
}

func cmdFeatures(args []string) (int, error) {
	b, _ := json.MarshalIndent(featureSet(), "", "  ")
	fmt.Println(string(b))
	return 0, nil
}
