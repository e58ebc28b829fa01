package archive

import (
	"bytes"
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/minio/minio-go/v7"
	"github.com/minio/minio-go/v7/pkg/credentials"

	"github.com/herald-chat/herald/internal/engines/s3local/s3test"
	"github.com/herald-chat/herald/internal/store"
)

func TestMain(m *testing.M) { s3test.Main(m) }

func testConfig(tb testing.TB, k int) Config {
	return Config{
		Endpoint:  s3test.Endpoint(),
		Bucket:    s3test.Bucket(tb),
		AccessKey: s3test.AccessKey,
		SecretKey: s3test.SecretKey,
		ChunkSize: k,
	}
}

func newClient(tb testing.TB, cfg Config) *Client {
	tb.Helper()
	c, err := New(context.Background(), cfg)
	if err != nil {
		tb.Fatal(err)
	}
	return c
}

// rawS3 returns a plain minio client to tamper with objects.
func rawS3(tb testing.TB) *minio.Client {
	tb.Helper()
	mc, err := minio.New(strings.TrimPrefix(s3test.Endpoint(), "http://"), &minio.Options{
		Creds:        credentials.NewStaticV4(s3test.AccessKey, s3test.SecretKey, ""),
		BucketLookup: minio.BucketLookupPath,
		Region:       s3test.Region,
	})
	if err != nil {
		tb.Fatal(err)
	}
	return mc
}

func TestClientRoundTrip(t *testing.T) {
	ctx := context.Background()
	const k = 8
	c := newClient(t, testConfig(t, k))
	for _, channel := range []string{"room:1", "a/b/../c", strings.Repeat("long-name-", 30), "ünï code ✓"} {
		msgs := testMessages(t, channel, 5, k)
		info, err := c.PutChunk(ctx, channel, 5, msgs)
		if err != nil {
			t.Fatal(err)
		}
		if info.Count != k || info.FirstSeq != 41 || info.LastSeq != 48 || info.Key != ChunkKey(channel, 5) || len(info.Checksum) != 64 {
			t.Fatalf("info = %+v", info)
		}
		got, err := c.GetChunk(ctx, channel, 5)
		if err != nil {
			t.Fatal(err)
		}
		equalMessages(t, got, msgs)
		vi, err := c.VerifyChunk(ctx, channel, 5, k, info.Checksum)
		if err != nil {
			t.Fatal(err)
		}
		if vi.Checksum != info.Checksum || vi.Size != info.Size {
			t.Fatalf("verify info %+v, put info %+v", vi, info)
		}
		st, err := c.StatChunk(ctx, channel, 5)
		if err != nil {
			t.Fatal(err)
		}
		if st.Checksum != info.Checksum || st.Count != k {
			t.Fatalf("stat %+v", st)
		}
	}
	if _, err := c.VerifyChunk(ctx, "room:1", 5, k, strings.Repeat("0", 64)); !IsCorrupt(err) {
		t.Fatalf("verify with wrong checksum: %v", err)
	}
	if _, err := c.VerifyChunk(ctx, "room:1", 5, k+1, ""); !IsCorrupt(err) {
		t.Fatalf("verify with wrong count: %v", err)
	}
}

func TestClientPutRejectsBadChunk(t *testing.T) {
	c := newClient(t, testConfig(t, 4))
	ctx := context.Background()
	for name, msgs := range map[string]any{
		"partial":     testMessages(t, "c", 0, 4)[:3],
		"wrong chunk": testMessages(t, "c", 1, 4),
	} {
		if _, err := c.PutChunk(ctx, "c", 0, msgs.([]store.Message)); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
}

func TestClientNotFound(t *testing.T) {
	c := newClient(t, testConfig(t, 4))
	ctx := context.Background()
	if _, err := c.GetChunk(ctx, "nope", 0); !IsNotFound(err) {
		t.Fatalf("GetChunk: %v", err)
	}
	if _, err := c.StatChunk(ctx, "nope", 0); !IsNotFound(err) {
		t.Fatalf("StatChunk: %v", err)
	}
	if _, err := c.VerifyChunk(ctx, "nope", 0, 4, "x"); !IsNotFound(err) {
		t.Fatalf("VerifyChunk: %v", err)
	}
}

func TestClientCorrupt(t *testing.T) {
	ctx := context.Background()
	const k = 4
	cfg := testConfig(t, k)
	c := newClient(t, cfg)
	mc := rawS3(t)
	msgs := testMessages(t, "c", 0, k)
	good, err := EncodeChunk(msgs)
	if err != nil {
		t.Fatal(err)
	}
	put := func(t *testing.T, body []byte, meta map[string]string) {
		t.Helper()
		if _, err := mc.PutObject(ctx, cfg.Bucket, ChunkKey("c", 0), bytes.NewReader(body), int64(len(body)),
			minio.PutObjectOptions{UserMetadata: meta}); err != nil {
			t.Fatal(err)
		}
	}
	meta := func(sum, count string) map[string]string {
		return map[string]string{metaChecksum: sum, metaCount: count}
	}
	other, _ := EncodeChunk(testMessages(t, "c", 1, k))
	otherChannel := testMessages(t, "d", 0, k)
	for i := range otherChannel {
		otherChannel[i].Channel = "d"
	}
	wrongChannel, _ := EncodeChunk(otherChannel)
	flipped := bytes.Clone(good)
	flipped[len(flipped)/2] ^= 1
	for _, tc := range []struct {
		name string
		body []byte
		meta map[string]string
	}{
		{"no metadata", good, nil},
		{"flipped byte", flipped, meta(Checksum(good), "4")},
		{"truncated", good[:len(good)-3], meta(Checksum(good), "4")},
		{"truncated with matching checksum", good[:len(good)-3], meta(Checksum(good[:len(good)-3]), "4")},
		{"wrong count", good, meta(Checksum(good), "3")},
		{"wrong seqs", other, meta(Checksum(other), "4")},
		{"wrong channel", wrongChannel, meta(Checksum(wrongChannel), "4")},
	} {
		t.Run(tc.name, func(t *testing.T) {
			put(t, tc.body, tc.meta)
			if _, err := c.GetChunk(ctx, "c", 0); !IsCorrupt(err) {
				t.Fatalf("GetChunk: err = %v, want corrupt", err)
			}
		})
	}
}

func TestClientChunkSizeFixedPerBucket(t *testing.T) {
	cfg := testConfig(t, 4)
	newClient(t, cfg)
	newClient(t, cfg) // same K: fine
	cfg.ChunkSize = 8
	_, err := New(context.Background(), cfg)
	if !errors.Is(err, ErrChunkSizeMismatch) {
		t.Fatalf("err = %v, want ErrChunkSizeMismatch", err)
	}
	if !strings.Contains(err.Error(), "records chunk_size 4 but 8 is configured") {
		t.Fatalf("unclear error: %v", err)
	}
}

func TestClientWrongSecret(t *testing.T) {
	cfg := testConfig(t, 4)
	cfg.SecretKey = "wrong"
	cfg.MaxRetries = 1
	_, err := New(context.Background(), cfg)
	if !IsUnavailable(err) || !strings.Contains(strings.ToLower(err.Error()), "denied") {
		t.Fatalf("err = %v", err)
	}
}

func TestClientUnavailable(t *testing.T) {
	ctx := context.Background()
	p := s3test.NewProxy(t, s3test.Endpoint())
	cfg := testConfig(t, 4)
	cfg.Endpoint = p.Endpoint()
	cfg.MaxRetries = 1
	cfg.RequestTimeout = 5 * time.Second
	c := newClient(t, cfg)
	msgs := testMessages(t, "c", 0, 4)
	if _, err := c.PutChunk(ctx, "c", 0, msgs); err != nil {
		t.Fatal(err)
	}
	p.SetDown(true)
	if _, err := c.GetChunk(ctx, "c", 0); !IsUnavailable(err) {
		t.Fatalf("GetChunk: %v", err)
	}
	if _, err := c.PutChunk(ctx, "c", 0, msgs); !IsUnavailable(err) {
		t.Fatalf("PutChunk: %v", err)
	}
	if err := c.Ping(ctx); !IsUnavailable(err) {
		t.Fatalf("Ping: %v", err)
	}
	cfg.Bucket = s3test.Bucket(t)
	if _, err := New(ctx, cfg); !IsUnavailable(err) {
		t.Fatalf("New: %v", err)
	}
	p.SetDown(false)
	if _, err := c.GetChunk(ctx, "c", 0); err != nil {
		t.Fatal(err)
	}
}
