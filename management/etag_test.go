package management

import (
	"bytes"
	"context"
	"io"
	"net/http"
	"net/url"
	"testing"

	"github.com/minio/minio-go/v7"

	"github.com/herald-chat/herald/internal/archive"
)

// standard: seqs 1…23, archived through 16 (K=4), last seq 23.
func TestImmutablePages(t *testing.T) {
	for _, tc := range []struct {
		query     string
		immutable bool
	}{
		{"before=9&limit=4", true},                       // 5…8, archived, bounded by before
		{"before=17", true},                              // 1…16, exactly the archived range
		{"after=4&limit=4&order=asc", true},              // 5…8, cut by limit
		{"after=12&before=17&order=asc", true},           // 13…16
		{"limit=4&order=asc", true},                      // 1…4
		{"after=14&before=19", false},                    // spans into the store
		{"", false},                                      // newest page: moves with the head
		{"limit=3", false},                               // 21…23 from the store
		{"after=12&limit=10&order=asc", false},           // 13…22
		{"before=30&after=10", false},                    // before beyond the head
		{"after=23", false},                              // empty
		{"after=16&before=17&order=asc", false},          // empty range
		{"after=8&before=16&limit=2&order=asc", true},    // 9,10 with a cursor
		{"after=8&before=16&limit=50&order=asc", true},   // 9…15
		{"after=8&before=100&limit=50&order=asc", false}, // 9…23
	} {
		t.Run(tc.query, func(t *testing.T) {
			e := standard(t, envOpts{})
			path := messagesPath(room, nil) + "?" + tc.query
			r := e.get(t, path, token(t, nil))
			if r.code != 200 {
				t.Fatalf("%d %s", r.code, r.body)
			}
			etag, cc := r.header.Get("ETag"), r.header.Get("Cache-Control")
			if !tc.immutable {
				if etag != "" || cc != "no-store" {
					t.Fatalf("mutable page: ETag %q Cache-Control %q", etag, cc)
				}
				return
			}
			if etag == "" || cc != immutableCacheControl || r.header.Get("Vary") != "Authorization" {
				t.Fatalf("immutable page: ETag %q Cache-Control %q Vary %q", etag, cc, r.header.Get("Vary"))
			}
			reads := metricValue(t, e.srv.m.chunkReads.WithLabelValues("ok")) + metricValue(t, e.srv.m.cacheHits)
			for _, inm := range []string{etag, "W/" + etag, `"other", ` + etag, "*"} {
				r2 := e.getWith(t, path, token(t, nil), http.Header{"If-None-Match": {inm}})
				if r2.code != http.StatusNotModified || len(r2.body) != 0 || r2.header.Get("ETag") != etag || r2.header.Get("Cache-Control") != immutableCacheControl {
					t.Fatalf("If-None-Match %s: %d %q %v", inm, r2.code, r2.body, r2.header)
				}
			}
			if got := metricValue(t, e.srv.m.chunkReads.WithLabelValues("ok")) + metricValue(t, e.srv.m.cacheHits); got != reads {
				t.Errorf("304s read chunks: %v → %v", reads, got)
			}
			if got := metricValue(t, e.srv.m.notModified); got != 4 {
				t.Errorf("not_modified_total = %v", got)
			}
			if r2 := e.getWith(t, path, token(t, nil), http.Header{"If-None-Match": {`"h1-00000000000000000000000000000000"`}}); r2.code != 200 || !bytes.Equal(r2.body, r.body) {
				t.Fatalf("stale ETag: %d", r2.code)
			}
			// Auth is checked before the cache validator.
			if r2 := e.do(t, path, "", http.Header{"If-None-Match": {etag}}); r2.code != 401 {
				t.Fatalf("If-None-Match without a token: %d", r2.code)
			}
			// The page stays the same after the channel grows and more of
			// it is archived and purged: same ETag, same bytes.
			e.seed(t, room, 24, 40)
			archiveThrough(t, e.st, e.arc, room, 36)
			r3 := e.get(t, path, token(t, nil))
			if r3.header.Get("ETag") != etag || !bytes.Equal(r3.body, r.body) {
				t.Fatalf("immutable page changed:\n%s\n%s", r.body, r3.body)
			}
		})
	}
}

func TestImmutablePageETagsDiffer(t *testing.T) {
	e := standard(t, envOpts{})
	etag := func(q string) string {
		t.Helper()
		tag := e.get(t, messagesPath(room, nil)+"?"+q, token(t, nil)).header.Get("ETag")
		if tag == "" {
			t.Fatalf("%s: no ETag", q)
		}
		return tag
	}
	for _, pair := range [][2]string{
		{"before=9&limit=4", "before=9&limit=3"},                    // other seqs
		{"before=9&limit=4", "before=9&limit=4&after=4"},            // same seqs, other next_cursor
		{"after=4&limit=4&order=asc", "after=4&before=9&order=asc"}, // same seqs, cursor vs none
		{"after=4&before=9&order=asc", "after=4&before=9"},          // other order
	} {
		if etag(pair[0]) == etag(pair[1]) {
			t.Errorf("%s and %s share an ETag", pair[0], pair[1])
		}
	}
	// Two URLs for the same page (parameters vs cursor) share it.
	if etag("after=4&before=9&order=asc") != etag("after=4&before=9&order=asc&limit=50") {
		t.Error("same page, different ETags")
	}
}

// A chunk object whose bytes were cut short, or damaged with its checksum
// recomputed, is detected on read: 503, never a short or wrong page.
func TestTruncatedChunkRead(t *testing.T) {
	for _, tc := range []struct {
		name        string
		keepSum     bool // leave the original checksum metadata
		counterName string
	}{
		{"truncated, original checksum", true, "corrupt"},
		{"truncated, checksum recomputed", false, "corrupt"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := standard(t, envOpts{})
			ctx := context.Background()
			mc := rawS3(t)
			key := archive.ChunkKey(room, 1)
			obj, err := mc.GetObject(ctx, e.acfg.Bucket, key, minio.GetObjectOptions{})
			if err != nil {
				t.Fatal(err)
			}
			body, err := io.ReadAll(obj)
			obj.Close()
			if err != nil {
				t.Fatal(err)
			}
			st, err := mc.StatObject(ctx, e.acfg.Bucket, key, minio.StatObjectOptions{})
			if err != nil {
				t.Fatal(err)
			}
			cut := body[:len(body)*2/3]
			sum := st.Metadata.Get("X-Amz-Meta-Herald-Sha256")
			if !tc.keepSum {
				sum = archive.Checksum(cut)
			}
			if _, err := mc.PutObject(ctx, e.acfg.Bucket, key, bytes.NewReader(cut), int64(len(cut)),
				minio.PutObjectOptions{UserMetadata: map[string]string{"Herald-Sha256": sum, "Herald-Count": "4"}}); err != nil {
				t.Fatal(err)
			}
			for _, q := range []url.Values{{"after": {"4"}, "limit": {"1"}, "order": {"asc"}}, {"before": {"10"}}} {
				r := e.get(t, messagesPath(room, q), token(t, nil))
				if r.code != 503 || r.header.Get("Retry-After") == "" || bytes.Contains(r.body, []byte(`"messages"`)) {
					t.Fatalf("%v: %d %s", q, r.code, r.body)
				}
			}
			if got := metricValue(t, e.srv.m.chunkReads.WithLabelValues(tc.counterName)); got != 2 {
				t.Errorf("%s chunk reads = %v", tc.counterName, got)
			}
		})
	}
}
