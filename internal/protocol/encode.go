package protocol

import (
	"strconv"
	"unicode/utf8"
)

// ClientInfo describes a publisher: {"user","client","conn_info","chan_info"}.
type ClientInfo struct {
	User     string `json:"user,omitempty"`
	Client   string `json:"client,omitempty"`
	ConnInfo Raw    `json:"conn_info,omitempty"`
	ChanInfo Raw    `json:"chan_info,omitempty"`
}

// Publication is {"data","info","offset","time"}; Data is raw JSON.
type Publication struct {
	Data   Raw         `json:"data,omitempty"`
	Info   *ClientInfo `json:"info,omitempty"`
	Offset uint64      `json:"offset,omitempty"`
	Time   int64       `json:"time,omitempty"`
}

// Raw is a raw JSON value (json.RawMessage with a decoder that copies).
type Raw []byte

// MarshalJSON returns r itself (null when empty).
func (r Raw) MarshalJSON() ([]byte, error) {
	if len(r) == 0 {
		return []byte("null"), nil
	}
	return r, nil
}

// UnmarshalJSON stores a copy of data.
func (r *Raw) UnmarshalJSON(data []byte) error {
	*r = append((*r)[:0], data...)
	return nil
}

// SubscribeResult is the result of subscribe and the value of connect.subs.
type SubscribeResult struct {
	Expires      bool          `json:"expires,omitempty"`
	TTL          uint32        `json:"ttl,omitempty"`
	Recoverable  bool          `json:"recoverable,omitempty"`
	Epoch        string        `json:"epoch,omitempty"`
	Publications []Publication `json:"publications,omitempty"`
	Recovered    bool          `json:"recovered,omitempty"`
	Offset       uint64        `json:"offset,omitempty"`
	Positioned   bool          `json:"positioned,omitempty"`
	WasRecover   bool          `json:"was_recovering,omitempty"`
}

// ConnectResult is the result of connect (Subs: as decoded; the relay
// encodes its subscriptions as an ordered list, see AppendConnectReply).
type ConnectResult struct {
	Client  string                      `json:"client,omitempty"`
	Version string                      `json:"version,omitempty"`
	Expires bool                        `json:"expires,omitempty"`
	TTL     uint32                      `json:"ttl,omitempty"`
	Subs    map[string]*SubscribeResult `json:"subs,omitempty"`
	Ping    uint32                      `json:"ping,omitempty"`
	Pong    bool                        `json:"pong,omitempty"`
}

// RefreshResult is the result of refresh.
type RefreshResult struct {
	Client  string `json:"client,omitempty"`
	Version string `json:"version,omitempty"`
	Expires bool   `json:"expires,omitempty"`
	TTL     uint32 `json:"ttl,omitempty"`
}

// SubRefreshResult is the result of sub_refresh.
type SubRefreshResult struct {
	Expires bool   `json:"expires,omitempty"`
	TTL     uint32 `json:"ttl,omitempty"`
}

// HistoryResult is the result of history.
type HistoryResult struct {
	Publications []Publication `json:"publications,omitempty"`
	Epoch        string        `json:"epoch,omitempty"`
	Offset       uint64        `json:"offset,omitempty"`
}

// AppendPing appends the server ping (and the reply-less pong): {}.
func AppendPing(dst []byte) []byte { return append(dst, '{', '}') }

// AppendPush appends {"push":{"channel":ch,"pub":{...}}}.
func AppendPush(dst []byte, channel string, pub *Publication) []byte {
	dst = append(dst, `{"push":{"channel":`...)
	dst = AppendString(dst, channel)
	dst = append(dst, `,"pub":`...)
	dst = AppendPublication(dst, pub)
	return append(dst, '}', '}')
}

// AppendUnsubscribePush appends {"push":{"channel":ch,"unsubscribe":{"code":c,"reason":r}}}.
func AppendUnsubscribePush(dst []byte, channel string, code uint32, reason string) []byte {
	dst = append(dst, `{"push":{"channel":`...)
	dst = AppendString(dst, channel)
	dst = append(dst, `,"unsubscribe":{"code":`...)
	dst = strconv.AppendUint(dst, uint64(code), 10)
	dst = append(dst, `,"reason":`...)
	dst = AppendString(dst, reason)
	return append(dst, '}', '}', '}')
}

// AppendDisconnectPush appends {"push":{"disconnect":{"code","reason","reconnect"}}}.
// Relays normally disconnect with a close frame (AppendCloseReason); this push
// exists for transports without close codes.
func AppendDisconnectPush(dst []byte, d Disconnect) []byte {
	dst = append(dst, `{"push":{"disconnect":{"code":`...)
	dst = strconv.AppendUint(dst, uint64(d.Code), 10)
	dst = append(dst, `,"reason":`...)
	dst = AppendString(dst, d.Reason)
	if d.Reconnect() {
		dst = append(dst, `,"reconnect":true`...)
	}
	return append(dst, '}', '}', '}')
}

// AppendPublication appends one publication object.
func AppendPublication(dst []byte, pub *Publication) []byte {
	dst = append(dst, '{')
	first := true
	if len(pub.Data) > 0 {
		dst = append(dst, `"data":`...)
		dst = AppendRaw(dst, pub.Data)
		first = false
	}
	if pub.Info != nil {
		if !first {
			dst = append(dst, ',')
		}
		dst = append(dst, `"info":`...)
		dst = appendClientInfo(dst, pub.Info)
		first = false
	}
	if pub.Offset > 0 {
		if !first {
			dst = append(dst, ',')
		}
		dst = append(dst, `"offset":`...)
		dst = strconv.AppendUint(dst, pub.Offset, 10)
		first = false
	}
	if pub.Time > 0 {
		if !first {
			dst = append(dst, ',')
		}
		dst = append(dst, `"time":`...)
		dst = strconv.AppendInt(dst, pub.Time, 10)
	}
	return append(dst, '}')
}

func appendClientInfo(dst []byte, ci *ClientInfo) []byte {
	dst = append(dst, '{')
	o := objWriter{dst: dst}
	o.str("user", ci.User)
	o.str("client", ci.Client)
	o.raw("conn_info", ci.ConnInfo)
	o.raw("chan_info", ci.ChanInfo)
	return append(o.dst, '}')
}

// AppendError appends {"id":id,"error":{"code","message"[,"temporary"]}}.
func AppendError(dst []byte, id uint32, e *Error) []byte {
	dst = appendReplyStart(dst, id)
	dst = append(dst, `"error":{"code":`...)
	dst = strconv.AppendUint(dst, uint64(e.Code), 10)
	dst = append(dst, `,"message":`...)
	dst = AppendString(dst, e.Message)
	if e.Temporary {
		dst = append(dst, `,"temporary":true`...)
	}
	return append(dst, '}', '}')
}

// AppendEmptyReply appends {"id":id,"<method>":{}}, e.g. the publish,
// unsubscribe and ping replies.
func AppendEmptyReply(dst []byte, id uint32, method string) []byte {
	dst = appendReplyStart(dst, id)
	dst = append(dst, '"')
	dst = append(dst, method...)
	return append(dst, `":{}}`...)
}

// ChannelResult is one server-side subscription of a connect reply.
type ChannelResult struct {
	Channel string
	Result  *SubscribeResult
}

// AppendConnectReply appends {"id":id,"connect":{...}}. The subscriptions
// are subs, in that order, when there are any (the relay's way: no map per
// connect), else r.Subs in map order.
func AppendConnectReply(dst []byte, id uint32, r *ConnectResult, subs []ChannelResult) []byte {
	dst = appendReplyStart(dst, id)
	dst = append(dst, `"connect":{`...)
	o := objWriter{dst: dst}
	o.str("client", r.Client)
	o.str("version", r.Version)
	o.boolean("expires", r.Expires)
	o.uint("ttl", uint64(r.TTL))
	if len(subs) > 0 || len(r.Subs) > 0 {
		o.key("subs")
		o.dst = append(o.dst, '{')
		n := 0
		emit := func(ch string, s *SubscribeResult) {
			if n > 0 {
				o.dst = append(o.dst, ',')
			}
			n++
			o.dst = AppendString(o.dst, ch)
			o.dst = append(o.dst, ':')
			o.dst = AppendSubscribeResult(o.dst, s)
		}
		if len(subs) > 0 {
			for _, s := range subs {
				emit(s.Channel, s.Result)
			}
		} else {
			for ch, s := range r.Subs {
				emit(ch, s)
			}
		}
		o.dst = append(o.dst, '}')
	}
	o.uint("ping", uint64(r.Ping))
	o.boolean("pong", r.Pong)
	return append(o.dst, '}', '}')
}

// AppendSubscribeReply appends {"id":id,"subscribe":{...}}.
func AppendSubscribeReply(dst []byte, id uint32, r *SubscribeResult) []byte {
	dst = appendReplyStart(dst, id)
	dst = append(dst, `"subscribe":`...)
	dst = AppendSubscribeResult(dst, r)
	return append(dst, '}')
}

// AppendSubscribeResult appends one subscribe result object.
func AppendSubscribeResult(dst []byte, r *SubscribeResult) []byte {
	dst = append(dst, '{')
	o := objWriter{dst: dst}
	o.boolean("expires", r.Expires)
	o.uint("ttl", uint64(r.TTL))
	o.boolean("recoverable", r.Recoverable)
	o.str("epoch", r.Epoch)
	o.pubs("publications", r.Publications)
	o.boolean("recovered", r.Recovered)
	o.uint("offset", r.Offset)
	o.boolean("positioned", r.Positioned)
	o.boolean("was_recovering", r.WasRecover)
	return append(o.dst, '}')
}

// AppendHistoryReply appends {"id":id,"history":{...}}.
func AppendHistoryReply(dst []byte, id uint32, r *HistoryResult) []byte {
	dst = appendReplyStart(dst, id)
	dst = append(dst, `"history":{`...)
	o := objWriter{dst: dst}
	o.pubs("publications", r.Publications)
	o.str("epoch", r.Epoch)
	o.uint("offset", r.Offset)
	return append(o.dst, '}', '}')
}

// AppendRefreshReply appends {"id":id,"refresh":{...}}.
func AppendRefreshReply(dst []byte, id uint32, r *RefreshResult) []byte {
	dst = appendReplyStart(dst, id)
	dst = append(dst, `"refresh":{`...)
	o := objWriter{dst: dst}
	o.str("client", r.Client)
	o.str("version", r.Version)
	o.boolean("expires", r.Expires)
	o.uint("ttl", uint64(r.TTL))
	return append(o.dst, '}', '}')
}

// AppendSubRefreshReply appends {"id":id,"sub_refresh":{...}}.
func AppendSubRefreshReply(dst []byte, id uint32, r *SubRefreshResult) []byte {
	dst = appendReplyStart(dst, id)
	dst = append(dst, `"sub_refresh":{`...)
	o := objWriter{dst: dst}
	o.boolean("expires", r.Expires)
	o.uint("ttl", uint64(r.TTL))
	return append(o.dst, '}', '}')
}

func appendReplyStart(dst []byte, id uint32) []byte {
	dst = append(dst, '{')
	if id > 0 {
		dst = append(dst, `"id":`...)
		dst = strconv.AppendUint(dst, uint64(id), 10)
		dst = append(dst, ',')
	}
	return dst
}

// objWriter appends the members of a JSON object, omitting zero values.
type objWriter struct {
	dst []byte
	n   int
}

func (o *objWriter) key(k string) {
	if o.n > 0 {
		o.dst = append(o.dst, ',')
	}
	o.n++
	o.dst = append(o.dst, '"')
	o.dst = append(o.dst, k...)
	o.dst = append(o.dst, '"', ':')
}

func (o *objWriter) str(k, v string) {
	if v != "" {
		o.key(k)
		o.dst = AppendString(o.dst, v)
	}
}

func (o *objWriter) raw(k string, v []byte) {
	if len(v) > 0 {
		o.key(k)
		o.dst = AppendRaw(o.dst, v)
	}
}

func (o *objWriter) uint(k string, v uint64) {
	if v > 0 {
		o.key(k)
		o.dst = strconv.AppendUint(o.dst, v, 10)
	}
}

func (o *objWriter) boolean(k string, v bool) {
	if v {
		o.key(k)
		o.dst = append(o.dst, "true"...)
	}
}

func (o *objWriter) pubs(k string, pubs []Publication) {
	if len(pubs) == 0 {
		return
	}
	o.key(k)
	o.dst = append(o.dst, '[')
	for i := range pubs {
		if i > 0 {
			o.dst = append(o.dst, ',')
		}
		o.dst = AppendPublication(o.dst, &pubs[i])
	}
	o.dst = append(o.dst, ']')
}

// AppendRaw appends raw JSON, dropping raw newlines (only whitespace in valid
// JSON) so the value cannot split a multi-message frame.
func AppendRaw(dst, raw []byte) []byte {
	for len(raw) > 0 {
		i := indexNewline(raw)
		if i < 0 {
			return append(dst, raw...)
		}
		dst = append(dst, raw[:i]...)
		raw = raw[i+1:]
	}
	return dst
}

func indexNewline(b []byte) int {
	for i, c := range b {
		if c == '\n' {
			return i
		}
	}
	return -1
}

const hexDigits = "0123456789abcdef"

// AppendString appends s as a JSON string. Control characters, quotes,
// backslashes, U+2028/U+2029 and invalid UTF-8 (as U+FFFD) are escaped.
func AppendString(dst []byte, s string) []byte {
	dst = append(dst, '"')
	start := 0
	for i := 0; i < len(s); {
		c := s[i]
		if c < utf8.RuneSelf {
			if c >= 0x20 && c != '"' && c != '\\' {
				i++
				continue
			}
			dst = append(dst, s[start:i]...)
			switch c {
			case '"', '\\':
				dst = append(dst, '\\', c)
			case '\n':
				dst = append(dst, '\\', 'n')
			case '\r':
				dst = append(dst, '\\', 'r')
			case '\t':
				dst = append(dst, '\\', 't')
			default:
				dst = append(dst, '\\', 'u', '0', '0', hexDigits[c>>4], hexDigits[c&0xf])
			}
			i++
			start = i
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError && size == 1 {
			dst = append(dst, s[start:i]...)
			dst = append(dst, `\ufffd`...)
			i += size
			start = i
			continue
		}
		if r == '\u2028' || r == '\u2029' {
			dst = append(dst, s[start:i]...)
			dst = append(dst, '\\', 'u', '2', '0', '2', hexDigits[r&0xf])
			i += size
			start = i
			continue
		}
		i += size
	}
	dst = append(dst, s[start:]...)
	return append(dst, '"')
}

// PresenceResult is the result of presence: the members by client id.
type PresenceResult struct {
	Presence map[string]*ClientInfo `json:"presence"`
}

// PresenceStatsResult is the result of presence_stats.
type PresenceStatsResult struct {
	NumClients uint32 `json:"num_clients"`
	NumUsers   uint32 `json:"num_users"`
}

// AppendPresenceReply appends {"id":id,"presence":{"presence":{client:info,...}}}
// with the members in the order given.
func AppendPresenceReply(dst []byte, id uint32, members []ClientInfo) []byte {
	dst = appendReplyStart(dst, id)
	dst = append(dst, `"presence":{"presence":{`...)
	for i := range members {
		if i > 0 {
			dst = append(dst, ',')
		}
		dst = AppendString(dst, members[i].Client)
		dst = append(dst, ':')
		dst = appendClientInfo(dst, &members[i])
	}
	return append(dst, '}', '}', '}')
}

// AppendPresenceStatsReply appends {"id":id,"presence_stats":{"num_clients","num_users"}}.
func AppendPresenceStatsReply(dst []byte, id uint32, r *PresenceStatsResult) []byte {
	dst = appendReplyStart(dst, id)
	dst = append(dst, `"presence_stats":{"num_clients":`...)
	dst = strconv.AppendUint(dst, uint64(r.NumClients), 10)
	dst = append(dst, `,"num_users":`...)
	dst = strconv.AppendUint(dst, uint64(r.NumUsers), 10)
	return append(dst, '}', '}')
}

// AppendJoinPush appends {"push":{"channel":ch,"join":{"info":{...}}}}, or
// the leave push when leave.
func AppendJoinPush(dst []byte, channel string, ci *ClientInfo, leave bool) []byte {
	dst = append(dst, `{"push":{"channel":`...)
	dst = AppendString(dst, channel)
	if leave {
		dst = append(dst, `,"leave":{"info":`...)
	} else {
		dst = append(dst, `,"join":{"info":`...)
	}
	dst = appendClientInfo(dst, ci)
	return append(dst, '}', '}', '}')
}
