// Package store is the persistence boundary of Herald: messages, channel
// heads and per-partition consumer checkpoints. Two implementations exist,
// store/sqlite (the embedded default) and store/mongo (production); both
// pass the conformance suite in store/storetest.
//
// Concurrency: every method is safe for concurrent use. The controller calls
// WriteBatch for one partition from one goroutine at a time (the partition's
// batch writer); different partitions may write concurrently.
package store

import (
	"context"
	"errors"
	"math"
	"time"
)

// ErrNotFound is returned when a channel is unknown to the store.
var ErrNotFound = errors.New("store: not found")

// ErrUnavailable wraps errors from an unreachable backend, so callers can
// answer 503 / retry instead of treating them as bad input.
var ErrUnavailable = errors.New("store: unavailable")

// IsNotFound reports whether err means "no such channel".
func IsNotFound(err error) bool { return errors.Is(err, ErrNotFound) }

// Message is one persisted publication.
type Message struct {
	ID          string
	Channel     string
	Seq         uint64
	Sender      string
	Info        []byte // raw JSON, may be nil
	Data        []byte // raw JSON
	ClientMsgID string
	PublishedAt time.Time
	// Partition and Offset locate the Kafka record the message came from.
	// They let a store rebuild channel heads as of a checkpoint.
	Partition int32
	Offset    int64
}

// Head is the position of a channel after a batch: its epoch and the seq of
// its newest message, and the Kafka offset of that message.
type Head struct {
	Channel   string
	Partition int32
	Epoch     string
	LastSeq   uint64
	Offset    int64
}

// Channel is the durable state of a channel.
type Channel struct {
	Name      string
	Partition int32
	Epoch     string
	LastSeq   uint64
	// ArchivedThrough is the highest seq whose chunk is in S3 and verified;
	// messages with seq <= ArchivedThrough may be purged from the store.
	ArchivedThrough uint64
}

// Batch is what a partition's batch writer persists in one call.
type Batch struct {
	Partition int32
	// NextOffset is the Kafka offset to resume consuming from once this batch
	// is durable (offset of the last record in the batch + 1).
	NextOffset int64
	Messages   []Message
	// Heads holds, for every channel touched by Messages, its head after the
	// batch.
	Heads []Head
}

// PartitionState is what a controller needs when it is assigned a partition:
// where to resume and the heads of the partition's channels as of that
// checkpoint (never "ahead" of it, even when a previous owner crashed
// between writing messages and writing the checkpoint).
type PartitionState struct {
	Partition  int32
	NextOffset int64 // 0 when the partition was never checkpointed
	Heads      map[string]Head
}

// Range selects messages of one channel by seq, inclusive bounds.
type Range struct {
	Channel string
	From    uint64 // inclusive, >= 1 (0 is treated as 1)
	To      uint64 // inclusive; 0 means no upper bound
	// Limit caps the number of messages (0 = no cap).
	Limit int
	// Desc returns newest first.
	Desc bool
}

// Bounds returns the inclusive seq bounds of r with its defaults applied
// (From 0 means 1, To 0 means no upper bound), clamped to what the stores
// can index (int64), and whether the range is empty.
func (r Range) Bounds() (from, to uint64, empty bool) {
	from, to = max(r.From, 1), r.To
	if to == 0 || to > math.MaxInt64 {
		to = math.MaxInt64
	}
	return from, to, from > to
}

// Lease is a named, expiring claim held by one owner, used to let only one
// of several processes do something at a time (the cacher's archive run).
type Lease struct {
	Name  string
	Owner string
	// Expires is when the lease lapses unless its owner renews it
	// (millisecond precision).
	Expires time.Time
}

// BatchesWriter is implemented by stores that write several partitions'
// batches together more cheaply than one by one (SQLite: one transaction
// instead of one per batch). WriteBatches returns one error per batch, nil
// for a written one; each batch has WriteBatch's guarantees on its own.
type BatchesWriter interface {
	WriteBatches(ctx context.Context, bs []Batch) []error
}

// Store is implemented by store/sqlite and store/mongo.
type Store interface {
	// WriteBatch persists the batch idempotently (a message whose
	// channel+seq exists is skipped), moves the heads forward (never back)
	// and then records the checkpoint. A retry after any failure converges.
	WriteBatch(ctx context.Context, b Batch) error
	// LoadPartition returns the checkpoint of a partition and its channel
	// heads as of that checkpoint.
	LoadPartition(ctx context.Context, partition int32) (PartitionState, error)
	// Channel returns a channel's durable state, or ErrNotFound.
	Channel(ctx context.Context, name string) (Channel, error)
	// Channels lists channels ordered by name, starting after `after`, at
	// most limit of them (limit <= 0: no cap).
	Channels(ctx context.Context, after string, limit int) ([]Channel, error)
	// Messages returns the stored messages of r, ordered by seq (descending
	// when r.Desc). Purged seqs are simply absent.
	Messages(ctx context.Context, r Range) ([]Message, error)
	// SetArchivedThrough moves a channel's archived-through seq forward
	// (never back). It returns ErrNotFound for an unknown channel.
	SetArchivedThrough(ctx context.Context, channel string, seq uint64) error
	// Purge deletes the messages of channel with seq <= through, but never
	// above the channel's archived-through seq. It returns how many were
	// deleted (0 for an unknown channel).
	Purge(ctx context.Context, channel string, through uint64) (int64, error)
	// AcquireLease takes the lease name for owner until now+ttl when it is
	// free, expired or already held by owner (so acquiring again renews
	// it). It returns the lease as it stands after the call and whether
	// owner holds it; when another owner holds an unexpired lease nothing
	// changes and acquired is false. Expiry uses the caller's clock, so the
	// clocks of competing processes must agree to well within ttl.
	//
	// Exclusion is as strong as the backend's single-document atomicity:
	// exact on SQLite, memstore and MongoDB, best effort on FerretDB v1
	// (which updates by query-then-write). Callers must stay safe if two
	// owners briefly overlap; the lease saves work, it does not guard data.
	AcquireLease(ctx context.Context, name, owner string, ttl time.Duration) (l Lease, acquired bool, err error)
	// ReleaseLease frees the lease name if owner holds it; otherwise (free,
	// expired and taken by another, unknown) it does nothing.
	ReleaseLease(ctx context.Context, name, owner string) error
	// Ping checks the backend is reachable.
	Ping(ctx context.Context) error
	Close() error
}
