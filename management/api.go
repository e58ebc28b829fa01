package management

import (
	"bytes"
	"context"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	"unicode/utf8"

	"github.com/twmb/franz-go/pkg/kgo"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	"github.com/herald-chat/herald/internal/kafka"
	"github.com/herald-chat/herald/internal/store"
	heraldv1 "github.com/herald-chat/herald/proto/herald/v1"
)

// The server API: Centrifugo's server API (v5/v6) over HTTP JSON, so its
// client libraries work. Two forms:
//
//	POST /api/{method}   body: the params object
//	POST /api            body: {"method": "...", "params": {...}}
//
// Every answer is {"result": {...}} or {"error": {"code": N, "message":
// "..."}}. HTTP status: 401 for a missing or wrong key (code 101), 404 for
// an unknown method (104), 400 for a body that is not JSON or too large
// (107), otherwise 200 — also with an error (bad params 107, not available
// 108, unrecoverable position 112, internal 100).
//
// publish produces a herald.v1.Message to Kafka (key = channel, as relays
// do), waits for the ack, then asks every controller for the record's seq
// (Published; the owner answers), so the result carries offset and epoch.
// idempotency_key becomes the message's client_msg_id: the owner skips a
// record repeating one of the channel's keys within its idempotency window
// and answers the first one's seq. disconnect, unsubscribe, channels and
// info go to one controller (Control), which runs them on every relay that
// has a stream to it (all of them); the next controller is asked only when
// that call fails. presence and presence_stats ask the channel's owner.

// Centrifugo's API error codes.
const (
	codeInternal      = 100
	codeUnauthorized  = 101
	codeMethodUnknown = 104
	codeBadRequest    = 107
	codeNotAvailable  = 108
	codeUnrecoverable = 112
)

// apiError is the API's error object.
type apiError struct {
	Code    int    `json:"code"`
	Message string `json:"message"`
}

func (e *apiError) Error() string { return e.Message }

func badRequest(format string, args ...any) *apiError {
	return &apiError{Code: codeBadRequest, Message: "bad request: " + fmt.Sprintf(format, args...)}
}

var errNotAvailable = &apiError{Code: codeNotAvailable, Message: "not available"}

type apiReply struct {
	Result any       `json:"result,omitempty"`
	Error  *apiError `json:"error,omitempty"`
}

// apiMethods are the methods and their handlers.
var apiMethods = map[string]func(*serverAPI, context.Context, json.RawMessage) (any, *apiError){
	"publish":        (*serverAPI).publish,
	"broadcast":      (*serverAPI).broadcast,
	"presence":       (*serverAPI).presence,
	"presence_stats": (*serverAPI).presenceStats,
	"history":        (*serverAPI).history,
	"disconnect":     (*serverAPI).disconnect,
	"unsubscribe":    (*serverAPI).unsubscribe,
	"channels":       (*serverAPI).channels,
	"info":           (*serverAPI).info,
}

// APIMethods lists the server API's methods (docs, metrics, tests).
func APIMethods() []string {
	return []string{"publish", "broadcast", "presence", "presence_stats", "history", "disconnect", "unsubscribe", "channels", "info"}
}

// maxBroadcastChannels bounds the channels of one broadcast.
const maxBroadcastChannels = 1000

// serverAPI is the API's state: a Kafka producer and a client per
// controller.
type serverAPI struct {
	s     *Server
	kcl   *kgo.Client
	conns []*grpc.ClientConn
	ctrls []heraldv1.RouterClient
	next  atomic.Uint32 // the controller Control tries first
}

func newServerAPI(s *Server, kopts []kgo.Opt) (*serverAPI, error) {
	cfg := s.cfg
	a := &serverAPI{s: s}
	for _, addr := range cfg.Controllers {
		cc, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
		if err != nil {
			a.close()
			return nil, fmt.Errorf("server API: gRPC client for controller %s: %w", addr, err)
		}
		a.conns = append(a.conns, cc)
		a.ctrls = append(a.ctrls, heraldv1.NewRouterClient(cc))
	}
	opts := append(kafka.ProducerOpts(cfg.Brokers, cfg.Topic, cfg.APITimeout),
		kgo.ProducerBatchMaxBytes(int32(max(1<<20, 2*cfg.APIMaxData+4096))))
	kcl, err := kgo.NewClient(append(opts, kopts...)...)
	if err != nil {
		a.close()
		return nil, fmt.Errorf("server API: creating Kafka client: %w", err)
	}
	a.kcl = kcl
	return a, nil
}

func (a *serverAPI) close() {
	if a.kcl != nil {
		a.kcl.Close()
	}
	for _, cc := range a.conns {
		_ = cc.Close()
	}
}

// authorized checks the API key (constant time).
func (a *serverAPI) authorized(r *http.Request) bool {
	key := a.s.cfg.APIKey
	if key == "" {
		return a.s.cfg.APIOpen
	}
	got := r.Header.Get("X-API-Key")
	if h := r.Header.Get("Authorization"); got == "" && h != "" {
		scheme, k, ok := strings.Cut(h, " ")
		if ok && strings.EqualFold(scheme, "apikey") {
			got = strings.TrimSpace(k)
		}
	}
	return got != "" && subtle.ConstantTimeCompare([]byte(got), []byte(key)) == 1
}

// maxBody bounds a request body: the data twice over (JSON escaping of a
// broadcast's channels list aside) plus room for the rest.
func (a *serverAPI) maxBody() int64 { return int64(2*a.s.cfg.APIMaxData + 1<<20) }

// handle serves POST /api/{method} (method from the path) and POST /api
// (method in the body).
func (a *serverAPI) handle(w http.ResponseWriter, r *http.Request) {
	start := time.Now()
	method := r.PathValue("method")
	label := "unknown"
	reply, status := a.serve(w, r, &method)
	if _, ok := apiMethods[method]; ok {
		label = method
	}
	result := "ok"
	if reply.Error != nil {
		result = fmt.Sprint(reply.Error.Code)
	}
	a.s.m.apiRequests.WithLabelValues(label, result).Inc()
	a.s.m.apiDuration.WithLabelValues(label).Observe(time.Since(start).Seconds())
	writeJSON(w, status, reply)
}

func (a *serverAPI) serve(w http.ResponseWriter, r *http.Request, method *string) (apiReply, int) {
	if !a.authorized(r) {
		w.Header().Set("WWW-Authenticate", `apikey realm="herald"`)
		return apiReply{Error: &apiError{Code: codeUnauthorized, Message: "unauthorized"}}, http.StatusUnauthorized
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, a.maxBody()))
	if err != nil {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			return apiReply{Error: badRequest("body larger than %d bytes", mbe.Limit)}, http.StatusRequestEntityTooLarge
		}
		return apiReply{Error: badRequest("reading body: %v", err)}, http.StatusBadRequest
	}
	params := json.RawMessage(body)
	if *method == "" { // POST /api: {"method", "params"}
		var env struct {
			Method string          `json:"method"`
			Params json.RawMessage `json:"params"`
		}
		if err := json.Unmarshal(body, &env); err != nil {
			return apiReply{Error: badRequest("body is not a JSON object: %v", err)}, http.StatusBadRequest
		}
		if env.Method == "" {
			return apiReply{Error: badRequest("method is required")}, http.StatusBadRequest
		}
		*method, params = env.Method, env.Params
	}
	h, ok := apiMethods[*method]
	if !ok {
		return apiReply{Error: &apiError{Code: codeMethodUnknown, Message: "method not found"}}, http.StatusNotFound
	}
	if len(bytes.TrimSpace(params)) == 0 || string(bytes.TrimSpace(params)) == "null" {
		params = json.RawMessage("{}")
	}
	if !json.Valid(params) || bytes.TrimSpace(params)[0] != '{' {
		return apiReply{Error: badRequest("params must be a JSON object")}, http.StatusBadRequest
	}
	ctx, cancel := context.WithTimeout(r.Context(), a.s.cfg.APITimeout)
	defer cancel()
	res, aerr := h(a, ctx, params)
	if aerr != nil {
		return apiReply{Error: aerr}, http.StatusOK
	}
	return apiReply{Result: res}, http.StatusOK
}

// decode reads params into v; a field of the wrong type is error 107.
func decode(params json.RawMessage, v any) *apiError {
	if err := json.Unmarshal(params, v); err != nil {
		return badRequest("%v", err)
	}
	return nil
}

func validChannel(ch string) *apiError {
	switch {
	case ch == "":
		return badRequest("channel is required")
	case len(ch) > 255 || !utf8.ValidString(ch):
		return badRequest("channel must be valid UTF-8 of at most 255 bytes")
	}
	return nil
}

// publishParams are publish's params (and broadcast's, with channels).
type publishParams struct {
	Channel        string          `json:"channel"`
	Channels       []string        `json:"channels"`
	Data           json.RawMessage `json:"data"`
	B64Data        string          `json:"b64data"`
	IdempotencyKey string          `json:"idempotency_key"`
}

func (a *serverAPI) checkData(p *publishParams) *apiError {
	if p.B64Data != "" {
		return badRequest("b64data is not supported: Herald speaks the JSON protocol, send data")
	}
	d := bytes.TrimSpace(p.Data)
	if len(d) == 0 || string(d) == "null" {
		return badRequest("data is required")
	}
	if len(d) > a.s.cfg.APIMaxData {
		return badRequest("data is %d bytes, more than %d (-management-api-max-data)", len(d), a.s.cfg.APIMaxData)
	}
	if len(p.IdempotencyKey) > 255 {
		return badRequest("idempotency_key is longer than 255 bytes")
	}
	p.Data = d
	return nil
}

type publishResult struct {
	Offset uint64 `json:"offset,omitempty"`
	Epoch  string `json:"epoch,omitempty"`
}

func (a *serverAPI) publish(ctx context.Context, params json.RawMessage) (any, *apiError) {
	var p publishParams
	if e := decode(params, &p); e != nil {
		return nil, e
	}
	if e := validChannel(p.Channel); e != nil {
		return nil, e
	}
	if e := a.checkData(&p); e != nil {
		return nil, e
	}
	return a.publishOne(ctx, p.Channel, p.Data, p.IdempotencyKey)
}

// publishOne produces one message and answers its seq and epoch.
func (a *serverAPI) publishOne(ctx context.Context, ch string, data []byte, key string) (*publishResult, *apiError) {
	rec, err := a.record(ch, data, key)
	if err != nil {
		return nil, &apiError{Code: codeInternal, Message: "internal server error: " + err.Error()}
	}
	if err := a.kcl.ProduceSync(ctx, rec).FirstErr(); err != nil {
		a.s.log.Warn("server API publish failed", "err", err)
		return nil, &apiError{Code: codeInternal, Message: "internal server error: publishing: " + err.Error()}
	}
	return a.published(ctx, ch, rec)
}

func (a *serverAPI) record(ch string, data []byte, key string) (*kgo.Record, error) {
	msg := &heraldv1.Message{Id: kafka.NewMessageID(), Channel: ch, Data: data, ClientMsgId: key, PublishedAt: time.Now().UnixMilli()}
	rec := &kgo.Record{}
	if err := kafka.EncodeRecord(rec, a.s.cfg.Topic, int32(a.s.cfg.Partitions), msg); err != nil {
		return nil, err
	}
	rec.Headers = []kgo.RecordHeader{{Key: kafka.APIHeader, Value: []byte("1")}}
	return rec, nil
}

// published asks every controller for the seq of the acked rec and
// answers the owner's.
func (a *serverAPI) published(ctx context.Context, ch string, rec *kgo.Record) (*publishResult, *apiError) {
	req := &heraldv1.PublishedRequest{Channel: ch, Partition: rec.Partition, Offset: rec.Offset}
	var (
		once  sync.Once
		res   *heraldv1.PublishedResponse
		errs  = make([]error, len(a.ctrls))
		wg    sync.WaitGroup
		found = make(chan struct{})
	)
	for i, c := range a.ctrls {
		wg.Go(func() {
			r, err := c.Published(ctx, req)
			if err != nil {
				errs[i] = err
				return
			}
			if r.GetOwned() {
				once.Do(func() { res = r; close(found) })
			}
		})
	}
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	select {
	case <-found:
	case <-done:
	}
	if res == nil {
		select {
		case <-found:
		default:
			err := errors.Join(errs...)
			if err == nil {
				err = errors.New("no controller owns its partition")
			}
			a.s.log.Warn("server API publish: seq unknown", "partition", rec.Partition, "offset", rec.Offset, "err", err)
			return nil, &apiError{Code: codeInternal, Message: fmt.Sprintf("internal server error: published (partition %d offset %d) but its seq is unknown: %v; retry with the same idempotency_key", rec.Partition, rec.Offset, err)}
		}
	}
	return &publishResult{Offset: res.GetOffset(), Epoch: res.GetEpoch()}, nil
}

type broadcastResponse struct {
	Result *publishResult `json:"result,omitempty"`
	Error  *apiError      `json:"error,omitempty"`
}

func (a *serverAPI) broadcast(ctx context.Context, params json.RawMessage) (any, *apiError) {
	var p publishParams
	if e := decode(params, &p); e != nil {
		return nil, e
	}
	if len(p.Channels) == 0 {
		return nil, badRequest("channels are required")
	}
	if len(p.Channels) > maxBroadcastChannels {
		return nil, badRequest("at most %d channels per broadcast, got %d", maxBroadcastChannels, len(p.Channels))
	}
	if e := a.checkData(&p); e != nil {
		return nil, e
	}
	out := make([]broadcastResponse, len(p.Channels))
	var wg sync.WaitGroup
	for i, ch := range p.Channels {
		if e := validChannel(ch); e != nil {
			out[i].Error = e
			continue
		}
		rec, err := a.record(ch, p.Data, p.IdempotencyKey)
		if err != nil {
			out[i].Error = &apiError{Code: codeInternal, Message: "internal server error: " + err.Error()}
			continue
		}
		wg.Add(1)
		a.kcl.Produce(ctx, rec, func(rec *kgo.Record, err error) {
			if err != nil {
				out[i].Error = &apiError{Code: codeInternal, Message: "internal server error: publishing: " + err.Error()}
				wg.Done()
				return
			}
			go func() { // the seq lookup must not block franz-go's callback
				defer wg.Done()
				out[i].Result, out[i].Error = a.published(ctx, ch, rec)
			}()
		})
	}
	wg.Wait()
	return map[string]any{"responses": out}, nil
}

// owner asks every controller and answers the owned response of call.
func owner[T interface{ GetOwned() bool }](ctx context.Context, a *serverAPI, call func(context.Context, heraldv1.RouterClient) (T, error)) (T, error) {
	type answer struct {
		r   T
		err error
	}
	ch := make(chan answer, len(a.ctrls))
	for _, c := range a.ctrls {
		go func() {
			r, err := call(ctx, c)
			ch <- answer{r, err}
		}()
	}
	var zero T
	var errs []error
	for range a.ctrls {
		an := <-ch
		if an.err == nil && an.r.GetOwned() {
			return an.r, nil
		}
		if an.err != nil {
			errs = append(errs, an.err)
		}
	}
	if len(errs) == 0 {
		return zero, errors.New("no controller owns the channel's partition")
	}
	return zero, errors.Join(errs...)
}

type channelParams struct {
	Channel string `json:"channel"`
}

type clientInfo struct {
	Client   string          `json:"client"`
	User     string          `json:"user"`
	ConnInfo json.RawMessage `json:"conn_info,omitempty"`
	ChanInfo json.RawMessage `json:"chan_info,omitempty"`
}

func (a *serverAPI) askPresence(ctx context.Context, params json.RawMessage, statsOnly bool) (*heraldv1.PresenceResponse, *apiError) {
	var p channelParams
	if e := decode(params, &p); e != nil {
		return nil, e
	}
	if e := validChannel(p.Channel); e != nil {
		return nil, e
	}
	if po := a.s.cfg.Presence; po != nil && !po.Presence(p.Channel) {
		return nil, errNotAvailable
	}
	r, err := owner(ctx, a, func(ctx context.Context, c heraldv1.RouterClient) (*heraldv1.PresenceResponse, error) {
		return c.Presence(ctx, &heraldv1.PresenceRequest{Channel: p.Channel, StatsOnly: statsOnly})
	})
	if err != nil {
		if allCodes(err, codes.Unimplemented, codes.FailedPrecondition) {
			return nil, errNotAvailable
		}
		return nil, &apiError{Code: codeInternal, Message: "internal server error: " + err.Error()}
	}
	return r, nil
}

// allCodes reports whether err holds only gRPC errors with one of cs.
func allCodes(err error, cs ...codes.Code) bool {
	var list []error
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		list = j.Unwrap()
	} else {
		list = []error{err}
	}
	for _, e := range list {
		c := status.Code(e)
		ok := false
		for _, want := range cs {
			ok = ok || c == want
		}
		if !ok {
			return false
		}
	}
	return len(list) > 0
}

func (a *serverAPI) presence(ctx context.Context, params json.RawMessage) (any, *apiError) {
	r, e := a.askPresence(ctx, params, false)
	if e != nil {
		return nil, e
	}
	m := make(map[string]clientInfo, len(r.GetClients()))
	for _, c := range r.GetClients() {
		m[c.GetClient()] = clientInfo{Client: c.GetClient(), User: c.GetUser(), ConnInfo: rawJSON(c.GetConnInfo()), ChanInfo: rawJSON(c.GetChanInfo())}
	}
	return map[string]any{"presence": m}, nil
}

func (a *serverAPI) presenceStats(ctx context.Context, params json.RawMessage) (any, *apiError) {
	r, e := a.askPresence(ctx, params, true)
	if e != nil {
		return nil, e
	}
	return map[string]uint32{"num_clients": r.GetNumClients(), "num_users": r.GetNumUsers()}, nil
}

func rawJSON(b []byte) json.RawMessage {
	if len(b) == 0 || !json.Valid(b) {
		return nil
	}
	return json.RawMessage(b)
}

// historyParams: Centrifugo's history params, plus Herald's cursor (the
// REST history's next_cursor).
type historyAPIParams struct {
	Channel string `json:"channel"`
	Limit   *int   `json:"limit"`
	Since   *struct {
		Offset uint64 `json:"offset"`
		Epoch  string `json:"epoch"`
	} `json:"since"`
	Reverse bool   `json:"reverse"`
	Cursor  string `json:"cursor"`
}

type apiPublication struct {
	Data   json.RawMessage `json:"data"`
	Info   *clientInfo     `json:"info,omitempty"`
	Offset uint64          `json:"offset"`
}

type historyResult struct {
	Publications []apiPublication `json:"publications"`
	Offset       uint64           `json:"offset"`
	Epoch        string           `json:"epoch"`
	NextCursor   string           `json:"next_cursor,omitempty"`
}

// history maps Centrifugo's history onto the REST history: limit (0 or
// absent: only the position, as Centrifugo; above 1000: 1000 with a
// next_cursor), since.offset → after (oldest first; newest first with
// reverse); since.epoch other than the channel's → error 112; cursor
// continues a page (REST's or this method's next_cursor).
func (a *serverAPI) history(ctx context.Context, params json.RawMessage) (any, *apiError) {
	var p historyAPIParams
	if e := decode(params, &p); e != nil {
		return nil, e
	}
	if e := validChannel(p.Channel); e != nil {
		return nil, e
	}
	limit := 0
	if p.Limit != nil {
		limit = *p.Limit
	}
	if limit < 0 {
		return nil, badRequest("limit must not be negative")
	}
	if p.Cursor != "" {
		if cq, err := decodeCursor(p.Cursor); err != nil || (cq.Before != 0 && cq.After >= cq.Before) {
			return nil, badRequest("malformed cursor")
		}
	}
	res := historyResult{Publications: []apiPublication{}}
	ch, err := a.s.st.Channel(ctx, p.Channel)
	switch {
	case store.IsNotFound(err):
		return res, nil
	case err != nil:
		return nil, &apiError{Code: codeInternal, Message: "internal server error: history temporarily unavailable"}
	}
	res.Offset, res.Epoch = ch.LastSeq, ch.Epoch
	if p.Since != nil && p.Since.Epoch != "" && p.Since.Epoch != ch.Epoch {
		return nil, &apiError{Code: codeUnrecoverable, Message: "unrecoverable position"}
	}
	if limit == 0 && p.Cursor == "" {
		return res, nil
	}
	q := query{Limit: min(max(limit, 1), MaxLimit), Asc: !p.Reverse}
	if limit == 0 {
		q.Limit = DefaultLimit
	}
	if p.Cursor != "" {
		cq, err := decodeCursor(p.Cursor)
		if err != nil || (cq.Before != 0 && cq.After >= cq.Before) {
			return nil, badRequest("malformed cursor")
		}
		cq.Limit = q.Limit
		q = cq
	} else if p.Since != nil {
		q.After = p.Since.Offset
	}
	page, err := a.s.page(ctx, p.Channel, q, "")
	if err != nil {
		return nil, &apiError{Code: codeInternal, Message: "internal server error: history temporarily unavailable"}
	}
	for _, m := range page.msgs {
		pub := apiPublication{Data: json.RawMessage(m.Data), Offset: m.Seq}
		if m.Sender != "" {
			pub.Info = &clientInfo{User: m.Sender, ConnInfo: rawJSON(m.Info)}
		}
		res.Publications = append(res.Publications, pub)
	}
	if page.next != nil {
		res.NextCursor = encodeCursor(*page.next)
	}
	return res, nil
}

// control runs cmd on every relay through one controller, trying the next
// one when a call fails.
func (a *serverAPI) control(ctx context.Context, cmd *heraldv1.Command) (*heraldv1.ControlResponse, *apiError) {
	n := len(a.ctrls)
	first := int(a.next.Add(1)) % n
	var errs []error
	for i := range n {
		c := a.ctrls[(first+i)%n]
		r, err := c.Control(ctx, &heraldv1.ControlRequest{Command: cmd})
		if err == nil {
			if int(r.GetRelays()) > len(r.GetReplies()) {
				a.s.m.apiPartial.Inc()
				a.s.log.Warn("server API command: not every relay replied", "relays", r.GetRelays(), "replies", len(r.GetReplies()))
			}
			return r, nil
		}
		errs = append(errs, err)
		if ctx.Err() != nil {
			break
		}
	}
	return nil, &apiError{Code: codeInternal, Message: "internal server error: no controller ran the command: " + errors.Join(errs...).Error()}
}

func (a *serverAPI) disconnect(ctx context.Context, params json.RawMessage) (any, *apiError) {
	var p struct {
		User       string `json:"user"`
		Client     string `json:"client"`
		Disconnect *struct {
			Code   uint32 `json:"code"`
			Reason string `json:"reason"`
		} `json:"disconnect"`
	}
	if e := decode(params, &p); e != nil {
		return nil, e
	}
	if p.User == "" {
		return nil, badRequest("user is required")
	}
	cmd := &heraldv1.DisconnectCommand{User: p.User, Client: p.Client}
	if d := p.Disconnect; d != nil {
		if d.Code != 0 && (d.Code < 3000 || d.Code > 4999) {
			return nil, badRequest("disconnect code must be from 3000 to 4999")
		}
		if len(d.Reason) > 123 {
			return nil, badRequest("disconnect reason is longer than 123 bytes (a WebSocket close frame)")
		}
		cmd.Code, cmd.Reason = d.Code, d.Reason
	}
	if _, e := a.control(ctx, &heraldv1.Command{Kind: &heraldv1.Command_Disconnect{Disconnect: cmd}}); e != nil {
		return nil, e
	}
	return struct{}{}, nil
}

func (a *serverAPI) unsubscribe(ctx context.Context, params json.RawMessage) (any, *apiError) {
	var p struct {
		User    string `json:"user"`
		Channel string `json:"channel"`
		Client  string `json:"client"`
	}
	if e := decode(params, &p); e != nil {
		return nil, e
	}
	if e := validChannel(p.Channel); e != nil {
		return nil, e
	}
	if p.User == "" {
		return nil, badRequest("user is required")
	}
	cmd := &heraldv1.UnsubscribeCommand{User: p.User, Channel: p.Channel, Client: p.Client}
	if _, e := a.control(ctx, &heraldv1.Command{Kind: &heraldv1.Command_Unsubscribe{Unsubscribe: cmd}}); e != nil {
		return nil, e
	}
	return struct{}{}, nil
}

type channelInfo struct {
	NumClients uint32 `json:"num_clients"`
}

func (a *serverAPI) channels(ctx context.Context, params json.RawMessage) (any, *apiError) {
	var p struct {
		Pattern string `json:"pattern"`
	}
	if e := decode(params, &p); e != nil {
		return nil, e
	}
	r, e := a.control(ctx, &heraldv1.Command{Kind: &heraldv1.Command_Channels{Channels: &heraldv1.ChannelsQuery{Pattern: p.Pattern}}})
	if e != nil {
		return nil, e
	}
	out := map[string]channelInfo{}
	for _, rep := range r.GetReplies() {
		for _, c := range rep.GetChannels() {
			ci := out[c.GetChannel()]
			ci.NumClients += c.GetSubscribers()
			out[c.GetChannel()] = ci
		}
	}
	return map[string]any{"channels": out}, nil
}

// nodeJSON is one node of info, Centrifugo's shape plus Herald's kind.
type nodeJSON struct {
	UID         string `json:"uid"`
	Name        string `json:"name"`
	Kind        string `json:"kind"`
	Version     string `json:"version,omitempty"`
	NumClients  uint32 `json:"num_clients"`
	NumSubs     uint32 `json:"num_subs"`
	NumChannels uint32 `json:"num_channels"`
	Uptime      int64  `json:"uptime"`
}

func toNode(n *heraldv1.NodeInfo) nodeJSON {
	return nodeJSON{UID: n.GetId(), Name: n.GetId(), Kind: n.GetKind(), Version: n.GetVersion(), NumClients: n.GetConnections(),
		NumSubs: n.GetSubscriptions(), NumChannels: n.GetChannels(), Uptime: n.GetUptimeSeconds()}
}

// info asks every controller at once: each answers itself and the relays
// streaming to it (every relay streams to every controller; relays are
// listed once). For a controller, num_clients counts relay streams,
// num_subs owned partitions and num_channels channels relays asked for.
func (a *serverAPI) info(ctx context.Context, params json.RawMessage) (any, *apiError) {
	var p struct{}
	if e := decode(params, &p); e != nil {
		return nil, e
	}
	cmd := &heraldv1.Command{Kind: &heraldv1.Command_Info{Info: &heraldv1.InfoQuery{}}}
	resps := make([]*heraldv1.ControlResponse, len(a.ctrls))
	errs := make([]error, len(a.ctrls))
	var wg sync.WaitGroup
	for i, c := range a.ctrls {
		wg.Go(func() { resps[i], errs[i] = c.Control(ctx, &heraldv1.ControlRequest{Command: cmd}) })
	}
	wg.Wait()
	nodes := []nodeJSON{}
	seen := map[string]bool{}
	for _, r := range resps {
		if r == nil {
			continue
		}
		if c := r.GetController(); c != nil {
			nodes = append(nodes, toNode(c))
		}
		for _, rep := range r.GetReplies() {
			if n := rep.GetInfo(); n != nil && !seen[n.GetId()] {
				seen[n.GetId()] = true
				nodes = append(nodes, toNode(n))
			}
		}
	}
	if len(nodes) == 0 {
		return nil, &apiError{Code: codeInternal, Message: "internal server error: no controller answered: " + errors.Join(errs...).Error()}
	}
	return map[string]any{"nodes": nodes}, nil
}
