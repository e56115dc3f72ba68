package dockerfile

import (
	"errors"
	"slices"
	"testing"
)

const sample = `# syntax=docker/dockerfile:1
FROM golang:1.22 AS build
RUN go build -o /out/app ./cmd/app

FROM debian:12
RUN apt-get install -y curl && \
    curl -fsSL https://get.example.com | sh
ADD https://example.com/tool.tgz /opt/
EXPOSE 8080/tcp 22
USER 1000:1000
WORKDIR /srv
VOLUME ["/data"]
ENTRYPOINT ["/usr/local/bin/app"]
CMD serve --port 1
`

func TestParse(t *testing.T) {
	df, err := Parse([]byte(sample))
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(df.From, []string{"golang:1.22", "debian:12"}) || df.Base() != "debian:12" {
		t.Errorf("from %v", df.From)
	}
	if !slices.Equal(df.Expose, []string{"8080/tcp", "22"}) || df.User != "1000:1000" || df.WorkDir != "/srv" {
		t.Errorf("expose %v user %q workdir %q", df.Expose, df.User, df.WorkDir)
	}
	if !slices.Equal(df.Entrypoint, []string{"/usr/local/bin/app"}) || !slices.Equal(df.Cmd, []string{"/bin/sh", "-c", "serve --port 1"}) {
		t.Errorf("entrypoint %q cmd %q", df.Entrypoint, df.Cmd)
	}
	if !slices.Equal(df.Volumes, []string{"/data"}) {
		t.Errorf("volumes %v", df.Volumes)
	}
	var run *Instruction
	for i := range df.Instructions {
		if df.Instructions[i].Cmd == "RUN" && df.Instructions[i].Line == 6 {
			run = &df.Instructions[i]
		}
	}
	if run == nil || len(run.Args) != 1 || run.Args[0] == "" {
		t.Fatalf("RUN at line 6 not found: %+v", df.Instructions)
	}
}

func TestParseBad(t *testing.T) {
	for _, src := range []string{"", "RUN echo no from\n", "FROM\n", "FROM x\nRUN <<EOF\n"} {
		if _, err := Parse([]byte(src)); !errors.Is(err, ErrSyntax) {
			t.Errorf("Parse(%q): %v, want ErrSyntax", src, err)
		}
	}
}

func FuzzParse(f *testing.F) {
	f.Add([]byte(sample))
	f.Add([]byte("FROM a\nRUN <<EOF\nx\nEOF\n"))
	f.Add([]byte("\\\n"))
	f.Fuzz(func(t *testing.T, b []byte) {
		df, err := Parse(b)
		if err == nil && len(df.From) == 0 {
			t.Fatal("accepted a Dockerfile without FROM")
		}
	})
}
