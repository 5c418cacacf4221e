package launcher

import (
	"fmt"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"

	"golang.org/x/sys/unix"

	"cimg.dev/cimg/internal/earlysig"
)

// ParseSignal reads TERM, SIGTERM or 15 (cimg-run stop/kill, cimg-oci
// kill).
func ParseSignal(s string) (syscall.Signal, error) {
	if n, err := strconv.Atoi(s); err == nil && n > 0 && n < 65 {
		return syscall.Signal(n), nil
	}
	name := strings.ToUpper(s)
	if !strings.HasPrefix(name, "SIG") {
		name = "SIG" + name
	}
	if sig := unix.SignalNum(name); sig != 0 {
		return sig, nil
	}
	return 0, fmt.Errorf("signal %q: give a name (TERM, SIGHUP) or a number", s)
}

// RelaySignals takes the signals a foreground caller passes on to its
// child (WaitRelay): asked for before the child exists, so none is lost.
func RelaySignals() chan os.Signal {
	c := make(chan os.Signal, 16)
	signal.Notify(c, earlysig.ForwardedTTY...)
	return c
}

// Reap waits for the child pid and returns its exit status, 128+N for
// signal N, as a shell gives it.
func Reap(pid int) (int, error) {
	var ws unix.WaitStatus
	for {
		_, err := unix.Wait4(pid, &ws, 0, nil)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return 0, err
		}
		break
	}
	if ws.Signaled() {
		return 128 + int(ws.Signal()), nil
	}
	return ws.ExitStatus(), nil
}

// WaitRelay waits for the child pid, passing sigs on to it, and returns
// its exit status, 128+N for signal N.
func WaitRelay(pid int, sigs chan os.Signal) int {
	done := make(chan int, 1)
	go func() {
		code, _ := Reap(pid)
		done <- code
	}()
	for {
		select {
		case s := <-sigs:
			if sig, ok := s.(syscall.Signal); ok {
				unix.Kill(pid, sig)
			}
		case code := <-done:
			return code
		}
	}
}
