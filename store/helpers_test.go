package store

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2"

	"github.com/containsec/contain/internal/testenv"
)

// testConfig points at the test ClickHouse with a fresh database that is
// dropped when the test ends.
func testConfig(t testing.TB) Config {
	t.Helper()
	addr := testenv.ClickHouseAddr(t)
	var b [6]byte
	_, _ = rand.Read(b[:])
	cfg := DefaultConfig()
	cfg.Addr = []string{addr}
	cfg.Database = "contain_test_" + hex.EncodeToString(b[:])
	cfg.InsertMaxAge = 100 * time.Millisecond
	cfg.RetryDelay = 100 * time.Millisecond
	cfg.InsertTimeout = 5 * time.Second
	cfg.AckWait = 15 * time.Second
	cfg.DialTimeout = time.Second
	t.Cleanup(func() { dropDatabase(t, addr, cfg.Database) })
	return cfg
}

func dropDatabase(t testing.TB, addr, db string) {
	conn, err := clickhouse.Open(&clickhouse.Options{Addr: []string{addr}, Settings: settings})
	if err != nil {
		t.Errorf("dropping %s: %v", db, err)
		return
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := conn.Exec(ctx, "DROP DATABASE IF EXISTS "+db); err != nil {
		t.Errorf("dropping %s: %v", db, err)
	}
}

// openStore opens a Store on cfg and fails the test if it is not ready.
func openStore(t testing.TB, cfg Config) *Store {
	t.Helper()
	s, err := Open(context.Background(), cfg, testenv.Logger(t))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	if !s.Ready() {
		t.Fatalf("store on %v not ready after Open", cfg.Addr)
	}
	return s
}

// queryUint runs a query returning one UInt64.
func queryUint(t testing.TB, s *Store, q string, args ...any) uint64 {
	t.Helper()
	var n uint64
	if err := s.Conn().QueryRow(context.Background(), q, args...).Scan(&n); err != nil {
		t.Fatalf("%s: %v", q, err)
	}
	return n
}

// switchProxy forwards TCP to a backend while up; while down its port
// refuses connections and the connections it carried are cut. It stands
// for a ClickHouse that goes away and comes back.
type switchProxy struct {
	t       testing.TB
	backend string
	addr    string

	mu    sync.Mutex
	ln    net.Listener
	conns map[net.Conn]struct{}
	hang  bool // accept connections but never answer

	sent atomic.Int64 // bytes the clients sent to the backend
}

func newSwitchProxy(t testing.TB, backend string) *switchProxy {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	p := &switchProxy{t: t, backend: backend, addr: addr, conns: map[net.Conn]struct{}{}}
	t.Cleanup(p.down)
	return p
}

func (p *switchProxy) up() { p.listen(false) }

// hangUp makes the port accept connections that never answer: a server
// that is stuck rather than gone.
func (p *switchProxy) hangUp() { p.listen(true) }

func (p *switchProxy) listen(hang bool) {
	p.down()
	p.mu.Lock()
	defer p.mu.Unlock()
	p.hang = hang
	var (
		ln  net.Listener
		err error
	)
	for range 50 { // the port may linger for a moment after close
		if ln, err = net.Listen("tcp", p.addr); err == nil {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	if err != nil {
		p.t.Fatalf("proxy listen %s: %v", p.addr, err)
	}
	p.ln = ln
	go p.accept(ln)
}

func (p *switchProxy) accept(ln net.Listener) {
	for {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		p.mu.Lock()
		hang := p.hang
		if hang {
			p.conns[c] = struct{}{}
		}
		p.mu.Unlock()
		if hang {
			go func() { _, _ = io.Copy(io.Discard, c) }()
			continue
		}
		b, err := net.Dial("tcp", p.backend)
		if err != nil {
			c.Close()
			continue
		}
		p.mu.Lock()
		if p.ln != ln {
			p.mu.Unlock()
			c.Close()
			b.Close()
			return
		}
		p.conns[c], p.conns[b] = struct{}{}, struct{}{}
		p.mu.Unlock()
		pipe := func(dst io.Writer, src net.Conn) {
			_, _ = io.Copy(dst, src)
			c.Close()
			b.Close()
		}
		go pipe(c, b)
		go pipe(countingWriter{b, &p.sent}, c)
	}
}

// countingWriter counts the bytes written through it.
type countingWriter struct {
	w io.Writer
	n *atomic.Int64
}

func (c countingWriter) Write(b []byte) (int, error) {
	n, err := c.w.Write(b)
	c.n.Add(int64(n))
	return n, err
}

func (p *switchProxy) down() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.ln != nil {
		p.ln.Close()
		p.ln = nil
	}
	for c := range p.conns {
		c.Close()
		delete(p.conns, c)
	}
}
