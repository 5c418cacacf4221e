// Command powercut cuts the power under cimg-run's store, over and over,
// inside the throwaway VM of TestStorePowerCut (cmd/cimg-run): the store
// lives on ext4 on a device-mapper device over a loop device; at a random
// instant of a store command the device's table is switched to dm-flakey
// dropping every write (as a disk that lost power: the page cache, and
// whatever the command still writes, never reach it), the command and
// everything else is killed, the filesystem unmounted and the device
// re-created with its normal table, and the remount (ext4 replays its
// journal) is checked with cimg-run itself against the store's invariant
// (internal/store's package comment):
//
//   - cimg-run list --json works and shows, for each app, either the
//     state before the command or one the command commits (atomicity);
//     a command that had exited 0 before the cut is never undone
//     (durability);
//   - every image a state names is in images/, every file in images/
//     (named or not) passes cimg-build verify and has the root hash its
//     name says, and the app launches (cimg-run run NAME -- exit 0);
//   - after that next command, no temp file is left in tmp/ or apps/.
//
// It prints one CYCLE line per cycle, VIOLATION lines for what broke, and
// a last line "POWERCUT cycles=N ok=N violations=N ...". It must run as
// pid 1's child in a VM: it kills every other process.
package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

var (
	diskFile  = flag.String("disk", "/disk.ext4", "the ext4 filesystem image (the disk)")
	storeDir  = flag.String("store", "/store", "where to mount it: the store's root")
	stateDir  = flag.String("state-dir", "/run/cimg-powercut", "cimg-run's state directory (on tmpfs: lost at each power cut)")
	cimgRun   = flag.String("cimg-run", "/cimg-run", "cimg-run")
	cimgBuild = flag.String("cimg-build", "/cimg-build", "cimg-build (verify)")
	imageList = flag.String("images", "", "comma-separated versions of the probe app, oldest first")
	cycles    = flag.Int("cycles", 200, "power cuts")
	seed      = flag.Uint64("seed", 1, "seed of the choice of commands and cut instants")
	budget    = flag.Duration("budget", 5*time.Minute, "stop cutting after this long, even short of -cycles (the VM harness kills a run at 8 minutes)")
)

// The device-mapper device the store's filesystem is on.
const diskName = "powercut-disk"

func main() {
	flag.Parse()
	if err := run(); err != nil {
		fmt.Printf("POWERCUT-ERROR %v\n", err)
		os.Exit(1)
	}
}

// version is a stored version as cimg-run list --json shows it.
type version struct {
	RootHash string `json:"root_hash"`
	File     string `json:"file"` // its name in images/ ("" in older stores: <root-hash>.cimg)
}

type appJSON struct {
	Name     string   `json:"name"`
	Current  *version `json:"current"`
	Previous *version `json:"previous"`
	Trial    *version `json:"trial"`
}

// slots is an app's current, previous and trial images ("" for none):
// what a command may change, and what must survive a power cut.
type slots struct{ cur, prev, trial string }

// state is the store as the model sees it: app name → slots.
type state map[string]slots

func (s state) with(name string, v *slots) state {
	out := state{}
	for k, x := range s {
		out[k] = x
	}
	if v == nil {
		delete(out, name)
	} else {
		out[name] = *v
	}
	return out
}

func (s state) equal(o state) bool {
	if len(s) != len(o) {
		return false
	}
	for k, v := range s {
		if w, ok := o[k]; !ok || w != v {
			return false
		}
	}
	return true
}

// labels names root hashes by image (v1, v2, ...) in the output.
var labels = map[string]string{}

func label(h string) string {
	if h == "" {
		return "-"
	}
	if l, ok := labels[h]; ok {
		return l
	}
	return h[:min(12, len(h))]
}

func (s state) String() string {
	if len(s) == 0 {
		return "{}"
	}
	var names []string
	for k := range s {
		names = append(names, k)
	}
	sort.Strings(names)
	var b strings.Builder
	for i, n := range names {
		if i > 0 {
			b.WriteByte(' ')
		}
		v := s[n]
		fmt.Fprintf(&b, "%s=%s/%s/%s", n, label(v.cur), label(v.prev), label(v.trial))
	}
	return b.String()
}

// op is one store command and what the store may hold after a cut in it.
type op struct {
	kind, app string // app: "" for gc
	image     string // the version installed or updated to
	args      []string
	allowed   []state  // atomicity: before, or a state the command commits
	outcomes  []string // names of the allowed states, for the tally
	final     state    // durability: the state once it exited 0 (nil: not checked)
}

func (o op) String() string { return strings.Join(strings.Fields(o.kind+" "+o.app+" "+o.image), " ") }

type image struct {
	path, hash, label string
}

var images []image

func run() error {
	helperStart := time.Now()
	if os.Getpid() == 1 {
		return errors.New("run me as a child of the VM's init, not as init")
	}
	// Orphans of killed commands (a detached supervisor, its app) become
	// ours to reap, so "gone" means gone, not a zombie of init's.
	if err := unix.Prctl(unix.PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0); err != nil {
		return fmt.Errorf("PR_SET_CHILD_SUBREAPER: %w", err)
	}
	for i, p := range strings.Split(*imageList, ",") {
		h, err := rootHash(p)
		if err != nil {
			return err
		}
		img := image{p, h, fmt.Sprintf("v%d", i+1)}
		images = append(images, img)
		labels[img.hash] = img.label
	}
	if len(images) < 2 {
		return errors.New("-images: give at least two versions")
	}
	loopDev, err := attachLoop(*diskFile)
	if err != nil {
		return err
	}
	sectors, err := fileSectors(*diskFile)
	if err != nil {
		return err
	}
	d := &disk{loop: loopDev, sectors: sectors}
	if err := d.powerOn("data=ordered"); err != nil {
		return err
	}
	// The store's root must be root's, 0700: the filesystem's root is it.
	if err := os.Chmod(*storeDir, 0o700); err != nil {
		return err
	}
	unix.Sync()
	if err := d.selfTest(); err != nil {
		return err
	}

	rng := rand.New(rand.NewPCG(*seed, 0x9e3779b97f4a7c15))
	// Calibration, without a cut: each kind of command once, timed, so
	// the cuts can be spread over the whole of a command's run.
	dur := map[string]time.Duration{}
	cur := state{}
	for _, step := range []struct {
		kind string
		img  int
	}{{"install", 0}, {"update", 1}, {"rollback", 0}, {"run", 0}, {"gc", 0}, {"remove", 0}} {
		o := plan(step.kind, "pa", step.img, cur)
		start := time.Now()
		out, errOut, err := runTimeout(*cimgRun, o.args...)
		dur[o.kind] = time.Since(start)
		if err != nil {
			return fmt.Errorf("calibration: cimg-run %s: %v\n%s%s", strings.Join(o.args, " "), err, out, errOut)
		}
		if cur, _, err = listState(); err != nil {
			return fmt.Errorf("calibration: after %s: %v", o, err)
		}
		if o.final != nil && !cur.equal(o.final) {
			return fmt.Errorf("calibration: after %s the store holds %s, not %s", o, cur, o.final)
		}
	}
	var cal []string
	for _, k := range []string{"install", "update", "rollback", "run", "gc", "remove"} {
		cal = append(cal, fmt.Sprintf("%s=%dms", k, dur[k].Milliseconds()))
	}
	fmt.Printf("CALIBRATION %s\n", strings.Join(cal, " "))

	var ok, violations, during, done0 int
	tally, tallyDuring := map[string]int{}, map[string]int{}
	outcomes := map[string][]string{} // per kind, where the cuts during it left the store
	began := time.Now()
	modes := []string{"data=ordered", "data=writeback"}
	stopped := "all cycles ran"
	for c := 1; c <= *cycles; c++ {
		if time.Since(helperStart) > *budget {
			stopped = fmt.Sprintf("time budget of %v spent", *budget)
			break
		}
		t0 := time.Now()
		o := pick(rng, cur)
		// A cut anywhere from the command's start to a little past its
		// usual end (calibrated, then learnt from the runs that ended
		// before their cut): inside it, mostly, and sometimes just after
		// it returned, where what it said it did must have stuck. Every
		// other cut falls in the second half, where the image is placed
		// and the state committed (the first is mostly the program
		// starting and the image being copied and verified).
		window := max(dur[o.kind]+dur[o.kind]/4, time.Millisecond)
		from := time.Duration(0)
		if c%2 == 0 {
			from = dur[o.kind] / 2
		}
		delay := from + time.Duration(rng.Int64N(int64(window-from)))
		cmd, err := start(*cimgRun, o.args...)
		if err != nil {
			return err
		}
		var exitErr error
		finished := false
		select {
		case exitErr = <-cmd.exited:
			finished = true
			dur[o.kind] = (3*dur[o.kind] + time.Since(t0)) / 4
			// Exited early: wait out the rest of the delay anyway, so
			// writeback the command left behind is cut at random too.
			time.Sleep(time.Until(t0.Add(delay)))
		case <-time.After(delay):
		}
		if err := d.cut(); err != nil {
			return err
		}
		// The command (and its children) runs on a moment longer, on a
		// disk that drops its writes, or dies at once.
		time.Sleep(time.Duration(rng.IntN(30)) * time.Millisecond)
		cmd.cmd.Process.Kill()
		if !finished {
			<-cmd.exited
			dur[o.kind] = max(dur[o.kind], delay) // it ran at least that long
		}
		stdout, stderr := cmd.output()
		tally[o.kind]++
		if finished {
			done0++
		} else {
			during++
			tallyDuring[o.kind]++
		}
		mode := modes[c%len(modes)]
		tCut := time.Now()
		if err := d.powerOff(); err != nil {
			return fmt.Errorf("cycle %d (%s): power off: %w", c, o, err)
		}
		if err := d.powerOn(mode); err != nil {
			fmt.Printf("VIOLATION cycle=%d op=%q: the filesystem does not mount after the cut: %v\n", c, o, err)
			violations++
			stopped = "the filesystem does not mount"
			break
		}
		exit := "-"
		if finished {
			exit = "0"
			if exitErr != nil {
				exit = exitErr.Error()
			}
		}
		tOn := time.Now()
		next, outcome, problems, fatal := check(c, o, finished && exitErr == nil, cur, rng)
		if !finished && outcome != "" {
			outcomes[o.kind] = append(outcomes[o.kind], outcome)
		}
		status := "OK"
		if len(problems) > 0 {
			status = "VIOLATED"
			violations++
			for _, p := range problems {
				fmt.Printf("VIOLATION cycle=%d op=%q cut=%dms ended-before-cut=%v exit=%q mount=%s before=[%s]: %s\n",
					c, o, delay.Milliseconds(), finished, exit, mode, cur, p)
			}
			fmt.Printf("VIOLATION-OUTPUT cycle=%d %q\n", c, stdout+stderr)
		} else {
			ok++
		}
		after := "unreadable"
		if next != nil {
			after = next.String()
		}
		fmt.Printf("CYCLE %d op=%q cut=%dms/%dms ended-before-cut=%v exit=%q mount=%s after=[%s] %.1fs (command %.1fs, power off and on %.1fs, check %.1fs) %s\n",
			c, o, delay.Milliseconds(), window.Milliseconds(), finished, exit, mode, after, time.Since(t0).Seconds(),
			tCut.Sub(t0).Seconds(), tOn.Sub(tCut).Seconds(), time.Since(tOn).Seconds(), status)
		if fatal {
			stopped = "the store is too broken to go on"
			break
		}
		cur = next
	}
	total := time.Since(began)
	var kinds []string
	for _, k := range []string{"install", "update", "rollback", "remove", "run", "gc"} {
		n := map[string]int{}
		var names []string
		for _, x := range outcomes[k] {
			if n[x] == 0 {
				names = append(names, x)
			}
			n[x]++
		}
		sort.Strings(names)
		var split []string
		for _, x := range names {
			split = append(split, fmt.Sprintf("%s:%d", x, n[x]))
		}
		kinds = append(kinds, fmt.Sprintf("%s=%d/%d(%s)", k, tallyDuring[k], tally[k], strings.Join(split, ",")))
	}
	fmt.Printf("COMMANDS cut-during/all(state after those cuts) %s\n", strings.Join(kinds, " "))
	n := ok + violations
	fmt.Printf("POWERCUT cycles=%d ok=%d violations=%d cut-during-command=%d cut-after-exit=%d seconds=%.0f per-cycle=%.2fs wanted=%d (%s)\n",
		n, ok, violations, during, done0, total.Seconds(), total.Seconds()/float64(max(n, 1)), *cycles, stopped)
	return nil
}

// common are the flags every command gets: the store, and the state
// directory (tmpfs, wiped at each cut as /run is at a reboot).
func common() []string { return []string{"--store", *storeDir, "--state-dir", *stateDir} }

// plan builds command kind on app from the state before it.
func plan(kind, app string, img int, before state) op {
	o := op{kind: kind, app: app}
	v := before[app]
	switch kind {
	case "install":
		after := before.with(app, &slots{cur: images[img].hash})
		o.image = images[img].label
		o.args = append(append([]string{"install"}, common()...), "--name", app, images[img].path)
		o.allowed, o.final = []state{before, after}, after
		o.outcomes = []string{"before", "after"}
	case "update":
		h := images[img].hash
		trial := before.with(app, &slots{v.cur, v.prev, h})
		after := before.with(app, &slots{h, v.cur, ""})
		o.image = images[img].label
		o.args = append(append([]string{"update", "--allow-downgrade"}, common()...), app, images[img].path)
		o.allowed, o.final = []state{before, trial, after}, after
		o.outcomes = []string{"before", "trial", "after"}
	case "rollback":
		after := before.with(app, &slots{v.prev, v.cur, ""})
		o.args = append(append([]string{"rollback"}, common()...), app)
		o.allowed, o.final = []state{before, after}, after
		o.outcomes = []string{"before", "after"}
	case "remove":
		after := before.with(app, nil)
		o.args = append(append([]string{"remove"}, common()...), app)
		o.allowed, o.final = []state{before, after}, after
		o.outcomes = []string{"before", "after"}
	case "run":
		// It counts a trial's start, and abandons a trial started too
		// often: the slots stay, or the trial goes.
		o.args = append(append([]string{"run"}, common()...), app, "--", "exit", "0")
		o.allowed, o.outcomes = []state{before}, []string{"same"}
		if v.trial != "" {
			o.allowed = append(o.allowed, before.with(app, &slots{v.cur, v.prev, ""}))
			o.outcomes = append(o.outcomes, "trial-abandoned")
		}
	case "gc":
		o.args = append([]string{"gc"}, common()...)
		o.allowed, o.outcomes = []state{before}, []string{"same"}
		o.final = before
	}
	return o
}

var appNames = []string{"pa", "pb"}

// pick chooses a command that applies to the state, install and update
// (which store an image before they commit) the most.
func pick(rng *rand.Rand, s state) op {
	type choice struct {
		weight int
		build  func() op
	}
	var cs []choice
	for _, a := range appNames {
		v, ok := s[a]
		if !ok {
			cs = append(cs, choice{6, func() op { return plan("install", a, rng.IntN(len(images)), s) }})
			continue
		}
		cs = append(cs, choice{3, func() op { return plan("remove", a, 0, s) }})
		cs = append(cs, choice{2, func() op { return plan("run", a, 0, s) }})
		if v.prev != "" {
			cs = append(cs, choice{3, func() op { return plan("rollback", a, 0, s) }})
		}
		if v.trial == "" {
			cs = append(cs, choice{3, func() op {
				var others []int
				for i, img := range images {
					if img.hash != v.cur {
						others = append(others, i)
					}
				}
				return plan("update", a, others[rng.IntN(len(others))], s)
			}})
		}
	}
	cs = append(cs, choice{1, func() op { return plan("gc", "", 0, s) }})
	total := 0
	for _, c := range cs {
		total += c.weight
	}
	r := rng.IntN(total)
	for _, c := range cs {
		if r < c.weight {
			return c.build()
		}
		r -= c.weight
	}
	panic("unreachable")
}

// check tests the invariant after a power cut in o, which had exited 0
// before the cut if succeeded. It returns the store's state after the
// check (which itself runs commands), what is violated, and whether the
// store is too broken to go on.
func check(cycle int, o op, succeeded bool, before state, rng *rand.Rand) (next state, outcome string, problems []string, fatal bool) {
	got, files, err := listState()
	if err != nil {
		return nil, "", []string{err.Error()}, true
	}
	// cimg-run list opened the store: what a killed command left in
	// tmp/ and apps/ is gone now.
	for _, dir := range []string{"tmp", "apps"} {
		entries, _ := os.ReadDir(filepath.Join(*storeDir, dir))
		for _, e := range entries {
			if dir == "tmp" || strings.HasPrefix(e.Name(), ".tmp-") {
				problems = append(problems, fmt.Sprintf("temp file %s/%s left after the next command (cimg-run list)", dir, e.Name()))
			}
		}
	}
	for i, a := range o.allowed {
		if got.equal(a) {
			outcome = o.outcomes[i]
		}
	}
	if outcome == "" {
		var want []string
		for _, a := range o.allowed {
			want = append(want, "["+a.String()+"]")
		}
		problems = append(problems, fmt.Sprintf("store holds [%s]: neither the state before nor one the command commits (%s)", got, strings.Join(want, " or ")))
	}
	if succeeded && o.final != nil && !got.equal(o.final) {
		problems = append(problems, fmt.Sprintf("the command had exited 0 before the cut, yet the store holds [%s], not [%s]: a completed command was undone", got, o.final))
	}
	// Every file in images/ is an image that verifies and has the root
	// hash its name says (the store places only verified, synced
	// copies there, so this holds for images no state names too), and
	// every image a state names is one of them. A file verified at an
	// earlier check (after a power-on, so read from the disk) is not read
	// again while it is the same file (name, inode, ctime, size): the
	// store writes an image only as a temp file before it is placed, and
	// a cut only loses writes. Every 25 cycles all are read again anyway.
	if cycle%25 == 0 {
		verifiedFiles = map[fileID]bool{}
	}
	stored := map[string]bool{}
	entries, err := os.ReadDir(filepath.Join(*storeDir, "images"))
	if err != nil {
		problems = append(problems, err.Error())
	}
	for _, e := range entries {
		name := e.Name()
		stored[name] = true
		if !imageName.MatchString(name) {
			problems = append(problems, fmt.Sprintf("images/%s: not an image's name", name))
			continue
		}
		p := filepath.Join(*storeDir, "images", name)
		var st unix.Stat_t
		if err := unix.Lstat(p, &st); err != nil {
			problems = append(problems, err.Error())
			continue
		}
		id := fileID{name, st.Ino, st.Ctim, st.Size}
		if verifiedFiles[id] {
			continue
		}
		if out, errOut, err := runTimeout(*cimgBuild, "verify", p); err != nil {
			problems = append(problems, fmt.Sprintf("images/%s (%s) does not verify: %v: %s", name, namedBy(files, name), err, strings.TrimSpace(out+errOut)))
			continue
		}
		// verify checks the payload against the image's own root hash,
		// not against the name.
		if h, err := rootHash(p); err != nil || !strings.HasPrefix(name, h) {
			problems = append(problems, fmt.Sprintf("images/%s (%s) holds image %s (%v)", name, namedBy(files, name), label(h), err))
			continue
		}
		verifiedFiles[id] = true
	}
	for _, n := range files {
		if !stored[n.file] {
			problems = append(problems, fmt.Sprintf("app %s's %s version %s names images/%s, which is not there", n.app, n.slot, label(n.hash), n.file))
		} else if !strings.HasPrefix(n.file, n.hash) {
			problems = append(problems, fmt.Sprintf("app %s's %s version %s names images/%s, an image of another root hash", n.app, n.slot, label(n.hash), n.file))
		}
	}
	// The app the command was about launches (or another, after gc).
	launch := o.app
	if _, ok := got[launch]; !ok && len(got) > 0 {
		names := make([]string, 0, len(got))
		for n := range got {
			names = append(names, n)
		}
		sort.Strings(names)
		launch = names[rng.IntN(len(names))]
	}
	if _, ok := got[launch]; ok {
		args := append(append([]string{"run"}, common()...), launch, "--", "exit", "0")
		if out, errOut, err := runTimeout(*cimgRun, args...); err != nil {
			problems = append(problems, fmt.Sprintf("app %s does not launch: cimg-run run %s -- exit 0: %v: %s", launch, launch, err, strings.TrimSpace(out+errOut)))
		}
		// The launch counts a trial's start, and may abandon the trial:
		// the state changes only then.
		if got[launch].trial != "" {
			if got, _, err = listState(); err != nil {
				return nil, outcome, append(problems, "after the launch: "+err.Error()), true
			}
		}
	}
	return got, outcome, problems, false
}

// namedBy says which states name the image file, for a violation.
func namedBy(files []named, file string) string {
	var by []string
	for _, n := range files {
		if n.file == file {
			by = append(by, fmt.Sprintf("app %s's %s version %s", n.app, n.slot, label(n.hash)))
		}
	}
	if len(by) == 0 {
		return "no state names it"
	}
	return strings.Join(by, ", ")
}

// imageName is a stored image's file name: <root-hash>.cimg, or
// <root-hash>-<16 hex digits of the file's sha256>.cimg for one whose
// payload another stored image shares but whose other bytes differ.
var imageName = regexp.MustCompile(`^[0-9a-f]{64}(-[0-9a-f]{16})?\.cimg$`)

// rootHash is the root hash an image's footer holds.
func rootHash(p string) (string, error) {
	out, errOut, err := runTimeout(*cimgBuild, "inspect", "--json", p)
	if err != nil {
		return "", fmt.Errorf("cimg-build inspect %s: %v: %s", p, err, strings.TrimSpace(errOut))
	}
	var r struct {
		RootHash string `json:"root_hash"`
	}
	if err := json.Unmarshal([]byte(out), &r); err != nil || r.RootHash == "" {
		return "", fmt.Errorf("cimg-build inspect %s: no root hash (%v)", p, err)
	}
	return r.RootHash, nil
}

// fileID is an image file as verified: its name, inode, ctime and size.
type fileID struct {
	name  string
	ino   uint64
	ctime unix.Timespec
	size  int64
}

var verifiedFiles = map[fileID]bool{}

// named is an image a state names: which app and slot, and its file.
type named struct {
	app, slot, hash, file string
}

// listState is cimg-run list --json, as slots, and the image files the
// states name.
func listState() (state, []named, error) {
	args := append([]string{"list", "--json"}, common()...)
	out, stderr, err := runTimeout(*cimgRun, args...)
	if err != nil {
		return nil, nil, fmt.Errorf("cimg-run list --json: %v: %s", err, strings.TrimSpace(stderr))
	}
	var apps []appJSON
	if err := json.Unmarshal([]byte(out), &apps); err != nil {
		return nil, nil, fmt.Errorf("cimg-run list --json: %v: %q", err, out)
	}
	s := state{}
	var files []named
	hash := func(app, slot string, v *version) string {
		if v == nil {
			return ""
		}
		f := v.File
		if f == "" {
			f = v.RootHash + ".cimg"
		}
		files = append(files, named{app, slot, v.RootHash, f})
		return v.RootHash
	}
	for _, a := range apps {
		if a.Current == nil {
			return nil, nil, fmt.Errorf("cimg-run list --json: app %s has no current version", a.Name)
		}
		s[a.Name] = slots{hash(a.Name, "current", a.Current), hash(a.Name, "previous", a.Previous), hash(a.Name, "trial", a.Trial)}
	}
	return s, files, nil
}

// started is a command whose output goes to files, not pipes: an
// instance it starts detached may keep its stdout open after it returned,
// and Wait would wait for a pipe's end as long.
type started struct {
	cmd         *exec.Cmd
	out, errOut *os.File
	exited      chan error
}

func start(prog string, args ...string) (*started, error) {
	s := &started{exited: make(chan error, 1)}
	var err error
	if s.out, err = tempFile(); err != nil {
		return nil, err
	}
	if s.errOut, err = tempFile(); err != nil {
		return nil, err
	}
	s.cmd = exec.Command(prog, args...)
	s.cmd.Stdout, s.cmd.Stderr = s.out, s.errOut
	if err := s.cmd.Start(); err != nil {
		return nil, err
	}
	go func() { s.exited <- s.cmd.Wait() }()
	return s, nil
}

// tempFile is an unlinked file on /run (tmpfs, not the store).
func tempFile() (*os.File, error) {
	f, err := os.CreateTemp("/run", "powercut-out-")
	if err == nil {
		os.Remove(f.Name())
	}
	return f, err
}

// output is what the command wrote to stdout and stderr.
func (s *started) output() (string, string) {
	read := func(f *os.File) string {
		defer f.Close()
		f.Seek(0, io.SeekStart)
		b, _ := io.ReadAll(f)
		return string(b)
	}
	return read(s.out), read(s.errOut)
}

// runTimeout runs a command to its end, or kills it after two minutes
// (a hung check is a failed one, not a hung test), and returns its
// stdout, stderr and error.
func runTimeout(prog string, args ...string) (string, string, error) {
	s, err := start(prog, args...)
	if err != nil {
		return "", "", err
	}
	select {
	case err = <-s.exited:
	case <-time.After(2 * time.Minute):
		s.cmd.Process.Kill()
		<-s.exited
		err = errors.New("still running after 2 minutes: killed")
	}
	out, errOut := s.output()
	return out, errOut, err
}

// disk is the store's device: a device-mapper device over a loop device
// over the filesystem image, linear (a plain disk) until a cut makes it
// flakey.
type disk struct {
	loop    uint64 // dev_t
	sectors int64
	node    string // the dm device's node, while it exists
}

// powerOn creates the device with its normal table and mounts the store;
// ext4 replays its journal. noauto_da_alloc: ext4 does not flush a file's
// data when it is renamed over another, a heuristic that would hide a
// missing fsync before a rename.
func (d *disk) powerOn(mode string) error {
	hdr, err := dmIoctl(unix.DM_DEV_CREATE, diskName, 0, 0, nil)
	if err != nil {
		return fmt.Errorf("create %s: %w", diskName, err)
	}
	if _, err := dmIoctl(unix.DM_TABLE_LOAD, diskName, 0, 1, target(d.sectors, "linear", fmt.Sprintf("%s 0", devString(d.loop)))); err != nil {
		return fmt.Errorf("load the linear table: %w", err)
	}
	if _, err := dmIoctl(unix.DM_DEV_SUSPEND, diskName, 0, 0, nil); err != nil { // resume
		return fmt.Errorf("resume %s: %w", diskName, err)
	}
	// A node of our own: devtmpfs makes /dev/dm-N, but not at once.
	d.node = "/run/powercut-disk"
	os.Remove(d.node)
	if err := unix.Mknod(d.node, unix.S_IFBLK|0o600, int(hdr.Dev)); err != nil {
		return err
	}
	if err := os.MkdirAll(*storeDir, 0o700); err != nil {
		return err
	}
	if err := unix.Mount(d.node, *storeDir, "ext4", 0, mode+",noauto_da_alloc"); err != nil {
		return fmt.Errorf("mount %s (%s) on %s: %w", diskName, mode, *storeDir, err)
	}
	if err := os.MkdirAll(*stateDir, 0o700); err != nil {
		return err
	}
	return nil
}

// cut switches the device to drop every write from now on: a flakey
// table that is never up, loaded, then swapped in by a suspend and
// resume. The suspend skips the filesystem freeze (DM_SKIP_LOCKFS_FLAG):
// a freeze would write the page cache out first, the opposite of a
// power cut. Writes already submitted complete (the disk had them).
func (d *disk) cut() error {
	params := fmt.Sprintf("%s 0 0 86400 1 drop_writes", devString(d.loop))
	if _, err := dmIoctl(unix.DM_TABLE_LOAD, diskName, 0, 1, target(d.sectors, "flakey", params)); err != nil {
		return fmt.Errorf("load the flakey table: %w (dm-flakey loaded?)", err)
	}
	if _, err := dmIoctl(unix.DM_DEV_SUSPEND, diskName, unix.DM_SUSPEND_FLAG|unix.DM_SKIP_LOCKFS_FLAG, 0, nil); err != nil {
		return fmt.Errorf("suspend %s: %w", diskName, err)
	}
	if _, err := dmIoctl(unix.DM_DEV_SUSPEND, diskName, 0, 0, nil); err != nil {
		return fmt.Errorf("resume %s: %w", diskName, err)
	}
	return nil
}

// selfTest shows that a cut is a power cut: a file written and fsynced
// before it is there after it, one written (and closed) but not synced is
// not. Otherwise the cycles would prove nothing.
func (d *disk) selfTest() error {
	synced, unsynced := filepath.Join(*storeDir, "selftest-synced"), filepath.Join(*storeDir, "selftest-unsynced")
	f, err := os.Create(synced)
	if err != nil {
		return err
	}
	f.WriteString("synced\n")
	if err := f.Sync(); err != nil {
		return err
	}
	f.Close()
	if err := syncDir(*storeDir); err != nil {
		return err
	}
	if err := os.WriteFile(unsynced, []byte("unsynced\n"), 0o600); err != nil {
		return err
	}
	if err := d.cut(); err != nil {
		return err
	}
	if err := d.powerOff(); err != nil {
		return err
	}
	if err := d.powerOn("data=ordered"); err != nil {
		return err
	}
	b, err := os.ReadFile(synced)
	kept := err == nil && string(b) == "synced\n"
	_, err = os.Stat(unsynced)
	lost := errors.Is(err, os.ErrNotExist)
	fmt.Printf("SELFTEST synced-kept=%v unsynced-lost=%v\n", kept, lost)
	os.Remove(synced)
	os.Remove(unsynced)
	return syncDir(*storeDir)
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}

// powerOff ends what a power cut ends: every process, the mounts and
// devices of the launches, the state directory (tmpfs), the store's
// mount (its page cache goes to a disk that drops it) and the device.
func (d *disk) powerOff() error {
	if err := killAll(); err != nil {
		return err
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		sweep()
		err := unix.Unmount(*storeDir, 0)
		if err == nil {
			break
		}
		if err != unix.EBUSY || time.Now().After(deadline) {
			return fmt.Errorf("umount %s: %w\n%s", *storeDir, err, holders())
		}
		time.Sleep(50 * time.Millisecond)
	}
	for {
		_, err := dmIoctl(unix.DM_DEV_REMOVE, diskName, 0, 0, nil)
		if err == nil {
			break
		}
		if err != unix.EBUSY || time.Now().After(deadline) {
			return fmt.Errorf("remove %s: %w", diskName, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
	return os.RemoveAll(*stateDir)
}

// killAll SIGKILLs every process but init, this one and kernel threads,
// and reaps them (all are our descendants: we are their subreaper) until
// none is left, not even as a zombie whose threads still exit.
func killAll() error {
	self := os.Getpid()
	deadline := time.Now().Add(30 * time.Second)
	for {
		var left []int
		entries, _ := os.ReadDir("/proc")
		for _, e := range entries {
			pid, err := strconv.Atoi(e.Name())
			if err != nil || pid == 1 || pid == self {
				continue
			}
			b, err := os.ReadFile("/proc/" + e.Name() + "/stat")
			if err != nil {
				continue
			}
			i := bytes.LastIndexByte(b, ')')
			f := strings.Fields(string(b[i+1:]))
			if pid == 2 || len(f) < 2 || f[1] == "2" { // kthreadd and its kernel threads
				continue
			}
			left = append(left, pid)
			unix.Kill(pid, unix.SIGKILL)
		}
		for {
			pid, err := unix.Wait4(-1, nil, unix.WNOHANG, nil)
			if pid <= 0 || err != nil {
				break
			}
		}
		if len(left) == 0 {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("processes %v survive SIGKILL", left)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// sweep undoes what killed launches leave: mounts under the state
// directory (the mount cache), their dm-verity devices and loop devices
// on store images, and cimg-run's cgroups — none survives a reboot.
func sweep() {
	mi, _ := os.ReadFile("/proc/self/mountinfo")
	var targets []string
	for _, l := range strings.Split(string(mi), "\n") {
		if f := strings.Fields(l); len(f) > 4 && strings.HasPrefix(f[4], *stateDir+"/") {
			targets = append(targets, f[4])
		}
	}
	sort.Sort(sort.Reverse(sort.StringSlice(targets))) // deepest first
	for _, t := range targets {
		if unix.Unmount(t, 0) != nil {
			unix.Unmount(t, unix.MNT_DETACH)
		}
	}
	names, _ := filepath.Glob("/sys/block/dm-*/dm/name")
	for _, n := range names {
		b, _ := os.ReadFile(n)
		if name := strings.TrimSpace(string(b)); name != diskName && name != "" {
			dmIoctl(unix.DM_DEV_REMOVE, name, 0, 0, nil)
		}
	}
	backing, _ := filepath.Glob("/sys/block/loop*/loop/backing_file")
	for _, b := range backing {
		name, _ := os.ReadFile(b)
		if !strings.HasPrefix(string(name), *storeDir+"/") {
			continue
		}
		dev, _ := os.ReadFile(filepath.Join(filepath.Dir(filepath.Dir(b)), "dev"))
		maj, min, _ := strings.Cut(strings.TrimSpace(string(dev)), ":")
		ma, _ := strconv.Atoi(maj)
		mi, _ := strconv.Atoi(min)
		node := "/run/powercut-loop"
		os.Remove(node)
		if unix.Mknod(node, unix.S_IFBLK|0o600, int(unix.Mkdev(uint32(ma), uint32(mi)))) == nil {
			if fd, err := unix.Open(node, unix.O_RDONLY|unix.O_CLOEXEC, 0); err == nil {
				unix.IoctlSetInt(fd, unix.LOOP_CLR_FD, 0)
				unix.Close(fd)
			}
			os.Remove(node)
		}
	}
	var cgroups []string
	filepath.WalkDir("/sys/fs/cgroup/cimg", func(p string, e os.DirEntry, err error) error {
		if err == nil && e.IsDir() {
			cgroups = append(cgroups, p)
		}
		return nil
	})
	sort.Sort(sort.Reverse(sort.StringSlice(cgroups)))
	for _, c := range cgroups {
		unix.Rmdir(c)
	}
}

// holders says what keeps the store busy, for the error.
func holders() string {
	var b strings.Builder
	mi, _ := os.ReadFile("/proc/self/mountinfo")
	fmt.Fprintf(&b, "mountinfo:\n%s", mi)
	backing, _ := filepath.Glob("/sys/block/loop*/loop/backing_file")
	for _, p := range backing {
		name, _ := os.ReadFile(p)
		fmt.Fprintf(&b, "%s: %s", p, name)
	}
	names, _ := filepath.Glob("/sys/block/dm-*/dm/name")
	for _, p := range names {
		name, _ := os.ReadFile(p)
		fmt.Fprintf(&b, "%s: %s", p, name)
	}
	return b.String()
}

// attachLoop binds a free loop device to file and returns its dev_t.
func attachLoop(file string) (uint64, error) {
	ctl, err := unix.Open("/dev/loop-control", unix.O_RDWR|unix.O_CLOEXEC, 0)
	if err != nil {
		return 0, fmt.Errorf("/dev/loop-control: %w (loop.ko loaded?)", err)
	}
	defer unix.Close(ctl)
	n, err := unix.IoctlRetInt(ctl, unix.LOOP_CTL_GET_FREE)
	if err != nil {
		return 0, fmt.Errorf("LOOP_CTL_GET_FREE: %w", err)
	}
	dev := unix.Mkdev(7, uint32(n)) // LOOP_MAJOR
	node := fmt.Sprintf("/run/powercut-loop%d", n)
	if err := unix.Mknod(node, unix.S_IFBLK|0o600, int(dev)); err != nil {
		return 0, err
	}
	lfd, err := unix.Open(node, unix.O_RDWR|unix.O_CLOEXEC, 0)
	if err != nil {
		return 0, err
	}
	ffd, err := unix.Open(file, unix.O_RDWR|unix.O_CLOEXEC, 0)
	if err != nil {
		return 0, err
	}
	defer unix.Close(ffd)
	if err := unix.IoctlSetInt(lfd, unix.LOOP_SET_FD, ffd); err != nil {
		return 0, fmt.Errorf("LOOP_SET_FD %s: %w", file, err)
	}
	// lfd stays open (and the device bound) for the whole run.
	return dev, nil
}

func fileSectors(p string) (int64, error) {
	fi, err := os.Stat(p)
	if err != nil {
		return 0, err
	}
	return fi.Size() / 512, nil
}

func devString(dev uint64) string { return fmt.Sprintf("%d:%d", unix.Major(dev), unix.Minor(dev)) }

// target encodes one dm_target_spec and its parameters, padded to 8
// bytes (as internal/dmverity does).
func target(sectors int64, typ, params string) []byte {
	spec := unix.DmTargetSpec{Length: uint64(sectors)}
	copy(spec.Target_type[:], typ)
	size := int(unsafe.Sizeof(spec)) + len(params) + 1
	size = (size + 7) &^ 7
	spec.Next = uint32(size)
	b := make([]byte, size)
	*(*unix.DmTargetSpec)(unsafe.Pointer(&b[0])) = spec
	copy(b[unsafe.Sizeof(spec):], params)
	return b
}

// dmIoctl issues one device-mapper ioctl on /dev/mapper/control.
func dmIoctl(cmd uintptr, name string, flags, targets uint32, payload []byte) (*unix.DmIoctl, error) {
	ctl, err := os.OpenFile("/dev/mapper/control", os.O_RDWR|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, err
	}
	defer ctl.Close()
	hdrSize := int(unsafe.Sizeof(unix.DmIoctl{}))
	buf := make([]uint64, (hdrSize+len(payload)+4096+7)/8) // 8-aligned; room for replies
	raw := unsafe.Slice((*byte)(unsafe.Pointer(&buf[0])), len(buf)*8)
	hdr := (*unix.DmIoctl)(unsafe.Pointer(&buf[0]))
	hdr.Version = [3]uint32{unix.DM_VERSION_MAJOR, 0, 0}
	hdr.Data_size = uint32(len(raw))
	hdr.Data_start = uint32(hdrSize)
	hdr.Flags = flags
	hdr.Target_count = targets
	copy(hdr.Name[:], name)
	copy(raw[hdrSize:], payload)
	if _, _, e := unix.Syscall(unix.SYS_IOCTL, ctl.Fd(), cmd, uintptr(unsafe.Pointer(&buf[0]))); e != 0 {
		return nil, syscall.Errno(e)
	}
	out := *hdr
	return &out, nil
}
