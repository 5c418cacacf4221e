// hello is the demo app: a static program that shows what it sees from
// inside its image.
package main

import (
	"fmt"
	"os"
	"runtime"
)

func main() {
	host, _ := os.Hostname()
	wd, _ := os.Getwd()
	fmt.Printf("hello from a cimg image: %s/%s, pid %d, uid %d, host %q, cwd %s, args %q\n",
		runtime.GOOS, runtime.GOARCH, os.Getpid(), os.Getuid(), host, wd, os.Args[1:])
	if msg, err := os.ReadFile("/etc/hello/greeting.txt"); err == nil {
		fmt.Printf("greeting file says: %s", msg)
	}
}
