package launcher

import (
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"

	"golang.org/x/sys/unix"
)

// InitArg as argv[1] makes cimg-run the minimal init in front of an app
// that does not reap its children (manifest init = true, or --init).
const InitArg = "__cimg_init__"

// sealedSelf copies the running executable into a sealed memfd. The init
// runs from this copy, never from the host's cimg-run binary: a process in
// the container that opens /proc/1/exe reaches only the memfd, which no
// one can write (CVE-2019-5736).
func sealedSelf() (*os.File, error) {
	fd, err := unix.MemfdCreate("cimg-init", unix.MFD_CLOEXEC|unix.MFD_ALLOW_SEALING)
	if err != nil {
		return nil, fmt.Errorf("memfd_create: %w", err)
	}
	mem := os.NewFile(uintptr(fd), "cimg-init")
	self, err := os.Open("/proc/self/exe")
	if err != nil {
		mem.Close()
		return nil, err
	}
	defer self.Close()
	if _, err := io.Copy(mem, self); err != nil {
		mem.Close()
		return nil, fmt.Errorf("copy cimg-run into a memfd: %w", err)
	}
	seals := unix.F_SEAL_SEAL | unix.F_SEAL_SHRINK | unix.F_SEAL_GROW | unix.F_SEAL_WRITE
	if _, err := unix.FcntlInt(mem.Fd(), unix.F_ADD_SEALS, seals); err != nil {
		mem.Close()
		return nil, fmt.Errorf("seal the init memfd: %w", err)
	}
	return mem, nil
}

// InitMain is the init: it starts the app as its child, forwards the
// signals a supervisor sends, reaps every process that ends up orphaned
// in the namespace, and exits with the app's status once the app is gone.
func InitMain(argv []string) {
	sigs := make(chan os.Signal, 16)
	signal.Notify(sigs)
	app, err := os.StartProcess(argv[0], argv, &os.ProcAttr{Files: []*os.File{os.Stdin, os.Stdout, os.Stderr}, Env: os.Environ()})
	if err != nil {
		fmt.Fprintf(os.Stderr, "cimg-init: start %s: %v\n", argv[0], err)
		os.Exit(127)
	}
	for s := range sigs {
		if s == syscall.SIGCHLD {
			for {
				var ws syscall.WaitStatus
				pid, err := syscall.Wait4(-1, &ws, syscall.WNOHANG, nil)
				if pid <= 0 || err != nil {
					break
				}
				if pid == app.Pid {
					if ws.Signaled() {
						os.Exit(128 + int(ws.Signal()))
					}
					os.Exit(ws.ExitStatus())
				}
			}
			continue
		}
		if s == syscall.SIGURG {
			continue // the Go runtime's own preemption signal; not the app's
		}
		app.Signal(s)
	}
}
