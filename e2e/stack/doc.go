// Package stack runs the reference Django stack on 127.0.0.1 for the e2e
// tests and the benchmark: a real git repository of the broken_brackets
// project, its own supervisord running gunicorn, its own nginx in front,
// all configured from the files in examples/django, plus a load generator
// that counts failed and stale responses across switches.
//
// It is a plain package, not a _test file, so that `go run ./bench` can use
// the same stack as `go test -tags e2e ./e2e/`. Failures go to a T, which
// *testing.T satisfies; the bench passes its own.
package stack
