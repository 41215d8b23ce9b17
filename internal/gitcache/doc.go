// Package gitcache holds every use of go-git: the host's bare git cache of
// the application's repository, the exports of commits from it into
// release directories, and the daemon's config repository.
//
// The rest of the reconciler sees a small API: Resolve (read-only, in the
// cache), LsRemote (read-only, asks the remote), Fetch, Repair and Export
// for the cache; ConfigRepo for the config repository. go-git's errors
// are translated here, once (translate, readErr), into *Error with a
// kind: transient (retry later), needs a person, or ErrDamaged (clone
// afresh).
//
// With Cache.Ref set the cache is shallow: it holds the commits deploys
// asked for, fetched at depth 1, and an upgrade fetches what changed since
// the commit it has (shallow.go).
package gitcache
