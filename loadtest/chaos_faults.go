package loadtest

import (
	"context"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/containsec/contain/internal/auth"
	"github.com/containsec/contain/internal/bus"
	"github.com/containsec/contain/internal/logfields"
	"github.com/containsec/contain/internal/metrics"
	"github.com/containsec/contain/schemas/containv1"
)

// faults injects one fault every FaultEvery, the kinds in turn, until ctx
// ends; it returns how many it injected.
func (r *chaosRun) faults(ctx context.Context) int {
	t := time.NewTicker(r.cfg.FaultEvery)
	defer t.Stop()
	n := 0
	for {
		select {
		case <-ctx.Done():
			return n
		case <-t.C:
		}
		kind := r.cfg.Faults[n%len(r.cfg.Faults)]
		start := time.Now()
		what, err := r.fault(ctx, kind)
		n++
		line := fmt.Sprintf("%s: %s (%v)", kind, what, time.Since(start).Round(time.Millisecond))
		if err != nil {
			line = fmt.Sprintf("%s: FAILED: %v", kind, err)
			r.log.Error("chaos: fault", logfields.Err, err)
		}
		r.log.Info("chaos: fault", logfields.Reason, line)
		r.mu.Lock()
		r.faultLog = append(r.faultLog, line)
		r.mu.Unlock()
	}
}

// fault injects one fault of kind and says what it did.
func (r *chaosRun) fault(ctx context.Context, kind string) (string, error) {
	switch kind {
	case FaultKillEnricher, FaultKillAnalyzer, FaultKillStore, FaultKillResponder:
		name := strings.TrimPrefix(kind, "kill-")
		if name == "responder" {
			name = "responder-" + r.hosts[0]
		}
		return r.killStage(ctx, name)
	case FaultRestartNATS:
		r.mu.Lock()
		defer r.mu.Unlock()
		r.nats.Kill()
		if err := r.nats.Restart(); err != nil {
			return "", err
		}
		return "nats-server killed -9 and restarted", r.waitJetStream(ctx)
	case FaultClickHouseDown:
		r.proxy.Cut(true)
		r.chDown.Add(1)
		go func() {
			defer r.chDown.Done()
			time.Sleep(r.cfg.ClickHouseDown)
			r.proxy.Cut(false)
			r.log.Info("chaos: clickhouse reachable again")
		}()
		return fmt.Sprintf("store cut from ClickHouse for %v", r.cfg.ClickHouseDown), nil
	case FaultDiskFull:
		return r.diskFull(ctx)
	case FaultPoison:
		return r.publishPoison(ctx)
	case FaultOversize:
		return r.oversize(ctx)
	}
	return "", fmt.Errorf("unknown fault %q", kind)
}

// killStage kills a stage -9, leaves it down RestartAfter and restarts it.
func (r *chaosRun) killStage(ctx context.Context, name string) (string, error) {
	s := r.stage(name)
	if s == nil {
		return "", fmt.Errorf("no stage %s", name)
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	s.Kill()
	select {
	case <-ctx.Done():
	case <-time.After(r.cfg.RestartAfter):
	}
	if err := s.Restart(); err != nil {
		return "", err
	}
	return fmt.Sprintf("%s killed -9, restarted after %v", name, r.cfg.RestartAfter), nil
}

// waitJetStream waits until the server answers JetStream requests.
func (r *chaosRun) waitJetStream(ctx context.Context) error {
	return waitFor(ctx, time.Minute, "JetStream after a restart", func() error {
		nc, js, err := connectAs(r.nats.url, r.credsDir, auth.RoleAdmin, r.log)
		if err != nil {
			return err
		}
		defer nc.Close()
		_, err = js.AccountInfo(ctx)
		return err
	})
}

// diskFull fills JetStream's file system for DiskFullFor, frees it and
// restarts the server, as an operator would: nats-server's file store
// keeps a stream's write error (ENOSPC) until restarted, while JetStream
// itself still answers (docs/design/012-chaos.md).
func (r *chaosRun) diskFull(ctx context.Context) (string, error) {
	if !r.nats.tmpfs {
		return "skipped (no tmpfs)", nil
	}
	logFile := r.nats.spec.LogFile
	before := fileSize(logFile)
	undo, err := r.nats.fill()
	if err != nil {
		return "", err
	}
	select {
	case <-ctx.Done():
	case <-time.After(r.cfg.DiskFullFor):
	}
	undo()
	what := fmt.Sprintf("JetStream store full for %v", r.cfg.DiskFullFor)
	if tail := readFrom(logFile, before); strings.Contains(tail, "no space left on device") {
		what += " (writes failed: no space left on device)"
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if err := r.nats.Restart(); err != nil {
		return "", err
	}
	return what + ", freed, nats-server restarted", r.waitJetStream(ctx)
}

func fileSize(path string) int64 {
	fi, err := os.Stat(path)
	if err != nil {
		return 0
	}
	return fi.Size()
}

// readFrom reads path from offset (at most 1 MB).
func readFrom(path string, offset int64) string {
	f, err := os.Open(path)
	if err != nil {
		return ""
	}
	defer f.Close()
	b := make([]byte, 1<<20)
	n, _ := f.ReadAt(b, offset)
	return string(b[:n])
}

// collectorConn connects as host 0's collector.
func (r *chaosRun) collectorConn() (*nats.Conn, jetstream.JetStream, error) {
	return connectAs(r.nats.url, r.credsDir, auth.UserName(auth.RoleCollector, r.hosts[0]), r.log)
}

// publishPoison publishes, as host 0's collector, messages that are no
// batch: garbage, a truncated batch and an empty message.
func (r *chaosRun) publishPoison(ctx context.Context) (string, error) {
	nc, js, err := r.collectorConn()
	if err != nil {
		return "", err
	}
	defer nc.Close()
	good, err := bus.Encode(bus.NewProducer(r.hosts[0], metrics.StageCollector).Batch([]*containv1.Event{{
		Id: containv1.NewIDGen().Next(), Host: r.hosts[0], Kind: containv1.Kind_KIND_EXEC, WallNs: time.Now().UnixNano(),
		Body: &containv1.Event_Exec{Exec: &containv1.Exec{Filename: "/bin/true", Argv: []string{"/bin/true"}}},
	}}))
	if err != nil {
		return "", err
	}
	payloads := [][]byte{[]byte("\xff\xfe not a batch \x00"), good[:len(good)/2], {0x0a, 0xff, 0xff, 0xff, 0xff, 0x0f}}
	subject := containv1.RawSubject(r.hosts[0])
	for i, p := range payloads {
		msg := nats.NewMsg(subject)
		msg.Data = p
		msg.Header.Set(nats.MsgIdHdr, fmt.Sprintf("chaos-poison-%d-%d", time.Now().UnixNano(), i))
		pctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		_, err := js.PublishMsg(pctx, msg)
		cancel()
		if err != nil {
			return "", fmt.Errorf("publishing poison: %w", err)
		}
		r.mu.Lock()
		r.poison++
		r.mu.Unlock()
	}
	return fmt.Sprintf("%d poison messages on %s", len(payloads), subject), nil
}

// oversize makes the generator's next batch of host 0 OversizeEvents
// events (accepted, counted as published) and publishes one batch over the
// server's max_payload (refused: a permanent error, not published).
func (r *chaosRun) oversize(ctx context.Context) (string, error) {
	r.gen.Oversize(r.cfg.OversizeEvents)
	nc, js, err := r.collectorConn()
	if err != nil {
		return "", err
	}
	defer nc.Close()
	huge := strings.Repeat("A", int(nc.MaxPayload())+1)
	b := bus.NewProducer(r.hosts[0], metrics.StageCollector).Batch([]*containv1.Event{{
		Id: containv1.NewIDGen().Next(), Host: r.hosts[0], Kind: containv1.Kind_KIND_EXEC, WallNs: time.Now().UnixNano(),
		Body: &containv1.Event_Exec{Exec: &containv1.Exec{Filename: "/bin/huge", Argv: []string{huge}}},
	}})
	pctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	err = bus.Publish(pctx, js, containv1.RawSubject(r.hosts[0]), b)
	cancel()
	if err == nil {
		return "", fmt.Errorf("a %d-byte batch over max_payload %d was accepted", len(huge), nc.MaxPayload())
	}
	r.mu.Lock()
	r.refused++
	r.mu.Unlock()
	return fmt.Sprintf("next batch of %s holds %d events; a batch over max_payload refused: %v", r.hosts[0], r.cfg.OversizeEvents, err), nil
}
