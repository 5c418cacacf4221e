// Package sdscope registers a container's process with systemd as a
// transient scope unit, over systemd's D-Bus API: what cimg-oci's
// --systemd-cgroup asks for on a host whose init is systemd, so that
// systemd lists, accounts and stops the container as a unit of its own
// (systemctl status, systemd-cgls) instead of finding a cgroup it did not
// make. Only cimg-oci links it: cimg-run under systemd is a service's
// main process already and needs no D-Bus.
//
// It talks to systemd's private socket (/run/systemd/private, root's),
// so no D-Bus daemon has to run, and falls back to the system bus.
//
// Tested with systemd as PID 1 by cmd/cimg-oci's TestSystemdScope: this
// package alone has nothing to talk to.
package sdscope

import (
	"context"
	"errors"
	"fmt"
	"math"
	"os"
	"strings"
	"time"

	sd "github.com/coreos/go-systemd/v22/dbus"
	"github.com/godbus/dbus/v5"
)

// Running says whether systemd is this host's init (sd_booted(3)'s test).
func Running() bool {
	_, err := os.Stat("/run/systemd/system")
	return err == nil
}

// Limits are the resources systemd itself would otherwise set on the
// scope's cgroup when it starts the unit (its DefaultTasksMax=, and
// memory.limit_in_bytes or memory.max reset to "max" under the default
// memory accounting), and again whenever it re-applies the unit's
// properties (daemon-reload, set-property). Given as the unit's
// properties, systemd's writes are the container's own values; nil is no
// limit ("infinity"), which is what the config asked for.
type Limits struct {
	Memory *int64 // bytes
	Tasks  *int64
}

// timeout bounds every call: a systemd that does not answer must not
// hang create or delete.
const timeout = 30 * time.Second

// withSystemd runs f with a connection to systemd, within timeout.
func withSystemd(f func(ctx context.Context, c *sd.Conn) error) error {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	c, err := sd.NewSystemdConnectionContext(ctx)
	if err != nil {
		var err2 error
		if c, err2 = sd.NewSystemConnectionContext(ctx); err2 != nil {
			return fmt.Errorf("connect to systemd (its private socket: %v; the system bus: %w)", err, err2)
		}
	}
	defer c.Close()
	return f(ctx, c)
}

// Start registers pid as the transient scope unit in slice, delegated
// (the runtime manages the cgroup below it), and returns once systemd has
// started it: the scope's cgroup is then systemd's, with pid in it.
func Start(unit, slice, description string, pid int, l Limits) error {
	if !strings.HasSuffix(unit, ".scope") {
		return fmt.Errorf("systemd unit %q: a container's unit must be a .scope", unit)
	}
	limit := func(v *int64) dbus.Variant {
		if v == nil || *v < 0 {
			return dbus.MakeVariant(uint64(math.MaxUint64))
		}
		return dbus.MakeVariant(uint64(*v))
	}
	props := []sd.Property{
		sd.PropDescription(description),
		sd.PropSlice(slice),
		sd.PropPids(uint32(pid)),
		{Name: "Delegate", Value: dbus.MakeVariant(true)},
		// Not kept around once it failed (its processes killed by
		// someone else): the name is free for the next create.
		{Name: "CollectMode", Value: dbus.MakeVariant("inactive-or-failed")},
		{Name: "MemoryMax", Value: limit(l.Memory)},
		{Name: "TasksMax", Value: limit(l.Tasks)},
	}
	return withSystemd(func(ctx context.Context, c *sd.Conn) error {
		done := make(chan string, 1)
		if _, err := c.StartTransientUnitContext(ctx, unit, "fail", props, done); err != nil {
			return fmt.Errorf("systemd: start the transient unit %s: %w", unit, err)
		}
		select {
		case r := <-done:
			if r != "done" {
				return fmt.Errorf("systemd: start the transient unit %s: the job ended %q (journalctl -u %s)", unit, r, unit)
			}
			return nil
		case <-ctx.Done():
			return fmt.Errorf("systemd: start the transient unit %s: no answer in %s", unit, timeout)
		}
	})
}

// Stop stops the unit (systemd kills what is left in it and removes its
// cgroup) and returns once it is down. A unit systemd no longer knows
// (it ended with its processes and was collected) is not an error.
func Stop(unit string) error {
	return withSystemd(func(ctx context.Context, c *sd.Conn) error {
		done := make(chan string, 1)
		if _, err := c.StopUnitContext(ctx, unit, "replace", done); err != nil {
			var de dbus.Error
			if errors.As(err, &de) && de.Name == "org.freedesktop.systemd1.NoSuchUnit" {
				return nil
			}
			return fmt.Errorf("systemd: stop %s: %w", unit, err)
		}
		select {
		case <-done:
			return nil
		case <-ctx.Done():
			return fmt.Errorf("systemd: stop %s: no answer in %s", unit, timeout)
		}
	})
}
