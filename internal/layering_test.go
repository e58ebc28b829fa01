// Package internal_test checks the layering of the module: internal/ holds
// only what the services share, so no package below it imports a service,
// the assembly or the dev stack.
package internal_test

import (
	"go/parser"
	"go/token"
	"io/fs"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

const module = "github.com/herald-chat/herald/"

// above are the packages internal/ must not import (nor their subpackages).
var above = []string{"relay", "controller", "management", "cacher", "assembly", "devstack", "cmd", "loadtest", "e2e", "dashboards", "deploy", "bench"}

func TestInternalImportsNoService(t *testing.T) {
	n := 0
	err := filepath.WalkDir(".", func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() || !strings.HasSuffix(path, ".go") {
			return err
		}
		f, err := parser.ParseFile(token.NewFileSet(), path, nil, parser.ImportsOnly)
		if err != nil {
			return err
		}
		n++
		for _, imp := range f.Imports {
			p, _ := strconv.Unquote(imp.Path.Value)
			rest, ok := strings.CutPrefix(p, module)
			if !ok {
				continue
			}
			for _, a := range above {
				if rest == a || strings.HasPrefix(rest, a+"/") {
					t.Errorf("internal/%s imports %s: internal/ must not depend on services, assembly or devstack", filepath.ToSlash(path), p)
				}
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if n < 50 {
		t.Fatalf("read only %d files below internal/", n)
	}
}
