package compose

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"testing"
)

const twoServices = `
services:
  web:
    image: shop/web:1.2
    ports: ["8080:80"]
    expose: ["9090"]
    links: ["db:database"]
    networks: [front, back]
    read_only: true
    tmpfs: ["/tmp:size=1m"]
    volumes:
      - cache:/var/cache/web
      - ./conf:/etc/web:ro
    user: "1000"
    cap_drop: [ALL]
    cap_add: [NET_BIND_SERVICE]
  db:
    image: postgres:16
    networks: [back]
    volumes: ["pgdata:/var/lib/postgresql/data"]
  worker:
    image: shop/worker:1
    depends_on: [db]
    networks: [back]
  lonely:
    image: busybox
    networks: [isolated]
networks:
  front: {}
  back: {}
  isolated: {}
volumes:
  cache: {}
  pgdata: {}
`

func TestLoadPeers(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "compose.yaml")
	if err := os.WriteFile(path, []byte(twoServices), 0o644); err != nil {
		t.Fatal(err)
	}
	p, err := Load(context.Background(), path)
	if err != nil {
		t.Fatal(err)
	}
	web, db, lonely := p.Services["web"], p.Services["db"], p.Services["lonely"]
	if web == nil || db == nil || lonely == nil {
		t.Fatalf("services %v", p.Services)
	}
	if len(web.Peers) != 2 || web.Peers[0].Service != "db" || !slices.Equal(web.Peers[0].Via, []string{"depends_on", "link", "network:back"}) ||
		web.Peers[1].Service != "worker" || !slices.Equal(web.Peers[1].Via, []string{"network:back"}) {
		t.Errorf("web peers %+v", web.Peers)
	}
	if len(db.Peers) != 2 || db.Peers[0].Service != "web" || !slices.Equal(db.Peers[0].Via, []string{"depended_on_by", "linked_by", "network:back"}) ||
		db.Peers[1].Service != "worker" || !slices.Equal(db.Peers[1].Via, []string{"depended_on_by", "network:back"}) {
		t.Errorf("db peers %+v", db.Peers)
	}
	if len(lonely.Peers) != 0 {
		t.Errorf("lonely peers %+v", lonely.Peers)
	}
	if !slices.Equal(web.Ports, []string{"80/tcp", "9090/tcp"}) || !web.ReadOnly || web.User != "1000" {
		t.Errorf("web ports %v read_only %v user %q", web.Ports, web.ReadOnly, web.User)
	}
	if !slices.Equal(web.Writable, []string{"/tmp", "/var/cache/web"}) {
		t.Errorf("web writable %v (read-only bind excluded)", web.Writable)
	}
	if !slices.Equal(web.CapDrop, []string{"ALL"}) || !slices.Equal(web.CapAdd, []string{"NET_BIND_SERVICE"}) {
		t.Errorf("caps %v %v", web.CapAdd, web.CapDrop)
	}
}

func TestLoadBad(t *testing.T) {
	for _, src := range []string{"services: [", "services:\n  a:\n    ports: [\"x:y:z:w\"]\n", "services:\n  a:\n    links: 3\n", "{}"} {
		if _, err := Parse(context.Background(), []byte(src), t.TempDir()); !errors.Is(err, ErrInvalid) {
			t.Errorf("Parse(%q): %v, want ErrInvalid", src, err)
		}
	}
	if _, err := Load(context.Background(), "/nonexistent/compose.yaml"); !errors.Is(err, ErrInvalid) {
		t.Errorf("missing file: %v", err)
	}
}

func FuzzParse(f *testing.F) {
	f.Add([]byte(twoServices))
	f.Add([]byte("services:\n  a:\n    image: x\n"))
	f.Add([]byte("x: ${"))
	dir := f.TempDir()
	f.Fuzz(func(t *testing.T, b []byte) {
		p, err := Parse(context.Background(), b, dir)
		if err != nil {
			return
		}
		for name, s := range p.Services {
			for _, peer := range s.Peers {
				if peer.Service == name || p.Services[peer.Service] == nil {
					t.Fatalf("bad peer %q of %q", peer.Service, name)
				}
			}
		}
	})
}
