package relay

import (
	"flag"
	"strings"
	"testing"
	"time"
)

func TestConfigFlags(t *testing.T) {
	t.Setenv("HERALD_CONTROLLERS", "a:1, b:2")
	t.Setenv("HERALD_KAFKA_PARTITIONS", "6")
	var c Config
	fs := flag.NewFlagSet("x", flag.ContinueOnError)
	c.RegisterFlags(fs)
	if err := fs.Parse([]string{"-addr", "127.0.0.1:9999"}); err != nil {
		t.Fatal(err)
	}
	if err := c.Validate(); err != nil {
		t.Fatal(err)
	}
	if c.Addr != "127.0.0.1:9999" || len(c.Controllers) != 2 || c.Controllers[1] != "b:2" || c.Partitions != 6 ||
		c.Brokers[0] != "127.0.0.1:9092" || c.Topic != "herald.messages" || c.ManagementURL != "http://127.0.0.1:8080" ||
		!c.Multicore || c.MaxMessageSize != 64<<10 || c.PingInterval != 25*time.Second || c.PongTimeout != 10*time.Second ||
		c.HandshakeTimeout != 5*time.Second || c.MaxSubscriptions != 128 || c.OutboundCap != 4<<20 {
		t.Fatalf("config %+v", c)
	}
	bad := Config{Addr: "nope", ManagementURL: "ftp://x", Partitions: -1}
	err := bad.Validate()
	for _, want := range []string{"HERALD_RELAY_ADDR", "HERALD_CONTROLLERS", "HERALD_KAFKA_PARTITIONS", "HERALD_MANAGEMENT_URL"} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("validation error %v does not name %s", err, want)
		}
	}
}
