package desired

import (
	"errors"
	"fmt"
	"strings"
	"time"
	"unicode"

	"github.com/robfig/cron/v3"
	// Zones come with the binary, so a zone that validates on one machine
	// also loads on a host without /usr/share/zoneinfo.
	_ "time/tzdata"

	"go.yaml.in/yaml/v3"
)

// MinEvery is the shortest `@every` interval a schedule may have: robfig/cron
// silently rounds anything shorter up to a second, so `@every 1ms` would
// reconcile every second while the file says otherwise.
const MinEvery = time.Second

// ScheduleParser parses `schedule:` and --schedule. It is both what Parse
// validates with and what the daemon's cron runs with (cron.WithParser), so
// a spec that validates is the spec that runs. A spec is five cron fields
// (minute hour day-of-month month day-of-week) or a descriptor such as
// @hourly or @every 5m, optionally after TZ=<zone> or CRON_TZ=<zone>.
//
// It checks what robfig/cron v3 does not: the zone prefix is split and
// loaded here, because cron's own handling indexes past the end of "TZ=0" or
// "CRON_TZ=" and panics; an interval under MinEvery is an error; and any
// panic left inside cron's parser becomes an error.
type ScheduleParser struct{}

var _ cron.ScheduleParser = ScheduleParser{}

// CronParser is the parser `schedule:` is checked with and the daemon runs
// with.
var CronParser = ScheduleParser{}

// cronFields parses a spec with no zone prefix.
var cronFields = cron.NewParser(cron.Minute | cron.Hour | cron.Dom | cron.Month | cron.Dow | cron.Descriptor)

const scheduleHelp = `use five fields like "*/5 * * * *" or a descriptor like "@every 5m"`

// Parse returns the schedule spec describes. A spec without a zone runs in
// the daemon's local time.
func (ScheduleParser) Parse(spec string) (cron.Schedule, error) {
	if strings.TrimSpace(spec) == "" {
		return nil, errors.New("must not be empty")
	}
	body, loc, err := splitZone(spec)
	if err != nil {
		return nil, err
	}
	if rest, ok := strings.CutPrefix(body, "@every "); ok {
		if d, err := time.ParseDuration(rest); err == nil && d < MinEvery {
			return nil, fmt.Errorf("%q is more often than the shortest interval, @every %s", spec, MinEvery)
		}
	}
	sched, err := parseCron(body)
	if err != nil {
		return nil, fmt.Errorf("invalid cron spec %q: %v (%s)", spec, err, scheduleHelp)
	}
	if ss, ok := sched.(*cron.SpecSchedule); ok && loc != nil {
		ss.Location = loc
	}
	return sched, nil
}

// splitZone takes a TZ=<zone> or CRON_TZ=<zone> prefix off spec and loads
// the zone. loc is nil when there is no prefix.
func splitZone(spec string) (body string, loc *time.Location, err error) {
	var prefix string
	for _, p := range []string{"TZ=", "CRON_TZ="} {
		if strings.HasPrefix(spec, p) {
			prefix = p
		}
	}
	if prefix == "" {
		return spec, nil, nil
	}
	rest := spec[len(prefix):]
	zone, body := rest, ""
	if i := strings.IndexFunc(rest, unicode.IsSpace); i >= 0 {
		zone, body = rest[:i], strings.TrimSpace(rest[i:])
	}
	example := fmt.Sprintf("%sEurope/Berlin 0 3 * * *", prefix)
	switch {
	case zone == "":
		return "", nil, fmt.Errorf("%q names no time zone after %s: write it like %q", spec, prefix, example)
	case body == "":
		return "", nil, fmt.Errorf("%q has no schedule after the time zone %q: write it like %q", spec, zone, example)
	case strings.HasPrefix(body, "TZ=") || strings.HasPrefix(body, "CRON_TZ="):
		return "", nil, fmt.Errorf("%q names more than one time zone", spec)
	}
	loc, err = time.LoadLocation(zone)
	if err != nil {
		return "", nil, fmt.Errorf("%q names an unknown time zone %q: use a name from the tz database such as Europe/Berlin or UTC", spec, zone)
	}
	return body, loc, nil
}

// parseCron runs robfig/cron's parser, turning a panic inside it into an
// error: a bad spec must be a validation error, never a crashed daemon.
func parseCron(spec string) (s cron.Schedule, err error) {
	defer func() {
		if r := recover(); r != nil {
			s, err = nil, fmt.Errorf("the cron parser failed: %v", r)
		}
	}()
	return cronFields.Parse(spec)
}

// ValidateSchedule checks a cron spec the way the daemon will parse it.
func ValidateSchedule(spec string) error {
	_, err := CronParser.Parse(spec)
	return err
}

// schedule reads `schedule:`.
func (p *parser) schedule(v *yaml.Node, key string) string {
	c, ok := p.str(v, key)
	if !ok {
		return ""
	}
	if err := ValidateSchedule(c); err != nil {
		p.fail(v, key, "%v", err)
	}
	return c
}
