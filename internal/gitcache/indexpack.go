package gitcache

import (
	"bufio"
	"bytes"
	"compress/zlib"
	"crypto/sha1"
	"errors"
	"fmt"
	"hash"
	"hash/crc32"
	"io"
	"os"
	"path/filepath"

	"github.com/go-git/go-git/v5/plumbing"
	"github.com/go-git/go-git/v5/plumbing/format/idxfile"
	"github.com/go-git/go-git/v5/plumbing/format/packfile"
)

// A shallow fetch stores the pack the server sends as it comes, with an
// index: what `git index-pack` does. go-git's PackWriter does it with
// its packfile.Parser, which inflates every object of the pack at least
// twice (once as it arrives, again in resolveDeltas, which reads every
// object back, deltas or not) and every delta a third time, and keeps the
// bases of deltas in a cache of up to 96 MiB while it works. On the
// history benchmark's depth-1 pack (2,900 objects, half of them deltas)
// that was 340 ms of CPU after the last byte came and 11 MB of live heap.
// indexPack inflates each object once as it arrives (hashing what is
// not a delta), then makes each delta from its base in the pack, as
// index-pack does: a base is inflated once for all its deltas, and only
// the chain being resolved is in memory.

// packObj is an object of the pack being indexed.
type packObj struct {
	off  int64
	typ  byte // as stored: a delta type until resolved, then the object's
	size int64
	base int64         // an OFS delta's base offset
	ref  plumbing.Hash // a REF delta's base
	hash plumbing.Hash // zero until known
	crc  uint32
	// delta: stored as a delta; done: its hash is known.
	delta, done bool
}

// indexPack reads a pack from in and stores it, with its index, among
// the packs of the repository at dir. An empty stream stores nothing.
func indexPack(dir string, in io.Reader) (err error) {
	packDir := filepath.Join(dir, "objects", "pack")
	tmp, err := os.CreateTemp(packDir, "tmp_pack_")
	if err != nil {
		return err
	}
	defer func() {
		tmp.Close()
		if err != nil {
			os.Remove(tmp.Name())
		}
	}()
	out := bufio.NewWriterSize(tmp, 64<<10)
	p := &packIn{src: in, buf: make([]byte, 64<<10), out: out, sum: sha1.New(), crc: crc32.NewIEEE()}
	objs, sum, err := p.read()
	if err != nil {
		return err
	}
	if len(objs) == 0 {
		return os.Remove(tmp.Name()) // nothing came, or an empty pack
	}
	if err := out.Flush(); err != nil {
		return err
	}
	if err := resolvePack(tmp.Name(), objs); err != nil {
		return err
	}
	var w idxfile.Writer
	if err := w.OnHeader(uint32(len(objs))); err != nil {
		return err
	}
	for _, o := range objs {
		w.Add(o.hash, uint64(o.off), o.crc)
	}
	if err := w.OnFooter(sum); err != nil {
		return err
	}
	idx, err := w.Index()
	if err != nil {
		return err
	}
	var ib bytes.Buffer
	if _, err := idxfile.NewEncoder(&ib).Encode(idx); err != nil {
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	// The index first: a reader finds a pack by its .pack file, then
	// wants its index.
	base := filepath.Join(packDir, "pack-"+sum.String())
	if err := writeReadOnly(base+".idx", ib.Bytes()); err != nil {
		return err
	}
	if _, err := os.Stat(base + ".pack"); err == nil {
		return os.Remove(tmp.Name()) // the same pack is there already
	}
	if err := os.Rename(tmp.Name(), base+".pack"); err != nil {
		return err
	}
	return os.Chmod(base+".pack", 0o444)
}

// writeReadOnly writes name through a temporary file and a rename, as
// git does, unless it exists: packs and their indexes are named by their
// content.
func writeReadOnly(name string, b []byte) error {
	if _, err := os.Stat(name); err == nil {
		return nil
	}
	f, err := os.CreateTemp(filepath.Dir(name), "tmp_idx_")
	if err != nil {
		return err
	}
	_, err = f.Write(b)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Chmod(f.Name(), 0o444)
	}
	if err == nil {
		err = os.Rename(f.Name(), name)
	}
	if err != nil {
		os.Remove(f.Name())
	}
	return err
}

func malformed(format string, args ...any) error {
	return fmt.Errorf("%w: %s", packfile.ErrMalformedPackFile, fmt.Sprintf(format, args...))
}

// packIn reads a pack as it arrives, byte-exact (zlib reads through its
// ReadByte, so it takes no byte past an object's data), and copies what
// it read to out, to the pack's checksum and to the current object's
// CRC-32.
type packIn struct {
	src      io.Reader
	buf      []byte
	pos, end int
	mark     int   // buf[mark:pos] is read but not yet copied
	off      int64 // the pack offset of buf[pos]
	out      io.Writer
	sum      hash.Hash
	crc      hash.Hash32
	zr       io.ReadCloser
	copyBuf  []byte
}

// account copies what was read since the last call.
func (p *packIn) account() error {
	b := p.buf[p.mark:p.pos]
	p.mark = p.pos
	p.sum.Write(b)
	p.crc.Write(b)
	_, err := p.out.Write(b)
	return err
}

func (p *packIn) fill() error {
	if err := p.account(); err != nil {
		return err
	}
	for {
		n, err := p.src.Read(p.buf)
		if n > 0 {
			p.pos, p.end, p.mark = 0, n, 0
			return nil
		}
		if err != nil {
			return err
		}
	}
}

func (p *packIn) ReadByte() (byte, error) {
	if p.pos == p.end {
		if err := p.fill(); err != nil {
			return 0, err
		}
	}
	b := p.buf[p.pos]
	p.pos++
	p.off++
	return b, nil
}

func (p *packIn) Read(b []byte) (int, error) {
	if p.pos == p.end {
		if err := p.fill(); err != nil {
			return 0, err
		}
	}
	n := copy(b, p.buf[p.pos:p.end])
	p.pos += n
	p.off += int64(n)
	return n, nil
}

// read reads the whole pack: its objects, with the hash of those that
// are not deltas, and its checksum. nil objects: the stream was empty.
func (p *packIn) read() ([]*packObj, plumbing.Hash, error) {
	var hdr [12]byte
	n, err := io.ReadFull(p, hdr[:])
	switch {
	case n == 0 && errors.Is(err, io.EOF):
		return nil, plumbing.ZeroHash, nil
	case err != nil:
		return nil, plumbing.ZeroHash, malformed("header: %v", err)
	case string(hdr[:4]) != "PACK":
		return nil, plumbing.ZeroHash, malformed("no PACK signature")
	}
	if v := uint32(hdr[4])<<24 | uint32(hdr[5])<<16 | uint32(hdr[6])<<8 | uint32(hdr[7]); v != 2 && v != 3 {
		return nil, plumbing.ZeroHash, malformed("version %d", v)
	}
	count := uint32(hdr[8])<<24 | uint32(hdr[9])<<16 | uint32(hdr[10])<<8 | uint32(hdr[11])
	objs := make([]*packObj, 0, min(count, 1<<16))
	p.copyBuf = make([]byte, 32<<10)
	for i := uint32(0); i < count; i++ {
		o, err := p.object()
		if err != nil {
			return nil, plumbing.ZeroHash, err
		}
		objs = append(objs, o)
	}
	if err := p.account(); err != nil {
		return nil, plumbing.ZeroHash, err
	}
	var want plumbing.Hash
	copy(want[:], p.sum.Sum(nil))
	// The trailer is not part of what it sums: read around account.
	var got plumbing.Hash
	for i := range got {
		for p.pos == p.end {
			n, err := p.src.Read(p.buf)
			if n == 0 && err != nil {
				return nil, plumbing.ZeroHash, malformed("trailer: %v", err)
			}
			p.pos, p.end = 0, n
		}
		got[i] = p.buf[p.pos]
		p.pos++
	}
	p.mark = p.pos
	if got != want {
		return nil, plumbing.ZeroHash, malformed("checksum %s, the pack sums to %s", got, want)
	}
	if _, err := p.out.Write(got[:]); err != nil {
		return nil, plumbing.ZeroHash, err
	}
	if p.pos < p.end {
		return nil, plumbing.ZeroHash, malformed("data after the pack")
	}
	if n, _ := io.Copy(io.Discard, p.src); n > 0 {
		return nil, plumbing.ZeroHash, malformed("data after the pack")
	}
	if p.zr != nil {
		p.zr.Close()
	}
	return objs, got, nil
}

// object reads the next object: its header, then its data, inflated
// into its hash, or, for a delta, to check it.
func (p *packIn) object() (*packObj, error) {
	if err := p.account(); err != nil {
		return nil, err
	}
	p.crc.Reset()
	o := &packObj{off: p.off}
	c, err := p.ReadByte()
	if err != nil {
		return nil, malformed("object at %d: %v", o.off, err)
	}
	o.typ, o.size = (c>>4)&7, int64(c&15)
	for shift := 4; c&0x80 != 0; shift += 7 {
		if shift > 62 {
			return nil, malformed("object at %d: size overflows", o.off)
		}
		if c, err = p.ReadByte(); err != nil {
			return nil, malformed("object at %d: %v", o.off, err)
		}
		o.size |= int64(c&0x7f) << shift
	}
	var w io.Writer = io.Discard
	var h plumbing.Hasher
	switch o.typ {
	case packCommit, packTree, packBlob, packTag:
		h = plumbing.NewHasher(plumbing.ObjectType(o.typ), o.size)
		w = h
	case packOfsDelta:
		o.delta = true
		if c, err = p.ReadByte(); err != nil {
			return nil, malformed("object at %d: %v", o.off, err)
		}
		rel := int64(c & 0x7f)
		for c&0x80 != 0 {
			if c, err = p.ReadByte(); err != nil {
				return nil, malformed("object at %d: %v", o.off, err)
			}
			if rel >= 1<<55 {
				return nil, malformed("object at %d: delta base offset overflows", o.off)
			}
			rel = (rel+1)<<7 | int64(c&0x7f)
		}
		if rel <= 0 || rel > o.off {
			return nil, malformed("object at %d: delta base offset %d out of the pack", o.off, rel)
		}
		o.base = o.off - rel
	case packRefDelta:
		o.delta = true
		if _, err := io.ReadFull(p, o.ref[:]); err != nil {
			return nil, malformed("object at %d: %v", o.off, err)
		}
	default:
		return nil, malformed("object at %d: unknown type %d", o.off, o.typ)
	}
	if p.zr == nil {
		if p.zr, err = zlib.NewReader(p); err != nil {
			return nil, malformed("object at %d: %v", o.off, err)
		}
	} else if err := p.zr.(zlib.Resetter).Reset(p, nil); err != nil {
		return nil, malformed("object at %d: %v", o.off, err)
	}
	n, err := io.CopyBuffer(plainWriter{w}, io.LimitReader(p.zr, o.size+1), p.copyBuf)
	switch {
	case err != nil:
		return nil, malformed("object at %d: %v", o.off, err)
	case n != o.size:
		return nil, malformed("object at %d: %d bytes, its header says %d", o.off, n, o.size)
	}
	if err := p.account(); err != nil {
		return nil, err
	}
	o.crc = p.crc.Sum32()
	if !o.delta {
		o.hash, o.done = h.Sum(), true
	}
	return o, nil
}

// resolvePack makes every delta of the pack at name from its base, for
// its hash: from each object that is no delta, down its chains of deltas.
func resolvePack(name string, objs []*packObj) error {
	byOff := map[int64][]*packObj{}
	byRef := map[plumbing.Hash][]*packObj{}
	deltas := 0
	for _, o := range objs {
		switch o.typ {
		case packOfsDelta:
			byOff[o.base] = append(byOff[o.base], o)
			deltas++
		case packRefDelta:
			byRef[o.ref] = append(byRef[o.ref], o)
			deltas++
		}
	}
	if deltas == 0 {
		return nil
	}
	pr := newPackReader(&packSet{packs: []*pack{{path: name}}})
	defer pr.Close()
	read := func(o *packObj) ([]byte, error) {
		if _, err := pr.at(0, o.off); err != nil {
			return nil, err
		}
		return pr.inflate(o.off, o.size)
	}
	var resolve func(o *packObj, content []byte, depth int) error
	resolve = func(o *packObj, content []byte, depth int) error {
		if depth > maxDeltaDepth {
			return malformed("object at %d: delta chain too deep", o.off)
		}
		for _, children := range [][]*packObj{byOff[o.off], byRef[o.hash]} {
			for _, d := range children {
				if d.done {
					continue
				}
				delta, err := read(d)
				if err != nil {
					return err
				}
				b, err := applyDelta(content, delta)
				if err != nil {
					return malformed("object at %d: %v", d.off, err)
				}
				d.typ, d.size, d.done = o.typ, int64(len(b)), true
				d.hash = plumbing.ComputeHash(plumbing.ObjectType(d.typ), b)
				deltas--
				if err := resolve(d, b, depth+1); err != nil {
					return err
				}
			}
		}
		return nil
	}
	for _, o := range objs {
		if o.delta || len(byOff[o.off]) == 0 && len(byRef[o.hash]) == 0 {
			continue
		}
		content, err := read(o)
		if err != nil {
			return err
		}
		if err := resolve(o, content, 0); err != nil {
			return err
		}
	}
	if deltas > 0 {
		// A thin pack's deltas on objects it does not hold: never
		// asked for (go-git filters the thin-pack capability out).
		return malformed("%d deltas on objects not in the pack", deltas)
	}
	return nil
}
