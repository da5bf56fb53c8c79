// The soak target of `cargo xtask bench`: a program that checks its own results
// while gleak attaches and detaches (or is killed) again and again. In a loop,
// workers compute sums through deep recursion (their stacks grow and move) and
// pass them over channels; main checks every result. Each round's goroutines are
// new ones, so the probes fire all the time. Commands on stdin: "report" prints
// "rounds R errors E".
package main

import (
	"bufio"
	"fmt"
	"os"
	"sync/atomic"
)

var rounds, errors atomic.Int64

// sum adds 1..n through n nested calls: a stack that grows and moves.
func sum(n int, pad [16]int64) int64 {
	if n == 0 {
		return 0
	}
	pad[n%16] = int64(n)
	return pad[n%16] + sum(n-1, pad)
}

func round() {
	const workers, depth = 8, 3000
	results := make(chan int64, workers)
	for w := 0; w < workers; w++ {
		go func(w int) { results <- sum(depth+w, [16]int64{}) }(w)
	}
	for w := 0; w < workers; w++ {
		got := <-results
		// Each result is some depth+w: check it is one of them.
		ok := false
		for v := 0; v < workers; v++ {
			n := int64(depth + v)
			ok = ok || got == n*(n+1)/2
		}
		if !ok {
			errors.Add(1)
		}
	}
	rounds.Add(1)
}

func main() {
	go func() {
		for {
			round()
		}
	}()
	fmt.Println("ready")
	in := bufio.NewScanner(os.Stdin)
	for in.Scan() {
		if in.Text() == "report" {
			fmt.Printf("rounds %d errors %d\n", rounds.Load(), errors.Load())
		}
	}
}
