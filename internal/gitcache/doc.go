// Package gitcache keeps the host's bare git cache of the application's
// repository and exports commits from it into release directories.
//
// go-git is used only here: the rest of the reconciler sees a small API of
// Resolve (read-only, in the cache), LsRemote (read-only, asks the remote),
// Fetch and Export. go-git's errors are translated here, once.
package gitcache
