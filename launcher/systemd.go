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
// and kill reach it; once the app runs, the launcher tells systemd the
// app is the unit's main process (MAINPID=) and exits: systemd supervises
// the app itself, and no launcher stays resident.
type Systemd struct {
	NotifySocket string // $NOTIFY_SOCKET, where the unit's notifications go
	// AppNotifies: the app sends READY=1 itself, through the unit's
	// socket bound into its /run/notify (the unit stays "activating" until
	// then); otherwise the launcher says READY=1 once the app runs.
	AppNotifies bool
	Unit        string // the unit's name, for the instance record
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

// handOff tells systemd that pid, the app, is the unit's main process
// now (and ready, unless the app says so itself), and waits until systemd
// has read that (BARRIER=1): only then may the launcher exit without the
// unit taking its exit for the service's.
func (s *Systemd) handOff(pid int) error {
	msg := "MAINPID=" + strconv.Itoa(pid) + "\n"
	if !s.AppNotifies {
		msg += "READY=1\n"
	}
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
	sock, err := unix.Socket(unix.AF_UNIX, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("notify systemd: %w", err)
	}
	defer unix.Close(sock)
	name := s.NotifySocket
	if strings.HasPrefix(name, "@") {
		name = "\x00" + name[1:]
	}
	var oob []byte
	if fd >= 0 {
		oob = unix.UnixRights(fd)
	}
	if err := unix.Sendmsg(sock, []byte(msg), oob, &unix.SockaddrUnix{Name: name}, 0); err != nil {
		return fmt.Errorf("notify systemd at %s: %w", s.NotifySocket, err)
	}
	return nil
}
