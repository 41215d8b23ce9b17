// Package lazyre is a regular expression compiled when it is first used,
// not at init: a package-level regexp.MustCompile runs in every command of
// the binary, `reconciler version` included, whether the command matches
// anything or not (the desired package's patterns were a fifth of all the
// memory allocated by package inits). As cmd/go's internal/lazyregexp.
package lazyre
