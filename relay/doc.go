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
//     owner's Recover before later pushes (invariant I4). A channel that
//     gets its first local subscriber is positioned by a router worker:
//     interest add on every controller stream, then its epoch and last seq
//     from the owner. Workers take the new channels that queued meanwhile
//     together (up to maxSyncBatch): one interest message and one
//     Positions call per owner for a connect storm of personal channels,
//     not a round trip each; Recover per channel where Positions gives no
//     answer. Gap fills and re-checks have a queue of their own and are
//     taken one at a time, so the workers run them in parallel.
//   - Publications are encoded once per relay: the consecutive publications
//     of a channel in one controller batch become one pushGroup, a single
//     text frame holding their pushes separated by "\n" (the protocol's
//     several-messages-per-frame form), and every subscriber's writev shares
//     it; only a subscriber positioned inside the run gets a copy of the
//     rest. A loop keeps, per channel, a slice of its subscriptions (each
//     knows its index), so fan-out walks a slice and a subscriber costs 8
//     bytes there. A fan-out walks it backwards: handling a subscription
//     may remove it (swap with the last).
//   - A loop runs what other goroutines hand it in rounds (loop.drain):
//     tasks (replies, acks, timers) first, in order, then router deliveries
//     in order, to at most deliverBudget subscribers per round, then one
//     flush; when deliveries are left the yielder reschedules the drain so
//     the loop polls its sockets between rounds (a fan-out to 10,000
//     subscribers does not hold a publisher's command back). Groups of a
//     channel that queued up while the loop was busy are merged into one
//     frame first (loop.coalesce).
//   - An idle connection holds no buffer: gnet's inbound and outbound
//     buffers are released when empty, the iov slice is lent by the loop for
//     one event, a live subscription is 80 bytes (positioning state lives in
//     subInit until it goes live), and of the token the connection keeps the
//     user, the info, its server-side channels (one string, shared by every
//     connection with the same list) and its other grants (interned: shared
//     by every connection with the same caps); not the token itself (history
//     commands carry a grant the relay signs).
//   - Commands are decoded by a per-loop protocol.Decoder (hand-written
//     fast path for publish and the pong {}; its commands alias the frame
//     and are not kept). Commands pipelined behind connect wait, in order,
//     until the connect reply (connectOp.early).
//   - Controller links: when a stream (re)opens or ownership moves to it,
//     every synced channel of the partitions it gained is re-checked with
//     Recover(since=last), so publications streamed while no stream carried
//     them are broadcast at once. Partitions of a broken stream that no
//     controller claims within ControllerGrace are orphaned: their
//     subscribers are told (unsubscribe push 2500 for client-side, close
//     3010 for server-side subscriptions) and recover through the SDK.
//   - A stuck controller (overloaded, paused, a half-open connection) stalls
//     only its own link. Each link has a session goroutine (links.run:
//     opens the stream, sends Hello and the interest set, then receives
//     until it breaks; it may block in gRPC flow control) and a sender
//     goroutine per stream (started and waited for by the session; sends
//     the link's queued interest deltas in order; may block likewise).
//     Router workers and the janitor only queue deltas (link.enqueue, never
//     blocks) under router.imu, which keeps them ordered per link. A queue
//     holds at most ControllerQueue channels; when full, its deltas are
//     dropped and the stream is broken and reopened, and the new stream
//     starts with the whole interest set (only a new stream clears a
//     controller's interest, so dropped removes cannot be resent on the
//     old one); its partitions are re-checked once claimed again (above).
//     Positions goes to every owner of a sync batch at once (a goroutine
//     per owner, waited for) and each owner's channels are positioned as
//     soon as it answers. Every Positions and Recover call is bounded by
//     RPCTimeout; a controller that let one run out is not asked again
//     for RPCTimeout (errStalled, cleared by any message on its stream) and
//     a Recover that ran out is not retried, so a stuck controller's
//     subscribers get an error (100) within about RPCTimeout and
//     resubscribe, and it does not tie up the router workers or the pool.
//   - Who runs what, and may it block: gnet callbacks and loop tasks run on
//     their loop and never block; router.join/leave/position run there too
//     (shard lock only); router.handleBatch and recheck run on a link's
//     session goroutine and never block; syncBatch, fill, recheckOne run on
//     router workers and block only in controller RPCs, holding no lock;
//     client recover and history run on the worker pool (bounded by
//     RPCTimeout); franz-go produce callbacks hand acks to loops and never
//     block.
//   - Presence (presence.go): a subscription of a channel whose namespace
//     has presence (channelopt) is a member; its loop queues the change
//     (loop.presq) and reports the round's changes at once in a loop task
//     (flushPresence → Server.applyPresence): the relay's presenceTable is
//     updated and one PresenceDelta queued on every link (link.enqueue, the
//     same bounded queue as interest, so presence and interest keep their
//     order per link; a full queue reopens the stream, which starts with
//     the whole set). A session snapshots the table with the interest set
//     and sends it (full=true, chunks, an empty delta ending it) before its
//     sender starts. Join/leave events from the owner are posted to the
//     loops as itemPresence (one frame per channel run) like publications.
//     Channels without presence add nothing: the subscription's two flags
//     live in its padding.
//   - Server API commands (commands.go) arrive on a controller stream's
//     session goroutine; disconnect, unsubscribe, channels and info run on
//     every loop as a loop task each, and the last loop to finish queues
//     the CommandReply on the same link's sender; nothing blocks a loop or
//     the session.
//   - Locks, in acquisition order: router.imu or presenceTable.mu (never
//     both), then a shard mutex or a link's qmu (link.qmu takes shard locks
//     while a session snapshots the interest set; the session holds
//     presenceTable.mu, then qmu, then shard locks); router.qmu, links.mu,
//     loop.tmu are leaves. No lock is held across network I/O; none is
//     shared by two links' I/O.
//   - Limits and close codes: frame/message over MaxMessageSize (also
//     fragmented, also after inflating) 1009; protocol violations 1002;
//     invalid UTF-8 1007 (checked per fragment); subscriptions over
//     MaxSubscriptions error 106; publishes over PublishRate error 111, then
//     3013; upgrade not complete within HandshakeTimeout HTTP 408 (no
//     connect: 3502); no complete frame for IdleTimeout 3012 (3502 before
//     connect); Origin refused HTTP 403; token expired (plus
//     ExpiredCloseDelay) 3005, subscription token 3006; no pong 3012; slow
//     consumer 3008; drain 3001; publish not acked within PublishTimeout
//     error 100; a connection beyond MaxConnections (by default the
//     open-file limit minus a reserve: gnet stops its loops when accept
//     fails with EMFILE) HTTP 503 before its request is read.
//   - permessage-deflate (Compression) runs without context takeover in
//     both directions: one compressor and decompressor per loop, no state
//     per connection; a push is compressed at most once per loop.
//   - Recovery (client recover, gap fill, recheck) asks the owner for a
//     range with a limit above what is needed: the controller answers all of
//     since+1..head or nothing, and its head moves on meanwhile; a head past
//     the limit is asked for again with a larger one (up to 10,000). An
//     empty epoch (a channel positioned before its first publication) is
//     unknown, not different: the owner's is adopted.
//   - Every goroutine (router workers, janitor, ticker, controller links
//     with their senders and watchdog, worker pool, the optional pprof
//     server) is started and waited for by Run; a sync batch's Positions
//     goroutines by the worker that starts them.
package relay
