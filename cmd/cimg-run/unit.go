package main

import (
	"errors"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"cimg.dev/cimg/internal/instance"
	"cimg.dev/cimg/internal/store"
	"cimg.dev/cimg/launcher"
	"cimg.dev/cimg/manifest"
)

// launcherCaps are the capabilities cimg-run itself uses to launch:
// mounts, namespaces and pivot_root (SYS_ADMIN, SYS_CHROOT), the app's
// ids and capability sets (SETUID, SETGID, SETPCAP), volumes (CHOWN,
// DAC_OVERRIDE, FOWNER), raising rlimits (SYS_RESOURCE), the loopback
// of a private network (NET_ADMIN), signals (KILL), and reading the
// app's /proc (SYS_PTRACE, DAC_READ_SEARCH), and a loop device's node
// where no udev makes it (MKNOD). The unit's bounding set is these and
// the ones the app keeps.
var launcherCaps = []string{"CAP_SYS_ADMIN", "CAP_SYS_CHROOT", "CAP_SETUID", "CAP_SETGID", "CAP_SETPCAP", "CAP_CHOWN",
	"CAP_DAC_OVERRIDE", "CAP_DAC_READ_SEARCH", "CAP_FOWNER", "CAP_SYS_RESOURCE", "CAP_NET_ADMIN", "CAP_KILL", "CAP_SYS_PTRACE", "CAP_MKNOD"}

// unit is `cimg-run unit [flags of run] [--name N] IMAGE [-- ARGS]`: a
// systemd service that runs the image as instance N.
func unit(args []string) (int, error) {
	var o launcher.Options
	fs, verify := runFlags(&o)
	name := fs.String("name", "", "the instance's and unit's `name` (cimg-NAME.service; default: the app's name)")
	ready := fs.String("ready", "started", "when the unit is ready: `started` (the app runs) or notify (the app sends READY=1 itself)")
	dir := fs.String("unit-dir", "/etc/systemd/system", "where the unit file goes")
	enable := fs.Bool("enable", false, "enable the unit (start at boot)")
	now := fs.Bool("now", false, "start the unit now")
	binary := fs.String("cimg-run", "", "the cimg-run `path` the unit runs (default: this one)")
	storeRoot := fs.String("store", defaultStore, "the store `directory` of an installed app IMAGE names")
	if err := fs.Parse(args); err != nil {
		return 2, err
	}
	if err := imageArgs(fs, verify, &o); err != nil {
		return 2, err
	}
	if *ready != "started" && *ready != "notify" {
		return 2, fmt.Errorf("--ready %q: want started or notify", *ready)
	}
	// An installed app: the unit runs it by name, so that each start takes
	// the store's current (or trial) version; its current one is checked.
	app := ""
	if _, err := os.Stat(o.Image); err != nil && instance.CheckName(o.Image) == nil {
		s, err := store.Open(*storeRoot)
		if err != nil {
			return 0, err
		}
		a, err := s.Get(o.Image)
		if err != nil {
			return 0, err
		}
		app, o.Image = a.Name, s.ImageOf(a.Current)
		for _, g := range a.Grants {
			o.Grants.Add(g)
		}
		if *name == "" {
			*name = app
		}
	} else if abs, err := filepath.Abs(o.Image); err == nil {
		o.Image = abs
	}
	// Checked as the launch will check it: a unit that cannot start is
	// not written.
	adm, err := launcher.Admit(o)
	if err != nil {
		return 0, err
	}
	if *name == "" {
		*name = adm.Name
	}
	if err := instance.CheckName(*name); err != nil {
		return 2, err
	}
	exe := *binary
	if exe == "" {
		if exe, err = os.Executable(); err != nil {
			return 0, err
		}
	}
	flags := args[:len(args)-len(fs.Args())]
	rest := append([]string{o.Image}, fs.Args()[1:]...) // the image by its absolute path
	if app != "" {
		rest[0] = app
		given := false
		fs.Visit(func(f *flag.Flag) { given = given || f.Name == "store" })
		flags = append(append([]string(nil), flags...), "--installed")
		if !given {
			flags = append(flags, "--store", *storeRoot)
		}
	}
	text, err := unitText(exe, *name, *ready, o, adm, flags, rest)
	if err != nil {
		return 0, err
	}
	file := filepath.Join(*dir, "cimg-"+*name+".service")
	if err := writeFileAtomic(file, []byte(text)); err != nil {
		return 0, err
	}
	fmt.Println(file)
	if _, err := os.Stat("/run/systemd/system"); err != nil {
		if *enable || *now {
			return 0, errors.New("systemd is not running here (no /run/systemd/system): the unit is written, enable it where systemd runs")
		}
		return 0, nil
	}
	systemctl := func(a ...string) error {
		out, err := exec.Command("systemctl", a...).CombinedOutput()
		if err != nil {
			return fmt.Errorf("systemctl %s: %v: %s", strings.Join(a, " "), err, out)
		}
		return nil
	}
	if err := systemctl("daemon-reload"); err != nil {
		return 0, err
	}
	switch {
	case *enable && *now:
		err = systemctl("enable", "--now", "cimg-"+*name+".service")
	case *enable:
		err = systemctl("enable", "cimg-"+*name+".service")
	case *now:
		err = systemctl("start", "cimg-"+*name+".service")
	}
	return 0, err
}

// unitText is the service unit. The launcher runs in the foreground as
// the unit's main process until the app runs, places the app's cgroup in
// the unit's (Delegate=yes), hands the app to systemd as MAINPID and
// exits; systemd supervises the app from then on.
func unitText(exe, name, ready string, o launcher.Options, adm *launcher.Admitted, flags, rest []string) (string, error) {
	// The run's flags as given, minus unit's own and --name.
	var run []string
	unitOnly := map[string]bool{"ready": true, "unit-dir": true, "enable": true, "now": true, "cimg-run": true, "name": true}
	for i := 0; i < len(flags); i++ {
		f := flags[i]
		k, _, hasValue := strings.Cut(strings.TrimLeft(f, "-"), "=")
		if unitOnly[k] {
			if !hasValue && k != "enable" && k != "now" && i+1 < len(flags) {
				i++ // its value
			}
			continue
		}
		run = append(run, f)
	}
	caps := slices.Clone(launcherCaps)
	for _, c := range append(adm.Capabilities, o.Overrides.CapAdd...) {
		if cc := manifest.CanonicalCap(c); !slices.Contains(caps, cc) {
			caps = append(caps, cc)
		}
	}
	stop := o.StopTimeout
	if stop == 0 {
		stop = 10 * time.Second
	}
	state := o.StateDir
	if state == "" {
		state = "/run/cimg"
	}
	start := append([]string{exe, "run", "--systemd", "--ready=" + ready, "--name", name}, run...)
	// An installed app: the store's boot counter first (a trial started
	// too often unconfirmed is abandoned); the start itself counts one.
	pre := ""
	for i, f := range run {
		if f == "--store" && i+1 < len(run) {
			pre = "ExecStartPre=" + quoteCommand([]string{exe, "boot", "--store", run[i+1]}) + "\n"
		}
	}
	start = append(start, rest...)
	var b strings.Builder
	fmt.Fprintf(&b, `# Written by cimg-run unit: run it again to change this unit.
[Unit]
Description=%s %s (cimg app %s)
After=local-fs.target network.target

[Service]
Type=notify
# The launcher, then the app (after MAINPID=), send the notifications.
NotifyAccess=all
%sExecStart=%s
# SIGTERM to the app and wait for it (systemd alone would SIGKILL at
# once an app it did not fork), then record how it ended.
ExecStop=%s unit-stop --state-dir %s -t %d %s
ExecStopPost=%s unit-exited --state-dir %s %s
Restart=on-failure
RestartSec=2
# Stop as cimg-run stop does: SIGTERM to the app, SIGKILL to all of it
# --stop-timeout later (ExecStop=); systemd's own timeout is a backstop.
KillMode=mixed
TimeoutStopSec=%d
# The app's cgroup is created inside this unit's.
Delegate=yes
CapabilityBoundingSet=%s

[Install]
WantedBy=multi-user.target
`, adm.Name, adm.Version, name, pre, quoteCommand(start), quoteArg(exe), quoteArg(state), int(stop.Seconds()+0.5), quoteArg(name), quoteArg(exe), quoteArg(state), quoteArg(name), int(stop.Seconds()+0.5)+5, strings.Join(caps, " "))
	return b.String(), nil
}

// quoteCommand joins a command line as systemd reads ExecStart=.
func quoteCommand(argv []string) string {
	q := make([]string, len(argv))
	for i, a := range argv {
		q[i] = quoteArg(a)
	}
	return strings.Join(q, " ")
}

// quoteArg quotes a word for systemd when it needs it; '%' and '$' are
// doubled so that systemd leaves them as they are.
func quoteArg(a string) string {
	a = strings.ReplaceAll(strings.ReplaceAll(a, "%", "%%"), "$", "$$")
	if a != "" && !strings.ContainsAny(a, " \t\"'\\;") {
		return a
	}
	return `"` + strings.ReplaceAll(strings.ReplaceAll(a, `\`, `\\`), `"`, `\"`) + `"`
}

// writeFileAtomic writes a file as every persistent change is written:
// temp file, fsync, rename, fsync of the directory.
func writeFileAtomic(path string, data []byte) error {
	tmp, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	if _, err := tmp.Write(data); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Chmod(0o644); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return err
	}
	d, err := os.Open(filepath.Dir(path))
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}

// unitExited is the unit's ExecStopPost=: it records how the app ended
// as systemd reports it.
func unitExited(args []string) (int, error) {
	fs, state := stateFlags("unit-exited")
	pos, err := parseMixed(fs, args)
	if err != nil || len(pos) != 1 {
		return 2, errors.New("usage: cimg-run unit-exited [--state-dir DIR] NAME (a unit's ExecStopPost=)")
	}
	_, err = instance.UnitExited(*state, pos[0], os.Getenv("EXIT_CODE"), os.Getenv("EXIT_STATUS"), os.Getenv("SERVICE_RESULT"))
	if errors.As(err, new(*instance.ErrNotFound)) {
		return 0, nil // the launch failed before the app ran: nothing to record
	}
	return 0, err
}

// unitStop is the unit's ExecStop=.
func unitStop(args []string) (int, error) {
	fs, state := stateFlags("unit-stop")
	t := fs.Int("t", 10, "seconds between SIGTERM and SIGKILL")
	pos, err := parseMixed(fs, args)
	if err != nil || len(pos) != 1 {
		return 2, errors.New("usage: cimg-run unit-stop [--state-dir DIR] [-t SECONDS] NAME (a unit's ExecStop=)")
	}
	return 0, instance.StopApp(*state, pos[0], time.Duration(*t)*time.Second)
}
