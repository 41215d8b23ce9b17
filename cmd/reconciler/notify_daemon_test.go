package main

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"

	"github.com/reconciler-dev/reconciler/internal/testgit"
)

// The real daemon, its target blocked by a failed build, runs again and
// again (SIGHUP, as a schedule tick would): the destination for blocked
// hears of it once, the one for every event hears of the failure once and
// not of the blocked runs that follow. The URL is never in its logs.
func TestDaemonNotifiesABlockedTargetOnce(t *testing.T) {
	bin, err := buildBinary()
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	got := map[string][]string{}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var ev struct{ Event string }
		b, _ := io.ReadAll(r.Body)
		json.Unmarshal(b, &ev)
		mu.Lock()
		got[filepath.Base(r.URL.Path)] = append(got[filepath.Base(r.URL.Path)], ev.Event)
		mu.Unlock()
	}))
	defer srv.Close()
	events := func(dest string) string {
		mu.Lock()
		defer mu.Unlock()
		e := slices.Clone(got[dest])
		slices.Sort(e)
		return strings.Join(e, ",")
	}

	app := testgit.New(t)
	v1 := app.Commit("v1")
	app.Write("FAIL", "compile error\n")
	v2 := app.Commit("v2")
	dir := t.TempDir()
	root := filepath.Join(dir, "host")
	file := filepath.Join(dir, "desired.yaml")
	write := func(commit string) {
		os.WriteFile(file, []byte(fmt.Sprintf(`app: site
root: %s
source: {repo: %s, commit: %s}
build:
  - {name: b, run: "test ! -f FAIL || { cat FAIL >&2; exit 7; }"}
notify:
  - url: %[4]s/services/T0001/B0001/s3cr3tT0ken/all
    on: [success, failure, blocked, revert]
  - url: %[4]s/services/T0001/B0002/s3cr3tT0ken/blocked
    on: [blocked]
`, root, app.Dir, commit, srv.URL)), 0o644)
	}
	write(v1)
	cmd, logs := startDaemon(t, bin, dir, "-f", file)
	waitUntil(t, "v1 deployed and told", func() bool { return events("all") == "success" }, logs)
	write(v2)
	waitUntil(t, "v2's failure told", func() bool { return events("all") == "failure,success" }, logs)
	signalled := regexp.MustCompile(`"msg":"run done".*"trigger":"[^"]*signal`)
	for i := 1; i <= 3; i++ {
		cmd.Process.Signal(syscall.SIGHUP)
		waitUntil(t, fmt.Sprintf("blocked run %d", i), func() bool { return len(signalled.FindAllString(logs.String(), -1)) == i }, logs)
	}
	cmd.Process.Signal(syscall.SIGTERM)
	if err := cmd.Wait(); err != nil {
		t.Errorf("daemon exit: %v\n%s", err, logs)
	}
	if !strings.HasSuffix(linkedTo(root), v1[:8]) {
		t.Errorf("linked %s; the host should stay on v1", linkedTo(root))
	}
	if a, b := events("all"), events("blocked"); a != "failure,success" || b != "blocked" {
		t.Errorf("told %q and %q; want failure,success and one blocked\n%s", a, b, logs)
	}
	if strings.Contains(logs.String(), "s3cr3t") || strings.Contains(logs.String(), "/services/") {
		t.Errorf("the logs show the URL:\n%s", logs)
	}
}
