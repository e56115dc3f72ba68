package loadtest_test

import (
	"context"
	"fmt"
	"os"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/containsec/contain/internal/bus"
	"github.com/containsec/contain/internal/testenv"
	"github.com/containsec/contain/loadtest"
	"github.com/containsec/contain/schemas/containv1"
)

// TestNATSClusterNodeKilled runs the pipeline on a real three-node NATS
// cluster (nats-server processes, cluster routes, R3 streams and KV
// buckets), each stage connected through a different node and the
// generator through a third, and kills -9 the node the enricher and the
// store are connected to while events flow: every published event must
// still be exactly one distinct ClickHouse row and every deviation one
// alert. CONTAIN_TEST_CLUSTER_DURATION (e.g. 2m) runs longer than the
// default 10 s; CONTAIN_TEST_CLUSTER_KILL=n1 kills the analyzer's and
// responders' node instead.
func TestNATSClusterNodeKilled(t *testing.T) {
	chAddr := testenv.ClickHouseAddr(t)
	duration := 10 * time.Second
	if v := os.Getenv("CONTAIN_TEST_CLUSTER_DURATION"); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil {
			t.Fatalf("CONTAIN_TEST_CLUSTER_DURATION: %v", err)
		}
		duration = d
	}
	cl := testenv.StartNATSCluster(t, 3)
	n0, n1, n2 := cl.Nodes[0], cl.Nodes[1], cl.Nodes[2]
	victim := n0
	switch os.Getenv("CONTAIN_TEST_CLUSTER_KILL") {
	case "", "n0":
	case "n1":
		victim = n1
	default:
		t.Fatal("CONTAIN_TEST_CLUSTER_KILL: n0 (enricher, store) or n1 (analyzer, responders); n2 carries the test's own counting")
	}

	cfg := loadtest.DefaultConfig()
	cfg.Store.Addr = []string{chAddr}
	cfg.Store.Database = fmt.Sprintf("contain_cluster_%d", time.Now().UnixNano())
	cfg.Streams.Replicas = 3
	cfg.Enricher.KVReplicas = 3
	cfg.Analyzer.KVReplicas = 3
	// The victim's stages must move to the surviving nodes.
	cfg.NATS = loadtest.NATSURLs{
		Control:   n2.URL,
		Generator: n2.URL,
		Enricher:  n0.URL,
		Store:     n0.URL,
		Analyzer:  n1.URL,
		Responder: n1.URL,
	}
	cfg.Generator.Hosts = 2
	cfg.Generator.ContainersPerHost = 10
	cfg.Generator.Images = 4
	cfg.Generator.Rate = 1500
	cfg.Generator.Duration = duration
	cfg.Analyzer.LearningWindow = 2 * time.Second
	cfg.Generator.DeviateAfter = 3 * time.Second
	cfg.Generator.DeviationFraction = 0.002
	// A fetch whose reply dies with the victim leaves its messages unacked until
	// AckWait: shorter than the defaults (30 s, 60 s) to keep the test
	// short (store: flush + dial + 2 × insert timeouts < AckWait).
	cfg.Enricher.AckWait = 5 * time.Second
	cfg.Analyzer.AckWait = 5 * time.Second
	cfg.Store.InsertMaxAge, cfg.Store.DialTimeout, cfg.Store.InsertTimeout = time.Second, time.Second, 3*time.Second
	cfg.Store.AlertsInsertMaxAge = time.Second // the rule takes the longer age (5 × insert_max_age by default)
	cfg.Store.AckWait = 10 * time.Second
	cfg.DrainTimeout = 40 * time.Second

	// Kill the victim about 40% into the generator's run (the run starts
	// publishing once CONTAIN_RAW holds a message).
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	nc, js, err := bus.Connect(n2.URL, t.Name()+"-watch", testenv.Discard())
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	killed := make(chan time.Duration, 1)
	go func() {
		defer close(killed)
		var first time.Time
		for ctx.Err() == nil {
			s, err := js.Stream(ctx, containv1.StreamRaw)
			if err == nil {
				if info, err := s.Info(ctx); err == nil && info.State.Msgs > 0 {
					first = time.Now()
					break
				}
			}
			time.Sleep(50 * time.Millisecond)
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(duration * 4 / 10):
		}
		victim.Kill()
		killed <- time.Since(first)
	}()

	res := runLoad(t, ctx, cfg)
	logPending(t, res)
	at, ok := <-killed
	if !ok {
		t.Fatalf("the run ended before node %s was killed", victim.Name)
	}
	t.Logf("killed %s %v after the first event; published %d events, %d deviations", victim.Name, at.Round(time.Millisecond), res.Gen.Events, res.Gen.Deviations)
	// Batches redelivered because their ack or fetch reply died with the victim
	// are skipped by the store (it holds their rows): de-duplication, not
	// loss; the row counts below prove it.
	t.Logf("store skipped %v redelivered rows it already held", res.SkippedDuplicates)
	if err := res.Check(); err != nil {
		t.Fatal(err)
	}
	if res.Rows != res.RowsDistinct {
		t.Errorf("%d rows for %d distinct events: duplicates stored", res.Rows, res.RowsDistinct)
	}
	// A publish whose stream leader died waits out its attempt (5 s) before
	// it is retried on the new leader: the generator, paced by the clock,
	// loses that time. It must publish beyond the kill, though.
	if min := int64(cfg.Generator.Rate * duration.Seconds() / 3); res.Gen.Events < min {
		t.Fatalf("published only %d events in %v (want ≥ %d)", res.Gen.Events, res.Gen.Elapsed, min)
	}
	if res.Gen.Deviations == 0 {
		t.Fatal("no deviation was injected")
	}
	if res.AlertRows != uint64(res.Gen.Deviations) {
		t.Errorf("%d alert rows for %d deviations", res.AlertRows, res.Gen.Deviations)
	}
	// Alerts are counted from a core subscription: a publish retried
	// across the failover may be seen twice, never less than once.
	if res.Alerts < res.Gen.Deviations {
		t.Errorf("%d alerts received for %d deviations", res.Alerts, res.Gen.Deviations)
	}
}

// logPending logs, per sample, the consumers with messages pending and
// the stages' counts in: the timeline of the failover.
func logPending(t *testing.T, res *loadtest.Result) {
	t.Helper()
	if len(res.Samples) == 0 {
		return
	}
	var b strings.Builder
	t0 := res.Samples[0].At
	for _, s := range res.Samples {
		fmt.Fprintf(&b, "%5.1fs in enricher=%.0f store=%.0f pending:", s.At.Sub(t0).Seconds(), s.In["enricher"], s.In["store"])
		keys := make([]string, 0, len(s.Pending))
		for k, v := range s.Pending {
			if v > 0 {
				keys = append(keys, k)
			}
		}
		sort.Strings(keys)
		for _, k := range keys {
			fmt.Fprintf(&b, " %s=%d", k, s.Pending[k])
		}
		b.WriteByte('\n')
	}
	t.Log("timeline:\n" + b.String())
}
