package relay

import (
	"bytes"
	"encoding/binary"
	"errors"
	"io"

	"github.com/gobwas/ws"
)

// WebSocket opcodes (RFC 6455 §5.2).
const (
	opContinuation byte = 0x0
	opText         byte = 0x1
	opBinary       byte = 0x2
	opClose        byte = 0x8
	opPing         byte = 0x9
	opPong         byte = 0xA
)

// Close status codes of RFC 6455 used by the relay.
const (
	closeNormal        uint16 = 1000
	closeProtocolError uint16 = 1002
	closeInvalidData   uint16 = 1007
	closeTooBig        uint16 = 1009
)

// maxServerHeader is the largest header of a server frame (no mask).
const maxServerHeader = 10

// frameHeader is a parsed client frame header.
type frameHeader struct {
	fin    bool
	rsv    byte
	op     byte
	masked bool
	mask   [4]byte
	length uint64
	size   int // header size in bytes
}

var errIncomplete = errors.New("incomplete frame header")

// parseFrameHeader parses the header at the start of b without copying. It
// returns errIncomplete when b does not yet hold the whole header.
func parseFrameHeader(b []byte) (h frameHeader, err error) {
	if len(b) < 2 {
		return h, errIncomplete
	}
	h.fin = b[0]&0x80 != 0
	h.rsv = (b[0] >> 4) & 0x7
	h.op = b[0] & 0x0f
	h.masked = b[1]&0x80 != 0
	n := 2
	switch l := b[1] & 0x7f; l {
	case 126:
		if len(b) < 4 {
			return h, errIncomplete
		}
		h.length = uint64(binary.BigEndian.Uint16(b[2:4]))
		n = 4
	case 127:
		if len(b) < 10 {
			return h, errIncomplete
		}
		h.length = binary.BigEndian.Uint64(b[2:10])
		n = 10
	default:
		h.length = uint64(l)
	}
	if h.masked {
		if len(b) < n+4 {
			return h, errIncomplete
		}
		copy(h.mask[:], b[n:n+4])
		n += 4
	}
	h.size = n
	return h, nil
}

// headerSize returns the size of an unmasked server frame header for a
// payload of n bytes.
func headerSize(n int) int {
	switch {
	case n < 126:
		return 2
	case n <= 0xffff:
		return 4
	default:
		return 10
	}
}

// putHeader writes a FIN server frame header for op and a payload of n bytes
// into dst, which must be headerSize(n) long.
func putHeader(dst []byte, op byte, n int) {
	dst[0] = 0x80 | op
	switch len(dst) {
	case 2:
		dst[1] = byte(n)
	case 4:
		dst[1] = 126
		binary.BigEndian.PutUint16(dst[2:], uint16(n))
	default:
		dst[1] = 127
		binary.BigEndian.PutUint64(dst[2:], uint64(n))
	}
}

// appendFrame appends a complete FIN server frame holding payload.
func appendFrame(dst []byte, op byte, payload []byte) []byte {
	hs := headerSize(len(payload))
	dst = append(dst, make([]byte, hs)...)
	putHeader(dst[len(dst)-hs:], op, len(payload))
	return append(dst, payload...)
}

// framePrefixed turns buf, whose first maxServerHeader bytes are reserved and
// followed by the payload, into a complete text frame without copying the
// payload: the header is written right before the payload.
func framePrefixed(buf []byte) []byte {
	n := len(buf) - maxServerHeader
	hs := headerSize(n)
	start := maxServerHeader - hs
	putHeader(buf[start:maxServerHeader], opText, n)
	return buf[start:]
}

// closePayload builds the payload of a close frame: code then reason (the
// reason is cut to fit the 125-byte control frame limit).
func closePayload(code uint16, reason string) []byte {
	if len(reason) > 123 {
		reason = reason[:123]
	}
	p := make([]byte, 2, 2+len(reason))
	binary.BigEndian.PutUint16(p, code)
	return append(p, reason...)
}

// handshakeRW feeds a complete request header block to ws.Upgrader and
// collects its response.
type handshakeRW struct {
	r []byte
	w []byte
}

func (h *handshakeRW) Read(p []byte) (int, error) {
	if len(h.r) == 0 {
		return 0, io.EOF
	}
	n := copy(p, h.r)
	h.r = h.r[n:]
	return n, nil
}

func (h *handshakeRW) Write(p []byte) (int, error) {
	h.w = append(h.w, p...)
	return len(p), nil
}

var headerEnd = []byte("\r\n\r\n")

// endOfHeaders returns the length of the header block in b (including the
// blank line) or -1 when it is not complete yet.
func endOfHeaders(b []byte) int {
	i := bytes.Index(b, headerEnd)
	if i < 0 {
		return -1
	}
	return i + len(headerEnd)
}

// upgrade runs the WebSocket handshake over one complete header block and
// returns the HTTP response to send. ok is false when the request was
// rejected (the response is then an HTTP error and the connection must be
// closed after writing it).
func upgrade(block []byte, path string, maxHeader int) (resp []byte, ok bool) {
	rw := &handshakeRW{r: block}
	u := ws.Upgrader{
		ReadBufferSize: maxHeader,
		OnRequest: func(uri []byte) error {
			if i := bytes.IndexByte(uri, '?'); i >= 0 {
				uri = uri[:i]
			}
			if string(uri) != path {
				return ws.RejectConnectionError(ws.RejectionStatus(404))
			}
			return nil
		},
	}
	if _, err := u.Upgrade(rw); err != nil {
		if len(rw.w) == 0 {
			rw.w = append(rw.w, "HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"...)
		}
		return rw.w, false
	}
	return rw.w, true
}
