package services

import (
	"bytes"
	"context"
	"encoding/xml"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// The XML-RPC client supervisord needs is a few dozen lines: the surface is
// five methods whose parameters are strings and booleans, and whose answers
// are structs, arrays, strings, integers and booleans. A hand-written one
// keeps a dependency (and its package inits) out of the binary.

// Fault is an XML-RPC fault: supervisord's way of saying a call failed
// (BAD_NAME, NOT_RUNNING, SPAWN_ERROR...).
type Fault struct {
	Code   int
	String string
}

func (f *Fault) Error() string { return fmt.Sprintf("%s (fault %d)", f.String, f.Code) }

// supervisord's fault codes (supervisor/xmlrpc.py), those we act on.
const (
	faultNotRunning = 70
	faultSuccess    = 80
)

// rpcClient calls methods of one XML-RPC server.
type rpcClient struct {
	url    string // http://host:port/RPC2, or http://localhost/RPC2 over socket
	client *http.Client
	user   string
	pass   string
}

// newRPCClient reaches an XML-RPC server over a unix socket (socket != "")
// or TCP at base ("http://host:port").
func newRPCClient(socket, base, user, pass string) *rpcClient {
	tr := &http.Transport{Proxy: nil, DisableKeepAlives: true}
	if socket != "" {
		base = "http://localhost"
		tr.DialContext = func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", socket)
		}
	}
	return &rpcClient{url: strings.TrimSuffix(base, "/") + "/RPC2", client: &http.Client{Transport: tr}, user: user, pass: pass}
}

// call calls method with params (string or bool) and returns its answer
// decoded: string, int, bool, float64, []any, map[string]any.
func (c *rpcClient) call(ctx context.Context, method string, params ...any) (any, error) {
	var b bytes.Buffer
	b.WriteString(`<?xml version="1.0"?><methodCall><methodName>`)
	xml.EscapeText(&b, []byte(method))
	b.WriteString(`</methodName><params>`)
	for _, p := range params {
		b.WriteString("<param><value>")
		switch v := p.(type) {
		case string:
			b.WriteString("<string>")
			xml.EscapeText(&b, []byte(v))
			b.WriteString("</string>")
		case bool:
			n := "0"
			if v {
				n = "1"
			}
			b.WriteString("<boolean>" + n + "</boolean>")
		default:
			return nil, fmt.Errorf("xml-rpc %s: parameter of type %T", method, p)
		}
		b.WriteString("</value></param>")
	}
	b.WriteString(`</params></methodCall>`)
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, c.url, &b)
	if err != nil {
		return nil, err
	}
	req.Header.Set("Content-Type", "text/xml")
	if c.user != "" {
		req.SetBasicAuth(c.user, c.pass)
	}
	resp, err := c.client.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 4<<20))
	if err != nil {
		return nil, err
	}
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("http status %d", resp.StatusCode)
	}
	return decodeResponse(body)
}

// xmlValue is an XML-RPC <value>: one of its typed children, or bare text
// (a string).
type xmlValue struct {
	String  *string    `xml:"string"`
	Int     *string    `xml:"int"`
	I4      *string    `xml:"i4"`
	Boolean *string    `xml:"boolean"`
	Double  *string    `xml:"double"`
	Struct  *xmlStruct `xml:"struct"`
	Array   *struct {
		Values []xmlValue `xml:"data>value"`
	} `xml:"array"`
	Text string `xml:",chardata"`
}

type xmlStruct struct {
	Members []struct {
		Name  string   `xml:"name"`
		Value xmlValue `xml:"value"`
	} `xml:"member"`
}

type xmlResponse struct {
	Params []xmlValue `xml:"params>param>value"`
	Fault  *xmlValue  `xml:"fault>value"`
}

func decodeResponse(body []byte) (any, error) {
	var r xmlResponse
	if err := xml.Unmarshal(body, &r); err != nil {
		return nil, fmt.Errorf("decode xml-rpc answer: %w", err)
	}
	if r.Fault != nil {
		v, err := r.Fault.decode()
		if err != nil {
			return nil, err
		}
		m, _ := v.(map[string]any)
		code, _ := m["faultCode"].(int)
		msg, _ := m["faultString"].(string)
		return nil, &Fault{Code: code, String: msg}
	}
	if len(r.Params) != 1 {
		return nil, fmt.Errorf("decode xml-rpc answer: %d values, want 1", len(r.Params))
	}
	return r.Params[0].decode()
}

func (v *xmlValue) decode() (any, error) {
	integer := func(s string) (any, error) {
		n, err := strconv.Atoi(strings.TrimSpace(s))
		if err != nil {
			return nil, fmt.Errorf("decode xml-rpc integer %q: %w", s, err)
		}
		return n, nil
	}
	switch {
	case v.String != nil:
		return *v.String, nil
	case v.Int != nil:
		return integer(*v.Int)
	case v.I4 != nil:
		return integer(*v.I4)
	case v.Boolean != nil:
		return strings.TrimSpace(*v.Boolean) == "1", nil
	case v.Double != nil:
		f, err := strconv.ParseFloat(strings.TrimSpace(*v.Double), 64)
		if err != nil {
			return nil, fmt.Errorf("decode xml-rpc double %q: %w", *v.Double, err)
		}
		return f, nil
	case v.Struct != nil:
		m := make(map[string]any, len(v.Struct.Members))
		for i := range v.Struct.Members {
			x, err := v.Struct.Members[i].Value.decode()
			if err != nil {
				return nil, err
			}
			m[v.Struct.Members[i].Name] = x
		}
		return m, nil
	case v.Array != nil:
		a := make([]any, 0, len(v.Array.Values))
		for i := range v.Array.Values {
			x, err := v.Array.Values[i].decode()
			if err != nil {
				return nil, err
			}
			a = append(a, x)
		}
		return a, nil
	}
	return v.Text, nil // <value>text</value> is a string
}

// errNoAnswer wraps a transport failure: supervisord does not answer.
var errNoAnswer = errors.New("supervisord does not answer")

// rpcTimeout bounds one call when the caller's context has no deadline: a
// wait=true start returns once the program is RUNNING (startsecs later).
const rpcTimeout = 2 * time.Minute
