package config

import (
	"flag"
	"strings"
	"testing"
	"time"
)

func TestPrecedenceFlagEnvDefault(t *testing.T) {
	badEnv = nil
	t.Setenv("HERALD_T_ADDR", "env:1")
	t.Setenv("HERALD_T_N", "7")
	t.Setenv("HERALD_T_D", "")
	fs := flag.NewFlagSet("t", flag.ContinueOnError)
	var addr, other string
	var n int
	var d time.Duration
	String(fs, &addr, "addr", "HERALD_T_ADDR", "def:1", "")
	String(fs, &other, "other", "HERALD_T_OTHER", "def:2", "")
	Int(fs, &n, "n", "HERALD_T_N", 1, "")
	Duration(fs, &d, "d", "HERALD_T_D", time.Second, "")
	if err := fs.Parse([]string{"-n", "9"}); err != nil {
		t.Fatal(err)
	}
	if addr != "env:1" || other != "def:2" || n != 9 || d != time.Second {
		t.Fatalf("addr=%q other=%q n=%d d=%s", addr, other, n, d)
	}
	if err := EnvErrors(); err != nil {
		t.Fatal(err)
	}
}

func TestMalformedEnvIsReported(t *testing.T) {
	badEnv = nil
	t.Setenv("HERALD_T_N", "seven")
	t.Setenv("HERALD_T_D", "5 minutes")
	t.Setenv("HERALD_T_B", "maybe")
	fs := flag.NewFlagSet("t", flag.ContinueOnError)
	var n int
	var d time.Duration
	var b bool
	Int(fs, &n, "n", "HERALD_T_N", 1, "")
	Duration(fs, &d, "d", "HERALD_T_D", time.Second, "")
	Bool(fs, &b, "b", "HERALD_T_B", false, "")
	err := EnvErrors()
	if err == nil {
		t.Fatal("no error for malformed env")
	}
	for _, k := range []string{"HERALD_T_N", "HERALD_T_D", "HERALD_T_B"} {
		if !strings.Contains(err.Error(), k) {
			t.Errorf("error %q does not name %s", err, k)
		}
	}
	badEnv = nil
}

func TestList(t *testing.T) {
	got := List(" a, b,,c ,")
	if strings.Join(got, "|") != "a|b|c" {
		t.Fatalf("List = %q", got)
	}
}

func TestFlagName(t *testing.T) {
	for key, want := range map[string]string{"HERALD_RELAY_ADDR": "relay-addr", "HERALD_ARCHIVE_CHUNK_SIZE": "archive-chunk-size", "HERALD_S3_ENDPOINT": "s3-endpoint"} {
		if got := FlagName(key); got != want {
			t.Errorf("FlagName(%s) = %q, want %q", key, got, want)
		}
	}
}

func TestDeprecatedAliasAndUnion(t *testing.T) {
	a := flag.NewFlagSet("a", flag.ContinueOnError)
	b := flag.NewFlagSet("b", flag.ContinueOnError)
	var addrA, addrB string
	var on bool
	String(a, &addrA, "x-addr", "HERALD_X_ADDR", "def", "")
	Deprecated(a, "addr", "x-addr")
	Bool(a, &on, "x-on", "HERALD_X_ON", false, "")
	Deprecated(a, "on", "x-on")
	String(b, &addrB, "x-addr", "HERALD_X_ADDR", "def", "")
	if err := a.Parse([]string{"-addr", "one", "-on"}); err != nil {
		t.Fatal(err)
	}
	if addrA != "one" || !on || DeprecatedAlias(a.Lookup("addr")) != "x-addr" || DeprecatedAlias(a.Lookup("x-addr")) != "" {
		t.Fatalf("alias: addr=%q on=%v", addrA, on)
	}
	u := flag.NewFlagSet("u", flag.ContinueOnError)
	Union(u, func(n string) bool { return n == "x-on" }, a, b)
	if u.Lookup("addr") != nil || u.Lookup("x-on") != nil {
		t.Fatal("union kept an alias or a skipped flag")
	}
	if err := u.Parse([]string{"-x-addr", "two"}); err != nil {
		t.Fatal(err)
	}
	if addrA != "two" || addrB != "two" {
		t.Fatalf("union set %q and %q", addrA, addrB)
	}
}
