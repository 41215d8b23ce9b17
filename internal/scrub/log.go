package scrub

import "go.uber.org/zap/zapcore"

// Core wraps a zap core so that no log line shows a password in a URL:
// the message and every string, byte-string, and error field are
// passed through URLs. Wire it once where the logger is built:
//
//	log = log.WithOptions(zap.WrapCore(scrub.Core))
func Core(c zapcore.Core) zapcore.Core { return &core{c} }

type core struct{ zapcore.Core }

func (c *core) With(fields []zapcore.Field) zapcore.Core {
	return &core{c.Core.With(clean(fields))}
}

func (c *core) Check(e zapcore.Entry, ce *zapcore.CheckedEntry) *zapcore.CheckedEntry {
	if c.Enabled(e.Level) {
		return ce.AddCore(e, c)
	}
	return ce
}

func (c *core) Write(e zapcore.Entry, fields []zapcore.Field) error {
	e.Message = URLs(e.Message)
	return c.Core.Write(e, clean(fields))
}

// clean returns fields with every text redacted; a copy, since the
// caller's slice may be reused.
func clean(fields []zapcore.Field) []zapcore.Field {
	out := make([]zapcore.Field, len(fields))
	for i, f := range fields {
		switch f.Type {
		case zapcore.StringType:
			f.String = URLs(f.String)
		case zapcore.ByteStringType:
			if b, ok := f.Interface.([]byte); ok {
				f.Interface = []byte(URLs(string(b)))
			}
		case zapcore.ErrorType:
			if err, ok := f.Interface.(error); ok && err != nil {
				f = zapcore.Field{Key: f.Key, Type: zapcore.StringType, String: URLs(err.Error())}
			}
		}
		out[i] = f
	}
	return out
}
