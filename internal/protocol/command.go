package protocol

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
)

// Method identifies the request a Command carries.
type Method uint8

// Methods a relay distinguishes. MethodEmpty is the empty command {}: the
// client's pong to a server ping. MethodPing is the explicit ping{} request.
const (
	MethodEmpty Method = iota
	MethodPing
	MethodConnect
	MethodSubscribe
	MethodUnsubscribe
	MethodPublish
	MethodHistory
	MethodRefresh
	MethodSubRefresh
	MethodPresence
	MethodPresenceStats
	MethodUnsupported // send, rpc
)

// Command is one client command.
type Command struct {
	ID          uint32              `json:"id,omitempty"`
	Connect     *ConnectRequest     `json:"connect,omitempty"`
	Subscribe   *SubscribeRequest   `json:"subscribe,omitempty"`
	Unsubscribe *UnsubscribeRequest `json:"unsubscribe,omitempty"`
	Publish     *PublishRequest     `json:"publish,omitempty"`
	History     *HistoryRequest     `json:"history,omitempty"`
	Refresh     *RefreshRequest     `json:"refresh,omitempty"`
	SubRefresh  *SubRefreshRequest  `json:"sub_refresh,omitempty"`
	Ping        *struct{}           `json:"ping,omitempty"`

	Presence      *PresenceRequest `json:"presence,omitempty"`
	PresenceStats *PresenceRequest `json:"presence_stats,omitempty"`

	Send json.RawMessage `json:"send,omitempty"`
	RPC  json.RawMessage `json:"rpc,omitempty"`
}

// Method returns the request kind of c.
func (c *Command) Method() Method {
	switch {
	case c.Connect != nil:
		return MethodConnect
	case c.Subscribe != nil:
		return MethodSubscribe
	case c.Unsubscribe != nil:
		return MethodUnsubscribe
	case c.Publish != nil:
		return MethodPublish
	case c.History != nil:
		return MethodHistory
	case c.Refresh != nil:
		return MethodRefresh
	case c.SubRefresh != nil:
		return MethodSubRefresh
	case c.Ping != nil:
		return MethodPing
	case c.Presence != nil:
		return MethodPresence
	case c.PresenceStats != nil:
		return MethodPresenceStats
	case c.Send != nil || c.RPC != nil:
		return MethodUnsupported
	}
	return MethodEmpty
}

// ConnectRequest is connect{token, name, version, subs}.
type ConnectRequest struct {
	Token   string                       `json:"token,omitempty"`
	Data    json.RawMessage              `json:"data,omitempty"`
	Subs    map[string]*SubscribeRequest `json:"subs,omitempty"`
	Name    string                       `json:"name,omitempty"`
	Version string                       `json:"version,omitempty"`
}

// SubscribeRequest is subscribe{channel, token, recover, offset, epoch}; in
// connect.subs only recover/offset/epoch are used.
type SubscribeRequest struct {
	Channel     string          `json:"channel,omitempty"`
	Token       string          `json:"token,omitempty"`
	Recover     bool            `json:"recover,omitempty"`
	Epoch       string          `json:"epoch,omitempty"`
	Offset      uint64          `json:"offset,omitempty"`
	Data        json.RawMessage `json:"data,omitempty"`
	Positioned  bool            `json:"positioned,omitempty"`
	Recoverable bool            `json:"recoverable,omitempty"`
	Flag        int64           `json:"flag,omitempty"`
	// JoinLeave asks for join and leave pushes (channels whose namespace
	// has join_leave).
	JoinLeave bool `json:"join_leave,omitempty"`
}

// PresenceRequest is presence{channel} and presence_stats{channel}.
type PresenceRequest struct {
	Channel string `json:"channel,omitempty"`
}

// UnsubscribeRequest is unsubscribe{channel}.
type UnsubscribeRequest struct {
	Channel string `json:"channel,omitempty"`
}

// PublishRequest is publish{channel, data}; Data is raw JSON.
type PublishRequest struct {
	Channel string          `json:"channel,omitempty"`
	Data    json.RawMessage `json:"data,omitempty"`
}

// StreamPosition is a position in a channel stream.
type StreamPosition struct {
	Offset uint64 `json:"offset,omitempty"`
	Epoch  string `json:"epoch,omitempty"`
}

// HistoryRequest is history{channel, limit, since, reverse}.
type HistoryRequest struct {
	Channel string          `json:"channel,omitempty"`
	Limit   int32           `json:"limit,omitempty"`
	Since   *StreamPosition `json:"since,omitempty"`
	Reverse bool            `json:"reverse,omitempty"`
}

// RefreshRequest is refresh{token}.
type RefreshRequest struct {
	Token string `json:"token,omitempty"`
}

// SubRefreshRequest is sub_refresh{channel, token}: a new subscription
// token for a channel subscribed with one.
type SubRefreshRequest struct {
	Channel string `json:"channel,omitempty"`
	Token   string `json:"token,omitempty"`
}

// ErrEmptyCommand is returned for a frame that holds no command at all.
var ErrEmptyCommand = errors.New("protocol: empty frame")

// nextLine splits the first "\n"-separated line off a frame, without
// surrounding white space.
func nextLine(data []byte) (line, rest []byte) {
	if i := bytes.IndexByte(data, '\n'); i >= 0 {
		return bytes.TrimSpace(data[:i]), data[i+1:]
	}
	return bytes.TrimSpace(data), nil
}

// DecodeCommands decodes every "\n"-separated command of a text frame and
// calls fn for each, in order. It stops at the first malformed command or the
// first error fn returns. Each Command is freshly allocated; fn may keep it.
// String and raw fields are copies: data may be reused after return.
func DecodeCommands(data []byte, fn func(*Command) error) error {
	n := 0
	for len(data) > 0 {
		var line []byte
		if line, data = nextLine(data); len(line) == 0 {
			continue
		}
		cmd, err := DecodeCommand(line)
		if err != nil {
			return err
		}
		n++
		if err := fn(cmd); err != nil {
			return err
		}
	}
	if n == 0 {
		return ErrEmptyCommand
	}
	return nil
}

// DecodeCommand decodes one JSON command.
func DecodeCommand(line []byte) (*Command, error) {
	if len(line) == 0 || line[0] != '{' {
		return nil, fmt.Errorf("protocol: decoding command: not a JSON object")
	}
	cmd := new(Command)
	if err := json.Unmarshal(line, cmd); err != nil {
		return nil, fmt.Errorf("protocol: decoding command: %w", err)
	}
	return cmd, nil
}
