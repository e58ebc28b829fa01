package relay

import (
	"strings"
	"testing"

	heraldv1 "github.com/herald-chat/herald/proto/herald/v1"
)

// TestPushGroups: a controller batch of consecutive publications of a
// channel becomes one shared frame ("\n"-separated pushes); a subscriber
// positioned in the middle of the run gets only the rest; one already past
// it gets nothing; a non-publication item in between splits the run.
func TestPushGroups(t *testing.T) {
	s, l := benchServer(t, "room", 0)
	l.el = inlineLoop{}
	conns := make([]*slowConn, 3)
	subs := make([]*subscription, 3)
	for i, last := range []uint64{0, 2, 9} {
		conns[i] = &slowConn{}
		cl := &client{c: conns[i], l: l, state: stateConnected}
		l.addConn(cl)
		subs[i] = &subscription{ch: "room", state: subLive, last: last}
		l.addSub(cl, subs[i])
		s.router.shard("room").m["room"].perLoop[0]++
	}
	var pubs []*heraldv1.Publication
	for seq := uint64(1); seq <= 4; seq++ {
		pubs = append(pubs, &heraldv1.Publication{Channel: "room", Seq: seq, Epoch: "e", Message: &heraldv1.Message{Data: []byte("{\"n\":\n" + strings.Repeat("x", int(seq)) + "}")}})
	}
	s.router.handleBatch(pubs)

	offsets := func(c *slowConn) (frames int, got []string) {
		for _, w := range c.written {
			frames++
			hs := 2
			if w[1]&0x7f == 126 {
				hs = 4
			}
			for _, m := range strings.Split(string(w[hs:]), "\n") {
				i := strings.Index(m, `"offset":`)
				got = append(got, m[i+9:len(m)-3])
			}
		}
		return frames, got
	}
	for i, want := range []string{"1,2,3,4", "3,4", ""} {
		frames, got := offsets(conns[i])
		if strings.Join(got, ",") != want || (want != "" && frames != 1) {
			t.Errorf("subscriber %d (last %d): %d frames, offsets %v, want %s in one frame", i, []uint64{0, 2, 9}[i], frames, got, want)
		}
	}
	if subs[0].last != 4 || subs[1].last != 4 || subs[2].last != 9 {
		t.Errorf("lasts %d %d %d", subs[0].last, subs[1].last, subs[2].last)
	}

	// A reset between publications splits the group.
	b := s.router.newBatch()
	e := s.router.shard("room").m["room"]
	e.last = 4
	b.addPub(e, &heraldv1.Publication{Channel: "room", Seq: 5})
	b.add(e, item{kind: itemReady, ch: "room"})
	b.addPub(e, &heraldv1.Publication{Channel: "room", Seq: 6})
	b.addPub(e, &heraldv1.Publication{Channel: "room", Seq: 7})
	if len(b.groups) != 2 || b.groups[0].last != 5 || b.groups[1].first != 6 || b.groups[1].last != 7 {
		t.Fatalf("groups %+v", b.groups)
	}
}
