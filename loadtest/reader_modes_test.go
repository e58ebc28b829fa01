package loadtest

import (
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gobwas/ws"
	"github.com/gobwas/ws/wsutil"
)

// readerModes are the reader modes this system has.
func readerModes() []string {
	if epollSupported {
		return []string{ReaderGoroutine, ReaderEpoll}
	}
	return []string{ReaderGoroutine}
}

// scriptedServer accepts one WebSocket connection, answers its connect and
// subscribe commands, writes stream in random chunks with short pauses
// (so the client sees frames split across reads and several per read),
// and then records what the client sends until it closes.
type scriptedServer struct {
	URL  string
	ln   net.Listener
	done chan struct{}

	mu       sync.Mutex
	received []string // frames from the client after the subscribe reply
	conn     net.Conn
}

func newScriptedServer(t *testing.T, stream []byte, seed uint64) *scriptedServer {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := &scriptedServer{URL: "ws://" + ln.Addr().String() + "/connection/websocket", ln: ln, done: make(chan struct{})}
	t.Cleanup(func() {
		_ = ln.Close()
		s.mu.Lock()
		if s.conn != nil {
			_ = s.conn.Close()
		}
		s.mu.Unlock()
		<-s.done
	})
	go func() {
		defer close(s.done)
		nc, err := ln.Accept()
		if err != nil {
			return
		}
		s.mu.Lock()
		s.conn = nc
		s.mu.Unlock()
		defer nc.Close()
		if _, err := ws.Upgrade(nc); err != nil {
			t.Errorf("scripted server: upgrade: %v", err)
			return
		}
		for _, reply := range []string{`{"id":1,"connect":{"client":"c","version":"script"}}`, `{"id":2,"subscribe":{"epoch":"e","offset":0}}`} {
			if _, _, err := wsutil.ReadClientData(nc); err != nil {
				t.Errorf("scripted server: reading a command: %v", err)
				return
			}
			if err := wsutil.WriteServerText(nc, []byte(reply)); err != nil {
				return
			}
		}
		rd := make(chan struct{})
		go func() {
			defer close(rd)
			for {
				p, op, err := wsutil.ReadClientData(nc)
				if err != nil {
					var ce wsutil.ClosedError
					if errors.As(err, &ce) {
						s.add(fmt.Sprintf("close:%d", ce.Code))
					}
					return
				}
				s.add(opName[op] + ":" + string(p))
			}
		}()
		rng := rand.New(rand.NewPCG(seed, 1))
		for len(stream) > 0 {
			n := min(len(stream), 1+rng.IntN(600))
			if _, err := nc.Write(stream[:n]); err != nil {
				return
			}
			stream = stream[n:]
			if rng.IntN(4) == 0 {
				time.Sleep(time.Duration(rng.IntN(300)) * time.Microsecond)
			}
		}
		<-rd
	}()
	return s
}

func (s *scriptedServer) add(f string) {
	s.mu.Lock()
	s.received = append(s.received, f)
	s.mu.Unlock()
}

// modeStream is a long server stream: pushes of offsets 1…n with a few
// duplicates and swaps, JSON pings, control pings, fragmented messages, a
// frame larger than the epoll reader's buffer, and a close frame (3001)
// at the end.
func modeStream(ch string, n int, seed uint64) []byte {
	rng := rand.New(rand.NewPCG(seed, 2))
	var offs []int
	for i := 1; i <= n; i++ {
		switch {
		case i%97 == 0 && i < n:
			offs = append(offs, i+1, i) // swapped: out of order
			i++
		case i%89 == 0:
			offs = append(offs, i, i) // duplicate
		default:
			offs = append(offs, i)
		}
	}
	var s []byte
	for len(offs) > 0 {
		k := min(len(offs), 1+rng.IntN(3))
		var lines []string
		for _, o := range offs[:k] {
			pad := rng.IntN(200)
			if o == n/2 {
				pad = 100 << 10 // larger than a reactor's read buffer
			}
			lines = append(lines, pushLine(ch, o, pad))
		}
		offs = offs[k:]
		if rng.IntN(10) == 0 {
			lines = append(lines, "{}") // JSON ping: the client answers {}
		}
		msg := strings.Join(lines, "\n")
		switch rng.IntN(8) {
		case 0: // fragmented, with a control ping in between
			cut := rng.IntN(len(msg) + 1)
			s = append(s, serverFrame(false, ws.OpText, false, msg[:cut])...)
			s = append(s, serverFrame(true, ws.OpPing, false, fmt.Sprint(len(s)))...)
			s = append(s, serverFrame(true, ws.OpContinuation, false, msg[cut:])...)
		case 1:
			s = append(s, serverFrame(true, ws.OpPing, false, "p")...)
			s = append(s, serverFrame(true, ws.OpText, false, msg)...)
		default:
			s = append(s, serverFrame(true, ws.OpText, false, msg)...)
		}
	}
	return append(s, serverFrame(true, ws.OpClose, false, string(ws.NewCloseFrameBody(3001, "script over")))...)
}

// Both reader modes must account a session identically: the same
// deliveries, duplicates and reorderings, the same pongs in the same order,
// the same error at the end.
func TestReaderModesSameAccounting(t *testing.T) {
	type result struct {
		delivered uint64
		tr        string
		err       string
		sent      string
	}
	var results []result
	for _, mode := range readerModes() {
		const seed = 7
		stream := modeStream("t:0", 3000, seed)
		srv := newScriptedServer(t, stream, seed)
		cfg, err := ParseArgs([]string{ScenarioBroadcast, "--url", srv.URL, "--secret", testSecret, "--reader", mode,
			"--channel-prefix", "t:", "--source-ips", "none", "--progress=false", "--timeout", "5s"}, io.Discard)
		if err != nil {
			t.Fatal(err)
		}
		r, err := newRunner(cfg, plan{ConnTo: 1})
		if err != nil {
			t.Fatal(err)
		}
		c, err := r.newConn(0, "t", 0)
		if err != nil {
			t.Fatal(err)
		}
		err = c.session(t.Context(), false, nil)
		c.closeSocket()
		<-srv.done
		rep := r.finish()
		if mode == ReaderEpoll {
			if reads, _ := r.reactors.stats(); reads == 0 {
				t.Errorf("epoll mode: the reactors read nothing")
			}
		}
		var de *disconnectError
		if !errors.As(err, &de) || de.code != 3001 {
			t.Errorf("%s: session ended with %v, want the server's 3001", mode, err)
		}
		tr := c.sub.tr
		res := result{
			delivered: c.delivered.Load(),
			tr:        fmt.Sprintf("start=%d last=%d unique=%d dup=%d ooo=%d gaps=%d", tr.start, tr.last, tr.unique, tr.dup, tr.ooo, tr.gaps()),
			err:       fmt.Sprint(err),
			sent:      strings.Join(srv.received, " "),
		}
		t.Logf("%s: delivered %d, %s, %d frames sent back", mode, res.delivered, res.tr, len(srv.received))
		// 30 swaps (every 97th), 32 duplicates (every 89th but one).
		if res.tr != "start=0 last=3000 unique=3000 dup=32 ooo=30 gaps=0" || rep.Counters["malformed"] != 0 || !strings.HasSuffix(res.sent, "close:3001") {
			t.Errorf("%s: %s, sent back …%s", mode, res.tr, res.sent[max(0, len(res.sent)-40):])
		}
		results = append(results, res)
	}
	for i := 1; i < len(results); i++ {
		if results[i] != results[0] {
			t.Errorf("%s and %s differ:\n%+v\n%+v", readerModes()[0], readerModes()[i], results[0], results[i])
		}
	}
}

// The same scenario with both readers: identical accounting (every
// delivery, exactly the one the hook drops lost).
func TestRunReaderModes(t *testing.T) {
	for _, mode := range readerModes() {
		t.Run(mode, func(t *testing.T) {
			s := newFakeServer(t, testSecret)
			res := runScenario(t, s.URL, ScenarioBroadcast, "--conns", "20", "--rate", "40", "--reader", mode, "--test-drop-delivery", "25")
			d := res.Delivery
			if !d.Tracked || d.Expected == 0 || d.Received != d.Expected-1 || d.Lost != 1 || d.DroppedHook != 1 || d.Duplicated != 0 || d.OutOfOrder != 0 {
				t.Errorf("delivery %+v, want all but the hook's one", d)
			}
			if res.Connections.Connected != 21 || res.Connections.AtEnd != 21 || len(res.Errors) != 0 {
				t.Errorf("connections %+v errors %v", res.Connections, res.Errors)
			}
			if s.pongs.Load() == 0 {
				t.Error("server pings were not answered")
			}
		})
	}
}

// waitFor polls cond for up to d.
func waitFor(d time.Duration, cond func() bool) bool {
	end := time.Now().Add(d)
	for time.Now().Before(end) {
		if cond() {
			return true
		}
		time.Sleep(5 * time.Millisecond)
	}
	return cond()
}
