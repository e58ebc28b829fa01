package loadtest

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"

	"github.com/herald-chat/herald/internal/protocol"
)

// Centrifugo client protocol v2 (JSON), client side. Commands are appended to
// caller-owned buffers; server messages are scanned without allocating, so
// that the hot path (a push: channel, pub.offset and the "t" timestamp of its
// data) costs no garbage. Rarely used replies (connect, subscribe) keep a raw
// span that is decoded with encoding/json.

// subPosition is a stream position sent to recover a subscription.
type subPosition struct {
	Channel string
	Recover bool
	Offset  uint64
	Epoch   string
}

// appendConnect appends {"id":id,"connect":{"token":…,"subs":{…}}}.
func appendConnect(dst []byte, id uint32, token string, subs []subPosition) []byte {
	dst = append(dst, `{"id":`...)
	dst = strconv.AppendUint(dst, uint64(id), 10)
	dst = append(dst, `,"connect":{`...)
	comma := false
	if token != "" {
		dst = append(dst, `"token":`...)
		dst = appendJSONString(dst, token)
		comma = true
	}
	if len(subs) > 0 {
		if comma {
			dst = append(dst, ',')
		}
		dst = append(dst, `"subs":{`...)
		for i, s := range subs {
			if i > 0 {
				dst = append(dst, ',')
			}
			dst = appendJSONString(dst, s.Channel)
			dst = append(dst, ':')
			dst = appendPosition(dst, s)
		}
		dst = append(dst, '}')
	}
	return append(dst, "}}"...)
}

// appendPosition appends {"recover":true,"offset":N,"epoch":"…"} (only set
// fields).
func appendPosition(dst []byte, s subPosition) []byte {
	dst = append(dst, '{')
	if s.Recover {
		dst = append(dst, `"recover":true,"offset":`...)
		dst = strconv.AppendUint(dst, s.Offset, 10)
		dst = append(dst, `,"epoch":`...)
		dst = appendJSONString(dst, s.Epoch)
	}
	return append(dst, '}')
}

// appendSubscribe appends {"id":id,"subscribe":{"channel":…[,"recover":true,"offset":N,"epoch":…]}}.
func appendSubscribe(dst []byte, id uint32, s subPosition) []byte {
	dst = append(dst, `{"id":`...)
	dst = strconv.AppendUint(dst, uint64(id), 10)
	dst = append(dst, `,"subscribe":{"channel":`...)
	dst = appendJSONString(dst, s.Channel)
	if s.Recover {
		dst = append(dst, `,"recover":true,"offset":`...)
		dst = strconv.AppendUint(dst, s.Offset, 10)
		dst = append(dst, `,"epoch":`...)
		dst = appendJSONString(dst, s.Epoch)
	}
	return append(dst, "}}"...)
}

// appendPublish appends a publish whose data is {"t":sentUnixNanos,"p":"pad"}:
// the receiver computes publish-to-delivery latency from t. pad must not
// need JSON escaping.
func appendPublish(dst []byte, id uint32, channel string, t int64, pad []byte) []byte {
	dst = append(dst, `{"id":`...)
	dst = strconv.AppendUint(dst, uint64(id), 10)
	dst = append(dst, `,"publish":{"channel":`...)
	dst = appendJSONString(dst, channel)
	dst = append(dst, `,"data":{"t":`...)
	dst = strconv.AppendInt(dst, t, 10)
	dst = append(dst, `,"p":"`...)
	dst = append(dst, pad...)
	return append(dst, `"}}}`...)
}

// appendJSONString appends s as a JSON string, escaped exactly as the
// relay escapes it.
func appendJSONString(dst []byte, s string) []byte { return protocol.AppendString(dst, s) }

// msgKind is what a scanned server message is.
type msgKind uint8

const (
	msgPing       msgKind = iota // {} — answer {}
	msgReply                     // a reply to command id (maybe with error)
	msgPub                       // push of a publication
	msgDisconnect                // push.disconnect
	msgUnsub                     // push.unsubscribe
	msgOtherPush                 // join/leave/message/… : ignored
)

// serverMsg is one scanned server message. Byte slices alias the scanned
// line: they are valid until the frame buffer is reused.
type serverMsg struct {
	kind    msgKind
	id      uint32
	errCode uint32 // reply error or disconnect/unsubscribe code
	errMsg  []byte // raw JSON string content of error.message / reason
	hasErr  bool
	result  []byte // raw JSON of the reply's result object (connect, subscribe…)
	method  []byte // key of the result: "connect", "subscribe", "publish"…

	channel   []byte // push channel, raw string content
	chanEsc   bool   // channel contains escapes: decode before comparing
	offset    uint64 // pub.offset
	t         int64  // data.t (send time, unix ns) when hasT
	hasT      bool
	reconnect bool // disconnect.reconnect
}

var errSyntax = errors.New("malformed JSON")

// scanServerMsg scans one JSON server message into m without allocating.
func scanServerMsg(line []byte, m *serverMsg) error {
	*m = serverMsg{}
	it, err := objStart(line, 0)
	if err != nil {
		return err
	}
	seenAny, isPush := false, false
	for {
		key, ok, err := it.next()
		if err != nil {
			return err
		}
		if !ok {
			break
		}
		seenAny = true
		switch string(key) {
		case "id":
			v, end, err := scanUint(line, it.i)
			if err != nil {
				return err
			}
			m.id, it.i = uint32(v), end
		case "error":
			m.hasErr = true
			if it.i, err = scanCodeReason(line, it.i, "message", &m.errCode, &m.errMsg, nil); err != nil {
				return err
			}
		case "push":
			isPush = true
			if it.i, err = scanPush(line, it.i, m); err != nil {
				return err
			}
		default:
			end, err := skipValue(line, it.i)
			if err != nil {
				return err
			}
			m.method, m.result = key, line[it.i:end]
			it.i = end
		}
	}
	switch {
	case isPush:
		// kind set by scanPush
	case !seenAny:
		m.kind = msgPing
	default:
		m.kind = msgReply
	}
	return it.end()
}

func scanPush(b []byte, i int, m *serverMsg) (int, error) {
	m.kind = msgOtherPush
	it, err := objStart(b, i)
	if err != nil {
		return 0, err
	}
	for {
		key, ok, err := it.next()
		if err != nil {
			return 0, err
		}
		if !ok {
			break
		}
		switch string(key) {
		case "channel":
			s, e, esc, err := scanString(b, it.i)
			if err != nil {
				return 0, err
			}
			m.channel, m.chanEsc, it.i = b[s:e], esc, e+1
		case "pub":
			m.kind = msgPub
			if it.i, err = scanPub(b, it.i, m); err != nil {
				return 0, err
			}
		case "disconnect":
			m.kind = msgDisconnect
			if it.i, err = scanCodeReason(b, it.i, "reason", &m.errCode, &m.errMsg, &m.reconnect); err != nil {
				return 0, err
			}
		case "unsubscribe":
			m.kind = msgUnsub
			if it.i, err = scanCodeReason(b, it.i, "reason", &m.errCode, &m.errMsg, nil); err != nil {
				return 0, err
			}
		default:
			if it.i, err = skipValue(b, it.i); err != nil {
				return 0, err
			}
		}
	}
	return it.i, it.end()
}

// scanPub scans {"data":{…,"t":N,…},"offset":N,…}.
func scanPub(b []byte, i int, m *serverMsg) (int, error) {
	it, err := objStart(b, i)
	if err != nil {
		return 0, err
	}
	for {
		key, ok, err := it.next()
		if err != nil {
			return 0, err
		}
		if !ok {
			break
		}
		switch string(key) {
		case "offset":
			v, end, err := scanUint(b, it.i)
			if err != nil {
				return 0, err
			}
			m.offset, it.i = v, end
		case "data":
			end, err := skipValue(b, it.i)
			if err != nil {
				return 0, err
			}
			m.t, m.hasT = dataTime(b[it.i:end])
			it.i = end
		default:
			if it.i, err = skipValue(b, it.i); err != nil {
				return 0, err
			}
		}
	}
	return it.i, it.end()
}

// dataTime extracts the integer member "t" of a JSON object.
func dataTime(data []byte) (int64, bool) {
	it, err := objStart(data, 0)
	if err != nil {
		return 0, false
	}
	for {
		key, ok, err := it.next()
		if err != nil || !ok {
			return 0, false
		}
		if string(key) == "t" {
			v, _, err := scanUint(data, it.i)
			return int64(v), err == nil
		}
		if it.i, err = skipValue(data, it.i); err != nil {
			return 0, false
		}
	}
}

// scanCodeReason scans {"code":N,"<textKey>":"…","reconnect":bool}.
func scanCodeReason(b []byte, i int, textKey string, code *uint32, text *[]byte, reconnect *bool) (int, error) {
	it, err := objStart(b, i)
	if err != nil {
		return 0, err
	}
	for {
		key, ok, err := it.next()
		if err != nil {
			return 0, err
		}
		if !ok {
			break
		}
		switch {
		case string(key) == "code":
			v, end, err := scanUint(b, it.i)
			if err != nil {
				return 0, err
			}
			*code, it.i = uint32(v), end
		case string(key) == textKey && b[it.i] == '"':
			s, e, _, err := scanString(b, it.i)
			if err != nil {
				return 0, err
			}
			*text, it.i = b[s:e], e+1
		case string(key) == "reconnect" && reconnect != nil:
			*reconnect = bytes.HasPrefix(b[it.i:], []byte("true"))
			if it.i, err = skipValue(b, it.i); err != nil {
				return 0, err
			}
		default:
			if it.i, err = skipValue(b, it.i); err != nil {
				return 0, err
			}
		}
	}
	return it.i, it.end()
}

// objIter walks the members of a JSON object. After next returns a key, it.i
// is at the start of the member's value; the caller advances it.i past the
// value before calling next again.
type objIter struct {
	b     []byte
	i     int
	first bool
	done  bool
}

func objStart(b []byte, i int) (objIter, error) {
	i = skipWS(b, i)
	if i >= len(b) || b[i] != '{' {
		return objIter{}, errSyntax
	}
	return objIter{b: b, i: i + 1, first: true}, nil
}

func (it *objIter) next() (key []byte, ok bool, err error) {
	b := it.b
	i := skipWS(b, it.i)
	if i >= len(b) {
		return nil, false, errSyntax
	}
	if b[i] == '}' {
		it.i, it.done = i+1, true
		return nil, false, nil
	}
	if !it.first {
		if b[i] != ',' {
			return nil, false, errSyntax
		}
		i = skipWS(b, i+1)
	}
	it.first = false
	s, e, _, err := scanString(b, i)
	if err != nil {
		return nil, false, err
	}
	i = skipWS(b, e+1)
	if i >= len(b) || b[i] != ':' {
		return nil, false, errSyntax
	}
	it.i = skipWS(b, i+1)
	if it.i >= len(b) {
		return nil, false, errSyntax
	}
	return b[s:e], true, nil
}

// end reports an error unless the object was fully consumed.
func (it *objIter) end() error {
	if !it.done {
		return errSyntax
	}
	return nil
}

func skipWS(b []byte, i int) int {
	for i < len(b) && (b[i] == ' ' || b[i] == '\t' || b[i] == '\n' || b[i] == '\r') {
		i++
	}
	return i
}

// scanString scans the string starting at b[i] == '"'. It returns the content
// span [s,e) (b[e] is the closing quote) and whether it holds escapes.
func scanString(b []byte, i int) (s, e int, esc bool, err error) {
	if i >= len(b) || b[i] != '"' {
		return 0, 0, false, errSyntax
	}
	for j := i + 1; j < len(b); j++ {
		switch b[j] {
		case '"':
			return i + 1, j, esc, nil
		case '\\':
			esc = true
			j++
		}
	}
	return 0, 0, false, errSyntax
}

// scanUint scans a non-negative integer; a fraction or exponent is an error.
func scanUint(b []byte, i int) (v uint64, end int, err error) {
	j := i
	for j < len(b) && b[j] >= '0' && b[j] <= '9' {
		if v > (1<<64-1)/10 {
			return 0, 0, errSyntax
		}
		v = v*10 + uint64(b[j]-'0')
		j++
	}
	if j == i || j < len(b) && (b[j] == '.' || b[j] == 'e' || b[j] == 'E') {
		return 0, 0, errSyntax
	}
	return v, j, nil
}

// skipValue returns the index just past the JSON value starting at b[i].
func skipValue(b []byte, i int) (int, error) {
	i = skipWS(b, i)
	if i >= len(b) {
		return 0, errSyntax
	}
	switch c := b[i]; {
	case c == '"':
		_, e, _, err := scanString(b, i)
		return e + 1, err
	case c == '{' || c == '[':
		depth := 0
		for j := i; j < len(b); j++ {
			switch b[j] {
			case '"':
				_, e, _, err := scanString(b, j)
				if err != nil {
					return 0, err
				}
				j = e
			case '{', '[':
				depth++
			case '}', ']':
				depth--
				if depth == 0 {
					return j + 1, nil
				}
			}
		}
		return 0, errSyntax
	default:
		j := i
		for j < len(b) && b[j] != ',' && b[j] != '}' && b[j] != ']' && b[j] != ' ' && b[j] != '\n' && b[j] != '\r' && b[j] != '\t' {
			j++
		}
		if j == i {
			return 0, errSyntax
		}
		return j, nil
	}
}

// unquote decodes a raw JSON string content span (rare path: escapes).
func unquote(raw []byte) string {
	var s string
	q := make([]byte, 0, len(raw)+2)
	q = append(append(append(q, '"'), raw...), '"')
	if err := json.Unmarshal(q, &s); err != nil {
		return string(raw)
	}
	return s
}

// connectResult is the part of a connect reply the load tester uses.
type connectResult struct {
	Client string                     `json:"client"`
	Subs   map[string]subscribeResult `json:"subs"`
}

// subscribeResult is the part of a subscribe reply the load tester uses.
type subscribeResult struct {
	Epoch        string            `json:"epoch"`
	Offset       uint64            `json:"offset"`
	Recoverable  bool              `json:"recoverable"`
	Recovered    bool              `json:"recovered"`
	Publications []json.RawMessage `json:"publications"`
}

// decodePublication extracts the offset and data.t of a recovered publication.
func decodePublication(raw []byte) (offset uint64, t int64, hasT bool, err error) {
	var m serverMsg
	if _, err := scanPub(raw, 0, &m); err != nil {
		return 0, 0, false, fmt.Errorf("decoding publication: %w", err)
	}
	return m.offset, m.t, m.hasT, nil
}
