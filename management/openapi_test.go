package management

// A small OpenAPI 3.0 response checker over the subset of JSON Schema the
// document uses. Every response a test gets through env.get is checked
// against the document (route, status, headers, body), and
// TestOpenAPIContract produces every documented response of every
// operation. An unknown schema keyword fails the test, so the checker
// never silently accepts what it does not understand.

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"mime"
	"net/http"
	"net/url"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/minio/minio-go/v7"

	"github.com/herald-chat/herald/internal/archive"
	"github.com/herald-chat/herald/internal/auth"
	"github.com/herald-chat/herald/internal/store/memstore"
)

type apiDoc struct {
	root map[string]any

	mu   sync.Mutex
	seen map[string]bool // "GET /v1/… 200"
}

var loadDoc = sync.OnceValues(func() (*apiDoc, error) {
	var root map[string]any
	dec := json.NewDecoder(bytes.NewReader(openAPI))
	dec.UseNumber()
	if err := dec.Decode(&root); err != nil {
		return nil, err
	}
	return &apiDoc{root: root, seen: map[string]bool{}}, nil
})

func doc(tb testing.TB) *apiDoc {
	tb.Helper()
	d, err := loadDoc()
	if err != nil {
		tb.Fatalf("openapi.json: %v", err)
	}
	return d
}

// deref follows a local "$ref" ("#/components/…").
func (d *apiDoc) deref(node map[string]any) (map[string]any, error) {
	for i := 0; i < 10; i++ {
		ref, ok := node["$ref"].(string)
		if !ok {
			return node, nil
		}
		var cur any = d.root
		for _, part := range strings.Split(strings.TrimPrefix(ref, "#/"), "/") {
			m, ok := cur.(map[string]any)
			if !ok {
				return nil, fmt.Errorf("bad $ref %s", ref)
			}
			cur = m[part]
		}
		if node, ok = cur.(map[string]any); !ok {
			return nil, fmt.Errorf("unresolved $ref %s", ref)
		}
	}
	return nil, fmt.Errorf("$ref loop")
}

var annotations = map[string]bool{"description": true, "default": true, "example": true, "title": true}

// validate checks v (decoded with UseNumber) against schema; it returns
// the violations, each prefixed with its JSON path.
func (d *apiDoc) validate(schema map[string]any, v any, at string) []string {
	schema, err := d.deref(schema)
	if err != nil {
		return []string{at + ": " + err.Error()}
	}
	var errs []string
	fail := func(format string, args ...any) { errs = append(errs, at+": "+fmt.Sprintf(format, args...)) }
	keys := make([]string, 0, len(schema))
	for key := range schema {
		keys = append(keys, key)
	}
	sort.Strings(keys)
	for _, key := range keys {
		kv := schema[key]
		switch key {
		case "type":
			if !hasType(v, kv.(string)) {
				fail("%s is not of type %s", short(v), kv)
				return errs // the other keywords would only add noise
			}
		case "required":
			if obj, ok := v.(map[string]any); ok {
				for _, r := range kv.([]any) {
					if _, ok := obj[r.(string)]; !ok {
						fail("missing required property %q", r)
					}
				}
			}
		case "properties", "additionalProperties":
			obj, ok := v.(map[string]any)
			if !ok || key == "additionalProperties" {
				continue
			}
			props := kv.(map[string]any)
			for name, pv := range obj {
				if ps, ok := props[name]; ok {
					errs = append(errs, d.validate(ps.(map[string]any), pv, at+"."+name)...)
					continue
				}
				switch ap := schema["additionalProperties"].(type) {
				case bool:
					if !ap {
						fail("property %q is not in the schema", name)
					}
				case map[string]any:
					errs = append(errs, d.validate(ap, pv, at+"."+name)...)
				}
			}
		case "items":
			if arr, ok := v.([]any); ok {
				for i, item := range arr {
					errs = append(errs, d.validate(kv.(map[string]any), item, fmt.Sprintf("%s[%d]", at, i))...)
				}
			}
		case "enum":
			if !slices.ContainsFunc(kv.([]any), func(e any) bool { return fmt.Sprint(e) == fmt.Sprint(v) }) {
				fail("%s is not one of %v", short(v), kv)
			}
		case "minimum", "maximum":
			n, ok := v.(json.Number)
			if !ok {
				continue
			}
			x, _ := n.Float64()
			bound, _ := kv.(json.Number).Float64()
			if (key == "minimum" && x < bound) || (key == "maximum" && x > bound) {
				fail("%s violates %s %v", n, key, bound)
			}
		case "minLength":
			if s, ok := v.(string); ok {
				if n, _ := kv.(json.Number).Int64(); int64(len([]rune(s))) < n {
					fail("%q shorter than %d", s, n)
				}
			}
		case "pattern":
			if s, ok := v.(string); ok && !regexp.MustCompile(kv.(string)).MatchString(s) {
				fail("%q does not match %s", s, kv)
			}
		case "format":
			switch kv {
			case "date-time":
				if s, ok := v.(string); ok {
					if _, err := time.Parse(time.RFC3339Nano, s); err != nil {
						fail("%q is not a date-time", s)
					}
				}
			case "int64":
				if n, ok := v.(json.Number); ok {
					if _, err := strconv.ParseUint(string(n), 10, 64); err != nil {
						if _, err := strconv.ParseInt(string(n), 10, 64); err != nil {
							fail("%s is not an int64", n)
						}
					}
				}
			default:
				fail("unsupported format %v", kv)
			}
		default:
			if !annotations[key] {
				fail("schema keyword %q is not supported by the test checker", key)
			}
		}
	}
	return errs
}

func hasType(v any, typ string) bool {
	switch typ {
	case "object":
		_, ok := v.(map[string]any)
		return ok
	case "array":
		_, ok := v.([]any)
		return ok
	case "string":
		_, ok := v.(string)
		return ok
	case "boolean":
		_, ok := v.(bool)
		return ok
	case "number":
		_, ok := v.(json.Number)
		return ok
	case "integer":
		n, ok := v.(json.Number)
		return ok && !strings.ContainsAny(string(n), ".eE")
	}
	return false
}

func short(v any) string {
	b, _ := json.Marshal(v)
	if len(b) > 80 {
		b = append(b[:77], "..."...)
	}
	return string(b)
}

// route maps a request path to the document's path template.
func route(path string) string {
	switch {
	case path == "/v1/openapi.json":
		return path
	case strings.HasPrefix(path, "/v1/channels/") && strings.HasSuffix(path, "/messages"):
		return "/v1/channels/{channel}/messages"
	case strings.HasPrefix(path, "/v1/channels/"):
		return "/v1/channels/{channel}"
	}
	return path
}

// check validates one response of method on path (the request path,
// without query) against the document and records it as seen.
func (d *apiDoc) check(tb testing.TB, method, path string, r response) {
	tb.Helper()
	tmpl := route(path)
	where := fmt.Sprintf("%s %s → %d", method, tmpl, r.code)
	paths := d.root["paths"].(map[string]any)
	item, ok := paths[tmpl].(map[string]any)
	if !ok {
		tb.Fatalf("%s: path not in openapi.json", where)
	}
	op, ok := item[strings.ToLower(method)].(map[string]any)
	if !ok {
		tb.Fatalf("%s: method not in openapi.json", where)
	}
	resp, ok := op["responses"].(map[string]any)[strconv.Itoa(r.code)].(map[string]any)
	if !ok {
		tb.Fatalf("%s: status not documented; body %s", where, r.body)
	}
	resp, err := d.deref(resp)
	if err != nil {
		tb.Fatalf("%s: %v", where, err)
	}
	d.mu.Lock()
	d.seen[fmt.Sprintf("%s %s %d", method, tmpl, r.code)] = true
	d.mu.Unlock()
	var errs []string
	if hdrs, ok := resp["headers"].(map[string]any); ok {
		for name, h := range hdrs {
			h := h.(map[string]any)
			val := r.header.Get(name)
			if val == "" {
				if h["required"] == true {
					errs = append(errs, "missing header "+name)
				}
				continue
			}
			errs = append(errs, d.validate(h["schema"].(map[string]any), val, "header "+name)...)
		}
	}
	content, _ := resp["content"].(map[string]any)
	if len(content) == 0 {
		if len(r.body) != 0 {
			errs = append(errs, fmt.Sprintf("undocumented body %q", r.body))
		}
	} else {
		mt, _, _ := mime.ParseMediaType(r.header.Get("Content-Type"))
		media, ok := content[mt].(map[string]any)
		if !ok {
			errs = append(errs, "undocumented Content-Type "+r.header.Get("Content-Type"))
		} else if schema, ok := media["schema"].(map[string]any); ok {
			var body any
			dec := json.NewDecoder(bytes.NewReader(r.body))
			dec.UseNumber()
			if err := dec.Decode(&body); err != nil {
				errs = append(errs, fmt.Sprintf("body is not JSON: %v", err))
			} else {
				errs = append(errs, d.validate(schema, body, "body")...)
			}
		}
	}
	if len(errs) > 0 {
		tb.Fatalf("%s does not match openapi.json:\n  %s\nbody: %.300s", where, strings.Join(errs, "\n  "), r.body)
	}
}

// documented lists "METHOD path status" for every documented response.
func (d *apiDoc) documented() []string {
	var out []string
	for p, item := range d.root["paths"].(map[string]any) {
		for m, op := range item.(map[string]any) {
			for code := range op.(map[string]any)["responses"].(map[string]any) {
				out = append(out, fmt.Sprintf("%s %s %s", strings.ToUpper(m), p, code))
			}
		}
	}
	sort.Strings(out)
	return out
}

func TestOpenAPICheckerCatchesMismatches(t *testing.T) {
	d := doc(t)
	page := map[string]any{"$ref": "#/components/schemas/Page"}
	decode := func(s string) any {
		var v any
		dec := json.NewDecoder(strings.NewReader(s))
		dec.UseNumber()
		if err := dec.Decode(&v); err != nil {
			t.Fatal(err)
		}
		return v
	}
	ok := `{"messages":[{"id":"a","channel":"c","seq":1,"sender":"u","data":{"x":1},"published_at":"2026-03-01T12:00:01.500Z"}]}`
	if errs := d.validate(page, decode(ok), "body"); len(errs) != 0 {
		t.Fatalf("valid page rejected: %v", errs)
	}
	for _, bad := range []string{
		`{}`,
		`{"messages":{}}`,
		`{"messages":[],"extra":1}`,
		`{"messages":[{"id":"a","channel":"c","seq":0,"sender":"u","data":1,"published_at":"2026-03-01T12:00:01Z"}]}`,
		`{"messages":[{"id":"a","channel":"c","seq":1.5,"sender":"u","data":1,"published_at":"2026-03-01T12:00:01Z"}]}`,
		`{"messages":[{"id":"a","channel":"c","seq":1,"sender":"u","data":1,"published_at":"yesterday"}]}`,
		`{"messages":[{"id":"a","channel":"c","seq":1,"sender":"u","published_at":"2026-03-01T12:00:01Z"}]}`,
		`{"messages":[],"next_cursor":""}`,
	} {
		if errs := d.validate(page, decode(bad), "body"); len(errs) == 0 {
			t.Errorf("invalid page accepted: %s", bad)
		}
	}
	for _, bad := range []string{`{"parameter":"page"}`, `{"error":"x","parameter":5}`, `{"error":"x","holder":"h"}`} {
		if errs := d.validate(map[string]any{"$ref": "#/components/schemas/Error"}, decode(bad), "body"); len(errs) == 0 {
			t.Errorf("invalid error body accepted: %s", bad)
		}
	}
	if errs := d.validate(map[string]any{"oneOf": []any{}}, decode(`1`), "body"); len(errs) == 0 {
		t.Error("unsupported keyword accepted")
	}
}

func TestOpenAPIContract(t *testing.T) {
	d := doc(t)
	e := standard(t, envOpts{})
	tok := token(t, nil)
	admin := token(t, func(c *auth.Claims) { c.Admin = true; c.Channels = nil })
	other := token(t, func(c *auth.Claims) { c.Channels = []string{"room:2"} })
	msgs := func(q string) string { return messagesPath(room, nil) + "?" + q }
	chPath := "/v1/channels/" + url.PathEscape(room)

	// Every call goes through e.get, which checks it against the document.
	e.get(t, "/v1/openapi.json", "")
	for _, q := range []string{"", "limit=3", "order=asc&limit=5", "after=14&before=19", "before=9&limit=4", "after=23", "after=2&limit=3&order=asc"} {
		if r := e.get(t, msgs(q), tok); r.code != 200 {
			t.Fatalf("%s: %d", q, r.code)
		}
	}
	r := e.get(t, msgs("before=9&limit=4"), tok)
	if r.header.Get("ETag") == "" {
		t.Fatal("archived page without ETag")
	}
	e.getWith(t, msgs("before=9&limit=4"), tok, http.Header{"If-None-Match": {r.header.Get("ETag")}})
	for _, q := range []string{"limit=0", "order=up", "cursor=!!", "limit=%zz", "after=5&before=5", "page=2"} {
		e.get(t, msgs(q), tok)
	}
	e.get(t, chPath+"?verbose=1", tok)
	e.get(t, "/v1/openapi.json?v=2", "")
	e.get(t, msgs(""), "")
	e.get(t, msgs(""), "garbage")
	e.get(t, msgs(""), other)
	e.get(t, messagesPath("nope", nil), admin)
	e.get(t, chPath, tok)
	e.get(t, chPath, "")
	e.get(t, chPath, other)
	e.get(t, "/v1/channels/nope", admin)
	corrupt := standard(t, envOpts{}) // fresh cache
	junk := []byte("garbage")
	if _, err := rawS3(t).PutObject(context.Background(), corrupt.acfg.Bucket, archive.ChunkKey(room, 2), bytes.NewReader(junk), int64(len(junk)),
		minio.PutObjectOptions{UserMetadata: map[string]string{"Herald-Sha256": archive.Checksum(junk), "Herald-Count": "4"}}); err != nil {
		t.Fatal(err)
	}
	if r := corrupt.get(t, msgs("after=8&order=asc&limit=2"), tok); r.code != 503 {
		t.Fatalf("corrupt chunk: %d", r.code)
	}
	down := newEnv(t, envOpts{st: memstore.New()})
	down.seed(t, room, 1, 3)
	down.st.Close()
	down.get(t, chPath, tok)
	down.get(t, msgs(""), tok)

	d.mu.Lock()
	defer d.mu.Unlock()
	for _, want := range d.documented() {
		if !d.seen[want] {
			t.Errorf("documented response %s was never produced by a test", want)
		}
	}
}
