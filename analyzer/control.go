package analyzer

import (
	"context"
	"errors"
	"fmt"
	"io"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/containsec/contain/internal/auth"
)

// The functions below back `contain baseline list|show|export|import|
// lock|unlock|reset`. They work on the baselines bucket directly; a
// running analyzer applies lock, unlock, reset and import as soon as it
// sees the update, and on its next start otherwise.

// openExisting opens the baselines bucket without creating or updating
// it: the operator's and reader's credentials may not.
func openExisting(ctx context.Context, js jetstream.JetStream, bucket string) (*Store, error) {
	kv, err := js.KeyValue(ctx, bucket)
	if err != nil {
		return nil, fmt.Errorf("baselines bucket %s: %w (has an analyzer run yet?)", bucket, err)
	}
	return &Store{kv: kv}, nil
}

// OpenBaselines opens the existing baselines bucket read-only (an
// operator's or reader's credentials suffice); its History lists a
// baseline's stored versions.
func OpenBaselines(ctx context.Context, js jetstream.JetStream, bucket string) (*Store, error) {
	return openExisting(ctx, js, bucket)
}

// ListBaselines summarizes the stored baselines.
func ListBaselines(ctx context.Context, js jetstream.JetStream, bucket string) ([]Summary, error) {
	st, err := openExisting(ctx, js, bucket)
	if err != nil {
		return nil, err
	}
	return st.List(ctx)
}

// GetBaseline reads and verifies one stored baseline.
func GetBaseline(ctx context.Context, js jetstream.JetStream, bucket, key string) (*Doc, error) {
	st, err := openExisting(ctx, js, bucket)
	if err != nil {
		return nil, err
	}
	return st.Get(ctx, key)
}

// Export formats.
const (
	FormatYAML    = "yaml"
	FormatJSON    = "json"
	FormatSeccomp = "seccomp"
)

// ExportBaseline writes the stored baseline of key to w as YAML (for
// review and `import`), JSON, or an OCI seccomp profile of its syscalls.
func ExportBaseline(ctx context.Context, js jetstream.JetStream, bucket, key, format string, w io.Writer) error {
	d, err := GetBaseline(ctx, js, bucket, key)
	if err != nil {
		return err
	}
	return WriteDoc(w, d, format)
}

// WriteDoc writes d in format (yaml, json or seccomp).
func WriteDoc(w io.Writer, d *Doc, format string) error {
	switch format {
	case FormatYAML, "":
		return WriteYAML(w, d)
	case FormatJSON:
		raw, err := MarshalJSONDoc(d)
		if err != nil {
			return err
		}
		_, err = w.Write(append(raw, '\n'))
		return err
	case FormatSeccomp:
		return WriteSeccomp(w, d, SeccompOptions{})
	}
	return fmt.Errorf("unknown export format %q (yaml, json, seccomp)", format)
}

// ImportBaseline reads a YAML baseline (as exported, possibly reviewed)
// and stores it, signed by signer; a running analyzer replaces its copy.
func ImportBaseline(ctx context.Context, js jetstream.JetStream, bucket string, r io.Reader, signer *auth.Signer) (*Doc, error) {
	d, err := ReadYAML(r)
	if err != nil {
		return nil, err
	}
	st, err := openExisting(ctx, js, bucket)
	if err != nil {
		return nil, err
	}
	if err := signOp(d, "import", signer); err != nil {
		return nil, err
	}
	if _, err := st.Save(ctx, d); err != nil {
		return nil, err
	}
	return d, nil
}

func applyStored(ctx context.Context, js jetstream.JetStream, bucket, key, op string, signer *auth.Signer) error {
	if signer == nil {
		return errors.New("baseline " + op + ": operator credentials are required to sign the operation")
	}
	st, err := openExisting(ctx, js, bucket)
	if err != nil {
		return err
	}
	d, err := st.Get(ctx, key)
	if err != nil {
		return err
	}
	e, err := NewEngine(DefaultConfig(), nil)
	if err != nil {
		return err
	}
	if err := e.Load(d); err != nil {
		return err
	}
	switch op {
	case "lock":
		err = e.Lock(key)
	case "unlock":
		err = e.Unlock(key)
	case "reset":
		err = e.Reset(key)
	default:
		err = errors.New("unknown op " + op)
	}
	if err != nil {
		return err
	}
	nd, _ := e.Snapshot(key)
	if err := signOp(nd, op, signer); err != nil {
		return err
	}
	_, err = st.Save(ctx, nd)
	return err
}

// LockBaseline (like UnlockBaseline and ResetBaseline) is signed by
// signer; the analyzer records the signer as the operation's actor.
// LockBaseline locks the baseline of key.
func LockBaseline(ctx context.Context, js jetstream.JetStream, bucket, key string, signer *auth.Signer) error {
	return applyStored(ctx, js, bucket, key, "lock", signer)
}

// UnlockBaseline makes the baseline of key learn again from its next event.
func UnlockBaseline(ctx context.Context, js jetstream.JetStream, bucket, key string, signer *auth.Signer) error {
	return applyStored(ctx, js, bucket, key, "unlock", signer)
}

// ResetBaseline forgets what the baseline of key learned.
func ResetBaseline(ctx context.Context, js jetstream.JetStream, bucket, key string, signer *auth.Signer) error {
	return applyStored(ctx, js, bucket, key, "reset", signer)
}
