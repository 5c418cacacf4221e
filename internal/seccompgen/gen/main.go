// Command gen writes the default seccomp profile for the arch it runs on
// as Go source to stdout (see package seccompgen).
package main

import (
	"fmt"
	"os"

	"cimg.dev/cimg/internal/seccompgen"
)

func main() {
	src, err := seccompgen.Source()
	if err != nil {
		fmt.Fprintln(os.Stderr, "seccompgen:", err)
		os.Exit(1)
	}
	os.Stdout.Write(src)
}
