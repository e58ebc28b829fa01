package relay

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"time"

	"github.com/herald-chat/herald/internal/protocol"
	heraldv1 "github.com/herald-chat/herald/proto/herald/v1"
)

// historyPage is the management API's answer to
// GET /v1/channels/{channel}/messages.
type historyPage struct {
	Messages []struct {
		Seq    uint64          `json:"seq"`
		Sender string          `json:"sender"`
		Info   json.RawMessage `json:"info"`
		Data   json.RawMessage `json:"data"`
	} `json:"messages"`
}

// historyGrantTTL bounds the grant sent with one history request; it only
// has to outlive the request (and some clock skew with management).
const historyGrantTTL = time.Minute

var httpClient = &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 16}}

// history serves a history command of user, whom the caller has authorised
// for the channel: the channel position from the router (or the owner), the
// publications from management, asked with a grant for this channel only.
// Runs on the worker pool.
func (s *Server) history(user string, req *protocol.HistoryRequest) (*protocol.HistoryResult, *protocol.Error) {
	ctx, cancel := context.WithTimeout(s.bg, s.cfg.RPCTimeout)
	defer cancel()
	epoch, top, ok := s.router.position(req.Channel)
	if !ok {
		resp, err := s.links.recover(ctx, &heraldv1.RecoverRequest{Channel: req.Channel})
		if err != nil {
			s.log.Warn("history position failed", "err", err)
			return nil, protocol.ErrInternal
		}
		epoch, top = resp.GetEpoch(), resp.GetOffset()
	}
	res := &protocol.HistoryResult{Epoch: epoch, Offset: top}
	if req.Since != nil && req.Since.Epoch != "" && req.Since.Epoch != epoch {
		return nil, protocol.ErrUnrecoverablePosition
	}
	if req.Limit == 0 {
		return res, nil
	}
	q := url.Values{}
	if req.Limit > 0 {
		q.Set("limit", strconv.Itoa(int(req.Limit)))
	}
	if req.Since != nil {
		if req.Reverse {
			q.Set("before", strconv.FormatUint(req.Since.Offset, 10))
		} else {
			q.Set("after", strconv.FormatUint(req.Since.Offset, 10))
		}
	}
	if !req.Reverse {
		q.Set("order", "asc")
	}
	u := s.cfg.ManagementURL + "/v1/channels/" + url.PathEscape(req.Channel) + "/messages?" + q.Encode()
	hreq, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return nil, protocol.ErrInternal
	}
	grant, err := s.verifier.HistoryGrant(user, req.Channel, historyGrantTTL)
	if err != nil {
		return nil, protocol.ErrInternal
	}
	hreq.Header.Set("Authorization", "Bearer "+grant)
	hresp, err := httpClient.Do(hreq)
	if err != nil {
		s.log.Warn("history request failed", "err", err)
		return nil, protocol.ErrInternal
	}
	defer hresp.Body.Close()
	switch {
	case hresp.StatusCode == http.StatusUnauthorized || hresp.StatusCode == http.StatusForbidden:
		return nil, protocol.ErrPermissionDenied
	case hresp.StatusCode == http.StatusNotFound:
		return res, nil
	case hresp.StatusCode != http.StatusOK:
		s.log.Warn("history request failed", "status", hresp.StatusCode)
		return nil, protocol.ErrInternal
	}
	var page historyPage
	if err := json.NewDecoder(io.LimitReader(hresp.Body, 64<<20)).Decode(&page); err != nil {
		s.log.Warn("history response undecodable", "err", fmt.Errorf("decoding management page: %w", err))
		return nil, protocol.ErrInternal
	}
	for _, m := range page.Messages {
		res.Publications = append(res.Publications, protocol.Publication{
			Data:   protocol.Raw(m.Data),
			Info:   &protocol.ClientInfo{User: m.Sender, ConnInfo: protocol.Raw(m.Info)},
			Offset: m.Seq,
		})
	}
	return res, nil
}
