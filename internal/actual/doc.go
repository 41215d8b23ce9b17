// Package actual observes a host: the releases on disk and their records,
// where the link points, what the git cache holds. It only reads: Observe
// creates, changes and deletes nothing, so plan and status are safe to run
// at any time.
package actual
