// Command driver runs one operation of fizeau's discoverycache package on a
// cache root and prints its result as one JSON line, for discocache's
// interop tests (tests/it/fizeau.rs). The package itself is not part of
// this repository: the test helper (tests/it/helpers/fizeau.rs) builds this
// file in a temp module next to a copy of the package read from
// ../shared/peers/fizeau/discoverycache (or $FIZEAU_SRC).
//
// Usage:
//
//	driver -root R -tier T -name N [-ttl D] [-rd D] [-bytes S | -fail MSG] OP [ARGV...]
//
// OP is read, refresh, maybe-refresh, maybe-refresh-sync, state or prune
// (with -active tier/name,...). The refresher returns -bytes, fails with
// -fail, or runs ARGV (no shell) and returns its stdout; a non-zero exit
// is its error. It counts nothing itself: tests that count refresher runs
// give it a command that appends to a file.
//
// Exit status: 0 when the operation returned no error, 1 when it did (the
// error is in the JSON), 2 on a usage error.
package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"example.local/fzdriver/discoverycache"
)

type options struct {
	root, tier, name string
	ttl, rd          time.Duration
	bytes, fail      string
	active           string
	argv             []string
}

func main() {
	var o options
	flag.StringVar(&o.root, "root", "", "cache root")
	flag.StringVar(&o.tier, "tier", "", "source tier")
	flag.StringVar(&o.name, "name", "", "source name")
	flag.DurationVar(&o.ttl, "ttl", time.Hour, "source ttl")
	flag.DurationVar(&o.rd, "rd", 10*time.Second, "source refresh deadline")
	flag.StringVar(&o.bytes, "bytes", "", "the refresher returns these bytes")
	flag.StringVar(&o.fail, "fail", "", "the refresher fails with this message")
	flag.StringVar(&o.active, "active", "", "prune: active sources, tier/name,...")
	flag.Parse()
	args := flag.Args()
	if o.root == "" || len(args) == 0 {
		fmt.Fprintln(os.Stderr, "usage: driver -root R -tier T -name N [flags] OP [ARGV...]")
		os.Exit(2)
	}
	o.argv = args[1:]
	if len(o.argv) > 0 && o.argv[0] == "--" {
		o.argv = o.argv[1:]
	}
	out, err := run(args[0], o)
	if err != nil {
		if out == nil {
			out = map[string]any{}
		}
		out["ok"] = false
		out["error"] = err.Error()
	} else {
		out["ok"] = true
	}
	line, _ := json.Marshal(out)
	fmt.Println(string(line))
	if err != nil {
		os.Exit(1)
	}
}

func run(op string, o options) (map[string]any, error) {
	c := &discoverycache.Cache{Root: o.root}
	s := discoverycache.Source{Tier: o.tier, Name: o.name, TTL: o.ttl, RefreshDeadline: o.rd}
	switch op {
	case "read":
		return read(c, s)
	case "refresh":
		return map[string]any{}, c.Refresh(s, refresher(o))
	case "maybe-refresh-sync":
		return map[string]any{}, c.MaybeRefreshSync(s, refresher(o))
	case "maybe-refresh":
		return maybeRefresh(c, s, o)
	case "state":
		return state(c, s)
	case "prune":
		return map[string]any{}, c.Prune(activeSources(o.active))
	}
	fmt.Fprintf(os.Stderr, "driver: unknown op %q\n", op)
	os.Exit(2)
	return nil, nil
}

func read(c *discoverycache.Cache, s discoverycache.Source) (map[string]any, error) {
	r, err := c.Read(s)
	if err != nil {
		return nil, err
	}
	return map[string]any{
		"present": r.Data != nil,
		"data":    string(r.Data),
		"age_ms":  r.Age.Milliseconds(),
		"fresh":   r.Fresh,
		"stale":   r.Stale,
	}, nil
}

func state(c *discoverycache.Cache, s discoverycache.Source) (map[string]any, error) {
	st, err := c.RefreshState(s)
	if err != nil {
		return nil, err
	}
	return map[string]any{
		"in_flight":  st.InFlight,
		"failed":     st.Failed,
		"last_error": st.LastError,
		"started_at": st.StartedAt,
		"deadline":   st.Deadline,
	}, nil
}

// maybeRefresh calls MaybeRefresh and, when this process claimed the
// refresh, waits for its background goroutine to finish (the refresher to
// return and the marker to be released or turned into a failure record),
// so the process does not exit halfway through its own refresh.
func maybeRefresh(c *discoverycache.Cache, s discoverycache.Source, o options) (map[string]any, error) {
	done := make(chan struct{})
	fn := refresher(o)
	c.MaybeRefresh(s, func(ctx context.Context) ([]byte, error) {
		defer close(done)
		return fn(ctx)
	})
	marker := filepath.Join(c.Root, s.Tier, s.Name+".refreshing")
	if !ownMarker(marker, false) {
		return map[string]any{"claimed": false}, nil
	}
	select {
	case <-done:
	case <-time.After(o.rd + 5*time.Second):
		return map[string]any{"claimed": true}, errors.New("driver: background refresh did not finish")
	}
	end := time.Now().Add(5 * time.Second)
	for ownMarker(marker, true) {
		if time.Now().After(end) {
			return map[string]any{"claimed": true}, errors.New("driver: own marker not released")
		}
		time.Sleep(time.Millisecond)
	}
	return map[string]any{"claimed": true}, nil
}

// ownMarker tells whether the marker names this process (and, when
// inFlightOnly, carries no failure record).
func ownMarker(path string, inFlightOnly bool) bool {
	raw, err := os.ReadFile(path)
	if err != nil {
		return false
	}
	var m struct {
		PID       int    `json:"pid"`
		LastError string `json:"last_error"`
	}
	if json.Unmarshal(raw, &m) != nil || m.PID != os.Getpid() {
		return false
	}
	return !inFlightOnly || m.LastError == ""
}

func refresher(o options) discoverycache.Refresher {
	return func(ctx context.Context) ([]byte, error) {
		switch {
		case o.fail != "":
			return nil, errors.New(o.fail)
		case len(o.argv) > 0:
			return runCommand(ctx, o.argv)
		default:
			return []byte(o.bytes), nil
		}
	}
}

func runCommand(ctx context.Context, argv []string) ([]byte, error) {
	cmd := exec.CommandContext(ctx, argv[0], argv[1:]...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout = &stdout
	cmd.Stderr = &stderr
	if err := cmd.Run(); err != nil {
		return nil, fmt.Errorf("%s: %w: %s", argv[0], err, strings.TrimSpace(stderr.String()))
	}
	return stdout.Bytes(), nil
}

func activeSources(list string) []discoverycache.Source {
	var out []discoverycache.Source
	for _, id := range strings.Split(list, ",") {
		tier, name, ok := strings.Cut(strings.TrimSpace(id), "/")
		if ok {
			out = append(out, discoverycache.Source{Tier: tier, Name: name})
		}
	}
	return out
}
