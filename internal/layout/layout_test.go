package layout

import (
	"testing"
	"time"
)

// Release names: the reconciler's own and Capistrano's/deploy_helper's
// (adopted, UTC) carry a record and a time; nothing else does, and no
// accepted name can leave releases/.
func TestReleaseNames(t *testing.T) {
	tests := []struct {
		name          string
		ours, adopted bool
		time          time.Time
	}{
		{"20261125T204512Z-8c0d2e4f", true, false, time.Date(2026, 11, 25, 20, 45, 12, 0, time.UTC)},
		{"20261125T204512Z-8c0d2e4f-2", true, false, time.Date(2026, 11, 25, 20, 45, 12, 0, time.UTC)},
		{"20261126101624", false, true, time.Date(2026, 11, 26, 10, 16, 24, 0, time.UTC)},
		{"2026112610162", false, false, time.Time{}},
		{"202611261016245", false, false, time.Time{}},
		{"20261399101624", false, true, time.Time{}}, // the form, not a time: recorded, unordered
		{"../20261126101624", false, false, time.Time{}},
		{"20261126101624/..", false, false, time.Time{}},
		{"v1.2", false, false, time.Time{}},
		{"", false, false, time.Time{}},
	}
	for _, tt := range tests {
		if got := IsReleaseName(tt.name); got != tt.ours {
			t.Errorf("IsReleaseName(%q) = %v", tt.name, got)
		}
		if got := IsAdoptedName(tt.name); got != tt.adopted {
			t.Errorf("IsAdoptedName(%q) = %v", tt.name, got)
		}
		if got := IsRecordedName(tt.name); got != (tt.ours || tt.adopted) {
			t.Errorf("IsRecordedName(%q) = %v", tt.name, got)
		}
		got, ok := NameTime(tt.name)
		if ok != !tt.time.IsZero() || !got.Equal(tt.time) {
			t.Errorf("NameTime(%q) = %s, %v; want %s", tt.name, got, ok, tt.time)
		}
	}
}
