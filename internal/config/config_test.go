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
