package memstore_test

import (
	"testing"

	"github.com/herald-chat/herald/internal/store"
	"github.com/herald-chat/herald/internal/store/memstore"
	"github.com/herald-chat/herald/internal/store/storetest"
)

func TestConformance(t *testing.T) {
	storetest.Run(t, func(t testing.TB) store.Store {
		s := memstore.New()
		t.Cleanup(func() { _ = s.Close() })
		return s
	})
}
