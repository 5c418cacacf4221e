// Package dmverity sets up a read-only dm-verity device through the
// device-mapper ioctls (no dmsetup or veritysetup on the device): the
// kernel then checks every block of the image against the hash tree as it
// reads it, and a tampered block reads as EIO, never as bad data.
package dmverity

import (
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"strings"
	"unsafe"

	"golang.org/x/sys/unix"
)

// Params describe one verity device over a block device holding both the
// data and, after it, the hash tree (as a .cimg does).
type Params struct {
	Name       string // device-mapper name
	Device     uint64 // dev_t of the backing block device (a loop device)
	DataBlocks int64  // 4096-byte data blocks
	HashStart  int64  // first hash block, in 4096-byte blocks
	RootHash   []byte
	Salt       []byte
}

const control = "/dev/mapper/control"

// Available reports whether this kernel has device-mapper.
func Available() bool {
	_, err := os.Stat(control)
	return err == nil
}

// Device is a created verity device.
type Device struct {
	Name string
	Dev  uint64
}

// Path is a device node for it: devtmpfs makes /dev/dm-N.
func (d *Device) Path() string { return fmt.Sprintf("/dev/dm-%d", unix.Minor(d.Dev)) }

// Create makes, loads and resumes the verity device.
func Create(p Params) (*Device, error) {
	ctl, err := os.OpenFile(control, os.O_RDWR|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("open %s: %w (CONFIG_BLK_DEV_DM; modprobe dm-mod dm-verity)", control, err)
	}
	defer ctl.Close()
	hdr, err := ioctl(ctl, unix.DM_DEV_CREATE, p.Name, 0, 0, nil)
	if err != nil {
		return nil, fmt.Errorf("create device-mapper device %s: %w", p.Name, err)
	}
	dev := &Device{Name: p.Name, Dev: hdr.Dev}
	params := fmt.Sprintf("1 %d:%d %d:%d 4096 4096 %d %d sha256 %s %s",
		unix.Major(p.Device), unix.Minor(p.Device), unix.Major(p.Device), unix.Minor(p.Device),
		p.DataBlocks, p.HashStart, hex.EncodeToString(p.RootHash), saltHex(p.Salt))
	if _, err := ioctl(ctl, unix.DM_TABLE_LOAD, p.Name, unix.DM_READONLY_FLAG, 1, target(p.DataBlocks*8, "verity", params)); err != nil {
		Remove(p.Name, false)
		if errors.Is(err, unix.EINVAL) {
			err = fmt.Errorf("%w (does the kernel have dm-verity? CONFIG_DM_VERITY; modprobe dm-verity)", err)
		}
		return nil, fmt.Errorf("load verity table for %s: %w", p.Name, err)
	}
	if _, err := ioctl(ctl, unix.DM_DEV_SUSPEND, p.Name, 0, 0, nil); err != nil { // resume
		Remove(p.Name, false)
		return nil, fmt.Errorf("resume %s: %w", p.Name, err)
	}
	return dev, nil
}

// Remove removes the device; deferred, it goes once its last user (the
// mount) does, which is how a cached mount cleans up after itself.
func Remove(name string, deferred bool) error {
	ctl, err := os.OpenFile(control, os.O_RDWR|unix.O_CLOEXEC, 0)
	if err != nil {
		return err
	}
	defer ctl.Close()
	var flags uint32
	if deferred {
		flags = unix.DM_DEFERRED_REMOVE
	}
	_, err = ioctl(ctl, unix.DM_DEV_REMOVE, name, flags, 0, nil)
	return err
}

func saltHex(s []byte) string {
	if len(s) == 0 {
		return "-"
	}
	return hex.EncodeToString(s)
}

// target encodes one dm_target_spec followed by its parameter string,
// padded to 8 bytes.
func target(sectors int64, typ, params string) []byte {
	spec := unix.DmTargetSpec{Length: uint64(sectors)}
	copy(spec.Target_type[:], typ)
	size := int(unsafe.Sizeof(spec)) + len(params) + 1
	size = (size + 7) &^ 7
	spec.Next = uint32(size)
	b := make([]byte, size)
	*(*unix.DmTargetSpec)(unsafe.Pointer(&b[0])) = spec
	copy(b[unsafe.Sizeof(spec):], params)
	return b
}

// ioctl issues one device-mapper ioctl with a dm_ioctl header.
func ioctl(ctl *os.File, cmd uintptr, name string, flags uint32, targets uint32, payload []byte) (*unix.DmIoctl, error) {
	if len(name) >= unix.DM_NAME_LEN || strings.ContainsRune(name, '/') {
		return nil, fmt.Errorf("bad device-mapper name %q", name)
	}
	hdrSize := int(unsafe.Sizeof(unix.DmIoctl{}))
	buf := make([]uint64, (hdrSize+len(payload)+4096+7)/8) // 8-aligned; room for replies
	raw := unsafe.Slice((*byte)(unsafe.Pointer(&buf[0])), len(buf)*8)
	hdr := (*unix.DmIoctl)(unsafe.Pointer(&buf[0]))
	hdr.Version = [3]uint32{unix.DM_VERSION_MAJOR, 0, 0}
	hdr.Data_size = uint32(len(raw))
	hdr.Data_start = uint32(hdrSize)
	hdr.Flags = flags
	hdr.Target_count = targets
	copy(hdr.Name[:], name)
	copy(raw[hdrSize:], payload)
	if _, _, e := unix.Syscall(unix.SYS_IOCTL, ctl.Fd(), cmd, uintptr(unsafe.Pointer(&buf[0]))); e != 0 {
		return nil, e
	}
	out := *hdr
	return &out, nil
}
