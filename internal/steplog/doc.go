// Package steplog finds the full logs of release steps, kept at
// <root>/releases/<release>/.reconciler/logs/<step>.log, for `reconciler
// logs`: which release a name or commit prefix means, which step failed
// last, which logs a release has. Logs are opened without following any
// symlink, and release and step names are matched against what is on
// disk, never joined into a path as given.
package steplog
