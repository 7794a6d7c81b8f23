// Command read reads one source of a discocache root, from docs/FORMAT.md
// alone, with Go's standard library.
//
// Usage: go run read.go ROOT TIER/NAME
//
// It prints one JSON line: {"source", "age_seconds", "fresh", "revision",
// "data"}. The payload <root>/<tier>/<name>.json is the truth: its bytes are
// the data and its mtime is when they were fetched, so age = now - mtime.
// The sidecar is optional extra (revision, ttl): FORMAT.md (version 1) puts
// it at <tier>/<name>.meta.json; format 2 moves it to <tier>/.discocache/,
// so both places are tried. Exit 3 when the source has no data.
package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"time"
)

var part = regexp.MustCompile(`^[a-z0-9][a-z0-9-]{0,62}$`)

// sidecar is the part of the sidecar this reader uses.
type sidecar struct {
	Format   int     `json:"format"`
	Revision *uint64 `json:"revision"`
	TTLMs    *int64  `json:"ttl_ms"`
}

// readSidecar returns the sidecar, or nil: it is optional.
func readSidecar(root, tier, name string) *sidecar {
	for _, path := range []string{
		filepath.Join(root, tier, name+".meta.json"),
		filepath.Join(root, tier, ".discocache", name+".meta.json"),
	} {
		bytes, err := os.ReadFile(path)
		if err != nil {
			continue
		}
		var meta sidecar
		if json.Unmarshal(bytes, &meta) == nil && (meta.Format == 1 || meta.Format == 2) {
			return &meta
		}
	}
	return nil
}

func fail(code int, format string, args ...any) {
	fmt.Fprintf(os.Stderr, "read.go: "+format+"\n", args...)
	os.Exit(code)
}

func main() {
	if len(os.Args) != 3 {
		fail(2, "usage: read.go ROOT TIER/NAME")
	}
	root, source := os.Args[1], os.Args[2]
	tier, name, ok := strings.Cut(source, "/")
	if !ok || !part.MatchString(tier) || !part.MatchString(name) {
		fail(2, "%q is not tier/name", source)
	}
	path := filepath.Join(root, tier, name+".json")
	// One open, then stat and read the same file: the payload is replaced
	// by rename, so this is one whole version of it.
	f, err := os.Open(path)
	if errors.Is(err, fs.ErrNotExist) {
		fail(3, "%s: no data (%s does not exist)", source, path)
	} else if err != nil {
		fail(1, "%s: %v", source, err)
	}
	defer f.Close()
	info, err := f.Stat()
	if err != nil {
		fail(1, "%s: %v", source, err)
	}
	bytes, err := io.ReadAll(f)
	if err != nil {
		fail(1, "%s: %v", source, err)
	}
	if !json.Valid(bytes) {
		fail(1, "%s: %s is not JSON", source, path)
	}
	age := time.Since(info.ModTime()).Seconds()
	if age < 0 {
		age = 0
	}
	out := map[string]any{
		"source":      source,
		"age_seconds": age,
		"fresh":       nil,
		"revision":    nil,
		"data":        json.RawMessage(bytes),
	}
	if meta := readSidecar(root, tier, name); meta != nil {
		out["revision"] = meta.Revision
		if meta.TTLMs != nil {
			out["fresh"] = age*1000 < float64(*meta.TTLMs)
		}
	}
	line, err := json.Marshal(out)
	if err != nil {
		fail(1, "%s: %v", source, err)
	}
	fmt.Println(string(line))
}
