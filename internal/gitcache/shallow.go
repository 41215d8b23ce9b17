package gitcache

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/go-git/go-git/v5"
	"github.com/go-git/go-git/v5/config"
	"github.com/go-git/go-git/v5/plumbing"
	"github.com/go-git/go-git/v5/plumbing/format/packfile"
	"github.com/go-git/go-git/v5/plumbing/protocol/packp"
	"github.com/go-git/go-git/v5/plumbing/protocol/packp/capability"
	"github.com/go-git/go-git/v5/plumbing/protocol/packp/sideband"
	"github.com/go-git/go-git/v5/plumbing/transport"
	"github.com/go-git/go-git/v5/plumbing/transport/client"
	"github.com/go-git/go-git/v5/storage/filesystem"
	"go.uber.org/zap"

	"github.com/reconciler-dev/reconciler/internal/desired"
	"github.com/reconciler-dev/reconciler/internal/layout"
)

// A deploy needs one tree: the target's. A shallow fetch of it (depth 1,
// what git-sync does by default) costs what `git fetch --depth 1` costs,
// where the history of a real repository is most of its pack: on wagtail
// the full fetch took 36 s and 500 MB, the depth-1 fetch 1.9 s and 85 MB.
//
// Nothing in the reconciler reads history: the plan names the target and
// the commit it moved from (two SHAs, no commit list, no ancestry check),
// the signature of a commit covers that commit alone, and an export reads
// one tree. The one thing that needs history is a commit pinned by a SHA
// that no branch or tag points at, on a server that refuses to send a
// commit by its SHA: only then is the cache deepened, to every branch and
// tag with their whole history.

// pinnedRefs is where commits fetched by their SHA are kept, so that the
// next fetch offers them as haves (and gets a delta, not a whole tree).
const pinnedRefs = "refs/reconciler/"

// unshallowDepth is git's "infinite" depth (fetch --unshallow sends it):
// with it the server sends the history behind the shallow boundary. A
// plain fetch (depth 0) into a shallow repository would not: go-git then
// sends no shallow lines, and the server takes the haves for complete.
const unshallowDepth = 1<<31 - 1

// fetchTarget brings ref (a branch, a tag or a SHA, full or short) and
// the commits extra into r at depth 1 (or, for an upgrade, down to the
// commit the cache has), and checks that each can be read.
//
// The common case takes one connection to the remote (over ssh, one
// handshake): the refs it advertises decide what to ask, in the same
// session. A commit asked for by its SHA, and history, go through
// go-git's fetch.
func (c *Cache) fetchTarget(ctx context.Context, r *git.Repository, auth transport.AuthMethod, ref string, extra []string) (err error) {
	op := "fetch " + ref + " from " + c.url()
	sess, ar, err := c.session(ctx, auth)
	if err != nil {
		return err
	}
	open := true
	closeSess := func() error {
		if !open {
			return nil
		}
		open = false
		if err := sess.Close(); err != nil {
			return translate(op, err)
		}
		return nil
	}
	defer func() {
		if cerr := closeSess(); err == nil {
			err = cerr
		}
	}()
	byName, err := advertised(ar)
	if err != nil {
		return translate(op, err)
	}
	f := &targetFetch{byName: byName}
	// A name as Resolve and LsRemote read it: a tag before a branch. Both
	// are fetched when both exist, so that Resolve finds what it did in
	// the mirror.
	for _, name := range []plumbing.ReferenceName{plumbing.NewTagReferenceName(ref), plumbing.NewBranchReferenceName(ref)} {
		h, ok := byName[name.String()]
		if !ok {
			continue
		}
		f.named = true
		f.specs = append(f.specs, config.RefSpec("+"+name.String()+":"+name.String()))
		if peeled, ok := byName[name.String()+"^{}"]; ok {
			h = peeled
		}
		f.need = append(f.need, h.String())
	}
	switch {
	case !f.named && !desired.IsHash(ref):
		return translate(op, fmt.Errorf("%w: %q", ErrUnknownRef, ref))
	case !f.named:
		extra = append([]string{ref}, extra...)
	}
	for _, sha := range extra {
		if hasCommitPrefix(r, sha) {
			continue
		}
		f.addCommit(sha)
	}
	if len(f.specs) > 0 && !f.deepen && len(f.bySHA) == 0 {
		// Every commit wanted is advertised: ask in this session.
		var depth packp.Depth = packp.DepthCommits(1)
		since, bySince := f.since(r)
		bySince = bySince && ar.Capabilities.Supports(capability.DeepenSince)
		if bySince {
			depth = packp.DepthSince(since)
		}
		err := c.uploadPack(ctx, sess, ar, r, f.wantByName(), depth)
		if cerr := closeSess(); err == nil {
			err = cerr
		}
		switch {
		case err == nil:
			return c.checkNeed(r, op, f)
		case transient(err) || !bySince:
			return err
		}
		// A target older than the commit the cache has (a branch reset
		// to an older commit): the history since selects nothing, and
		// the server says so with an empty pack or by hanging up
		// ("no commits selected for shallow requests"), whichever comes
		// first.
		c.log().Debug("incremental fetch by time did not bring the target; fetching it at depth 1", zap.Time("since", since), zap.Error(err))
	}
	if err := closeSess(); err != nil {
		return err
	}
	if len(f.specs) > 0 && !f.deepen {
		err := c.fetchSpecs(ctx, r, auth, f.specs, 1, false)
		if errors.Is(err, git.ErrExactSHA1NotSupported) || err != nil && len(f.bySHA) > 0 && !transient(err) {
			// The server sends no commit by its SHA (uploadpack.
			// allowReachableSHA1InWant unset), or not this one: only
			// history can have it.
			f.deepen = true
		} else if err != nil {
			return err
		}
	}
	if !f.deepen {
		return c.checkNeed(r, op, f)
	}
	// Deepen: every branch and tag, with their history.
	depth := 0
	if shallow, err := r.Storer.Shallow(); err != nil {
		return readErr(op, err)
	} else if len(shallow) > 0 {
		depth = unshallowDepth
	}
	if err := c.fetchSpecs(ctx, r, auth, refSpecs, depth, true); err != nil {
		return err
	}
	// A commit still missing is on no branch or tag of the remote: the
	// plan made after the fetch says so.
	return c.dropPinned(r, nil)
}

// session opens an upload-pack session with the remote and reads the
// refs it advertises. The caller closes it.
func (c *Cache) session(ctx context.Context, auth transport.AuthMethod) (transport.UploadPackSession, *packp.AdvRefs, error) {
	op := "fetch " + c.url()
	ep, err := transport.NewEndpoint(c.URL)
	if err != nil {
		return nil, nil, &Error{Op: "parse " + c.url(), Err: err}
	}
	cl, err := client.NewClient(ep)
	if err != nil {
		return nil, nil, translate(op, err)
	}
	sess, err := cl.NewUploadPackSession(ep, auth)
	if err != nil {
		return nil, nil, translate(op, explainAuth(err, auth))
	}
	ar, err := sess.AdvertisedReferencesContext(ctx)
	if err != nil {
		sess.Close()
		return nil, nil, translate(op, explainAuth(err, auth))
	}
	return sess, ar, nil
}

// advertised maps the advertised refs' names to their hashes, and
// name^{} to the commit an annotated tag points at, as ls-remote shows.
func advertised(ar *packp.AdvRefs) (map[string]plumbing.Hash, error) {
	refs, err := ar.AllReferences()
	if err != nil {
		return nil, err
	}
	byName := make(map[string]plumbing.Hash, len(refs)+len(ar.Peeled))
	for name, ref := range refs {
		if ref.Type() == plumbing.HashReference {
			byName[name.String()] = ref.Hash()
		}
	}
	for name, h := range ar.Peeled {
		byName[name+"^{}"] = h
	}
	return byName, nil
}

// checkNeed checks that the commits f needs can be read, then drops the
// refs of commits pinned before and names what the cache holds.
func (c *Cache) checkNeed(r *git.Repository, op string, f *targetFetch) error {
	for _, sha := range f.need {
		if !hasCommitPrefix(r, sha) {
			// The fetch said it succeeded but left the commit out: a
			// server that took a have for the history behind it
			// (go-git#1443). Only a fresh cache mends that.
			return &Error{Op: op, Err: fmt.Errorf("%w: the fetch did not bring %s", ErrDamaged, layout.Short(sha))}
		}
	}
	if err := c.dropPinned(r, f.bySHA); err != nil {
		return err
	}
	return mirrorNames(r, f.byName)
}

// mirrorNames makes the cache's branches and tags those of the remote
// (byName, as advertised) whose objects it holds, as a mirror's would be
// but for the names of commits it never fetched. Resolve then finds a
// release's tag or branch without the network: a rollback to `commit:
// v1`, first deployed through main at the same commit, needs no fetch
// (invariant 9), as with the mirror. A branch or tag gone from the
// remote goes from the cache, as the mirror's prune did.
func mirrorNames(r *git.Repository, byName map[string]plumbing.Hash) error {
	refs, err := r.References()
	if err != nil {
		return readErr("list cache refs", err)
	}
	local := map[plumbing.ReferenceName]plumbing.Hash{}
	err = refs.ForEach(func(ref *plumbing.Reference) error {
		if ref.Type() == plumbing.HashReference && (ref.Name().IsBranch() || ref.Name().IsTag()) {
			local[ref.Name()] = ref.Hash()
		}
		return nil
	})
	refs.Close()
	if err != nil {
		return readErr("list cache refs", err)
	}
	for name := range local {
		if _, ok := byName[name.String()]; !ok {
			if err := r.Storer.RemoveReference(name); err != nil {
				return &Error{Op: "remove cache ref " + name.String(), Err: err}
			}
		}
	}
	for n, h := range byName {
		name := plumbing.ReferenceName(n)
		if !name.IsBranch() && !name.IsTag() || strings.HasSuffix(n, "^{}") || local[name] == h {
			continue
		}
		if !holdsCommit(r, h) {
			// An annotated tag of a commit the cache holds, fetched
			// under another name: the tag object never came. The name
			// leads to the commit, which is what Resolve answers.
			peeled, ok := byName[n+"^{}"]
			if !ok || local[name] == peeled || !holdsCommit(r, peeled) {
				continue
			}
			h = peeled
		}
		if err := r.Storer.SetReference(plumbing.NewHashReference(name, h)); err != nil {
			return &Error{Op: "set cache ref " + n, Err: err}
		}
	}
	return nil
}

// holdsCommit reports whether h is a commit the cache can read, or an
// annotated tag of one.
func holdsCommit(r *git.Repository, h plumbing.Hash) bool {
	if _, err := r.CommitObject(h); err == nil {
		return true
	}
	tag, err := r.TagObject(h)
	if err != nil {
		return false
	}
	_, err = tag.Commit()
	return err == nil
}

// wantByName is what f fetches by name: the ref → the remote's commit
// (or tag object).
func (f *targetFetch) wantByName() map[plumbing.ReferenceName]plumbing.Hash {
	want := map[plumbing.ReferenceName]plumbing.Hash{}
	for _, s := range f.specs {
		name := plumbing.ReferenceName(s.Src())
		want[name] = f.byName[name.String()]
	}
	return want
}

// since is the time an upgrade's fetch walks down to: that of the
// commit the cache has under the name f fetches (the oldest, for a tag
// and a branch of that name), or, for a name new to the cache (the next
// release's tag), that of its newest commit: the last target, most
// likely the new one's ancestor. There is none in an empty cache.
func (f *targetFetch) since(r *git.Repository) (time.Time, bool) {
	var same, newest time.Time
	names := map[plumbing.ReferenceName]bool{}
	for _, s := range f.specs {
		names[plumbing.ReferenceName(s.Src())] = true
	}
	refs, err := r.References()
	if err != nil {
		return time.Time{}, false
	}
	defer refs.Close()
	refs.ForEach(func(ref *plumbing.Reference) error {
		if ref.Type() != plumbing.HashReference {
			return nil
		}
		commit, err := r.CommitObject(ref.Hash())
		if err != nil {
			tag, terr := r.TagObject(ref.Hash())
			if terr != nil {
				return nil
			}
			if commit, err = tag.Commit(); err != nil {
				return nil
			}
		}
		t := commit.Committer.When
		if names[ref.Name()] && (same.IsZero() || t.Before(same)) {
			same = t
		}
		if t.After(newest) {
			newest = t
		}
		return nil
	})
	if !same.IsZero() {
		return same, true
	}
	return newest, !newest.IsZero()
}

// targetFetch is what one fetchTarget asks for.
type targetFetch struct {
	byName map[string]plumbing.Hash // the remote's refs
	named  bool                     // ref is a branch or tag of the remote
	specs  []config.RefSpec
	need   []string        // commits (full or short SHAs) that must be readable after
	bySHA  map[string]bool // full SHAs asked for by their SHA
	deepen bool
}

// addCommit asks for the commit sha: by the branch or tag that points at
// it when there is one (any server sends those), by its SHA otherwise;
// a short SHA no ref points at can only be found in history.
func (f *targetFetch) addCommit(sha string) {
	sha = strings.ToLower(sha)
	f.need = append(f.need, sha)
	var match []string
	for name, h := range f.byName {
		if strings.HasPrefix(h.String(), sha) && (strings.HasPrefix(name, "refs/heads/") || strings.HasPrefix(name, "refs/tags/")) {
			match = append(match, strings.TrimSuffix(name, "^{}"))
		}
	}
	if len(match) > 0 {
		name := match[0]
		for _, m := range match[1:] {
			name = min(name, m) // one, the same every time
		}
		f.specs = append(f.specs, config.RefSpec("+"+name+":"+name))
		return
	}
	if len(sha) != 40 {
		f.deepen = true
		return
	}
	if f.bySHA == nil {
		f.bySHA = map[string]bool{}
	}
	f.bySHA[sha] = true
	f.specs = append(f.specs, config.RefSpec("+"+sha+":"+pinnedRefs+sha))
}

// fetchSpecs fetches specs into r at depth (0: all history).
func (c *Cache) fetchSpecs(ctx context.Context, r *git.Repository, auth transport.AuthMethod, specs []config.RefSpec, depth int, prune bool) error {
	err := r.FetchContext(ctx, &git.FetchOptions{
		RemoteName: "origin",
		RefSpecs:   specs,
		Depth:      depth,
		Auth:       auth,
		Tags:       git.NoTags, // the refspecs name every tag wanted
		Force:      true,
		Prune:      prune,
	})
	switch {
	case err == nil, errors.Is(err, git.NoErrAlreadyUpToDate):
		return nil
	case errors.Is(err, git.ErrExactSHA1NotSupported):
		return err
	}
	return translate("fetch "+c.url(), explainAuth(err, auth))
}

// transient reports whether err may pass on a later try (the network).
func transient(err error) bool {
	var ge *Error
	return errors.As(err, &ge) && (ge.Transient || ge.Remote)
}

// dropPinned removes the refs of commits fetched by SHA before, but
// those in keep: the cache keeps what the last fetch asked for, not
// every commit ever pinned.
func (c *Cache) dropPinned(r *git.Repository, keep map[string]bool) error {
	refs, err := r.References()
	if err != nil {
		return readErr("list cache refs", err)
	}
	var drop []plumbing.ReferenceName
	err = refs.ForEach(func(ref *plumbing.Reference) error {
		name := ref.Name().String()
		if strings.HasPrefix(name, pinnedRefs) && !keep[strings.TrimPrefix(name, pinnedRefs)] {
			drop = append(drop, ref.Name())
		}
		return nil
	})
	refs.Close()
	if err != nil {
		return readErr("list cache refs", err)
	}
	for _, name := range drop {
		if err := r.Storer.RemoveReference(name); err != nil {
			return &Error{Op: "remove cache ref " + name.String(), Err: err}
		}
	}
	return nil
}

// hasCommitPrefix reports whether r holds a readable commit whose SHA is
// sha or starts with it.
func hasCommitPrefix(r *git.Repository, sha string) bool {
	if len(sha) == 40 {
		_, err := r.CommitObject(plumbing.NewHash(sha))
		return err == nil
	}
	h, err := r.ResolveRevision(plumbing.Revision(sha))
	if err != nil || !strings.HasPrefix(h.String(), strings.ToLower(sha)) {
		return false
	}
	_, err = r.CommitObject(*h)
	return err == nil
}

// errNotSince is uploadPack's answer for a target the history since does
// not hold: the caller fetches it at depth 1.
var errNotSince = errors.New("the fetch by time did not bring the target")

// uploadPack asks sess for the commits want (a ref name of the cache →
// the commit, or tag object, the remote has there) at depth, with the
// shallow commits of r, stores the pack and sets the refs.
//
// An upgrade asks for the history since the commit the cache has (git
// fetch --shallow-since), not for depth 1. At depth 1 the server cuts the
// new target from its parents, so it never walks down to the commit the
// cache has and sends the target's whole tree again: git avoids that
// with a thin pack, which go-git cannot store (it filters the thin-pack
// capability out). Asked for the history since, the server walks down to
// the commit the cache has, finds it among the haves, and sends only what
// changed: what `git fetch` sends. go-git's FetchOptions has no
// deepen-since, so the request is made here with its plumbing. A target
// older than since selects no commits: errNotSince, and the caller
// fetches at depth 1.
func (c *Cache) uploadPack(ctx context.Context, sess transport.UploadPackSession, ar *packp.AdvRefs, r *git.Repository, want map[plumbing.ReferenceName]plumbing.Hash, depth packp.Depth) error {
	op := "fetch " + c.url()
	if !ar.Capabilities.Supports(capability.Shallow) {
		return &Error{Op: op, Err: errors.New("the server does not support shallow fetches")}
	}
	req := packp.NewUploadPackRequestFromCapabilities(ar.Capabilities)
	caps := []capability.Capability{capability.Shallow}
	if _, ok := depth.(packp.DepthSince); ok {
		caps = append(caps, capability.DeepenSince)
	}
	if ar.Capabilities.Supports(capability.NoProgress) {
		caps = append(caps, capability.NoProgress)
	}
	for _, cp := range caps {
		if err := req.Capabilities.Set(cp); err != nil {
			return &Error{Op: op, Err: err}
		}
	}
	req.Depth = depth
	var err error
	if req.Shallows, err = r.Storer.Shallow(); err != nil {
		return readErr(op, err)
	}
	for _, h := range want {
		if !hasObject(r, h) {
			req.Wants = append(req.Wants, h)
		}
	}
	if len(req.Wants) > 0 {
		if req.Haves, err = localTips(r); err != nil {
			return err
		}
		resp, err := sess.UploadPack(ctx, req)
		switch {
		case errors.Is(err, transport.ErrEmptyUploadPackRequest):
		case err != nil:
			return translate(op, err)
		default:
			err := c.storePack(r, req, resp)
			if cerr := resp.Close(); err == nil && cerr != nil {
				err = translate(op, cerr)
			}
			if err != nil {
				return err
			}
		}
	}
	for _, h := range req.Wants {
		if !hasObject(r, h) {
			if since, ok := depth.(packp.DepthSince); ok {
				// The server selected no commits, and said nothing.
				return fmt.Errorf("%w: %s is older than %s", errNotSince, layout.Short(h.String()), time.Time(since).UTC().Format(time.RFC3339))
			}
			return &Error{Op: op, Err: fmt.Errorf("%w: the fetch did not bring %s", ErrDamaged, layout.Short(h.String()))}
		}
	}
	for name, h := range want {
		if err := r.Storer.SetReference(plumbing.NewHashReference(name, h)); err != nil {
			return &Error{Op: "set cache ref " + name.String(), Err: err}
		}
	}
	return nil
}

// storePack records the server's new shallow commits and stores its pack.
func (c *Cache) storePack(r *git.Repository, req *packp.UploadPackRequest, resp *packp.UploadPackResponse) error {
	op := "fetch " + c.url()
	if len(resp.Shallows) > 0 {
		shallow, err := r.Storer.Shallow()
		if err != nil {
			return readErr(op, err)
		}
		seen := make(map[plumbing.Hash]bool, len(shallow))
		for _, h := range shallow {
			seen[h] = true
		}
		for _, h := range resp.Shallows {
			if !seen[h] {
				shallow = append(shallow, h)
				seen[h] = true
			}
		}
		if err := r.Storer.SetShallow(shallow); err != nil {
			return &Error{Op: op, Err: err}
		}
	}
	var pack io.Reader = resp
	switch {
	case req.Capabilities.Supports(capability.Sideband64k):
		pack = sideband.NewDemuxer(sideband.Sideband64k, resp)
	case req.Capabilities.Supports(capability.Sideband):
		pack = sideband.NewDemuxer(sideband.Sideband, resp)
	}
	st, ok := r.Storer.(*filesystem.Storage)
	if !ok {
		if err := packfile.UpdateObjectStorage(r.Storer, pack); err != nil && !errors.Is(err, packfile.ErrEmptyPackfile) {
			return translate(op, err)
		}
		return nil
	}
	if err := indexPack(st.Filesystem().Root(), pack); err != nil {
		return translate(op, err)
	}
	// go-git lists the packs once: it must see the new one.
	st.Reindex()
	return nil
}

// hasObject reports whether r holds the object h.
func hasObject(r *git.Repository, h plumbing.Hash) bool {
	_, err := r.Storer.EncodedObject(plumbing.AnyObject, h)
	return err == nil
}

// localTips are the commits (or tags) the cache's refs point at and holds:
// the haves of a fetch. Their history is not offered: the server knows
// from the shallow lines where it stops.
func localTips(r *git.Repository) ([]plumbing.Hash, error) {
	refs, err := r.References()
	if err != nil {
		return nil, readErr("list cache refs", err)
	}
	defer refs.Close()
	seen := map[plumbing.Hash]bool{}
	var haves []plumbing.Hash
	err = refs.ForEach(func(ref *plumbing.Reference) error {
		if ref.Type() == plumbing.HashReference && !seen[ref.Hash()] && hasObject(r, ref.Hash()) {
			seen[ref.Hash()] = true
			haves = append(haves, ref.Hash())
		}
		return nil
	})
	if err != nil {
		return nil, readErr("list cache refs", err)
	}
	return haves, nil
}
