package responder

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/containsec/contain/analyzer"
	"github.com/containsec/contain/collector"
	"github.com/containsec/contain/enricher"
	"github.com/containsec/contain/internal/bus"
	"github.com/containsec/contain/internal/freezer"
	"github.com/containsec/contain/internal/testenv"
	"github.com/containsec/contain/schemas/containv1"
)

// BenchmarkExecToFrozen is issue 6's figure: the real pipeline (eBPF
// collector, enricher, analyzer, responder, embedded NATS) watches a runc
// container; after learning, each trial execs a binary never seen before
// (/bin/evil-<n>) and waits for the container to be paused. The latency is
// the action's latency_ns: from the exec event's wall time (stamped by the
// collector at sched_process_exec) to the verified freeze. Between trials
// the container is released (not timed). Every stage runs its default
// configuration (CONTAIN_BENCH_LOWLATENCY=1: collector flush 1 ms, no
// syscall tracking, one message per fetch). CONTAIN_BENCH_METHOD picks
// the freeze method ("interleave": the v1 freezer and cgroup.freeze on
// alternate trials, each method's percentiles reported apart; default:
// the configured order, v1 freezer first).
// Each hop's latency is reported too (hop_<stage>_<point>: from the point
// before, see hops), timed by a bus.Reporter's Trace. After each release
// the bench waits, untimed, for the trial's aftermath (settle): a second
// alert of the same exec (its first write) may be handled after the
// release and freeze the container again, which, not released, left the
// next trial's exec frozen before it ran ("no action published").
// CONTAIN_BENCH_RUNTIME=docker watches a docker container of the test
// engine instead (frozen by docker_methods, default docker-pause with the
// cgroup2 pre-freeze; CONTAIN_BENCH_PREFREEZE=0 turns that off), the
// trials exec'd through `docker exec`.
//
//	go test ./responder -run '^$' -bench ExecToFrozen -benchtime=200x
//	. /tmp/engines.env; CONTAIN_BENCH_RUNTIME=docker go test ./responder -run '^$' -bench ExecToFrozen -benchtime=100x
//
// benchInterleave as CONTAIN_BENCH_METHOD alternates the cgroup methods.
const benchInterleave = "interleave"

func BenchmarkExecToFrozen(b *testing.B) {
	testenv.RequireRoot(b)
	docker := os.Getenv("CONTAIN_BENCH_RUNTIME") == "docker"
	var eng testenv.Engines
	if docker {
		eng = testenv.RequireEngines(b)
	}
	h := start(b, func(c *Config) {
		c.MaxPausesPerMinute = 0
		c.ReleaseGrace = 0 // each trial releases, then triggers again
		c.Threshold = 0.5
		if docker {
			withEngines(eng, nil)(c)
			c.EnginePreFreeze = os.Getenv("CONTAIN_BENCH_PREFREEZE") != "0"
			if m := os.Getenv("CONTAIN_BENCH_METHOD"); m != "" {
				c.DockerMethods = []string{m}
			}
		} else if m := os.Getenv("CONTAIN_BENCH_METHOD"); m != "" && m != benchInterleave {
			c.Methods = []string{m}
		}
	})
	if os.Getenv("CONTAIN_BENCH_LOG") != "1" { // 1: the stages log to the benchmark's log
		h.r.log = testenv.Discard()
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	tr := newHopTracer()
	ctx = bus.WithReporter(ctx, &bus.Reporter{Trace: tr.trace, HealthBounds: bus.DefaultHealthConfig()})

	// The defaults, unless CONTAIN_BENCH_LOWLATENCY=1 asks for the
	// low-latency settings.
	defaults := os.Getenv("CONTAIN_BENCH_LOWLATENCY") != "1"
	col := collector.DefaultConfig()
	col.Host = testHost
	en := enricher.DefaultConfig()
	en.Registry.Enabled = false
	an := analyzer.DefaultConfig()
	an.Host = testHost
	an.LearningWindow = 3 * time.Second
	// Each trial's deviation runs through `runc exec`: an exec session,
	// scored as the container's own here so that it pauses.
	an.ExecSessions = analyzer.ExecSessionsContainer
	an.GroupWindow = 0
	if !defaults {
		col.FlushInterval = time.Millisecond
		col.Syscalls = false
		en.Fetch = 1
		an.Fetch = 1
	}
	log := testenv.Discard()
	if os.Getenv("CONTAIN_BENCH_LOG") == "1" {
		log = testenv.Logger(b)
	}
	c, err := collector.New(col, h.js, h.m, log)
	if err != nil {
		testenv.Unavailable(b, "the eBPF collector: "+err.Error())
	}
	e, err := enricher.New(en, h.js, h.m, log)
	if err != nil {
		b.Fatal(err)
	}
	a, err := analyzer.New(an, h.js, h.m, log)
	if err != nil {
		b.Fatal(err)
	}
	for _, run := range []func(context.Context) error{c.Run, e.Run, a.Run} {
		go func() { _ = run(ctx) }()
	}

	trials := b.N
	var id string
	var execIn func(exe string)
	if docker {
		dc := eng.DockerRun(b, "e2f-docker", nil, "/bin/sh", "-c", "while true; do /bin/sleep 0.2; done")
		thawOnCleanup(b, dc)
		id = dc.ID
		if _, err := eng.Docker("exec", id, "/bin/sh", "-c", fmt.Sprintf("i=0; while [ $i -lt %d ]; do ln -s busybox /bin/evil-$i; i=$((i+1)); done", trials)); err != nil {
			b.Fatal(err)
		}
		execIn = func(exe string) { _, _ = eng.Docker("exec", id, exe) }
	} else {
		ctr := testenv.RunContainer(b, "e2f", testenv.ContainerSpec{
			Args:        []string{"/bin/sh", "-c", "while true; do /bin/sleep 0.2; done"},
			Annotations: map[string]string{"org.opencontainers.image.ref.name": "bench/loop:1"},
		})
		id = ctr.ID
		for i := 0; i < trials; i++ {
			if err := os.Symlink("busybox", filepath.Join(ctr.Rootfs, "bin", fmt.Sprintf("evil-%d", i))); err != nil {
				b.Fatal(err)
			}
		}
		execIn = func(exe string) { _, _ = ctr.Exec(20*time.Second, exe) }
	}
	time.Sleep(an.LearningWindow + time.Second) // learning is a span of event time

	interleave := !docker && os.Getenv("CONTAIN_BENCH_METHOD") == benchInterleave
	byMethod := map[string][]int64{}
	var lat, respond, own, prep, freeze []int64
	var pending []*containv1.Event
	methods := map[string]int{}
	paused := 0    // PAUSE actions seen: one per alert the responder handled
	refreezes := 0 // containers frozen again by a trial's aftermath
	next := func() *containv1.Event {
		ev := h.nextOf(&pending)
		if ev.GetAction().Type == containv1.Action_TYPE_PAUSE {
			paused++
		}
		return ev
	}
	release := func() {
		if _, err := h.r.Release(context.Background(), ReleaseRequest{ContainerID: id, Actor: "bench", Reason: "next trial"}); err != nil {
			b.Fatal(err)
		}
	}
	// settle waits (untimed) for a trial's aftermath: its exec ended
	// (thawed by the release), every alert about the events until then
	// acted on, and the container released again if one of them froze it
	// again (another alert of the same exec, e.g. its first write, handled
	// after the release: ReleaseGrace is 0 here), so that the next
	// trial's exec does not start in a frozen container.
	settle := func(done <-chan struct{}) {
		select {
		case <-done:
		case <-time.After(30 * time.Second):
			b.Fatal("the trial's exec did not end after the release")
		}
		for {
			mark := time.Now().UnixNano()
			testenv.WaitFor(b, 10*time.Second, "the analyzer scoring past the trial", func() bool { return tr.scoredPast(mark) })
			refrozen := false
			for paused < tr.published() {
				ev := next()
				if a := ev.GetAction(); a.Type == containv1.Action_TYPE_PAUSE && a.Result == containv1.Action_RESULT_OK && ev.ContainerId == id {
					refrozen = true
					refreezes++
					release()
				}
			}
			if !refrozen {
				return
			}
		}
	}
	b.ResetTimer()
	for i := 0; i < trials; i++ {
		if interleave {
			h.r.actMu.Lock()
			h.r.cfg.Methods = []string{[]string{freezer.MethodV1Freezer, freezer.MethodV2Freeze}[i%2]}
			h.r.actMu.Unlock()
		}
		exe := fmt.Sprintf("/bin/evil-%d", i)
		done := make(chan struct{})
		go func() { defer close(done); execIn(exe) }()
		var act *containv1.Event
		for act == nil {
			ev := next()
			if ev.GetAction().Type == containv1.Action_TYPE_PAUSE && strings.Contains(ev.GetAction().Reason, exe) {
				act = ev
			}
		}
		b.StopTimer()
		if r := act.GetAction().Result; r != containv1.Action_RESULT_OK {
			b.Fatalf("trial %d: %v: %s", i, r, act.GetAction().Detail)
		}
		lat = append(lat, act.GetAction().LatencyNs)
		d := detail(b, act.GetAction())
		tr.trial(exe, act.GetAction(), d)
		respond = append(respond, d.AlertToFrozenUs*1000)
		own = append(own, d.ReceivedToFrozenUs*1000)
		prep = append(prep, d.ReceivedToFreezeUs*1000)
		freeze = append(freeze, d.FreezeUs*1000)
		if act.GetAction().Method != "" {
			methods[act.GetAction().Method]++
			byMethod[act.GetAction().Method] = append(byMethod[act.GetAction().Method], act.GetAction().LatencyNs)
		}
		release()
		settle(done)
		b.StartTimer()
	}
	b.StopTimer()
	percentiles(b, "exec_to_frozen", lat)
	percentiles(b, "alert_to_frozen", respond)
	percentiles(b, "responder_received_to_frozen", own)
	percentiles(b, "responder_received_to_freeze_write", prep)
	percentiles(b, "freeze_write_to_verified", freeze)
	tr.report(b)
	b.ReportMetric(float64(refreezes), "refrozen_after_release")
	b.Logf("frozen by %v", methods)
	if interleave {
		for m, l := range byMethod {
			percentiles(b, "exec_to_frozen_"+strings.ReplaceAll(m, "-", "_"), l)
		}
	}
}
