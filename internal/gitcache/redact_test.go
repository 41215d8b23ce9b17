package gitcache

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/reconciler-dev/reconciler/internal/testgit"
)

// TestRemoteErrorsHideThePassword: every way a fetch from a remote with
// user:token in its URL can fail (refused, not found, a server error, a
// closed port), first clone, later fetch and ls-remote, says so without
// the token.
func TestRemoteErrorsHideThePassword(t *testing.T) {
	ctx := context.Background()
	r := testgit.New(t)
	r.Commit("v1")
	for _, code := range []int{http.StatusUnauthorized, http.StatusForbidden, http.StatusNotFound, http.StatusInternalServerError, 0} {
		t.Run(fmt.Sprint(code), func(t *testing.T) {
			addr := closedPort(t)
			if code != 0 {
				srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
					http.Error(w, "no: "+req.URL.String(), code)
				}))
				defer srv.Close()
				addr = strings.TrimPrefix(srv.URL, "http://")
			}
			url := "http://deploy:t0ken@" + addr + "/app.git"
			fresh := newCache(t, url)
			cached := newCache(t, r.Dir)
			if err := cached.Fetch(ctx); err != nil {
				t.Fatal(err)
			}
			cached.URL = url
			for name, call := range map[string]func() error{
				"clone":     func() error { return fresh.Fetch(ctx) },
				"fetch":     func() error { return cached.Fetch(ctx) },
				"ls-remote": func() error { _, err := fresh.LsRemote(ctx, "main"); return err },
			} {
				err := call()
				if err == nil {
					t.Fatalf("%s: no error", name)
				}
				if strings.Contains(err.Error(), "t0ken") {
					t.Errorf("%s: the token shows: %v", name, err)
				}
				if !strings.Contains(err.Error(), "deploy:xxxxx@") {
					t.Errorf("%s: %v; want the redacted URL", name, err)
				}
			}
		})
	}
}
