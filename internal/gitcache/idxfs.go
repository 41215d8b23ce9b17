package gitcache

import (
	"bytes"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/go-git/go-billy/v5"
)

// idxFS serves the cache's pack indexes (.idx) from memory, read whole at
// Open. go-git decodes an index with 4-byte reads straight from the file
// (idxfile.Decoder, through binary.Read) and loads every index of the
// cache to find one object: with a pack per fetch, a converged apply on a
// host that had 20 deploys made 5,000 read(2) calls, most of what it did
// beyond process start. go-git keeps the decoded index in memory anyway.
type idxFS struct{ billy.Filesystem }

func (f idxFS) Open(name string) (billy.File, error) {
	file, err := f.Filesystem.Open(name)
	if err != nil || !strings.HasSuffix(name, ".idx") {
		return file, err
	}
	b, err := io.ReadAll(file)
	if err != nil {
		file.Close()
		return nil, fmt.Errorf("read %s: %w", name, err)
	}
	return &memFile{File: file, r: bytes.NewReader(b)}, nil
}

// Chmod is passed on: go-git makes the packs it writes read-only through
// it when the filesystem has it (dotgit's writers).
func (f idxFS) Chmod(name string, mode os.FileMode) error {
	c, ok := f.Filesystem.(billy.Chmod)
	if !ok {
		return fmt.Errorf("chmod %s: not supported", name)
	}
	return c.Chmod(name, mode)
}

var _ billy.Chmod = idxFS{}

// memFile reads from memory; Name, Close and the rest are the file's.
type memFile struct {
	billy.File
	r *bytes.Reader
}

func (m *memFile) Read(p []byte) (int, error)                { return m.r.Read(p) }
func (m *memFile) ReadAt(p []byte, off int64) (int, error)   { return m.r.ReadAt(p, off) }
func (m *memFile) Seek(off int64, whence int) (int64, error) { return m.r.Seek(off, whence) }
