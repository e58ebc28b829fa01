// Package config binds command-line flags to HERALD_* environment variables:
// every setting is a flag whose default comes from its environment variable,
// falling back to the documented default. Precedence: flag > env > default.
package config

import (
	"flag"
	"fmt"
	"log/slog"
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

// FlagName is the naming scheme of every flag bound to a variable: the
// variable without HERALD_, in lower case, with dashes
// (HERALD_RELAY_ADDR → relay-addr, HERALD_ARCHIVE_CHUNK_SIZE →
// archive-chunk-size). One name per variable, so the flags of all services
// fit in one flag set (herald dev).
func FlagName(key string) string {
	return strings.ReplaceAll(strings.ToLower(strings.TrimPrefix(key, "HERALD_")), "_", "-")
}

// Deprecated registers old as a deprecated alias of the flag name (which
// may be registered on fs before or after): setting -old sets -name.
// WarnDeprecated reports its use.
func Deprecated(fs *flag.FlagSet, old, name string) {
	fs.Var(&alias{fs: fs, name: name}, old, "deprecated: use -"+name)
}

// DeprecatedAlias returns the flag an alias stands for ("" when f is not a
// deprecated alias).
func DeprecatedAlias(f *flag.Flag) string {
	if a, ok := f.Value.(*alias); ok {
		return a.name
	}
	return ""
}

// WarnDeprecated logs one warning per deprecated alias set on fs.
func WarnDeprecated(fs *flag.FlagSet, log *slog.Logger) {
	fs.Visit(func(f *flag.Flag) {
		if name := DeprecatedAlias(f); name != "" {
			log.Warn("deprecated flag: use the new name", "flag", "-"+f.Name, "use", "-"+name)
		}
	})
}

// alias is the flag.Value of a deprecated name.
type alias struct {
	fs   *flag.FlagSet
	name string
}

func (a *alias) target() flag.Value {
	if a.fs == nil {
		return nil
	}
	if f := a.fs.Lookup(a.name); f != nil {
		return f.Value
	}
	return nil
}

func (a *alias) String() string {
	if v := a.target(); v != nil {
		return v.String()
	}
	return ""
}

func (a *alias) Set(s string) error { return a.fs.Set(a.name, s) }

func (a *alias) IsBoolFlag() bool {
	b, ok := a.target().(interface{ IsBoolFlag() bool })
	return ok && b.IsBoolFlag()
}

// Union defines on dst every flag of srcs except deprecated aliases and
// those skip (when non-nil) rejects. A name defined by several sets (the
// Kafka flags of relay and controller, the store of three services) becomes
// one flag that sets all of them; its usage is the first one's.
func Union(dst *flag.FlagSet, skip func(name string) bool, srcs ...*flag.FlagSet) {
	var order []string
	byName := map[string]*fanout{}
	usage := map[string]string{}
	for _, src := range srcs {
		src.VisitAll(func(f *flag.Flag) {
			if DeprecatedAlias(f) != "" || (skip != nil && skip(f.Name)) {
				return
			}
			if byName[f.Name] == nil {
				byName[f.Name] = &fanout{}
				usage[f.Name] = f.Usage
				order = append(order, f.Name)
			}
			byName[f.Name].vs = append(byName[f.Name].vs, f.Value)
		})
	}
	for _, n := range order {
		dst.Var(byName[n], n, usage[n])
	}
}

// fanout is a flag.Value setting several.
type fanout struct{ vs []flag.Value }

func (f *fanout) String() string {
	if len(f.vs) == 0 {
		return ""
	}
	return f.vs[0].String()
}

func (f *fanout) Set(s string) error {
	for _, v := range f.vs {
		if err := v.Set(s); err != nil {
			return err
		}
	}
	return nil
}

func (f *fanout) IsBoolFlag() bool {
	if len(f.vs) == 0 {
		return false
	}
	b, ok := f.vs[0].(interface{ IsBoolFlag() bool })
	return ok && b.IsBoolFlag()
}
