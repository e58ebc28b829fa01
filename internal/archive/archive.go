// Package archive is Herald's S3 chunk archive: the object format and the
// client the cacher writes with and management reads with.
//
// Layout of a bucket:
//   - herald-archive.json: {"chunk_size":K,"format":1}. K is fixed per
//     bucket; a client configured with another K refuses to start.
//   - chunks/<base64url(channel)>/<n>.ndjson.gz: chunk n of a channel,
//     immutable, holding exactly the K messages with seqs n·K+1 … (n+1)·K,
//     gzip-compressed NDJSON (see EncodeChunk). Its user metadata records
//     the SHA-256 (hex) of the stored bytes, the message count and the first
//     seq. The key is derived from channel and n alone (ChunkKey), so no
//     manifest is needed to find a chunk.
//
// Errors: a missing chunk satisfies IsNotFound, a chunk whose bytes,
// checksum, count or seqs do not check out satisfies IsCorrupt, and an
// unreachable or misbehaving S3 endpoint wraps ErrUnavailable. S3 driver
// errors never leak: they are flattened into the message.
//
// Concurrency: a Client is safe for concurrent use.
package archive

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"time"

	"github.com/minio/minio-go/v7"
	"github.com/minio/minio-go/v7/pkg/credentials"

	"github.com/herald-chat/herald/internal/config"
	"github.com/herald-chat/herald/internal/store"
)

// ConfigObject is the key of the bucket-level config object.
const ConfigObject = "herald-archive.json"

// User metadata keys of chunk objects (sent as X-Amz-Meta-<key>).
const (
	metaChecksum = "Herald-Sha256"
	metaCount    = "Herald-Count"
	metaFirstSeq = "Herald-First-Seq"
	metaFormat   = "Herald-Format"
)

var (
	// ErrNotFound: the chunk object does not exist.
	ErrNotFound = errors.New("archive: chunk not found")
	// ErrCorrupt: the chunk exists but fails verification.
	ErrCorrupt = errors.New("archive: corrupt chunk")
	// ErrUnavailable: S3 is unreachable or answered with an error.
	ErrUnavailable = errors.New("archive: unavailable")
	// ErrChunkSizeMismatch: the bucket records another chunk size.
	ErrChunkSizeMismatch = errors.New("archive: chunk size mismatch")
)

// IsNotFound reports whether err means the chunk does not exist.
func IsNotFound(err error) bool { return errors.Is(err, ErrNotFound) }

// IsCorrupt reports whether err means the chunk failed verification.
func IsCorrupt(err error) bool { return errors.Is(err, ErrCorrupt) }

// IsUnavailable reports whether err means S3 could not be used.
func IsUnavailable(err error) bool { return errors.Is(err, ErrUnavailable) }

func corrupt(format string, args ...any) error {
	return fmt.Errorf("%w: %s", ErrCorrupt, fmt.Sprintf(format, args...))
}

// Config of a Client.
type Config struct {
	// Endpoint is the S3 URL, http(s)://host:port. Default
	// http://127.0.0.1:9000 (HERALD_S3_ENDPOINT).
	Endpoint string
	// Bucket holds the archive. Default herald-archive (HERALD_S3_BUCKET).
	// Created when missing.
	Bucket string
	// AccessKey and SecretKey authenticate (SigV4). Required
	// (HERALD_S3_ACCESS_KEY, HERALD_S3_SECRET_KEY).
	AccessKey, SecretKey string
	// Region for signing. Default us-east-1 (HERALD_S3_REGION).
	Region string
	// VirtualHost addresses the bucket as a host name
	// (bucket.s3.example.com) instead of a path (s3.example.com/bucket).
	// Default false: path-style, which MinIO, versitygw and most
	// S3-compatible stores need (HERALD_S3_VIRTUAL_HOST).
	VirtualHost bool
	// ChunkSize K: messages per chunk, fixed per bucket. Default 256
	// (HERALD_ARCHIVE_CHUNK_SIZE).
	ChunkSize int
	// MaxRetries per S3 request (1 = no retry). Default 3.
	MaxRetries int
	// RequestTimeout bounds one S3 request. Default 30s.
	RequestTimeout time.Duration
}

// RegisterFlags binds the S3 settings to flags (flag > HERALD_* env >
// default): -s3-endpoint, -s3-bucket, -s3-access-key, -s3-secret-key,
// -s3-region, -archive-chunk-size.
func (c *Config) RegisterFlags(fs *flag.FlagSet) {
	config.String(fs, &c.Endpoint, "s3-endpoint", "HERALD_S3_ENDPOINT", "http://127.0.0.1:9000", "S3 endpoint URL of the archive")
	config.String(fs, &c.Bucket, "s3-bucket", "HERALD_S3_BUCKET", "herald-archive", "S3 bucket of the archive")
	config.String(fs, &c.AccessKey, "s3-access-key", "HERALD_S3_ACCESS_KEY", "", "S3 access key")
	config.String(fs, &c.SecretKey, "s3-secret-key", "HERALD_S3_SECRET_KEY", "", "S3 secret key")
	config.String(fs, &c.Region, "s3-region", "HERALD_S3_REGION", "us-east-1", "S3 region")
	config.Bool(fs, &c.VirtualHost, "s3-virtual-host", "HERALD_S3_VIRTUAL_HOST", false, "virtual-host-style bucket addressing (default path-style)")
	config.Int(fs, &c.ChunkSize, "archive-chunk-size", "HERALD_ARCHIVE_CHUNK_SIZE", 256, "messages per archive chunk (fixed per bucket)")
}

func (c *Config) setDefaults() {
	if c.Region == "" {
		c.Region = "us-east-1"
	}
	if c.MaxRetries <= 0 {
		c.MaxRetries = 3
	}
	if c.RequestTimeout <= 0 {
		c.RequestTimeout = 30 * time.Second
	}
}

// Validate reports configuration errors, naming the flag and env variable.
func (c *Config) Validate() error {
	u, err := url.Parse(c.Endpoint)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return fmt.Errorf("-s3-endpoint (HERALD_S3_ENDPOINT) %q: want http(s)://host:port", c.Endpoint)
	}
	if u.Path != "" && u.Path != "/" {
		return fmt.Errorf("-s3-endpoint (HERALD_S3_ENDPOINT) %q: must not have a path", c.Endpoint)
	}
	if c.Bucket == "" {
		return errors.New("-s3-bucket (HERALD_S3_BUCKET) is empty")
	}
	if c.AccessKey == "" || c.SecretKey == "" {
		return errors.New("-s3-access-key and -s3-secret-key (HERALD_S3_ACCESS_KEY, HERALD_S3_SECRET_KEY) are required")
	}
	if c.ChunkSize < 1 || c.ChunkSize > 1<<20 {
		return fmt.Errorf("-archive-chunk-size (HERALD_ARCHIVE_CHUNK_SIZE) %d: want 1 … 1048576", c.ChunkSize)
	}
	return nil
}

// bucketConfig is the content of ConfigObject.
type bucketConfig struct {
	ChunkSize int `json:"chunk_size"`
	Format    int `json:"format"`
}

// Client reads and writes chunks of one bucket.
type Client struct {
	mc     *minio.Client
	bucket string
	k      int
	cfg    Config
}

// ChunkInfo describes a stored chunk.
type ChunkInfo struct {
	Key      string
	Channel  string
	N        uint64
	FirstSeq uint64
	LastSeq  uint64
	Count    int
	Checksum string // hex SHA-256 of the stored (gzip) bytes
	Size     int64  // stored bytes
}

// New connects to S3, creates the bucket and its config object when
// missing, and checks that the recorded chunk size equals cfg.ChunkSize
// (ErrChunkSizeMismatch otherwise).
func New(ctx context.Context, cfg Config) (*Client, error) {
	cfg.setDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	u, _ := url.Parse(cfg.Endpoint)
	secure := u.Scheme == "https"
	tr, err := minio.DefaultTransport(secure)
	if err != nil {
		return nil, fmt.Errorf("creating S3 transport: %w", err)
	}
	tr.DialContext = (&net.Dialer{Timeout: 5 * time.Second, KeepAlive: 30 * time.Second}).DialContext
	tr.ResponseHeaderTimeout = cfg.RequestTimeout
	mc, err := minio.New(u.Host, &minio.Options{
		Creds:        credentials.NewStaticV4(cfg.AccessKey, cfg.SecretKey, ""),
		Secure:       secure,
		Transport:    tr,
		Region:       cfg.Region,
		BucketLookup: bucketLookup(cfg.VirtualHost),
		MaxRetries:   cfg.MaxRetries,
	})
	if err != nil {
		return nil, fmt.Errorf("creating S3 client: %w", err)
	}
	c := &Client{mc: mc, bucket: cfg.Bucket, k: cfg.ChunkSize, cfg: cfg}
	if err := c.ensureBucket(ctx); err != nil {
		return nil, err
	}
	return c, nil
}

// ChunkSize returns K.
func (c *Client) ChunkSize() int { return c.k }

// Bucket returns the bucket name.
func (c *Client) Bucket() string { return c.bucket }

// Ping checks the bucket is reachable (for /readyz).
func (c *Client) Ping(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, c.cfg.RequestTimeout)
	defer cancel()
	ok, err := c.mc.BucketExists(ctx, c.bucket)
	if err != nil {
		return unavailable("checking bucket "+c.bucket, err)
	}
	if !ok {
		return fmt.Errorf("%w: bucket %q does not exist", ErrUnavailable, c.bucket)
	}
	return nil
}

func unavailable(doing string, err error) error {
	if errors.Is(err, context.Canceled) {
		return fmt.Errorf("%s: %w", doing, context.Canceled)
	}
	// Flatten the driver error: callers see ErrUnavailable, not minio types.
	return fmt.Errorf("%w: %s: %v", ErrUnavailable, doing, err)
}

func (c *Client) ensureBucket(ctx context.Context) error {
	ok, err := c.mc.BucketExists(ctx, c.bucket)
	if err != nil {
		return unavailable("checking bucket "+c.bucket, err)
	}
	if !ok {
		if err := c.mc.MakeBucket(ctx, c.bucket, minio.MakeBucketOptions{Region: c.cfg.Region}); err != nil {
			code := minio.ToErrorResponse(err).Code
			if code != "BucketAlreadyOwnedByYou" && code != "BucketAlreadyExists" {
				return unavailable("creating bucket "+c.bucket, err)
			}
		}
	}
	want := bucketConfig{ChunkSize: c.k, Format: Format}
	got, err := c.readBucketConfig(ctx)
	if IsNotFound(err) {
		body, _ := json.Marshal(want)
		if _, err := c.mc.PutObject(ctx, c.bucket, ConfigObject, bytes.NewReader(body), int64(len(body)),
			minio.PutObjectOptions{ContentType: "application/json"}); err != nil {
			return unavailable("writing "+ConfigObject, err)
		}
		// Read back: a concurrent first start may have written another K.
		got, err = c.readBucketConfig(ctx)
	}
	if err != nil {
		return err
	}
	if got.Format != Format {
		return fmt.Errorf("archive: bucket %q has format %d, this version reads format %d", c.bucket, got.Format, Format)
	}
	if got.ChunkSize != c.k {
		return fmt.Errorf("%w: bucket %q records chunk_size %d but %d is configured (-archive-chunk-size, HERALD_ARCHIVE_CHUNK_SIZE); the chunk size is fixed per bucket: configure %d or use a new bucket",
			ErrChunkSizeMismatch, c.bucket, got.ChunkSize, c.k, got.ChunkSize)
	}
	return nil
}

func (c *Client) readBucketConfig(ctx context.Context) (bucketConfig, error) {
	var bc bucketConfig
	body, _, err := c.get(ctx, ConfigObject)
	if err != nil {
		return bc, err
	}
	if err := json.Unmarshal(body, &bc); err != nil {
		return bc, fmt.Errorf("archive: bucket %q: malformed %s: %v", c.bucket, ConfigObject, err)
	}
	return bc, nil
}

// get reads a whole object and its metadata.
func (c *Client) get(ctx context.Context, key string) ([]byte, http.Header, error) {
	ctx, cancel := context.WithTimeout(ctx, c.cfg.RequestTimeout)
	defer cancel()
	obj, err := c.mc.GetObject(ctx, c.bucket, key, minio.GetObjectOptions{})
	if err != nil {
		return nil, nil, c.classify("getting "+key, err)
	}
	defer obj.Close()
	st, err := obj.Stat()
	if err != nil {
		return nil, nil, c.classify("getting "+key, err)
	}
	body, err := io.ReadAll(obj)
	if err != nil {
		return nil, nil, c.classify("reading "+key, err)
	}
	if int64(len(body)) != st.Size {
		return nil, nil, corrupt("%s: read %d bytes, object has %d", key, len(body), st.Size)
	}
	return body, st.Metadata, nil
}

func (c *Client) classify(doing string, err error) error {
	switch minio.ToErrorResponse(err).Code {
	case "NoSuchKey":
		return fmt.Errorf("%w: %s", ErrNotFound, doing)
	}
	return unavailable(doing, err)
}

// PutChunk encodes msgs, which must be exactly chunk n of channel (K
// messages, seqs n·K+1 … (n+1)·K), and stores it, overwriting any object at
// its key. It returns what was written.
func (c *Client) PutChunk(ctx context.Context, channel string, n uint64, msgs []store.Message) (ChunkInfo, error) {
	if channel == "" {
		return ChunkInfo{}, errors.New("archive: empty channel name")
	}
	if err := checkChunk(channel, n, c.k, msgs); err != nil {
		return ChunkInfo{}, fmt.Errorf("archive: refusing to write: %w", err)
	}
	body, err := EncodeChunk(msgs)
	if err != nil {
		return ChunkInfo{}, fmt.Errorf("archive: encoding chunk %d of %q: %w", n, channel, err)
	}
	info := c.info(channel, n, body)
	ctx, cancel := context.WithTimeout(ctx, c.cfg.RequestTimeout)
	defer cancel()
	_, err = c.mc.PutObject(ctx, c.bucket, info.Key, bytes.NewReader(body), int64(len(body)), minio.PutObjectOptions{
		ContentType: "application/x-ndjson",
		// Content-Encoding is deliberately not set: HTTP clients would
		// decompress transparently and the checksum would not match.
		UserMetadata: map[string]string{
			metaChecksum: info.Checksum,
			metaCount:    strconv.Itoa(info.Count),
			metaFirstSeq: strconv.FormatUint(info.FirstSeq, 10),
			metaFormat:   strconv.Itoa(Format),
		},
		DisableMultipart: true,
	})
	if err != nil {
		return ChunkInfo{}, unavailable("putting "+info.Key, err)
	}
	return info, nil
}

func (c *Client) info(channel string, n uint64, body []byte) ChunkInfo {
	first := n*uint64(c.k) + 1
	return ChunkInfo{
		Key:      ChunkKey(channel, n),
		Channel:  channel,
		N:        n,
		FirstSeq: first,
		LastSeq:  first + uint64(c.k) - 1,
		Count:    c.k,
		Checksum: Checksum(body),
		Size:     int64(len(body)),
	}
}

// GetChunk reads chunk n of channel and verifies it: the SHA-256 of its
// bytes against its metadata, then its content (K messages of channel with
// seqs n·K+1 … (n+1)·K).
func (c *Client) GetChunk(ctx context.Context, channel string, n uint64) ([]store.Message, error) {
	msgs, _, err := c.read(ctx, channel, n)
	return msgs, err
}

// VerifyChunk reads chunk n of channel back and checks it as GetChunk does,
// plus that it holds expectCount messages and its checksum is
// expectChecksum (what PutChunk returned).
func (c *Client) VerifyChunk(ctx context.Context, channel string, n uint64, expectCount int, expectChecksum string) (ChunkInfo, error) {
	msgs, info, err := c.read(ctx, channel, n)
	if err != nil {
		return ChunkInfo{}, err
	}
	if info.Checksum != expectChecksum {
		return ChunkInfo{}, corrupt("%s: checksum %s, expected %s", info.Key, info.Checksum, expectChecksum)
	}
	if len(msgs) != expectCount {
		return ChunkInfo{}, corrupt("%s: %d messages, expected %d", info.Key, len(msgs), expectCount)
	}
	return info, nil
}

// StatChunk returns the metadata of chunk n of channel without reading or
// verifying its content.
func (c *Client) StatChunk(ctx context.Context, channel string, n uint64) (ChunkInfo, error) {
	key := ChunkKey(channel, n)
	ctx, cancel := context.WithTimeout(ctx, c.cfg.RequestTimeout)
	defer cancel()
	st, err := c.mc.StatObject(ctx, c.bucket, key, minio.StatObjectOptions{})
	if err != nil {
		return ChunkInfo{}, c.classify("stat "+key, err)
	}
	info := c.info(channel, n, nil)
	info.Checksum = st.Metadata.Get("X-Amz-Meta-" + metaChecksum)
	info.Size = st.Size
	if cnt, err := strconv.Atoi(st.Metadata.Get("X-Amz-Meta-" + metaCount)); err == nil {
		info.Count = cnt
	}
	return info, nil
}

func (c *Client) read(ctx context.Context, channel string, n uint64) ([]store.Message, ChunkInfo, error) {
	key := ChunkKey(channel, n)
	body, meta, err := c.get(ctx, key)
	if err != nil {
		return nil, ChunkInfo{}, err
	}
	info := c.info(channel, n, body)
	stored := meta.Get("X-Amz-Meta-" + metaChecksum)
	if stored == "" {
		return nil, info, corrupt("%s: no checksum metadata", key)
	}
	if stored != info.Checksum {
		return nil, info, corrupt("%s: checksum of content %s, metadata says %s", key, info.Checksum, stored)
	}
	if cnt := meta.Get("X-Amz-Meta-" + metaCount); cnt != strconv.Itoa(c.k) {
		return nil, info, corrupt("%s: metadata count %q, chunk size %d", key, cnt, c.k)
	}
	msgs, err := DecodeChunk(body)
	if err != nil {
		return nil, info, fmt.Errorf("%s: %w", key, err)
	}
	if err := checkChunk(channel, n, c.k, msgs); err != nil {
		return nil, info, corrupt("%s: %v", key, err)
	}
	return msgs, info, nil
}

func bucketLookup(virtualHost bool) minio.BucketLookupType {
	if virtualHost {
		return minio.BucketLookupDNS
	}
	return minio.BucketLookupPath
}
