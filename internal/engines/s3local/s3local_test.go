package s3local

import (
	"bytes"
	"context"
	"errors"
	"io"
	"testing"

	"github.com/minio/minio-go/v7"
	"github.com/minio/minio-go/v7/pkg/credentials"
)

func client(tb testing.TB, endpoint, access, secret string) *minio.Client {
	tb.Helper()
	host := endpoint[len("http://"):]
	c, err := minio.New(host, &minio.Options{
		Creds:        credentials.NewStaticV4(access, secret, ""),
		BucketLookup: minio.BucketLookupPath,
		Region:       "us-east-1",
		MaxRetries:   1,
	})
	if err != nil {
		tb.Fatal(err)
	}
	return c
}

// One test drives the whole lifecycle: the gateway is one per process.
func TestGateway(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	srv, err := Start(ctx, Options{Dir: dir, AccessKey: "herald", SecretKey: "herald-secret"})
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()

	t.Run("second gateway refused", func(t *testing.T) {
		_, err := Start(ctx, Options{Dir: t.TempDir(), AccessKey: "a", SecretKey: "b"})
		if !errors.Is(err, ErrAlreadyRunning) {
			t.Fatalf("err = %v, want ErrAlreadyRunning", err)
		}
	})

	good := client(t, srv.Endpoint(), "herald", "herald-secret")
	t.Run("put and get", func(t *testing.T) {
		if err := good.MakeBucket(ctx, "bucket-one", minio.MakeBucketOptions{}); err != nil {
			t.Fatal(err)
		}
		body := []byte("hello")
		if _, err := good.PutObject(ctx, "bucket-one", "k/1", bytes.NewReader(body), int64(len(body)),
			minio.PutObjectOptions{UserMetadata: map[string]string{"Herald-Sha256": "abc"}}); err != nil {
			t.Fatal(err)
		}
		obj, err := good.GetObject(ctx, "bucket-one", "k/1", minio.GetObjectOptions{})
		if err != nil {
			t.Fatal(err)
		}
		got, err := io.ReadAll(obj)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got, body) {
			t.Fatalf("got %q", got)
		}
		st, err := good.StatObject(ctx, "bucket-one", "k/1", minio.StatObjectOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if v := st.Metadata.Get("X-Amz-Meta-Herald-Sha256"); v != "abc" {
			t.Fatalf("metadata = %q (%v)", v, st.Metadata)
		}
	})
	t.Run("wrong secret rejected", func(t *testing.T) {
		bad := client(t, srv.Endpoint(), "herald", "wrong")
		_, err := bad.BucketExists(ctx, "bucket-one")
		if err == nil {
			t.Fatal("wrong secret accepted")
		}
		_, err = bad.GetObject(ctx, "bucket-one", "k/1", minio.GetObjectOptions{})
		if err == nil {
			obj, _ := bad.GetObject(ctx, "bucket-one", "k/1", minio.GetObjectOptions{})
			_, err = io.ReadAll(obj)
		}
		if code := minio.ToErrorResponse(err).Code; code != "SignatureDoesNotMatch" {
			t.Fatalf("code = %q, err = %v", code, err)
		}
	})

	srv.Close()
	t.Run("restart after close keeps data", func(t *testing.T) {
		srv2, err := Start(ctx, Options{Dir: dir, AccessKey: "herald", SecretKey: "herald-secret"})
		if err != nil {
			t.Fatal(err)
		}
		defer srv2.Close()
		c := client(t, srv2.Endpoint(), "herald", "herald-secret")
		if _, err := c.StatObject(ctx, "bucket-one", "k/1", minio.StatObjectOptions{}); err != nil {
			t.Fatal(err)
		}
	})
}
