package protocol

import (
	"bytes"
	"encoding/json"
	"math"
	"unicode/utf8"
)

// CommandHandler receives the commands a Decoder decodes.
type CommandHandler interface {
	HandleCommand(cmd *Command) error
}

// Decoder decodes client commands like DecodeCommands, with a hand-written
// fast path for the commands of the hot path, the empty command {} (the
// client's pong) and publish{channel, data}, and for the plain forms of
// connect and subscribe (every connection sends them: encoding/json's
// garbage there sets how far the heap overshoots while clients connect). Anything the fast path does not
// recognise exactly (other methods, unknown or duplicate keys, escapes in the
// channel, a non-canonical id, ...) goes through encoding/json, so both
// paths accept and produce the same commands.
//
// A Decoder is not safe for concurrent use; a relay keeps one per event
// loop. Commands of the fast path are reused and Publish.Data aliases the
// decoded frame: a handler must not keep the Command, nor Data, past its
// call (copy what it keeps). The fast path allocates only the strings it
// returns (a publish's channel; a connect's token, name and version; a
// subscribe's channel, token and epoch).
type Decoder struct {
	cmd    Command
	pub    PublishRequest
	conn   ConnectRequest
	sub    SubscribeRequest
	unread []byte
}

// Unread returns, after Decode stopped because the handler returned an
// error, the part of the frame from the start of that command on (nil when
// Decode did not stop early). It aliases the frame given to Decode.
func (d *Decoder) Unread() []byte { return d.unread }

// Decode decodes every "\n"-separated command of a text frame and hands
// each to h, in order. It stops at the first malformed command or the first
// error h returns; a frame without any command is ErrEmptyCommand.
func (d *Decoder) Decode(data []byte, h CommandHandler) error {
	n := 0
	d.unread = nil
	for len(data) > 0 {
		cur := data
		var line []byte
		if line, data = nextLine(data); len(line) == 0 {
			continue
		}
		cmd, ok := d.fast(line)
		if !ok {
			var err error
			if cmd, err = DecodeCommand(line); err != nil {
				return err
			}
		}
		n++
		if err := h.HandleCommand(cmd); err != nil {
			d.unread = cur
			return err
		}
	}
	if n == 0 {
		return ErrEmptyCommand
	}
	return nil
}

// fast decodes {}, {"id":N,"publish":{"channel":"c","data":V}} and the
// plain connect and subscribe (keys in any order, JSON whitespace
// allowed); ok is false for anything else.
func (d *Decoder) fast(line []byte) (*Command, bool) {
	if len(line) == 2 && line[0] == '{' && line[1] == '}' {
		d.cmd = Command{}
		return &d.cmd, true
	}
	p := scanner{b: line}
	var (
		id       uint32
		kind     byte // 'p'ublish, 'c'onnect, 's'ubscribe
		ch, data []byte
	)
	ok := p.object(func(key []byte) (ok bool) {
		switch string(key) {
		case "id":
			id, ok = p.uint32()
		case "publish", "connect", "subscribe":
			if kind != 0 {
				return false // two methods: encoding/json decides
			}
			switch kind = key[0]; kind {
			case 'p':
				ch, data, ok = p.publish()
			case 'c':
				d.conn, ok = p.connect()
			default:
				d.sub, ok = p.subscribe()
			}
		}
		return ok
	})
	p.ws()
	if !ok || kind == 0 || p.i != len(p.b) {
		return nil, false
	}
	switch kind {
	case 'c':
		d.cmd = Command{ID: id, Connect: &d.conn}
	case 's':
		d.cmd = Command{ID: id, Subscribe: &d.sub}
	default:
		d.pub = PublishRequest{Channel: string(ch), Data: data}
		d.cmd = Command{ID: id, Publish: &d.pub}
	}
	return &d.cmd, true
}

// connect reads {"token":"t","name":"n","version":"v"} (each optional,
// any order): what SDKs send on every connect. With data or subs (a
// reconnect recovering server-side subscriptions) it leaves the command to
// encoding/json.
func (p *scanner) connect() (r ConnectRequest, ok bool) {
	ok = p.object(func(key []byte) bool {
		switch string(key) {
		case "token":
			return p.strTo(&r.Token)
		case "name":
			return p.strTo(&r.Name)
		case "version":
			return p.strTo(&r.Version)
		}
		return false
	})
	return r, ok
}

// subscribe reads {"channel":"c","token":"t","recover":b,"offset":n,
// "epoch":"e"} (channel required, the rest optional, any order); other
// fields go to encoding/json.
func (p *scanner) subscribe() (r SubscribeRequest, ok bool) {
	haveCh := false
	ok = p.object(func(key []byte) (ok bool) {
		switch string(key) {
		case "channel":
			haveCh = true
			return p.strTo(&r.Channel)
		case "token":
			return p.strTo(&r.Token)
		case "epoch":
			return p.strTo(&r.Epoch)
		case "recover":
			r.Recover, ok = p.boolean()
		case "offset":
			r.Offset, ok = p.uint64()
		case "join_leave":
			r.JoinLeave, ok = p.boolean()
		}
		return ok
	})
	return r, ok && haveCh
}

// maxKeys bounds the keys of an object the fast path reads.
const maxKeys = 8

// object reads {"key":value,...}, handing each key to field, which reads
// the value and reports whether it is one the fast path takes. A repeated
// key (encoding/json keeps the last), more than maxKeys keys or any
// syntax it does not expect make it false. An empty object is fine.
func (p *scanner) object(field func(key []byte) bool) bool {
	if !p.lit('{') {
		return false
	}
	if p.lit('}') {
		return true
	}
	var seen [maxKeys][]byte
	for n := 0; ; n++ {
		key, ok := p.key()
		if !ok || n == maxKeys {
			return false
		}
		for _, k := range seen[:n] {
			if bytes.Equal(k, key) {
				return false
			}
		}
		seen[n] = key
		if !field(key) {
			return false
		}
		if p.lit(',') {
			continue
		}
		return p.lit('}')
	}
}

// strTo reads a string (see str) into dst.
func (p *scanner) strTo(dst *string) bool {
	v, ok := p.str()
	*dst = string(v)
	return ok
}

// boolean reads true or false.
func (p *scanner) boolean() (bool, bool) {
	p.ws()
	rest := p.b[p.i:]
	switch {
	case len(rest) >= 4 && string(rest[:4]) == "true":
		p.i += 4
		return true, p.delimited()
	case len(rest) >= 5 && string(rest[:5]) == "false":
		p.i += 5
		return false, p.delimited()
	}
	return false, false
}

// delimited reports whether a literal just read ends there (not "truex").
func (p *scanner) delimited() bool {
	if p.i == len(p.b) {
		return true
	}
	switch p.b[p.i] {
	case ',', '}', ']', ' ', '\t', '\r', '\n':
		return true
	}
	return false
}

// uint64 reads a canonical non-negative integer that fits uint64.
func (p *scanner) uint64() (uint64, bool) {
	p.ws()
	start := p.i
	var v uint64
	for p.i < len(p.b) && p.b[p.i] >= '0' && p.b[p.i] <= '9' {
		d := uint64(p.b[p.i] - '0')
		if v > (math.MaxUint64-d)/10 {
			return 0, false
		}
		v = v*10 + d
		p.i++
	}
	n := p.i - start
	if n == 0 || (n > 1 && p.b[start] == '0') {
		return 0, false
	}
	return v, p.delimited()
}

// scanner reads the restricted JSON of the fast path.
type scanner struct {
	b []byte
	i int
}

func (p *scanner) ws() {
	for p.i < len(p.b) {
		switch p.b[p.i] {
		case ' ', '\t', '\r', '\n':
			p.i++
		default:
			return
		}
	}
}

// lit consumes c after optional whitespace.
func (p *scanner) lit(c byte) bool {
	p.ws()
	if p.i < len(p.b) && p.b[p.i] == c {
		p.i++
		return true
	}
	return false
}

// str reads a string without escapes or control characters, in valid
// UTF-8, and returns its content.
func (p *scanner) str() ([]byte, bool) {
	if !p.lit('"') {
		return nil, false
	}
	start := p.i
	for p.i < len(p.b) {
		c := p.b[p.i]
		switch {
		case c == '"':
			s := p.b[start:p.i]
			p.i++
			return s, utf8.Valid(s)
		case c == '\\' || c < 0x20:
			return nil, false
		}
		p.i++
	}
	return nil, false
}

// key reads "key" and the colon.
func (p *scanner) key() ([]byte, bool) {
	k, ok := p.str()
	if !ok || !p.lit(':') {
		return nil, false
	}
	return k, true
}

// uint32 reads a canonical non-negative integer that fits uint32.
func (p *scanner) uint32() (uint32, bool) {
	p.ws()
	start := p.i
	var v uint64
	for p.i < len(p.b) && p.b[p.i] >= '0' && p.b[p.i] <= '9' {
		v = v*10 + uint64(p.b[p.i]-'0')
		if v > 1<<32-1 {
			return 0, false
		}
		p.i++
	}
	n := p.i - start
	if n == 0 || (n > 1 && p.b[start] == '0') {
		return 0, false
	}
	if p.i < len(p.b) {
		switch p.b[p.i] {
		case '.', 'e', 'E':
			return 0, false
		}
	}
	return uint32(v), true
}

// publish reads {"channel":"c","data":V} (either order, both required).
func (p *scanner) publish() (ch, data []byte, ok bool) {
	ok = p.object(func(key []byte) (ok bool) {
		switch string(key) {
		case "channel":
			ch, ok = p.str()
		case "data":
			data, ok = p.value()
		}
		return ok
	})
	return ch, data, ok && ch != nil && data != nil
}

// value returns the extent of one JSON value (not null), checked with
// json.Valid.
func (p *scanner) value() ([]byte, bool) {
	p.ws()
	if p.i >= len(p.b) {
		return nil, false
	}
	start := p.i
	switch c := p.b[p.i]; c {
	case '{', '[':
		depth := 0
	loop:
		for p.i < len(p.b) {
			switch p.b[p.i] {
			case '{', '[':
				depth++
			case '}', ']':
				depth--
				if depth == 0 {
					p.i++
					break loop
				}
			case '"':
				if !p.skipString() {
					return nil, false
				}
				continue
			}
			p.i++
		}
		if depth != 0 {
			return nil, false
		}
	case '"':
		if !p.skipString() {
			return nil, false
		}
	case 'n':
		return nil, false // null: left to encoding/json
	default:
		for p.i < len(p.b) {
			switch p.b[p.i] {
			case ',', '}', ']', ' ', '\t', '\r', '\n':
				goto done
			}
			p.i++
		}
	done:
	}
	v := p.b[start:p.i]
	return v, len(v) > 0 && json.Valid(v)
}

// skipString skips a string starting at p.i (at the quote), escapes
// included.
func (p *scanner) skipString() bool {
	p.i++
	for p.i < len(p.b) {
		switch p.b[p.i] {
		case '\\':
			p.i += 2
			continue
		case '"':
			p.i++
			return true
		}
		p.i++
	}
	return false
}
