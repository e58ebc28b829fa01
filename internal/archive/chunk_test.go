package archive

import (
	"bytes"
	"compress/gzip"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/herald-chat/herald/internal/store"
)

// testMessages returns chunk n of channel for chunk size k.
func testMessages(tb testing.TB, channel string, n uint64, k int) []store.Message {
	tb.Helper()
	base := time.Date(2026, 1, 2, 3, 4, 5, 678_000_000, time.UTC)
	msgs := make([]store.Message, k)
	for i := range msgs {
		seq := n*uint64(k) + uint64(i) + 1
		m := store.Message{
			ID:          fmt.Sprintf("01J%020d", seq),
			Channel:     channel,
			Seq:         seq,
			Sender:      fmt.Sprintf("user-%d", seq%7),
			Data:        []byte(fmt.Sprintf(`{"text":"hello <%d> & \u00e9","n":%d}`, seq, seq)),
			PublishedAt: base.Add(time.Duration(seq) * time.Second),
		}
		if seq%2 == 0 {
			m.Info = []byte(`{"name":"Ann"}`)
			m.ClientMsgID = fmt.Sprintf("c-%d", seq)
		}
		msgs[i] = m
	}
	return msgs
}

func equalMessages(tb testing.TB, got, want []store.Message) {
	tb.Helper()
	if len(got) != len(want) {
		tb.Fatalf("got %d messages, want %d", len(got), len(want))
	}
	for i := range want {
		g, w := got[i], want[i]
		if g.ID != w.ID || g.Channel != w.Channel || g.Seq != w.Seq || g.Sender != w.Sender ||
			g.ClientMsgID != w.ClientMsgID || !g.PublishedAt.Equal(w.PublishedAt.Truncate(time.Millisecond)) ||
			!bytes.Equal(g.Info, w.Info) || !bytes.Equal(g.Data, w.Data) {
			tb.Fatalf("message %d:\n got %+v\nwant %+v", i, g, w)
		}
	}
}

func TestEncodeDecodeRoundTrip(t *testing.T) {
	for _, tc := range []struct {
		name    string
		channel string
		k       int
	}{
		{"one", "room:1", 1},
		{"small", "chat:général/ünïcode", 4},
		{"default size", "team:42", 256},
	} {
		t.Run(tc.name, func(t *testing.T) {
			msgs := testMessages(t, tc.channel, 3, tc.k)
			msgs[0].PublishedAt = msgs[0].PublishedAt.Add(123456 * time.Nanosecond) // sub-ms is dropped
			b, err := EncodeChunk(msgs)
			if err != nil {
				t.Fatal(err)
			}
			b2, err := EncodeChunk(msgs)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(b, b2) {
				t.Fatal("encoding is not deterministic")
			}
			got, err := DecodeChunk(b)
			if err != nil {
				t.Fatal(err)
			}
			equalMessages(t, got, msgs)
			if err := checkChunk(tc.channel, 3, tc.k, got); err != nil {
				t.Fatal(err)
			}
			if got[0].PublishedAt.Location() != time.UTC {
				t.Fatalf("published_at not UTC: %v", got[0].PublishedAt)
			}
		})
	}
}

func TestEncodeFormat(t *testing.T) {
	msgs := testMessages(t, "c", 0, 2)
	b, err := EncodeChunk(msgs)
	if err != nil {
		t.Fatal(err)
	}
	zr, err := gzip.NewReader(bytes.NewReader(b))
	if err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	if _, err := out.ReadFrom(zr); err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSuffix(out.String(), "\n"), "\n")
	want := []string{
		`{"id":"01J00000000000000000001","channel":"c","seq":1,"sender":"user-1","data":{"text":"hello <1> & \u00e9","n":1},"published_at":"2026-01-02T03:04:06.678Z"}`,
		`{"id":"01J00000000000000000002","channel":"c","seq":2,"sender":"user-2","info":{"name":"Ann"},"data":{"text":"hello <2> & \u00e9","n":2},"client_msg_id":"c-2","published_at":"2026-01-02T03:04:07.678Z"}`,
	}
	if len(lines) != len(want) {
		t.Fatalf("got %d lines: %q", len(lines), lines)
	}
	for i := range want {
		if lines[i] != want[i] {
			t.Errorf("line %d:\n got %s\nwant %s", i, lines[i], want[i])
		}
	}
}

func TestEncodeRejectsInvalidJSON(t *testing.T) {
	msgs := testMessages(t, "c", 0, 1)
	msgs[0].Data = []byte(`{"unterminated"`)
	if _, err := EncodeChunk(msgs); err == nil {
		t.Fatal("invalid data JSON accepted")
	}
}

func TestDecodeCorrupt(t *testing.T) {
	good, err := EncodeChunk(testMessages(t, "c", 0, 16))
	if err != nil {
		t.Fatal(err)
	}
	flip := func(i int) []byte {
		b := bytes.Clone(good)
		b[i] ^= 0xff
		return b
	}
	gz := func(s string) []byte {
		var buf bytes.Buffer
		zw := gzip.NewWriter(&buf)
		zw.Write([]byte(s))
		zw.Close()
		return buf.Bytes()
	}
	for _, tc := range []struct {
		name string
		in   []byte
	}{
		{"empty", nil},
		{"not gzip", []byte("hello world")},
		{"truncated header", good[:5]},
		{"truncated body", good[:len(good)/2]},
		{"truncated trailer", good[:len(good)-4]},
		{"flipped body byte", flip(len(good) / 2)},
		{"flipped crc", flip(len(good) - 6)},
		{"bad json", gz("{\"id\":\n")},
		{"bad time", gz(`{"id":"x","channel":"c","seq":1,"data":1,"published_at":"yesterday"}` + "\n")},
		{"wrong type", gz(`{"id":"x","channel":"c","seq":"one","data":1,"published_at":"2026-01-01T00:00:00Z"}` + "\n")},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := DecodeChunk(tc.in)
			if !IsCorrupt(err) {
				t.Fatalf("err = %v, want corrupt", err)
			}
		})
	}
}

func TestCheckChunk(t *testing.T) {
	good := testMessages(t, "c", 2, 4)
	mod := func(f func([]store.Message) []store.Message) []store.Message {
		return f(append([]store.Message(nil), good...))
	}
	for _, tc := range []struct {
		name string
		msgs []store.Message
		ok   bool
	}{
		{"good", good, true},
		{"short", good[:3], false},
		{"gap", mod(func(m []store.Message) []store.Message { m[2].Seq++; return m }), false},
		{"wrong chunk", testMessages(t, "c", 1, 4), false},
		{"other channel", mod(func(m []store.Message) []store.Message { m[1].Channel = "d"; return m }), false},
		{"reordered", mod(func(m []store.Message) []store.Message { m[0], m[1] = m[1], m[0]; return m }), false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := checkChunk("c", 2, 4, tc.msgs)
			if (err == nil) != tc.ok {
				t.Fatalf("err = %v, ok want %v", err, tc.ok)
			}
		})
	}
}

func TestChunkKey(t *testing.T) {
	long := strings.Repeat("x", 400)
	for _, tc := range []struct {
		channel string
		n       uint64
		want    string
	}{
		{"room:1", 0, "chunks/cm9vbTox/000000000000.ndjson.gz"},
		{"a/b", 7, "chunks/YS9i/000000000007.ndjson.gz"},
		{"../..", 12, "chunks/Li4vLi4/000000000012.ndjson.gz"},
		{"c", 1234567890123, "chunks/Yw/1234567890123.ndjson.gz"},
	} {
		if got := ChunkKey(tc.channel, tc.n); got != tc.want {
			t.Errorf("ChunkKey(%q, %d) = %q, want %q", tc.channel, tc.n, got, tc.want)
		}
	}
	k := ChunkKey(long, 1)
	for _, seg := range strings.Split(k, "/") {
		if len(seg) > keySegment {
			t.Fatalf("segment of %d bytes in %q", len(seg), k)
		}
	}
	if ChunkKey(long, 1) == ChunkKey(long[:399], 1) {
		t.Fatal("keys collide")
	}
}
