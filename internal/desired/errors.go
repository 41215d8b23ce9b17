package desired

import (
	"errors"
	"fmt"
	"sort"
)

// FieldError is one problem in a desired file, with its position.
type FieldError struct {
	File   string
	Line   int
	Column int
	Field  string // path such as "build[1].timeout"; "" for the whole file
	Msg    string
	Err    error // the underlying error, when there is one
}

func (e *FieldError) Error() string {
	pos := fmt.Sprintf("%s:%d:%d", e.File, e.Line, e.Column)
	if e.Field == "" {
		return pos + ": " + e.Msg
	}
	return pos + ": " + e.Field + ": " + e.Msg
}

func (e *FieldError) Unwrap() error { return e.Err }

// Errors returns the field errors inside err: Parse joins them, in file
// order.
func Errors(err error) []*FieldError {
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		var out []*FieldError
		for _, e := range j.Unwrap() {
			out = append(out, Errors(e)...)
		}
		return out
	}
	var fe *FieldError
	if errors.As(err, &fe) {
		return []*FieldError{fe}
	}
	return nil
}

// MaxErrors is how many problems of one file are reported; past it one more
// error counts the rest, so a generated or corrupt file cannot flood the
// terminal or the daemon's log.
const MaxErrors = 50

// joinSorted joins errs in file order, at most MaxErrors of them and then
// the count of the rest.
func joinSorted(errs []*FieldError) error {
	if len(errs) == 0 {
		return nil
	}
	sort.SliceStable(errs, func(i, j int) bool {
		if errs[i].Line != errs[j].Line {
			return errs[i].Line < errs[j].Line
		}
		return errs[i].Column < errs[j].Column
	})
	n := len(errs)
	if n > MaxErrors {
		// The count sits where the first unreported problem is.
		rest := &FieldError{File: errs[MaxErrors].File, Line: errs[MaxErrors].Line, Column: errs[MaxErrors].Column,
			Msg: fmt.Sprintf("and %d more problems", n-MaxErrors)}
		errs = append(errs[:MaxErrors:MaxErrors], rest)
	}
	list := make([]error, len(errs))
	for i, e := range errs {
		list[i] = e
	}
	return errors.Join(list...)
}
