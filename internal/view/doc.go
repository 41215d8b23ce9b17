// Package view renders what the reconciler does for people and for
// machines: plans, the events of an apply, and the history. Each has a
// human and a JSON form; the executor and the planner never print.
package view
