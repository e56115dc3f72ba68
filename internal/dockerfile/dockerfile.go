// Package dockerfile reads the declarations of a Dockerfile with
// buildkit's parser: base images, exposed ports, user, entrypoint/cmd,
// volumes and every instruction with its line, for the image audit and
// the declared profile. Parse is pure and fuzzed.
package dockerfile

import (
	"bytes"
	"errors"
	"fmt"
	"strings"

	"github.com/moby/buildkit/frontend/dockerfile/parser"
)

// Instruction is one Dockerfile instruction.
type Instruction struct {
	// Cmd is the upper-case instruction (RUN, FROM, ...).
	Cmd   string   `json:"cmd"`
	Args  []string `json:"args,omitempty"`
	Flags []string `json:"flags,omitempty"`
	// JSON says the exec (JSON array) form was used.
	JSON     bool   `json:"json,omitempty"`
	Original string `json:"original"`
	Line     int    `json:"line"`
}

// Dockerfile is the parsed file and what its last stage declares.
type Dockerfile struct {
	Instructions []Instruction `json:"instructions"`
	// From lists each stage's base image, in order; the last one is the
	// final image's base.
	From       []string `json:"from,omitempty"`
	Expose     []string `json:"expose,omitempty"`
	User       string   `json:"user,omitempty"`
	Entrypoint []string `json:"entrypoint,omitempty"`
	Cmd        []string `json:"cmd,omitempty"`
	Volumes    []string `json:"volumes,omitempty"`
	WorkDir    string   `json:"workdir,omitempty"`
}

// ErrSyntax wraps every parse failure.
var ErrSyntax = errors.New("dockerfile syntax")

const maxBytes = 1 << 20

// Parse parses a Dockerfile.
func Parse(src []byte) (*Dockerfile, error) {
	if len(src) > maxBytes {
		return nil, fmt.Errorf("%w: %d bytes (max %d)", ErrSyntax, len(src), maxBytes)
	}
	res, err := parser.Parse(bytes.NewReader(src))
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrSyntax, err)
	}
	df := &Dockerfile{}
	for _, n := range res.AST.Children {
		in := Instruction{
			Cmd:      strings.ToUpper(n.Value),
			Flags:    n.Flags,
			JSON:     n.Attributes["json"],
			Original: n.Original,
			Line:     n.StartLine,
		}
		for a := n.Next; a != nil; a = a.Next {
			in.Args = append(in.Args, a.Value)
		}
		df.Instructions = append(df.Instructions, in)
		switch in.Cmd {
		case "FROM":
			if len(in.Args) == 0 {
				return nil, fmt.Errorf("%w: line %d: FROM without an image", ErrSyntax, in.Line)
			}
			df.From = append(df.From, in.Args[0])
			// A new stage starts: its declarations replace the previous ones.
			df.Expose, df.User, df.Entrypoint, df.Cmd, df.Volumes, df.WorkDir = nil, "", nil, nil, nil, ""
		case "EXPOSE":
			df.Expose = append(df.Expose, in.Args...)
		case "USER":
			if len(in.Args) > 0 {
				df.User = in.Args[0]
			}
		case "ENTRYPOINT":
			df.Entrypoint = execForm(in)
		case "CMD":
			df.Cmd = execForm(in)
		case "VOLUME":
			df.Volumes = append(df.Volumes, in.Args...)
		case "WORKDIR":
			if len(in.Args) > 0 {
				df.WorkDir = in.Args[0]
			}
		}
	}
	if len(df.From) == 0 {
		return nil, fmt.Errorf("%w: no FROM instruction", ErrSyntax)
	}
	return df, nil
}

// execForm is the argv of ENTRYPOINT/CMD: the JSON form as given, the
// shell form as /bin/sh -c "<line>".
func execForm(in Instruction) []string {
	if in.JSON {
		return in.Args
	}
	return []string{"/bin/sh", "-c", strings.Join(in.Args, " ")}
}

// Base is the final stage's base image.
func (d *Dockerfile) Base() string {
	if len(d.From) == 0 {
		return ""
	}
	return d.From[len(d.From)-1]
}
