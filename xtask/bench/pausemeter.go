// Pause meter for `cargo xtask bench`: how long the program stalls while it is
// traced or dumped. -n (default 100000) goroutines wait forever on a channel each;
// a meter goroutine sleeps 200µs in a loop and keeps the longest gap between two
// wake-ups beyond the sleep (a stall: the process stopped, or this goroutine could
// not run). Commands on stdin, one per line: "reset" forgets the longest gap;
// "max" prints it in µs; "pprof" writes the goroutine profile with debug=2 (what
// `curl /debug/pprof/goroutine?debug=2` does) and prints its duration and the
// longest gap during it, in µs.
package main

import (
	"bufio"
	"flag"
	"fmt"
	"io"
	"os"
	"runtime"
	"runtime/pprof"
	"sync/atomic"
	"time"
)

var (
	n       = flag.Int("n", 100000, "goroutines blocked forever")
	longest atomic.Int64
)

func meter() {
	last := time.Now()
	for {
		time.Sleep(200 * time.Microsecond)
		now := time.Now()
		gap := now.Sub(last) - 200*time.Microsecond
		for {
			old := longest.Load()
			if int64(gap) <= old || longest.CompareAndSwap(old, int64(gap)) {
				break
			}
		}
		last = now
	}
}

func main() {
	flag.Parse()
	for i := 0; i < *n; i++ {
		ch := make(chan int)
		go func() { <-ch }()
	}
	for runtime.NumGoroutine() < *n {
		time.Sleep(time.Millisecond)
	}
	go meter()
	time.Sleep(100 * time.Millisecond)
	fmt.Println("ready")
	in := bufio.NewScanner(os.Stdin)
	for in.Scan() {
		switch in.Text() {
		case "reset":
			longest.Store(0)
			fmt.Println("ok")
		case "max":
			fmt.Println(longest.Load() / 1000)
		case "pprof":
			longest.Store(0)
			start := time.Now()
			pprof.Lookup("goroutine").WriteTo(io.Discard, 2)
			took := time.Since(start)
			time.Sleep(5 * time.Millisecond)
			fmt.Println(took.Microseconds(), longest.Load()/1000)
		}
	}
}
