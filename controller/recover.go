package controller

import (
	"context"
	"fmt"
	"time"

	"github.com/herald-chat/herald/internal/partition"
	"github.com/herald-chat/herald/internal/store"
	heraldv1 "github.com/herald-chat/herald/proto/herald/v1"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// Recover implements heraldv1.RouterServer for channels of owned partitions.
// It answers the channel's epoch and head seq, and, when limit > 0, the
// publications since+1..head from the in-memory ring, completed from the
// store for older seqs. recovered is true only when publications hold
// exactly since+1..head; on false no publications are returned.
func (s *Server) Recover(ctx context.Context, req *heraldv1.RecoverRequest) (*heraldv1.RecoverResponse, error) {
	resp, result, err := s.recover(ctx, req)
	s.m.recoverRequests.WithLabelValues(result).Inc()
	return resp, err
}

func (s *Server) recover(ctx context.Context, req *heraldv1.RecoverRequest) (*heraldv1.RecoverResponse, string, error) {
	ch := req.GetChannel()
	if ch == "" {
		return nil, "error", status.Error(codes.InvalidArgument, "channel is required")
	}
	p := partition.For(ch, s.numParts.Load())
	ps := s.part(p)
	if ps == nil {
		return nil, "not_owner", status.Errorf(codes.FailedPrecondition, "not owner of partition %d", p)
	}
	since, limit := req.GetSince(), uint64(req.GetLimit())

	ps.mu.RLock()
	caughtUp := ps.catchUpTo < 0 || ps.next >= ps.catchUpTo
	var (
		epoch  string
		head   uint64
		ring   []*heraldv1.Publication
		oldest uint64
	)
	epoch = epochFor(s.streamID, ch) // a channel without messages yet
	if cs := ps.chans[ch]; cs != nil && cs.epoch != "" {
		epoch, head = cs.epoch, cs.seq
		if limit > 0 && since < head && head-since <= limit {
			ring, oldest = cs.since(since)
		}
	}
	ps.mu.RUnlock()

	resp := &heraldv1.RecoverResponse{Epoch: epoch, Offset: head}
	switch {
	case limit == 0:
		resp.Recovered = true
		return resp, "position", nil
	case req.GetEpoch() != "" && req.GetEpoch() != epoch:
		return resp, "not_recovered", nil
	case since > head:
		if !caughtUp {
			// The relay saw seqs this controller has not re-sequenced yet.
			return nil, "error", status.Errorf(codes.Unavailable, "partition %d is catching up, retry", p)
		}
		return resp, "not_recovered", nil
	case since == head:
		resp.Recovered = true
		return resp, "recovered", nil
	case head-since > limit:
		return resp, "not_recovered", nil
	}

	from := since + 1
	if len(ring) > 0 && oldest <= from {
		resp.Publications, resp.Recovered = ring, true
		return resp, "recovered", nil
	}
	// Older than the ring: read the store. It may lag the live head, so the
	// ring covers the newest seqs and the store the older ones.
	to := head
	if len(ring) > 0 {
		to = oldest - 1
	}
	msgs, err := s.readPersisted(ctx, ps, store.Range{Channel: ch, From: from, To: to, Limit: int(to - from + 1)})
	if err != nil {
		s.m.storeErrors.Inc()
		return nil, "error", status.Error(codes.Unavailable, fmt.Sprintf("reading channel history: %v", err))
	}
	if uint64(len(msgs)) != to-from+1 {
		return resp, "not_recovered", nil // purged (archived) or otherwise out of reach
	}
	pubs := make([]*heraldv1.Publication, 0, int(head-since))
	for i, m := range msgs {
		if m.Seq != from+uint64(i) {
			return resp, "not_recovered", nil
		}
		pubs = append(pubs, &heraldv1.Publication{Channel: ch, Seq: m.Seq, Epoch: epoch, Message: protoMessage(m)})
	}
	resp.Publications, resp.Recovered = append(pubs, ring...), true
	return resp, "recovered", nil
}

func protoMessage(m store.Message) *heraldv1.Message {
	pm := &heraldv1.Message{
		Id:          m.ID,
		Channel:     m.Channel,
		Sender:      m.Sender,
		Info:        m.Info,
		Data:        m.Data,
		ClientMsgId: m.ClientMsgID,
	}
	if !m.PublishedAt.IsZero() {
		pm.PublishedAt = m.PublishedAt.UnixMilli()
	}
	return pm
}

// persistWait bounds how long Recover waits for the partition's batch writer
// to persist a range that fell out of the ring but is not stored yet.
const persistWait = time.Second

// readPersisted reads r from the store. Persistence is asynchronous, so a
// range just out of the ring may still sit in the partition's batch writer:
// while the writer has unpersisted messages, wait for it (bounded by
// persistWait) instead of answering "not recoverable" for messages that are
// about to be stored.
func (s *Server) readPersisted(ctx context.Context, ps *partState, r store.Range) ([]store.Message, error) {
	want := int(r.To - r.From + 1)
	deadline := time.Now().Add(persistWait)
	for {
		msgs, err := s.store.Messages(ctx, r)
		if err != nil || len(msgs) == want || ps.w == nil || ps.w.unpersisted() == 0 || time.Now().After(deadline) {
			return msgs, err
		}
		select {
		case <-ctx.Done():
			return msgs, nil
		case <-time.After(max(s.cfg.BatchInterval, 5*time.Millisecond)):
		}
	}
}

// maxPositions bounds the channels of one Positions request.
const maxPositions = 1024

// Positions implements heraldv1.RouterServer: each channel's epoch and head
// seq as Recover answers them with limit 0, owned=false for a channel of a
// partition this controller does not own (or an empty name). A relay
// positions the channels that just got their first local subscriber with
// one call per batch instead of one Recover each.
func (s *Server) Positions(_ context.Context, req *heraldv1.PositionsRequest) (*heraldv1.PositionsResponse, error) {
	chs := req.GetChannels()
	if len(chs) > maxPositions {
		return nil, status.Errorf(codes.InvalidArgument, "at most %d channels per Positions request, got %d", maxPositions, len(chs))
	}
	n := s.numParts.Load()
	all := make([]heraldv1.Position, len(chs)) // one allocation for the answers
	resp := &heraldv1.PositionsResponse{Positions: make([]*heraldv1.Position, len(chs))}
	owned := 0
	for i, ch := range chs {
		pos := &all[i]
		resp.Positions[i] = pos
		if ch == "" {
			continue
		}
		ps := s.part(partition.For(ch, n))
		if ps == nil {
			continue
		}
		owned++
		pos.Owned = true
		ps.mu.RLock()
		if cs := ps.chans[ch]; cs != nil && cs.epoch != "" {
			pos.Epoch, pos.Offset = cs.epoch, cs.seq
		}
		ps.mu.RUnlock()
		if pos.Epoch == "" {
			pos.Epoch = epochFor(s.streamID, ch) // a channel without messages yet
		}
	}
	s.m.positions.WithLabelValues("owned").Add(float64(owned))
	s.m.positions.WithLabelValues("not_owner").Add(float64(len(chs) - owned))
	return resp, nil
}
