// Benchmark workload for `cargo xtask bench`. Reads commands on stdin, one per
// line: "spawn N" starts and joins N goroutines; "chan N" does N round trips on an
// unbuffered channel (each blocks in gopark); "spawnpar N P" spawns N goroutines
// from P spawners at once. Prints nanoseconds per operation.
package main

import (
	"bufio"
	"fmt"
	"os"
	"sync"
	"time"
)

func spawn(n int) time.Duration {
	var wg sync.WaitGroup
	start := time.Now()
	for i := 0; i < n; i++ {
		wg.Add(1)
		go func() { wg.Done() }()
		if i%1024 == 0 {
			wg.Wait() // keep the live set small, like a server
		}
	}
	wg.Wait()
	return time.Since(start)
}

func pingpong(n int) time.Duration {
	ping, pong := make(chan int), make(chan int)
	go func() {
		for v := range ping {
			pong <- v
		}
	}()
	start := time.Now()
	for i := 0; i < n; i++ {
		ping <- i
		<-pong
	}
	close(ping)
	return time.Since(start)
}

// spawnParallel runs spawn(n/p) on p goroutines at once: as many goroutine lives
// per second as the machine gives, for the event intake's throughput.
func spawnParallel(n, p int) time.Duration {
	var wg sync.WaitGroup
	start := time.Now()
	for i := 0; i < p; i++ {
		wg.Add(1)
		go func() { defer wg.Done(); spawn(n / p) }()
	}
	wg.Wait()
	return time.Since(start)
}

func main() {
	fmt.Println("ready")
	in := bufio.NewScanner(os.Stdin)
	for in.Scan() {
		var kind string
		var n, p int
		if _, err := fmt.Sscan(in.Text(), &kind, &n); err != nil || n <= 0 {
			fmt.Println("error")
			continue
		}
		var d time.Duration
		switch kind {
		case "spawn":
			d = spawn(n)
		case "chan":
			d = pingpong(n)
		case "spawnpar":
			fmt.Sscan(in.Text(), &kind, &n, &p)
			d = spawnParallel(n, max(p, 1))
		}
		fmt.Printf("%.1f\n", float64(d.Nanoseconds())/float64(n))
	}
}
