package auth

import (
	"encoding/json"
	"os"
	"os/user"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"

	"github.com/containsec/contain/schemas/containv1"
)

func mustCreds(t testing.TB, name string) *Credentials {
	t.Helper()
	c, err := Generate(name)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func TestSignVerify(t *testing.T) {
	op := mustCreds(t, "operator")
	other := mustCreds(t, "operator")
	now := time.Unix(1_800_000_000, 0)
	v := NewVerifier(map[string]string{op.PublicKey(): "operator"}, time.Minute)
	v.SetClock(func() time.Time { return now })
	s := &Signer{Creds: op, OSUser: "alice (uid 1000)", Now: func() time.Time { return now }}
	body := []byte(`{"container_id":"c1"}`)
	good, err := s.Sign("control release h1", body)
	if err != nil {
		t.Fatal(err)
	}
	env, err := v.Verify(good, "control release h1")
	if err != nil {
		t.Fatal(err)
	}
	if env.Actor() != "operator/alice (uid 1000)" || string(env.Body) != string(body) {
		t.Fatalf("actor %q body %s", env.Actor(), env.Body)
	}
	tamper := func(f func(*Signed)) []byte {
		var e Signed
		if err := json.Unmarshal(good, &e); err != nil {
			t.Fatal(err)
		}
		f(&e)
		raw, _ := json.Marshal(e)
		return raw
	}
	old := &Signer{Creds: op, OSUser: "x", Now: func() time.Time { return now.Add(-2 * time.Minute) }}
	stale, _ := old.Sign("control release h1", body)
	future := &Signer{Creds: op, OSUser: "x", Now: func() time.Time { return now.Add(2 * time.Minute) }}
	ahead, _ := future.Sign("control release h1", body)
	foreign, _ := (&Signer{Creds: other, Now: time.Now}).Sign("control release h1", body)
	for name, tc := range map[string]struct {
		data    []byte
		purpose string
		reason  string
	}{
		"replayed":      {good, "control release h1", ReasonReplayed},
		"unsigned":      {body, "control release h1", ReasonUnsigned},
		"garbage":       {[]byte("{"), "control release h1", ReasonMalformed},
		"unknown key":   {foreign, "control release h1", ReasonUnknownKey},
		"other purpose": {good, "control release h2", ReasonPurpose},
		"stale":         {stale, "control release h1", ReasonStale},
		"from future":   {ahead, "control release h1", ReasonStale},
		"body":          {tamper(func(e *Signed) { e.Body = json.RawMessage(`{"container_id":"c2"}`) }), "control release h1", ReasonBadSignature},
		"os user":       {tamper(func(e *Signed) { e.OSUser = "root" }), "control release h1", ReasonBadSignature},
		"time":          {tamper(func(e *Signed) { e.TS++ }), "control release h1", ReasonBadSignature},
		"name":          {tamper(func(e *Signed) { e.Name = "admin" }), "control release h1", ReasonBadSignature},
		"purpose field": {tamper(func(e *Signed) { e.Purpose = "control release h2" }), "control release h2", ReasonBadSignature},
	} {
		_, err := v.Verify(tc.data, tc.purpose)
		if got := Reason(err); got != tc.reason {
			t.Errorf("%s: %v (reason %q), want %q", name, err, got, tc.reason)
		}
	}
}

// FuzzParse: Parse is safe on any input.
func FuzzParse(f *testing.F) {
	op, _ := Generate("operator")
	good, _ := NewSigner(op).Sign("p", []byte(`{}`))
	f.Add(good)
	f.Add([]byte(`{"v":1,"sig":"x","key":"y"}`))
	f.Add([]byte(`null`))
	v := NewVerifier(map[string]string{op.PublicKey(): "operator"}, 0)
	f.Fuzz(func(t *testing.T, data []byte) {
		env, err := Parse(data)
		if err == nil && (env.Sig == "" || env.Key == "") {
			t.Fatalf("accepted an unsigned envelope %q", data)
		}
		if _, err := v.Verify(data, "p"); err != nil && Reason(err) == "" {
			t.Fatalf("refusal without a reason: %v", err)
		}
	})
}

// TestTableHostScoping: a host's users are granted only that host's
// subjects and consumers; the reader can never touch a named durable.
func TestTableHostScoping(t *testing.T) {
	users := Table(DefaultNames(), []string{"node-a", "node-b"})
	byName := map[string]User{}
	for _, u := range users {
		byName[u.Name] = u
	}
	for _, role := range Roles {
		if PerHost(role) {
			continue
		}
		if _, ok := byName[role]; !ok {
			t.Errorf("no user %s", role)
		}
	}
	col := byName["collector-node-a"]
	if got := col.PublishAllow(); !slices.Equal(got, []string{containv1.RawSubject("node-a")}) {
		t.Errorf("collector-node-a publishes %v", got)
	}
	for _, u := range []User{byName["collector-node-a"], byName["responder-node-a"]} {
		for _, s := range append(u.PublishAllow(), u.SubscribeAllow()...) {
			if strings.Contains(s, "node-b") || strings.HasSuffix(s, ".>") && strings.HasPrefix(s, "contain.v1.") && !strings.Contains(s, "node-a") {
				t.Errorf("%s may use %s", u.Name, s)
			}
		}
	}
	resp := byName["responder-node-a"]
	if !slices.Contains(resp.SubscribeAllow(), "contain.v1.control.node-a.>") || slices.Contains(resp.PublishAllow(), "contain.v1.control.>") {
		t.Errorf("responder-node-a: %v / %v", resp.PublishAllow(), resp.SubscribeAllow())
	}
	// Only the analyzer may publish alerts; only operators control verbs.
	for _, u := range users {
		for _, s := range u.PublishAllow() {
			if strings.HasPrefix(s, "contain.v1.alerts.") && u.Role != RoleAnalyzer {
				t.Errorf("%s may publish alerts (%s)", u.Name, s)
			}
			if s == "contain.v1.control.>" && u.Role != RoleOperator {
				t.Errorf("%s may publish every control verb", u.Name)
			}
		}
	}
	rd := byName["reader"]
	for _, d := range []string{"$JS.API.CONSUMER.MSG.NEXT.CONTAIN_ALERTS.responder-node-a", "$JS.API.CONSUMER.CREATE.CONTAIN_ALERTS.responder-node-b.>",
		"$JS.API.CONSUMER.DELETE.KV_contain_baselines.store-kv-baselines"} {
		if !slices.Contains(rd.Deny, d) {
			t.Errorf("reader is not denied %s", d)
		}
	}
	// The server accepts the permissions.
	var nk []*server.NkeyUser
	keys := map[string]string{}
	for _, u := range users {
		keys[u.Name] = mustCreds(t, u.Name).PublicKey()
	}
	nk = ServerUsers(users, keys)
	if len(nk) != len(users) {
		t.Fatalf("%d server users for %d", len(nk), len(users))
	}
	if _, err := server.NewServer(&server.Options{Nkeys: nk, Port: -1, NoSigs: true}); err != nil {
		t.Fatal(err)
	}
}

// TestEnsure: credentials are made once, root-only for the stages; the
// people's belong to the operators' group (0640) when it exists.
func TestEnsure(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to chown the credentials (run as root in CI)")
	}
	g, err := user.LookupGroupId(strconv.Itoa(65534))
	if err != nil {
		t.Skipf("no group 65534 to play the operators' group: %v", err)
	}
	dir := filepath.Join(t.TempDir(), "creds")
	role := func(u string) string { return strings.SplitN(u, "-", 2)[0] }
	users := []string{"collector-h1", "operator", "reader", "admin"}
	got, err := Ensure(EnsureConfig{Dir: dir, Users: users, Group: g.Name, Role: role})
	if err != nil {
		t.Fatal(err)
	}
	if len(got.Created) != len(users) || got.GroupGID != 65534 {
		t.Fatalf("created %v gid %d", got.Created, got.GroupGID)
	}
	for _, u := range users {
		st, err := os.Stat(SeedPath(dir, u))
		if err != nil {
			t.Fatal(err)
		}
		sys := st.Sys().(*syscall.Stat_t)
		wantMode, wantGID := os.FileMode(0o600), uint32(os.Getegid())
		if People(role(u)) {
			wantMode, wantGID = 0o640, 65534
		}
		if st.Mode().Perm() != wantMode || sys.Gid != wantGID || sys.Uid != 0 {
			t.Errorf("%s: %v uid %d gid %d, want %v root:%d", u, st.Mode().Perm(), sys.Uid, sys.Gid, wantMode, wantGID)
		}
	}
	// A second start keeps the keys; a missing group keeps people root-only.
	again, err := Ensure(EnsureConfig{Dir: dir, Users: users, Group: "no-such-group-contain", Role: role})
	if err != nil {
		t.Fatal(err)
	}
	if len(again.Created) != 0 || again.Keys["operator"] != got.Keys["operator"] {
		t.Fatalf("second Ensure changed keys: %v", again.Created)
	}
	if st, _ := os.Stat(SeedPath(dir, "operator")); st.Mode().Perm() != 0o600 {
		t.Errorf("operator.nk %v without the group, want 0600", st.Mode().Perm())
	}
	// Loading names the file and the reason.
	if _, err := LoadSeed(filepath.Join(dir, "missing.nk")); err == nil || !strings.Contains(err.Error(), "missing.nk: no such file") {
		t.Errorf("missing: %v", err)
	}
	os.WriteFile(filepath.Join(dir, "bad.nk"), []byte("not a seed"), 0o600)
	if _, err := LoadSeed(filepath.Join(dir, "bad.nk")); err == nil || !strings.Contains(err.Error(), "not an nkey seed") {
		t.Errorf("bad: %v", err)
	}
}
