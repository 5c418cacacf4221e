package main

import (
	"errors"

	"cimg.dev/cimg/launcher"
)

// execIn is `cimg-run exec [-t] [-e K=V] NAME -- CMD [ARGS...]`.
func execIn(args []string) (int, error) {
	fs, state := stateFlags("exec")
	var o launcher.ExecOptions
	fs.BoolVar(&o.TTY, "t", false, "a pseudo-terminal (for an interactive shell)")
	fs.Var((*repeated)(&o.Env), "e", "set `KEY=VALUE` in the command's environment (repeatable)")
	// Flags before NAME (as docker exec): what follows it is the command's.
	usage := errors.New("usage: cimg-run exec [-t] [-e KEY=VALUE] NAME [--] CMD [ARGS...]")
	if err := fs.Parse(args); err != nil {
		return 2, err
	}
	pos := fs.Args()
	if len(pos) < 2 {
		return 2, usage
	}
	o.Name, o.StateDir, o.Argv = pos[0], *state, pos[1:]
	if o.Argv[0] == "--" {
		o.Argv = o.Argv[1:]
	}
	if len(o.Argv) == 0 {
		return 2, usage
	}
	return launcher.Exec(o)
}
