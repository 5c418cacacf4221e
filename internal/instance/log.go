package instance

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"strconv"
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
	seq       uint64 // of the file fd is
}

// logSeqXattr numbers the log files one after the other, so that a
// follower that was too slow to open one before it was rotated away knows
// it missed it (the name log.1 is every file's in turn). An extended
// attribute, so the file holds only the app's output; where the state
// filesystem has none, the follower cannot tell, and says nothing.
const logSeqXattr = "trusted.cimg.log-seq"

func (w *logWriter) write(b []byte) {
	if w.fd < 0 || w.size+int64(len(b)) > LogMax && w.size > 0 {
		if !w.open() {
			return // the output is lost, not the app
		}
	}
	for len(b) > 0 {
		n, err := unix.Write(w.fd, b)
		if err != nil {
			return
		}
		b, w.size = b[n:], w.size+int64(n)
	}
}

// open continues the log an earlier writer (the copier) began, or begins
// the next one: made as log.new with its number, then moved into place,
// so that a follower never finds a log without one.
func (w *logWriter) open() bool {
	const flags = unix.O_WRONLY | unix.O_APPEND | unix.O_CLOEXEC | unix.O_NOFOLLOW
	rotate := w.fd >= 0
	if rotate {
		unix.Close(w.fd)
		w.fd = -1
	} else if fd, err := unix.Openat(w.dirfd, logFile, flags, 0); err == nil {
		var st unix.Stat_t
		unix.Fstat(fd, &st)
		w.fd, w.size = fd, st.Size
		w.seq, _ = logSeq(fd)
		return true
	}
	fd, err := unix.Openat(w.dirfd, logFile+".new", flags|unix.O_CREAT|unix.O_TRUNC, 0o600)
	if err != nil {
		return false
	}
	w.seq++
	unix.Fsetxattr(fd, logSeqXattr, []byte(strconv.FormatUint(w.seq, 10)), 0)
	if rotate {
		unix.Renameat(w.dirfd, logFile, w.dirfd, logFile+".1")
	}
	if err := unix.Renameat(w.dirfd, logFile+".new", w.dirfd, logFile); err != nil {
		unix.Close(fd)
		return false
	}
	w.fd, w.size = fd, 0
	return true
}

// logSeq is the number logWriter gave the log file fd (false: none).
func logSeq(fd int) (uint64, bool) {
	var b [20]byte
	n, err := unix.Fgetxattr(fd, logSeqXattr, b[:])
	if err != nil || n <= 0 {
		return 0, false
	}
	seq, err := strconv.ParseUint(string(b[:n]), 10, 64)
	return seq, err == nil
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
// the first) is read in full before the new log. A follower that falls
// further behind than that (an app writing faster than it reads) has lost
// a file: it says so on notice, ends the line it was printing and goes on
// from the next whole line, so that out never holds a spliced one.
func ReadLog(stateDir, name string, tail int, follow bool, out, notice io.Writer) error {
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
	lr := &logReader{dir: dir, read: map[uint64]bool{}, out: out}
	defer lr.close()
	// log, then log.1, then log again: if log is still the file opened
	// first, no rotation came between and the log.1 opened is the one
	// just before it. (log.1 first could pair it with a log two
	// rotations later, skipping the one between.)
	var old *os.File
	for {
		var oldIno uint64
		lr.cur, lr.curIno = lr.open(logFile)
		old, oldIno = lr.open(logFile + ".1")
		if ino, _ := lr.ino(logFile); ino == lr.curIno && (old == nil || oldIno != lr.curIno) {
			lr.read[oldIno], lr.read[lr.curIno] = true, true
			break
		}
		lr.close()
		if old != nil {
			old.Close()
		}
	}
	var first []byte
	if old != nil {
		b, _ := io.ReadAll(old)
		old.Close()
		first = b
	}
	if lr.cur != nil {
		b, _ := io.ReadAll(lr.cur)
		first = append(first, b...)
		lr.seq, _ = logSeq(int(lr.cur.Fd()))
	}
	lr.write(lastLines(first, tail))
	if !follow {
		return nil
	}
	// Woken by inotify as the writer writes, so that a fast app does not
	// rotate twice while we sleep (the file between would be gone); the
	// timeout is for the end of the instance, which no event announces.
	wake := lr.watch()
	ended := false
	for {
		lr.drain(lr.cur)
		if ino, ok := lr.ino(logFile); ok && ino != lr.curIno {
			// Rotated (or created). What the writer added to our file
			// after our last read and before it let go of it is read
			// first; then a log.1 we have not read (it came between).
			lr.drain(lr.cur)
			if f, ino1 := lr.open(logFile + ".1"); f != nil {
				if ino1 != lr.curIno && !lr.read[ino1] {
					lr.read[ino1] = true
					lr.next(f, notice)
					lr.drain(f)
				}
				f.Close()
			}
			if lr.cur != nil {
				lr.cur.Close()
			}
			lr.cur, lr.curIno = lr.open(logFile)
			lr.read[lr.curIno] = true
			lr.next(lr.cur, notice)
			continue
		}
		if pid, _ := holder(dir); pid == 0 {
			// The supervisor is gone: nothing is written any more, but
			// it may have made or rotated the log since the look above.
			// One more look reads what it left.
			if ended {
				return nil
			}
			ended = true
			continue
		}
		wake(100 * time.Millisecond)
	}
}

// logReader follows an instance's log files.
type logReader struct {
	dir     string
	cur     *os.File
	curIno  uint64
	read    map[uint64]bool // inodes read (or being read) to the end
	inotify int             // the watch on dir, or 0

	out      io.Writer
	seq      uint64 // of the last file read (0: not known)
	lastByte byte   // the last byte written to out
	skipLine bool   // drop what comes up to the next newline
	buf      []byte
}

// write copies b to out, less a line cut by a lost file.
func (lr *logReader) write(b []byte) {
	if lr.skipLine {
		i := bytes.IndexByte(b, '\n')
		if i < 0 {
			return
		}
		b, lr.skipLine = b[i+1:], false
	}
	lr.out.Write(b)
	if len(b) > 0 {
		lr.lastByte = b[len(b)-1]
	}
}

// drain copies what f holds beyond what was read.
func (lr *logReader) drain(f *os.File) {
	if f == nil {
		return
	}
	if lr.buf == nil {
		lr.buf = make([]byte, 32<<10)
	}
	for {
		n, _ := f.Read(lr.buf)
		if n == 0 {
			return
		}
		lr.write(lr.buf[:n])
	}
}

// next notes that f is the file read next: if the writer numbered files
// between it and the last one read, they were rotated away unread.
func (lr *logReader) next(f *os.File, notice io.Writer) {
	if f == nil {
		return
	}
	seq, ok := logSeq(int(f.Fd()))
	if !ok {
		lr.seq = 0
		return
	}
	if lr.seq > 0 && seq > lr.seq+1 {
		lost := seq - lr.seq - 1
		fmt.Fprintf(notice, "cimg-run logs: %d log file(s) of up to %d KiB each were rotated away before this follower could read them: the app wrote faster than it was read\n", lost, LogMax>>10)
		if lr.lastByte != '\n' && lr.lastByte != 0 {
			lr.out.Write([]byte{'\n'})
			lr.lastByte = '\n'
		}
		lr.skipLine = true
	}
	lr.seq = seq
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
		lr.cur = nil
	}
	if lr.inotify > 0 {
		unix.Close(lr.inotify)
		lr.inotify = 0
	}
}

// watch returns a wait that ends when a file in the instance directory
// is written, created or renamed, or after the timeout. Without inotify
// (no fds left, a kernel without it) it is a plain sleep.
func (lr *logReader) watch() func(time.Duration) {
	fd, err := unix.InotifyInit1(unix.IN_CLOEXEC | unix.IN_NONBLOCK)
	if err == nil {
		if _, err = unix.InotifyAddWatch(fd, lr.dir, unix.IN_MODIFY|unix.IN_CREATE|unix.IN_MOVED_TO|unix.IN_MOVED_FROM); err != nil {
			unix.Close(fd)
		}
	}
	if err != nil {
		return time.Sleep
	}
	lr.inotify = fd
	events := make([]byte, 4096)
	return func(timeout time.Duration) {
		pfd := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN}}
		if n, _ := unix.Poll(pfd, int(timeout/time.Millisecond)); n > 0 {
			for {
				if n, _ := unix.Read(fd, events); n <= 0 {
					break // the events only wake us: drained
				}
			}
		}
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
