// Package fsx holds the few filesystem operations the reconciler's safety
// rests on: writing a file atomically and switching a symlink atomically.
package fsx
