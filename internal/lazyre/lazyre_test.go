package lazyre

import (
	"sync"
	"testing"
)

func TestRegexp(t *testing.T) {
	r := New(`^([a-z]+)-([0-9]+)$`)
	if !r.MatchString("abc-12") || r.MatchString("abc-") {
		t.Error("MatchString")
	}
	if m := r.FindStringSubmatch("abc-12"); len(m) != 3 || m[1] != "abc" || m[2] != "12" {
		t.Errorf("FindStringSubmatch: %q", m)
	}
	if got := New(`p@`).ReplaceAllString("https://u:p@h", "***@"); got != "https://u:***@h" {
		t.Errorf("ReplaceAllString: %q", got)
	}
	if r.String() != `^([a-z]+)-([0-9]+)$` {
		t.Errorf("String: %q", r.String())
	}
}

// Outside a test binary the pattern is compiled by the first use, once,
// whichever goroutines use it first.
func TestCompiledOnFirstUse(t *testing.T) {
	r := &Regexp{str: `^x+$`} // as New outside a test binary
	if r.rx != nil {
		t.Fatal("compiled before use")
	}
	var wg sync.WaitGroup
	for range 8 {
		wg.Add(1)
		go func() { defer wg.Done(); r.MatchString("xx") }()
	}
	wg.Wait()
	if r.rx == nil || !r.MatchString("xxx") {
		t.Error("not compiled by its first use")
	}
}

// In a test binary a bad pattern fails at New, as MustCompile at init.
func TestBadPatternFailsInTests(t *testing.T) {
	if !inTest {
		t.Fatal("inTest is false in a test binary")
	}
	defer func() {
		if recover() == nil {
			t.Error("New accepted a bad pattern in a test binary")
		}
	}()
	New(`(`)
}
