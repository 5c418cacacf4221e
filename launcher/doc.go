// Package launcher is cimg-run's launch sequence, and nothing else. In
// launch order, across its files:
//
//  1. parent.go, Run: open the image (admit.go: root-owned file and
//     directories), footer and manifest, arch (admit.go: binfmt_misc
//     emulation), signatures, the operator's grants (grants.go), the plan
//     (plan.go: the manifest → every mount as data, ids, capabilities,
//     rlimits — the only place the manifest is read), volumes
//     (volumes.go); the launch thread spawned (start.go, spawn), which
//     makes the app's namespaces at once (root.go, enterNamespaces) while
//     Run goes on: the mount cache (internal/imagecache), a cold app's
//     files read ahead on the spare cores (warm.go, internal/warmup), the
//     cgroup (internal/cgroup).
//  2. start.go, start: prepare the child's raw system calls (forkPlan),
//     pipes and host files; then the launch thread goes on: it builds the
//     app's world (root.go, buildRoot: the plan's mounts through fds
//     opened below the new root, pivot_root, workdir and command checks
//     from exec.go), forks the child and releases it into its cgroup.
//  3. fork.go, forkChild: the child runs raw system calls only — cgroup
//     namespace, /proc with its masked and read-only paths, rlimits,
//     seccomp, capabilities, ids, the parent-death signal re-armed,
//     no_new_privs — up to execve, and reports a failure over a pipe
//     whose close on exec means success. On amd64 the child is a vfork
//     (vfork_amd64.s) wherever its parent has nothing to do before its
//     execve: it shares the launcher's memory until then. That is cimg-run
//     exec's child (join.go), and a launch's, unless it writes id maps
//     (user namespace), tells systemd the main pid, or holds (update).
//  4. wait.go: the supervisor relays signals and reaps; an app that
//     outlives its first 100 ms (up to a second while other launches are
//     starting) is watched by the slim waiter, a fresh
//     exec of cimg-run that only waits, relays and cleans up, to hold
//     less memory; sigdefer.go keeps SIGUSR1/2 pending across that exec
//     (a small handler per arch in sigdefer_$GOARCH.s).
//
// One Go runtime starts per launch: the child is a fork (or vfork) of
// the launcher, not a second cimg-run. init.go is the optional minimal
// init, run from a sealed memfd copy of cimg-run; doctor.go reports the
// kernel features used.
package launcher
