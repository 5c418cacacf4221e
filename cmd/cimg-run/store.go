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
	"strings"
	"text/tabwriter"
	"time"

	"cimg.dev/cimg/format"
	"cimg.dev/cimg/internal/imagecache"
	"cimg.dev/cimg/internal/instance"
	"cimg.dev/cimg/internal/store"
	"cimg.dev/cimg/launcher"
	"cimg.dev/cimg/manifest"
)

const defaultStore = "/var/lib/cimg/store"

// trialCountedFlag is update's own start of the trial version (run
// --installed): update counted the start before it stopped the old
// version, so that the fsynced count is not in the gap.
const trialCountedFlag = "trial-counted"

// trialStarts is how many starts of a trial version may go unconfirmed
// before the store abandons it by itself (a boot counter, per app).
const trialStarts = 3

// storeFlags are the flags every store command has.
type storeFlags struct {
	fs       *flag.FlagSet
	root     *string
	state    *string
	keys     repeated
	grants   repeated
	asJSON   *bool
	stopTime *int
	ca       *string           // a CA file for https:// and oci:// sources, besides the system's
	quiet    *bool             // no progress bar
	regConf  *string           // docker-style config.json with registry credentials (oci://)
	creds    *string           // USER:PASSWORD for the registry (oci://)
	units    map[string]string // app → the systemd unit that ran it when stopped
	counted  bool              // update counted the trial start the next startDetached makes
	asks     []string          // what the last admitted image asks beyond the default (granted)
}

func newStoreFlags(name string, grants bool) *storeFlags {
	f := &storeFlags{fs: flag.NewFlagSet("cimg-run "+name, flag.ContinueOnError), units: map[string]string{}}
	f.root = f.fs.String("store", defaultStore, "the store `directory`")
	f.state = f.fs.String("state-dir", "/run/cimg", "the state `directory` (mount cache and instances)")
	f.fs.Var(&f.keys, "key", "trusted public key `file`, besides /etc/cimg/keys/*.pub (repeatable)")
	f.asJSON = f.fs.Bool("json", false, "print JSON")
	f.stopTime = f.fs.Int("t", 10, "seconds between SIGTERM and SIGKILL when the app is stopped")
	if grants {
		f.fs.Var(&f.grants, "grant", "grant the app a privilege it asks for (repeatable): "+launcher.GrantHelp)
		f.ca = f.fs.String("ca", "", "a PEM `file` of CA certificates trusted for https:// and oci:// sources, besides the system's")
		f.quiet = f.fs.Bool("quiet", false, "no progress bar while downloading")
		f.regConf = f.fs.String("registry-config", "/etc/cimg/registries.json", "docker-style config.json `file` with registry credentials (oci://)")
		f.creds = f.fs.String("creds", "", "`USER:PASSWORD` for the registry of an oci:// source")
	}
	return f
}

func (f *storeFlags) open() (*store.Store, error) { return store.Open(*f.root) }

// say prints a message for a person: on stdout, or on stderr when stdout
// is JSON for a program.
func (f *storeFlags) say(format string, a ...any) {
	w := os.Stdout
	if *f.asJSON {
		w = os.Stderr
	}
	fmt.Fprintf(w, format, a...)
}

// admit is the launcher's check of a stored copy with the app's grants.
func (f *storeFlags) admit(image string, grants []string) ([]string, error) {
	o := launcher.Options{Image: image, KeyFiles: f.keys, StateDir: *f.state, NoHealth: true}
	for _, g := range grants {
		if err := o.Grants.Add(g); err != nil {
			return nil, err
		}
	}
	a, err := launcher.Admit(o)
	if err != nil {
		return nil, err
	}
	f.asks = a.Asks
	return a.Signers, nil
}

// install is `cimg-run install FILE [--name N] [--grant ...]`.
func install(args []string) (int, error) {
	f := newStoreFlags("install", true)
	name := f.fs.String("name", "", "the app's `name` (default: the image's)")
	pos, err := parseMixed(f.fs, args)
	if err != nil || len(pos) != 1 {
		return 2, errors.New("usage: cimg-run install [--name NAME] [--grant G]... [--ca FILE] [--quiet] [--store DIR] FILE|URL|oci://REF")
	}
	s, err := f.open()
	if err != nil {
		return 0, err
	}
	src, finish, err := f.source(pos[0])
	if err != nil {
		return 0, err
	}
	if *name == "" {
		if *name, err = launcher.AppName(src); err != nil {
			finish(false)
			return 0, err
		}
	}
	a, err := s.Install(*name, src, f.grants, f.admit)
	finish(err == nil)
	if err != nil {
		return 0, fromSource(err, src, pos[0])
	}
	if len(f.asks) > 0 {
		f.say("%s asks for, and is granted: %s\n", *name, strings.Join(f.asks, " "))
	}
	return 0, printApps(f, []*store.App{a})
}

// update is `cimg-run update NAME FILE`: the new version on trial, the
// app restarted on it, the health gate, then commit or roll back.
func update(args []string) (int, error) {
	f := newStoreFlags("update", true)
	downgrade := f.fs.Bool("allow-downgrade", false, "install a version below the app's floor")
	pos, err := parseMixed(f.fs, args)
	if err != nil || len(pos) != 2 {
		return 2, errors.New("usage: cimg-run update [--grant G]... [--allow-downgrade] [--ca FILE] [--quiet] [--store DIR] NAME FILE|URL|oci://REF")
	}
	name := pos[0]
	s, err := f.open()
	if err != nil {
		return 0, err
	}
	if _, err := s.Get(name); err != nil {
		return 0, err // before any download
	}
	src, finish, err := f.source(pos[1])
	if err != nil {
		return 0, err
	}
	a, err := s.Update(name, src, f.grants, *downgrade, f.admit)
	finish(err == nil)
	if err != nil {
		return 0, fromSource(err, src, pos[1])
	}
	h, err := healthOf(s.ImageOf(a.Trial))
	if err != nil {
		s.Abandon(name)
		return 0, err
	}
	// The trial's start is counted now, before the old version stops, so
	// that the fsynced count is not in the gap; a unit's start counts it
	// itself, as at boot.
	r, err := instance.Get(*f.state, name)
	running := err == nil && r.Running()
	unit := running && r.State.Unit != ""
	if !unit {
		if _, _, err := s.TrialStart(name, trialStarts); err != nil {
			s.Abandon(name)
			return 0, err
		}
		f.counted = true
	}
	var wasRunning bool
	var why error
	if running && !unit {
		// A version a supervisor of ours runs: the new one's launch is
		// made in full while the old one serves, and goes as soon as the
		// old app has ended, so that the gap is the app's own start.
		sb, err := startStandby(f, name)
		if err != nil {
			after, _ := s.Abandon(name)
			if *f.asJSON && after != nil {
				printApps(f, []*store.App{after})
			}
			return 1, fmt.Errorf("update %s to %s failed, %s runs on: the new version did not start: %w", name, a.Trial.Version, a.Current.Version, err)
		}
		instance.StopApp(*f.state, name, time.Duration(*f.stopTime)*time.Second)
		wasRunning = true
		if err := sb.release(); err != nil {
			why = fmt.Errorf("the new version did not start: %w", err)
		}
	} else {
		// The new image into the mount cache while the old version still
		// serves: its start (by the unit) is a warm one.
		premount(*f.state, s.ImageOf(a.Trial))
		if wasRunning, err = f.stopApp(name); err != nil {
			s.Abandon(name)
			return 0, fmt.Errorf("update %s: stop the running version: %w", name, err)
		}
		if err := f.startApp(name); err != nil {
			why = fmt.Errorf("the new version did not start: %w", err)
		}
	}
	if why == nil {
		why = healthGate(f, a, h)
	}
	if why == nil {
		if a, err = s.Confirm(name); err != nil {
			return 0, err
		}
		if !wasRunning {
			f.stopApp(name)
		}
		f.say("%s: updated to %s\n", name, a.Current.Version)
		return 0, printApps(f, []*store.App{a})
	}
	// Roll back: the trial goes, the old version runs again as before.
	f.stopApp(name)
	after, err := s.Abandon(name)
	if err != nil {
		return 0, err
	}
	if wasRunning {
		if err := f.startApp(name); err != nil {
			return 0, fmt.Errorf("update %s failed (%v), and the old version did not start again: %w", name, why, err)
		}
	}
	if *f.asJSON {
		printApps(f, []*store.App{after}) // the state it was rolled back to
	}
	return 1, fmt.Errorf("update %s to %s failed, rolled back to %s: %w", name, a.Trial.Version, a.Current.Version, why)
}

// fromSource names the URL or reference a refused download came from
// (the store's error names the local copy, which is gone by now).
func fromSource(err error, local, source string) error {
	if local == source {
		return err
	}
	return fmt.Errorf("%s (downloaded into %s, now discarded): %w", source, local, err)
}

// premount mounts image in the state directory's mount cache (verified
// as a launch would), and leaves it there for the launch that follows.
func premount(state, image string) {
	img, file, err := format.OpenFile(image)
	if err != nil {
		return
	}
	defer file.Close()
	if lease, err := imagecache.Mount(state, file, img, false); err == nil {
		lease.Release()
	}
}

// stopApp stops the app's instance if it runs: through systemctl if a
// unit runs it (so that systemd does not take the stop for a failure),
// else as cimg-run stop does. It says whether it ran.
func (f *storeFlags) stopApp(name string) (bool, error) {
	r, err := instance.Get(*f.state, name)
	if err != nil || !r.Running() {
		return false, nil
	}
	if u := r.State.Unit; u != "" {
		f.units[name] = u
		if out, err := exec.Command("systemctl", "stop", u).CombinedOutput(); err != nil {
			return true, fmt.Errorf("systemctl stop %s: %v: %s", u, err, out)
		}
		return true, nil
	}
	_, err = instance.Stop(*f.state, name, time.Duration(*f.stopTime)*time.Second)
	return true, err
}

// startApp starts the app's version from the store: through its unit if
// one ran it, else detached (cimg-run run -d NAME).
func (f *storeFlags) startApp(name string) error {
	if u := f.units[name]; u != "" {
		if out, err := exec.Command("systemctl", "start", u).CombinedOutput(); err != nil {
			return fmt.Errorf("systemctl start %s: %v: %s", u, err, out)
		}
		return nil
	}
	return startDetached(f, name)
}

// startDetached starts the app's version from the store as instance NAME,
// detached, as cimg-run run -d NAME does (the supervisor started
// directly: one process start less in an update's gap).
func startDetached(f *storeFlags, name string) error {
	r, err := startSupervisor(f.runArgs(name), []string{name}, nil)
	if err != nil {
		return err
	}
	_, err = supervisorSays(bufio.NewReader(r), r)
	return err
}

// runArgs are the flags of run that start app name from the store.
func (f *storeFlags) runArgs(name string) []string {
	args := []string{"--installed", "--store", *f.root, "--state-dir", *f.state, "--name", name}
	if f.counted {
		args, f.counted = append(args, "--"+trialCountedFlag), false
	}
	for _, k := range f.keys {
		args = append(args, "--key", k)
	}
	return args
}

// standby is a detached supervisor that has made the trial version's
// launch and waits to start the app (runNamed's Hold).
type standby struct {
	ready *os.File
	br    *bufio.Reader
	goW   *os.File
}

// startStandby starts the supervisor of app name's trial version on
// standby, and returns once it holds (or failed: then nothing runs).
func startStandby(f *storeFlags, name string) (*standby, error) {
	goR, goW, err := os.Pipe()
	if err != nil {
		return nil, err
	}
	r, err := startSupervisor(f.runArgs(name), []string{name}, goR)
	goR.Close()
	if err != nil {
		goW.Close()
		return nil, err
	}
	br := bufio.NewReader(r)
	if line, _ := br.Peek(len(standbyHeld) + 1); string(line) != standbyHeld+"\n" {
		goW.Close()
		_, err := supervisorSays(br, r)
		return nil, err
	}
	br.Discard(len(standbyHeld) + 1)
	return &standby{ready: r, br: br, goW: goW}, nil
}

// release lets the standby start the app, and returns once it runs.
func (sb *standby) release() error {
	_, err := sb.goW.WriteString(standbyGo)
	sb.goW.Close()
	if err != nil {
		sb.ready.Close()
		return fmt.Errorf("the standby supervisor: %w", err)
	}
	_, err = supervisorSays(sb.br, sb.ready)
	return err
}

// healthGate starts the trial version and decides whether it is healthy:
// the manifest's [health] command run inside the app (cimg-run exec)
// with its start period, interval, timeout and retries; without one,
// still running after the start period.
func healthGate(f *storeFlags, a *store.App, h *manifest.Health) error {
	start, interval, timeout, retries := 2*time.Second, 2*time.Second, 5*time.Second, 3
	var cmd []string
	if h != nil {
		cmd = h.Command
		if h.StartPeriod > 0 {
			start = time.Duration(h.StartPeriod)
		}
		if h.Interval > 0 {
			interval = time.Duration(h.Interval)
		}
		if h.Timeout > 0 {
			timeout = time.Duration(h.Timeout)
		}
		if h.Retries > 0 {
			retries = h.Retries
		}
	}
	time.Sleep(start)
	ended := func() error {
		r, err := instance.Get(*f.state, a.Name)
		if err != nil {
			return err
		}
		if !r.Running() {
			return fmt.Errorf("the new version ended within its start period: %s", r.Status())
		}
		return nil
	}
	if err := ended(); err != nil || len(cmd) == 0 {
		return err
	}
	self, _ := os.Executable()
	var last string
	for i := 0; i < retries; i++ {
		if i > 0 {
			time.Sleep(interval)
		}
		if err := ended(); err != nil {
			return err
		}
		c := exec.Command(self, append([]string{"exec", "--state-dir", *f.state, a.Name, "--"}, cmd...)...)
		done := make(chan error, 1)
		var out strings.Builder
		c.Stdout, c.Stderr = &out, &out
		if err := c.Start(); err != nil {
			return err
		}
		go func() { done <- c.Wait() }()
		select {
		case err := <-done:
			if err == nil {
				return nil
			}
			last = fmt.Sprintf("%v: %s", err, strings.TrimSpace(out.String()))
		case <-time.After(timeout):
			c.Process.Kill()
			<-done
			last = fmt.Sprintf("timed out after %v", timeout)
		}
	}
	return fmt.Errorf("its health check %q failed %d times, last: %s", strings.Join(cmd, " "), retries, last)
}

// healthOf reads the [health] table of an image's manifest.
func healthOf(image string) (*manifest.Health, error) {
	img, file, err := format.OpenFile(image)
	if err != nil {
		return nil, err
	}
	defer file.Close()
	m, err := manifest.Parse(img.Manifest, image)
	if err != nil {
		return nil, err
	}
	return m.Health, nil
}

func rollback(args []string) (int, error) {
	f := newStoreFlags("rollback", false)
	pos, err := parseMixed(f.fs, args)
	if err != nil || len(pos) != 1 {
		return 2, errors.New("usage: cimg-run rollback [--store DIR] NAME")
	}
	s, err := f.open()
	if err != nil {
		return 0, err
	}
	if _, err := s.Get(pos[0]); err != nil {
		return 0, err
	}
	running, err := f.stopApp(pos[0])
	if err != nil {
		return 0, err
	}
	a, err := s.Rollback(pos[0])
	if err != nil {
		return 0, err
	}
	if running {
		if err := f.startApp(pos[0]); err != nil {
			return 0, fmt.Errorf("rolled back, but the app did not start again: %w", err)
		}
	}
	return 0, printApps(f, []*store.App{a})
}

func remove(args []string) (int, error) {
	f := newStoreFlags("remove", false)
	purge := f.fs.Bool("purge", false, "also delete the app's volumes")
	pos, err := parseMixed(f.fs, args)
	if err != nil || len(pos) != 1 {
		return 2, errors.New("usage: cimg-run remove [--purge] [--store DIR] NAME")
	}
	s, err := f.open()
	if err != nil {
		return 0, err
	}
	if _, err := s.Get(pos[0]); err != nil {
		return 0, err
	}
	if _, err := f.stopApp(pos[0]); err != nil {
		return 0, err
	}
	return 0, s.Remove(pos[0], *purge)
}

func list(args []string) (int, error) {
	f := newStoreFlags("list", false)
	if pos, err := parseMixed(f.fs, args); err != nil || len(pos) != 0 {
		return 2, errors.New("usage: cimg-run list [--json] [--store DIR]")
	}
	s, err := f.open()
	if err != nil {
		return 0, err
	}
	apps, err := s.List()
	if err != nil {
		return 0, err
	}
	return 0, printApps(f, apps)
}

// appRow is an app as list prints it.
type appRow struct {
	*store.App
	State string `json:"state"` // the instance's, if there is one
}

func printApps(f *storeFlags, apps []*store.App) error {
	rows := []appRow{}
	for _, a := range apps {
		st := "stopped"
		if r, err := instance.Get(*f.state, a.Name); err == nil {
			st = r.Status()
		}
		rows = append(rows, appRow{a, st})
	}
	if *f.asJSON {
		enc := json.NewEncoder(os.Stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(rows)
	}
	short := func(v *store.Version) string {
		if v == nil {
			return "-"
		}
		return v.Version + " (" + v.RootHash[:12] + ")"
	}
	tw := tabwriter.NewWriter(os.Stdout, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "NAME\tCURRENT\tPREVIOUS\tTRIAL\tFLOOR\tSIZE\tSTATE\tGRANTS")
	for _, r := range rows {
		grants := strings.Join(r.Grants, ",")
		if grants == "" {
			grants = "-"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%.1fMiB\t%s\t%s\n", r.Name, short(r.Current), short(r.Previous), short(r.Trial), r.Floor,
			float64(r.Current.Size)/(1<<20), r.State, grants)
	}
	return tw.Flush()
}

// storeApp resolves `cimg-run run NAME` for an installed app: the image
// to start (the trial version, counted, while one is on trial; counted
// is update's start, which counted it before it stopped the old version)
// and the app's grants.
func storeApp(root, name string, counted bool) (image string, grants []string, err error) {
	s, err := store.Open(root)
	if err != nil {
		return "", nil, err
	}
	a, err := s.Get(name)
	if err != nil {
		return "", nil, err
	}
	v := a.Current
	if counted && a.Trial != nil {
		v = a.Trial
	} else if !counted {
		if a, v, err = s.TrialStart(name, trialStarts); err != nil {
			return "", nil, err
		}
	}
	return s.ImageOf(v), a.Grants, nil
}

// reset is `cimg-run reset NAME|--all`: the factory version of the app
// (from the read-only factory directory an OS image ships), its volumes
// wiped.
func reset(args []string) (int, error) {
	f := newStoreFlags("reset", false)
	all := f.fs.Bool("all", false, "reset every app of the factory directory, and remove the others")
	factory := f.fs.String("factory", "/usr/share/cimg/factory", "the factory `directory` of .cimg files")
	pos, err := parseMixed(f.fs, args)
	if err != nil || *all == (len(pos) == 1) || len(pos) > 1 {
		return 2, errors.New("usage: cimg-run reset [--factory DIR] [--store DIR] NAME | --all")
	}
	s, err := f.open()
	if err != nil {
		return 0, err
	}
	images, err := factoryImages(*factory)
	if err != nil {
		return 0, err
	}
	names := pos
	if *all {
		names = nil
		for n := range images {
			names = append(names, n)
		}
		installed, err := s.List()
		if err != nil {
			return 0, err
		}
		for _, a := range installed {
			if _, ok := images[a.Name]; !ok {
				// Not from the factory: a reset device does not have it.
				if _, err := f.stopApp(a.Name); err != nil {
					return 0, err
				}
				if err := s.Remove(a.Name, true); err != nil {
					return 0, err
				}
				f.say("%s: removed (not in %s)\n", a.Name, *factory)
			}
		}
	}
	var errs []error
	var done []*store.App
	for _, n := range names {
		img, ok := images[n]
		if !ok {
			errs = append(errs, fmt.Errorf("app %s: no factory image of it in %s", n, *factory))
			continue
		}
		running, err := f.stopApp(n)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		if err := s.WipeVolumes(n); err != nil {
			errs = append(errs, err)
			continue
		}
		a, err := s.Reset(n, img, nil, f.admit)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		f.say("%s: reset to %s\n", n, a.Current.Version)
		done = append(done, a)
		if running {
			if err := f.startApp(n); err != nil {
				errs = append(errs, fmt.Errorf("app %s: reset, but it did not start again: %w", n, err))
			}
		}
	}
	if *f.asJSON {
		printApps(f, done)
	}
	return 0, errors.Join(errs...)
}

// factoryImages maps app names to the factory directory's images: the
// app NAME's is NAME.cimg (the name it is installed under, which an OS
// image chooses; the manifest's name may differ).
func factoryImages(dir string) (map[string]string, error) {
	paths, err := filepath.Glob(filepath.Join(dir, "*.cimg"))
	if err != nil {
		return nil, err
	}
	out := map[string]string{}
	for _, p := range paths {
		name := strings.TrimSuffix(filepath.Base(p), ".cimg")
		if err := instance.CheckName(name); err != nil {
			return nil, fmt.Errorf("factory image %s: %w", p, err)
		}
		out[name] = p
	}
	return out, nil
}

// boot is `cimg-run boot`, for a unit at boot: a trial version started
// trialStarts times without being confirmed is abandoned, so the app's
// next start is its current version.
func boot(args []string) (int, error) {
	f := newStoreFlags("boot", false)
	if pos, err := parseMixed(f.fs, args); err != nil || len(pos) != 0 {
		return 2, errors.New("usage: cimg-run boot [--json] [--store DIR]")
	}
	s, err := f.open()
	if err != nil {
		return 0, err
	}
	apps, err := s.List()
	if err != nil {
		return 0, err
	}
	var done []*store.App
	for _, a := range apps {
		if a.Trial != nil && a.TrialAttempts >= trialStarts {
			after, err := s.Abandon(a.Name)
			if err != nil {
				return 0, err
			}
			f.say("%s: trial %s abandoned after %d unconfirmed starts; current is %s\n", a.Name, a.Trial.Version, a.TrialAttempts, a.Current.Version)
			done = append(done, after)
		}
	}
	if *f.asJSON {
		return 0, printApps(f, done)
	}
	return 0, nil
}
