package desired

import (
	"strings"
	"testing"
	"time"

	"github.com/robfig/cron/v3"
)

func TestValidateSchedule(t *testing.T) {
	tests := []struct {
		spec string
		want string // "" when valid, else a part of the error
	}{
		{"*/5 * * * *", ""},
		{"@every 5m", ""},
		{"@every 1s", ""},
		{"@daily", ""},
		{"CRON_TZ=Europe/Berlin 0 3 * * *", ""},
		{"TZ=America/New_York 30 2 * * 1-5", ""},
		{"TZ=UTC @hourly", ""},
		{"CRON_TZ=Europe/Berlin\t0 3 * * *", ""},
		{"", "must not be empty"},
		{"  ", "must not be empty"},
		{"TZ=0", `"TZ=0" has no schedule after the time zone "0"`},
		{"TZ=", `"TZ=" names no time zone after TZ=`},
		{"CRON_TZ=", `"CRON_TZ=" names no time zone after CRON_TZ=`},
		{"CRON_TZ=Europe/Berlin", `has no schedule after the time zone "Europe/Berlin"`},
		{"CRON_TZ=Europe/Berlin   ", `has no schedule after the time zone "Europe/Berlin"`},
		{"CRON_TZ= 0 3 * * *", `names no time zone after CRON_TZ=`},
		{"TZ=Mars/Olympus 0 3 * * *", `names an unknown time zone "Mars/Olympus"`},
		{"TZ=../../etc/passwd 0 3 * * *", `names an unknown time zone "../../etc/passwd"`},
		{"TZ=UTC CRON_TZ=UTC 0 3 * * *", "names more than one time zone"},
		{"TZ=UTC every day", `invalid cron spec "TZ=UTC every day": expected exactly 5 fields`},
		{"@every 1ms", `"@every 1ms" is more often than the shortest interval, @every 1s`},
		{"@every 999ms", "shortest interval"},
		{"@every 0s", "shortest interval"},
		{"@every -5m", "shortest interval"},
		{"TZ=UTC @every 10ms", "shortest interval"},
		{"@every soon", `invalid cron spec "@every soon": failed to parse duration`},
		{"every 5 minutes", `invalid cron spec "every 5 minutes": expected exactly 5 fields, found 3`},
		{"61 * * * *", `invalid cron spec "61 * * * *"`},
	}
	for _, tt := range tests {
		t.Run(tt.spec, func(t *testing.T) {
			err := ValidateSchedule(tt.spec)
			switch {
			case tt.want == "" && err != nil:
				t.Fatalf("rejected: %v", err)
			case tt.want != "" && err == nil:
				t.Fatalf("accepted, want an error containing %q", tt.want)
			case tt.want != "" && !strings.Contains(err.Error(), tt.want):
				t.Fatalf("error %q, want it to contain %q", err, tt.want)
			}
		})
	}
}

// The zone decides when a schedule fires: 03:00 in Berlin is 02:00 UTC in
// winter and 01:00 UTC in summer.
func TestScheduleZoneFires(t *testing.T) {
	ny, err := time.LoadLocation("America/New_York")
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		spec       string
		from, want time.Time
	}{
		{"CRON_TZ=Europe/Berlin 0 3 * * *", date(2026, 1, 15, 0, 0, time.UTC), date(2026, 1, 15, 2, 0, time.UTC)},
		{"CRON_TZ=Europe/Berlin 0 3 * * *", date(2026, 7, 15, 0, 0, time.UTC), date(2026, 7, 15, 1, 0, time.UTC)},
		{"TZ=Asia/Tokyo 0 9 * * *", date(2026, 3, 1, 0, 30, time.UTC), date(2026, 3, 2, 0, 0, time.UTC)},
		{"TZ=America/New_York @daily", date(2026, 1, 15, 12, 0, time.UTC), date(2026, 1, 16, 5, 0, time.UTC)},
		// Read from another zone's clock, it is the same instant.
		{"CRON_TZ=UTC 0 12 * * *", date(2026, 1, 15, 0, 0, ny), date(2026, 1, 15, 12, 0, time.UTC)},
	}
	for _, tt := range tests {
		s, err := CronParser.Parse(tt.spec)
		if err != nil {
			t.Fatalf("%s: %v", tt.spec, err)
		}
		if got := s.Next(tt.from); !got.Equal(tt.want) {
			t.Errorf("%s: next after %s is %s, want %s", tt.spec, tt.from, got.UTC(), tt.want.UTC())
		}
	}
}

func date(y int, m time.Month, d, h, min int, loc *time.Location) time.Time {
	return time.Date(y, m, d, h, min, 0, 0, loc)
}

// The daemon's cron runs with CronParser: a spec that would panic inside
// robfig/cron is an error from AddFunc.
func TestCronWithParserRejectsPanickingSpecs(t *testing.T) {
	c := cron.New(cron.WithParser(CronParser))
	for _, spec := range []string{"TZ=0", "CRON_TZ=", "TZ=", "@every 1ms"} {
		if _, err := c.AddFunc(spec, func() {}); err == nil {
			t.Errorf("%q: accepted", spec)
		}
	}
	if _, err := c.AddFunc("CRON_TZ=Europe/Berlin 0 3 * * *", func() {}); err != nil {
		t.Errorf("good spec: %v", err)
	}
}

func TestParseCronRecovers(t *testing.T) {
	// cronFields is robfig/cron's own parser; this is the spec it panics on.
	if _, err := parseCron("TZ=0"); err == nil || !strings.Contains(err.Error(), "the cron parser failed") {
		t.Errorf("parseCron(TZ=0): %v", err)
	}
}
