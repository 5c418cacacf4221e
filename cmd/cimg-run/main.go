// A launcher lives for milliseconds and runs one thread of real work: the
// runtime need not size GOMAXPROCS from the cgroup's CPU limit at start,
// nor re-read that limit while a supervisor or slim waiter lives on beside
// its app. (Go 1.26 still reads it once at start, for a metric: strace
// shows the same four opens with or without these settings.)
//
//go:debug containermaxprocs=0
//go:debug updatemaxprocs=0

// Command cimg-run verifies, mounts, isolates and runs .cimg images.
//
// This file is CLI wiring only; the launch sequence is in package
// launcher.
package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"strings"
	"sync"
	"text/tabwriter"
	"time"

	"flag"

	"cimg.dev/cimg/internal/imagecache"
	"cimg.dev/cimg/internal/instance"
	"cimg.dev/cimg/internal/store"
	"cimg.dev/cimg/launcher"
)

const usage = `cimg-run runs .cimg images, isolated: in the foreground, or as named instances.

Usage:
  cimg-run [flags] IMAGE [-- ARGS...]        run the image in the foreground (ARGS replace the manifest's args)
  cimg-run run [flags] [--name N] [-d] IMAGE [-- ARGS...]
                                             the same, as a named instance; -d detaches it
  cimg-run ps [-a] [--json]                  list running instances (-a: and ended ones)
  cimg-run stop [-t SECONDS] NAME...         SIGTERM, then SIGKILL of the whole cgroup
  cimg-run kill NAME [SIGNAL]                send a signal to the instance's app (default KILL)
  cimg-run inspect NAME                      state and effective configuration, as JSON
  cimg-run logs [-f] [--tail N] NAME         the bounded log of a detached instance
  cimg-run exec [-t] [-e K=V] NAME -- CMD [ARGS...]
                                             run a command inside a running instance
  cimg-run rm NAME...                        forget ended instances
  cimg-run unit [flags of run] [--name N] [--ready started|notify] [--enable] [--now] IMAGE [-- ARGS...]
                                             write a systemd service that runs the image as instance N
  cimg-run install [--name N] [--grant G]... FILE|URL|oci://REF
                                             install an app into the store (/var/lib/cimg/store);
                                             http(s):// and oci:// sources download resumably
                                             (cimg-fetch, beside cimg-run; --ca, --quiet, --creds,
                                             --registry-config /etc/cimg/registries.json)
  cimg-run update [--grant G]... [--allow-downgrade] NAME FILE|URL|oci://REF
                                             the new version on trial: started, health-checked,
                                             then kept, or rolled back (exit 1, saying why)
  cimg-run rollback NAME                     the previous version becomes current again
  cimg-run remove [--purge] NAME             uninstall (--purge: and its volumes)
  cimg-run list [--json]                     installed apps: current, previous, trial, floor, grants
  cimg-run reset [--factory DIR] NAME|--all  factory reset: volumes wiped, the factory version
                                             (/usr/share/cimg/factory/NAME.cimg) installed again
  cimg-run boot                              at boot: abandon trials started 3 times unconfirmed
  cimg-run run NAME, cimg-run NAME           run an installed app (a NAME that is no file)
  cimg-run gc [--keep N] [--json]            unmount cached images no instance uses; delete
                                             store images no app names (--keep: but each app's
                                             N most recent superseded versions), and partial files
  cimg-run doctor                            the kernel features cimg uses, and what is missing
  cimg-run help                              this text

Every command takes --state-dir DIR (default /run/cimg); the store commands
take --store DIR, --key FILE (trusted keys besides /etc/cimg/keys/*.pub) and
--json (install, update, rollback, reset, boot and list then print the apps
they changed as JSON on stdout; messages go to stderr).
Exit status: the app's (128+N when killed by signal N); 125 when cimg-run
itself failed; 2 for a usage error; update: 1 when the new version failed
its health gate and was rolled back.

Flags of run:
`

func main() {
	if len(os.Args) > 1 && os.Args[1] == launcher.WaitArg {
		launcher.WaitMain(os.Args[2:]) // never returns
	}
	if len(os.Args) > 2 && os.Args[1] == launcher.InitArg {
		launcher.InitMain(os.Args[2:]) // never returns
	}
	code, err := run(os.Args[1:])
	if err != nil {
		fmt.Fprintf(os.Stderr, "cimg-run: %v\n", err)
		if code == 0 {
			code = 125 // as container runtimes do: the launcher, not the app, failed
		}
	}
	os.Exit(code)
}

func run(args []string) (int, error) {
	if len(args) > 0 {
		switch args[0] {
		case "help", "-h", "--help":
			fs, _ := runFlags(&launcher.Options{})
			fs.SetOutput(os.Stdout)
			fs.Usage()
			return 0, nil
		case "doctor":
			return doctor()
		case "gc":
			return gc(args[1:])
		case "run":
			return runInstance(args[1:])
		case "ps":
			return ps(args[1:])
		case "stop":
			return stop(args[1:])
		case "kill":
			return kill(args[1:])
		case "inspect":
			return inspect(args[1:])
		case "logs":
			return logs(args[1:])
		case "rm":
			return rm(args[1:])
		case "exec":
			return execIn(args[1:])
		case "unit":
			return unit(args[1:])
		case "install":
			return install(args[1:])
		case "update":
			return update(args[1:])
		case "rollback":
			return rollback(args[1:])
		case "remove":
			return remove(args[1:])
		case "list":
			return list(args[1:])
		case "reset":
			return reset(args[1:])
		case "boot":
			return boot(args[1:])
		case "unit-stop":
			return unitStop(args[1:])
		case "unit-exited":
			return unitExited(args[1:])
		}
	}
	var o launcher.Options
	fs, verify := runFlags(&o)
	if err := fs.Parse(args); err != nil {
		return 2, err
	}
	if err := imageArgs(fs, verify, &o); err != nil {
		return 2, err
	}
	given := o.Image
	// An installed app's name, not a file: the app's current version,
	// anonymous (cimg-run run NAME names the instance).
	if err := resolveApp(&o, defaultStore, nil, false, false); err != nil {
		return 0, err
	}
	if os.Getenv("CIMG_PROFILE") != "" {
		defer profile(&o)()
	}
	code, err := launcher.Run(o)
	if err != nil && o.Image == given && errors.Is(err, os.ErrNotExist) {
		err = missingImage(given, defaultStore, err)
	}
	return code, err
}

// subcommands are run's cases: an IMAGE argument of one of these names
// is a subcommand put after the flags (TestSubcommandsListed keeps the
// two in step). Only the error path calls it.
func subcommands() []string {
	return []string{"help", "doctor", "gc", "run", "ps", "stop", "kill", "inspect", "logs", "rm", "exec",
		"unit", "install", "update", "rollback", "remove", "list", "reset", "boot", "unit-stop", "unit-exited"}
}

// missingImage turns a launch's "no such file" for its IMAGE argument
// into advice when the argument is a subcommand's name (cimg-run
// --state-dir D gc) or could name an installed app. On the error path
// only: a launch that finds its image pays nothing for it.
func missingImage(image, storeRoot string, err error) error {
	if _, serr := os.Stat(image); !errors.Is(serr, os.ErrNotExist) {
		return err // the image is there: something else was missing
	}
	for _, sub := range subcommands() {
		if image == sub {
			return fmt.Errorf("no image file %q here, and no app %q installed: the subcommand %s goes first, before any flag: cimg-run %s [flags]", image, image, sub, sub)
		}
	}
	if instance.CheckName(image) == nil {
		return fmt.Errorf("image %s: no such file here, and no app of that name is installed in %s (cimg-run list shows the installed apps)", image, storeRoot)
	}
	return err
}

// runFlags are the flags of a launch, into o; verify is --verify's value.
func runFlags(o *launcher.Options) (fs *flag.FlagSet, verify *string) {
	fs = flag.NewFlagSet("cimg-run", flag.ContinueOnError)
	fs.Usage = func() { fmt.Fprint(fs.Output(), usage); fs.PrintDefaults() }
	fs.Var((*repeated)(&o.KeyFiles), "key", "trusted public key `file`, besides /etc/cimg/keys/*.pub (repeatable)")
	verify = fs.String("verify", "auto", "payload check: auto (once per boot per file) or always")
	fs.StringVar(&o.StateDir, "state-dir", "/run/cimg", "root-only directory for the mount cache and instances")
	fs.DurationVar(&o.StopTimeout, "stop-timeout", 10*time.Second, "after SIGTERM/SIGINT, SIGKILL the app's cgroup this much later")
	fs.BoolVar(&o.PrivateMount, "private-mount", false, "mount the image for this launch only (cold page cache) instead of from the mount cache")
	fs.BoolVar(&o.Init, "init", false, "run a minimal init as PID 1 that reaps zombies and forwards signals")
	fs.StringVar(&o.VolumeDir, "volume-dir", "/var/lib/cimg/volumes", "root-only `directory` holding the apps' volumes")
	fs.BoolVar(&o.NoHealth, "no-health", false, "run an image that has a [health] check without it")
	fs.Func("grant", "grant the image a privilege it asks for (repeatable): "+launcher.GrantHelp, o.Grants.Add)
	// The operator's settings, as docker and podman spell them; each
	// replaces the manifest's value (-v, --cap-add and --network host are
	// grants too).
	ov := &o.Overrides
	both := func(short, long, usage string, set func(string) error) {
		fs.Func(short, usage+" (also --"+long+")", set)
		fs.Func(long, usage, set)
	}
	appendTo := func(list *[]string) func(string) error {
		return func(v string) error { *list = append(*list, v); return nil }
	}
	setTo := func(v *string) func(string) error { return func(s string) error { *v = s; return nil } }
	both("e", "env", "set `KEY=VALUE` in the app's environment (repeatable)", appendTo(&ov.Env))
	both("v", "volume", "mount `SRC:DST[:ro]`: SRC a host path (granted) or a volume name (repeatable)", appendTo(&ov.Volumes))
	both("u", "user", "run as `UID[:GID]`", setTo(&ov.User))
	both("w", "workdir", "the app's working `directory`", setTo(&ov.Workdir))
	fs.Func("memory", "memory limit, `SIZE` like 64MiB", setTo(&ov.Memory))
	fs.Func("cpus", "CPU limit: `N` cores, like 0.5", setTo(&ov.CPUs))
	fs.Func("pids-limit", "at most `N` processes", setTo(&ov.PidsLimit))
	fs.Func("network", "`MODE`: none (private, loopback only) or host (granted)", setTo(&ov.Network))
	fs.Func("cap-add", "keep capability `CAP` (granted; repeatable)", appendTo(&ov.CapAdd))
	fs.Func("cap-drop", "drop capability `CAP` the manifest keeps, or ALL (repeatable)", appendTo(&ov.CapDrop))
	fs.Func("hostname", "the app's hostname `NAME`", setTo(&ov.Hostname))
	fs.BoolFunc("read-only", "a read-only root (--read-only=false: writable, in memory)", setTo(&ov.ReadOnly))
	return fs, verify
}

// imageArgs takes IMAGE [-- ARGS] and --verify from a parsed launch.
func imageArgs(fs *flag.FlagSet, verify *string, o *launcher.Options) error {
	if fs.NArg() < 1 {
		return errors.New("usage: cimg-run [flags] IMAGE [-- ARGS...] (cimg-run help)")
	}
	switch *verify {
	case "auto":
	case "always":
		o.VerifyAlways = true
	default:
		return fmt.Errorf("--verify %q: want auto or always", *verify)
	}
	o.Image = fs.Arg(0)
	o.Args = fs.Args()[1:]
	if len(o.Args) > 0 && o.Args[0] == "--" {
		o.Args = o.Args[1:]
	}
	o.Warn = func(m string) { fmt.Fprintf(os.Stderr, "cimg-run: warning: %s\n", m) }
	return nil
}

func gc(args []string) (int, error) {
	gcFlags := flag.NewFlagSet("cimg-run gc", flag.ContinueOnError)
	state := gcFlags.String("state-dir", "/run/cimg", "the state `directory` whose mount cache to collect")
	root := gcFlags.String("store", defaultStore, "the store `directory` whose unused images to delete (if there is one)")
	keep := gcFlags.Int("keep", 0, "also keep each app's `N` most recent superseded versions (besides current, previous and trial)")
	asJSON := gcFlags.Bool("json", false, "print what was deleted and unmounted as JSON")
	if err := gcFlags.Parse(args); err != nil {
		return 2, err
	}
	if gcFlags.NArg() > 0 || *keep < 0 {
		return 2, errors.New("usage: cimg-run gc [--keep N] [--json] [--state-dir DIR] [--store DIR]")
	}
	var out struct {
		Deleted   []string `json:"deleted"`
		Unmounted []string `json:"unmounted"`
	}
	print := func(err error) (int, error) {
		if *asJSON {
			enc := json.NewEncoder(os.Stdout)
			enc.SetIndent("", "  ")
			enc.Encode(out)
		} else {
			for _, d := range out.Deleted {
				fmt.Println("deleted", d)
			}
			for _, d := range out.Unmounted {
				fmt.Println("unmounted", d)
			}
		}
		return 0, err
	}
	out.Deleted, out.Unmounted = []string{}, []string{}
	// Store images first: the cache mounts of deleted ones go below.
	if _, err := os.Stat(*root); err == nil {
		s, err := store.Open(*root)
		if err != nil {
			return 0, err
		}
		removed, err := s.GC(*keep)
		out.Deleted = append(out.Deleted, removed...)
		if err != nil {
			return print(err)
		}
	}
	done, err := imagecache.GC(*state)
	out.Unmounted = append(out.Unmounted, done...)
	return print(err)
}

// profile records when each step of the launch began and prints the list
// to stderr when the launch is over: "cimg-run profile: STEP=µs ...",
// microseconds since main began (scripts/bench-profile.sh reads it).
// Only with CIMG_PROFILE set.
func profile(o *launcher.Options) func() {
	start := time.Now()
	var mu sync.Mutex
	var line strings.Builder
	line.WriteString("cimg-run profile:")
	o.Mark = func(step string) {
		mu.Lock()
		fmt.Fprintf(&line, " %s=%d", strings.ReplaceAll(step, " ", "_"), time.Since(start).Microseconds())
		mu.Unlock()
	}
	return func() {
		o.Mark("end")
		fmt.Fprintln(os.Stderr, line.String())
	}
}

func doctor() (int, error) {
	code := 0
	tw := tabwriter.NewWriter(os.Stdout, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "feature\tstatus\tdetail")
	for _, c := range launcher.Doctor() {
		status := "ok"
		switch {
		case !c.OK && c.Required:
			status, code = "MISSING", 1
		case !c.OK:
			status = "absent (optional)"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\n", c.Feature, status, c.Detail)
	}
	tw.Flush()
	return code, nil
}

// repeated is a flag that may be given more than once. (The standard
// flag package, not pflag, keeps the launcher's start-up lean: pflag
// pulls in package net.)
type repeated []string

func (r *repeated) String() string     { return fmt.Sprint(*r) }
func (r *repeated) Set(v string) error { *r = append(*r, v); return nil }
