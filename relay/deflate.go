package relay

import (
	"bytes"
	"compress/flate"
	"errors"
	"io"
)

// deflateTail ends a permessage-deflate message for the decompressor: the
// 00 00 ff ff the sender stripped (RFC 7692 §7.2.2) and a final empty
// stored block, so the reader ends with io.EOF.
var deflateTail = []byte{0x00, 0x00, 0xff, 0xff, 0x01, 0x00, 0x00, 0xff, 0xff}

var errTooBig = errors.New("decompressed message too big")

// deflater is one loop's permessage-deflate state. Both directions run
// without context takeover, so one compressor and one decompressor per loop
// serve every connection and a connection keeps no compression state.
type deflater struct {
	src  tailReader
	r    io.ReadCloser
	out  []byte // decompressed message, valid until the next inflate
	w    *flate.Writer
	wbuf bytes.Buffer
}

// tailReader reads a then b without allocating.
type tailReader struct{ a, b []byte }

func (t *tailReader) Read(p []byte) (int, error) {
	if len(t.a) > 0 {
		n := copy(p, t.a)
		t.a = t.a[n:]
		return n, nil
	}
	if len(t.b) > 0 {
		n := copy(p, t.b)
		t.b = t.b[n:]
		return n, nil
	}
	return 0, io.EOF
}

// ReadByte makes tailReader an io.ByteReader, so flate reads it directly
// instead of wrapping it in a bufio.Reader.
func (t *tailReader) ReadByte() (byte, error) {
	var b [1]byte
	if _, err := t.Read(b[:]); err != nil {
		return 0, err
	}
	return b[0], nil
}

// inflate decompresses one message. It never produces more than limit
// bytes: a larger message is errTooBig, however small its compressed form.
// The result is valid until the next call on this loop.
func (l *loop) inflate(p []byte, limit int) ([]byte, error) {
	z := &l.z
	z.src = tailReader{a: p, b: deflateTail}
	if z.r == nil {
		z.r = flate.NewReader(&z.src)
	} else if err := z.r.(flate.Resetter).Reset(&z.src, nil); err != nil {
		return nil, err
	}
	out := z.out[:0]
	for {
		if len(out) == cap(out) {
			if len(out) > limit {
				return nil, errTooBig
			}
			out = append(out, 0)[:len(out)]
			out = out[:len(out):min(cap(out), limit+1)]
		}
		n, err := z.r.Read(out[len(out):cap(out)])
		out = out[:len(out)+n]
		if len(out) > limit {
			z.keep(out)
			return nil, errTooBig
		}
		if err == io.EOF {
			z.keep(out)
			return out, nil
		}
		if err != nil {
			z.keep(out)
			return nil, err
		}
	}
}

// keep retains the output buffer for reuse unless it grew large.
func (z *deflater) keep(out []byte) {
	if cap(out) <= 64<<10 {
		z.out = out[:0]
	} else {
		z.out = nil
	}
}

// compressFrame returns frame (a complete unfragmented server text frame)
// as a compressed frame with RSV1 set, or frame itself when compression
// does not make it smaller.
func (z *deflater) compressFrame(frame []byte) []byte {
	hs := 2
	switch frame[1] & 0x7f {
	case 126:
		hs = 4
	case 127:
		hs = 10
	}
	payload := frame[hs:]
	z.wbuf.Reset()
	if z.w == nil {
		z.w, _ = flate.NewWriter(&z.wbuf, flate.BestSpeed)
	} else {
		z.w.Reset(&z.wbuf)
	}
	if _, err := z.w.Write(payload); err != nil {
		return frame
	}
	if err := z.w.Flush(); err != nil {
		return frame
	}
	c := bytes.TrimSuffix(z.wbuf.Bytes(), deflateTail[:4])
	if len(c) >= len(payload) {
		return frame
	}
	out := make([]byte, headerSize(len(c))+len(c))
	h := headerSize(len(c))
	putHeader(out[:h], opText, len(c))
	out[0] |= 0x40 // RSV1: compressed
	copy(out[h:], c)
	if z.wbuf.Cap() > 256<<10 {
		z.wbuf = bytes.Buffer{}
	}
	return out
}
