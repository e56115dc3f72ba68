package enricher

import (
	"slices"
	"strconv"
	"strings"

	"github.com/containsec/contain/internal/compose"
	"github.com/containsec/contain/internal/dockerfile"
	"github.com/containsec/contain/internal/imagecfg"
)

// DeriveProfile builds the declared profile of an image (decl, required),
// refined by its Dockerfile (df, optional) and compose service (svc,
// optional: a service profile). Later sources override earlier ones where
// they set something: image config < Dockerfile < compose service.
func DeriveProfile(decl *imagecfg.Declaration, df *dockerfile.Dockerfile, svc *compose.Service, project string) *Profile {
	p := &Profile{
		ImageDigest: decl.Digest,
		ImageRef:    decl.Ref,
		Created:     decl.Created,
		WorkingDir:  decl.WorkingDir,
		User:        decl.User,
		Executables: decl.Executables,
	}
	p.Sources = append(p.Sources, "image:"+decl.Source)
	ports := slices.Clone(decl.ExposedPorts)
	writable := slices.Clone(decl.Volumes)
	entry, cmd := decl.Entrypoint, decl.Cmd
	if df != nil {
		p.Sources = append(p.Sources, "dockerfile")
		ports = append(ports, df.Expose...)
		writable = append(writable, df.Volumes...)
		if p.User == "" {
			p.User = df.User
		}
		if len(entry) == 0 && len(cmd) == 0 {
			entry, cmd = df.Entrypoint, df.Cmd
		}
	}
	if svc != nil {
		p.Sources = append(p.Sources, "compose")
		p.ComposeProject, p.ComposeService = project, svc.Name
		ports = append(ports, svc.Ports...)
		writable = append(writable, svc.Writable...)
		if svc.User != "" {
			p.User = svc.User
		}
		if len(svc.Entrypoint) > 0 {
			entry, cmd = svc.Entrypoint, nil
		}
		if len(svc.Command) > 0 {
			cmd = svc.Command
		}
		p.ReadOnlyRootfs = svc.ReadOnly
		p.CapAdd, p.CapDrop = svc.CapAdd, svc.CapDrop
		for _, peer := range svc.Peers {
			p.Peers = append(p.Peers, Peer{Service: peer.Service, Via: peer.Via})
		}
	}
	p.MainProcess = append(slices.Clone(entry), cmd...)
	p.UID = uidOf(p.User)
	p.ListenPorts = parsePorts(ports)
	slices.Sort(writable)
	p.WritablePaths = slices.Compact(writable)
	p.Seal()
	return p
}

// uidOf is the numeric uid of a USER value: 0 when none is declared (the
// container runs as root), -1 when it is a name that needs /etc/passwd.
func uidOf(user string) int {
	if user == "" {
		return 0
	}
	u, _, _ := strings.Cut(user, ":")
	if u == "root" {
		return 0
	}
	n, err := strconv.Atoi(u)
	if err != nil || n < 0 {
		return -1
	}
	return n
}

// parsePorts turns "80", "80/tcp", "53/udp", "8000-8002/tcp" into sorted
// unique ports (ranges over 64 ports are ignored).
func parsePorts(specs []string) []Port {
	var out []Port
	for _, s := range specs {
		num, proto, _ := strings.Cut(s, "/")
		proto = strings.ToLower(proto)
		if proto == "" {
			proto = "tcp"
		}
		lo, hi, isRange := strings.Cut(num, "-")
		a, err := strconv.ParseUint(lo, 10, 16)
		if err != nil || a == 0 {
			continue
		}
		b := a
		if isRange {
			if b, err = strconv.ParseUint(hi, 10, 16); err != nil || b < a || b-a > 64 {
				continue
			}
		}
		for port := a; port <= b; port++ {
			out = append(out, Port{Port: uint16(port), Protocol: proto})
		}
	}
	slices.SortFunc(out, func(x, y Port) int {
		if x.Port != y.Port {
			return int(x.Port) - int(y.Port)
		}
		return strings.Compare(x.Protocol, y.Protocol)
	})
	return slices.Compact(out)
}
