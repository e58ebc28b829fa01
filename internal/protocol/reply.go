package protocol

import (
	"bytes"
	"encoding/json"
	"fmt"
)

// Reply is a decoded server message (reply or push). The relay never decodes
// replies; Reply exists for clients and tests.
type Reply struct {
	ID          uint32            `json:"id,omitempty"`
	Error       *Error            `json:"error,omitempty"`
	Push        *Push             `json:"push,omitempty"`
	Connect     *ConnectResult    `json:"connect,omitempty"`
	Subscribe   *SubscribeResult  `json:"subscribe,omitempty"`
	Unsubscribe *struct{}         `json:"unsubscribe,omitempty"`
	Publish     *struct{}         `json:"publish,omitempty"`
	History     *HistoryResult    `json:"history,omitempty"`
	Refresh     *RefreshResult    `json:"refresh,omitempty"`
	SubRefresh  *SubRefreshResult `json:"sub_refresh,omitempty"`
	Ping        *struct{}         `json:"ping,omitempty"`

	Presence      *PresenceResult      `json:"presence,omitempty"`
	PresenceStats *PresenceStatsResult `json:"presence_stats,omitempty"`
}

// Push is an asynchronous server message.
type Push struct {
	Channel     string           `json:"channel,omitempty"`
	Pub         *Publication     `json:"pub,omitempty"`
	Unsubscribe *UnsubscribePush `json:"unsubscribe,omitempty"`
	Disconnect  *DisconnectPush  `json:"disconnect,omitempty"`
	Join        *JoinPush        `json:"join,omitempty"`
	Leave       *JoinPush        `json:"leave,omitempty"`
}

// JoinPush is push.join and push.leave.
type JoinPush struct {
	Info ClientInfo `json:"info"`
}

// UnsubscribePush is push.unsubscribe.
type UnsubscribePush struct {
	Code   uint32 `json:"code,omitempty"`
	Reason string `json:"reason,omitempty"`
}

// DisconnectPush is push.disconnect.
type DisconnectPush struct {
	Code      uint32 `json:"code,omitempty"`
	Reason    string `json:"reason,omitempty"`
	Reconnect bool   `json:"reconnect,omitempty"`
}

// DecodeReplies decodes every "\n"-separated reply or push of a frame.
func DecodeReplies(data []byte) ([]*Reply, error) {
	var out []*Reply
	for _, line := range bytes.Split(data, []byte{'\n'}) {
		line = bytes.TrimSpace(line)
		if len(line) == 0 {
			continue
		}
		r := new(Reply)
		if err := json.Unmarshal(line, r); err != nil {
			return out, fmt.Errorf("protocol: decoding reply: %w", err)
		}
		out = append(out, r)
	}
	return out, nil
}
