package main

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"time"
)

// startup measures what a command pays before it does anything: the wall
// time of `reconciler version` against a hello-world Go program built in
// the same run with the same toolchain (target: at most 2x), and a
// converged `apply` after 20 deploys (deployedHost) against `reconciler version`
// (target: at most 10 ms more). The three commands run interleaved, after
// warm-up runs, so that a machine busy with something else slows each of
// them alike; each figure is the median. CPU time and page faults (minor
// faults: the pages a process touches first, most of a Go program's
// start) are the medians of the same runs: they do not depend on the
// machine's load as wall time does.
func (b *bench) startup() {
	hello := filepath.Join(b.dir, "hello")
	check(os.MkdirAll(hello+"-src", 0o755))
	check(os.WriteFile(filepath.Join(hello+"-src", "go.mod"), []byte("module hello\n\ngo 1.26\n"), 0o644))
	check(os.WriteFile(filepath.Join(hello+"-src", "main.go"), []byte("package main\n\nimport \"fmt\"\n\nfunc main() { fmt.Println(\"hello, world\") }\n"), 0o644))
	build := exec.Command("go", "build", "-o", hello, ".")
	build.Dir = hello + "-src"
	if out, err := build.CombinedOutput(); err != nil {
		check(fmt.Errorf("go build hello: %v\n%s", err, out))
	}
	file := b.deployedHost("startup", 20)
	parts := b.initOnly()

	runs, warm := 51, 5
	if b.runs < 21 {
		runs = 11
	}
	cmds := []struct {
		name string
		args []string
	}{
		{"hello", []string{hello}},
		{"version", []string{b.bin, "version"}},
		{"apply", []string{b.bin, "apply", "-f", file}},
	}
	for _, p := range parts {
		cmds = append(cmds, struct {
			name string
			args []string
		}{p.name, []string{p.bin}})
	}
	wall := make([][]time.Duration, len(cmds))
	cpu := make([][]time.Duration, len(cmds))
	faults := make([][]int64, len(cmds))
	for i := 0; i < warm+runs; i++ {
		for j, c := range cmds {
			cmd := exec.Command(c.args[0], c.args[1:]...)
			cmd.Env = gitEnv()
			start := time.Now()
			out, err := cmd.CombinedOutput()
			d := time.Since(start)
			if err != nil {
				check(fmt.Errorf("%v: %v\n%s", c.args, err, out))
			}
			if i < warm {
				continue
			}
			wall[j] = append(wall[j], d)
			cpu[j] = append(cpu[j], cmd.ProcessState.UserTime()+cmd.ProcessState.SystemTime())
			if ru, ok := cmd.ProcessState.SysUsage().(*syscall.Rusage); ok {
				faults[j] = append(faults[j], ru.Minflt+ru.Majflt)
			}
		}
	}
	hw, vw, aw := median(wall[0]), median(wall[1]), median(wall[2])
	ratio := float64(vw) / float64(hw)
	fmt.Printf("start-up: `reconciler version`:      %9s   baseline hello-world Go binary %s   ratio %.2f (target <= 2: %s)\n",
		ms(vw), ms(hw), ratio, verdict(ratio <= 2))
	fmt.Printf("start-up: converged apply, 20 deploys:  %7s   baseline `reconciler version` %s   +%s (target <= +10 ms: %s)\n",
		ms(aw), ms(vw), ms(aw-vw), verdict(aw-vw <= 10*time.Millisecond))
	hc, vc, ac := median(cpu[0]), median(cpu[1]), median(cpu[2])
	hf, vf, af := medianInt(faults[0]), medianInt(faults[1]), medianInt(faults[2])
	fmt.Printf("          CPU time: hello-world %s, version %s (%.2fx), apply %s (+%s); page faults: %d, %d (%.2fx), %d (+%d)\n",
		ms(hc), ms(vc), float64(vc)/float64(hc), ms(ac), ms(ac-vc), hf, vf, float64(vf)/float64(hf), af, af-vf)
	if len(parts) > 0 {
		fmt.Printf("          where it goes: programs that only link and initialise what `reconciler` imports, in the same runs:\n")
		for i, p := range parts {
			w, f := median(wall[3+i]), medianInt(faults[3+i])
			fmt.Printf("            %-52s %7s (%.2fx hello-world), %d packages, %d page faults\n", p.name+":", ms(w), float64(w)/float64(hw), p.packages, f)
		}
	}
	fmt.Printf("          (%d interleaved runs after %d warm-up, medians)\n", runs, warm)
}

// initOnlyProgram is a program that imports, for their inits only, the
// packages `reconciler` imports, less some.
type initOnlyProgram struct {
	name, bin string
	packages  int
}

// initOnly builds four such programs: with every package `reconciler`
// imports; without the etcd client (etcd, gRPC, protobuf); without it and
// go-git (with its ssh and OpenPGP); go-git's alone (the design's git
// library). Their start against hello-world's
// is what the packages cost, whatever the commands do: the floor each
// choice of dependencies sets. The programs live in a build overlay, so
// that they can import the module's internal packages without a file in
// the tree.
func (b *bench) initOnly() []initOnlyProgram {
	out, err := exec.Command("go", "list", "-deps", "-f", "{{.ImportPath}} {{.Standard}} {{join .Deps \" \"}}", "./cmd/reconciler").Output()
	if err != nil {
		fmt.Printf("          (go list -deps ./cmd/reconciler: %v: no breakdown)\n", err)
		return nil
	}
	etcd := []string{"go.etcd.io/", "google.golang.org/", "github.com/grpc-ecosystem/", "github.com/gogo/", "github.com/golang/protobuf/", "github.com/coreos/"}
	gogit := []string{"github.com/go-git/", "github.com/ProtonMail/", "golang.org/x/crypto/ssh", "github.com/kevinburke/", "github.com/cloudflare/", "github.com/pjbgf/", "github.com/skeema/", "github.com/emirpasic/", "github.com/jbenet/", "github.com/sergi/", "github.com/xanzy/", "github.com/cyphar/", "dario.cat/", "github.com/golang/groupcache/"}
	uses := func(deps []string, prefixes []string) bool {
		for _, d := range deps {
			for _, p := range prefixes {
				if strings.HasPrefix(d, p) {
					return true
				}
			}
		}
		return false
	}
	variants := []struct {
		name    string
		without [][]string
		only    []string
		imports []string
	}{
		{name: "every package"},
		{name: "without the etcd client (gRPC, protobuf)", without: [][]string{etcd}},
		{name: "without the etcd client and go-git", without: [][]string{etcd, gogit}},
		{name: "go-git alone (its packages reconciler imports)", only: []string{"github.com/go-git/"}},
	}
	for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		f := strings.Fields(line)
		path, std, deps := f[0], f[1] == "true", append([]string{f[0]}, f[2:]...)
		internal := slices.Contains(strings.Split(path, "/"), "internal") && !strings.HasPrefix(path, "github.com/reconciler-dev/reconciler/internal/")
		if internal || strings.HasPrefix(path, "vendor/") || path == "unsafe" || path == "C" || strings.HasSuffix(path, "/cmd/reconciler") || (std && strings.HasPrefix(path, "runtime/")) {
			continue
		}
	next:
		for i := range variants {
			for _, w := range variants[i].without {
				if uses(deps, w) {
					continue next
				}
			}
			if variants[i].only != nil && !uses([]string{path}, variants[i].only) {
				continue
			}
			variants[i].imports = append(variants[i].imports, path)
		}
	}
	wd, err := os.Getwd()
	check(err)
	dir := filepath.Join(b.dir, "init-only")
	check(os.MkdirAll(dir, 0o755))
	var programs []initOnlyProgram
	for i, v := range variants {
		var src strings.Builder
		src.WriteString("package main\n\nimport (\n\t\"os\"\n")
		for _, p := range v.imports {
			if p != "os" {
				fmt.Fprintf(&src, "\t_ %q\n", p)
			}
		}
		src.WriteString(")\n\nfunc main() { os.Stdout.WriteString(\"reconciler dev\\n\") }\n")
		file := filepath.Join(dir, fmt.Sprintf("main%d.go", i))
		check(os.WriteFile(file, []byte(src.String()), 0o644))
		pkg := filepath.Join(wd, "bench", fmt.Sprintf("zz_initonly%d", i))
		overlay := filepath.Join(dir, fmt.Sprintf("overlay%d.json", i))
		o, err := json.Marshal(map[string]any{"Replace": map[string]string{filepath.Join(pkg, "main.go"): file}})
		check(err)
		check(os.WriteFile(overlay, o, 0o644))
		bin := filepath.Join(dir, fmt.Sprintf("init-only%d", i))
		if out, err := exec.Command("go", "build", "-overlay", overlay, "-o", bin, "./bench/"+filepath.Base(pkg)).CombinedOutput(); err != nil {
			fmt.Printf("          (building the init-only program %q: %v\n%s)\n", v.name, err, out)
			return nil
		}
		programs = append(programs, initOnlyProgram{name: v.name, bin: bin, packages: len(v.imports)})
	}
	return programs
}

func medianInt(xs []int64) int64 {
	s := slices.Clone(xs)
	slices.Sort(s)
	return s[len(s)/2]
}

// deployedHost makes a root as a host has it after n deploys: a commit, then
// its apply, n times. Each apply fetches its commit, and go-git adds a pack
// to the cache per fetch and never repacks, so the cache holds n packs —
// where smallHost's cache, fetched once with every commit, holds one.
func (b *bench) deployedHost(name string, n int) (file string) {
	repo := filepath.Join(b.dir, name+"-app")
	root := filepath.Join(b.dir, name+"-host")
	file = filepath.Join(b.dir, name+".yaml")
	run("git", "init", "-q", "-b", "main", repo)
	for i := 0; i < n; i++ {
		check(os.WriteFile(filepath.Join(repo, "VERSION"), []byte(fmt.Sprintf("v%d\n", i)), 0o644))
		run("git", "-C", repo, "add", "-A")
		run("git", "-C", repo, "commit", "-qm", fmt.Sprintf("v%d", i))
		b.writeDesired(file, root, repo, run("git", "-C", repo, "rev-parse", "HEAD"))
		run(b.bin, "apply", "-f", file)
	}
	packs, err := filepath.Glob(filepath.Join(root, "repo", "objects", "pack", "*.pack"))
	check(err)
	if len(packs) != n {
		fmt.Printf("          (the cache holds %d packs after %d deploys)\n", len(packs), n)
	}
	return file
}
