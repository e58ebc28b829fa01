// Package loadtest is `herald loadtest`: a load generator that speaks the
// Centrifugo client protocol v2 (JSON over WebSocket), so the same workload
// runs against Herald and against any Centrifugo-protocol server.
//
// Scenarios (idle, broadcast, chat, churn, recovery) run in phases: connect
// at a controlled rate, warm-up, a steady-state measurement window, drain.
// It measures connect/subscribe latency, publish-ack latency,
// publish-to-delivery latency (publishers embed {"t":unix_nanos} in the
// data), deliveries per second, lost / duplicated / out-of-order deliveries
// (by seq = publication offset, per channel per connection), and optionally
// the server's RSS and CPU from /proc (--server-pid) and its live Go heap
// per connection from GCs forced through its net/http/pprof endpoint
// (--server-pprof; liveheap.go). Results go to JSON (--out) and a
// self-contained HTML report (--html).
//
// Readers (--reader): a connection dials, connects and subscribes in its own
// goroutine (a 1 KiB bufio reader over its net.Conn). Once subscribed it
// reads in one of two ways. "epoll" (the default on Linux, reactor_linux.go):
// the goroutine hands a dup of its socket to one of --readers reactor
// threads (default one per four CPUs) and waits for the session's end; a
// reactor polls its sockets with its own level-triggered epoll set, reads
// each ready socket once into a shared 64 KiB buffer and handles the frames
// in place (reader.go: no allocation, only an incomplete frame's bytes are
// kept per connection), so a delivery costs one read(2) and no goroutine
// switch. "goroutine" (the only reader elsewhere): the goroutine keeps
// blocking in its bufio reader, which costs a second read(2) returning
// EAGAIN and a park/wake through Go's netpoller per delivery. Reconnects,
// recovery, drops and churn are the same in both: the session's goroutine
// gets the same error either way.
//
// Endpoints: --url takes several, comma-separated (the relays of one
// deployment, without a load balancer in front): the k-th subscriber of
// every channel dials endpoint k mod n, so each channel has members on
// every relay, as behind a balancer that spreads connections evenly.
//
// Resources: one goroutine per connection (blocked in a read or waiting for
// its reactor; frame buffers reused), so one process holds ~19,000
// connections; source addresses rotate over 127.0.0.2…9 for loopback
// targets. When a run needs more connections than --conns-per-process, the
// parent re-executes itself as worker processes (`herald loadtest --worker`,
// configuration on stdin, JSON progress and a final report on stdout) and
// merges their reports.
//
// Concurrency: a runner owns its connections' goroutines, its reactors, a
// publisher loop, a churn loop and a drop timer, and waits for all of them
// in finish. A connection's reader (its goroutine, or its reactor after the
// handover) owns its subscription and seq tracker; writers (publisher
// loop, pongs) serialize on the connection's mutex and, after the handover,
// write to the raw socket. A handed-over socket is closed only by its
// reactor: kill shuts it down, the reactor sees the end, closes it and
// reports to the session.
// Histograms are lock-free (atomic, sharded by connection).
package loadtest
