package desired

import (
	"encoding/json"
	"fmt"
	"reflect"
	"strings"
	"testing"
)

const notifyHead = "app: a\nroot: /r\nsource: {repo: /repo, commit: main}\n"

func TestParseNotify(t *testing.T) {
	src := notifyHead + `notify:
  - url: https://hooks.slack.com/services/T000/B000/s3cr3t
    on: [success, failure]
  - url_file: secrets/hook-url
  - url: http://127.0.0.1:9/hook
    on: [revert, blocked, failure, success]
`
	s, err := Parse(strings.NewReader(src), "/srv/cfg/d.yaml")
	if err != nil {
		t.Fatal(err)
	}
	want := []Notify{
		// on comes back in the documented order, whatever the file's.
		{URL: "https://hooks.slack.com/services/T000/B000/s3cr3t", On: []string{"failure", "success"}},
		// A relative url_file is relative to the desired file's folder.
		{URLFile: "/srv/cfg/secrets/hook-url", On: []string{"failure", "blocked", "revert"}},
		{URL: "http://127.0.0.1:9/hook", On: []string{"failure", "blocked", "revert", "success"}},
	}
	if !reflect.DeepEqual(s.Notify, want) {
		t.Errorf("notify:\n got %#v\nwant %#v", s.Notify, want)
	}
	if s.Notify[1].Wants(NotifySuccess) || !s.Notify[1].Wants(NotifyBlocked) {
		t.Errorf("the default on is all but success, got %v", s.Notify[1].On)
	}
	// Who hears of a release does not change what is built.
	without, err := Parse(strings.NewReader(notifyHead), "/srv/cfg/d.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if without.Fingerprint() != s.Fingerprint() {
		t.Error("notify: changes the release fingerprint")
	}
	// An empty notify: is no notify.
	empty, err := Parse(strings.NewReader(notifyHead+"notify:\n"), "d.yaml")
	if err != nil || empty.Notify != nil {
		t.Errorf("notify: with no value: %v, %v", empty, err)
	}
}

func TestParseNotifyErrors(t *testing.T) {
	const secret = "s3cr3t"
	tests := []struct {
		name, in string
		want     []string
	}{
		{"not a list", "notify: https://example.com/" + secret + "\n", []string{"d.yaml:4:9: notify: must be a list, got a string"}},
		{"entry not a mapping", "notify: [https://example.com/" + secret + "]\n", []string{"d.yaml:4:10: notify[0]: must be a mapping, got a string"}},
		{"neither", "notify: [{on: [failure]}]\n", []string{"d.yaml:4:10: notify[0]: needs url (an http:// or https:// URL) or url_file (a file holding one)"}},
		{"both", "notify: [{url: \"https://example.com/" + secret + "\", url_file: /etc/hook}]\n", []string{"d.yaml:4:10: notify[0]: give url or url_file, not both"}},
		{"unknown key", "notify: [{url: \"https://example.com/" + secret + "\", events: [failure]}]\n", []string{
			`d.yaml:4:46: notify[0].events: unknown key "events"; known keys: url, url_file, on`}},
		{"typo", "notify: [{urlfile: /etc/hook}]\n", []string{`d.yaml:4:11: notify[0].urlfile: unknown key "urlfile" (did you mean "url_file"?)`}},
		{"duplicate key", "notify:\n  - url: \"https://example.com/" + secret + "\"\n    url: \"https://example.com/x\"\n", []string{
			"d.yaml:6:5: notify[0].url: duplicate key (first at line 5)"}},
		{"no scheme", "notify: [{url: \"hooks.slack.com/services/" + secret + "\"}]\n", []string{"d.yaml:4:16: notify[0].url: is not an http:// or https:// URL"}},
		{"ftp", "notify: [{url: \"ftp://example.com/" + secret + "\"}]\n", []string{`d.yaml:4:16: notify[0].url: scheme "ftp" is not supported: use an http:// or https:// URL`}},
		{"no host", "notify: [{url: \"https:///" + secret + "\"}]\n", []string{"d.yaml:4:16: notify[0].url: names no host"}},
		{"space", "notify: [{url: \"https://example.com/a " + secret + "\"}]\n", []string{
			"d.yaml:4:16: notify[0].url: contains white space or a control character; it must be one http:// or https:// URL"}},
		{"bad escape", "notify: [{url: \"https://example.com/%zz" + secret + "\"}]\n", []string{"d.yaml:4:16: notify[0].url: is not a valid URL"}},
		{"empty url", "notify: [{url: \"\"}]\n", []string{"d.yaml:4:16: notify[0].url: must not be empty"}},
		{"url list", "notify: [{url: [a]}]\n", []string{"d.yaml:4:16: notify[0].url: must be a string, got a list"}},
		{"same url twice", "notify:\n  - url: \"https://example.com/" + secret + "\"\n  - url: \"https://example.com/" + secret + "\"\n", []string{
			"d.yaml:6:10: notify[1].url: is the same URL as notify[0].url"}},
		{"same file twice", "notify:\n  - url_file: hook\n  - url_file: ./hook\n", []string{
			"d.yaml:6:15: notify[1].url_file: hook is also notify[0].url_file"}},
		{"empty file", "notify: [{url_file: \" \"}]\n", []string{"d.yaml:4:21: notify[0].url_file: must be a file path"}},
		{"on empty", "notify: [{url_file: /h, on: []}]\n", []string{
			"d.yaml:4:29: notify[0].on: names no event: list some of failure, blocked, revert, success, or leave on out for failure, blocked, revert"}},
		{"on string", "notify: [{url_file: /h, on: failure}]\n", []string{"d.yaml:4:29: notify[0].on: must be a list, got a string"}},
		{"on unknown", "notify: [{url_file: /h, on: [sucess, deploy]}]\n", []string{
			`d.yaml:4:30: notify[0].on[0]: unknown event "sucess" (did you mean "success"?)`,
			`d.yaml:4:38: notify[0].on[1]: unknown event "deploy"; events: failure, blocked, revert, success`}},
		{"on twice", "notify: [{url_file: /h, on: [revert, revert]}]\n", []string{
			`d.yaml:4:38: notify[0].on[1]: "revert" is named twice (first at notify[0].on[0])`}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Parse(strings.NewReader(notifyHead+tt.in), "d.yaml")
			var got []string
			for _, fe := range Errors(err) {
				got = append(got, fe.Error())
			}
			if !reflect.DeepEqual(got, tt.want) {
				t.Errorf("got\n  %s\nwant\n  %s", strings.Join(got, "\n  "), strings.Join(tt.want, "\n  "))
			}
			if err != nil && strings.Contains(err.Error(), secret) {
				t.Errorf("the error shows the URL: %v", err)
			}
		})
	}
}

func TestSecretIsNeverShown(t *testing.T) {
	n := Notify{URL: "https://hooks.slack.com/services/T/B/s3cr3t"}
	b, err := json.Marshal(n)
	if err != nil {
		t.Fatal(err)
	}
	out := []string{string(b)}
	for _, verb := range []string{"%v", "%+v", "%#v", "%s", "%q", "%x", "%d"} {
		out = append(out, fmt.Sprintf(verb, n), fmt.Sprintf(verb, n.URL))
	}
	for _, o := range out {
		if strings.Contains(o, "s3cr3t") || strings.Contains(o, "hooks.slack") {
			t.Errorf("shown: %s", o)
		}
	}
	if n.URL.Reveal() != "https://hooks.slack.com/services/T/B/s3cr3t" {
		t.Errorf("Reveal: %s", n.URL.Reveal())
	}
}
