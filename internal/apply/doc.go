// Package apply performs a plan on a host, one step at a time, recording
// progress durably so that an interrupted apply resumes where it stopped.
//
// Apply is the whole cycle under the root's lock: observe, plan, (fetch,
// observe, plan again), execute, record. Its errors carry a Kind that says
// whether a person must act or a later try may pass.
package apply
