// Package relay is Herald's WebSocket edge: it holds client connections on
// gnet event loops, speaks the Centrifugo client protocol v2 (JSON) on
// /connection/websocket, publishes client messages to Kafka and broadcasts
// what the controllers stream to it.
//
// Concurrency contract:
//   - A connection (client, subscription) and its loop's tables (loop) are
//     owned by one gnet event loop and touched without locks, only from gnet
//     callbacks and from tasks queued with loop.execute. Nothing blocks a
//     loop: controller RPCs and HTTP run on a bounded worker pool, Kafka acks
//     arrive in franz-go callbacks, and both hand their answers back as loop
//     tasks.
//   - Writes happen on the owning loop only: frames are queued per client
//     during one loop event and written with one writev at its end; a
//     client whose unsent bytes exceed OutboundCap is disconnected (3008).
//   - The router maps channels to per-loop subscriber counts in 64 shards,
//     one mutex each; no I/O and no loop task runs under a shard lock. For
//     every channel it keeps the epoch and the last seq broadcast, so a push
//     is never sent twice or out of order, and gaps are filled from the
//     owner's Recover before later pushes (invariant I4).
//   - A publication push is encoded once per relay into a complete
//     WebSocket frame that every subscriber's writev shares.
//   - Every goroutine (router workers, janitor, ticker, controller links,
//     worker pool) is started and waited for by Run.
package relay
