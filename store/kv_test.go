package store

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/containsec/contain/analyzer"
	"github.com/containsec/contain/enricher"
	"github.com/containsec/contain/internal/imagecfg"
	"github.com/containsec/contain/internal/metrics"
	"github.com/containsec/contain/internal/testenv"
)

const testDigest = "sha256:4f2c0000000000000000000000000000000000000000000000000000000000aa"

// sampleDecl is an image declaration as the enricher builds it.
func sampleDecl(entry string) *imagecfg.Declaration {
	return &imagecfg.Declaration{
		Digest: testDigest, Ref: "registry.local/shop/web:1.2", Source: "oci_layout",
		Created: time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC), OS: "linux", Architecture: "amd64",
		User: "nginx", WorkingDir: "/srv", Entrypoint: []string{entry, "-g", "daemon off;"},
		ExposedPorts: []string{"80/tcp"}, Volumes: []string{"/var/cache/nginx"},
		Env:         []imagecfg.EnvVar{{Name: "PATH", Value: "/usr/bin:/bin"}, {Name: "DB_PASSWORD", Redacted: true}},
		Labels:      map[string]string{"org.opencontainers.image.title": "web"},
		History:     []imagecfg.History{{CreatedBy: "ADD rootfs.tar /"}, {CreatedBy: "USER nginx", EmptyLayer: true}},
		Layers:      []imagecfg.Layer{{Digest: "sha256:" + strings.Repeat("b", 64), Size: 1234, Files: 3}},
		Executables: []string{"/bin/sh", entry}, Setuid: []imagecfg.File{{Path: "/bin/su", Mode: 0o104755}},
		FilesListed: true,
	}
}

// sampleDoc is a baseline version as the analyzer persists it.
func sampleDoc(version uint64, phase string) *analyzer.Doc {
	at := time.Date(2026, 1, 2, 4, 0, 0, 0, time.UTC)
	return &analyzer.Doc{
		Format: analyzer.DocFormat, Key: testDigest, Image: "registry.local/shop/web:1.2", Phase: phase, Version: version,
		First: at, Last: at.Add(time.Duration(version) * time.Minute), Observations: 100 * version, Novelty: 0.05,
		Executables: map[string]uint32{"/usr/sbin/nginx": 1, "/bin/sh": uint32(version)},
		Peers:       map[string]uint32{"10.0.0.5:5432": 40},
		ListenPorts: map[string]uint32{"80/tcp": 1},
		Syscalls:    map[string]uint32{"read": 900, "write": 800},
	}
}

// kvFixture is a NATS server with the enricher's and the analyzer's
// buckets, written through their own code.
type kvFixture struct {
	js               jetstream.JetStream
	images, profiles jetstream.KeyValue
	baselines        *analyzer.Store
	baseKVRaw        jetstream.KeyValue
}

func openBuckets(t *testing.T, js jetstream.JetStream) *kvFixture {
	t.Helper()
	ctx := context.Background()
	f := &kvFixture{js: js}
	var err error
	if f.profiles, err = enricher.OpenProfiles(ctx, js, enricher.DefaultProfilesBucket); err != nil {
		t.Fatal(err)
	}
	// The enricher's images bucket (enricher.openOnce).
	if f.images, err = js.CreateOrUpdateKeyValue(ctx, jetstream.KeyValueConfig{Bucket: enricher.DefaultImagesBucket, History: 1}); err != nil {
		t.Fatal(err)
	}
	if f.baselines, err = analyzer.OpenStore(ctx, js, analyzer.DefaultBaselinesBucket); err != nil {
		t.Fatal(err)
	}
	if f.baseKVRaw, err = js.KeyValue(ctx, analyzer.DefaultBaselinesBucket); err != nil {
		t.Fatal(err)
	}
	return f
}

// putImage stores a declaration and its derived profile the way the
// enricher does (resolver.declaration, storeProfile).
func (f *kvFixture) putImage(t *testing.T, d *imagecfg.Declaration) *enricher.Profile {
	t.Helper()
	ctx := context.Background()
	raw, err := json.Marshal(d)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.images.Put(ctx, enricher.DigestKey(d.Digest), raw); err != nil {
		t.Fatal(err)
	}
	p := enricher.DeriveProfile(d, nil, nil, "")
	praw, err := json.Marshal(p)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.profiles.Put(ctx, enricher.ProfileKey(p.ImageDigest, p.Version), praw); err != nil {
		t.Fatal(err)
	}
	if _, err := f.profiles.Put(ctx, enricher.DigestKey(p.ImageDigest), praw); err != nil {
		t.Fatal(err)
	}
	return p
}

func (f *kvFixture) putBaseline(t *testing.T, d *analyzer.Doc) {
	t.Helper()
	if _, err := f.baselines.Save(context.Background(), d); err != nil {
		t.Fatal(err)
	}
}

// startRun runs s until the returned stop is called (or the test ends).
func startRun(t *testing.T, s *Store, m *metrics.Metrics, js jetstream.JetStream) (stop func()) {
	t.Helper()
	return testenv.Go(t, 15*time.Second, func(ctx context.Context) error { return s.Run(ctx, js, m) })
}

// waitAcked waits until the store's consumer on bucket has acknowledged
// everything in it.
func waitAcked(t *testing.T, js jetstream.JetStream, cfg Config, bucket string) {
	t.Helper()
	testenv.WaitForState(t, 20*time.Second, "the store to ack "+bucket, func() (bool, string) {
		c, err := js.Consumer(context.Background(), "KV_"+bucket, cfg.KVDurables()[bucket])
		if err != nil {
			return false, err.Error()
		}
		info, err := c.Info(context.Background())
		if err != nil {
			return false, err.Error()
		}
		return info.NumPending == 0 && info.NumAckPending == 0, fmt.Sprintf("pending %d, ack pending %d", info.NumPending, info.NumAckPending)
	})
}

func countWhere(t *testing.T, s *Store, table, final, where string) uint64 {
	t.Helper()
	return queryUint(t, s, "SELECT count() FROM "+table+" "+final+" WHERE "+where)
}

// TestKVVersionsIntoClickHouse: the store waits for the buckets, copies
// every version of a declaration, a profile and a baseline (written by the
// enricher's and the analyzer's own code) into ClickHouse, skips and counts
// malformed values, and resumes after a restart without losing or
// duplicating rows.
func TestKVVersionsIntoClickHouse(t *testing.T) {
	cfg := testConfig(t)
	s := openStore(t, cfg)
	s.bucketPoll = 100 * time.Millisecond
	m := metrics.New()
	_, _, js := testenv.NATS(t)
	stop := startRun(t, s, m, js) // before the buckets exist

	f := openBuckets(t, js)
	p1 := f.putImage(t, sampleDecl("/usr/sbin/nginx"))
	f.putBaseline(t, sampleDoc(1, "learning"))

	profWhere := fmt.Sprintf("image_digest = '%s' AND source = '%s'", testDigest, SourceProfile)
	imgWhere := fmt.Sprintf("image_digest = '%s' AND source = '%s'", testDigest, SourceImage)
	baseWhere := fmt.Sprintf("baseline_key = '%s'", testDigest)
	waitRows := func(want uint64) {
		t.Helper()
		testenv.WaitForState(t, 30*time.Second, fmt.Sprintf("%d rows per table", want), func() (bool, string) {
			p, i, b := countWhere(t, s, "declarations", "", profWhere), countWhere(t, s, "declarations", "", imgWhere), countWhere(t, s, "baselines", "", baseWhere)
			return p == want && i == want && b == want, fmt.Sprintf("profiles %d, images %d, baselines %d", p, i, b)
		})
	}
	waitRows(1)

	// The profile row: its version, user, and items by kind.
	var (
		version, user string
		kinds, items  []string
	)
	if err := s.Conn().QueryRow(context.Background(), "SELECT profile_version, user, item_kinds, items FROM declarations WHERE "+profWhere).
		Scan(&version, &user, &kinds, &items); err != nil {
		t.Fatal(err)
	}
	if version != p1.Version || user != "nginx" {
		t.Errorf("profile row: version %q user %q, want %q nginx", version, user, p1.Version)
	}
	itemsOf := func(kind string) []string {
		var out []string
		for i, k := range kinds {
			if k == kind {
				out = append(out, items[i])
			}
		}
		return out
	}
	if got := itemsOf("main_process"); !slices.Equal(got, []string{"/usr/sbin/nginx", "-g", "daemon off;"}) {
		t.Errorf("main_process %v", got)
	}
	if got := itemsOf("listen_port"); !slices.Equal(got, []string{"80/tcp"}) {
		t.Errorf("listen_port %v", got)
	}
	if got := itemsOf("executable"); !slices.Equal(got, []string{"/bin/sh", "/usr/sbin/nginx"}) {
		t.Errorf("executable %v", got)
	}
	// The image declaration row keeps the full document and its items.
	var doc string
	if err := s.Conn().QueryRow(context.Background(), "SELECT item_kinds, items, doc FROM declarations WHERE "+imgWhere).
		Scan(&kinds, &items, &doc); err != nil {
		t.Fatal(err)
	}
	var back imagecfg.Declaration
	if err := json.Unmarshal([]byte(doc), &back); err != nil || back.Digest != testDigest {
		t.Errorf("declaration doc does not decode back: %v", err)
	}
	if got := itemsOf("setuid"); !slices.Equal(got, []string{"/bin/su"}) {
		t.Errorf("setuid %v", got)
	}
	if got := itemsOf("env"); !slices.Equal(got, []string{"PATH=/usr/bin:/bin", "DB_PASSWORD=<redacted>"}) {
		t.Errorf("env %v", got)
	}
	// The baseline row.
	var (
		phase  string
		ver    uint64
		counts []uint64
	)
	if err := s.Conn().QueryRow(context.Background(), "SELECT phase, version, item_kinds, items, counts FROM baselines WHERE "+baseWhere).
		Scan(&phase, &ver, &kinds, &items, &counts); err != nil {
		t.Fatal(err)
	}
	if phase != "learning" || ver != 1 {
		t.Errorf("baseline row: phase %q version %d", phase, ver)
	}
	if got := itemsOf("exec"); !slices.Equal(got, []string{"/bin/sh", "/usr/sbin/nginx"}) {
		t.Errorf("baseline execs %v", got)
	}
	if i := slices.Index(items, "read"); i < 0 || kinds[i] != "syscall" || counts[i] != 900 {
		t.Errorf("baseline syscall read: kinds %v items %v counts %v", kinds, items, counts)
	}

	// A second version of each adds a row; malformed values are counted and
	// skipped, and what follows them is stored.
	ctx := context.Background()
	if _, err := f.baseKVRaw.Put(ctx, "garbage", []byte(`{"format":"contain.baseline/v1","key":"x"}`)); err != nil {
		t.Fatal(err)
	}
	if _, err := f.profiles.Put(ctx, "sha256_00.p1-bad", []byte("not json")); err != nil {
		t.Fatal(err)
	}
	if _, err := f.images.Put(ctx, "sha256_bad", []byte(`{"digest":"sha256:nothex"}`)); err != nil {
		t.Fatal(err)
	}
	p2 := f.putImage(t, sampleDecl("/usr/local/bin/web"))
	if p2.Version == p1.Version {
		t.Fatal("a changed declaration kept its profile version")
	}
	f.putBaseline(t, sampleDoc(2, "converged"))
	waitRows(2)
	if got := testutil.ToFloat64(m.Malformed.WithLabelValues(metrics.StageStore)); got != 3 {
		t.Errorf("malformed counter = %v, want 3", got)
	}

	// Restart: what was written while the store was down is copied, and
	// nothing is copied twice (count without FINAL).
	for _, b := range []string{enricher.DefaultImagesBucket, enricher.DefaultProfilesBucket, analyzer.DefaultBaselinesBucket} {
		waitAcked(t, js, cfg, b)
	}
	stop()
	f.putBaseline(t, sampleDoc(3, "locked"))
	f.putImage(t, sampleDecl("/usr/local/bin/web2"))
	s2 := openStore(t, cfg)
	s2.bucketPoll = 100 * time.Millisecond
	startRun(t, s2, metrics.New(), js)
	waitRows(3)
	for _, b := range []string{enricher.DefaultImagesBucket, enricher.DefaultProfilesBucket, analyzer.DefaultBaselinesBucket} {
		waitAcked(t, js, cfg, b) // every delivery is in
	}
	for table, where := range map[string]string{"declarations": "image_digest = '" + testDigest + "'", "baselines": baseWhere} {
		if n, final := countWhere(t, s, table, "", where), countWhere(t, s, table, "FINAL", where); n != final {
			t.Errorf("%s: %d rows, %d after FINAL: a version was inserted twice", table, n, final)
		}
	}
	if n := countWhere(t, s, "baselines", "FINAL", baseWhere+" AND phase = 'locked' AND version = 3"); n != 1 {
		t.Errorf("baseline v3 written while the store was down: %d rows", n)
	}
}

// TestKVRowsRejectBadInput: the decoders name what is wrong.
func TestKVRowsRejectBadInput(t *testing.T) {
	at := time.Now()
	good, _ := json.Marshal(enricher.DeriveProfile(sampleDecl("/bin/x"), nil, nil, ""))
	if _, err := profileRow(enricher.DigestKey(testDigest), good, at); err != errSkip {
		t.Errorf("profile under its digest key: %v, want errSkip (the versioned key makes the row)", err)
	}
	if _, err := profileRow(enricher.DigestKey(testDigest)+".v", good, at); err != nil {
		t.Errorf("profile: %v", err)
	}
	decl, _ := json.Marshal(sampleDecl("/bin/x"))
	if _, err := imageRow("sha256_other", decl, at); err == nil {
		t.Error("a declaration under another digest's key was accepted")
	}
	d := sampleDoc(1, "learning")
	raw, _ := analyzer.MarshalJSONDoc(d)
	tampered := strings.Replace(string(raw), `"learning"`, `"locked"`, 1)
	if _, err := baselineRow([]byte(tampered), at); err == nil {
		t.Error("a baseline with a wrong checksum was accepted")
	}
	r, err := baselineRow(raw, at)
	if err != nil {
		t.Fatal(err)
	}
	if r.ImageDigest != testDigest || len(r.Items) != len(r.ItemKinds) || len(r.Counts) != len(r.Items) || len(r.Items) != 6 {
		t.Errorf("baseline row %+v", r)
	}
}

// FuzzKVRows: the KV decoders never panic, and a row they return has
// parallel item arrays.
func FuzzKVRows(f *testing.F) {
	good, _ := json.Marshal(enricher.DeriveProfile(sampleDecl("/bin/x"), nil, nil, ""))
	decl, _ := json.Marshal(sampleDecl("/bin/x"))
	doc, _ := analyzer.MarshalJSONDoc(sampleDoc(1, "learning"))
	for _, seed := range [][]byte{good, decl, doc, nil, []byte("{}"), []byte("null"), []byte(`{"schema_version":1}`)} {
		f.Add(enricher.DigestKey(testDigest)+".v", seed)
		f.Add(enricher.DigestKey(testDigest), seed)
	}
	f.Fuzz(func(t *testing.T, key string, raw []byte) {
		at := time.Unix(0, 0)
		if r, err := profileRow(key, raw, at); err == nil && len(r.Items) != len(r.ItemKinds) {
			t.Fatal("profile row: items and kinds differ")
		}
		if r, err := imageRow(key, raw, at); err == nil && len(r.Items) != len(r.ItemKinds) {
			t.Fatal("image row: items and kinds differ")
		}
		if r, err := baselineRow(raw, at); err == nil && (len(r.Items) != len(r.ItemKinds) || len(r.Counts) != len(r.Items)) {
			t.Fatal("baseline row: items, kinds and counts differ")
		}
	})
}

// TestKVClickHouseOutage: versions written while ClickHouse is away are
// inserted once it is back, each once.
func TestKVClickHouseOutage(t *testing.T) {
	cfg := testConfig(t)
	proxy := newSwitchProxy(t, cfg.Addr[0])
	cfg.Addr = []string{proxy.addr}
	cfg.RetryDelay = 100 * time.Millisecond
	s, err := Open(context.Background(), cfg, testenv.Logger(t))
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	s.bucketPoll = 100 * time.Millisecond
	m := metrics.New()
	_, _, js := testenv.NATS(t)
	f := openBuckets(t, js)
	startRun(t, s, m, js)
	f.putBaseline(t, sampleDoc(1, "learning"))
	f.putBaseline(t, sampleDoc(2, "converged"))
	testenv.WaitForState(t, 20*time.Second, "failed inserts while ClickHouse is down", func() (bool, string) {
		n := testutil.ToFloat64(m.Errors.WithLabelValues(metrics.StageStore, "migrate")) + testutil.ToFloat64(m.Errors.WithLabelValues(metrics.StageStore, "insert"))
		return n >= 1, fmt.Sprint(n)
	})
	proxy.up()
	testenv.WaitForState(t, 30*time.Second, "both versions after the outage", func() (bool, string) {
		var n uint64
		if err := s.Conn().QueryRow(context.Background(), "SELECT count() FROM baselines WHERE baseline_key = ?", testDigest).Scan(&n); err != nil {
			return false, err.Error() // the schema may not be there yet
		}
		return n == 2, fmt.Sprint(n)
	})
	waitAcked(t, js, cfg, analyzer.DefaultBaselinesBucket)
	if n := queryUint(t, s, "SELECT count() FROM baselines WHERE baseline_key = ?", testDigest); n != 2 {
		t.Errorf("%d baseline rows, want 2", n)
	}
}

// TestKVBucketRecreated: a bucket deleted and created again is followed
// again (its durable consumer is recreated).
func TestKVBucketRecreated(t *testing.T) {
	cfg := testConfig(t)
	s := openStore(t, cfg)
	s.bucketPoll = 100 * time.Millisecond
	_, _, js := testenv.NATS(t)
	f := openBuckets(t, js)
	startRun(t, s, metrics.New(), js)
	f.putBaseline(t, sampleDoc(1, "learning"))
	count := func() uint64 {
		return queryUint(t, s, "SELECT count() FROM baselines FINAL WHERE baseline_key = ?", testDigest)
	}
	testenv.WaitForState(t, 20*time.Second, "version 1", func() (bool, string) { return count() == 1, "" })
	if err := js.DeleteKeyValue(context.Background(), analyzer.DefaultBaselinesBucket); err != nil {
		t.Fatal(err)
	}
	f = openBuckets(t, js)
	f.putBaseline(t, sampleDoc(2, "converged"))
	testenv.WaitForState(t, 30*time.Second, "version 2 in the recreated bucket", func() (bool, string) { n := count(); return n == 2, fmt.Sprint(n) })
}

// BenchmarkKVRows: decoding one KV value into its row, for a baseline of
// ~1,000 items and an image declaration listing 2,000 executables.
func BenchmarkKVRows(b *testing.B) {
	d := sampleDoc(1, "converged")
	for i := range 1000 {
		d.Syscalls[fmt.Sprintf("sys%d", i)] = uint32(i)
	}
	doc, _ := analyzer.MarshalJSONDoc(d)
	decl := sampleDecl("/bin/x")
	for i := range 2000 {
		decl.Executables = append(decl.Executables, fmt.Sprintf("/usr/bin/tool%04d", i))
	}
	img, _ := json.Marshal(decl)
	at := time.Now()
	b.Run("baseline_1000_items", func(b *testing.B) {
		b.SetBytes(int64(len(doc)))
		for b.Loop() {
			if _, err := baselineRow(doc, at); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("image_2000_executables", func(b *testing.B) {
		b.SetBytes(int64(len(img)))
		for b.Loop() {
			if _, err := imageRow(enricher.DigestKey(testDigest), img, at); err != nil {
				b.Fatal(err)
			}
		}
	})
}

// BenchmarkKVToClickHouse: from the analyzer's Save of a baseline version
// to its row being visible in ClickHouse, one version at a time.
func BenchmarkKVToClickHouse(b *testing.B) {
	cfg := testConfig(b)
	s, err := Open(context.Background(), cfg, testenv.Discard())
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	_, _, js := testenv.NATS(b)
	st, err := analyzer.OpenStore(context.Background(), js, analyzer.DefaultBaselinesBucket)
	if err != nil {
		b.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); _ = s.Run(ctx, js, metrics.New()) }()
	defer func() { cancel(); <-done }()
	v := uint64(0)
	for b.Loop() {
		v++
		if _, err := st.Save(context.Background(), sampleDoc(v, "learning")); err != nil {
			b.Fatal(err)
		}
		for {
			var n uint64
			if err := s.Conn().QueryRow(context.Background(), "SELECT count() FROM baselines WHERE version = ?", v).Scan(&n); err != nil {
				b.Fatal(err)
			}
			if n == 1 {
				break
			}
			time.Sleep(time.Millisecond)
		}
	}
}
