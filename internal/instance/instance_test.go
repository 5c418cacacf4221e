package instance

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"cimg.dev/cimg/internal/cgroup"
)

// stateDir is a state directory as cimg-run wants it: root's, 0700. The
// tests need root, as the instance root must be root's; they fail, not
// skip, without it.
func stateDir(t *testing.T) string {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Fatal("the instance tests need root (the instance directory must be root's)")
	}
	d := t.TempDir()
	if err := os.Chmod(d, 0o700); err != nil {
		t.Fatal(err)
	}
	return d
}

func TestInstanceCheckName(t *testing.T) {
	for _, tc := range []struct {
		name string
		ok   bool
	}{
		{"web", true},
		{"a", true},
		{"7", true},
		{"A-b_c.d", true},
		{"probe-0a1b2c", true},
		{"x..", true}, // dots after the first character are plain characters
		{strings.Repeat("a", 63), true},
		{"", false},
		{strings.Repeat("a", 64), false},
		{"../x", false},
		{"..", false},
		{".", false},
		{".hidden", false},
		{"-rf", false},
		{"_x", false},
		{"a/b", false},
		{"a b", false},
		{"a\nb", false},
		{"a\x00b", false},
		{"é", false},
		{"aé", false},
		{"a:b", false}, // HandOver's word separates by ':'
	} {
		err := CheckName(tc.name)
		if (err == nil) != tc.ok {
			t.Errorf("CheckName(%q) = %v, want ok=%v", tc.name, err, tc.ok)
		}
	}
}

func TestInstanceDefaultName(t *testing.T) {
	suffix := `-[0-9a-f]{6}$`
	for _, tc := range []struct{ app, prefix string }{
		{"probe", "probe"},
		{"my.app_2", "my.app_2"},
		{"my app/x", "my-app-x"},
		{"", "app"},
		{"_x", "app"}, // would start with '_'
		{"é", "app"},  // '-' would start it
		{strings.Repeat("a", 80), strings.Repeat("a", 50)},
	} {
		got := DefaultName(tc.app)
		if !regexp.MustCompile("^" + regexp.QuoteMeta(tc.prefix) + suffix).MatchString(got) {
			t.Errorf("DefaultName(%q) = %q, want %s-XXXXXX", tc.app, got, tc.prefix)
		}
		if err := CheckName(got); err != nil {
			t.Errorf("DefaultName(%q) = %q: %v", tc.app, got, err)
		}
	}
	// Random: ten in a row are not all one name.
	seen := map[string]bool{}
	for range 10 {
		seen[DefaultName("probe")] = true
	}
	if len(seen) == 1 {
		t.Errorf("DefaultName is not random: %v", seen)
	}
}

func TestInstanceLastLines(t *testing.T) {
	for _, tc := range []struct {
		in   string
		n    int
		want string
	}{
		{"a\nb\nc\n", -1, "a\nb\nc\n"},
		{"a\nb\nc\n", 0, ""},
		{"a\nb\nc\n", 1, "c\n"},
		{"a\nb\nc\n", 2, "b\nc\n"},
		{"a\nb\nc\n", 3, "a\nb\nc\n"},
		{"a\nb\nc\n", 10, "a\nb\nc\n"},
		{"a\nb\nc", 1, "c"}, // no final newline: the partial line is the last
		{"a\nb\nc", 2, "b\nc"},
		{"", 1, ""},
		{"\n", 1, "\n"},
		{"\n\n\n", 2, "\n\n"},
		{"a\n\nb\n", 2, "\nb\n"},
		{"only", 1, "only"},
	} {
		if got := string(lastLines([]byte(tc.in), tc.n)); got != tc.want {
			t.Errorf("lastLines(%q, %d) = %q, want %q", tc.in, tc.n, got, tc.want)
		}
	}
}

// dirFiles lists the names in dir.
func dirFiles(t *testing.T, dir string) []string {
	t.Helper()
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var n []string
	for _, e := range entries {
		n = append(n, e.Name())
	}
	return n
}

func TestInstanceWriteAtomic(t *testing.T) {
	dir := t.TempDir()
	d, err := os.Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	dfd := int(d.Fd())
	for _, content := range []string{"first", "second, longer", "3"} {
		if err := writeAtomic(dfd, "f.json", []byte(content)); err != nil {
			t.Fatal(err)
		}
		if b, _ := os.ReadFile(filepath.Join(dir, "f.json")); string(b) != content {
			t.Errorf("after writing %q: %q", content, b)
		}
		if fi, _ := os.Stat(filepath.Join(dir, "f.json")); fi.Mode().Perm() != 0o600 {
			t.Errorf("mode %v, want 0600", fi.Mode())
		}
		if got := dirFiles(t, dir); fmt.Sprint(got) != "[f.json]" {
			t.Errorf("after writing %q the directory holds %q", content, got)
		}
	}
	// A failed rename (onto a non-empty directory) removes the temp file
	// and leaves the target alone.
	os.MkdirAll(filepath.Join(dir, "busy", "x"), 0o700)
	if err := writeAtomic(dfd, "busy", []byte("x")); err == nil {
		t.Error("writeAtomic over a non-empty directory succeeded")
	}
	if got := dirFiles(t, dir); fmt.Sprint(got) != "[busy f.json]" {
		t.Errorf("after a failed write the directory holds %q", got)
	}
	// A stale temp file (a crash between create and rename) is replaced,
	// not followed if it is a symlink.
	target := filepath.Join(t.TempDir(), "elsewhere")
	os.WriteFile(target, []byte("keep"), 0o600)
	os.Symlink(target, filepath.Join(dir, ".g.json.tmp"))
	err = writeAtomic(dfd, "g.json", []byte("new"))
	if b, _ := os.ReadFile(target); string(b) != "keep" {
		t.Errorf("writeAtomic wrote through a symlinked temp file: %q", b)
	}
	if err != nil {
		t.Logf("with a symlink as temp file: %v (refused, as it may be)", err)
	}
}

func TestInstanceCreateAndRecords(t *testing.T) {
	state := stateDir(t)
	in, err := Create(state, "web")
	if err != nil {
		t.Fatal(err)
	}
	root := Root(state)
	if fi, err := os.Lstat(root); err != nil || fi.Mode().Perm() != 0o700 || !fi.IsDir() {
		t.Errorf("instance root %s: %v %v", root, fi.Mode(), err)
	}
	if got := dirFiles(t, root); fmt.Sprint(got) != "[.lock web]" {
		t.Errorf("instance root after Create: %q", got)
	}
	if got := dirFiles(t, filepath.Join(root, "web")); fmt.Sprint(got) != "[lock state.json]" {
		t.Errorf("instance directory after Create: %q", got)
	}
	if in.Dir != filepath.Join(root, "web") || in.Name != "web" {
		t.Errorf("Create: %+v", in)
	}
	if err := in.Started(State{App: "probe", Version: "1", Pid: 4242, CgroupID: "probe-1"}, []byte("{}")); err != nil {
		t.Fatal(err)
	}
	b, _ := os.ReadFile(filepath.Join(in.Dir, stateFile))
	var st State
	json.Unmarshal(b, &st)
	if st.Name != "web" || st.Supervisor != os.Getpid() || st.App != "probe" || st.Pid != 4242 || st.Detached {
		t.Errorf("state.json after Started: %s", b)
	}
	if err := in.Exited(Exit{Code: 3}); err != nil {
		t.Fatal(err)
	}
	in.close() // the supervisor's end: the lock goes
	recs, err := List(state)
	if err != nil {
		t.Fatal(err)
	}
	if len(recs) != 1 || recs[0].Status() != "exited 3" || recs[0].Running() || recs[0].Exit.Code != 3 {
		t.Errorf("List after the end: %+v", recs)
	}

	// Create over the ended instance replaces it: no exit record, a fresh
	// state.
	in2, err := Create(state, "web")
	if err != nil {
		t.Fatalf("Create over an ended instance: %v", err)
	}
	defer in2.close()
	if got := dirFiles(t, in2.Dir); fmt.Sprint(got) != "[lock state.json]" {
		t.Errorf("the new instance's directory holds %q", got)
	}
	b, _ = os.ReadFile(filepath.Join(in2.Dir, stateFile))
	st = State{}
	json.Unmarshal(b, &st)
	if st.Pid != 0 || st.App != "" || st.Name != "web" {
		t.Errorf("state.json of the new instance: %s", b)
	}

	// Names that are not directories of their own are refused.
	for _, bad := range []string{"", "../x", ".hidden", "a/b"} {
		if _, err := Create(state, bad); err == nil {
			t.Errorf("Create(%q) succeeded", bad)
		}
		if _, err := Get(state, bad); err == nil {
			t.Errorf("Get(%q) succeeded", bad)
		}
	}
	var nf *ErrNotFound
	if _, err := Get(state, "nosuch"); !errors.As(err, &nf) {
		t.Errorf("Get of an unknown name: %v", err)
	}
}

func TestInstanceCreateRefusesAnUnsafeRoot(t *testing.T) {
	state := stateDir(t)
	if err := os.Mkdir(Root(state), 0o755); err != nil {
		t.Fatal(err)
	}
	if _, err := Create(state, "web"); err == nil || !strings.Contains(err.Error(), "0700") {
		t.Errorf("Create with a 0755 instance root: %v", err)
	}
	os.Remove(Root(state))
	other := t.TempDir()
	os.Chmod(other, 0o700)
	os.Symlink(other, Root(state))
	if _, err := Create(state, "web"); err == nil {
		t.Errorf("Create with the instance root a symlink succeeded")
	}
}

// writeRecord makes an instance directory by hand: state.json, and
// exit.json if e is not nil; no lock file (nobody holds it).
func writeRecord(t *testing.T, state string, st State, e *Exit) string {
	t.Helper()
	os.Mkdir(Root(state), 0o700)
	dir := filepath.Join(Root(state), st.Name)
	if err := os.Mkdir(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	b, _ := json.Marshal(st)
	os.WriteFile(filepath.Join(dir, stateFile), b, 0o600)
	if e != nil {
		b, _ = json.Marshal(e)
		os.WriteFile(filepath.Join(dir, exitFile), b, 0o600)
	}
	return dir
}

func TestInstanceLostIsSettled(t *testing.T) {
	state := stateDir(t)
	// A supervisor that was SIGKILLed: state.json, no exit.json, and
	// nobody holds the lock (here: no lock file at all, and, below, one
	// nobody holds).
	dir := writeRecord(t, state, State{Name: "lost", App: "probe", Pid: 99999, Supervisor: 99998}, nil)
	dir2 := writeRecord(t, state, State{Name: "lost2", App: "probe"}, nil)
	os.WriteFile(filepath.Join(dir2, lockFile), nil, 0o600)
	// An ended one, untouched by List.
	writeRecord(t, state, State{Name: "ended"}, &Exit{Code: 1})
	// A start that never completed: its temp directory goes.
	os.Mkdir(filepath.Join(Root(state), ".new-half-123"), 0o700)

	recs, err := List(state)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, r := range recs {
		got = append(got, r.State.Name+": "+r.Status())
	}
	if want := "[ended: exited 1 lost: lost (supervisor killed) lost2: lost (supervisor killed)]"; fmt.Sprint(got) != want {
		t.Errorf("List: %q, want %s", got, want)
	}
	for _, d := range []string{dir, dir2} {
		b, err := os.ReadFile(filepath.Join(d, exitFile))
		var e Exit
		if err != nil || json.Unmarshal(b, &e) != nil || !e.Lost || e.Code != 137 || e.Finished.IsZero() {
			t.Errorf("%s: exit.json %q %v", d, b, err)
		}
	}
	if _, err := os.Stat(filepath.Join(Root(state), ".new-half-123")); !os.IsNotExist(err) {
		t.Errorf("the half-made directory is still there: %v", err)
	}
	// Get settles the same way.
	writeRecord(t, state, State{Name: "lost3"}, nil)
	r, err := Get(state, "lost3")
	if err != nil || r.Status() != "lost (supervisor killed)" {
		t.Errorf("Get of a lost instance: %+v %v", r, err)
	}
	// Stop of a lost instance returns its record; Kill says it is not
	// running; Remove forgets it.
	writeRecord(t, state, State{Name: "lost4", Pid: 99999}, nil)
	if r, err := Stop(state, "lost4", time.Second); err != nil || r.Status() != "lost (supervisor killed)" {
		t.Errorf("Stop of a lost instance: %+v %v", r, err)
	}
	if err := Kill(state, "lost4", unix.SIGKILL); err == nil || !strings.Contains(err.Error(), "not running") {
		t.Errorf("Kill of a lost instance: %v", err)
	}
	if err := Remove(state, "lost4"); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(Root(state), "lost4")); !os.IsNotExist(err) {
		t.Errorf("Remove left %v", err)
	}
}

// A supervisor in another process: POSIX locks are per process, so the
// lock is only seen as held from outside the process that holds it. The
// test binary runs itself as that process (TestInstanceHelperSupervisor).
const helperEnv = "CIMG_INSTANCE_TEST_HELPER"

// TestInstanceHelperSupervisor is not a test: run by TestInstanceCrossProcess with
// helperEnv set to "STATEDIR NAME", it creates the instance, says "ok"
// and waits until its stdin closes, then exits without recording an end
// (as a SIGKILLed supervisor would) unless stdin said "exit".
func TestInstanceHelperSupervisor(t *testing.T) {
	arg := os.Getenv(helperEnv)
	if arg == "" {
		return
	}
	f := strings.Fields(arg)
	state, name := f[0], f[1]
	create := Create
	if len(f) > 2 && f[2] == "standby" {
		create = CreateStandby
	}
	in, err := create(state, name)
	if err != nil {
		fmt.Println("error:", err)
		os.Exit(1)
	}
	fmt.Println("ok")
	stdin := bufio.NewReader(os.Stdin)
	line, _ := stdin.ReadString('\n')
	if strings.TrimSpace(line) == "start" {
		// A standby's app runs: it takes the name.
		if err := in.Started(State{App: name, Version: "2"}, []byte("{}")); err != nil {
			fmt.Println("error:", err)
		} else {
			fmt.Println("started")
		}
		line, _ = stdin.ReadString('\n')
	}
	if strings.TrimSpace(line) == "exit" {
		in.Exited(Exit{Code: 5})
	}
	os.Exit(0)
}

// helper starts a supervisor process holding instance name.
func helper(t *testing.T, state, name string) (*exec.Cmd, *os.File) {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^TestInstanceHelperSupervisor$")
	cmd.Env = append(os.Environ(), helperEnv+"="+state+" "+name)
	stdin, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stdin = stdin
	var out bytes.Buffer
	r, pw, _ := os.Pipe()
	cmd.Stdout = pw
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	stdin.Close()
	pw.Close()
	line, _ := bufio.NewReader(r).ReadString('\n')
	r.Close()
	out.WriteString(line)
	if line != "ok\n" {
		w.Close()
		cmd.Wait()
		t.Fatalf("helper supervisor: %q", out.String())
	}
	t.Cleanup(func() { w.Close(); cmd.Wait() })
	return cmd, w
}

func TestInstanceCrossProcess(t *testing.T) {
	state := stateDir(t)
	cmd, w := helper(t, state, "web")
	pid := cmd.Process.Pid

	// Held by the helper: a second Create fails, naming it.
	_, err := Create(state, "web")
	var inUse *ErrNameInUse
	if !errors.As(err, &inUse) || inUse.Pid != pid || inUse.Name != "web" {
		t.Errorf("Create of a held name: %v, want ErrNameInUse by pid %d", err, pid)
	}
	recs, err := List(state)
	if err != nil || len(recs) != 1 || !recs[0].Running() || recs[0].Supervisor != pid || recs[0].Status() != "starting" {
		t.Errorf("List while the helper holds web: %+v %v", recs, err)
	}
	if err := Remove(state, "web"); err == nil || !strings.Contains(err.Error(), "running") {
		t.Errorf("Remove of a running instance: %v", err)
	}

	// The helper ends without recording its end: lost.
	w.Close()
	cmd.Wait()
	r, err := Get(state, "web")
	if err != nil || r.Running() || r.Status() != "lost (supervisor killed)" {
		t.Errorf("Get after the supervisor died: %+v %v", r, err)
	}

	// One that records its end has ended, and is not lost.
	cmd, w = helper(t, state, "web2")
	w.WriteString("exit\n")
	w.Close()
	cmd.Wait()
	if r, err := Get(state, "web2"); err != nil || r.Status() != "exited 5" {
		t.Errorf("Get after the supervisor recorded its end: %+v %v", r, err)
	}
	// And its name is free.
	in, err := Create(state, "web2")
	if err != nil {
		t.Fatalf("Create over an ended instance: %v", err)
	}
	in.close()
}

func TestInstanceLogRotationIsBounded(t *testing.T) {
	state := stateDir(t)
	in, err := Create(state, "big")
	if err != nil {
		t.Fatal(err)
	}
	defer in.close()
	w := &logWriter{dirfd: in.dirfd, fd: -1}
	line := []byte(strings.Repeat("x", 999) + "\n")
	const lines = 2500 // 2.5 MB: more than 2×LogMax
	for i := 0; i < lines; i++ {
		w.write(line)
	}
	w.close()
	var total int64
	for _, n := range []string{logFile, logFile + ".1"} {
		fi, err := os.Stat(filepath.Join(in.Dir, n))
		if err != nil {
			t.Fatal(err)
		}
		if fi.Size() > LogMax {
			t.Errorf("%s: %d bytes, more than LogMax", n, fi.Size())
		}
		total += fi.Size()
	}
	if total > 2*LogMax {
		t.Errorf("log + log.1: %d bytes", total)
	}
	// ReadLog reads log.1 then log: the end of the output, whole lines
	// (every write here is one line).
	b, _ := json.Marshal(State{Name: "big", Detached: true})
	writeAtomic(in.dirfd, stateFile, b)
	writeAtomic(in.dirfd, exitFile, []byte(`{"code":0}`))
	var out bytes.Buffer
	if err := ReadLog(state, "big", -1, false, &out, io.Discard); err != nil {
		t.Fatal(err)
	}
	if int64(out.Len()) != total || out.Len()%len(line) != 0 {
		t.Errorf("ReadLog: %d bytes, log + log.1 hold %d", out.Len(), total)
	}
	out.Reset()
	if err := ReadLog(state, "big", 2, false, &out, io.Discard); err != nil || out.String() != string(line)+string(line) {
		t.Errorf("ReadLog tail 2: %d bytes, %v", out.Len(), err)
	}
}

// TestInstanceListSurvivesAnUnremovableCgroup: a lost instance whose
// cgroup cannot be removed (here a child cgroup in it, as an app given a
// delegated cgroup could make; or a process stuck in the kernel) must not
// make List fail: ps would list nothing at all, for every instance.
func TestInstanceListSurvivesAnUnremovableCgroup(t *testing.T) {
	state := stateDir(t)
	// Not NAME-PID: a launch's sweep of stale cgroups passes it by.
	id := fmt.Sprintf("instance-test-%d-x", os.Getpid())
	c, dir := "pids", filepath.Join(cgroup.Root, "pids", "cimg", id)
	if cgroup.IsV2() {
		c, dir = "", filepath.Join(cgroup.Root, "cimg", id)
	}
	if err := os.MkdirAll(filepath.Join(dir, "child"), 0o755); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		os.Remove(filepath.Join(dir, "child"))
		os.Remove(dir)
	})
	writeRecord(t, state, State{Name: "stuck", CgroupID: id, CgroupV2: cgroup.IsV2(), Cgroup: map[string]string{c: dir}}, nil)
	writeRecord(t, state, State{Name: "fine"}, &Exit{Code: 0})
	recs, err := List(state)
	if err != nil {
		t.Errorf("List fails for every instance when one lost instance's cgroup cannot be removed: %v", err)
	}
	var got []string
	for _, r := range recs {
		got = append(got, r.State.Name+": "+r.Status())
	}
	if len(got) != 2 || got[0] != "fine: exited 0" || !strings.HasPrefix(got[1], "stuck: lost") {
		t.Errorf("List: %q, want fine (exited 0) and stuck (lost)", got)
	}
}

// hookWriter collects ReadLog's output and, at its first Write (the
// initial snapshot, written before ReadLog follows), runs first: what
// the supervisor does while the follower has not looked again yet.
type hookWriter struct {
	out    bytes.Buffer
	first  func()
	called bool
}

func (h *hookWriter) Write(p []byte) (int, error) {
	h.out.Write(p)
	if !h.called {
		h.called = true
		h.first()
	}
	return len(p), nil
}

// TestInstanceLogFollowAcrossRotation: ReadLog with follow prints every
// line written after it began, however many times the log rotated
// between two of its looks. The supervisor is a helper process (its lock
// is what keeps ReadLog following); this process writes the log as the
// supervisor's copier would, from inside ReadLog's first Write, so the
// order of events is fixed: no timing decides the outcome.
func TestInstanceLogFollowAcrossRotation(t *testing.T) {
	line := func(i int) []byte { return fmt.Appendf(nil, "line %06d %s\n", i, strings.Repeat("x", 987)) } // 1000 bytes
	for _, tc := range []struct {
		name         string
		before, more int // lines written before ReadLog begins, and once it has
	}{
		{"rotated twice between two looks", 10, 3000},
		{"log made and rotated before the first look", 0, 1500},
		{"rotated three times between two looks: a file lost, said so", 10, 4000},
	} {
		t.Run(tc.name, func(t *testing.T) {
			state := stateDir(t)
			cmd, stdin := helper(t, state, "web")
			dir := filepath.Join(Root(state), "web")
			d, err := os.Open(dir)
			if err != nil {
				t.Fatal(err)
			}
			defer d.Close()
			b, _ := json.Marshal(State{Name: "web", Detached: true, Supervisor: cmd.Process.Pid})
			if err := writeAtomic(int(d.Fd()), stateFile, b); err != nil {
				t.Fatal(err)
			}
			w := &logWriter{dirfd: int(d.Fd()), fd: -1}
			defer w.close()
			for i := 0; i < tc.before; i++ {
				w.write(line(i))
			}
			h := &hookWriter{first: func() {
				for i := tc.before; i < tc.before+tc.more; i++ {
					w.write(line(i))
				}
				stdin.Close() // the supervisor ends: ReadLog returns once it has read what is there
				cmd.Wait()
			}}
			var notice bytes.Buffer
			if err := ReadLog(state, "web", -1, true, h, &notice); err != nil {
				t.Fatal(err)
			}
			// Every line, in order, once; where the writer rotated a file
			// away unread (three rotations), a notice and one skip, from
			// the end of the last file read to past the lost one.
			perFile := LogMax / len(line(0))
			lost := tc.more > 3*perFile
			if lost != (notice.Len() > 0) {
				t.Errorf("a file rotated away unread: %v; notice: %q", lost, notice.String())
			}
			if lost && !strings.Contains(notice.String(), "1 log file(s)") {
				t.Errorf("notice %q, want it to count 1 lost file", notice.String())
			}
			n := tc.before + tc.more
			next := 0
			for _, l := range strings.SplitAfter(h.out.String(), "\n") {
				if l == "" {
					continue
				}
				var i int
				if _, err := fmt.Sscanf(l, "line %d ", &i); err != nil || l != string(line(i)) {
					t.Fatalf("after line %d: %q is no whole line", next-1, l[:min(len(l), 40)])
				}
				if i != next {
					if !lost || next != perFile || i < 2*perFile {
						t.Fatalf("after line %d comes line %d: %d lines (%d bytes) skipped", next-1, i, i-next, (i-next)*len(line(0)))
					}
					lost = false // the one skip allowed
				}
				next = i + 1
			}
			if next != n {
				t.Errorf("ends after line %d, the last is %d", next-1, n-1)
			}
		})
	}
}

// TestInstanceStandbyTakesTheName: a standby instance (update's next
// version, a supervisor process of its own) is made while another
// supervisor holds the name, is not listed (nor cleaned away) meanwhile,
// and takes the name in Started once that supervisor has ended; a
// supervisor that took the name meanwhile is not waited for, and keeps it.
func TestInstanceStandbyTakesTheName(t *testing.T) {
	state := stateDir(t)
	old, oldIn := helper(t, state, "web")
	sb, sbIn, sbOut := standbyHelper(t, state, "web")
	if recs, err := List(state); err != nil || len(recs) != 1 || recs[0].Supervisor != old.Process.Pid {
		t.Fatalf("List with a standby: %+v %v, want only the old supervisor's web", recs, err)
	}
	if left, _ := filepath.Glob(filepath.Join(Root(state), ".new-web-*")); len(left) != 1 {
		t.Fatalf("the standby's directory: %v, want one", left)
	}
	sbIn.WriteString("start\n")
	said := make(chan string, 1)
	go func() { l, _ := sbOut.ReadString('\n'); said <- l }()
	select {
	case l := <-said:
		t.Fatalf("the standby's Started returned while the old supervisor holds the name: %q", l)
	case <-time.After(200 * time.Millisecond):
	}
	oldIn.WriteString("exit\n")
	oldIn.Close()
	old.Wait()
	if l := <-said; l != "started\n" {
		t.Fatalf("the standby's Started once the old supervisor ended: %q", l)
	}
	r, err := Get(state, "web")
	if err != nil || r.Supervisor != sb.Process.Pid || r.State.Version != "2" || r.Exit != nil {
		t.Errorf("web after the standby took it: %+v %v", r, err)
	}
	if left, _ := filepath.Glob(filepath.Join(Root(state), ".new-*")); len(left) != 0 {
		t.Errorf("left: %v", left)
	}

	// Another supervisor takes the name between the standby's start and
	// its Started: the standby fails at once, and the name stays taken.
	old, oldIn = helper(t, state, "api")
	_, sbIn, sbOut = standbyHelper(t, state, "api")
	oldIn.WriteString("exit\n")
	oldIn.Close()
	old.Wait()
	other, _ := helper(t, state, "api")
	sbIn.WriteString("start\n")
	if l, _ := sbOut.ReadString('\n'); !strings.Contains(l, fmt.Sprintf("supervisor pid %d", other.Process.Pid)) {
		t.Errorf("Started of a standby whose name another took: %q, want the name in use by pid %d", l, other.Process.Pid)
	}
	if r, err := Get(state, "api"); err != nil || r.Supervisor != other.Process.Pid {
		t.Errorf("api after the standby failed: %+v %v", r, err)
	}
}

// standbyHelper starts a helper supervisor with a standby instance name,
// and returns its stdin and the rest of its stdout.
func standbyHelper(t *testing.T, state, name string) (*exec.Cmd, *os.File, *bufio.Reader) {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^TestInstanceHelperSupervisor$")
	cmd.Env = append(os.Environ(), helperEnv+"="+state+" "+name+" standby")
	stdin, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	r, pw, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stdin, cmd.Stdout = stdin, pw
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	stdin.Close()
	pw.Close()
	out := bufio.NewReader(r)
	t.Cleanup(func() { w.Close(); cmd.Wait(); r.Close() })
	if line, _ := out.ReadString('\n'); line != "ok\n" {
		t.Fatalf("standby helper: %q", line)
	}
	return cmd, w, out
}
