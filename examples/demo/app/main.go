// Command hello is the demo application: it serves its version and the
// release directory it runs from, so a deploy and a rollback can be seen.
package main

import (
	"flag"
	"fmt"
	"log"
	"net/http"
	"os"
	"path/filepath"
	"strings"
)

func main() {
	addr := flag.String("addr", "127.0.0.1:18080", "listen address (keep it on loopback)")
	flag.Parse()
	version, err := os.ReadFile("VERSION")
	if err != nil {
		log.Fatal(err)
	}
	// The process resolved the link once, at start: this is the release
	// it runs from, whatever the link says later.
	cwd, _ := os.Getwd()
	if real, err := filepath.EvalSymlinks(cwd); err == nil {
		cwd = real
	}
	http.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "hello from %s, running in %s\n", strings.TrimSpace(string(version)), cwd)
	})
	log.Fatal(http.ListenAndServe(*addr, nil))
}
