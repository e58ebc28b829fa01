// Package kafka is how Herald talks to Kafka: the connection settings shared
// by relays and controllers (TLS and SASL, turned into franz-go client
// options) and the creation and check of the messages topic. Brokers, topic
// and partitions stay in each service's Config. The embedded Kafka of
// `herald dev` and the tests is internal/engines/kfake.
package kafka

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"flag"
	"fmt"
	"os"
	"strings"

	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/sasl/plain"
	"github.com/twmb/franz-go/pkg/sasl/scram"

	"github.com/herald-chat/herald/internal/config"
)

// SASL mechanisms accepted by SASLMechanism.
const (
	Plain       = "PLAIN"
	ScramSHA256 = "SCRAM-SHA-256"
	ScramSHA512 = "SCRAM-SHA-512"
)

// Config holds the TLS and SASL settings. The zero value means plaintext
// without authentication (the embedded dev Kafka).
type Config struct {
	// TLS enables TLS to the brokers (HERALD_KAFKA_TLS, default false). It is
	// implied by any of the TLS file settings.
	TLS bool
	// CAFile verifies the brokers' certificates (PEM); empty uses the
	// system roots (HERALD_KAFKA_TLS_CA).
	CAFile string
	// CertFile and KeyFile are a client certificate for mutual TLS
	// (HERALD_KAFKA_TLS_CERT, HERALD_KAFKA_TLS_KEY).
	CertFile, KeyFile string
	// ServerName overrides the name checked in the brokers' certificates
	// (HERALD_KAFKA_TLS_SERVER_NAME).
	ServerName string
	// InsecureSkipVerify disables certificate verification; for tests only
	// (HERALD_KAFKA_TLS_INSECURE).
	InsecureSkipVerify bool
	// SASLMechanism is "", PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512
	// (HERALD_KAFKA_SASL_MECHANISM).
	SASLMechanism string
	// SASLUser and SASLPassword authenticate with SASLMechanism
	// (HERALD_KAFKA_SASL_USER, HERALD_KAFKA_SASL_PASSWORD).
	SASLUser, SASLPassword string
}

// RegisterFlags binds the settings to flags (flag > HERALD_* env > default).
func (c *Config) RegisterFlags(fs *flag.FlagSet) {
	config.Bool(fs, &c.TLS, "kafka-tls", "HERALD_KAFKA_TLS", false, "connect to Kafka with TLS")
	config.String(fs, &c.CAFile, "kafka-tls-ca", "HERALD_KAFKA_TLS_CA", "", "PEM file of the CA that signed the brokers' certificates (default: system roots)")
	config.String(fs, &c.CertFile, "kafka-tls-cert", "HERALD_KAFKA_TLS_CERT", "", "client certificate (PEM) for mutual TLS")
	config.String(fs, &c.KeyFile, "kafka-tls-key", "HERALD_KAFKA_TLS_KEY", "", "client key (PEM) for mutual TLS")
	config.String(fs, &c.ServerName, "kafka-tls-server-name", "HERALD_KAFKA_TLS_SERVER_NAME", "", "name to verify in the brokers' certificates (default: the broker host)")
	config.Bool(fs, &c.InsecureSkipVerify, "kafka-tls-insecure", "HERALD_KAFKA_TLS_INSECURE", false, "do not verify the brokers' certificates (tests only)")
	config.String(fs, &c.SASLMechanism, "kafka-sasl-mechanism", "HERALD_KAFKA_SASL_MECHANISM", "", "SASL mechanism: PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512 (empty: none)")
	config.String(fs, &c.SASLUser, "kafka-sasl-user", "HERALD_KAFKA_SASL_USER", "", "SASL user")
	config.String(fs, &c.SASLPassword, "kafka-sasl-password", "HERALD_KAFKA_SASL_PASSWORD", "", "SASL password")
}

// Validate reports inconsistent settings, naming the variables.
func (c *Config) Validate() error {
	var errs []error
	switch strings.ToUpper(c.SASLMechanism) {
	case "":
		if c.SASLUser != "" || c.SASLPassword != "" {
			errs = append(errs, errors.New("HERALD_KAFKA_SASL_USER/PASSWORD set without HERALD_KAFKA_SASL_MECHANISM"))
		}
	case Plain, ScramSHA256, ScramSHA512:
		if c.SASLUser == "" || c.SASLPassword == "" {
			errs = append(errs, fmt.Errorf("HERALD_KAFKA_SASL_MECHANISM=%s needs HERALD_KAFKA_SASL_USER and HERALD_KAFKA_SASL_PASSWORD", c.SASLMechanism))
		}
	default:
		errs = append(errs, fmt.Errorf("HERALD_KAFKA_SASL_MECHANISM=%q: want PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512", c.SASLMechanism))
	}
	if (c.CertFile == "") != (c.KeyFile == "") {
		errs = append(errs, errors.New("HERALD_KAFKA_TLS_CERT and HERALD_KAFKA_TLS_KEY go together"))
	}
	return errors.Join(errs...)
}

// Opts returns the franz-go options for the settings (none for the zero
// Config). Files are read here, so errors name them.
func (c *Config) Opts() ([]kgo.Opt, error) {
	if err := c.Validate(); err != nil {
		return nil, err
	}
	var opts []kgo.Opt
	if c.TLS || c.CAFile != "" || c.CertFile != "" || c.ServerName != "" || c.InsecureSkipVerify {
		tc := &tls.Config{MinVersion: tls.VersionTLS12, ServerName: c.ServerName, InsecureSkipVerify: c.InsecureSkipVerify} //nolint:gosec // opt-in, documented as tests only
		if c.CAFile != "" {
			pem, err := os.ReadFile(c.CAFile)
			if err != nil {
				return nil, fmt.Errorf("reading HERALD_KAFKA_TLS_CA: %w", err)
			}
			pool := x509.NewCertPool()
			if !pool.AppendCertsFromPEM(pem) {
				return nil, fmt.Errorf("HERALD_KAFKA_TLS_CA %s holds no PEM certificate", c.CAFile)
			}
			tc.RootCAs = pool
		}
		if c.CertFile != "" {
			cert, err := tls.LoadX509KeyPair(c.CertFile, c.KeyFile)
			if err != nil {
				return nil, fmt.Errorf("loading HERALD_KAFKA_TLS_CERT/KEY: %w", err)
			}
			tc.Certificates = []tls.Certificate{cert}
		}
		opts = append(opts, kgo.DialTLSConfig(tc))
	}
	switch strings.ToUpper(c.SASLMechanism) {
	case Plain:
		opts = append(opts, kgo.SASL(plain.Auth{User: c.SASLUser, Pass: c.SASLPassword}.AsMechanism()))
	case ScramSHA256:
		opts = append(opts, kgo.SASL(scram.Auth{User: c.SASLUser, Pass: c.SASLPassword}.AsSha256Mechanism()))
	case ScramSHA512:
		opts = append(opts, kgo.SASL(scram.Auth{User: c.SASLUser, Pass: c.SASLPassword}.AsSha512Mechanism()))
	}
	return opts, nil
}
