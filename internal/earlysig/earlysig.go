// Package earlysig holds the signals cimg-run relays to its app, and in a
// process started as the slim waiter (or as cimg-run exec) it takes them in
// from the first moments of the process's life.
//
// The waiter is exec'd while its app runs, so a stop request can reach it
// at any time; the Go runtime kills a process that gets SIGTERM, SIGINT,
// SIGHUP or SIGQUIT before anyone asked for them, and unblocks them at
// start even when they were blocked across execve. So the asking happens
// in this package's init, not in main: packages are initialised in import
// path order as soon as their imports are (Go 1.21+), this one imports
// only os/signal, and its path sorts before the rest of the program's.
package earlysig

import (
	"os"
	"os/signal"
	"syscall"
)

// ForwardedTTY are Forwarded and SIGWINCH: what a command with a terminal
// (cimg-run exec, cimg-oci's foreground run and exec) has relayed.
var ForwardedTTY = append(Forwarded[:len(Forwarded):len(Forwarded)], syscall.SIGWINCH)

// WaitArg as argv[1] makes cimg-run the slim waiter.
const WaitArg = "__cimg_wait__"

// Forwarded are the signals relayed to the app.
var Forwarded = []os.Signal{syscall.SIGTERM, syscall.SIGINT, syscall.SIGHUP, syscall.SIGQUIT, syscall.SIGUSR1, syscall.SIGUSR2}

// ExecArg as argv[1] is `cimg-run exec`.
const ExecArg = "exec"

// Waiter receives Forwarded from init on when this process is the slim
// waiter, and is nil otherwise.
var Waiter chan os.Signal

// Exec receives Forwarded and SIGWINCH when this process is `cimg-run
// exec`, and is nil otherwise. Here they are asked for by a goroutine that
// init starts, beside the rest of start-up: os/signal enables each signal
// by a round trip to a thread of its own, about a millisecond for these
// seven on the test VM, a quarter of an exec when it was done in line.
var Exec chan os.Signal

// ExecAsked is closed once Exec has been asked for (nil when Exec is).
// cimg-run exec forks its command only after that: a signal this process
// was started ignoring (nohup's SIGHUP, a background job's SIGINT) stays
// ignored across execve, while a caught one is reset to its default, so a
// command forked before the asking would not die of a relayed SIGHUP (CI
// saw TestExecRelaysSignals hang so, under load, started by nohup).
var ExecAsked chan struct{}

func init() {
	if len(os.Args) < 2 {
		return
	}
	switch os.Args[1] {
	case WaitArg:
		Waiter = make(chan os.Signal, 8)
		signal.Notify(Waiter, Forwarded...)
	case ExecArg:
		Exec = make(chan os.Signal, 8)
		ExecAsked = make(chan struct{})
		go func() {
			signal.Notify(Exec, ForwardedTTY...)
			close(ExecAsked)
		}()
	}
}
