package desired

import (
	"fmt"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/reconciler-dev/reconciler/internal/lazyre"
)

func (p *parser) checks(n *yaml.Node, path string) []Check {
	var out []Check
	p.list(n, path, func(i int, v *yaml.Node) {
		fp := fmt.Sprintf("%s[%d]", path, i)
		c := Check{Timeout: DefaultCheckTimeout, Interval: DefaultCheckInterval, Failures: DefaultCheckFailures}
		nerr := len(p.errs)
		var kinds []string
		if !p.fields(v, fp, keysOf("check"), func(key string, k, val *yaml.Node) {
			kp := fp + "." + key
			switch key {
			case "http", "tcp", "command":
				kinds = append(kinds, key)
				t, ok := p.str(val, kp)
				if !ok {
					return
				}
				c.Kind, c.Target = key, t
				switch {
				case strings.TrimSpace(t) == "":
					p.fail(val, kp, "must not be empty")
				case key == "http" && !strings.HasPrefix(t, "http://") && !strings.HasPrefix(t, "https://"):
					p.fail(val, kp, "%q is not an http:// or https:// URL", t)
				case key == "tcp" && !hostPortRE.MatchString(t):
					p.fail(val, kp, "%q is not host:port", t)
				}
			case "expect":
				if code, ok := p.int(val, kp, 100, 599); ok {
					c.Expect = code
				}
			case "body":
				if b, ok := p.str(val, kp); ok {
					c.Body = b
				}
			case "timeout":
				if d, ok := p.duration(val, kp, 100*time.Millisecond, time.Hour); ok {
					c.Timeout = d
				}
			case "failures":
				if n, ok := p.int(val, kp, 1, 1000); ok {
					c.Failures = n
				}
			case "interval":
				if d, ok := p.duration(val, kp, 10*time.Millisecond, time.Hour); ok {
					c.Interval = d
				}
			}
		}) {
			return
		}
		switch {
		case len(kinds) == 0:
			p.fail(v, fp, "needs one of http, tcp or command")
		case len(kinds) > 1:
			p.fail(v, fp, "has %s: a check is one of http, tcp or command", strings.Join(kinds, " and "))
		case c.Kind != CheckHTTP && (c.Expect != 0 || c.Body != ""):
			p.fail(v, fp, "expect and body are for http checks")
		}
		if len(p.errs) == nerr {
			out = append(out, c)
		}
	})
	return out
}

var hostPortRE = lazyre.New(`^(\[[0-9a-fA-F:.]+\]|[A-Za-z0-9.-]+):[0-9]{1,5}$`)
