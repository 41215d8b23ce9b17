// Package plan computes what must change on a host to reach the desired
// state. Make is a pure function of (desired, actual, options): no I/O, no
// clock, no randomness; the same inputs give the same plan, steps in the
// same order. A Plan is plain data; it renders for people like terraform
// plan, and as JSON.
package plan
