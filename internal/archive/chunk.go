package archive

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/herald-chat/herald/internal/store"
)

// Format is the chunk format version recorded in the bucket config object.
const Format = 1

// keySegment is the longest path component of an encoded channel name in a
// chunk key; longer names are split into several components so that
// filesystem-backed object stores (255-byte file names) accept them.
const keySegment = 128

// ChunkKey returns the object key of chunk n of channel:
// chunks/<base64url(channel)>/<n, 12 digits at least>.ndjson.gz. It is
// derived from channel and n alone (no manifest) and safe for any channel
// name: the base64url alphabet has no '/' and long encodings are split into
// 128-character path components.
func ChunkKey(channel string, n uint64) string {
	enc := base64.RawURLEncoding.EncodeToString([]byte(channel))
	var b strings.Builder
	b.Grow(len("chunks/") + len(enc) + len(enc)/keySegment + 1 + 12 + len(".ndjson.gz"))
	b.WriteString("chunks/")
	for len(enc) > keySegment {
		b.WriteString(enc[:keySegment])
		b.WriteByte('/')
		enc = enc[keySegment:]
	}
	b.WriteString(enc)
	b.WriteByte('/')
	s := strconv.FormatUint(n, 10)
	for i := len(s); i < 12; i++ {
		b.WriteByte('0')
	}
	b.WriteString(s)
	b.WriteString(".ndjson.gz")
	return b.String()
}

var gzWriters = sync.Pool{New: func() any {
	w, _ := gzip.NewWriterLevel(io.Discard, gzip.DefaultCompression)
	return w
}}

var gzReaders sync.Pool // *gzip.Reader

// Checksum returns the hex SHA-256 of b, the form stored with every chunk.
func Checksum(b []byte) string {
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:])
}

// EncodeChunk returns the gzip NDJSON encoding of msgs, one JSON object per
// message in the given order. Timestamps are written in UTC with millisecond
// precision; Partition and Offset are not archived. The output is
// deterministic: equal input gives equal bytes (and checksum).
func EncodeChunk(msgs []store.Message) ([]byte, error) {
	var buf bytes.Buffer
	buf.Grow(64 + 64*len(msgs))
	zw := gzWriters.Get().(*gzip.Writer)
	defer gzWriters.Put(zw)
	zw.Reset(&buf)
	bw := bufio.NewWriterSize(zw, 32<<10)
	enc := json.NewEncoder(bw)
	enc.SetEscapeHTML(false)
	var w store.MessageJSON // one NDJSON line
	for i := range msgs {
		m := &msgs[i]
		w = m.JSON()
		if err := enc.Encode(&w); err != nil {
			return nil, fmt.Errorf("encoding message seq %d: %w", m.Seq, err)
		}
	}
	if err := bw.Flush(); err != nil {
		return nil, fmt.Errorf("compressing chunk: %w", err)
	}
	if err := zw.Close(); err != nil {
		return nil, fmt.Errorf("compressing chunk: %w", err)
	}
	return buf.Bytes(), nil
}

// DecodeChunk parses the output of EncodeChunk. Any malformed input
// (truncated gzip, bad JSON, bad timestamp) returns an error satisfying
// IsCorrupt.
func DecodeChunk(b []byte) ([]store.Message, error) {
	var zr *gzip.Reader
	if v := gzReaders.Get(); v != nil {
		zr = v.(*gzip.Reader)
		if err := zr.Reset(bytes.NewReader(b)); err != nil {
			gzReaders.Put(zr)
			return nil, corrupt("gzip header: %v", err)
		}
	} else {
		var err error
		if zr, err = gzip.NewReader(bytes.NewReader(b)); err != nil {
			return nil, corrupt("gzip header: %v", err)
		}
	}
	defer gzReaders.Put(zr)
	zr.Multistream(false)
	dec := json.NewDecoder(zr)
	msgs := make([]store.Message, 0, 64)
	for {
		var w store.MessageJSON
		if err := dec.Decode(&w); err != nil {
			if errors.Is(err, io.EOF) {
				break
			}
			return nil, corrupt("line %d: %v", len(msgs)+1, err)
		}
		at, err := time.Parse(time.RFC3339Nano, w.PublishedAt)
		if err != nil {
			return nil, corrupt("line %d: published_at: %v", len(msgs)+1, err)
		}
		m := store.Message{
			ID:          w.ID,
			Channel:     w.Channel,
			Seq:         w.Seq,
			Sender:      w.Sender,
			Data:        []byte(w.Data),
			ClientMsgID: w.ClientMsgID,
			PublishedAt: at,
		}
		if len(w.Info) > 0 {
			m.Info = []byte(w.Info)
		}
		msgs = append(msgs, m)
	}
	// json.Decoder stops at EOF of the stream; a truncated gzip stream
	// surfaces as io.ErrUnexpectedEOF above, but make sure the trailer
	// (CRC and size) was checked by reading to the end.
	if _, err := io.Copy(io.Discard, zr); err != nil {
		return nil, corrupt("gzip trailer: %v", err)
	}
	return msgs, nil
}

// checkChunk verifies msgs are exactly chunk n of channel for chunk size k:
// k messages with seqs n·k+1 … (n+1)·k in order.
func checkChunk(channel string, n uint64, k int, msgs []store.Message) error {
	if len(msgs) != k {
		return fmt.Errorf("chunk %d of %q has %d messages, want %d", n, channel, len(msgs), k)
	}
	first := n*uint64(k) + 1
	for i := range msgs {
		if want := first + uint64(i); msgs[i].Seq != want {
			return fmt.Errorf("chunk %d of %q: message %d has seq %d, want %d", n, channel, i, msgs[i].Seq, want)
		}
		if msgs[i].Channel != channel {
			return fmt.Errorf("chunk %d of %q: message seq %d belongs to channel %q", n, channel, msgs[i].Seq, msgs[i].Channel)
		}
	}
	return nil
}
