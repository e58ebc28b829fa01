// Package mongo is the production store.Store on MongoDB (mongo-driver v2).
// Its tests run the conformance suite against FerretDB v1 embedded in
// process (internal/engines/ferret).
//
// Collections: messages (unique index {channel, seq}), channels (_id = name,
// index {partition}), checkpoints (_id = partition) and leases (_id = name;
// {owner, expires}). Message payloads
// (data, info) are stored as BSON binary so they come back byte-exact.
//
// No transactions are used (FerretDB v1 has none). WriteBatch runs three
// idempotent steps: insert messages (unordered, duplicates ignored), move
// heads forward ($max, epoch only on insert), then upsert the checkpoint
// ($max). A crash between steps leaves messages or heads "ahead" of the
// checkpoint; LoadPartition therefore recomputes, for every channel whose
// stored head is at or past the checkpoint, its head as of the checkpoint
// from the messages, and a retry of the batch converges.
//
// Write concern and read preference come from the URI (e.g. w=majority).
//
// Concurrency: every method is safe for concurrent use (the driver's client
// is). WriteBatch for one partition must not run concurrently with another
// WriteBatch or LoadPartition of the same partition, which the controller
// guarantees (one batch writer per owned partition).
package mongo

import (
	"context"
	"errors"
	"fmt"
	"math"
	"time"

	"go.mongodb.org/mongo-driver/v2/bson"
	"go.mongodb.org/mongo-driver/v2/mongo"
	"go.mongodb.org/mongo-driver/v2/mongo/options"
	"go.mongodb.org/mongo-driver/v2/mongo/readpref"
	"go.mongodb.org/mongo-driver/v2/x/mongo/driver/topology"

	"github.com/herald-chat/herald/internal/store"
)

// Store is the MongoDB store.Store.
type Store struct {
	client      *mongo.Client
	db          *mongo.Database
	messages    *mongo.Collection
	channels    *mongo.Collection
	checkpoints *mongo.Collection
	leases      *mongo.Collection
}

var _ store.Store = (*Store)(nil)

type messageDoc struct {
	Channel     string    `bson:"channel"`
	Seq         int64     `bson:"seq"`
	ID          string    `bson:"id"`
	Sender      string    `bson:"sender"`
	Info        []byte    `bson:"info"`
	Data        []byte    `bson:"data"`
	ClientMsgID string    `bson:"client_msg_id,omitempty"`
	PublishedAt time.Time `bson:"published_at"`
	Partition   int32     `bson:"partition"`
	Offset      int64     `bson:"offset"`
}

type channelDoc struct {
	Name            string `bson:"_id"`
	Partition       int32  `bson:"partition"`
	Epoch           string `bson:"epoch"`
	LastSeq         int64  `bson:"last_seq"`
	LastOffset      int64  `bson:"last_offset"`
	ArchivedThrough int64  `bson:"archived_through"`
}

// Open connects to uri, selects database dbName and creates the indexes.
func Open(ctx context.Context, uri, dbName string) (*Store, error) {
	if dbName == "" {
		return nil, errors.New("opening mongo store: empty database name")
	}
	client, err := mongo.Connect(options.Client().ApplyURI(uri))
	if err != nil {
		return nil, fmt.Errorf("connecting to mongo: %w", wrap(err))
	}
	db := client.Database(dbName)
	s := &Store{
		client:      client,
		db:          db,
		messages:    db.Collection("messages"),
		channels:    db.Collection("channels"),
		checkpoints: db.Collection("checkpoints"),
		leases:      db.Collection("leases"),
	}
	if err := s.Ping(ctx); err != nil {
		_ = client.Disconnect(context.Background())
		return nil, err
	}
	if _, err := s.messages.Indexes().CreateOne(ctx, mongo.IndexModel{
		Keys:    bson.D{{Key: "channel", Value: 1}, {Key: "seq", Value: 1}},
		Options: options.Index().SetUnique(true).SetName("channel_seq"),
	}); err != nil {
		_ = client.Disconnect(context.Background())
		return nil, fmt.Errorf("creating index messages.channel_seq: %w", wrap(err))
	}
	if _, err := s.channels.Indexes().CreateOne(ctx, mongo.IndexModel{
		Keys:    bson.D{{Key: "partition", Value: 1}},
		Options: options.Index().SetName("partition"),
	}); err != nil {
		_ = client.Disconnect(context.Background())
		return nil, fmt.Errorf("creating index channels.partition: %w", wrap(err))
	}
	return s, nil
}

// wrap turns driver errors into plain errors; unreachable-backend errors
// wrap store.ErrUnavailable. Context cancellation stays detectable.
func wrap(err error) error {
	if err == nil {
		return nil
	}
	msg := err.Error()
	unavailable := errors.Is(err, mongo.ErrClientDisconnected) ||
		errors.As(err, &topology.ServerSelectionError{}) ||
		errors.As(err, &topology.ConnectionError{}) ||
		errors.As(err, &topology.WaitQueueTimeoutError{}) ||
		mongo.IsNetworkError(err)
	var ctxErr error
	switch {
	case errors.Is(err, context.Canceled):
		ctxErr = context.Canceled
	case errors.Is(err, context.DeadlineExceeded):
		ctxErr = context.DeadlineExceeded
	}
	switch {
	case unavailable && ctxErr != nil:
		return fmt.Errorf("%w: %w: %s", store.ErrUnavailable, ctxErr, msg)
	case unavailable:
		return fmt.Errorf("%w: %s", store.ErrUnavailable, msg)
	case ctxErr != nil:
		return fmt.Errorf("%w: %s", ctxErr, msg)
	}
	return errors.New(msg)
}

func clampSeq(v uint64) int64 {
	if v > math.MaxInt64 {
		return math.MaxInt64
	}
	return int64(v)
}

// onlyDuplicates reports whether err is a bulk error made only of
// duplicate-key write errors (no write-concern error).
func onlyDuplicates(err error) bool {
	var bwe mongo.BulkWriteException
	if !errors.As(err, &bwe) || bwe.WriteConcernError != nil || len(bwe.WriteErrors) == 0 {
		return false
	}
	for _, we := range bwe.WriteErrors {
		switch we.Code {
		case 11000, 11001, 12582:
		default:
			return false
		}
	}
	return true
}

// WriteBatch implements store.Store.
func (s *Store) WriteBatch(ctx context.Context, b store.Batch) error {
	if err := s.writeMessagesAndHeads(ctx, b); err != nil {
		return fmt.Errorf("writing batch of partition %d: %w", b.Partition, err)
	}
	_, err := s.checkpoints.UpdateOne(ctx,
		bson.D{{Key: "_id", Value: b.Partition}},
		bson.D{{Key: "$max", Value: bson.D{{Key: "next_offset", Value: b.NextOffset}}}},
		options.UpdateOne().SetUpsert(true))
	if err != nil {
		return fmt.Errorf("writing checkpoint of partition %d: %w", b.Partition, wrap(err))
	}
	return nil
}

// WriteBatches implements store.BatchesWriter: the messages of all batches
// in one InsertMany, their heads in one BulkWrite, then the checkpoints in
// one BulkWrite — three round trips for a flush of every partition instead
// of three per partition, and still messages, then heads, then checkpoint
// for each batch. On any error each batch is written alone (the writes are
// idempotent), so an error is reported for the batches it concerns.
func (s *Store) WriteBatches(ctx context.Context, bs []store.Batch) []error {
	errs := make([]error, len(bs))
	var all store.Batch
	ckpts := make([]mongo.WriteModel, len(bs))
	for i, b := range bs {
		all.Messages = append(all.Messages, b.Messages...)
		all.Heads = append(all.Heads, b.Heads...) // a channel belongs to one partition: no repeats
		ckpts[i] = mongo.NewUpdateOneModel().
			SetFilter(bson.D{{Key: "_id", Value: b.Partition}}).
			SetUpdate(bson.D{{Key: "$max", Value: bson.D{{Key: "next_offset", Value: b.NextOffset}}}}).
			SetUpsert(true)
	}
	err := s.writeMessagesAndHeads(ctx, all)
	if err == nil {
		_, err = s.checkpoints.BulkWrite(ctx, ckpts, options.BulkWrite().SetOrdered(false))
	}
	if err == nil {
		return errs
	}
	for i, b := range bs {
		errs[i] = s.WriteBatch(ctx, b)
	}
	return errs
}

// WriteMessagesAndHeadsOnly writes the messages and heads of b but not its
// checkpoint, as a crash between the steps of WriteBatch would. It is the
// storetest.CrashWriter test hook.
func (s *Store) WriteMessagesAndHeadsOnly(ctx context.Context, b store.Batch) error {
	return s.writeMessagesAndHeads(ctx, b)
}

func (s *Store) writeMessagesAndHeads(ctx context.Context, b store.Batch) error {
	if len(b.Messages) > 0 {
		docs := make([]any, len(b.Messages))
		for i := range b.Messages {
			m := &b.Messages[i]
			d := messageDoc{
				Channel: m.Channel, Seq: clampSeq(m.Seq), ID: m.ID, Sender: m.Sender,
				Data: m.Data, ClientMsgID: m.ClientMsgID, PublishedAt: m.PublishedAt,
				Partition: m.Partition, Offset: m.Offset,
			}
			if len(m.Info) > 0 {
				d.Info = m.Info
			}
			if d.Data == nil {
				d.Data = []byte{}
			}
			docs[i] = d
		}
		_, err := s.messages.InsertMany(ctx, docs, options.InsertMany().SetOrdered(false))
		if err != nil && !onlyDuplicates(err) {
			return fmt.Errorf("inserting messages: %w", wrap(err))
		}
	}
	if len(b.Heads) > 0 {
		models := make([]mongo.WriteModel, len(b.Heads))
		for i, h := range b.Heads {
			models[i] = mongo.NewUpdateOneModel().
				SetFilter(bson.D{{Key: "_id", Value: h.Channel}}).
				SetUpdate(bson.D{
					// Seq and offset grow together within a channel, so
					// $max on both keeps them paired.
					{Key: "$max", Value: bson.D{
						{Key: "last_seq", Value: clampSeq(h.LastSeq)},
						{Key: "last_offset", Value: h.Offset},
					}},
					{Key: "$setOnInsert", Value: bson.D{
						{Key: "partition", Value: h.Partition},
						{Key: "epoch", Value: h.Epoch},
						{Key: "archived_through", Value: int64(0)},
					}},
				}).
				SetUpsert(true)
		}
		_, err := s.channels.BulkWrite(ctx, models, options.BulkWrite().SetOrdered(false))
		if err != nil {
			// Two upserts of a new channel may race on _id; the retry
			// updates the now existing document.
			if !onlyDuplicates(err) {
				return fmt.Errorf("updating channel heads: %w", wrap(err))
			}
			if _, err = s.channels.BulkWrite(ctx, models, options.BulkWrite().SetOrdered(false)); err != nil {
				return fmt.Errorf("updating channel heads: %w", wrap(err))
			}
		}
	}
	return nil
}

// LoadPartition implements store.Store.
func (s *Store) LoadPartition(ctx context.Context, partition int32) (store.PartitionState, error) {
	st := store.PartitionState{Partition: partition, Heads: map[string]store.Head{}}
	var ck struct {
		NextOffset int64 `bson:"next_offset"`
	}
	err := s.checkpoints.FindOne(ctx, bson.D{{Key: "_id", Value: partition}}).Decode(&ck)
	switch {
	case err == nil:
		st.NextOffset = ck.NextOffset
	case errors.Is(err, mongo.ErrNoDocuments):
	default:
		return store.PartitionState{}, fmt.Errorf("reading checkpoint of partition %d: %w", partition, wrap(err))
	}
	cur, err := s.channels.Find(ctx, bson.D{{Key: "partition", Value: partition}})
	if err != nil {
		return store.PartitionState{}, fmt.Errorf("reading heads of partition %d: %w", partition, wrap(err))
	}
	var docs []channelDoc
	if err := cur.All(ctx, &docs); err != nil {
		return store.PartitionState{}, fmt.Errorf("reading heads of partition %d: %w", partition, wrap(err))
	}
	for _, d := range docs {
		h := store.Head{Channel: d.Name, Partition: partition, Epoch: d.Epoch, LastSeq: uint64(d.LastSeq), Offset: d.LastOffset}
		if d.LastOffset >= st.NextOffset {
			// Ahead of the checkpoint: recompute from the messages.
			h.LastSeq, h.Offset = 0, 0
			var m struct {
				Seq    int64 `bson:"seq"`
				Offset int64 `bson:"offset"`
			}
			err := s.messages.FindOne(ctx,
				bson.D{
					{Key: "channel", Value: d.Name},
					{Key: "partition", Value: partition},
					{Key: "offset", Value: bson.D{{Key: "$lt", Value: st.NextOffset}}},
				},
				options.FindOne().SetSort(bson.D{{Key: "seq", Value: -1}}).
					SetProjection(bson.D{{Key: "seq", Value: 1}, {Key: "offset", Value: 1}})).Decode(&m)
			switch {
			case err == nil:
				h.LastSeq, h.Offset = uint64(m.Seq), m.Offset
			case errors.Is(err, mongo.ErrNoDocuments):
			default:
				return store.PartitionState{}, fmt.Errorf("recomputing head of %q: %w", d.Name, wrap(err))
			}
			if uint64(d.ArchivedThrough) > h.LastSeq {
				h.LastSeq, h.Offset = uint64(d.ArchivedThrough), -1 // may be purged: offset unknown
			}
		}
		st.Heads[d.Name] = h
	}
	return st, nil
}

func (d channelDoc) channel() store.Channel {
	return store.Channel{Name: d.Name, Partition: d.Partition, Epoch: d.Epoch,
		LastSeq: uint64(d.LastSeq), ArchivedThrough: uint64(d.ArchivedThrough)}
}

// Channel implements store.Store.
func (s *Store) Channel(ctx context.Context, name string) (store.Channel, error) {
	var d channelDoc
	err := s.channels.FindOne(ctx, bson.D{{Key: "_id", Value: name}}).Decode(&d)
	if errors.Is(err, mongo.ErrNoDocuments) {
		return store.Channel{}, fmt.Errorf("channel %q: %w", name, store.ErrNotFound)
	}
	if err != nil {
		return store.Channel{}, fmt.Errorf("reading channel %q: %w", name, wrap(err))
	}
	return d.channel(), nil
}

// Channels implements store.Store.
func (s *Store) Channels(ctx context.Context, after string, limit int) ([]store.Channel, error) {
	opts := options.Find().SetSort(bson.D{{Key: "_id", Value: 1}})
	if limit > 0 {
		opts.SetLimit(int64(limit))
	}
	cur, err := s.channels.Find(ctx, bson.D{{Key: "_id", Value: bson.D{{Key: "$gt", Value: after}}}}, opts)
	if err != nil {
		return nil, fmt.Errorf("listing channels: %w", wrap(err))
	}
	var docs []channelDoc
	if err := cur.All(ctx, &docs); err != nil {
		return nil, fmt.Errorf("listing channels: %w", wrap(err))
	}
	out := make([]store.Channel, len(docs))
	for i, d := range docs {
		out[i] = d.channel()
	}
	return out, nil
}

// Messages implements store.Store.
func (s *Store) Messages(ctx context.Context, r store.Range) ([]store.Message, error) {
	from, to, empty := r.Bounds()
	if empty {
		return []store.Message{}, nil
	}
	dir := 1
	if r.Desc {
		dir = -1
	}
	opts := options.Find().SetSort(bson.D{{Key: "seq", Value: dir}})
	if r.Limit > 0 {
		opts.SetLimit(int64(r.Limit))
	}
	cur, err := s.messages.Find(ctx, bson.D{
		{Key: "channel", Value: r.Channel},
		{Key: "seq", Value: bson.D{{Key: "$gte", Value: int64(from)}, {Key: "$lte", Value: clampSeq(to)}}},
	}, opts)
	if err != nil {
		return nil, fmt.Errorf("reading messages of %q: %w", r.Channel, wrap(err))
	}
	var docs []messageDoc
	if err := cur.All(ctx, &docs); err != nil {
		return nil, fmt.Errorf("reading messages of %q: %w", r.Channel, wrap(err))
	}
	out := make([]store.Message, len(docs))
	for i, d := range docs {
		out[i] = store.Message{
			ID: d.ID, Channel: d.Channel, Seq: uint64(d.Seq), Sender: d.Sender, Data: d.Data,
			ClientMsgID: d.ClientMsgID, PublishedAt: d.PublishedAt.UTC(), Partition: d.Partition, Offset: d.Offset,
		}
		if len(d.Info) > 0 {
			out[i].Info = d.Info
		}
	}
	return out, nil
}

// SetArchivedThrough implements store.Store.
func (s *Store) SetArchivedThrough(ctx context.Context, channel string, seq uint64) error {
	res, err := s.channels.UpdateOne(ctx, bson.D{{Key: "_id", Value: channel}},
		bson.D{{Key: "$max", Value: bson.D{{Key: "archived_through", Value: clampSeq(seq)}}}})
	if err != nil {
		return fmt.Errorf("setting archived-through of %q: %w", channel, wrap(err))
	}
	if res.MatchedCount == 0 {
		return fmt.Errorf("channel %q: %w", channel, store.ErrNotFound)
	}
	return nil
}

// Purge implements store.Store.
func (s *Store) Purge(ctx context.Context, channel string, through uint64) (int64, error) {
	c, err := s.Channel(ctx, channel)
	if store.IsNotFound(err) {
		return 0, nil
	}
	if err != nil {
		return 0, fmt.Errorf("purging %q: %w", channel, err)
	}
	limit := min(through, c.ArchivedThrough)
	if limit == 0 {
		return 0, nil
	}
	res, err := s.messages.DeleteMany(ctx, bson.D{
		{Key: "channel", Value: channel},
		{Key: "seq", Value: bson.D{{Key: "$lte", Value: clampSeq(limit)}}},
	})
	if err != nil {
		return 0, fmt.Errorf("purging %q: %w", channel, wrap(err))
	}
	return res.DeletedCount, nil
}

type leaseDoc struct {
	Name    string    `bson:"_id"`
	Owner   string    `bson:"owner"`
	Expires time.Time `bson:"expires"`
}

// AcquireLease implements store.Store without transactions: a conditional
// update (same owner, or expired) of the lease document, else an insert,
// whose duplicate-key error means another owner holds it. Both are
// single-document operations, atomic on MongoDB.
func (s *Store) AcquireLease(ctx context.Context, name, owner string, ttl time.Duration) (store.Lease, bool, error) {
	if name == "" || owner == "" || ttl <= 0 {
		return store.Lease{}, false, fmt.Errorf("acquiring lease %q: name, owner and a positive ttl are required", name)
	}
	now := time.Now()
	expires := time.UnixMilli(now.Add(ttl).UnixMilli()).UTC()
	res, err := s.leases.UpdateOne(ctx,
		bson.D{
			{Key: "_id", Value: name},
			{Key: "$or", Value: bson.A{
				bson.D{{Key: "owner", Value: owner}},
				bson.D{{Key: "expires", Value: bson.D{{Key: "$lte", Value: now}}}},
			}},
		},
		bson.D{{Key: "$set", Value: bson.D{{Key: "owner", Value: owner}, {Key: "expires", Value: expires}}}})
	if err != nil {
		return store.Lease{}, false, fmt.Errorf("acquiring lease %q: %w", name, wrap(err))
	}
	mine := store.Lease{Name: name, Owner: owner, Expires: expires}
	if res.MatchedCount == 1 {
		return mine, true, nil
	}
	_, err = s.leases.InsertOne(ctx, leaseDoc{Name: name, Owner: owner, Expires: expires})
	if err == nil {
		return mine, true, nil
	}
	if !mongo.IsDuplicateKeyError(err) {
		return store.Lease{}, false, fmt.Errorf("acquiring lease %q: %w", name, wrap(err))
	}
	var d leaseDoc
	if err := s.leases.FindOne(ctx, bson.D{{Key: "_id", Value: name}}).Decode(&d); err != nil {
		return store.Lease{}, false, fmt.Errorf("reading lease %q: %w", name, wrap(err))
	}
	return store.Lease{Name: name, Owner: d.Owner, Expires: d.Expires.UTC()}, false, nil
}

// ReleaseLease implements store.Store.
func (s *Store) ReleaseLease(ctx context.Context, name, owner string) error {
	if _, err := s.leases.DeleteOne(ctx, bson.D{{Key: "_id", Value: name}, {Key: "owner", Value: owner}}); err != nil {
		return fmt.Errorf("releasing lease %q: %w", name, wrap(err))
	}
	return nil
}

// Ping implements store.Store.
func (s *Store) Ping(ctx context.Context) error {
	if err := s.client.Ping(ctx, readpref.Primary()); err != nil {
		return fmt.Errorf("pinging mongo: %w", wrap(err))
	}
	return nil
}

// Close implements store.Store.
func (s *Store) Close() error {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := s.client.Disconnect(ctx); err != nil && !errors.Is(err, mongo.ErrClientDisconnected) {
		return fmt.Errorf("closing mongo store: %w", wrap(err))
	}
	return nil
}
