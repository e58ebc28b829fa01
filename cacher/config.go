package cacher

import (
	"errors"
	"flag"
	"fmt"
	"net"
	"time"

	"github.com/herald-chat/herald/internal/auth"
	"github.com/herald-chat/herald/internal/config"
)

// Config of the cacher.
type Config struct {
	// Addr of the HTTP API (POST /v1/archive/run). Default 127.0.0.1:8081
	// (HERALD_CACHER_ADDR).
	Addr string
	// ChunkSize K, messages per chunk; must equal the archive client's (the
	// bucket's). 0 (RegisterFlags leaves it so) takes the archive client's,
	// whose -archive-chunk-size (HERALD_ARCHIVE_CHUNK_SIZE) is the one flag
	// of the setting.
	ChunkSize int
	// MinAge: a chunk is archived once its newest message is older than
	// this. Default 24h (HERALD_ARCHIVE_MIN_AGE).
	MinAge time.Duration
	// Interval between periodic runs; the first run starts with Run.
	// Default 5m (HERALD_ARCHIVE_INTERVAL).
	Interval time.Duration
	// ChannelPage is how many channels are listed per store call.
	// Default 500.
	ChannelPage int
	// LeaseTTL is how long the run lease lasts without renewal; a crashed
	// instance blocks runs elsewhere for at most this long. Default 1m
	// (HERALD_CACHER_LEASE_TTL).
	LeaseTTL time.Duration
	// Instance identifies this cacher as a lease owner (reported to other
	// instances' triggers). Default "<hostname>/<addr>/<random>"
	// (HERALD_CACHER_INSTANCE); it must differ between instances.
	Instance string
	// RequireAdmin makes the HTTP API answer only requests carrying an
	// admin token (`herald token --admin`) that Verifier accepts, as the
	// management API answers only tokens. RegisterFlags defaults it to true
	// (HERALD_CACHER_REQUIRE_ADMIN), so `herald cacher` refuses to start
	// without HERALD_TOKEN_SECRET unless it is explicitly set false
	// (-cacher-require-admin=false: anyone who reaches the address may
	// start runs). `herald dev` runs the API open on loopback unless
	// HERALD_CACHER_REQUIRE_ADMIN is set. The zero Config leaves it off.
	RequireAdmin bool
	// Verifier checks the admin tokens; required with RequireAdmin.
	Verifier *auth.Verifier
}

// LeaseName is the store lease that serializes archive runs across cacher
// instances.
const LeaseName = "cacher.archive-run"

// RegisterFlags binds the config to flags (flag > HERALD_* env > default):
// -cacher-addr, -archive-min-age, -archive-interval, -cacher-lease-ttl,
// -cacher-instance, -cacher-require-admin (default true). The chunk size is the archive's
// (-archive-chunk-size, archive.Config).
func (c *Config) RegisterFlags(fs *flag.FlagSet) {
	config.String(fs, &c.Addr, "cacher-addr", "HERALD_CACHER_ADDR", "127.0.0.1:8081", "cacher HTTP API address")
	config.Duration(fs, &c.MinAge, "archive-min-age", "HERALD_ARCHIVE_MIN_AGE", 24*time.Hour, "archive chunks whose newest message is older than this")
	config.Duration(fs, &c.Interval, "archive-interval", "HERALD_ARCHIVE_INTERVAL", 5*time.Minute, "interval between archive runs")
	config.Duration(fs, &c.LeaseTTL, "cacher-lease-ttl", "HERALD_CACHER_LEASE_TTL", time.Minute, "lifetime of the store lease that allows one archive run at a time across instances (renewed every third of it)")
	config.String(fs, &c.Instance, "cacher-instance", "HERALD_CACHER_INSTANCE", "", "this instance's id as lease owner (default <hostname>/<addr>/<random>)")
	config.Deprecated(fs, "cacher-min-age", "archive-min-age")
	config.Deprecated(fs, "cacher-interval", "archive-interval")
	config.Bool(fs, &c.RequireAdmin, "cacher-require-admin", "HERALD_CACHER_REQUIRE_ADMIN", true, "answer API requests only with an admin token (herald token --admin) signed with HERALD_TOKEN_SECRET; false serves the API to anyone who reaches it (herald dev: open on loopback unless set)")
}

// Validate reports configuration errors naming the flag and env variable.
func (c *Config) Validate() error {
	if _, _, err := net.SplitHostPort(c.Addr); err != nil {
		return fmt.Errorf("-cacher-addr (HERALD_CACHER_ADDR) %q: %v", c.Addr, err)
	}
	if c.ChunkSize < 0 {
		return fmt.Errorf("-archive-chunk-size (HERALD_ARCHIVE_CHUNK_SIZE) %d: must be positive", c.ChunkSize)
	}
	if c.MinAge < 0 {
		return fmt.Errorf("-archive-min-age (HERALD_ARCHIVE_MIN_AGE) %s: must not be negative", c.MinAge)
	}
	if c.Interval <= 0 {
		return fmt.Errorf("-archive-interval (HERALD_ARCHIVE_INTERVAL) %s: must be positive", c.Interval)
	}
	if c.LeaseTTL < 0 || (c.LeaseTTL > 0 && c.LeaseTTL < 30*time.Millisecond) {
		return fmt.Errorf("-cacher-lease-ttl (HERALD_CACHER_LEASE_TTL) %s: must be at least 30ms", c.LeaseTTL)
	}
	if c.RequireAdmin && c.Verifier == nil {
		return errors.New("-cacher-require-admin (HERALD_CACHER_REQUIRE_ADMIN, on by default) needs the token secret: set HERALD_TOKEN_SECRET (admin tokens: herald token --admin), or set -cacher-require-admin=false (HERALD_CACHER_REQUIRE_ADMIN=false) to serve the API without tokens")
	}
	return nil
}
