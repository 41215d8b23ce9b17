package cli

import (
	"bytes"
	"testing"
	"time"

	"github.com/reconciler-dev/reconciler/internal/fleet"
)

func TestWriteFleetStatus(t *testing.T) {
	at := time.Date(2026, 11, 26, 10, 0, 0, 0, time.UTC)
	target := "3e8f8e17133de2f1bf081c176a18ceda9ed9ad72-4e785bc2aa"
	for _, tc := range []struct {
		name string
		gs   fleet.GroupStatus
		want string
	}{
		{"empty", fleet.GroupStatus{App: "site", Group: "web"}, "Group site/web: 0 hosts\n\nNo rollout yet.\n"},
		{"rolling", fleet.GroupStatus{App: "site", Group: "web",
			Agents: []fleet.Status{
				{Host: "web-1", Commit: "3e8f8e17133de2f1", State: "ok", Target: target, LastApply: at},
				{Host: "web-2", Commit: "2388c7765ed00dd0", State: "waiting: the canaries soak", Target: target},
				{Host: "web-3", State: "starting"},
			},
			Rollouts: []fleet.Rollout{{Target: target, Canaries: []string{"web-1"}, Built: []string{"web-1", "web-2"},
				Switched: []string{"web-1"}, Healthy: []string{"web-1"}, Failed: map[string]string{}, MigratedBy: "web-1"}},
		}, `Group site/web: 3 hosts

HOST   COMMIT    STATE                       LAST APPLY
web-1  3e8f8e17  ok                          2026-11-26T10:00:00Z
web-2  2388c776  waiting: the canaries soak  -
web-3  -         starting                    -

Rollout 3e8f8e17-4e785bc2: rolling
  canaries: web-1
  built 2, switched 1, healthy 1, failed 0, waiting 1
  migrated by web-1
`},
		{"halted and suspended", fleet.GroupStatus{App: "site", Group: "web", Suspended: true,
			Rollouts: []fleet.Rollout{{Target: target, Switched: []string{"web-1"}, Failed: map[string]string{"web-1": "health: 500"},
				Halted: "failed hosts: 1, more than max_failures 0", Migrating: "web-2"}},
		}, `Group site/web (suspended: no host takes a switch slot): 0 hosts

Rollout 3e8f8e17-4e785bc2: halted
  halted: failed hosts: 1, more than max_failures 0
  built 1, switched 1, healthy 0, failed 1, waiting 0
  failed web-1: health: 500
  migrating on web-2
`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var b bytes.Buffer
			writeFleetStatus(&b, &tc.gs)
			if b.String() != tc.want {
				t.Errorf("got:\n%s\nwant:\n%s", b.String(), tc.want)
			}
		})
	}
}
