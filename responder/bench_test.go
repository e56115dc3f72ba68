package responder

import (
	"context"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/containsec/contain/internal/engines"
	"github.com/containsec/contain/internal/freezer"
	"github.com/containsec/contain/internal/testenv"
	"github.com/containsec/contain/schemas/containv1"
)

// percentiles reports p50 and p99 of samples (ns) as benchmark metrics.
func percentiles(b *testing.B, unit string, samples []int64) {
	if len(samples) == 0 {
		return
	}
	slices.Sort(samples)
	at := func(q float64) float64 { return float64(samples[min(len(samples)-1, int(q*float64(len(samples))))]) }
	b.ReportMetric(at(0.50)/1e3, "p50_"+unit+"_us")
	b.ReportMetric(at(0.99)/1e3, "p99_"+unit+"_us")
	b.ReportMetric(float64(samples[len(samples)-1])/1e3, "max_"+unit+"_us")
}

// BenchmarkAlertToFrozen measures the responder's whole path on a real runc
// container: an alert published to JetStream (its trigger stamped with the
// wall time just before publishing) → consumed → policy → located →
// frozen through the v1 freezer and verified. latency_ns of the action is
// that span. The container is released between trials (not timed). Use
// -benchtime=200x for 200 trials.
func BenchmarkAlertToFrozen(b *testing.B) {
	for _, method := range []string{freezer.MethodV1Freezer, freezer.MethodV2Freeze} {
		b.Run(method, func(b *testing.B) {
			h := start(b, func(c *Config) {
				c.MaxPausesPerMinute = 0
				c.Methods = []string{method}
			})
			h.r.log = testenv.Discard()
			c := testenv.RunContainer(b, "bench", testenv.ContainerSpec{})
			var lat, freeze []int64
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				al := h.alert(c.ID, 1)
				al.GetAlert().Trigger.WallNs = time.Now().UnixNano()
				h.publish(al)
				a := wantAction(b, h.next(), containv1.Action_TYPE_PAUSE, containv1.Action_RESULT_OK, c.ID)
				b.StopTimer()
				lat = append(lat, a.LatencyNs)
				freeze = append(freeze, detail(b, a).FreezeUs*1000)
				if _, err := h.r.Release(context.Background(), ReleaseRequest{ContainerID: c.ID, Actor: "bench", Reason: "next trial"}); err != nil {
					b.Fatal(err)
				}
				h.next() // the release action
				b.StartTimer()
			}
			b.StopTimer()
			percentiles(b, "alert_to_frozen", lat)
			percentiles(b, "freeze_write_to_verified", freeze)
		})
	}
}

// BenchmarkFreezeThaw measures one method's freeze (write or engine call →
// verified, with the populated checks; for the engine methods the engine's
// view and the cgroup) on a real container, without NATS: runc containers
// for the cgroup and runc methods, a docker container for docker-pause
// (and the v1 freezer on the same container, for comparison), a
// containerd container for containerd-pause. Thaw is not timed.
//
//	. /tmp/engines.env; go test ./responder -run '^$' -bench FreezeThaw -benchtime=200x
func BenchmarkFreezeThaw(b *testing.B) {
	testenv.RequireRoot(b)
	c := testenv.RunContainer(b, "ft", testenv.ContainerSpec{})
	cfg := DefaultConfig()
	for _, name := range freezer.MethodNames() {
		b.Run(name, func(b *testing.B) { benchFreeze(b, cfg, freezer.Engines{}, name, c.ID) })
	}
	for _, tc := range []struct {
		name, method string
		pre          bool
	}{
		{"docker/" + freezer.MethodDockerPause, freezer.MethodDockerPause, false},
		{"docker/" + freezer.MethodDockerPause + "+pre-freeze", freezer.MethodDockerPause, true},
		{"docker/" + freezer.MethodV1Freezer, freezer.MethodV1Freezer, false},
		{"containerd/" + freezer.MethodContainerdPause, freezer.MethodContainerdPause, false},
		{"containerd/" + freezer.MethodContainerdPause + "+pre-freeze", freezer.MethodContainerdPause, true},
	} {
		b.Run(tc.name, func(b *testing.B) {
			e := testenv.RequireEngines(b)
			withEngines(e, nil)(&cfg)
			eng := freezer.Engines{Timeout: cfg.EngineTimeout, PreFreeze: tc.pre}
			var id string
			if strings.HasPrefix(tc.name, "docker/") {
				d, err := engines.NewDocker(e.DockerHost, 0)
				if err != nil {
					b.Fatal(err)
				}
				defer d.Close()
				eng.Docker = d
				id = e.DockerRun(b, "ft-docker", nil).ID
			} else {
				cd, err := engines.NewContainerd(e.Containerd, 0)
				if err != nil {
					b.Fatal(err)
				}
				defer cd.Close()
				eng.Containerd = cd
				id = e.ContainerdRun(b, "ft-ctd", nil).ID
			}
			benchFreeze(b, cfg, eng, tc.method, id)
		})
	}
}

func benchFreeze(b *testing.B, cfg Config, eng freezer.Engines, name, id string) {
	ms, err := freezer.NewMethodsWith([]string{name}, cfg.roots(), cfg.RuncBinary, eng)
	if err != nil {
		b.Fatal(err)
	}
	t, err := freezer.Locate(cfg.roots(), id)
	if err != nil {
		b.Fatal(err)
	}
	if !ms[0].Applies(t) {
		testenv.Unavailable(b, name+" does not apply on this host")
	}
	var lat, contained []int64
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		start := time.Now()
		rep, err := freezer.FreezeReport(context.Background(), ms, t)
		if err != nil {
			b.Fatal(err)
		}
		lat = append(lat, int64(time.Since(start)))
		contained = append(contained, int64(rep.FrozenAt.Sub(start)))
		b.StopTimer()
		if err := ms[0].Thaw(context.Background(), t); err != nil {
			b.Fatal(err)
		}
		b.StartTimer()
	}
	b.StopTimer()
	percentiles(b, "freeze", lat)
	percentiles(b, "contained", contained)
}
