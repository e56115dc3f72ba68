package runtime

import (
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"testing"

	bolt "go.etcd.io/bbolt"
)

// libpodCtrConfig is a trimmed podman 4.3 container config as stored in
// bolt_state.db (ctr/<id>/config), with its key names kept.
const libpodCtrConfig = `{"spec":{"ociVersion":"1.0.2-dev"},"id":"` + hex64 + `","name":"happy_turing","RawImageName":"localhost/contain/busybox:test","rootfsImageID":"1d6c332e5f5e8155f9d5d94dfa4a5abe961d5f967b3a5e25f1862461eaf33fef","rootfsImageName":"localhost/contain/busybox:test","pod":"p0d","labels":{"team":"payments"},"cgroupManager":"cgroupfs","cgroupParent":"/libpod_parent","runtime":"runc"}`

// writeLibpodDB lays out a libpod database under root holding ctr/<id>
// and pod/<pod> configs.
func writeLibpodDB(t testing.TB, root string, ctrs, pods map[string]string) string {
	t.Helper()
	p := libpodDB(root)
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		t.Fatal(err)
	}
	db, err := bolt.Open(p, 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	err = db.Update(func(tx *bolt.Tx) error {
		for bucket, m := range map[string]map[string]string{"ctr": ctrs, "pod": pods} {
			top, err := tx.CreateBucketIfNotExists([]byte(bucket))
			if err != nil {
				return err
			}
			for id, cfg := range m {
				b, err := top.CreateBucket([]byte(id))
				if err != nil {
					return err
				}
				if err := b.Put([]byte("config"), []byte(cfg)); err != nil {
					return err
				}
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func TestLookupLibpod(t *testing.T) {
	dir := t.TempDir()
	r := emptyReader(dir)
	writeFile(t, filepath.Join(dir, "var/lib/containers/storage/overlay-containers", hex64, "userdata/config.json"), podmanConfig)
	p := writeLibpodDB(t, r.StorageRoots[0], map[string]string{hex64: libpodCtrConfig}, map[string]string{"p0d": `{"id":"p0d","name":"web-pod"}`})
	info, err := r.Lookup(Ref{Runtime: Podman, ID: hex64})
	if err != nil {
		t.Fatal(err)
	}
	if info.Runtime != Podman || info.Name != "happy_turing" || info.Pod != "web-pod" || info.Labels["team"] != "payments" ||
		info.Labels[LabelImageRef] != "localhost/contain/busybox:test" || info.Labels["io.container.manager"] != "libpod" {
		t.Fatalf("info = %+v", info)
	}
	// Only in the database (no storage files), through runc's path.
	info, err = StateReader{StorageRoots: []string{r.StorageRoots[0]}}.Lookup(Ref{Runtime: Runc, ID: hex64})
	if err != nil || info.Runtime != Podman || info.Labels["team"] != "payments" {
		t.Fatalf("database only: %+v, %v", info, err)
	}
	// Another id: not found.
	if _, err := r.Lookup(Ref{Runtime: Podman, ID: "other"}); !errors.Is(err, ErrNotFound) || errors.Is(err, ErrIncomplete) {
		t.Fatalf("absent container: %v", err)
	}

	// podman holding the database (a writer's exclusive lock): Lookup does
	// not wait, returns what the files say and ErrIncomplete, which
	// callers reading again on ErrNotFound read again.
	db, err := bolt.Open(p, 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	info, err = r.Lookup(Ref{Runtime: Podman, ID: hex64})
	if !errors.Is(err, ErrIncomplete) || !errors.Is(err, ErrNotFound) {
		t.Fatalf("locked database: err %v, want ErrIncomplete", err)
	}
	if info.Runtime != Podman || info.Labels["io.container.manager"] != "libpod" || info.Labels["team"] != "" {
		t.Fatalf("locked database: info %+v", info)
	}
	db.Close()
	if info, err = r.Lookup(Ref{Runtime: Podman, ID: hex64}); err != nil || info.Labels["team"] != "payments" {
		t.Fatalf("after unlock: %+v, %v", info, err)
	}
}

func TestLookupLibpodCorrupt(t *testing.T) {
	dir := t.TempDir()
	r := emptyReader(dir)
	writeFile(t, libpodDB(r.StorageRoots[0]), "not a bolt database, but long enough to be read as one ........")
	if _, err := r.Lookup(Ref{Runtime: Podman, ID: hex64}); err == nil || errors.Is(err, ErrNotFound) {
		t.Fatalf("corrupt database: %v, want an error other than not found", err)
	}
	dir = t.TempDir()
	r = emptyReader(dir)
	writeLibpodDB(t, r.StorageRoots[0], map[string]string{hex64: `{"labels":[1]}`}, nil)
	if _, err := r.Lookup(Ref{Runtime: Podman, ID: hex64}); err == nil || errors.Is(err, ErrNotFound) {
		t.Fatalf("corrupt config: %v, want a parse error", err)
	}
}

func FuzzParseLibpodConfig(f *testing.F) {
	f.Add([]byte(libpodCtrConfig))
	f.Add([]byte(`{"id":"p0d","name":"web-pod","labels":null}`))
	f.Add([]byte(`{"labels":{"a":1}}`))
	f.Add([]byte(`[]`))
	f.Fuzz(func(t *testing.T, b []byte) {
		c, err := ParseLibpodConfig(b)
		if err != nil {
			return
		}
		out, err := json.Marshal(c)
		if err != nil {
			t.Fatal(err)
		}
		c2, err := ParseLibpodConfig(out)
		if err != nil || !reflect.DeepEqual(c, c2) {
			t.Fatalf("round trip: %+v -> %+v, %v", c, c2, err)
		}
	})
}

// FuzzLookupLibpodDB mutates a real bolt database's bytes: Lookup returns
// an error or an answer, never crashes or hangs, and a podman container it
// finds has labels.
func FuzzLookupLibpodDB(f *testing.F) {
	dir := f.TempDir()
	p := writeLibpodDB(f, dir, map[string]string{"x": libpodCtrConfig}, map[string]string{"p0d": `{"name":"w"}`})
	seed, err := os.ReadFile(p)
	if err != nil {
		f.Fatal(err)
	}
	f.Add(seed, 0, byte(0))
	f.Add(seed, 4096+16, byte(0xff))
	f.Add(seed, 2*4096+20, byte(7))
	f.Add(seed, 16384, byte(0))    // panicked in bbolt: "Page expected to be: 4"
	f.Add(seed, 16392, byte(0x80)) // panicked: "unexpected type/flags"
	f.Fuzz(func(t *testing.T, db []byte, at int, v byte) {
		if at >= 0 && at < len(db) {
			db = append([]byte(nil), db...)
			db[at] = v
		}
		root := t.TempDir()
		writeFile(t, libpodDB(root), string(db))
		info, err := StateReader{StorageRoots: []string{root}}.Lookup(Ref{Runtime: Runc, ID: "x"})
		if err == nil && info.Labels == nil {
			t.Fatalf("found without labels: %+v", info)
		}
	})
}
