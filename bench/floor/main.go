// Command floor measures what the kernel alone costs for a broadcast on
// this machine: one small write to each of N TCP connections, from W
// threads, read by a client in another process, with no WebSocket, no
// relay and no Go scheduler work in between (raw write(2) on the sockets).
// The relay's broadcast latency cannot go below it: docs/performance.md.
//
//	go run ./bench/floor -conns 10000 -writers 2 -rounds 10
//
// The client side is this program started again (another process, as the
// load tester is), told so by the environment variable HERALD_FLOOR_CLIENT.
// Connections come from 127.0.0.2 up.
//
//	go run ./bench/floor -hops 2000
//
// measures the other floor, the one a lone message meets: the one-way hop
// of a small message between two processes whose threads are all parked
// (after an idle gap), and back to back. Herald's message path crosses five
// such hops (client, relay, Kafka, controller, relay, client).
package main

import (
	"bufio"
	"encoding/binary"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

const (
	msgSize   = 100
	clientEnv = "HERALD_FLOOR_CLIENT" // "address,connections": run the client side
	echoEnv   = "HERALD_FLOOR_ECHO"   // "address": run the echo side of -hops
)

func main() {
	conns := flag.Int("conns", 10000, "connections")
	writers := flag.Int("writers", runtime.NumCPU(), "threads writing, each to its share of the connections")
	rounds := flag.Int("rounds", 10, "broadcasts, one per -interval")
	interval := flag.Duration("interval", time.Second, "time between broadcasts")
	addr := flag.String("addr", "127.0.0.1:0", "listen address")
	hops := flag.Int("hops", 0, "instead of a broadcast: hand a small message to another process and back this many times, "+
		"after an idle -gap and back to back, and report the one-way hop (the wake-up cost every service boundary pays)")
	gap := flag.Duration("gap", 2*time.Millisecond, "idle time before each -hops round trip (lets every thread park)")
	flag.Parse()
	if v := os.Getenv(clientEnv); v != "" {
		clientMain(v)
	}
	if v := os.Getenv(echoEnv); v != "" {
		if err := runEcho(v); err != nil {
			fmt.Fprintln(os.Stderr, "floor echo:", err)
			os.Exit(1)
		}
		os.Exit(0)
	}
	if *hops > 0 {
		if err := runHops(os.Stdout, *hops, *gap); err != nil {
			fmt.Fprintln(os.Stderr, "floor:", err)
			os.Exit(1)
		}
		return
	}
	if err := runServer(os.Stdout, *addr, *conns, *writers, *rounds, *interval); err != nil {
		fmt.Fprintln(os.Stderr, "floor:", err)
		os.Exit(1)
	}
}

// clientMain runs the client side described by the environment and exits.
func clientMain(v string) {
	addr, count, _ := strings.Cut(v, ",")
	n, err := strconv.Atoi(count)
	if err == nil {
		err = runClient(addr, n)
	}
	fmt.Fprintln(os.Stderr, "floor client:", err)
	os.Exit(1)
}

func runServer(w io.Writer, addr string, n, writers, rounds int, interval time.Duration) error {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return err
	}
	defer ln.Close()
	cmd := exec.Command(os.Args[0])
	cmd.Env = append(os.Environ(), clientEnv+"="+ln.Addr().String()+","+strconv.Itoa(n))
	cmd.Stderr = os.Stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		return err
	}
	if err := cmd.Start(); err != nil {
		return err
	}
	defer func() { _ = cmd.Process.Kill(); _ = cmd.Wait() }()

	fds := make([]int, 0, n)
	for len(fds) < n {
		c, err := ln.Accept()
		if err != nil {
			return err
		}
		f, err := c.(*net.TCPConn).File() // a blocking dup: write(2) goes straight to the kernel
		if err != nil {
			return err
		}
		_ = c.Close()
		fds = append(fds, int(f.Fd()))
		defer f.Close()
	}
	reports := bufio.NewScanner(out)
	fmt.Fprintf(w, "%d connections, %d writer threads, %d-byte message, %d rounds (%s, %s/%s)\n",
		n, writers, msgSize, rounds, runtime.Version(), runtime.GOOS, runtime.GOARCH)
	var writeMS, lastMS []float64
	buf := make([]byte, msgSize)
	for r := 0; r < rounds; r++ {
		time.Sleep(interval)
		start := time.Now()
		binary.LittleEndian.PutUint64(buf, uint64(start.UnixNano()))
		var wg sync.WaitGroup
		var failed atomic.Int64
		per := (len(fds) + writers - 1) / writers
		for w := 0; w < writers; w++ {
			part := fds[min(w*per, len(fds)):min((w+1)*per, len(fds))]
			wg.Add(1)
			go func() {
				defer wg.Done()
				runtime.LockOSThread()
				for _, fd := range part {
					if k, err := syscall.Write(fd, buf); err != nil || k != msgSize {
						failed.Add(1)
					}
				}
			}()
		}
		wg.Wait()
		took := time.Since(start)
		if failed.Load() > 0 {
			return fmt.Errorf("round %d: %d writes failed", r, failed.Load())
		}
		if !reports.Scan() {
			return fmt.Errorf("client ended: %v", reports.Err())
		}
		last, err := strconv.ParseFloat(strings.TrimSpace(reports.Text()), 64)
		if err != nil {
			return fmt.Errorf("client report %q: %w", reports.Text(), err)
		}
		ms := float64(took.Microseconds()) / 1000
		writeMS, lastMS = append(writeMS, ms), append(lastMS, last)
		fmt.Fprintf(w, "round %2d: writes %6.1f ms (%5.2f thread-µs per write, %d threads), last read %6.1f ms after the first write\n",
			r+1, ms, ms*1000*float64(writers)/float64(n), writers, last)
	}
	slices.Sort(writeMS)
	slices.Sort(lastMS)
	fmt.Fprintf(w, "median: writes %.1f ms, last delivery %.1f ms; best: writes %.1f ms, last delivery %.1f ms\n",
		writeMS[len(writeMS)/2], lastMS[len(lastMS)/2], writeMS[0], lastMS[0])
	return nil
}

// runClient connects n connections and, for every round, prints how long
// after the round's first write its last connection read the message.
func runClient(addr string, n int) error {
	raddr, err := net.ResolveTCPAddr("tcp", addr)
	if err != nil {
		return err
	}
	var mu sync.Mutex
	got := map[int64]int{}      // round start → connections that read it
	latest := map[int64]int64{} // round start → latest read, ns after start
	for i := 0; i < n; i++ {
		laddr := &net.TCPAddr{IP: net.IPv4(127, 0, 0, byte(2+i/20000))}
		c, err := net.DialTCP("tcp", laddr, raddr)
		if err != nil {
			return fmt.Errorf("connection %d: %w", i, err)
		}
		go func() {
			buf := make([]byte, msgSize)
			for {
				if _, err := io.ReadFull(c, buf); err != nil {
					return
				}
				start := int64(binary.LittleEndian.Uint64(buf))
				lat := time.Now().UnixNano() - start
				mu.Lock()
				got[start]++
				latest[start] = max(latest[start], lat)
				if got[start] == n {
					fmt.Printf("%.3f\n", float64(latest[start])/1e6)
					delete(got, start)
					delete(latest, start)
				}
				mu.Unlock()
			}
		}()
	}
	select {}
}

// runHops measures n round trips of a 10-byte message to an echo process
// over loopback TCP, first each after an idle gap (every thread of both
// processes parked: what a lone message meets at each service boundary),
// then back to back, and prints the one-way hop (half the round trip).
func runHops(w io.Writer, n int, gap time.Duration) error {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	defer ln.Close()
	cmd := exec.Command(os.Args[0])
	cmd.Env = append(os.Environ(), echoEnv+"="+ln.Addr().String())
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		return err
	}
	defer func() { _ = cmd.Process.Kill(); _ = cmd.Wait() }()
	c, err := ln.Accept()
	if err != nil {
		return err
	}
	defer c.Close()
	buf := make([]byte, 10)
	round := func(wait time.Duration) ([]time.Duration, error) {
		rtt := make([]time.Duration, 0, n)
		for i := 0; i < n; i++ {
			if wait > 0 {
				time.Sleep(wait)
			}
			t := time.Now()
			if _, err := c.Write(buf); err != nil {
				return nil, err
			}
			if _, err := io.ReadFull(c, buf); err != nil {
				return nil, err
			}
			rtt = append(rtt, time.Since(t))
		}
		slices.Sort(rtt)
		return rtt, nil
	}
	fmt.Fprintf(w, "%d round trips to another process over loopback TCP (%s, %s/%s)\n", n, runtime.Version(), runtime.GOOS, runtime.GOARCH)
	for _, m := range []struct {
		name string
		gap  time.Duration
	}{{"after " + gap.String() + " idle", gap}, {"back to back", 0}} {
		rtt, err := round(m.gap)
		if err != nil {
			return err
		}
		fmt.Fprintf(w, "%-16s one-way hop p50 %6.1f µs, p90 %6.1f µs\n", m.name+":",
			float64(rtt[len(rtt)/2].Nanoseconds())/2e3, float64(rtt[len(rtt)*9/10].Nanoseconds())/2e3)
	}
	return nil
}

// runEcho is the other process of runHops: it writes back what it reads.
func runEcho(addr string) error {
	c, err := net.Dial("tcp", addr)
	if err != nil {
		return err
	}
	_, err = io.Copy(c, c)
	return err
}
