// Package storeopen opens a store.Store from a URI (HERALD_STORE_URI):
//
//	mongodb://…, mongodb+srv://…   MongoDB (database from the URI path, default "herald")
//	sqlite://PATH, file:PATH, PATH SQLite (parent directory created)
//
// Examples: "./data/herald.db", "sqlite:///var/lib/herald/herald.db"
// (absolute), "sqlite://data/herald.db" (relative),
// "mongodb://h1,h2/herald?replicaSet=rs0&w=majority".
package storeopen

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"strings"

	"go.mongodb.org/mongo-driver/v2/x/mongo/driver/connstring"

	"github.com/herald-chat/herald/internal/store"
	"github.com/herald-chat/herald/internal/store/mongo"
	"github.com/herald-chat/herald/internal/store/sqlite"
)

// DefaultMongoDB is the database used when a mongodb URI has no path.
const DefaultMongoDB = "herald"

// Open opens the store uri designates.
func Open(ctx context.Context, uri string) (store.Store, error) {
	kind, target, err := Parse(uri)
	if err != nil {
		return nil, err
	}
	switch kind {
	case "mongo":
		db, err := MongoDatabase(uri)
		if err != nil {
			return nil, err
		}
		s, err := mongo.Open(ctx, uri, db)
		if err != nil {
			return nil, fmt.Errorf("opening store %s: %w", redact(uri), err)
		}
		return s, nil
	default:
		if dir := filepath.Dir(target); dir != "" {
			if err := os.MkdirAll(dir, 0o755); err != nil {
				return nil, fmt.Errorf("opening store: creating directory %s: %w", dir, err)
			}
		}
		s, err := sqlite.Open(ctx, target)
		if err != nil {
			return nil, fmt.Errorf("opening store %s: %w", target, err)
		}
		return s, nil
	}
}

// Parse reports which store uri designates: ("mongo", uri) or
// ("sqlite", file path).
func Parse(uri string) (kind, target string, err error) {
	u := strings.TrimSpace(uri)
	switch {
	case u == "":
		return "", "", errors.New("store URI is empty (set -store-uri / HERALD_STORE_URI, e.g. ./data/herald.db or mongodb://host/herald)")
	case strings.HasPrefix(u, "mongodb://"), strings.HasPrefix(u, "mongodb+srv://"):
		return "mongo", u, nil
	case strings.HasPrefix(u, "sqlite://"):
		p := strings.TrimPrefix(u, "sqlite://")
		if i := strings.IndexAny(p, "?#"); i >= 0 {
			p = p[:i]
		}
		if p == "" {
			return "", "", fmt.Errorf("store URI %q: missing file path", uri)
		}
		return "sqlite", p, nil
	case strings.HasPrefix(u, "file:"):
		p := strings.TrimPrefix(u, "file:")
		p = strings.TrimPrefix(p, "//") // file:///abs → /abs
		if i := strings.IndexAny(p, "?#"); i >= 0 {
			p = p[:i]
		}
		if p == "" {
			return "", "", fmt.Errorf("store URI %q: missing file path", uri)
		}
		return "sqlite", p, nil
	}
	if i := strings.Index(u, "://"); i > 0 && !strings.ContainsAny(u[:i], `/\.`) {
		return "", "", fmt.Errorf("store URI %q: unsupported scheme %q (want mongodb://, mongodb+srv://, sqlite://, file: or a file path)", redact(uri), u[:i])
	}
	return "sqlite", u, nil
}

// MongoDatabase returns the database a mongodb URI names, or
// DefaultMongoDB.
func MongoDatabase(uri string) (string, error) {
	cs, err := connstring.Parse(uri)
	if err != nil {
		// The driver's message may contain the URI: do not repeat it.
		return "", fmt.Errorf("store URI %s: invalid mongodb URI", redact(uri))
	}
	if cs.Database == "" {
		return DefaultMongoDB, nil
	}
	return cs.Database, nil
}

// redact hides a password in uri for error messages.
func redact(uri string) string {
	u, err := url.Parse(uri)
	if err != nil || u.User == nil {
		if err != nil {
			return "<unparsable URI>"
		}
		return uri
	}
	if _, ok := u.User.Password(); ok {
		u.User = url.UserPassword(u.User.Username(), "xxxxx")
	}
	return u.String()
}
