package store

import "encoding/json"

// MessageJSON is a message as JSON: one line of an archive chunk and, without
// ClientMsgID, one message of a history page.
type MessageJSON struct {
	ID          string          `json:"id"`
	Channel     string          `json:"channel"`
	Seq         uint64          `json:"seq"`
	Sender      string          `json:"sender"`
	Info        json.RawMessage `json:"info,omitempty"`
	Data        json.RawMessage `json:"data"`
	ClientMsgID string          `json:"client_msg_id,omitempty"`
	PublishedAt string          `json:"published_at"`
}

// TimeLayout is the form of published_at: RFC 3339 in UTC with milliseconds.
const TimeLayout = "2006-01-02T15:04:05.000Z07:00"

// JSON returns m as JSON; empty Data becomes null.
func (m *Message) JSON() MessageJSON {
	j := MessageJSON{
		ID: m.ID, Channel: m.Channel, Seq: m.Seq, Sender: m.Sender,
		Info: m.Info, Data: m.Data, ClientMsgID: m.ClientMsgID,
		PublishedAt: m.PublishedAt.UTC().Format(TimeLayout),
	}
	if len(j.Data) == 0 {
		j.Data = json.RawMessage("null")
	}
	return j
}
