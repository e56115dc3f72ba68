package runtime

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"runtime/debug"
	"time"

	bolt "go.etcd.io/bbolt"
	bolterrors "go.etcd.io/bbolt/errors"
)

// ErrIncomplete means a container's state exists but part of it could not
// be read now (libpod's database was locked by a podman command). It wraps
// ErrNotFound, so callers that read again on ErrNotFound read again; the
// Info returned with it holds what was read.
var ErrIncomplete = fmt.Errorf("container state incomplete, read again: %w", ErrNotFound)

// LabelPodmanPod is the name of the podman pod a container belongs to
// (libpod's pod config); Info.Pod is set from it.
const LabelPodmanPod = "io.contain.podman.pod"

// LibpodConfig is the part of libpod's container config that names a
// container: the JSON under bucket "ctr", sub-bucket <id>, key "config" of
// podman 4's bolt_state.db (<graph root>/libpod/bolt_state.db). It is the
// only place podman keeps a container's labels (`podman run --label`):
// neither the OCI config.json nor containers.json carry them.
type LibpodConfig struct {
	ID              string            `json:"id"`
	Name            string            `json:"name"`
	Pod             string            `json:"pod"`
	Namespace       string            `json:"namespace"`
	RawImageName    string            `json:"RawImageName"`
	RootfsImageName string            `json:"rootfsImageName"`
	RootfsImageID   string            `json:"rootfsImageID"`
	Labels          map[string]string `json:"labels"`
}

// ParseLibpodConfig parses a libpod container (or pod: id, name, labels)
// config.
func ParseLibpodConfig(b []byte) (LibpodConfig, error) {
	var c LibpodConfig
	if err := json.Unmarshal(b, &c); err != nil {
		return c, fmt.Errorf("libpod config: %w", err)
	}
	return c, nil
}

// libpodDB is libpod's bolt database under a containers/storage graph
// root.
func libpodDB(root string) string {
	return filepath.Join(root, "libpod", "bolt_state.db")
}

// maxLibpodDBBytes bounds the database opened (it is mapped, not read).
const maxLibpodDBBytes = 256 << 20

// readLibpodConfig reads container id's config, and its pod's when it has
// one, from the bolt database at p without waiting for podman: a database
// locked by a running podman command gives ErrIncomplete (podman holds the
// lock only during a command; the caller reads again). ok is false when
// the database or the container is absent.
//
// bbolt trusts the file: a corrupt one makes it panic or read past its
// mapping (measured with FuzzLookupLibpodDB). Both become an error here:
// faults in this goroutine panic instead of killing the process
// (debug.SetPanicOnFault), and the panic is recovered.
func readLibpodConfig(p, id string) (c LibpodConfig, pod LibpodConfig, ok bool, err error) {
	defer debug.SetPanicOnFault(debug.SetPanicOnFault(true))
	defer func() {
		if r := recover(); r != nil {
			c, pod, ok, err = LibpodConfig{}, LibpodConfig{}, false, fmt.Errorf("%s: corrupt database: %v", p, r)
		}
	}()
	fi, err := os.Stat(p)
	if errors.Is(err, fs.ErrNotExist) {
		return c, pod, false, nil
	}
	if err != nil {
		return c, pod, false, err
	}
	if fi.Size() > maxLibpodDBBytes {
		return c, pod, false, fmt.Errorf("%s: larger than %d bytes", p, maxLibpodDBBytes)
	}
	// A shared lock, tried once (bbolt gives up at once when Timeout is
	// below its 50 ms retry period).
	db, err := bolt.Open(p, 0, &bolt.Options{ReadOnly: true, Timeout: time.Nanosecond})
	if errors.Is(err, bolterrors.ErrTimeout) {
		return c, pod, false, fmt.Errorf("%s locked by podman: %w", p, ErrIncomplete)
	}
	if err != nil {
		return c, pod, false, fmt.Errorf("opening %s: %w", p, err)
	}
	defer db.Close()
	err = db.View(func(tx *bolt.Tx) error {
		b := libpodConfigOf(tx, "ctr", id)
		if b == nil {
			return nil
		}
		ok = true
		var err error
		if c, err = ParseLibpodConfig(b); err != nil {
			return fmt.Errorf("container %s: %w", id, err)
		}
		if c.Pod != "" {
			if pb := libpodConfigOf(tx, "pod", c.Pod); pb != nil {
				pod, _ = ParseLibpodConfig(pb) // the container's own names stand without it
			}
		}
		return nil
	})
	if err != nil {
		return c, pod, ok, fmt.Errorf("%s: %w", p, err)
	}
	return c, pod, ok, nil
}

// libpodConfigOf returns the config value of bucket/<id>, copied out of
// the mapping; nil when absent.
func libpodConfigOf(tx *bolt.Tx, bucket, id string) []byte {
	top := tx.Bucket([]byte(bucket))
	if top == nil {
		return nil
	}
	b := top.Bucket([]byte(id))
	if b == nil {
		return nil
	}
	v := b.Get([]byte("config"))
	if v == nil || len(v) > maxStateBytes {
		return nil
	}
	return append([]byte(nil), v...)
}

// readLibpod adds what libpod's database knows of id (labels, name,
// image, pod) to info, under each storage root holding one.
func (r StateReader) readLibpod(id string, info *Info) (bool, error) {
	found := false
	for _, root := range r.StorageRoots {
		if root == "" {
			continue
		}
		c, pod, ok, err := readLibpodConfig(libpodDB(root), id)
		if err != nil {
			return found, err
		}
		if !ok {
			continue
		}
		found = true
		for k, v := range c.Labels {
			setIfAbsent(info, k, v)
		}
		setIdentity(info, LabelContainerName, c.Name)
		setIdentity(info, LabelImageRef, firstNonEmpty(c.RootfsImageName, c.RawImageName))
		setIdentity(info, LabelImageID, c.RootfsImageID)
		setIdentity(info, LabelPodmanPod, pod.Name)
		if info.Runtime == Runc || info.Runtime == CRI || info.Runtime == "" {
			info.Runtime = Podman
		}
	}
	return found, nil
}
