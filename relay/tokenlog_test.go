package relay

import (
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/herald-chat/herald/internal/auth"
	"github.com/herald-chat/herald/internal/testutil"
)

// TestTokensNeverLogged sends connection and subscription tokens (valid,
// refreshed, expired, tampered, signed with another key, cut off inside
// malformed JSON) through a relay logging at debug level, then checks that
// its log holds no token and no token's signature.
func TestTokensNeverLogged(t *testing.T) {
	var logs testutil.LockedBuffer
	e := startEnvLog(t, nil, slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug})))
	addr := e.srv.Addr()
	var secrets []string
	keep := func(tok string) string { secrets = append(secrets, tok); return tok }
	tampered := func(tok string) string { return keep(tok[:len(tok)-4] + "AAAA") }

	// A connection that refreshes both tokens, then presents bad ones.
	w, _ := connectRaw(t, addr, keep(token(t, "alice", nil, nil, time.Hour)))
	w.write(textFrame(`{"id":2,"refresh":{"token":"` + keep(token(t, "alice", nil, nil, 2*time.Hour)) + `"}}`))
	if r := decodeReply(t, w.readText()); r.Refresh == nil {
		t.Fatalf("refresh: %+v", r)
	}
	w.write(textFrame(`{"id":3,"subscribe":{"channel":"vip","token":"` + keep(subToken(t, "alice", "vip")) + `"}}`))
	if r := decodeReply(t, w.readText()); r.Subscribe == nil {
		t.Fatalf("subscribe: %+v", r)
	}
	w.write(textFrame(`{"id":4,"sub_refresh":{"channel":"vip","token":"` + keep(subToken(t, "alice", "vip")) + `"}}`))
	if r := decodeReply(t, w.readText()); r.SubRefresh == nil {
		t.Fatalf("sub_refresh: %+v", r)
	}
	w.write(textFrame(`{"id":5,"subscribe":{"channel":"vip2","token":"` + tampered(subToken(t, "alice", "vip2")) + `"}}`))
	if r := decodeReply(t, w.readText()); r.Error == nil {
		t.Fatalf("subscribe with a tampered token: %+v, want an error", r)
	}
	w.write(textFrame(`{"id":6,"refresh":{"token":"` + tampered(token(t, "alice", nil, nil, time.Hour)) + `"}}`))
	w.expectClose(3500)

	// Refused connects.
	w = dialWS(t, addr)
	w.write(textFrame(connectCmd(1, keep(tokenExpiring(t, "bob", nil, nil, time.Now().Add(-time.Minute))))))
	if r := decodeReply(t, w.readText()); r.Error == nil || r.Error.Code != 109 {
		t.Fatalf("expired token: %+v, want error 109", r)
	}
	otherKey, err := auth.Sign("another-secret-of-32-bytes-or-more!", auth.NewClaims("eve", nil, time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	for _, bad := range []string{tampered(token(t, "carol", nil, nil, time.Hour)), keep(otherKey)} {
		w = dialWS(t, addr)
		w.write(textFrame(connectCmd(1, bad)))
		w.expectClose(3500)
	}
	// Malformed JSON around a valid token: refused as a bad request.
	w = dialWS(t, addr)
	w.write(textFrame(`{"id":1,"connect":{"token":"` + keep(token(t, "dave", nil, nil, time.Hour)) + `","name":`))
	w.expectClose(3501)

	log := logs.String()
	if !strings.Contains(log, "closing connection") {
		t.Fatalf("the debug log was not captured:\n%s", log)
	}
	for _, tok := range secrets {
		sig := tok[strings.LastIndexByte(tok, '.')+1:]
		if strings.Contains(log, tok) || strings.Contains(log, sig) {
			t.Errorf("the relay logged token %q (or its signature):\n%s", tok, log)
		}
	}
}
