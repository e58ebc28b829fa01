package kafka

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
)

// selfSigned writes a CA-less self-signed certificate for 127.0.0.1 and
// returns its tls.Certificate and the PEM file path.
func selfSigned(t *testing.T) (tls.Certificate, string) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "kafka.test"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IPAddresses: []net.IP{net.ParseIP("127.0.0.1")}, DNSNames: []string{"kafka.test"},
		IsCA: true, BasicConstraintsValid: true,
		KeyUsage:    x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	certPEM := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
	keyDER, _ := x509.MarshalECPrivateKey(key)
	cert, err := tls.X509KeyPair(certPEM, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: keyDER}))
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "ca.pem")
	if err := os.WriteFile(path, certPEM, 0o600); err != nil {
		t.Fatal(err)
	}
	return cert, path
}

// roundTrip produces one record and reads it back with the options.
func roundTrip(brokers []string, opts []kgo.Opt) error {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	cl, err := kgo.NewClient(append([]kgo.Opt{kgo.SeedBrokers(brokers...), kgo.ConsumeTopics("t"),
		kgo.DefaultProduceTopic("t"), kgo.RequestRetries(1)}, opts...)...)
	if err != nil {
		return err
	}
	defer cl.Close()
	if err := cl.ProduceSync(ctx, &kgo.Record{Value: []byte("hello")}).FirstErr(); err != nil {
		return err
	}
	fs := cl.PollFetches(ctx)
	if err := fs.Err0(); err != nil {
		return err
	}
	if fs.NumRecords() != 1 || string(fs.Records()[0].Value) != "hello" {
		return os.ErrNotExist
	}
	return nil
}

// TestTLSAndSCRAMAgainstKafka runs the options against a Kafka (kfake)
// that requires TLS and SCRAM-SHA-256: the right settings connect; a wrong
// password, a missing CA or no SASL do not.
func TestTLSAndSCRAMAgainstKafka(t *testing.T) {
	cert, caFile := selfSigned(t)
	c, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.SeedTopics(1, "t"),
		kfake.TLS(&tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}),
		kfake.EnableSASL(), kfake.Superuser(ScramSHA256, "herald", "s3cret"))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	brokers := c.ListenAddrs()

	good := Config{TLS: true, CAFile: caFile, SASLMechanism: ScramSHA256, SASLUser: "herald", SASLPassword: "s3cret"}
	opts, err := good.Opts()
	if err != nil {
		t.Fatal(err)
	}
	if err := roundTrip(brokers, opts); err != nil {
		t.Fatalf("TLS + SCRAM: %v", err)
	}

	for name, cfg := range map[string]Config{
		"wrong password": {TLS: true, CAFile: caFile, SASLMechanism: ScramSHA256, SASLUser: "herald", SASLPassword: "nope"},
		"untrusted cert": {TLS: true, SASLMechanism: ScramSHA256, SASLUser: "herald", SASLPassword: "s3cret"},
		"no SASL":        {TLS: true, CAFile: caFile},
	} {
		t.Run(name, func(t *testing.T) {
			opts, err := cfg.Opts()
			if err != nil {
				t.Fatal(err)
			}
			if err := roundTrip(brokers, opts); err == nil {
				t.Fatal("connected with bad settings")
			}
		})
	}
}

func TestValidate(t *testing.T) {
	if opts, err := (&Config{}).Opts(); err != nil || len(opts) != 0 {
		t.Fatalf("zero config: %v, %d opts", err, len(opts))
	}
	for _, tc := range []struct {
		cfg  Config
		want string
	}{
		{Config{SASLMechanism: "GSSAPI", SASLUser: "u", SASLPassword: "p"}, "HERALD_KAFKA_SASL_MECHANISM"},
		{Config{SASLMechanism: Plain}, "HERALD_KAFKA_SASL_USER"},
		{Config{SASLUser: "u"}, "without HERALD_KAFKA_SASL_MECHANISM"},
		{Config{CertFile: "c.pem"}, "HERALD_KAFKA_TLS_KEY"},
	} {
		if err := tc.cfg.Validate(); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%+v: %v, want an error naming %s", tc.cfg, err, tc.want)
		}
	}
	if _, err := (&Config{CAFile: "/nonexistent.pem"}).Opts(); err == nil || !strings.Contains(err.Error(), "HERALD_KAFKA_TLS_CA") {
		t.Errorf("missing CA file: %v", err)
	}
}
