// Package controller is Herald's controller service: it consumes the
// messages topic as a member of a Kafka consumer group, gives every record
// of the partitions it owns its per-channel seq, streams the resulting
// publications to the relays that asked for their channels (gRPC
// herald.v1.Router), persists them asynchronously in batches and serves
// Recover for recent gaps and Positions (the epoch and head seq of many
// channels in one call, for relays positioning new channels).
//
// # Ordering and density (docs/architecture.md, I1 and I2)
//
// The store's per-partition checkpoint, not Kafka's committed offsets, is
// the source of truth. When a partition is assigned, the controller loads
// its checkpoint and the channel heads as of that checkpoint
// (store.LoadPartition) and resumes fetching exactly there. Seqs are then a
// pure function of the log: seq = head+1 in offset order, and a channel's
// epoch is kept from its head or, for a new channel, derived from the message
// log's identity and the channel (epochFor: sha256 of the topic ID and the
// channel), so it is known before the channel's first message. A replay
// after a crash therefore yields the same seqs and epochs, and the store's
// idempotent writes absorb the duplicates.
//
// # Goroutines and their owners
//
//   - the fetch loops (fetch.go; run by the fetcher, owned by Run): one per
//     Kafka broker that leads an owned partition. kgo keeps the consumer
//     group but never fetches (the topic is paused in it); each loop sends
//     a Fetch for its broker's owned, unpaused partitions, waits for it,
//     then sequences and routes the response (and, while records of more
//     than one relay reach it and a response came back sooner than
//     FetchWindow, sleeps out the window before the next: producerMix,
//     fetchPace). One response at a time is
//     processed (fetcher.procMu), so exactly one goroutine at a time
//     assigns seqs and fills the streams' pending batches. The partition
//     callbacks (assign, revoke, lose) run on kgo's group goroutine: a
//     dropped partition leaves the owned set first, then dropParts waits for
//     the response being processed (fetcher.barrier), so none of its records
//     is sequenced afterwards; a response fetched for a partition since
//     dropped or reassigned is ignored (the partState it was fetched for is
//     no longer the owned one).
//   - the store writer (storeWriter, owned by Run): the only goroutine
//     writing batches; at each flush instant it writes every owned
//     partition's due batch with one store call. Each owned partition has a
//     queue (batchWriter: created on assignment, drained and unregistered
//     on revocation, loss and shutdown).
//   - per relay stream: the gRPC handler goroutine is the only sender on the
//     stream; a receive goroutine (tracked by Run, ends when the handler
//     returns) applies interest and presence deltas.
//   - the presence ticker (owned by Run): flushes join/leave events every
//     PresenceTick and drops relays gone for PresenceGrace.
//
// # Locks (acquire in this order, never the reverse)
//
//  1. fetcher.procMu: the fetch response being processed (dropParts takes
//     it only after releasing partsMu).
//  2. Server.partsMu: the set of owned partitions.
//  3. partState.mu: a partition's channel heads and recent-publication rings
//     (written by the fetch loops once per fetch, read by Recover).
//  4. interestShard.mu: one of 64 shards of the channel → relay streams map.
//
// Presence (presence.go) has its own order: presence.mu (the relays' sets;
// one delta applied at a time), then a presShard.mu, then presence.evMu
// (pending join/leave events, a leaf); the event flush takes evMu alone,
// then interestShard read locks, and queues to relay streams without
// blocking. Every controller holds every relay's members; only the owner
// of a channel answers Presence and emits its events (coalesced per
// PresenceTick, at most PresenceEvents per channel per tick).
//
// Server API commands (api.go): Control gives a command an id, queues it on
// every relay stream (relayStream.enqueue: never blocks, a full queue closes
// the stream as slow) and waits, bounded by ControlTimeout, for the replies
// the receive goroutines hand over by id (commands.mu, a leaf). Published
// waits, bounded by PublishedTimeout, until the fetch loop passed a record's
// offset. The idempotency window of a channel is loaded from the store by
// the fetch loop on the channel's first keyed record after an assignment,
// with partState.mu released around the read (the fetch loop is the only
// writer of a partition's state).
//
// Server.streamsMu (the set of relay streams) is a leaf; storeWriter.mu (the
// registered queues) is taken before batchWriter.mu, never after, and
// nothing else is acquired under batchWriter.mu apart from fetcher.mu
// (pause and resume), a leaf. No lock is held across store or network I/O
// except fetcher.procMu across the store read of a channel's idempotency
// window (the fetch loops would wait for it anyway).
//
// # Backpressure
//
// The live path never blocks: a relay stream whose bounded queue is full is
// closed with codes.ResourceExhausted ("slow relay"); the relay resubscribes
// and recovers. Persistence lags are bounded by MaxBacklog per partition:
// when a partition has that many unpersisted messages its fetching is paused
// until the writer has drained half of them.
package controller
