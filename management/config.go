package management

import (
	"flag"
	"fmt"
	"net"

	"github.com/herald-chat/herald/internal/config"
	"github.com/herald-chat/herald/management/webui"
)

// Config of the management service.
type Config struct {
	// Addr of the REST API. Default 127.0.0.1:8080 (HERALD_MANAGEMENT_ADDR).
	Addr string
	// CacheBytes bounds the LRU of decoded archive chunks. Default 64 MiB
	// (HERALD_MANAGEMENT_CACHE_BYTES). 0 disables caching only when set
	// explicitly through New's caller; RegisterFlags defaults to 64 MiB.
	CacheBytes int
	// Web is the chat page (package webui), off by default.
	Web webui.Config
	// DevTokens, set only by `herald dev` (no flag), serves the page's
	// POST /dev/token; without it that route is a 404.
	DevTokens *webui.DevTokens
}

// RegisterFlags binds the config to flags (flag > HERALD_* env > default):
// -management-addr, -management-cache-bytes.
func (c *Config) RegisterFlags(fs *flag.FlagSet) {
	config.String(fs, &c.Addr, "management-addr", "HERALD_MANAGEMENT_ADDR", "127.0.0.1:8080", "management REST API address")
	config.Int(fs, &c.CacheBytes, "management-cache-bytes", "HERALD_MANAGEMENT_CACHE_BYTES", 64<<20, "bytes of decoded archive chunks cached in memory")
	c.Web.RegisterFlags(fs)
}

// Validate reports configuration errors naming the flag and env variable.
func (c *Config) Validate() error {
	if _, _, err := net.SplitHostPort(c.Addr); err != nil {
		return fmt.Errorf("-management-addr (HERALD_MANAGEMENT_ADDR) %q: %v", c.Addr, err)
	}
	if c.CacheBytes < 0 {
		return fmt.Errorf("-management-cache-bytes (HERALD_MANAGEMENT_CACHE_BYTES) %d: must not be negative", c.CacheBytes)
	}
	return c.Web.Validate()
}
