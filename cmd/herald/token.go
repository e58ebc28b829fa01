package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"github.com/herald-chat/herald/internal/auth"
	"github.com/herald-chat/herald/internal/config"
)

// runToken prints a connection token signed with HERALD_TOKEN_SECRET (or the
// dev secret with --dev).
func runToken(args []string, out io.Writer) error {
	fs := flag.NewFlagSet("token", flag.ContinueOnError)
	var (
		sub, channels, secret, info, caps string
		ttl                               time.Duration
		admin, dev                        bool
		subChannel                        string
	)
	fs.StringVar(&sub, "sub", "", "user id (required)")
	fs.StringVar(&channels, "channels", "", "comma-separated server-side channels")
	fs.StringVar(&info, "info", "", "JSON attached to the user's publications, e.g. '{\"name\":\"Alice\"}'")
	fs.StringVar(&caps, "caps", "", `JSON capabilities, e.g. '[{"channels":["news"],"allow":["sub"]}]'`)
	fs.StringVar(&subChannel, "channel", "", "make a subscription token for this channel instead of a connection token")
	fs.DurationVar(&ttl, "ttl", 24*time.Hour, "lifetime; 0 = never expires")
	fs.BoolVar(&admin, "admin", false, "grant admin (history of any channel; the cacher API)")
	fs.BoolVar(&dev, "dev", false, "sign with the dev secret of 'herald dev' when HERALD_TOKEN_SECRET is unset")
	config.String(fs, &secret, "token-secret", "HERALD_TOKEN_SECRET", "", "HS256 secret")
	config.Deprecated(fs, "secret", "token-secret")
	if err := parseFlags(fs, args, slog.Default()); err != nil {
		return err
	}
	if sub == "" {
		return fmt.Errorf("%w: --sub is required", errUsage)
	}
	if secret == "" {
		if !dev {
			return fmt.Errorf("%w: no secret: set HERALD_TOKEN_SECRET (or --secret), or pass --dev for the dev secret", errUsage)
		}
		secret = auth.DevSecret
	}
	var tok string
	var err error
	if subChannel != "" {
		c := &auth.SubscriptionClaims{Channel: subChannel}
		c.Subject = sub
		if ttl > 0 {
			c.ExpiresAt = jwt.NewNumericDate(time.Now().Add(ttl))
		}
		tok, err = auth.Sign(secret, c)
	} else {
		c := auth.NewClaims(sub, config.List(channels), ttl)
		c.Admin = admin
		if info != "" {
			if !json.Valid([]byte(info)) {
				return fmt.Errorf("%w: --info is not valid JSON", errUsage)
			}
			c.Info = json.RawMessage(info)
		}
		if caps != "" {
			if err := json.Unmarshal([]byte(caps), &c.Caps); err != nil {
				return fmt.Errorf("%w: --caps: %v", errUsage, err)
			}
		}
		tok, err = auth.Sign(secret, c)
	}
	if err != nil {
		return err
	}
	_, err = fmt.Fprintln(out, tok)
	return err
}
