package launcher

import (
	"fmt"

	"golang.org/x/sys/unix"
)

// lastCap is the highest capability number this code knows; higher ones
// the running kernel may have are dropped from the bounding set too.
const lastCap = 63

// dropCaps reduces the calling thread to the keep-list in all five sets.
// The order matters: the bounding set first (needs CAP_SETPCAP, which we
// still hold), then the identity switch (done by the caller between
// beforeSetuid and afterSetuid), then capset, then ambient.
func beforeSetuid(keep []int) error {
	k := keepSet(keep)
	for c := 0; c <= lastCap; c++ {
		if k[c] {
			continue
		}
		if err := unix.Prctl(unix.PR_CAPBSET_DROP, uintptr(c), 0, 0, 0); err != nil && err != unix.EINVAL {
			return fmt.Errorf("drop capability %d from the bounding set: %w", c, err)
		}
	}
	// Keep permitted caps across setuid to a non-root user; capset then
	// trims them to the keep-list.
	if err := unix.Prctl(unix.PR_SET_KEEPCAPS, 1, 0, 0, 0); err != nil {
		return fmt.Errorf("PR_SET_KEEPCAPS: %w", err)
	}
	return nil
}

func afterSetuid(keep []int) error {
	var data [2]unix.CapUserData
	for _, c := range keep {
		data[c/32].Effective |= 1 << (c % 32)
		data[c/32].Permitted |= 1 << (c % 32)
		data[c/32].Inheritable |= 1 << (c % 32)
	}
	hdr := unix.CapUserHeader{Version: unix.LINUX_CAPABILITY_VERSION_3}
	if err := unix.Capset(&hdr, &data[0]); err != nil {
		return fmt.Errorf("capset: %w", err)
	}
	// Check it took: a capset that "succeeded" with fewer bits is a bug
	// we would rather see here than in the app.
	var got [2]unix.CapUserData
	if err := unix.Capget(&hdr, &got[0]); err != nil {
		return fmt.Errorf("capget: %w", err)
	}
	if got != data {
		return fmt.Errorf("capset left %+v, want %+v", got, data)
	}
	if err := unix.Prctl(unix.PR_CAP_AMBIENT, unix.PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0); err != nil {
		return fmt.Errorf("clear ambient capabilities: %w", err)
	}
	// Ambient caps survive exec of a non-setuid program by a non-root
	// user; without them a kept capability would vanish at execve.
	for _, c := range keep {
		if err := unix.Prctl(unix.PR_CAP_AMBIENT, unix.PR_CAP_AMBIENT_RAISE, uintptr(c), 0, 0); err != nil {
			return fmt.Errorf("raise ambient capability %d: %w", c, err)
		}
	}
	return nil
}

func keepSet(keep []int) map[int]bool {
	k := map[int]bool{}
	for _, c := range keep {
		k[c] = true
	}
	return k
}
