package desired

import (
	"fmt"
	"io"
	"net/url"
	"path/filepath"
	"strings"

	"go.yaml.in/yaml/v3"
)

// Notification events: what an apply that ended is, for notify.on.
const (
	// NotifySuccess: the apply changed the host and the target serves.
	NotifySuccess = "success"
	// NotifyFailure: the apply failed and the host is not back on a
	// release that serves (a build, migration or fetch failed, or there
	// was nothing healthy to return to).
	NotifyFailure = "failure"
	// NotifyBlocked: the target failed before and is not retried; the
	// host stays on the last good release until a person acts.
	NotifyBlocked = "blocked"
	// NotifyRevert: the target was linked, failed its services or health
	// check, and the host returned to the last release that served.
	NotifyRevert = "revert"
)

// NotifyEvents are the events notify.on may name, in the order they are
// documented.
var NotifyEvents = []string{NotifyFailure, NotifyBlocked, NotifyRevert, NotifySuccess}

// DefaultNotifyOn is notify.on when absent: everything a person may have
// to act on, not the deploys that went well.
var DefaultNotifyOn = []string{NotifyFailure, NotifyBlocked, NotifyRevert}

// Secret is text never shown: whatever verb formats it, it prints as
// xxxxx, and it marshals as xxxxx, so a State printed by mistake does not
// leak it. Reveal gives the text to the one place that uses it.
type Secret string

// Format writes xxxxx for every verb.
func (Secret) Format(f fmt.State, _ rune) { io.WriteString(f, "xxxxx") }

// MarshalText hides the secret in JSON, YAML and text encodings.
func (Secret) MarshalText() ([]byte, error) { return []byte("xxxxx"), nil }

// Reveal returns the secret itself.
func (s Secret) Reveal() string { return string(s) }

// Notify is one entry of notify: where a JSON POST goes after an apply, and
// for which events. Exactly one of URL and URLFile is set.
//
//	notify:
//	  - url: https://hooks.slack.com/services/T000/B000/XXXX
//	    on: [failure, blocked, revert, success]   # default: all but success
//	  - url_file: /etc/reconciler/webhook-url     # read at each send
//
// A webhook URL is a credential (Slack's carries its token in the path):
// it is never shown; messages call the entry notify[i].
type Notify struct {
	URL Secret
	// URLFile is an absolute path of a file holding the URL. It is read
	// when a notification is sent, so a rotated secret needs no reload,
	// and a missing file fails the notification, never the deploy.
	URLFile string
	On      []string // events, each once; DefaultNotifyOn when absent
}

// Wants reports whether the entry is sent event.
func (n Notify) Wants(event string) bool { return contains(n.On, event) }

// CheckNotifyURL checks a notification URL, from notify.url or read from
// notify.url_file: an absolute http or https URL with a host. The error
// never quotes the URL: it is a secret.
func CheckNotifyURL(raw string) error {
	if strings.TrimSpace(raw) == "" {
		return fmt.Errorf("must not be empty")
	}
	if strings.ContainsAny(raw, " \t\r\n\x00") {
		return fmt.Errorf("contains white space or a control character; it must be one http:// or https:// URL")
	}
	u, err := url.Parse(raw)
	if err != nil {
		return fmt.Errorf("is not a valid URL")
	}
	switch strings.ToLower(u.Scheme) {
	case "http", "https":
	case "":
		return fmt.Errorf("is not an http:// or https:// URL")
	default:
		if len(u.Scheme) > 16 {
			return fmt.Errorf("is not an http:// or https:// URL")
		}
		return fmt.Errorf("scheme %q is not supported: use an http:// or https:// URL", u.Scheme)
	}
	if u.Hostname() == "" {
		return fmt.Errorf("names no host")
	}
	return nil
}

// notify reads notify:, a list of {url | url_file, on}.
func (p *parser) notify(n *yaml.Node, s *State) {
	urls := map[string]string{}  // a URL → the entry that has it
	files := map[string]string{} // a url_file → the entry that has it
	p.list(n, "notify", func(i int, v *yaml.Node) {
		fp := fmt.Sprintf("notify[%d]", i)
		e := Notify{On: DefaultNotifyOn}
		var haveURL, haveFile bool
		nerr := len(p.errs)
		if !p.fields(v, fp, keysOf("notify"), func(key string, k, val *yaml.Node) {
			kp := fp + "." + key
			switch key {
			case "url":
				haveURL = true
				// No message below quotes the value: it is a secret.
				u, ok := p.str(val, kp)
				if !ok {
					return
				}
				if err := CheckNotifyURL(u); err != nil {
					p.fail(val, kp, "%v", err)
					return
				}
				if prev, dup := urls[u]; dup {
					p.fail(val, kp, "is the same URL as %s.url", prev)
					return
				}
				urls[u] = fp
				e.URL = Secret(u)
			case "url_file":
				haveFile = true
				path, ok := p.str(val, kp)
				if !ok {
					return
				}
				if strings.TrimSpace(path) == "" || strings.ContainsAny(path, "\x00\n\r") {
					p.fail(val, kp, "must be a file path")
					return
				}
				if !filepath.IsAbs(path) {
					path = filepath.Join(p.base, path)
				}
				path = filepath.Clean(path)
				if prev, dup := files[path]; dup {
					p.fail(val, kp, "%s is also %s.url_file", path, prev)
					return
				}
				files[path] = fp
				e.URLFile = path
			case "on":
				e.On = p.notifyOn(val, kp)
			}
		}) {
			return
		}
		switch {
		case haveURL && haveFile:
			p.fail(v, fp, "give url or url_file, not both")
		case !haveURL && !haveFile && len(p.errs) == nerr:
			p.fail(v, fp, "needs url (an http:// or https:// URL) or url_file (a file holding one)")
		}
		if len(p.errs) == nerr {
			s.Notify = append(s.Notify, e)
		}
	})
}

// notifyOn reads notify[i].on: events from NotifyEvents, each once,
// returned in the order of NotifyEvents.
func (p *parser) notifyOn(n *yaml.Node, path string) []string {
	vals, nodes := p.strList(n, path)
	if n.Kind == yaml.SequenceNode && len(n.Content) == 0 {
		p.fail(n, path, "names no event: list some of %s, or leave on out for %s", strings.Join(NotifyEvents, ", "), strings.Join(DefaultNotifyOn, ", "))
		return nil
	}
	seen := map[string]int{}
	for i, ev := range vals {
		field := fmt.Sprintf("%s[%d]", path, i)
		if !contains(NotifyEvents, ev) {
			msg := fmt.Sprintf("unknown event %q", ev)
			if s := suggest(ev, NotifyEvents); s != "" {
				msg += fmt.Sprintf(" (did you mean %q?)", s)
			} else {
				msg += "; events: " + strings.Join(NotifyEvents, ", ")
			}
			p.fail(nodes[i], field, "%s", msg)
			continue
		}
		if j, dup := seen[ev]; dup {
			p.fail(nodes[i], field, "%q is named twice (first at %s[%d])", ev, path, j)
			continue
		}
		seen[ev] = i
	}
	var out []string
	for _, ev := range NotifyEvents {
		if _, ok := seen[ev]; ok {
			out = append(out, ev)
		}
	}
	return out
}
