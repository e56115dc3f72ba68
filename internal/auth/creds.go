package auth

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/nats-io/nkeys"
)

// SeedExt is the extension of a credentials file: <dir>/<user>.nk holds
// the user's nkey seed (one line, "SU...").
const SeedExt = ".nk"

// SeedPath is where user's credentials live in dir.
func SeedPath(dir, user string) string { return filepath.Join(dir, user+SeedExt) }

// NameFromPath is the user a credentials file belongs to (its base name
// without .nk): the inbox prefix and the identity recorded as actor.
func NameFromPath(path string) string {
	return strings.TrimSuffix(filepath.Base(path), SeedExt)
}

// Credentials are a loaded nkey seed.
type Credentials struct {
	// Name is the user name (the file's base name), e.g. "operator".
	Name string
	// Path is the file it was read from.
	Path string
	KP   nkeys.KeyPair
}

// PublicKey is the user's public nkey ("U...").
func (c *Credentials) PublicKey() string {
	pub, _ := c.KP.PublicKey()
	return pub
}

// ErrNoCredentials wraps every failure to read a credentials file.
var ErrNoCredentials = errors.New("no credentials")

// LoadSeed reads a credentials file. The error names the file and why
// (missing, unreadable, not a user seed).
func LoadSeed(path string) (*Credentials, error) {
	raw, err := os.ReadFile(path)
	if err != nil {
		var pe *fs.PathError
		if errors.As(err, &pe) {
			err = pe.Err
		}
		return nil, fmt.Errorf("%w readable at %s: %v", ErrNoCredentials, path, err)
	}
	kp, err := nkeys.FromSeed(bytes.TrimSpace(raw))
	if err != nil {
		return nil, fmt.Errorf("%w at %s: not an nkey seed: %v", ErrNoCredentials, path, err)
	}
	if pub, err := kp.PublicKey(); err != nil || !nkeys.IsValidPublicUserKey(pub) {
		return nil, fmt.Errorf("%w at %s: not a user seed (nk -gen user)", ErrNoCredentials, path)
	}
	return &Credentials{Name: NameFromPath(path), Path: path, KP: kp}, nil
}

// EnsureConfig says where and for whom Ensure keeps credentials.
type EnsureConfig struct {
	Dir string
	// Users are the user names needing credentials.
	Users []string
	// Group may read the people's credentials (operator, reader) when it
	// exists; "" keeps them root-only.
	Group string
	// Role maps a user name to its role (People decides the mode).
	Role func(user string) string
}

// Ensured reports what Ensure did.
type Ensured struct {
	// Keys are the public keys by user name.
	Keys map[string]string
	// Created are the users whose credentials were made now.
	Created []string
	// GroupGID is the gid the people's credentials belong to; -1 when the
	// group does not exist (they stay root-only).
	GroupGID int
}

// Ensure makes a credentials file for every user that has none and sets
// every file's owner and mode: 0600 for the stages; 0640 and the group for
// the people's when the group exists (0600 otherwise). The directory is
// 0755: the files protect themselves, and operators must reach theirs.
func Ensure(c EnsureConfig) (*Ensured, error) {
	if c.Dir == "" {
		return nil, errors.New("credentials directory: must be set")
	}
	if err := os.MkdirAll(c.Dir, 0o755); err != nil {
		return nil, fmt.Errorf("credentials directory: %w", err)
	}
	if err := os.Chmod(c.Dir, 0o755); err != nil {
		return nil, fmt.Errorf("credentials directory: %w", err)
	}
	out := &Ensured{Keys: map[string]string{}, GroupGID: -1}
	if c.Group != "" {
		if g, err := user.LookupGroup(c.Group); err == nil {
			if gid, err := strconv.Atoi(g.Gid); err == nil {
				out.GroupGID = gid
			}
		}
	}
	uid := os.Geteuid()
	for _, name := range c.Users {
		path := SeedPath(c.Dir, name)
		if _, err := os.Lstat(path); errors.Is(err, fs.ErrNotExist) {
			kp, err := nkeys.CreateUser()
			if err != nil {
				return nil, fmt.Errorf("credentials for %s: %w", name, err)
			}
			seed, err := kp.Seed()
			if err != nil {
				return nil, fmt.Errorf("credentials for %s: %w", name, err)
			}
			if err := writeNew(path, append(seed, '\n')); err != nil {
				return nil, fmt.Errorf("credentials for %s: %w", name, err)
			}
			out.Created = append(out.Created, name)
		} else if err != nil {
			return nil, fmt.Errorf("credentials for %s: %w", name, err)
		}
		mode, gid := os.FileMode(0o600), os.Getegid()
		if c.Role != nil && People(c.Role(name)) && out.GroupGID >= 0 {
			mode, gid = 0o640, out.GroupGID
		}
		if err := os.Lchown(path, uid, gid); err != nil {
			return nil, fmt.Errorf("credentials for %s: %w", name, err)
		}
		if err := os.Chmod(path, mode); err != nil {
			return nil, fmt.Errorf("credentials for %s: %w", name, err)
		}
		creds, err := LoadSeed(path)
		if err != nil {
			return nil, err
		}
		out.Keys[name] = creds.PublicKey()
	}
	return out, nil
}

// writeNew creates path 0600 with data, failing if it exists.
func writeNew(path string, data []byte) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return err
	}
	if _, err := f.Write(data); err != nil {
		f.Close()
		os.Remove(path)
		return err
	}
	return f.Close()
}

// PublicKeys reads the public keys of the given users from dir, skipping
// the unreadable ones (reported in errs).
func PublicKeys(dir string, users ...string) (keys map[string]string, errs []error) {
	keys = map[string]string{}
	for _, u := range users {
		c, err := LoadSeed(SeedPath(dir, u))
		if err != nil {
			errs = append(errs, err)
			continue
		}
		keys[c.PublicKey()] = u
	}
	return keys, errs
}

// Generate makes in-memory credentials for name (tests, and tools that
// write the seed themselves).
func Generate(name string) (*Credentials, error) {
	kp, err := nkeys.CreateUser()
	if err != nil {
		return nil, fmt.Errorf("credentials for %s: %w", name, err)
	}
	return &Credentials{Name: name, KP: kp}, nil
}

// Trusted is the operator_keys entry of these credentials.
func (c *Credentials) Trusted() string { return FormatTrusted(c.Name, c.PublicKey()) }
