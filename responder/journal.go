package responder

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/containsec/contain/internal/logfields"
	"github.com/containsec/contain/internal/runtime"
	"github.com/containsec/contain/schemas/containv1"
)

// maxIntentBytes bounds an intent file read at start.
const maxIntentBytes = 1 << 20

// journal records, before each freeze, the intent to pause a container:
// <state_dir>/<host>/intents/<container id>.json, written before the
// freeze, synced after it and removed once the pause action is published. An
// intent left at start means the previous run stopped in between
// (recoverIntents). A nil journal (state_dir "none") records nothing.
type journal struct {
	dir string
}

// intent is one intent file.
type intent struct {
	ContainerID string    `json:"container_id"`
	ActionID    string    `json:"action_id"`
	At          time.Time `json:"at"`
	// Alert is the alert event, protobuf-encoded.
	Alert []byte `json:"alert"`
}

// openJournal makes <stateDir>/<host token>/intents.
func openJournal(stateDir, host string) (*journal, error) {
	if stateDir == StateDirNone {
		return nil, nil
	}
	dir := filepath.Join(stateDir, containv1.SubjectToken(host), "intents")
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("responder.state_dir: %w", err)
	}
	return &journal{dir: dir}, nil
}

// record writes the intent to act on alert ev with the action actionID
// (a temporary file renamed into place) and returns its path. It is not
// synced here: the freeze follows at once, and a file written and renamed
// survives a crash of the process (kill -9, a panic) in the page cache;
// sync makes it durable after the freeze, off the latency path (an fsync
// on a loaded disk takes 10-80 ms). A crash of the host itself thaws every
// container with it.
func (j *journal) record(ev *containv1.Event, actionID []byte) (string, error) {
	if j == nil {
		return "", nil
	}
	alert, err := proto.Marshal(ev)
	if err != nil {
		return "", fmt.Errorf("intent %s: %w", ev.ContainerId, err)
	}
	b, err := json.Marshal(intent{ContainerID: ev.ContainerId, ActionID: containv1.FormatID(actionID), At: time.Now().UTC(), Alert: alert})
	if err != nil {
		return "", fmt.Errorf("intent %s: %w", ev.ContainerId, err)
	}
	p := filepath.Join(j.dir, ev.ContainerId+".json")
	tmp := p + ".tmp"
	if err := os.WriteFile(tmp, b, 0o600); err != nil {
		_ = os.Remove(tmp)
		return "", fmt.Errorf("intent %s: %w", ev.ContainerId, err)
	}
	if err := os.Rename(tmp, p); err != nil {
		_ = os.Remove(tmp)
		return "", fmt.Errorf("intent %s: %w", ev.ContainerId, err)
	}
	return p, nil
}

// sync makes a recorded intent durable (file and directory fsynced).
func (j *journal) sync(p string) error {
	if j == nil || p == "" {
		return nil
	}
	f, err := os.Open(p)
	if err != nil {
		return fmt.Errorf("intent %s: %w", p, err)
	}
	err = f.Sync()
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = syncDir(j.dir)
	}
	if err != nil {
		return fmt.Errorf("intent %s: %w", p, err)
	}
	return nil
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	err = d.Sync()
	if cerr := d.Close(); err == nil {
		err = cerr
	}
	return err
}

// done removes published intents.
func (j *journal) done(paths []string, log *slog.Logger) {
	for _, p := range paths {
		if err := os.Remove(p); err != nil && !errors.Is(err, fs.ErrNotExist) {
			log.Error("removing a completed intent", logfields.Path, p, logfields.Err, err)
		}
	}
}

// pending reads the intents left by a previous run; unreadable ones are
// returned as errors (and left in place for an operator).
func (j *journal) pending() ([]pendingIntent, []error) {
	if j == nil {
		return nil, nil
	}
	ents, err := os.ReadDir(j.dir)
	if err != nil {
		return nil, []error{fmt.Errorf("intents: %w", err)}
	}
	var out []pendingIntent
	var errs []error
	for _, e := range ents {
		p := filepath.Join(j.dir, e.Name())
		if strings.HasSuffix(e.Name(), ".tmp") {
			_ = os.Remove(p) // never completed: no freeze followed it
			continue
		}
		if !strings.HasSuffix(e.Name(), ".json") {
			continue
		}
		in, err := readIntent(p)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		out = append(out, pendingIntent{path: p, alert: in})
	}
	return out, errs
}

type pendingIntent struct {
	path  string
	alert *containv1.Event
}

// readIntent decodes an intent file into its alert event.
func readIntent(p string) (*containv1.Event, error) {
	b, err := runtime.ReadFileBounded(p, maxIntentBytes)
	if err != nil {
		return nil, fmt.Errorf("intent %s: %w", p, err)
	}
	return decodeIntent(b)
}

// decodeIntent decodes an intent file into its alert: a valid alert event
// about the container the intent names.
func decodeIntent(b []byte) (*containv1.Event, error) {
	var in intent
	if err := json.Unmarshal(b, &in); err != nil {
		return nil, fmt.Errorf("intent: %w", err)
	}
	ev := &containv1.Event{}
	if err := proto.Unmarshal(in.Alert, ev); err != nil {
		return nil, fmt.Errorf("intent %s: alert: %w", in.ContainerID, err)
	}
	if ev.ContainerId == "" || ev.ContainerId != in.ContainerID || ev.GetAlert() == nil {
		return nil, fmt.Errorf("intent %s: the alert is not about this container", in.ContainerID)
	}
	return ev, nil
}
