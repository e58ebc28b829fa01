package loadtest

import (
	"encoding/binary"
	"io"

	"github.com/gobwas/ws"
)

// Reader modes (--reader): how a connection reads once its session is ready.
const (
	// ReaderGoroutine: the connection's goroutine blocks in a bufio read of
	// its net.Conn. Every delivery costs a read with data, a read returning
	// EAGAIN and a park/wake through Go's netpoller.
	ReaderGoroutine = "goroutine"
	// ReaderEpoll (Linux): the connection hands its socket to one of a few
	// reactor goroutines (reactor_linux.go), each polling its sockets with
	// its own epoll set and reading them with one shared buffer: about one
	// read(2) per delivery and no goroutine switch.
	ReaderEpoll = "epoll"
)

// The epoll reader parses frames from the bytes a read(2) returned rather
// than from a bufio.Reader: feed takes each read's bytes, handles every
// complete frame in place and keeps only an incomplete frame's bytes (in
// c.part, allocated when needed and released when the frame is complete).
// The semantics are readFrame's: control frames are answered (ping → pong,
// close → close and a disconnectError), fragments are joined (c.rbuf),
// --max-frame is checked as soon as a header arrives (errFrameLarge), and
// every complete text message goes to handleFrame.

// feed handles the bytes of one read. data is only used during the call
// (it may be the reactor's shared buffer; masked payloads are unmasked in
// place).
func (c *conn) feed(data []byte) error {
	// Complete a frame begun by an earlier read, taking only its bytes.
	for len(c.part) > 0 {
		_, hl, want, err := c.frameAt(c.part)
		if err != nil {
			return err
		}
		if len(c.part) < want {
			take := min(want-len(c.part), len(data))
			if cap(c.part) < want && hl > 0 {
				np := make([]byte, len(c.part), want)
				copy(np, c.part)
				c.part = np
			}
			c.part = append(c.part, data[:take]...)
			data = data[take:]
			if len(c.part) < want {
				return nil // read exhausted
			}
			if hl == 0 {
				continue // the header is complete now: learn the frame's size
			}
		}
		_, _, err = c.consume(c.part) // exactly one frame
		c.part = nil
		if err != nil {
			return err
		}
	}
	n, want, err := c.consume(data)
	if err != nil {
		return err
	}
	if rest := data[n:]; len(rest) > 0 {
		c.part = append(make([]byte, 0, max(want, len(rest))), rest...)
	}
	return nil
}

// consume handles the complete frames at the start of b and returns how
// many bytes they took and, for the incomplete frame after them, how many
// bytes it needs to be parsed further (header) or handled (whole frame).
func (c *conn) consume(b []byte) (n, want int, err error) {
	for {
		h, hl, want, err := c.frameAt(b[n:])
		if err != nil {
			return n, 0, err
		}
		if hl == 0 || len(b)-n < want {
			return n, want, nil
		}
		p := b[n+hl : n+want]
		n += want
		if err := c.onFrame(h, p); err != nil {
			return n, 0, err
		}
	}
}

// frameAt parses the frame header at the start of b. hl is the header's
// size, 0 when b does not hold all of it yet; want is the size of the whole
// frame (hl > 0) or the bytes needed to parse the header (hl == 0).
func (c *conn) frameAt(b []byte) (h ws.Header, hl, want int, err error) {
	if len(b) < 2 {
		return h, 0, 2, nil
	}
	hl = 2
	if b[1]&0x80 != 0 {
		h.Masked = true
		hl += 4
	}
	switch l := b[1] & 0x7f; l {
	case 126:
		hl += 2
	case 127:
		hl += 8
	default:
		h.Length = int64(l)
	}
	if len(b) < hl {
		return h, 0, hl, nil
	}
	h.Fin = b[0]&0x80 != 0
	h.Rsv = (b[0] & 0x70) >> 4
	h.OpCode = ws.OpCode(b[0] & 0x0f)
	i := 2
	switch b[1] & 0x7f {
	case 126:
		h.Length = int64(binary.BigEndian.Uint16(b[2:]))
		i += 2
	case 127:
		if b[2]&0x80 != 0 {
			return h, 0, 0, ws.ErrHeaderLengthMSB
		}
		h.Length = int64(binary.BigEndian.Uint64(b[2:]))
		i += 8
	}
	if h.Masked {
		copy(h.Mask[:], b[i:i+4])
	}
	if h.OpCode.IsControl() {
		if h.Length > int64(len(c.ctrl)) || !h.Fin {
			return h, 0, 0, ws.ErrProtocolControlPayloadOverflow
		}
	} else if int64(len(c.rbuf))+h.Length > c.r.cfg.MaxFrame {
		return h, 0, 0, errFrameLarge
	}
	return h, hl, hl + int(h.Length), nil
}

// onFrame handles one complete frame with payload p.
func (c *conn) onFrame(h ws.Header, p []byte) error {
	if h.Masked {
		ws.Cipher(p, h.Mask, 0)
	}
	if h.OpCode.IsControl() {
		switch h.OpCode {
		case ws.OpPing:
			return c.writeControl(ws.OpPong, p)
		case ws.OpClose:
			code, reason := ws.ParseCloseFrameData(p)
			_ = c.writeControl(ws.OpClose, p[:min(len(p), 2)])
			return &disconnectError{code: uint32(code), reason: reason, reconnect: code < 3500}
		}
		return nil
	}
	if h.Fin && len(c.rbuf) == 0 {
		return c.handleFrame(p) // the common case: in place, no copy
	}
	c.rbuf = append(c.rbuf, p...)
	if !h.Fin {
		return nil
	}
	err := c.handleFrame(c.rbuf)
	c.rbuf = c.rbuf[:0]
	if cap(c.rbuf) > 64<<10 {
		c.rbuf = nil // do not keep a rare large message's buffer
	}
	return err
}

// eofError is what the goroutine reader returns at the end of the stream:
// io.EOF between frames, io.ErrUnexpectedEOF within one.
func (c *conn) eofError() error {
	if len(c.part) > 0 {
		return io.ErrUnexpectedEOF
	}
	return io.EOF
}
