// Package compose reads a compose file with compose-go (the reference
// implementation of the Compose specification) and reduces each service to
// what the declared profile needs: image, ports, expose, networks, links,
// depends_on, read_only, volumes, tmpfs, user, cap_add/cap_drop, and the
// expected peers from the compose graph.
package compose

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"

	"github.com/compose-spec/compose-go/v2/loader"
	"github.com/compose-spec/compose-go/v2/types"
)

// Service is one compose service's declarations.
type Service struct {
	Name       string   `json:"name"`
	Image      string   `json:"image,omitempty"`
	Entrypoint []string `json:"entrypoint,omitempty"`
	Command    []string `json:"command,omitempty"`
	// Ports are the container ports published or exposed ("8080/tcp").
	Ports     []string `json:"ports,omitempty"`
	Networks  []string `json:"networks,omitempty"`
	Links     []string `json:"links,omitempty"` // service names
	DependsOn []string `json:"depends_on,omitempty"`
	ReadOnly  bool     `json:"read_only,omitempty"`
	// Writable are volume targets not mounted read-only, and tmpfs paths.
	Writable []string `json:"writable,omitempty"`
	User     string   `json:"user,omitempty"`
	CapAdd   []string `json:"cap_add,omitempty"`
	CapDrop  []string `json:"cap_drop,omitempty"`
	// Peers are the services this one is expected to talk to.
	Peers []Peer `json:"peers,omitempty"`
}

// Peer is an expected peer and the declarations that make it one.
type Peer struct {
	Service string   `json:"service"`
	Via     []string `json:"via"` // "link", "depends_on", "linked_by", "network:<name>"
}

// Project is a loaded compose project.
type Project struct {
	Name     string              `json:"name"`
	File     string              `json:"file"`
	Services map[string]*Service `json:"services"`
}

// ErrInvalid wraps every load failure.
var ErrInvalid = errors.New("invalid compose file")

// Load parses the compose file at path (project name from the file's
// directory unless the file names one). Environment interpolation uses
// only the file's own defaults: the enricher's environment is not read.
func Load(ctx context.Context, path string) (*Project, error) {
	return load(ctx, types.ConfigFile{Filename: path}, filepath.Dir(path))
}

// Parse parses compose content in memory (as if it were dir/compose.yaml).
func Parse(ctx context.Context, content []byte, dir string) (*Project, error) {
	return load(ctx, types.ConfigFile{Filename: filepath.Join(dir, "compose.yaml"), Content: content}, dir)
}

func load(ctx context.Context, cf types.ConfigFile, dir string) (p *Project, err error) {
	defer func() {
		if r := recover(); r != nil { // hostile input must not crash the stage
			p, err = nil, fmt.Errorf("%w: %s: parser panic: %v", ErrInvalid, cf.Filename, r)
		}
	}()
	name := strings.ToLower(filepath.Base(dir))
	proj, err := loader.LoadWithContext(ctx, types.ConfigDetails{
		WorkingDir:  dir,
		ConfigFiles: []types.ConfigFile{cf},
		Environment: types.Mapping{},
	}, func(o *loader.Options) {
		o.SetProjectName(sanitize(name), false)
		o.SkipResolveEnvironment = true
		o.ResolvePaths = false
	})
	if err != nil {
		return nil, fmt.Errorf("%w: %s: %v", ErrInvalid, cf.Filename, err)
	}
	return fromProject(proj, cf.Filename), nil
}

func sanitize(s string) string {
	s = strings.Map(func(r rune) rune {
		if r >= 'a' && r <= 'z' || r >= '0' && r <= '9' || r == '-' || r == '_' {
			return r
		}
		return -1
	}, s)
	if s == "" {
		return "project"
	}
	return s
}

func fromProject(proj *types.Project, file string) *Project {
	p := &Project{Name: proj.Name, File: file, Services: map[string]*Service{}}
	for name, sc := range proj.Services {
		s := &Service{
			Name:       name,
			Image:      sc.Image,
			Entrypoint: sc.Entrypoint,
			Command:    sc.Command,
			ReadOnly:   sc.ReadOnly,
			User:       sc.User,
			CapAdd:     sorted(sc.CapAdd),
			CapDrop:    sorted(sc.CapDrop),
		}
		for _, port := range sc.Ports {
			proto := port.Protocol
			if proto == "" {
				proto = "tcp"
			}
			s.Ports = append(s.Ports, strconv.FormatUint(uint64(port.Target), 10)+"/"+proto)
		}
		for _, e := range sc.Expose {
			if !strings.Contains(e, "/") {
				e += "/tcp"
			}
			s.Ports = append(s.Ports, e)
		}
		s.Ports = sortedUnique(s.Ports)
		for n := range sc.Networks {
			s.Networks = append(s.Networks, n)
		}
		sort.Strings(s.Networks)
		for _, l := range sc.Links {
			svc, _, _ := strings.Cut(l, ":")
			s.Links = append(s.Links, svc)
		}
		s.Links = sortedUnique(s.Links)
		for d := range sc.DependsOn {
			s.DependsOn = append(s.DependsOn, d)
		}
		sort.Strings(s.DependsOn)
		for _, v := range sc.Volumes {
			if v.Target != "" && !v.ReadOnly {
				s.Writable = append(s.Writable, v.Target)
			}
		}
		for _, t := range sc.Tmpfs {
			path, _, _ := strings.Cut(t, ":")
			s.Writable = append(s.Writable, path)
		}
		s.Writable = sortedUnique(s.Writable)
		p.Services[name] = s
	}
	p.computePeers()
	return p
}

// computePeers sets each service's expected peers: its links and
// depends_on, services that link to or depend on it, and services that
// share a network with it.
func (p *Project) computePeers() {
	via := map[string]map[string][]string{} // service -> peer -> reasons
	add := func(a, b, why string) {
		if a == b || p.Services[b] == nil || p.Services[a] == nil {
			return
		}
		if via[a] == nil {
			via[a] = map[string][]string{}
		}
		if !slices.Contains(via[a][b], why) {
			via[a][b] = append(via[a][b], why)
		}
	}
	for name, s := range p.Services {
		for _, l := range s.Links {
			add(name, l, "link")
			add(l, name, "linked_by")
		}
		for _, d := range s.DependsOn {
			add(name, d, "depends_on")
			add(d, name, "depended_on_by")
		}
		for other, o := range p.Services {
			for _, n := range s.Networks {
				if slices.Contains(o.Networks, n) {
					add(name, other, "network:"+n)
				}
			}
		}
	}
	for name, s := range p.Services {
		s.Peers = nil
		for peer, why := range via[name] {
			sort.Strings(why)
			s.Peers = append(s.Peers, Peer{Service: peer, Via: why})
		}
		sort.Slice(s.Peers, func(i, j int) bool { return s.Peers[i].Service < s.Peers[j].Service })
	}
}

func sorted(ss []string) []string {
	if len(ss) == 0 {
		return nil
	}
	out := slices.Clone(ss)
	sort.Strings(out)
	return out
}

func sortedUnique(ss []string) []string {
	if len(ss) == 0 {
		return nil
	}
	out := sorted(ss)
	return slices.Compact(out)
}
