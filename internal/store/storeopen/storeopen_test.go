package storeopen_test

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/herald-chat/herald/internal/store/storeopen"
)

func TestParse(t *testing.T) {
	for _, c := range []struct {
		uri, kind, target string
		wantErr           bool
	}{
		{uri: "mongodb://localhost:27017/herald", kind: "mongo", target: "mongodb://localhost:27017/herald"},
		{uri: "mongodb+srv://u:p@cluster.example.com/db?w=majority", kind: "mongo", target: "mongodb+srv://u:p@cluster.example.com/db?w=majority"},
		{uri: "sqlite://data/herald.db", kind: "sqlite", target: "data/herald.db"},
		{uri: "sqlite:///var/lib/herald.db", kind: "sqlite", target: "/var/lib/herald.db"},
		{uri: "file:data/x.db", kind: "sqlite", target: "data/x.db"},
		{uri: "file:///tmp/x.db", kind: "sqlite", target: "/tmp/x.db"},
		{uri: "./data/herald.db", kind: "sqlite", target: "./data/herald.db"},
		{uri: "/abs/herald.db", kind: "sqlite", target: "/abs/herald.db"},
		{uri: "", wantErr: true},
		{uri: "sqlite://", wantErr: true},
		{uri: "postgres://localhost/db", wantErr: true},
		{uri: "redis://x", wantErr: true},
	} {
		t.Run(c.uri, func(t *testing.T) {
			kind, target, err := storeopen.Parse(c.uri)
			if c.wantErr {
				if err == nil {
					t.Fatalf("Parse(%q) = %s %s, want error", c.uri, kind, target)
				}
				return
			}
			if err != nil || kind != c.kind || target != c.target {
				t.Fatalf("Parse(%q) = %q %q %v, want %q %q", c.uri, kind, target, err, c.kind, c.target)
			}
		})
	}
}

func TestOpenSQLiteCreatesDir(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	for _, uri := range []string{
		filepath.Join(dir, "a", "b", "herald.db"),
		"sqlite://" + filepath.Join(dir, "c", "herald.db"),
		"file:" + filepath.Join(dir, "d", "herald.db"),
	} {
		s, err := storeopen.Open(ctx, uri)
		if err != nil {
			t.Fatalf("Open(%q): %v", uri, err)
		}
		if err := s.Ping(ctx); err != nil {
			t.Fatalf("Ping: %v", err)
		}
		if err := s.Close(); err != nil {
			t.Fatalf("Close: %v", err)
		}
	}
	for _, sub := range []string{"a/b", "c", "d"} {
		if _, err := os.Stat(filepath.Join(dir, sub, "herald.db")); err != nil {
			t.Fatalf("database file in %s: %v", sub, err)
		}
	}
}

func TestOpenUnsupported(t *testing.T) {
	_, err := storeopen.Open(context.Background(), "postgres://u:secret@h/db")
	if err == nil || !strings.Contains(err.Error(), "unsupported scheme") || strings.Contains(err.Error(), "secret") {
		t.Fatalf("err = %v", err)
	}
}

func TestMongoDatabase(t *testing.T) {
	for uri, want := range map[string]string{
		"mongodb://localhost":                                        "herald",
		"mongodb://localhost:27017/":                                 "herald",
		"mongodb://h1:27017,h2:27017/chat?replicaSet=rs0&w=majority": "chat",
		"mongodb://u:p@localhost/other?authSource=admin":             "other",
	} {
		got, err := storeopen.MongoDatabase(uri)
		if err != nil || got != want {
			t.Errorf("MongoDatabase(%q) = %q, %v; want %q", uri, got, err, want)
		}
	}
	if _, err := storeopen.MongoDatabase("mongodb://u:secret@h/db?w=bogus&&&connectTimeoutMS=abc"); err == nil {
		t.Log("driver accepted a questionable URI; fine")
	} else if strings.Contains(err.Error(), "secret") {
		t.Fatalf("error leaks password: %v", err)
	}
}
