package etcdtest

import (
	"testing"
)

func TestSingleMember(t *testing.T) {
	c := Start(t, 1)
	m := c.Members[0]
	if !m.healthy(t.Context()) {
		t.Fatal("not healthy after Start")
	}
	m.Stop()
	if m.healthy(t.Context()) {
		t.Fatal("healthy after Stop")
	}
	m.Restart()
	if !m.healthy(t.Context()) {
		t.Fatal("not healthy after Restart")
	}
}

func TestThreeMembersSurviveOneKilled(t *testing.T) {
	c := Start(t, 3)
	if got := len(c.Endpoints()); got != 3 {
		t.Fatalf("%d endpoints", got)
	}
	c.Members[0].Kill()
	// The other two still form a quorum.
	c.Members[1].WaitHealthy()
	c.Members[2].WaitHealthy()
	c.Members[0].Restart()
}
