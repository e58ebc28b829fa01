// Package rpcflow holds the HTTP/2 flow-control settings of the relay ↔
// controller gRPC connections, shared by both ends.
//
// grpc-go's default is a dynamic window: on every DATA frame that arrives
// while no estimate is in flight, the receiver sends a window update and a
// BDP ping, and the sender answers the ping. The relay stream carries a
// small publication batch every few milliseconds under a chat load, so that
// was a flow-control round trip per batch: measured with `go tool trace` at
// 1,000 msg/s, 258 window-update and 275 ping wake-ups a second in the
// controller and 292 + 292 in the relay — about a sixth of each process's
// goroutine wake-ups, with their reads and writes, for a window that never
// grew (the estimate only grows it when a window's worth is in flight).
// A static window sends one update per quarter window read and no pings.
package rpcflow

import "google.golang.org/grpc"

const (
	// StreamWindow is the per-stream receive window: room for four full
	// publication batches (the controller cuts them at 1 MiB) in flight,
	// far above what a LAN round trip needs at any rate measured. It is a
	// credit, not a buffer: nothing is allocated up front.
	StreamWindow = 4 << 20
	// ConnWindow is the per-connection window, above the stream window so
	// the unary calls (Positions, Recover, Presence, Control) sharing the
	// connection are not held behind a full stream.
	ConnWindow = 8 << 20
)

// DialOptions are the relay's (client) side.
func DialOptions() []grpc.DialOption {
	return []grpc.DialOption{
		grpc.WithStaticStreamWindowSize(StreamWindow),
		grpc.WithStaticConnWindowSize(ConnWindow),
	}
}

// ServerOptions are the controller's (server) side.
func ServerOptions() []grpc.ServerOption {
	return []grpc.ServerOption{
		grpc.StaticStreamWindowSize(StreamWindow),
		grpc.StaticConnWindowSize(ConnWindow),
	}
}
