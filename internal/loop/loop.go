// Package loop attaches a file descriptor to a loop device, read-only and
// auto-clearing, allocating the device only through /dev/loop-control
// (never by guessing a free /dev/loopN, which races with other users).
//
// LOOP_CONFIGURE (Linux 5.8) does it in one ioctl; older kernels get
// LOOP_SET_FD followed by LOOP_SET_STATUS64. Another process may grab the
// same free device between GET_FREE and the attach (EBUSY): that retries,
// a bounded number of times.
package loop

import (
	"errors"
	"fmt"
	"os"
	"time"

	"golang.org/x/sys/unix"
)

// ErrNoDevice means no loop device could be allocated.
var ErrNoDevice = errors.New("no free loop device")

// Device is an attached loop device; it is cleared automatically when the
// last user (mount or open fd) goes away.
type Device struct {
	Path string
	Dev  uint64 // its dev_t
	f    *os.File
}

// Close drops this process's hold on the device; with autoclear the
// kernel detaches it once nothing else (a mount) uses it.
func (d *Device) Close() error { return d.f.Close() }

const maxTries = 16

// readAhead is the loop device's readahead in bytes.
const readAhead = 128 << 10

// LimitReadahead gives the block device open at fd the readahead an eMMC
// or SD card has (readAhead): loop devices start with the backing disk's,
// 2.5-4 MiB here, and squashfs reads an app's few scattered blocks. A cold
// curl launch at 10 MB/s read 12.3 MB and took 1171 ms with 4 MiB, 10.9
// MB and 1036 ms with 128 KiB (scripts/bench-cold.sh's disk). Call it
// again after the squashfs mount, which raises the readahead of the
// device it mounts to at least 1 MiB (Linux 6.18: 128 KiB set before the
// mount read 1024 after); a cold chrooted `python3 -c pass` then read 3.82
// MB of its image instead of 4.08. Best effort: a device that refuses
// still works.
func LimitReadahead(fd uintptr) {
	unix.IoctlSetInt(int(fd), unix.BLKRASET, readAhead/512)
}

// LimitReadahead limits the device's readahead (see the function).
func (d *Device) LimitReadahead() { LimitReadahead(d.f.Fd()) }

// Attach binds [offset, offset+size) of the file behind fd to a new loop
// device, read-only and autoclear. Buffered, on purpose: with direct I/O
// (LO_FLAGS_DIRECT_IO) a cold curl launch from the mount cache took 0.957x
// the time on this VM's fast disk, but at 10 MB/s (scripts/bench-cold.sh)
// it read 11.31 MB instead of 10.78 and went from 1.04x to 1.11x the
// private mount's time: the image file's own readahead, which overlaps
// the next block's read with this one's decompression, was gone
// (2026-12-04).
func Attach(fd uintptr, offset, size int64) (*Device, error) {
	ctl, err := os.OpenFile("/dev/loop-control", os.O_RDWR|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("open /dev/loop-control: %w (is the loop module loaded? modprobe loop)", err)
	}
	defer ctl.Close()
	for try := 0; try < maxTries; try++ {
		n, err := unix.IoctlRetInt(int(ctl.Fd()), unix.LOOP_CTL_GET_FREE)
		if err != nil {
			if errors.Is(err, unix.ENOSPC) || errors.Is(err, unix.ENODEV) {
				return nil, fmt.Errorf("%w: loop devices exhausted (raise max_loop, or free some with losetup -D)", ErrNoDevice)
			}
			return nil, fmt.Errorf("LOOP_CTL_GET_FREE: %w", err)
		}
		path := fmt.Sprintf("/dev/loop%d", n)
		dev, err := openNode(path, n)
		if err != nil {
			return nil, err
		}
		err = configure(int(dev.Fd()), int(fd), offset, size)
		if err == nil {
			LimitReadahead(dev.Fd())
			var st unix.Stat_t
			unix.Fstat(int(dev.Fd()), &st)
			return &Device{Path: path, Dev: st.Rdev, f: dev}, nil
		}
		dev.Close()
		if errors.Is(err, unix.EBUSY) {
			continue // taken between GET_FREE and our attach
		}
		return nil, fmt.Errorf("attach %s: %w", path, err)
	}
	return nil, fmt.Errorf("%w: every free device was taken by someone else %d times in a row", ErrNoDevice, maxTries)
}

func configure(dev, fd int, offset, size int64) error {
	info := unix.LoopInfo64{
		Offset:    uint64(offset),
		Sizelimit: uint64(size),
		Flags:     unix.LO_FLAGS_READ_ONLY | unix.LO_FLAGS_AUTOCLEAR,
	}
	err := unix.IoctlLoopConfigure(dev, &unix.LoopConfig{Fd: uint32(fd), Info: info})
	if err == nil || !(errors.Is(err, unix.EINVAL) || errors.Is(err, unix.ENOTTY)) {
		return err
	}
	// Kernels before 5.8: two steps. A failure between them leaves an
	// attached device, so it is detached again.
	if err := unix.IoctlSetInt(dev, unix.LOOP_SET_FD, fd); err != nil {
		return err
	}
	if err := unix.IoctlLoopSetStatus64(dev, &info); err != nil {
		unix.IoctlSetInt(dev, unix.LOOP_CLR_FD, 0)
		return err
	}
	return nil
}

// openNode opens loop device n's node. udev (or devtmpfs) makes it when
// LOOP_CTL_GET_FREE adds the device; where nothing does (a container's
// /dev, a device without udev), it is made here after a short wait, as a
// block node 7:n.
func openNode(path string, n int) (*os.File, error) {
	for wait := 0; wait < 20; wait++ {
		dev, err := os.OpenFile(path, os.O_RDONLY|unix.O_CLOEXEC, 0)
		if !errors.Is(err, os.ErrNotExist) {
			if err != nil {
				return nil, fmt.Errorf("open %s: %w", path, err)
			}
			return dev, nil
		}
		time.Sleep(time.Millisecond)
	}
	if err := unix.Mknod(path, unix.S_IFBLK|0o600, int(unix.Mkdev(7, uint32(n)))); err != nil && !errors.Is(err, unix.EEXIST) {
		return nil, fmt.Errorf("%s does not exist and could not be made (no udev or devtmpfs on /dev?): %w", path, err)
	}
	dev, err := os.OpenFile(path, os.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("open %s: %w", path, err)
	}
	return dev, nil
}
