package relay

import (
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	pathpkg "path"
	"strings"
	"unicode/utf8"

	"github.com/gobwas/ws"
	"github.com/gobwas/ws/wsflate"
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

// rsv1 is the RSV1 bit as parsed into frameHeader.rsv: the
// permessage-deflate "compressed" flag (RFC 7692).
const rsv1 byte = 0x4

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
// closed after writing it): 404 for another path, 403 for an Origin not in
// origins (empty: all allowed). With compress, permessage-deflate is
// accepted when offered, always without context takeover in both
// directions (RFC 7692 lets the server require client_no_context_takeover),
// and deflate reports it.
func upgrade(block []byte, path string, maxHeader int, origins []string, compress bool) (resp []byte, ok, deflate bool) {
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
	if len(origins) > 0 {
		u.OnHeader = func(key, value []byte) error {
			if bytes.EqualFold(key, []byte("Origin")) && !originAllowed(origins, value) {
				return ws.RejectConnectionError(ws.RejectionStatus(403))
			}
			return nil
		}
	}
	var ext *wsflate.Extension
	if compress {
		ext = &wsflate.Extension{Parameters: wsflate.Parameters{ServerNoContextTakeover: true, ClientNoContextTakeover: true}}
		u.Negotiate = ext.Negotiate
	}
	if _, err := u.Upgrade(rw); err != nil {
		if len(rw.w) == 0 {
			rw.w = append(rw.w, "HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"...)
		}
		return rw.w, false, false
	}
	if ext != nil {
		_, deflate = ext.Accepted()
	}
	return rw.w, true, deflate
}

// originAllowed matches an Origin header value against the allowlist:
// exact (case-insensitive) or path.Match patterns; "*" allows all.
func originAllowed(allowed []string, origin []byte) bool {
	o := strings.ToLower(string(origin))
	for _, a := range allowed {
		a = strings.ToLower(a)
		if a == "*" || a == o {
			return true
		}
		if ok, _ := pathpkg.Match(a, o); ok {
			return true
		}
	}
	return false
}

// validCloseCode reports whether a client may send code in a close frame
// (RFC 6455 §7.4; 1004-1006 and 1015 are reserved, 1012-1014 are
// registered by IANA).
func validCloseCode(code uint16) bool {
	switch {
	case code >= 1000 && code <= 1003, code >= 1007 && code <= 1014:
		return true
	case code >= 3000 && code <= 4999:
		return true
	}
	return false
}

// validUTF8Prefix validates b, the next bytes of a text message whose
// earlier bytes were valid and complete up to here. n is the length of the
// complete, valid runes at its start; ok is false as soon as b cannot be
// the start of valid UTF-8. An incomplete sequence at the end is kept for
// the next call: utf8.FullRune reports false only for a prefix that some
// continuation can still complete (it checks the lead byte and the
// continuation bytes seen so far).
func validUTF8Prefix(b []byte) (n int, ok bool) {
	end := len(b)
	for i := len(b) - 1; i >= 0 && i >= len(b)-3; i-- {
		if utf8.RuneStart(b[i]) {
			if !utf8.FullRune(b[i:]) {
				end = i
			}
			break
		}
	}
	return end, utf8.Valid(b[:end])
}
