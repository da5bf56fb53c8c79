// A big heap for `cargo xtask bench`: -mb (default 512) MiB of 64-byte nodes, each
// pointing to the next and to a payload, reachable from a package-level root, and
// -leaks (default 1000) goroutines blocked on channels of their own (what the
// proof must find, reading the whole heap). Prints "ready" once built.
package main

import (
	"flag"
	"fmt"
	"runtime"
	"time"
)

type node struct {
	next    *node
	payload *[4]int64
	pad     [2]int64
}

var (
	mb    = flag.Int("mb", 512, "heap size in MiB")
	leaks = flag.Int("leaks", 1000, "goroutines leaked on private channels")
	root  *node
)

func main() {
	flag.Parse()
	count := *mb << 20 / (64 + 32)
	for i := 0; i < count; i++ {
		root = &node{next: root, payload: &[4]int64{int64(i)}}
	}
	for i := 0; i < *leaks; i++ {
		ch := make(chan int)
		go func() { ch <- 1 }()
	}
	runtime.GC()
	fmt.Println("ready")
	for {
		time.Sleep(time.Hour)
	}
}
