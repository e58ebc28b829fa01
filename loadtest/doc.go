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
// the server's RSS and CPU from /proc. Results go to JSON (--out) and a
// self-contained HTML report (--html).
//
// Resources: one reader goroutine per connection (blocking reads, a 1 KiB
// bufio reader, frame buffers reused), so one process holds ~19,000
// connections; source addresses rotate over 127.0.0.2…9 for loopback
// targets. When a run needs more connections than --conns-per-process, the
// parent re-executes itself as worker processes (`herald loadtest --worker`,
// configuration on stdin, JSON progress and a final report on stdout) and
// merges their reports.
//
// Concurrency: a runner owns its connections' goroutines, a publisher loop,
// a churn loop and a drop timer, and waits for all of them in finish. A
// connection's reader goroutine owns its subscription and seq tracker;
// writers (publisher loop, pongs) serialize on the connection's mutex.
// Histograms are lock-free (atomic, sharded by connection).
package loadtest
