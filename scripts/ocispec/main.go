// Command ocispec edits a runc config.json for the demo: the process args,
// annotations, and a writable rootfs without a terminal.
//
//	go run ./scripts/ocispec -f config.json -a k=v -a k2=v2 -- /bin/sh -c '...'
package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"strings"
)

type kvs map[string]string

func (k kvs) String() string { return fmt.Sprint(map[string]string(k)) }
func (k kvs) Set(s string) error {
	key, val, ok := strings.Cut(s, "=")
	if !ok {
		return fmt.Errorf("annotation %q: want key=value", s)
	}
	k[key] = val
	return nil
}

func main() {
	file := flag.String("f", "config.json", "OCI config to edit in place")
	ann := kvs{}
	flag.Var(ann, "a", "annotation key=value (repeatable)")
	flag.Parse()
	if err := edit(*file, ann, flag.Args()); err != nil {
		fmt.Fprintln(os.Stderr, "ocispec:", err)
		os.Exit(1)
	}
}

func edit(file string, ann map[string]string, args []string) error {
	raw, err := os.ReadFile(file)
	if err != nil {
		return err
	}
	var cfg map[string]any
	if err := json.Unmarshal(raw, &cfg); err != nil {
		return fmt.Errorf("%s: %w", file, err)
	}
	proc, _ := cfg["process"].(map[string]any)
	root, _ := cfg["root"].(map[string]any)
	if proc == nil || root == nil {
		return fmt.Errorf("%s: no process or root section", file)
	}
	proc["terminal"] = false
	if len(args) > 0 {
		proc["args"] = args
	}
	root["readonly"] = false
	if len(ann) > 0 {
		cfg["annotations"] = ann
	}
	out, err := json.MarshalIndent(cfg, "", "  ")
	if err != nil {
		return err
	}
	return os.WriteFile(file, out, 0o644)
}
