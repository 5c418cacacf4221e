package launcher

import (
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// Systemd is a launch as the ExecStart of a systemd service unit
// (Type=notify, Delegate=yes; cimg-run unit writes such units). The app's
// cgroup goes inside the unit's, so the unit accounts for it and its stop
// and kill reach it; the app is the unit's main process (MAINPID=) from
// its fork, and once it runs the launcher says READY=1 and exits: systemd
// supervises the app itself, and no launcher stays resident.
type Systemd struct {
	NotifySocket string // $NOTIFY_SOCKET, where the unit's notifications go
	// AppNotifies: the app sends READY=1 itself, through the unit's
	// socket bound into its /run/notify (the unit stays "activating" until
	// then); otherwise the launcher says READY=1 once the app runs.
	AppNotifies bool
	Unit        string // the unit's name, for the instance record

	conn int // connected to NotifySocket while the launcher still sees the host (0: not yet)
}

// connect connects to the unit's socket, from the host's namespaces: the
// launch thread sends from the app's, where the path leads nowhere.
func (s *Systemd) connect() error {
	sock, err := unix.Socket(unix.AF_UNIX, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("notify socket: %w", err)
	}
	name := s.NotifySocket
	if strings.HasPrefix(name, "@") {
		name = "\x00" + name[1:]
	}
	if err := unix.Connect(sock, &unix.SockaddrUnix{Name: name}); err != nil {
		unix.Close(sock)
		return fmt.Errorf("connect to the unit's notify socket %s: %w", s.NotifySocket, err)
	}
	s.conn = sock
	return nil
}

// NotifyPath is where an app that notifies finds the unit's socket.
const NotifyPath = "/run/notify/notify.sock"

// SystemdFromEnv is the Systemd of a launcher started by a service unit,
// or an error saying what the unit lacks.
func SystemdFromEnv(appNotifies bool) (*Systemd, error) {
	s := &Systemd{NotifySocket: os.Getenv("NOTIFY_SOCKET"), AppNotifies: appNotifies}
	if s.NotifySocket == "" {
		return nil, errors.New("--systemd: no $NOTIFY_SOCKET: run it as the ExecStart of a Type=notify unit (cimg-run unit writes one)")
	}
	if appNotifies && strings.HasPrefix(s.NotifySocket, "@") {
		return nil, fmt.Errorf("--ready=notify: the unit's notify socket %s is abstract, which no private network namespace reaches", s.NotifySocket)
	}
	// The unit's name is the last element of our cgroup path.
	if b, err := os.ReadFile("/proc/self/cgroup"); err == nil {
		for _, line := range strings.Split(string(b), "\n") {
			if f := strings.SplitN(line, ":", 3); len(f) == 3 && strings.HasSuffix(f[2], ".service") {
				s.Unit = f[2][strings.LastIndexByte(f[2], '/')+1:]
			}
		}
	}
	return s, nil
}

// mainPID makes pid, the app's process, the unit's main process, while
// it is sure to be alive: forked, but waiting for the launcher before it
// runs anything. However early the app then ends, systemd (to which it
// is reparented when the launcher exits) reaps it and has its status.
func (s *Systemd) mainPID(pid int) error {
	return s.send("MAINPID=" + strconv.Itoa(pid) + "\n")
}

// ready says READY=1 once the app runs, unless the app says it itself.
func (s *Systemd) ready() error {
	if s.AppNotifies {
		return nil
	}
	return s.send("READY=1\n")
}

// send sends msg and waits until systemd has read it (BARRIER=1): a
// message it reads only after its sender is gone is dropped, and one read
// after the app ended names a process that is no more.
func (s *Systemd) send(msg string) error {
	if err := s.notify(msg, -1); err != nil {
		return err
	}
	// The barrier: a pipe's write end goes to systemd, which closes it
	// once it has processed every message before it.
	var p [2]int
	if err := unix.Pipe2(p[:], unix.O_CLOEXEC); err != nil {
		return err
	}
	defer unix.Close(p[0])
	err := s.notify("BARRIER=1\n", p[1])
	unix.Close(p[1])
	if err != nil {
		return err
	}
	fds := []unix.PollFd{{Fd: int32(p[0]), Events: unix.POLLIN}}
	deadline := time.Now().Add(5 * time.Second)
	for time.Now().Before(deadline) {
		n, err := unix.Poll(fds, int(time.Until(deadline).Milliseconds())+1)
		if err == unix.EINTR {
			continue
		}
		if n > 0 {
			return nil
		}
		break
	}
	return errors.New("systemd did not acknowledge the notification in 5 s (BARRIER=1 needs systemd 246)")
}

// notify sends one sd_notify datagram, with fd attached when fd >= 0.
func (s *Systemd) notify(msg string, fd int) error {
	var oob []byte
	if fd >= 0 {
		oob = unix.UnixRights(fd)
	}
	if err := unix.Sendmsg(s.conn, []byte(msg), oob, nil, 0); err != nil {
		return fmt.Errorf("notify systemd at %s: %w", s.NotifySocket, err)
	}
	return nil
}
