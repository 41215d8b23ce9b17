// Package fsx holds the few filesystem operations the reconciler's safety
// rests on: writing a file atomically, switching a symlink atomically, and
// walking, making and writing directories beneath a root without following
// any symlink in it (the release's tree comes from a repository).
package fsx
