package store

import (
	"os"
	"syscall"
)

// Failpoints are the named places, before and after each step that
// changes the store, where a test can have a command killed
// (CIMG_STORE_FAILPOINT=NAME in its environment: the process SIGKILLs
// itself there, as a crash or kill -9 would end it).
var Failpoints = []string{
	"store-copy", "store-copied", "store-rename", "store-stored",
	"write-synced", "commit-before", "commit-after", "gc-remove",
}

// failAt is read once: the variable costs a lookup per command, not per
// step.
var failAt = os.Getenv("CIMG_STORE_FAILPOINT")

func failpoint(name string) {
	if failAt == name {
		syscall.Kill(os.Getpid(), syscall.SIGKILL)
		select {} // the signal is on its way
	}
}
