// Package config binds command-line flags to HERALD_* environment variables:
// every setting is a flag whose default comes from its environment variable,
// falling back to the documented default. Precedence: flag > env > default.
package config

import (
	"flag"
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"
)

// Env returns the value of the environment variable key, or def when unset or
// empty.
func Env(key, def string) string {
	if v := os.Getenv(key); v != "" {
		return v
	}
	return def
}

// String registers a string flag defaulting to env key or def.
func String(fs *flag.FlagSet, p *string, name, key, def, usage string) {
	fs.StringVar(p, name, Env(key, def), usage+envHint(key))
}

// Int registers an int flag defaulting to env key or def. A malformed env
// value is reported by Errors.
func Int(fs *flag.FlagSet, p *int, name, key string, def int, usage string) {
	v := def
	if s := os.Getenv(key); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil {
			badEnv = append(badEnv, fmt.Sprintf("%s=%q is not an integer", key, s))
		} else {
			v = n
		}
	}
	fs.IntVar(p, name, v, usage+envHint(key))
}

// Duration registers a duration flag defaulting to env key or def.
func Duration(fs *flag.FlagSet, p *time.Duration, name, key string, def time.Duration, usage string) {
	v := def
	if s := os.Getenv(key); s != "" {
		d, err := time.ParseDuration(s)
		if err != nil {
			badEnv = append(badEnv, fmt.Sprintf("%s=%q is not a duration (e.g. 5m, 24h)", key, s))
		} else {
			v = d
		}
	}
	fs.DurationVar(p, name, v, usage+envHint(key))
}

// Bool registers a bool flag defaulting to env key or def.
func Bool(fs *flag.FlagSet, p *bool, name, key string, def bool, usage string) {
	v := def
	if s := os.Getenv(key); s != "" {
		b, err := strconv.ParseBool(s)
		if err != nil {
			badEnv = append(badEnv, fmt.Sprintf("%s=%q is not a boolean", key, s))
		} else {
			v = b
		}
	}
	fs.BoolVar(p, name, v, usage+envHint(key))
}

var badEnv []string

// EnvErrors returns the malformed environment values seen while registering
// flags, as one error (nil when all were fine).
func EnvErrors() error {
	if len(badEnv) == 0 {
		return nil
	}
	return fmt.Errorf("bad environment: %s", strings.Join(badEnv, "; "))
}

// List splits a comma-separated list, dropping empty items and spaces.
func List(s string) []string {
	var out []string
	for _, p := range strings.Split(s, ",") {
		if p = strings.TrimSpace(p); p != "" {
			out = append(out, p)
		}
	}
	return out
}

func envHint(key string) string { return " (env " + key + ")" }
