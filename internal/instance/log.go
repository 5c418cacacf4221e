package instance

import (
	"encoding/json"
	"fmt"
	"io"
	"os"
	"time"

	"golang.org/x/sys/unix"
)

// LogMax bounds a detached instance's log: at LogMax bytes, log becomes
// log.1 (replacing the one before) and a new log begins, so an instance
// never holds more than twice this on the state filesystem (tmpfs: RAM).
const LogMax = 1 << 20

// DetachLog makes the calling process's stdout and stderr (which the app
// inherits) the write end of a pipe whose read end the supervisor copies
// into the bounded log. Nothing reads the pipe until CopyLog: the slim
// waiter does it, so the launcher's first moments cost nothing, and the
// pipe holds what the app writes meanwhile (64 KiB, then it waits).
func (in *Instance) DetachLog() error {
	var p [2]int
	if err := unix.Pipe2(p[:], unix.O_CLOEXEC); err != nil {
		return fmt.Errorf("log pipe: %w", err)
	}
	for _, fd := range []int{1, 2} {
		if err := unix.Dup3(p[1], fd, 0); err != nil {
			unix.Close(p[0])
			unix.Close(p[1])
			return fmt.Errorf("log pipe: %w", err)
		}
	}
	unix.Close(p[1])
	in.logR = p[0]
	// Recorded now, so that logs knows it is a detached instance while it
	// is still starting.
	st, _ := json.Marshal(State{Name: in.Name, Supervisor: os.Getpid(), Started: time.Now(), Detached: true})
	return writeAtomic(in.dirfd, stateFile, st)
}

// logCopy is the running copier.
type logCopy struct {
	r    *os.File
	done chan struct{}
}

var running *logCopy // one instance per process

// CopyLog starts copying the app's output into the log (detached
// instances only).
func (in *Instance) CopyLog() {
	if in.logR < 0 || running != nil {
		return
	}
	// Non-blocking, so that the runtime's poller waits for it (no thread
	// parked in read) and a deadline can end the copy.
	unix.SetNonblock(in.logR, true)
	c := &logCopy{r: os.NewFile(uintptr(in.logR), "app output"), done: make(chan struct{})}
	running = c
	go func() {
		defer close(c.done)
		w := &logWriter{dirfd: in.dirfd, fd: -1}
		defer w.close()
		buf := make([]byte, 16<<10)
		for {
			n, err := c.r.Read(buf)
			if n > 0 {
				w.write(buf[:n])
			}
			if err != nil {
				return
			}
		}
	}()
}

// drainLog copies what the app left in the pipe. Nothing writes to it
// any more, but its write end is our own stdout, so EOF never comes: the
// copier (if one runs) is stopped at once, and what is left is read
// without waiting, until the pipe is empty — nothing lost, no time spent.
func (in *Instance) drainLog() {
	if in.logR < 0 {
		return
	}
	if running != nil {
		running.r.SetReadDeadline(time.Now()) // it returns; its last chunk is written
		<-running.done
	}
	unix.SetNonblock(in.logR, true)
	w := &logWriter{dirfd: in.dirfd, fd: -1}
	defer w.close()
	buf := make([]byte, 16<<10)
	for {
		n, err := unix.Read(in.logR, buf)
		if err == unix.EINTR {
			continue
		}
		if n <= 0 {
			return
		}
		w.write(buf[:n])
	}
}

// logWriter appends to STATE/instances/NAME/log, rotating at LogMax.
type logWriter struct {
	dirfd, fd int
	size      int64
}

func (w *logWriter) write(b []byte) {
	if w.fd < 0 || w.size+int64(len(b)) > LogMax && w.size > 0 {
		if w.fd >= 0 {
			unix.Close(w.fd)
			unix.Renameat(w.dirfd, logFile, w.dirfd, logFile+".1")
		}
		fd, err := unix.Openat(w.dirfd, logFile, unix.O_WRONLY|unix.O_APPEND|unix.O_CREAT|unix.O_CLOEXEC|unix.O_NOFOLLOW, 0o600)
		if err != nil {
			w.fd = -1
			return // the output is lost, not the app
		}
		var st unix.Stat_t
		unix.Fstat(fd, &st)
		w.fd, w.size = fd, st.Size
	}
	for len(b) > 0 {
		n, err := unix.Write(w.fd, b)
		if err != nil {
			return
		}
		b, w.size = b[n:], w.size+int64(n)
	}
}

func (w *logWriter) close() {
	if w.fd >= 0 {
		unix.Close(w.fd)
	}
}

// ReadLog writes the last tail lines (all if tail < 0) of instance name's
// log to out; with follow it then keeps writing what is added until the
// instance has ended.
//
// The writer rotates by renaming log to log.1 and starting a new log, so
// the reader goes by open files and inode numbers, not names: a file it
// holds open keeps its content whatever its name becomes, and a log.1 it
// has not read yet (the log rotated twice between two looks, or before
// the first) is read in full before the new log.
func ReadLog(stateDir, name string, tail int, follow bool, out io.Writer) error {
	r, err := Get(stateDir, name)
	if err != nil {
		return err
	}
	dir := r.dir
	if !r.State.Detached {
		if r.Status() == "starting" {
			return fmt.Errorf("instance %s is starting: try again in a moment", name)
		}
		return fmt.Errorf("instance %s was not started with -d: its output went to the terminal (or, under systemd, to the journal: journalctl -u cimg-%s)", name, name)
	}
	lr := &logReader{dir: dir, read: map[uint64]bool{}}
	defer lr.close()
	// Both files open before either is read: a rotation in between
	// cannot make one of them the other.
	old, oldIno := lr.open(logFile + ".1")
	lr.cur, lr.curIno = lr.open(logFile)
	lr.read[oldIno], lr.read[lr.curIno] = true, true
	var first []byte
	if old != nil {
		b, _ := io.ReadAll(old)
		old.Close()
		first = b
	}
	if lr.cur != nil {
		b, _ := io.ReadAll(lr.cur)
		first = append(first, b...)
	}
	out.Write(lastLines(first, tail))
	if !follow {
		return nil
	}
	buf := make([]byte, 32<<10)
	drain := func(f *os.File) {
		for {
			n, _ := f.Read(buf)
			if n == 0 {
				return
			}
			out.Write(buf[:n])
		}
	}
	for {
		if lr.cur != nil {
			drain(lr.cur)
		}
		if ino, ok := lr.ino(logFile); ok && ino != lr.curIno {
			// Rotated (or created). What the writer added to our file
			// after our last read and before it let go of it is read
			// first; then a log.1 we have not read (it came between).
			if lr.cur != nil {
				drain(lr.cur)
			}
			if f, ino1 := lr.open(logFile + ".1"); f != nil {
				if ino1 != lr.curIno && !lr.read[ino1] {
					lr.read[ino1] = true
					drain(f)
				}
				f.Close()
			}
			if lr.cur != nil {
				lr.cur.Close()
			}
			lr.cur, lr.curIno = lr.open(logFile)
			lr.read[lr.curIno] = true
			continue
		}
		if pid, _ := holder(dir); pid == 0 {
			if lr.cur != nil {
				drain(lr.cur) // what the supervisor wrote last
			}
			return nil
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// logReader follows an instance's log files.
type logReader struct {
	dir    string
	cur    *os.File
	curIno uint64
	read   map[uint64]bool // inodes read (or being read) to the end
}

// open opens a log file of the instance (nil if it is not there).
func (lr *logReader) open(name string) (*os.File, uint64) {
	f, err := os.Open(lr.dir + "/" + name)
	if err != nil {
		return nil, 0
	}
	var st unix.Stat_t
	if unix.Fstat(int(f.Fd()), &st) != nil {
		f.Close()
		return nil, 0
	}
	return f, st.Ino
}

func (lr *logReader) ino(name string) (uint64, bool) {
	var st unix.Stat_t
	if unix.Stat(lr.dir+"/"+name, &st) != nil {
		return 0, false
	}
	return st.Ino, true
}

func (lr *logReader) close() {
	if lr.cur != nil {
		lr.cur.Close()
	}
}

// lastLines is the last n lines of b (all of it when n < 0).
func lastLines(b []byte, n int) []byte {
	if n < 0 {
		return b
	}
	if n == 0 {
		return nil
	}
	end := len(b)
	if end > 0 && b[end-1] == '\n' {
		end--
	}
	for i := end - 1; i >= 0; i-- {
		if b[i] == '\n' {
			if n--; n == 0 {
				return b[i+1:]
			}
		}
	}
	return b
}
