package main

import (
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
	"cimg.dev/cimg/internal/instance"
	"cimg.dev/cimg/internal/store"
	"cimg.dev/cimg/launcher"
	"cimg.dev/cimg/manifest"
)

const defaultStore = "/var/lib/cimg/store"

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
	units    map[string]string // app → the systemd unit that ran it when stopped
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
	}
	return f
}

func (f *storeFlags) open() (*store.Store, error) { return store.Open(*f.root) }

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
		return 2, errors.New("usage: cimg-run install [--name NAME] [--grant G]... [--store DIR] FILE")
	}
	if *name == "" {
		if *name, err = launcher.AppName(pos[0]); err != nil {
			return 0, err
		}
	}
	s, err := f.open()
	if err != nil {
		return 0, err
	}
	a, err := s.Install(*name, pos[0], f.grants, f.admit)
	if err != nil {
		return 0, err
	}
	if len(f.asks) > 0 && !*f.asJSON {
		fmt.Printf("%s asks for, and is granted: %s\n", *name, strings.Join(f.asks, " "))
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
		return 2, errors.New("usage: cimg-run update [--grant G]... [--allow-downgrade] [--store DIR] NAME FILE")
	}
	name := pos[0]
	s, err := f.open()
	if err != nil {
		return 0, err
	}
	a, err := s.Update(name, pos[1], f.grants, *downgrade, f.admit)
	if err != nil {
		return 0, err
	}
	// Stop the old version if it runs; the new one runs while on trial.
	wasRunning, err := f.stopApp(name)
	if err != nil {
		s.Abandon(name)
		return 0, fmt.Errorf("update %s: stop the running version: %w", name, err)
	}
	why := healthGate(f, s, a)
	if why == nil {
		if a, err = s.Confirm(name); err != nil {
			return 0, err
		}
		if !wasRunning {
			f.stopApp(name)
		}
		fmt.Printf("%s: updated to %s\n", name, a.Current.Version)
		return 0, printApps(f, []*store.App{a})
	}
	// Roll back: the trial goes, the old version runs again as before.
	f.stopApp(name)
	if _, err := s.Abandon(name); err != nil {
		return 0, err
	}
	if wasRunning {
		if err := f.startApp(name); err != nil {
			return 0, fmt.Errorf("update %s failed (%v), and the old version did not start again: %w", name, why, err)
		}
	}
	return 1, fmt.Errorf("update %s to %s failed, rolled back to %s: %w", name, a.Trial.Version, a.Current.Version, why)
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
// detached (cimg-run run -d NAME).
func startDetached(f *storeFlags, name string) error {
	self, err := os.Executable()
	if err != nil {
		return err
	}
	args := []string{"run", "-d", "--installed", "--store", *f.root, "--state-dir", *f.state, "--name", name}
	for _, k := range f.keys {
		args = append(args, "--key", k)
	}
	out, err := exec.Command(self, append(args, name)...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("%s", strings.TrimSpace(string(out)))
	}
	return nil
}

// healthGate starts the trial version and decides whether it is healthy:
// the manifest's [health] command run inside the app (cimg-run exec)
// with its start period, interval, timeout and retries; without one,
// still running after the start period.
func healthGate(f *storeFlags, s *store.Store, a *store.App) error {
	h, err := healthOf(s.ImageOf(a.Trial))
	if err != nil {
		return err
	}
	if err := f.startApp(a.Name); err != nil {
		return fmt.Errorf("the new version did not start: %w", err)
	}
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
// to start (the trial version, counted, while one is on trial) and the
// app's grants.
func storeApp(root, name string) (image string, grants []string, err error) {
	s, err := store.Open(root)
	if err != nil {
		return "", nil, err
	}
	if _, err := s.Get(name); err != nil {
		return "", nil, err
	}
	a, v, err := s.TrialStart(name, trialStarts)
	if err != nil {
		return "", nil, err
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
				fmt.Printf("%s: removed (not in %s)\n", a.Name, *factory)
			}
		}
	}
	var errs []error
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
		fmt.Printf("%s: reset to %s\n", n, a.Current.Version)
		if running {
			if err := f.startApp(n); err != nil {
				errs = append(errs, fmt.Errorf("app %s: reset, but it did not start again: %w", n, err))
			}
		}
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
		return 2, errors.New("usage: cimg-run boot [--store DIR]")
	}
	s, err := f.open()
	if err != nil {
		return 0, err
	}
	apps, err := s.List()
	if err != nil {
		return 0, err
	}
	for _, a := range apps {
		if a.Trial != nil && a.TrialAttempts >= trialStarts {
			if _, err := s.Abandon(a.Name); err != nil {
				return 0, err
			}
			fmt.Printf("%s: trial %s abandoned after %d unconfirmed starts; current is %s\n", a.Name, a.Trial.Version, a.TrialAttempts, a.Current.Version)
		}
	}
	return 0, nil
}
