package main

import (
	"bufio"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"

	"golang.org/x/sys/unix"

	"cimg.dev/cimg/internal/cgroup"
	"cimg.dev/cimg/internal/instance"
	"cimg.dev/cimg/internal/store"
	"cimg.dev/cimg/launcher"
)

// readyFlag is how a detached start tells its supervisor process (the
// same command line, minus -d) which fd to report "ok NAME" or the error
// on. It is not in the usage: nobody types it.
const readyFlag = "detached-ready-fd"

// runInstance is `cimg-run run`: a launch under a name, in the
// foreground, or (-d) in a supervisor process of its own.
func runInstance(args []string) (int, error) {
	var o launcher.Options
	fs, verify := runFlags(&o)
	name := fs.String("name", "", "the instance's `name` (default: the app's name and a random suffix)")
	detach := fs.Bool("d", false, "detach: print the name once the app runs and return; its output goes to a bounded log (cimg-run logs)")
	readyFD := fs.Int(readyFlag, -1, "")
	standbyFD := fs.Int(standbyFlag, -1, "")
	storeRoot := fs.String("store", defaultStore, "the store `directory` an installed app NAME is run from")
	installed := fs.Bool("installed", false, "IMAGE is an installed app's name, whatever files the current directory holds")
	counted := fs.Bool(trialCountedFlag, false, "")
	systemd := fs.Bool("systemd", false, "run as the ExecStart of a systemd unit (cimg-run unit writes them): the app's cgroup in the unit's, the app handed to systemd")
	readyWhen := fs.String("ready", "started", "with --systemd: the unit is ready when the app `started`, or when it says so (notify: it gets the unit's NOTIFY_SOCKET)")
	if err := fs.Parse(args); err != nil {
		return 2, err
	}
	if *readyWhen != "started" && *readyWhen != "notify" {
		return 2, fmt.Errorf("--ready %q: want started or notify", *readyWhen)
	}
	if *name != "" {
		if err := instance.CheckName(*name); err != nil {
			return 2, err
		}
	}
	if err := imageArgs(fs, verify, &o); err != nil {
		return 2, err
	}
	if *detach {
		if *systemd {
			return 2, errors.New("-d and --systemd: a unit's app is systemd's to supervise, not a detached launcher's")
		}
		name, err := detachStart(args[:len(args)-len(fs.Args())], fs.Args())
		if err != nil {
			return 125, err
		}
		fmt.Println(name)
		return 0, nil
	}
	if *systemd {
		var err error
		if o.Systemd, err = launcher.SystemdFromEnv(*readyWhen == "notify"); err != nil {
			return 2, err
		}
	}
	if err := resolveApp(&o, *storeRoot, name, *installed, *counted); err != nil {
		return 0, err
	}
	var ready *os.File
	if *readyFD >= 0 {
		// We are a detached supervisor: errors go to the waiting parent,
		// our output to the log.
		ready = os.NewFile(uintptr(*readyFD), "ready")
		unix.CloseOnExec(*readyFD)
		o.Warn = func(string) {}
	}
	var standby *os.File
	if *standbyFD >= 0 && ready != nil {
		standby = os.NewFile(uintptr(*standbyFD), "standby")
		unix.CloseOnExec(*standbyFD)
	}
	code, err := runNamed(&o, *name, ready, standby)
	if err != nil && ready != nil {
		fmt.Fprintf(ready, "%v\n", err)
		ready.Close()
	}
	return code, err
}

// resolveApp turns an IMAGE argument that is no file but an installed
// app's name into that app's image (its trial version while one is on
// trial, counted unless update counted it already), grants and volumes;
// the instance takes the app's name.
func resolveApp(o *launcher.Options, root string, name *string, installed, counted bool) error {
	if !installed {
		if _, err := os.Stat(o.Image); err == nil || instance.CheckName(o.Image) != nil {
			return nil
		}
		if _, err := os.Stat(root); err != nil {
			return nil // no store here (none is made for a look): the launch says the file is missing
		}
	}
	app := o.Image
	image, grants, err := storeApp(root, app, counted)
	if errors.As(err, new(*store.ErrNotInstalled)) && !installed {
		return nil
	}
	if err != nil {
		return err
	}
	o.Image = image
	for _, g := range grants {
		if err := o.Grants.Add(g); err != nil {
			return fmt.Errorf("app %s: its recorded grant %q: %w", app, g, err)
		}
	}
	// Under the app's own directory: a factory reset or remove --purge
	// wipes exactly its volumes (the launcher adds the manifest's name).
	o.VolumeDir = filepath.Join(root, "volumes", app) // made when the app has volumes
	o.NoHealth = true                                 // the health check is update's gate
	if name != nil && *name == "" {
		*name = app
	}
	return nil
}

// runNamed claims the name and runs the launch as that instance. With
// standby (update's next version, see startStandby), the launch holds
// before the app until update says go, and takes the name after.
func runNamed(o *launcher.Options, name string, ready, standby *os.File) (int, error) {
	if o.StateDir == "" {
		o.StateDir = "/run/cimg"
	}
	if abs, err := filepath.Abs(o.Image); err == nil {
		o.Image = abs // recorded: ps and units name the file wherever they run
	}
	if name == "" {
		app, err := launcher.AppName(o.Image)
		if err != nil {
			return 0, err
		}
		name = instance.DefaultName(app)
	}
	create := instance.Create
	if standby != nil {
		create = instance.CreateStandby
		o.Hold = func() error {
			if _, err := ready.WriteString(standbyHeld + "\n"); err != nil {
				return err
			}
			var b [1]byte
			if n, _ := standby.Read(b[:]); n != 1 || b[0] != standbyGo[0] {
				return errors.New("update ended before it let the new version start")
			}
			return nil
		}
	}
	in, err := create(o.StateDir, name)
	if err != nil {
		return 0, err
	}
	// Recorded as the operator typed it (a detached supervisor's own
	// flag is ours).
	for _, a := range os.Args {
		if !strings.HasPrefix(a, "--"+readyFlag+"=") {
			in.Command = append(in.Command, a)
		}
	}
	in.Ready = ready
	if ready != nil {
		if err := in.DetachLog(); err != nil {
			in.Discard()
			return 0, err
		}
	}
	o.Instance = in
	code, err := launcher.Run(*o)
	if !in.HasStarted() {
		in.Discard() // the app never ran: nothing to list
	}
	return code, err
}

// standbyFlag hands a detached supervisor the read end of update's go
// pipe: it prepares the launch, says standbyHeld on its ready fd, and
// starts the app when standbyGo arrives (EOF: it ends, nothing started).
const (
	standbyFlag = "standby-fd"
	standbyHeld = "held"
	standbyGo   = "g"
)

// detachStart starts this command line again, minus -d, as a supervisor
// in a session of its own, and returns once that reports the app running
// (with the instance's name) or failing. flags are the arguments of run
// before IMAGE, rest IMAGE and what follows.
func detachStart(flags, rest []string) (string, error) {
	r, err := startSupervisor(flags, rest, nil)
	if err != nil {
		return "", err
	}
	return supervisorSays(bufio.NewReader(r), r)
}

// startSupervisor starts `cimg-run run` with flags (less -d) and rest as
// a detached supervisor, and returns the read end of its ready pipe. With
// standby, that is its fd 4 (the standby flag is added).
func startSupervisor(flags, rest []string, standby *os.File) (*os.File, error) {
	child := []string{os.Args[0], "run", "--" + readyFlag + "=3"}
	if standby != nil {
		child = append(child, "--"+standbyFlag+"=4")
	}
	for _, a := range flags {
		if a != "-d" && a != "--d" && a != "-d=true" && a != "--d=true" {
			child = append(child, a)
		}
	}
	child = append(child, rest...)
	r, w, err := os.Pipe()
	if err != nil {
		return nil, err
	}
	null, err := os.Open(os.DevNull)
	if err != nil {
		return nil, err
	}
	defer null.Close()
	files := []*os.File{null, null, null, w}
	if standby != nil {
		files = append(files, standby)
	}
	p, err := os.StartProcess("/proc/self/exe", child, &os.ProcAttr{
		Files: files,
		Sys:   &syscall.SysProcAttr{Setsid: true},
	})
	w.Close()
	if err != nil {
		r.Close()
		return nil, fmt.Errorf("start the supervisor: %w", err)
	}
	p.Release() // it outlives us; init reaps it
	return r, nil
}

// supervisorSays reads a detached supervisor's last word on its ready
// pipe: "ok NAME" once the app runs (the name is returned), or why it
// failed.
func supervisorSays(br *bufio.Reader, r *os.File) (string, error) {
	msg, _ := br.ReadString(0)
	r.Close()
	msg = strings.TrimSpace(msg)
	if n, ok := strings.CutPrefix(msg, "ok "); ok {
		return n, nil
	}
	if msg == "" {
		msg = "the supervisor ended before the app started (see the kernel log and cimg-run doctor)"
	}
	return "", errors.New(msg)
}

// stateFlags is a subcommand's flag set with --state-dir.
func stateFlags(name string) (*flag.FlagSet, *string) {
	fs := flag.NewFlagSet("cimg-run "+name, flag.ContinueOnError)
	return fs, fs.String("state-dir", "/run/cimg", "the state `directory` holding the instances")
}

// parseMixed parses flags that may come before or after the positional
// arguments (stop NAME -t 5); after "--" everything is positional.
func parseMixed(fs *flag.FlagSet, args []string) ([]string, error) {
	var pos []string
	for {
		if err := fs.Parse(args); err != nil {
			return nil, err
		}
		rest := fs.Args()
		if len(rest) < len(args) && len(args) > 0 && args[len(args)-len(rest)-1] == "--" {
			return append(pos, rest...), nil // Parse ate the "--"
		}
		if len(rest) == 0 {
			return pos, nil
		}
		pos, args = append(pos, rest[0]), rest[1:]
		if len(args) > 0 && args[0] == "--" {
			return append(pos, args[1:]...), nil
		}
	}
}

// psRow is one instance as ps prints it (and --json writes it).
type psRow struct {
	Name      string         `json:"name"`
	App       string         `json:"app"`
	Version   string         `json:"version"`
	State     string         `json:"state"`
	Pid       int            `json:"pid,omitempty"`
	Started   time.Time      `json:"started"`
	UptimeSec float64        `json:"uptime_seconds,omitempty"`
	Memory    *int64         `json:"memory_bytes,omitempty"` // from the cgroup, while it runs
	Pids      *int64         `json:"pids,omitempty"`
	RootHash  string         `json:"root_hash"`
	Image     string         `json:"image"`
	Exit      *instance.Exit `json:"exit,omitempty"`
}

func rowOf(r *instance.Record) psRow {
	row := psRow{Name: r.State.Name, App: r.State.App, Version: r.State.Version, State: r.Status(),
		Started: r.State.Started, RootHash: r.State.RootHash, Image: r.State.Image, Exit: r.Exit}
	if r.Running() {
		row.Pid = r.State.Pid
		row.UptimeSec = time.Since(r.State.Started).Seconds()
		mem, pids := cgroup.Usage(r.State.CgroupV2, r.State.Cgroup)
		if mem >= 0 {
			row.Memory = &mem
		}
		if pids >= 0 {
			row.Pids = &pids
		}
	}
	return row
}

func ps(args []string) (int, error) {
	fs, state := stateFlags("ps")
	all := fs.Bool("a", false, "also list instances that have ended")
	asJSON := fs.Bool("json", false, "print JSON")
	if pos, err := parseMixed(fs, args); err != nil || len(pos) > 0 {
		return 2, errors.New("usage: cimg-run ps [-a] [--json]")
	}
	recs, err := instance.List(*state)
	if err != nil {
		return 125, err
	}
	rows := []psRow{}
	for _, r := range recs {
		if r.Running() || *all {
			rows = append(rows, rowOf(r))
		}
	}
	if *asJSON {
		enc := json.NewEncoder(os.Stdout)
		enc.SetIndent("", "  ")
		return 0, enc.Encode(rows)
	}
	tw := tabwriter.NewWriter(os.Stdout, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "NAME\tAPP\tVERSION\tSTATE\tPID\tUPTIME\tMEMORY\tPIDS\tROOT HASH")
	for _, r := range rows {
		pid, up, mem, pids := "-", "-", "-", "-"
		if r.Pid != 0 {
			pid, up = strconv.Itoa(r.Pid), (time.Duration(r.UptimeSec) * time.Second).String()
		}
		if r.Memory != nil {
			mem = fmt.Sprintf("%.1fMiB", float64(*r.Memory)/(1<<20))
		}
		if r.Pids != nil {
			pids = strconv.FormatInt(*r.Pids, 10)
		}
		hash := r.RootHash
		if len(hash) > 12 {
			hash = hash[:12]
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", r.Name, r.App, r.Version, r.State, pid, up, mem, pids, hash)
	}
	return 0, tw.Flush()
}

func stop(args []string) (int, error) {
	fs, state := stateFlags("stop")
	t := fs.Int("t", 10, "seconds between SIGTERM and SIGKILL")
	names, err := parseMixed(fs, args)
	if err != nil || len(names) == 0 {
		return 2, errors.New("usage: cimg-run stop [-t SECONDS] NAME...")
	}
	var errs []error
	for _, n := range names {
		if r, err := instance.Get(*state, n); err == nil && r.State.Unit != "" && r.Running() {
			// systemd supervises it: its stop, so that the unit does not
			// take the app's end for a failure to restart from.
			if out, err := exec.Command("systemctl", "stop", r.State.Unit).CombinedOutput(); err != nil {
				errs = append(errs, fmt.Errorf("systemctl stop %s: %v: %s", r.State.Unit, err, out))
				continue
			}
		}
		r, err := instance.Stop(*state, n, time.Duration(*t)*time.Second)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		fmt.Printf("%s %s\n", n, r.Status())
	}
	return 0, errors.Join(errs...)
}

func kill(args []string) (int, error) {
	fs, state := stateFlags("kill")
	sigFlag := fs.String("s", "", "the `SIGNAL` (as docker kill -s)")
	pos, err := parseMixed(fs, args)
	if err != nil || len(pos) < 1 || len(pos) > 2 || len(pos) == 2 && *sigFlag != "" {
		return 2, errors.New("usage: cimg-run kill [-s SIGNAL] NAME [SIGNAL]")
	}
	sig := syscall.SIGKILL
	if len(pos) == 2 {
		*sigFlag = pos[1]
	}
	if *sigFlag != "" {
		if sig, err = launcher.ParseSignal(*sigFlag); err != nil {
			return 2, err
		}
	}
	return 0, instance.Kill(*state, pos[0], sig)
}

func inspect(args []string) (int, error) {
	fs, state := stateFlags("inspect")
	pos, err := parseMixed(fs, args)
	if err != nil || len(pos) != 1 {
		return 2, errors.New("usage: cimg-run inspect NAME")
	}
	r, err := instance.Get(*state, pos[0])
	if err != nil {
		return 125, err
	}
	out := struct {
		psRow
		Supervisor int               `json:"supervisor_pid,omitempty"`
		Detached   bool              `json:"detached"`
		Cgroup     map[string]string `json:"cgroup"`
		Command    []string          `json:"command"`
		Config     json.RawMessage   `json:"config"`
		Dir        string            `json:"state_dir"`
	}{rowOf(r), r.Supervisor, r.State.Detached, r.State.Cgroup, r.State.Command, nil, r.Dir()}
	if plan, err := r.Plan(); err == nil {
		out.Config = plan
	}
	enc := json.NewEncoder(os.Stdout)
	enc.SetIndent("", "  ")
	return 0, enc.Encode(out)
}

func logs(args []string) (int, error) {
	fs, state := stateFlags("logs")
	follow := fs.Bool("f", false, "follow: keep printing what the app writes until it ends")
	tail := fs.Int("tail", -1, "print only the last `N` lines")
	pos, err := parseMixed(fs, args)
	if err != nil || len(pos) != 1 {
		return 2, errors.New("usage: cimg-run logs [-f] [--tail N] NAME")
	}
	return 0, instance.ReadLog(*state, pos[0], *tail, *follow, os.Stdout, os.Stderr)
}

func rm(args []string) (int, error) {
	fs, state := stateFlags("rm")
	names, err := parseMixed(fs, args)
	if err != nil || len(names) == 0 {
		return 2, errors.New("usage: cimg-run rm NAME...")
	}
	var errs []error
	for _, n := range names {
		errs = append(errs, instance.Remove(*state, n))
	}
	return 0, errors.Join(errs...)
}
