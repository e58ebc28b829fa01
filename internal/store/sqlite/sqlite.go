// Package sqlite is the embedded default store.Store, on the pure-Go
// modernc.org/sqlite driver.
//
// Layout: tables messages (PRIMARY KEY channel, seq), channels (name PK),
// checkpoints (partition PK) and leases (name PK); WAL journal, synchronous=NORMAL, busy_timeout;
// the writer's page cache holds up to 64 MiB.
//
// Concurrency: every method is safe for concurrent use. SQLite has a single
// writer, so all writes go through one dedicated connection guarded by a
// mutex (WriteBatch, SetArchivedThrough and Purge are serialized); reads use
// a separate pool of read-only connections and, thanks to WAL, never block
// on or block the writer. WriteBatch runs in one transaction, so a batch is
// atomic: its messages, heads and checkpoint are all stored or none is.
package sqlite

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"math"
	"net/url"
	"strings"
	"sync"
	"time"

	"github.com/herald-chat/herald/internal/store"

	_ "modernc.org/sqlite" // registers driver "sqlite"
)

const schema = `
CREATE TABLE IF NOT EXISTS messages (
	channel         TEXT    NOT NULL,
	seq             INTEGER NOT NULL,
	id              TEXT    NOT NULL,
	sender          TEXT    NOT NULL,
	info            BLOB,
	data            BLOB,
	client_msg_id   TEXT    NOT NULL,
	published_at_ms INTEGER NOT NULL,
	"partition"     INTEGER NOT NULL,
	"offset"        INTEGER NOT NULL,
	PRIMARY KEY (channel, seq)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS channels (
	name             TEXT    NOT NULL PRIMARY KEY,
	"partition"      INTEGER NOT NULL,
	epoch            TEXT    NOT NULL,
	last_seq         INTEGER NOT NULL,
	last_offset      INTEGER NOT NULL,
	archived_through INTEGER NOT NULL DEFAULT 0
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS channels_partition ON channels ("partition");
CREATE TABLE IF NOT EXISTS checkpoints (
	"partition"  INTEGER NOT NULL PRIMARY KEY,
	next_offset INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS leases (
	name       TEXT    NOT NULL PRIMARY KEY,
	owner      TEXT    NOT NULL,
	expires_ms INTEGER NOT NULL
) WITHOUT ROWID;
`

// insertChunk is the most rows one multi-row statement carries (10
// parameters per message row; SQLite allows 32766).
const insertChunk = 64

// Row shapes of the three multi-row upserts a transaction runs.
const (
	insertMessagesHead = `INSERT OR IGNORE INTO messages
	(channel, seq, id, sender, info, data, client_msg_id, published_at_ms, "partition", "offset") VALUES `
	insertMessagesRow = "(?,?,?,?,?,?,?,?,?,?)"
	upsertHeadsHead   = `INSERT INTO channels (name, "partition", epoch, last_seq, last_offset, archived_through) VALUES `
	upsertHeadsRow    = "(?,?,?,?,?,0)"
	upsertHeadsTail   = `
	ON CONFLICT (name) DO UPDATE SET
		last_offset = CASE WHEN excluded.last_seq > last_seq THEN excluded.last_offset ELSE last_offset END,
		last_seq = max(last_seq, excluded.last_seq)`
	upsertCheckpointsHead = `INSERT INTO checkpoints ("partition", next_offset) VALUES `
	upsertCheckpointsRow  = "(?,?)"
	upsertCheckpointsTail = `
	ON CONFLICT ("partition") DO UPDATE SET next_offset = max(next_offset, excluded.next_offset)`
)

// multiRowSQL is head, rows copies of row separated by commas, then tail.
func multiRowSQL(head, row, tail string, rows int) string {
	var b strings.Builder
	b.WriteString(head)
	for i := 0; i < rows; i++ {
		if i > 0 {
			b.WriteByte(',')
		}
		b.WriteString(row)
	}
	b.WriteString(tail)
	return b.String()
}

// multiRow is one statement prepared for 1, 2, 4 … insertChunk rows, so n
// rows go out in one execution per full chunk and per set bit of the rest.
// A group commit of a chat load holds a dozen batches of a message or two
// each, which took one execution per message, per head and per checkpoint
// (BenchmarkWriteBatchesChat, flush=20ms: 124 → 109 µs and 636 → 331
// allocations per 20-message call).
type multiRow struct {
	stmts []*sql.Stmt // stmts[k] carries 1<<k rows
}

func prepareMultiRow(ctx context.Context, db *sql.DB, head, row, tail string) (multiRow, error) {
	var m multiRow
	for rows := 1; rows <= insertChunk; rows *= 2 {
		st, err := db.PrepareContext(ctx, multiRowSQL(head, row, tail, rows))
		if err != nil {
			m.close()
			return multiRow{}, err
		}
		m.stmts = append(m.stmts, st)
	}
	return m, nil
}

// exec writes n rows in tx; add appends the parameters of row i to args.
// It returns args for reuse.
func (m *multiRow) exec(ctx context.Context, tx *sql.Tx, n int, args []any, add func(args []any, i int) []any) ([]any, error) {
	for i := 0; i < n; {
		k := len(m.stmts) - 1
		for 1<<k > n-i {
			k--
		}
		args = args[:0]
		for j := i; j < i+1<<k; j++ {
			args = add(args, j)
		}
		if _, err := tx.StmtContext(ctx, m.stmts[k]).ExecContext(ctx, args...); err != nil {
			return args, err
		}
		i += 1 << k
	}
	return args, nil
}

func (m *multiRow) close() {
	for _, st := range m.stmts {
		_ = st.Close()
	}
}

const (
	selectMessagesAsc = `SELECT channel, seq, id, sender, info, data, client_msg_id, published_at_ms, "partition", "offset"
	FROM messages WHERE channel = ? AND seq >= ? AND seq <= ? ORDER BY seq ASC LIMIT ?`
	selectMessagesDesc = `SELECT channel, seq, id, sender, info, data, client_msg_id, published_at_ms, "partition", "offset"
	FROM messages WHERE channel = ? AND seq >= ? AND seq <= ? ORDER BY seq DESC LIMIT ?`
)

// Store is the SQLite store.Store.
type Store struct {
	path string
	w    *sql.DB // exactly one connection: the writer
	r    *sql.DB // read-only pool

	wmu         sync.Mutex // the writer connection and the fields below it
	insertMsgs  multiRow
	upsertHeads multiRow
	upsertCkpts multiRow
	msgs        []store.Message // a transaction's rows, reused
	heads       []store.Head
	ckpts       []store.Batch // NextOffset and Partition only
	args        []any

	gmu    sync.Mutex // queued
	queued []*writeReq
}

var _ store.Store = (*Store)(nil)

func dsn(path string, readOnly bool) string {
	q := url.Values{}
	q.Add("_pragma", "busy_timeout(10000)")
	q.Add("_pragma", "journal_mode(WAL)")
	q.Add("_pragma", "synchronous(NORMAL)")
	if readOnly {
		q.Add("_pragma", "query_only(1)")
	} else {
		q.Set("_txlock", "immediate")
		// Checkpoint every ~40 MB of WAL instead of ~4 MB: a page that small
		// batches dirty again and again is copied to the database once per
		// checkpoint, and the default spent a third of the writer's time in
		// checkpoints (BenchmarkWriteBatchConcurrentSmall: 450 → 380 µs).
		q.Add("_pragma", "wal_autocheckpoint(10000)")
		// A page cache of up to 64 MiB instead of 2 MiB: a chat load touches
		// the last leaf of every active channel, a working set far above
		// 2 MiB after a few minutes, and every miss is a pread
		// (BenchmarkWriteBatchesChat: 2.6 → 0.7 reads per message). Only
		// pages in use count, so a small database costs nothing more.
		q.Add("_pragma", "cache_size(-65536)")
	}
	return "file:" + (&url.URL{Path: path}).EscapedPath() + "?" + q.Encode()
}

// Open opens (creating if needed) the database at path and its schema.
func Open(ctx context.Context, path string) (*Store, error) {
	if path == "" {
		return nil, errors.New("opening sqlite store: empty path")
	}
	w, err := sql.Open("sqlite", dsn(path, false))
	if err != nil {
		return nil, fmt.Errorf("opening sqlite store %s: %w", path, err)
	}
	w.SetMaxOpenConns(1)
	w.SetMaxIdleConns(1)
	w.SetConnMaxLifetime(0)
	w.SetConnMaxIdleTime(0)
	s := &Store{path: path, w: w}
	if _, err := w.ExecContext(ctx, schema); err != nil {
		_ = w.Close()
		return nil, fmt.Errorf("creating sqlite schema in %s: %w", path, wrap(err))
	}
	r, err := sql.Open("sqlite", dsn(path, true))
	if err != nil {
		_ = w.Close()
		return nil, fmt.Errorf("opening sqlite store %s: %w", path, err)
	}
	r.SetMaxOpenConns(4)
	r.SetMaxIdleConns(4)
	s.r = r
	for _, p := range []struct {
		dst             *multiRow
		head, row, tail string
	}{
		{&s.insertMsgs, insertMessagesHead, insertMessagesRow, ""},
		{&s.upsertHeads, upsertHeadsHead, upsertHeadsRow, upsertHeadsTail},
		{&s.upsertCkpts, upsertCheckpointsHead, upsertCheckpointsRow, upsertCheckpointsTail},
	} {
		if *p.dst, err = prepareMultiRow(ctx, w, p.head, p.row, p.tail); err != nil {
			_ = s.Close()
			return nil, fmt.Errorf("preparing sqlite statements: %w", wrap(err))
		}
	}
	if err := s.Ping(ctx); err != nil {
		_ = s.Close()
		return nil, err
	}
	return s, nil
}

// wrap maps errors that mean "the database cannot be used right now"
// (busy, locked, I/O, closed) to store.ErrUnavailable.
func wrap(err error) error {
	if err == nil {
		return nil
	}
	if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return err
	}
	msg := err.Error()
	if errors.Is(err, sql.ErrConnDone) || strings.Contains(msg, "database is closed") ||
		strings.Contains(msg, "SQLITE_BUSY") || strings.Contains(msg, "database is locked") ||
		strings.Contains(msg, "SQLITE_IOERR") || strings.Contains(msg, "disk I/O error") ||
		strings.Contains(msg, "SQLITE_CANTOPEN") || strings.Contains(msg, "SQLITE_FULL") {
		return fmt.Errorf("%w: %s", store.ErrUnavailable, msg)
	}
	return errors.New(msg) // never leak driver types
}

func nullable(b []byte) any {
	if len(b) == 0 {
		return nil
	}
	return b
}

func clampSeq(v uint64) int64 {
	if v > math.MaxInt64 {
		return math.MaxInt64
	}
	return int64(v)
}

// WriteBatch implements store.Store in one transaction.
func (s *Store) WriteBatch(ctx context.Context, b store.Batch) error {
	if err := s.write(ctx, b, true); err != nil {
		return fmt.Errorf("writing batch of partition %d: %w", b.Partition, err)
	}
	return nil
}

// WriteMessagesAndHeadsOnly writes the messages and heads of b but not its
// checkpoint, as a crash between the two steps of a non-transactional store
// would. It is the storetest.CrashWriter test hook.
func (s *Store) WriteMessagesAndHeadsOnly(ctx context.Context, b store.Batch) error {
	return s.write(ctx, b, false)
}

// writeReq is one WriteBatch waiting for a group commit.
type writeReq struct {
	ctx        context.Context
	b          store.Batch
	checkpoint bool
	done       chan error // buffered: the committer never blocks on it
}

// WriteBatches implements store.BatchesWriter: the batches go to the group
// commit together, so they are written in one transaction (unless it
// fails: then each batch alone, so one bad batch fails only itself).
func (s *Store) WriteBatches(ctx context.Context, bs []store.Batch) []error {
	reqs := make([]*writeReq, len(bs))
	for i, b := range bs {
		reqs[i] = &writeReq{ctx: ctx, b: b, checkpoint: true, done: make(chan error, 1)}
	}
	s.commit(reqs)
	errs := make([]error, len(bs))
	for i, r := range reqs {
		if err := <-r.done; err != nil {
			errs[i] = fmt.Errorf("writing batch of partition %d: %w", bs[i].Partition, err)
		}
	}
	return errs
}

// write stores b in a transaction, grouped with the batches that queued
// while the previous transaction committed (group commit).
func (s *Store) write(ctx context.Context, b store.Batch, checkpoint bool) error {
	req := &writeReq{ctx: ctx, b: b, checkpoint: checkpoint, done: make(chan error, 1)}
	s.commit([]*writeReq{req})
	return <-req.done
}

// commit queues reqs and, unless a committer before it takes them, commits
// everything queued in one transaction; every req gets its result on done.
// SQLite has one writer: committing each small batch alone spent most of
// the controller's CPU in commits and WAL checkpoints under a chat load. A
// group adds no wait (whoever finds the writer free commits what is queued
// at once); each batch stays atomic, and a failed group is retried batch
// by batch so one bad batch fails only its own caller.
func (s *Store) commit(reqs []*writeReq) {
	s.gmu.Lock()
	s.queued = append(s.queued, reqs...)
	s.gmu.Unlock()

	s.wmu.Lock()
	defer s.wmu.Unlock()
	// reqs were queued together, so a committer before us took all of them
	// (and answered them before releasing wmu) or none.
	if len(reqs[0].done) > 0 {
		return
	}
	s.gmu.Lock()
	group := s.queued
	s.queued = nil
	s.gmu.Unlock()
	live := group[:0:0]
	for _, r := range group {
		if err := r.ctx.Err(); err != nil {
			r.done <- wrap(err)
		} else {
			live = append(live, r)
		}
	}
	if len(live) == 0 {
		return
	}
	// Once started, a transaction is not canceled by any one caller: the
	// driver interrupts the connection on a canceled context, which would
	// fail the other batches of the group (and, racing, the next
	// statement). A caller that gives up meanwhile gets its error; its
	// batch is then stored whole or not at all, like any timeout.
	err := s.writeTx(context.WithoutCancel(live[0].ctx), live)
	if err != nil && len(live) > 1 {
		for _, r := range live {
			if cerr := r.ctx.Err(); cerr != nil {
				r.done <- wrap(cerr)
				continue
			}
			r.done <- s.writeTx(context.WithoutCancel(r.ctx), []*writeReq{r})
		}
		return
	}
	for _, r := range live {
		r.done <- err
	}
}

// writeTx writes the batches of reqs in one transaction: all their
// messages, then all heads, then the checkpoints, each kind in as few
// multi-row statements as its row count allows. s.wmu is held.
func (s *Store) writeTx(ctx context.Context, reqs []*writeReq) (err error) {
	s.msgs, s.heads, s.ckpts = s.msgs[:0], s.heads[:0], s.ckpts[:0]
	for _, r := range reqs {
		s.msgs = append(s.msgs, r.b.Messages...)
		s.heads = append(s.heads, r.b.Heads...)
		if r.checkpoint {
			s.ckpts = append(s.ckpts, store.Batch{Partition: r.b.Partition, NextOffset: r.b.NextOffset})
		}
	}
	// The rows copied above hold the callers' slices (data, info): drop
	// them once written so the reused buffers pin nothing. Each transaction
	// clears what it filled, so what lies beyond is already zero; args is
	// at most insertChunk rows long.
	defer func() {
		clear(s.msgs)
		clear(s.heads)
		clear(s.args[:cap(s.args)])
	}()
	tx, err := s.w.BeginTx(ctx, nil)
	if err != nil {
		return wrap(err)
	}
	defer func() {
		if err != nil {
			_ = tx.Rollback()
		}
	}()
	if s.args, err = s.insertMsgs.exec(ctx, tx, len(s.msgs), s.args, s.messageArgs); err != nil {
		return wrap(err)
	}
	if s.args, err = s.upsertHeads.exec(ctx, tx, len(s.heads), s.args, s.headArgs); err != nil {
		return wrap(err)
	}
	if s.args, err = s.upsertCkpts.exec(ctx, tx, len(s.ckpts), s.args, s.checkpointArgs); err != nil {
		return wrap(err)
	}
	return wrap(tx.Commit())
}

func (s *Store) messageArgs(args []any, i int) []any {
	m := &s.msgs[i]
	return append(args, m.Channel, clampSeq(m.Seq), m.ID, m.Sender, nullable(m.Info), m.Data,
		m.ClientMsgID, m.PublishedAt.UnixMilli(), int64(m.Partition), m.Offset)
}

func (s *Store) headArgs(args []any, i int) []any {
	h := &s.heads[i]
	return append(args, h.Channel, int64(h.Partition), h.Epoch, clampSeq(h.LastSeq), h.Offset)
}

func (s *Store) checkpointArgs(args []any, i int) []any {
	c := &s.ckpts[i]
	return append(args, int64(c.Partition), c.NextOffset)
}

// LoadPartition implements store.Store. It reads in one transaction, so the
// checkpoint and heads come from the same snapshot.
func (s *Store) LoadPartition(ctx context.Context, partition int32) (store.PartitionState, error) {
	st, err := s.loadPartition(ctx, partition)
	if err != nil {
		return store.PartitionState{}, fmt.Errorf("loading partition %d: %w", partition, wrap(err))
	}
	return st, nil
}

func (s *Store) loadPartition(ctx context.Context, partition int32) (store.PartitionState, error) {
	st := store.PartitionState{Partition: partition, Heads: map[string]store.Head{}}
	tx, err := s.r.BeginTx(ctx, nil)
	if err != nil {
		return st, err
	}
	defer func() { _ = tx.Rollback() }()
	err = tx.QueryRowContext(ctx, `SELECT next_offset FROM checkpoints WHERE "partition" = ?`, int64(partition)).Scan(&st.NextOffset)
	if err != nil && !errors.Is(err, sql.ErrNoRows) {
		return st, err
	}
	rows, err := tx.QueryContext(ctx, `SELECT name, epoch, last_seq, last_offset, archived_through FROM channels WHERE "partition" = ?`, int64(partition))
	if err != nil {
		return st, err
	}
	type ahead struct {
		h        store.Head
		archived uint64
	}
	var behind []ahead // heads past the checkpoint, recomputed below
	for rows.Next() {
		var (
			h        = store.Head{Partition: partition}
			seq      int64
			archived int64
		)
		if err := rows.Scan(&h.Channel, &h.Epoch, &seq, &h.Offset, &archived); err != nil {
			rows.Close()
			return st, err
		}
		h.LastSeq = uint64(seq)
		if h.Offset < st.NextOffset {
			st.Heads[h.Channel] = h
		} else {
			behind = append(behind, ahead{h, uint64(archived)})
		}
	}
	if err := rows.Close(); err != nil {
		return st, err
	}
	if err := rows.Err(); err != nil {
		return st, err
	}
	for _, a := range behind {
		h := a.h
		h.LastSeq, h.Offset = 0, 0
		var seq, off int64
		err := tx.QueryRowContext(ctx, `SELECT seq, "offset" FROM messages
			WHERE channel = ? AND "partition" = ? AND "offset" < ? ORDER BY seq DESC LIMIT 1`,
			h.Channel, int64(partition), st.NextOffset).Scan(&seq, &off)
		switch {
		case err == nil:
			h.LastSeq, h.Offset = uint64(seq), off
		case errors.Is(err, sql.ErrNoRows):
		default:
			return st, err
		}
		if a.archived > h.LastSeq {
			h.LastSeq, h.Offset = a.archived, -1 // its message may be purged: offset unknown
		}
		st.Heads[h.Channel] = h
	}
	return st, nil
}

// Channel implements store.Store.
func (s *Store) Channel(ctx context.Context, name string) (store.Channel, error) {
	c := store.Channel{Name: name}
	var seq, archived int64
	err := s.r.QueryRowContext(ctx, `SELECT "partition", epoch, last_seq, archived_through FROM channels WHERE name = ?`, name).
		Scan(&c.Partition, &c.Epoch, &seq, &archived)
	if errors.Is(err, sql.ErrNoRows) {
		return store.Channel{}, fmt.Errorf("channel %q: %w", name, store.ErrNotFound)
	}
	if err != nil {
		return store.Channel{}, fmt.Errorf("reading channel %q: %w", name, wrap(err))
	}
	c.LastSeq, c.ArchivedThrough = uint64(seq), uint64(archived)
	return c, nil
}

// Channels implements store.Store.
func (s *Store) Channels(ctx context.Context, after string, limit int) ([]store.Channel, error) {
	if limit <= 0 {
		limit = -1
	}
	rows, err := s.r.QueryContext(ctx, `SELECT name, "partition", epoch, last_seq, archived_through FROM channels
		WHERE name > ? ORDER BY name LIMIT ?`, after, limit)
	if err != nil {
		return nil, fmt.Errorf("listing channels: %w", wrap(err))
	}
	defer rows.Close()
	out := []store.Channel{}
	for rows.Next() {
		var (
			c             store.Channel
			seq, archived int64
		)
		if err := rows.Scan(&c.Name, &c.Partition, &c.Epoch, &seq, &archived); err != nil {
			return nil, fmt.Errorf("listing channels: %w", wrap(err))
		}
		c.LastSeq, c.ArchivedThrough = uint64(seq), uint64(archived)
		out = append(out, c)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("listing channels: %w", wrap(err))
	}
	return out, nil
}

// Messages implements store.Store.
func (s *Store) Messages(ctx context.Context, r store.Range) ([]store.Message, error) {
	from, to, empty := r.Bounds()
	if empty {
		return []store.Message{}, nil
	}
	limit := int64(-1)
	if r.Limit > 0 {
		limit = int64(r.Limit)
	}
	q := selectMessagesAsc
	if r.Desc {
		q = selectMessagesDesc
	}
	rows, err := s.r.QueryContext(ctx, q, r.Channel, int64(from), clampSeq(to), limit)
	if err != nil {
		return nil, fmt.Errorf("reading messages of %q: %w", r.Channel, wrap(err))
	}
	defer rows.Close()
	capHint := 16
	if r.Limit > 0 && r.Limit < 1024 {
		capHint = r.Limit
	}
	out := make([]store.Message, 0, capHint)
	for rows.Next() {
		var (
			m        store.Message
			seq, ms  int64
			part     int64
			info     []byte
			dataCopy []byte
		)
		if err := rows.Scan(&m.Channel, &seq, &m.ID, &m.Sender, &info, &dataCopy, &m.ClientMsgID, &ms, &part, &m.Offset); err != nil {
			return nil, fmt.Errorf("reading messages of %q: %w", r.Channel, wrap(err))
		}
		m.Seq, m.Partition = uint64(seq), int32(part)
		if len(info) > 0 {
			m.Info = info
		}
		m.Data = dataCopy
		m.PublishedAt = time.UnixMilli(ms).UTC()
		out = append(out, m)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("reading messages of %q: %w", r.Channel, wrap(err))
	}
	return out, nil
}

// SetArchivedThrough implements store.Store.
func (s *Store) SetArchivedThrough(ctx context.Context, channel string, seq uint64) error {
	s.wmu.Lock()
	defer s.wmu.Unlock()
	res, err := s.w.ExecContext(ctx, `UPDATE channels SET archived_through = max(archived_through, ?) WHERE name = ?`, clampSeq(seq), channel)
	if err != nil {
		return fmt.Errorf("setting archived-through of %q: %w", channel, wrap(err))
	}
	if n, err := res.RowsAffected(); err == nil && n == 0 {
		return fmt.Errorf("channel %q: %w", channel, store.ErrNotFound)
	}
	return nil
}

// Purge implements store.Store.
func (s *Store) Purge(ctx context.Context, channel string, through uint64) (int64, error) {
	s.wmu.Lock()
	defer s.wmu.Unlock()
	res, err := s.w.ExecContext(ctx, `DELETE FROM messages WHERE channel = ?1 AND seq <= min(?2,
		coalesce((SELECT archived_through FROM channels WHERE name = ?1), 0))`, channel, clampSeq(through))
	if err != nil {
		return 0, fmt.Errorf("purging %q: %w", channel, wrap(err))
	}
	n, err := res.RowsAffected()
	if err != nil {
		return 0, fmt.Errorf("purging %q: %w", channel, wrap(err))
	}
	return n, nil
}

// acquireLeaseSQL takes or renews a lease in one statement: it inserts,
// or overwrites a row held by the same owner or expired; RETURNING yields
// a row only when the caller got the lease.
const acquireLeaseSQL = `INSERT INTO leases (name, owner, expires_ms) VALUES (?1, ?2, ?3)
	ON CONFLICT (name) DO UPDATE SET owner = excluded.owner, expires_ms = excluded.expires_ms
	WHERE leases.owner = excluded.owner OR leases.expires_ms <= ?4
	RETURNING owner, expires_ms`

// AcquireLease implements store.Store.
func (s *Store) AcquireLease(ctx context.Context, name, owner string, ttl time.Duration) (store.Lease, bool, error) {
	if name == "" || owner == "" || ttl <= 0 {
		return store.Lease{}, false, fmt.Errorf("acquiring lease %q: name, owner and a positive ttl are required", name)
	}
	s.wmu.Lock()
	defer s.wmu.Unlock()
	now := time.Now()
	l := store.Lease{Name: name}
	var ms int64
	err := s.w.QueryRowContext(ctx, acquireLeaseSQL, name, owner, now.Add(ttl).UnixMilli(), now.UnixMilli()).Scan(&l.Owner, &ms)
	acquired := err == nil
	if errors.Is(err, sql.ErrNoRows) {
		// Held by another owner: report who.
		err = s.w.QueryRowContext(ctx, `SELECT owner, expires_ms FROM leases WHERE name = ?`, name).Scan(&l.Owner, &ms)
	}
	if err != nil {
		return store.Lease{}, false, fmt.Errorf("acquiring lease %q: %w", name, wrap(err))
	}
	l.Expires = time.UnixMilli(ms).UTC()
	return l, acquired, nil
}

// ReleaseLease implements store.Store.
func (s *Store) ReleaseLease(ctx context.Context, name, owner string) error {
	s.wmu.Lock()
	defer s.wmu.Unlock()
	if _, err := s.w.ExecContext(ctx, `DELETE FROM leases WHERE name = ? AND owner = ?`, name, owner); err != nil {
		return fmt.Errorf("releasing lease %q: %w", name, wrap(err))
	}
	return nil
}

// Ping implements store.Store.
func (s *Store) Ping(ctx context.Context) error {
	var one int
	if err := s.r.QueryRowContext(ctx, `SELECT 1`).Scan(&one); err != nil {
		return fmt.Errorf("pinging sqlite store: %w", wrap(err))
	}
	return nil
}

// Close implements store.Store.
func (s *Store) Close() error {
	var errs []error
	for _, m := range []*multiRow{&s.insertMsgs, &s.upsertHeads, &s.upsertCkpts} {
		m.close()
	}
	if s.r != nil {
		errs = append(errs, s.r.Close())
	}
	if s.w != nil {
		errs = append(errs, s.w.Close())
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("closing sqlite store: %w", wrap(err))
	}
	return nil
}
