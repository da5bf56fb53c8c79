// Command demo is a small, deliberately leaky "order service" to try gleak on.
// It needs no network: a built-in generator plays the clients.
//
//	go build -o /tmp/gleak-demo ./examples/demo/main.go   # or: go run ./examples/demo/main.go
//	/tmp/gleak-demo &
//	sudo gleak attach -p $!
//
// It prints its stats every 5s (-stats) and takes -rate, -timeout and
// -max-leaks flags.
//
// Per request (default 100 req/s) the handler:
//
//   - asks a "pricing" goroutine for a quote over an UNBUFFERED channel and
//     gives up after -timeout. Pricing takes 2-18ms, the timeout is 10ms, so
//     about half the requests time out, and each of those leaves the pricing
//     goroutine blocked forever in "chan send" (marker LEAK:pricing). The fix is
//     a one-element buffer: make(chan quote, 1).
//   - queues a cache refresh for a fixed pool of 4 refreshers (marker OK:cache_pool),
//   - fires off a short-lived audit-log writer (marker OK:log_writer).
//
// Each request is served on its own goroutine, like net/http does
// (marker OK:request). After -max-leaks leaked goroutines the handler switches to
// the buffered channel so the demo cannot eat the machine.
package main

import (
	"flag"
	"fmt"
	"math/rand"
	"os"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

var (
	rate     = flag.Int("rate", 100, "requests per second")
	timeout  = flag.Duration("timeout", 10*time.Millisecond, "how long a request waits for its price")
	maxLeaks = flag.Int64("max-leaks", 100000, "stop leaking after this many pricing goroutines")
	every    = flag.Duration("stats", 5*time.Second, "print stats this often (0 = never)")
)

type order struct {
	id  int
	sku string
	qty int
}

type quote struct {
	cents int
}

type service struct {
	timeout  time.Duration
	maxLeaks int64

	refresh chan string // cache refresh jobs for the pool

	logMu sync.Mutex
	log   strings.Builder

	served, timedOut, leaked, refreshed atomic.Int64
}

func newService(timeout time.Duration, maxLeaks int64) *service {
	s := &service{timeout: timeout, maxLeaks: maxLeaks, refresh: make(chan string, 256)}
	for i := 0; i < 4; i++ {
		go s.cacheRefresher(i) // OK:cache_pool
	}
	return s
}

// price pretends to call a slow pricing backend.
func (s *service) price(o order) quote {
	time.Sleep(time.Duration(2+rand.Intn(17)) * time.Millisecond)
	return quote{cents: 999 * o.qty}
}

func (s *service) cacheRefresher(id int) {
	for sku := range s.refresh {
		_ = strings.ToUpper(sku) // "refresh" the cache entry
		s.refreshed.Add(1)
	}
}

func (s *service) writeLog(line string) {
	s.logMu.Lock()
	s.log.WriteString(line)
	if s.log.Len() > 1<<20 { // rotate
		s.log.Reset()
	}
	s.logMu.Unlock()
}

func (s *service) handle(o order) {
	buf := 0
	if s.leaked.Load() >= s.maxLeaks {
		buf = 1 // safety valve: the fixed version, once we have leaked enough
	}
	prices := make(chan quote, buf)      // BUG: buf is 0, so a late price can never be delivered
	go func() { prices <- s.price(o) }() // LEAK:pricing

	status := "ok"
	select {
	case q := <-prices:
		_ = q
	case <-time.After(s.timeout):
		status = "timeout"
		s.timedOut.Add(1)
		if buf == 0 {
			s.leaked.Add(1)
		}
	}
	s.served.Add(1)

	select {
	case s.refresh <- o.sku:
	default: // pool busy: skip this refresh
	}
	go s.writeLog(fmt.Sprintf("order=%d sku=%s qty=%d status=%s\n", o.id, o.sku, o.qty, status)) // OK:log_writer
}

func (s *service) stats(every time.Duration) {
	for range time.Tick(every) {
		fmt.Printf("served=%d timed_out=%d leaked=%d goroutines=%d\n",
			s.served.Load(), s.timedOut.Load(), s.leaked.Load(), runtime.NumGoroutine())
	}
}

func main() {
	flag.Parse()
	if *rate <= 0 {
		fmt.Fprintln(os.Stderr, "demo: -rate must be positive")
		os.Exit(2)
	}
	svc := newService(*timeout, *maxLeaks)
	if *every > 0 {
		go svc.stats(*every)
	}
	skus := []string{"apple", "banana", "cherry", "durian", "elderberry"}
	t := time.NewTicker(time.Second / time.Duration(*rate))
	fmt.Printf("demo order service running (pid %d); leaking one goroutine per timed-out request\n", os.Getpid())
	for id := 1; ; id++ {
		<-t.C
		o := order{id: id, sku: skus[id%len(skus)], qty: 1 + id%3}
		go svc.handle(o) // OK:request
	}
}
