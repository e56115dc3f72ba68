package responder

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/containsec/contain/internal/bus"
	"github.com/containsec/contain/internal/metrics"
	"github.com/containsec/contain/internal/testenv"
	"github.com/containsec/contain/schemas/containv1"
)

// Environment of the re-exec'd test binary acting as the responder in
// TestCrashWindows.
const (
	crashChildPoint = "CONTAIN_TEST_RESPONDER_CRASH_AT"
	crashChildNATS  = "CONTAIN_TEST_RESPONDER_NATS"
	crashChildState = "CONTAIN_TEST_RESPONDER_STATE_DIR"
	crashLine       = "CRASH POINT "
)

func TestMain(m *testing.M) {
	if point := os.Getenv(crashChildPoint); point != "" {
		os.Exit(crashChild(point))
	}
	os.Exit(m.Run())
}

// crashChild runs a responder that, at the crash point, says so on stdout
// and waits for the parent's SIGKILL.
func crashChild(point string) int {
	log := slog.New(slog.NewTextHandler(os.Stderr, nil))
	crashHook = func(p string) {
		if p != point {
			return
		}
		fmt.Printf("%s%s\n", crashLine, p)
		time.Sleep(time.Minute) // killed here
		os.Exit(4)
	}
	nc, js, err := bus.Connect(os.Getenv(crashChildNATS), "crash-child", log)
	if err != nil {
		log.Error("connect", "err", err)
		return 2
	}
	defer nc.Close()
	cfg := DefaultConfig()
	cfg.Host = testHost
	cfg.StateDir = os.Getenv(crashChildState)
	cfg.Snapshot = false
	r, err := New(cfg, nc, js, metrics.New(), log)
	if err != nil {
		log.Error("new", "err", err)
		return 2
	}
	ctx, cancel := signal.NotifyContext(context.Background(), syscall.SIGTERM)
	defer cancel()
	ctx, cancelT := context.WithTimeout(ctx, time.Minute)
	defer cancelT()
	if err := r.Run(ctx); err != nil {
		log.Error("run", "err", err)
		return 3
	}
	return 0
}

// TestCrashWindows kills (SIGKILL) a responder process at each point of a
// pause, then starts another on the same NATS and state directory: the
// container ends up quarantined with exactly one PAUSE/OK action, and a
// redelivery of the alert changes nothing.
func TestCrashWindows(t *testing.T) {
	testenv.RequireRoot(t)
	if testenv.FreezerV1Root == "" && testenv.Cgroup2Root == "" {
		testenv.Unavailable(t, "a cgroup v1 freezer or cgroup2 mount")
	}
	for _, point := range []string{crashAfterIntent, crashAfterFreeze, crashBeforePublish} {
		t.Run(point, func(t *testing.T) { crashWindow(t, point) })
	}
}

func crashWindow(t *testing.T, point string) {
	url, nc, js := testenv.NATS(t)
	c := testenv.RunContainer(t, "crash", testenv.ContainerSpec{})
	state := t.TempDir()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), crashChildPoint+"="+point, crashChildNATS+"="+url, crashChildState+"="+state)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
		if t.Failed() {
			t.Logf("crashed responder's log:\n%s", stderr.String())
		}
	})
	testenv.WaitFor(t, 10*time.Second, "the child responder serving quarantine.list", func() bool {
		_, err := ListQuarantined(context.Background(), nc, testHost)
		return err == nil
	})

	h := &harness{t: t, nc: nc, js: js, ids: containv1.NewIDGen(), prod: bus.NewProducer(testHost, "analyzer")}
	al := h.alert(c.ID, 0.95)
	h.publish(al)
	reached := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			if p, ok := strings.CutPrefix(sc.Text(), crashLine); ok {
				reached <- p
				return
			}
		}
		close(reached)
	}()
	select {
	case p, ok := <-reached:
		if !ok || p != point {
			t.Fatalf("the child did not reach %s (got %q)", point, p)
		}
	case <-time.After(15 * time.Second):
		t.Fatalf("the child did not reach %s in 15 s", point)
	}
	if err := cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	_ = cmd.Wait()
	intent := filepath.Join(state, containv1.SubjectToken(testHost), "intents", c.ID+".json")
	if _, err := os.Stat(intent); err != nil {
		t.Fatalf("no intent left by the killed responder: %v", err)
	}
	if n := countActions(t, js, containv1.Action_TYPE_PAUSE, containv1.Action_RESULT_OK, c.ID); n != 0 {
		t.Fatalf("%d PAUSE/OK actions published before the kill, want 0", n)
	}
	frozenAtKill := freezerState(t, c) == "FROZEN"
	t.Logf("killed at %s: container frozen=%v", point, frozenAtKill)
	if point != crashAfterIntent && !frozenAtKill {
		t.Fatalf("killed after the freeze but the container is %s", freezerState(t, c))
	}

	// The restart: a responder on the same NATS and state directory.
	h2 := startOn(t, nc, js, func(cfg *Config) { cfg.StateDir = state; cfg.Snapshot = false })
	if point == crashAfterIntent && !frozenAtKill {
		// Rolled back: the alert is decided again when redelivered (after
		// ack_wait); the test redelivers it at once.
		h2.publish(al)
	}
	testenv.WaitFor(t, 10*time.Second, "the container in the quarantine list", func() bool {
		qs, err := ListQuarantined(context.Background(), nc, testHost)
		if err != nil {
			return false
		}
		for _, q := range qs {
			if q.ContainerID == c.ID && q.State == "frozen" {
				return true
			}
		}
		return false
	})
	testenv.WaitFor(t, 5*time.Second, "the intent removed", func() bool {
		_, err := os.Stat(intent)
		return os.IsNotExist(err)
	})
	// A redelivery of the alert (the killed run never acknowledged it) is
	// known answered by its id: no second decision, no second action.
	h2.publish(al)
	testenv.WaitFor(t, 10*time.Second, "the redelivered alert recognised as answered", func() bool {
		return testutil.ToFloat64(h2.m.Dropped.WithLabelValues(metrics.StageResponder, reasonDuplicateAlert)) >= 1
	})
	if n := actionsFor(t, js, al.Id); n != 1 {
		t.Fatalf("%d actions answer the alert, want 1", n)
	}
	if n := countActions(t, js, containv1.Action_TYPE_PAUSE, containv1.Action_RESULT_OK, c.ID); n != 1 {
		t.Fatalf("%d PAUSE/OK actions for %s, want exactly 1", n, c.ID)
	}
	if got := freezerState(t, c); got != "FROZEN" {
		t.Fatalf("container %s after the restart", got)
	}
	if _, err := h2.release(c.ID, "alice", "crash test done"); err != nil {
		t.Fatal(err)
	}
}

// countActions reads every action of testHost in CONTAIN_ACTIONS and counts
// those of the type and result about container id.
func countActions(t *testing.T, js jetstream.JetStream, typ containv1.Action_Type, res containv1.Action_Result, id string) int {
	t.Helper()
	ctx := context.Background()
	cons, err := js.OrderedConsumer(ctx, containv1.StreamActions, jetstream.OrderedConsumerConfig{
		FilterSubjects: []string{containv1.ActionsSubject(testHost)},
	})
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for {
		msg, err := cons.Next(jetstream.FetchMaxWait(200 * time.Millisecond))
		if err != nil {
			return n
		}
		b, err := bus.Decode(msg.Data())
		if err != nil {
			t.Fatal(err)
		}
		for _, ev := range b.Events {
			if a := ev.GetAction(); a != nil && a.Type == typ && a.Result == res && ev.ContainerId == id {
				n++
			}
		}
	}
}
