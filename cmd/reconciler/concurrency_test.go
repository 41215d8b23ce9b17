package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/reconciler-dev/reconciler/internal/testgit"
)

// TestConcurrentApplies runs 20 applies of mixed targets on one root at
// once, half failing fast on the lock and half waiting for it. Each must
// apply, or exit 1 with the lock message; the history must be whole lines
// with no two applies' steps interleaved; the link must end on a complete
// release.
func TestConcurrentApplies(t *testing.T) {
	bin, err := buildBinary()
	if err != nil {
		t.Fatal(err)
	}
	app := testgit.New(t)
	var shas []string
	for i := 0; i < 3; i++ {
		app.Write("V", fmt.Sprint(i))
		shas = append(shas, app.Commit(fmt.Sprint(i)))
	}
	dir := t.TempDir()
	var wg sync.WaitGroup
	type outcome struct {
		code int
		out  string
	}
	results := make([]outcome, 20)
	for i := 0; i < 20; i++ {
		file := filepath.Join(dir, fmt.Sprintf("d%d.yaml", i))
		os.WriteFile(file, []byte(fmt.Sprintf("app: c\nroot: host\nkeep: 3\nsource: {repo: %s, commit: %s}\nbuild:\n  - {name: b, run: \"sleep 0.05; cat V > built\"}\n",
			app.Dir, shas[i%3])), 0o644)
		args := []string{"apply", "-f", file}
		if i%2 == 0 {
			args = append(args, "--lock-timeout", "60s")
		}
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			cmd := exec.Command(bin, args...)
			cmd.Dir = dir
			cmd.Env = append(testgit.Env(t.TempDir()), "PATH=/usr/bin:/bin")
			var out bytes.Buffer
			cmd.Stdout, cmd.Stderr = &out, &out
			err := cmd.Run()
			code := 0
			if ee, ok := err.(*exec.ExitError); ok {
				code = ee.ExitCode()
			}
			results[i] = outcome{code, out.String()}
		}(i)
	}
	wg.Wait()
	applied, refused := 0, 0
	for i, r := range results {
		switch {
		case r.code == 0:
			applied++
		case r.code == 1 && i%2 == 1 && strings.Contains(r.out, "another apply is running on this root: process "):
			refused++
		default:
			t.Errorf("apply %d (waits: %v) exited %d:\n%s", i, i%2 == 0, r.code, r.out)
		}
	}
	if applied < 10 {
		t.Errorf("only %d applies succeeded; the 10 that wait for the lock must", applied)
	}

	f, err := os.Open(filepath.Join(dir, "host", ".reconciler", "history.jsonl"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	done := map[string]bool{}
	current := ""
	lines := 0
	for sc.Scan() {
		lines++
		var rec struct {
			Kind    string `json:"kind"`
			ApplyID string `json:"apply_id"`
		}
		if err := json.Unmarshal(sc.Bytes(), &rec); err != nil {
			t.Fatalf("history line %d is corrupt: %q", lines, sc.Text())
		}
		if done[rec.ApplyID] {
			t.Fatalf("history line %d: apply %s has a record after it ended", lines, rec.ApplyID)
		}
		if current != "" && rec.ApplyID != current {
			t.Fatalf("history line %d: apply %s interleaves with %s", lines, rec.ApplyID, current)
		}
		current = rec.ApplyID
		if rec.Kind == "apply" {
			done[rec.ApplyID], current = true, ""
		}
	}
	if len(done) != applied {
		t.Errorf("%d applies in the history, %d succeeded (a refused apply never took the lock)", len(done), applied)
	}
	if msg := checkLink(filepath.Join(dir, "host", "current")); msg != "" {
		t.Error(msg)
	}
	t.Logf("20 concurrent applies: %d applied, %d refused with the lock message; %d history lines, none interleaved", applied, refused, lines)
}
