package relay

import (
	"sync"
	"time"

	"github.com/herald-chat/herald/internal/protocol"
	heraldv1 "github.com/herald-chat/herald/proto/herald/v1"
)

// Server API commands (disconnect, unsubscribe, channels, info) arrive on a
// controller stream (ControllerMessage.command). The link's session
// goroutine hands the command to every loop as a task (runCommand never
// blocks); each loop runs it on its own connections and merges its part
// into the command's reply under cmdRun.mu (a leaf); the last loop queues
// the reply on the same link (link.enqueue: the link's sender goroutine
// sends it). Commands are not deduplicated by id: the management service
// sends a command to one controller and retries another only when that
// call failed, and running disconnect or unsubscribe again affects nothing.

// unsubServer is the unsubscribe push code of a server API unsubscribe
// (Centrifugo's "server unsubscribe": the SDKs do not resubscribe).
const unsubServer = 2000

// cmdRun is one command being run on the loops.
type cmdRun struct {
	cmd  *heraldv1.Command
	link *link

	mu      sync.Mutex
	pending int
	reply   *heraldv1.CommandReply
	counts  map[string]uint32   // channels: subscribers per channel
	chans   map[string]struct{} // info: distinct channels
}

// runCommand starts cmd on every loop; the reply goes out on l once all of
// them ran it. It never blocks (link session goroutine).
func (s *Server) runCommand(l *link, cmd *heraldv1.Command) {
	loops := s.allLoops()
	run := &cmdRun{cmd: cmd, link: l, pending: len(loops), reply: &heraldv1.CommandReply{Id: cmd.GetId()}}
	switch cmd.GetKind().(type) {
	case *heraldv1.Command_Channels:
		run.counts = map[string]uint32{}
	case *heraldv1.Command_Info:
		run.chans = map[string]struct{}{}
		run.reply.Info = &heraldv1.NodeInfo{Id: s.cfg.RelayID, Kind: "relay", Version: Version,
			UptimeSeconds: int64(time.Since(s.startedAt).Seconds())}
	case *heraldv1.Command_Disconnect, *heraldv1.Command_Unsubscribe:
	default:
		run.reply.Error = "unknown command"
		run.pending = 0
	}
	if run.pending == 0 {
		run.finish()
		return
	}
	for _, lp := range loops {
		lp.execute(func() { lp.runCommand(run) })
	}
}

// runCommand runs run's command on this loop's connections (loop task).
func (l *loop) runCommand(run *cmdRun) {
	var affected uint32
	var counts map[string]uint32
	var conns, subs uint32
	switch k := run.cmd.GetKind().(type) {
	case *heraldv1.Command_Disconnect:
		d := k.Disconnect
		disc := protocol.Disconnect{Code: uint16(d.GetCode()), Reason: d.GetReason()}
		if disc.Code == 0 {
			disc = protocol.DisconnectForceNoReconnect
		}
		for cl := range l.allConns {
			if cl.isUser(d.GetUser(), d.GetClient()) {
				cl.disconnect(disc)
				affected++
			}
		}
	case *heraldv1.Command_Unsubscribe:
		u := k.Unsubscribe
		for cl := range l.allConns {
			if !cl.isUser(u.GetUser(), u.GetClient()) {
				continue
			}
			if sub := cl.subs.get(u.GetChannel()); sub != nil {
				l.scratch = protocol.AppendUnsubscribePush(l.scratch[:0], sub.ch, unsubServer, "server unsubscribe")
				cl.enqueueJSON(l.scratch)
				l.removeSub(cl, sub)
				cl.recomputeSubExpiry()
				affected++
			}
		}
	case *heraldv1.Command_Channels:
		pat := k.Channels.GetPattern()
		counts = map[string]uint32{}
		for ch, cs := range l.subs {
			if len(cs.subs) > 0 && (pat == "" || matchGlob(pat, ch)) {
				counts[ch] = uint32(len(cs.subs))
			}
		}
	case *heraldv1.Command_Info:
		conns = uint32(l.nconns)
		for _, cs := range l.subs {
			subs += uint32(len(cs.subs))
		}
	}
	run.mu.Lock()
	defer run.mu.Unlock()
	run.reply.Affected += affected
	for ch, n := range counts {
		run.counts[ch] += n
	}
	if info := run.reply.Info; info != nil {
		info.Connections += conns
		info.Subscriptions += subs
		for ch := range l.subs {
			run.chans[ch] = struct{}{}
		}
	}
	run.pending--
	if run.pending == 0 {
		run.finish()
	}
}

// finish completes the reply and queues it on the link. Caller holds
// run.mu (or is the only user of run).
func (run *cmdRun) finish() {
	for ch, n := range run.counts {
		run.reply.Channels = append(run.reply.Channels, &heraldv1.ChannelCount{Channel: ch, Subscribers: n})
	}
	if info := run.reply.Info; info != nil {
		info.Channels = uint32(len(run.chans))
	}
	run.link.enqueue(&heraldv1.RelayMessage{Kind: &heraldv1.RelayMessage_Reply{Reply: run.reply}}, 1)
}

// isUser reports whether cl is a connected client of user (and has the
// client id, when client is set).
func (cl *client) isUser(user, client string) bool {
	if cl.claims == nil || user == "" || cl.claims.Subject != user || (cl.state != stateConnected && cl.state != stateConnecting) {
		return false
	}
	return client == "" || formatUUID(cl.id) == client
}

// matchGlob matches s against a glob pattern: '*' any run of characters
// (also none), '?' one character, everything else itself (the server API's
// channels pattern, as Centrifugo's).
func matchGlob(pat, s string) bool {
	px, sx := 0, 0
	star, next := -1, 0
	for sx < len(s) {
		switch {
		case px < len(pat) && (pat[px] == '?' || pat[px] == s[sx]):
			px++
			sx++
		case px < len(pat) && pat[px] == '*':
			star, next = px, sx
			px++
		case star >= 0:
			px = star + 1
			next++
			sx = next
		default:
			return false
		}
	}
	for px < len(pat) && pat[px] == '*' {
		px++
	}
	return px == len(pat)
}
