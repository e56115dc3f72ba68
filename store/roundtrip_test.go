package store

import (
	"context"
	"net/netip"
	"slices"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"google.golang.org/protobuf/proto"

	"github.com/containsec/contain/internal/bus"
	"github.com/containsec/contain/internal/metrics"
	"github.com/containsec/contain/internal/testenv"
	"github.com/containsec/contain/schemas/containv1"
)

// sampleEvents returns one event of every kind that goes to the events
// table, all for container cid, one second apart from base.
func sampleEvents(ids *containv1.IDGen, cid string, base time.Time) []*containv1.Event {
	proc := &containv1.Process{Pid: 101, Tgid: 100, Ppid: 1, NsPid: 7, Uid: 1000, Gid: 1001, Euid: 0, Comm: "sh"}
	env := func(i int, kind containv1.Kind) *containv1.Event {
		return &containv1.Event{
			Id: ids.Next(), Host: "host-a", ContainerId: cid, ContainerName: "web-1",
			ImageRef: "docker.io/library/nginx:1.27", ImageDigest: "sha256:abc",
			MonoNs: 5_000_000_000 + uint64(i), WallNs: base.Add(time.Duration(i)*time.Second + 123456789).UnixNano(),
			Kind: kind, SchemaVersion: containv1.SchemaVersion, CgroupId: 4242, ProfileRef: "sha256:abc@3",
		}
	}
	ip4 := netip.MustParseAddr("::ffff:10.1.2.3").As16()
	ip6 := netip.MustParseAddr("2001:db8::1").As16()
	var evs []*containv1.Event
	e := env(0, containv1.Kind_KIND_EXEC)
	e.Body = &containv1.Event_Exec{Exec: &containv1.Exec{Proc: proc, Filename: "/bin/wget", Argv: []string{"wget", "-q", "http://x/\\xff"},
		ArgvTruncated: true, Argc: 9, Cwd: "/tmp", Exe: "/bin/busybox", NonUtf8: true}}
	evs = append(evs, e)
	e = env(1, containv1.Kind_KIND_SYSCALL)
	e.Body = &containv1.Event_Syscall{Syscall: &containv1.Syscall{Proc: proc, Mode: containv1.Syscall_MODE_SENSITIVE, Nr: 101, Name: "ptrace",
		Args: []uint64{16, 1, 0, ^uint64(0)}, Ret: -1, Count: 1, Sequence: []uint32{0, 1, 101}}}
	evs = append(evs, e)
	e = env(2, containv1.Kind_KIND_NETWORK)
	e.Body = &containv1.Event_Network{Network: &containv1.Network{Proc: proc, Op: containv1.Network_OP_CONNECT, Protocol: containv1.Network_PROTOCOL_TCP,
		Family: 2, LocalAddr: ip6[:], LocalPort: 40000, RemoteAddr: ip4[:], RemotePort: 4444, Result: -111}}
	evs = append(evs, e)
	e = env(3, containv1.Kind_KIND_FILE)
	e.Body = &containv1.Event_File{File: &containv1.File{Proc: proc, Op: containv1.File_OP_RENAME, Path: "/etc/passwd", NewPath: "/etc/passwd.bak",
		Flags: 0o1101, Mode: 0o644, Result: 0, Uid: 1000, Gid: 100, PathRelative: true, NewPathUnresolved: true}}
	evs = append(evs, e)
	e = env(4, containv1.Kind_KIND_LOSS)
	e.Body = &containv1.Event_Loss{Loss: &containv1.Loss{Source: "ringbuf", Reason: "full", Count: 77}}
	evs = append(evs, e)
	e = env(5, containv1.Kind_KIND_CONTAINER)
	e.Body = &containv1.Event_Container{Container: &containv1.ContainerInfo{Runtime: "runc", CgroupPath: "/" + cid, Bundle: "/run/b", InitPid: 100,
		Labels: map[string]string{"io.x/b": "2", "a": "1"}, Pod: "web-abc", Namespace: "prod",
		Addresses: [][]byte{netip.MustParseAddr("::ffff:10.231.0.2").AsSlice(), netip.MustParseAddr("fd00::2").AsSlice()}}}
	evs = append(evs, e)
	e = env(6, containv1.Kind_KIND_PROCESS)
	e.Body = &containv1.Event_Process{Process: &containv1.ProcessLifecycle{Proc: proc, Op: containv1.ProcessLifecycle_OP_EXIT, ChildTgid: 0, ExitCode: 137}}
	evs = append(evs, e)
	return evs
}

// TestRoundTripEveryKind reads back every column of every kind, with the
// raw encoding kept (rows from decoded events) and without (rows read
// from the wire, design 021 decision 18).
// The events batch is also sent with a container dictionary (the
// enricher's output, schema_version 2): the same rows.
func TestRoundTripEveryKind(t *testing.T) {
	for _, raw := range []bool{false, true} {
		for _, dict := range []bool{false, true} {
			name := "wire"
			if raw {
				name = "store_raw"
			}
			if dict {
				name += "/dictionary"
			}
			t.Run(name, func(t *testing.T) { roundTripEveryKind(t, raw, dict) })
		}
	}
}

func roundTripEveryKind(t *testing.T, storeRaw, dict bool) {
	cfg := testConfig(t)
	cfg.StoreRaw = storeRaw
	s := openStore(t, cfg)
	m := metrics.New()
	_, _, js := testenv.NATS(t)
	runStoreOn(t, s, m, js)
	ctx := context.Background()

	ids := containv1.NewIDGen()
	base := time.Date(2026, 3, 14, 15, 9, 26, 0, time.UTC)
	evs := sampleEvents(ids, "c-rt", base)
	trigger := evs[2]
	alert := &containv1.Event{Id: ids.Next(), Host: "host-a", ContainerId: "c-rt", ContainerName: "web-1", ImageRef: "docker.io/library/nginx:1.27",
		ImageDigest: "sha256:abc", WallNs: base.Add(10 * time.Second).UnixNano(), Kind: containv1.Kind_KIND_ALERT, CgroupId: 4242,
		Body: &containv1.Event_Alert{Alert: &containv1.Alert{Score: 0.93, Rule: "baseline.deviation", Priority: "Critical", BaselineVersion: "v3", Count: 2,
			Reasons: []*containv1.Reason{
				{Code: "network.unseen_peer", Message: "connect to 10.1.2.3:4444", Score: 0.6, Mitre: []string{"T1071", "T1041"}},
				{Code: "exec.unseen", Message: "wget never ran", Score: 0.33, Mitre: []string{"T1105", "T1071"}},
			},
			EvidenceIds: [][]byte{evs[0].Id, evs[2].Id}, Trigger: trigger, IncidentId: evs[5].Id,
			Pod: "web-7d4b9c8f6d-x2x9q", Namespace: "shop", Labels: map[string]string{"app": "web", "io.kubernetes.pod.namespace": "shop"}}}}
	action := &containv1.Event{Id: ids.Next(), Host: "host-a", ContainerId: "c-rt", ImageRef: "docker.io/library/nginx:1.27",
		WallNs: base.Add(11 * time.Second).UnixNano(), Kind: containv1.Kind_KIND_ACTION,
		Body: &containv1.Event_Action{Action: &containv1.Action{Type: containv1.Action_TYPE_PAUSE, Result: containv1.Action_RESULT_OK, Actor: "responder",
			Reason: "score 0.93 >= 0.9", Method: "cgroup-v1-freezer", Detail: "frozen in 4ms", AlertId: alert.Id, Score: 0.93, LatencyNs: 4_100_000}}}

	for subj, batch := range map[string][]*containv1.Event{
		containv1.EventsSubject("host-a"):  evs,
		containv1.AlertsSubject("host-a"):  {alert},
		containv1.ActionsSubject("host-a"): {action},
	} {
		b := bus.NewProducer("host-a", "test").Batch(batch)
		if dict && subj == containv1.EventsSubject("host-a") {
			b = proto.Clone(b).(*containv1.Batch) // evs are read below
			b.Compact()
			if len(b.Containers) != 1 {
				t.Fatalf("the events' dictionary has %d containers, want 1", len(b.Containers))
			}
		}
		if err := bus.Publish(ctx, js, subj, b); err != nil {
			t.Fatal(err)
		}
	}
	testenv.WaitForState(t, 20*time.Second, "all rows", func() (bool, string) {
		e := queryUintNoFail(s, "SELECT count() FROM events WHERE container_id = 'c-rt'")
		a := queryUintNoFail(s, "SELECT count() FROM alerts WHERE container_id = 'c-rt'")
		x := queryUintNoFail(s, "SELECT count() FROM actions WHERE container_id = 'c-rt'")
		return e == uint64(len(evs)) && a == 1 && x == 1, "events " + itoa(e) + " alerts " + itoa(a) + " actions " + itoa(x)
	})
	// The counter advances after the insert returns, a moment after the
	// rows are visible.
	testenv.WaitForState(t, 5*time.Second, "events_out{store} counting every row", func() (bool, string) {
		got := testutil.ToFloat64(m.EventsOut.WithLabelValues(metrics.StageStore))
		return got == float64(len(evs)+2), "events_out{store} = " + itoa(uint64(got)) + ", want " + itoa(uint64(len(evs)+2))
	})

	// Envelope and process columns, on every row.
	rows, err := s.Conn().Query(ctx, `SELECT event_id, kind, ts, ts_ns, host, container_name, image_ref, image_digest, mono_ns, cgroup_id, profile_ref,
		schema_version, batch_stage, length(raw) > 0 FROM events WHERE container_id = 'c-rt' ORDER BY ts`)
	if err != nil {
		t.Fatal(err)
	}
	wantKinds := []string{"exec", "syscall", "network", "file", "loss", "container", "process"}
	i := 0
	for rows.Next() {
		var (
			id                                            uuid.UUID
			kind, host, name, ref, digest, profile, stage string
			ts                                            time.Time
			tsNs, sv                                      uint32
			mono, cg                                      uint64
			hasRaw                                        bool
		)
		if err := rows.Scan(&id, &kind, &ts, &tsNs, &host, &name, &ref, &digest, &mono, &cg, &profile, &sv, &stage, &hasRaw); err != nil {
			t.Fatal(err)
		}
		want := evs[i]
		if id != uuid.UUID(want.Id) || kind != wantKinds[i] || !ts.Equal(base.Add(time.Duration(i)*time.Second)) || tsNs != 123456789 ||
			host != "host-a" || name != "web-1" || ref != want.ImageRef || digest != "sha256:abc" || mono != want.MonoNs || cg != 4242 ||
			profile != "sha256:abc@3" || sv != containv1.SchemaVersion || stage != "test" || hasRaw != storeRaw {
			t.Errorf("row %d: got id=%v kind=%s ts=%v ns=%d host=%s name=%s ref=%s digest=%s mono=%d cg=%d profile=%s sv=%d stage=%s raw=%v",
				i, id, kind, ts, tsNs, host, name, ref, digest, mono, cg, profile, sv, stage, hasRaw)
		}
		i++
	}
	rows.Close()
	if i != len(evs) {
		t.Fatalf("read %d rows, want %d", i, len(evs))
	}

	one := func(q string, dest ...any) {
		t.Helper()
		if err := s.Conn().QueryRow(ctx, q).Scan(dest...); err != nil {
			t.Fatalf("%s: %v", q, err)
		}
	}
	var (
		pid, tgid, ppid, nsPid, uid, gid, euid, argc uint32
		comm, filename, cwd, exe                     string
		argv                                         []string
		trunc, nonUTF8                               uint8
	)
	one(`SELECT pid, tgid, ppid, ns_pid, uid, gid, euid, comm, exec_filename, exec_argv, exec_argc, exec_argv_truncated, exec_cwd, exec_exe, non_utf8
		FROM events WHERE container_id = 'c-rt' AND kind = 'exec'`,
		&pid, &tgid, &ppid, &nsPid, &uid, &gid, &euid, &comm, &filename, &argv, &argc, &trunc, &cwd, &exe, &nonUTF8)
	if pid != 101 || tgid != 100 || ppid != 1 || nsPid != 7 || uid != 1000 || gid != 1001 || euid != 0 || comm != "sh" ||
		filename != "/bin/wget" || !slices.Equal(argv, []string{"wget", "-q", "http://x/\\xff"}) || argc != 9 || trunc != 1 ||
		cwd != "/tmp" || exe != "/bin/busybox" || nonUTF8 != 1 {
		t.Errorf("exec row: %d %d %d %d %d %d %d %q %q %q %d %d %q %q %d", pid, tgid, ppid, nsPid, uid, gid, euid, comm, filename, argv, argc, trunc, cwd, exe, nonUTF8)
	}

	var (
		mode, sname string
		nr          uint32
		args        []uint64
		ret         int64
		count       uint64
		seq         []uint32
	)
	one(`SELECT syscall_mode, syscall_nr, syscall_name, syscall_args, syscall_ret, syscall_count, syscall_sequence
		FROM events WHERE container_id = 'c-rt' AND kind = 'syscall'`, &mode, &nr, &sname, &args, &ret, &count, &seq)
	if mode != "sensitive" || nr != 101 || sname != "ptrace" || !slices.Equal(args, []uint64{16, 1, 0, ^uint64(0)}) || ret != -1 || count != 1 ||
		!slices.Equal(seq, []uint32{0, 1, 101}) {
		t.Errorf("syscall row: %s %d %s %v %d %d %v", mode, nr, sname, args, ret, count, seq)
	}

	var (
		op, proto, laddr, raddr string
		family, lport, rport    uint16
		result                  int32
	)
	one(`SELECT net_op, net_protocol, net_family, IPv6NumToString(local_addr), local_port, IPv6NumToString(remote_addr), remote_port, net_result
		FROM events WHERE container_id = 'c-rt' AND kind = 'network'`, &op, &proto, &family, &laddr, &lport, &raddr, &rport, &result)
	if op != "connect" || proto != "tcp" || family != 2 || laddr != "2001:db8::1" || lport != 40000 || raddr != "::ffff:10.1.2.3" || rport != 4444 || result != -111 {
		t.Errorf("network row: %s %s %d %s %d %s %d %d", op, proto, family, laddr, lport, raddr, rport, result)
	}

	var (
		fop, path, newPath string
		flags, fmode       uint32
		fresult            int32
	)
	one(`SELECT file_op, file_path, file_new_path, file_flags, file_mode, file_result FROM events WHERE container_id = 'c-rt' AND kind = 'file'`,
		&fop, &path, &newPath, &flags, &fmode, &fresult)
	if fop != "rename" || path != "/etc/passwd" || newPath != "/etc/passwd.bak" || flags != 0o1101 || fmode != 0o644 || fresult != 0 {
		t.Errorf("file row: %s %s %s %o %o %d", fop, path, newPath, flags, fmode, fresult)
	}
	var (
		fuid, fgid           uint32
		rel, unres, newUnres uint8
	)
	one(`SELECT file_uid, file_gid, file_path_relative, file_path_unresolved, file_new_path_unresolved FROM events WHERE container_id = 'c-rt' AND kind = 'file'`,
		&fuid, &fgid, &rel, &unres, &newUnres)
	if fuid != 1000 || fgid != 100 || rel != 1 || unres != 0 || newUnres != 1 {
		t.Errorf("file ownership/resolution: %d %d %d %d %d", fuid, fgid, rel, unres, newUnres)
	}
	var (
		addrs   []string
		hostNet uint8
	)
	one(`SELECT ct_addresses, ct_host_network FROM events WHERE container_id = 'c-rt' AND kind = 'container'`, &addrs, &hostNet)
	if !slices.Equal(addrs, []string{"10.231.0.2", "fd00::2"}) || hostNet != 0 {
		t.Errorf("container addresses: %v %d", addrs, hostNet)
	}

	var (
		lsrc, lreason string
		lcount        uint64
	)
	one(`SELECT loss_source, loss_reason, loss_count FROM events WHERE container_id = 'c-rt' AND kind = 'loss'`, &lsrc, &lreason, &lcount)
	if lsrc != "ringbuf" || lreason != "full" || lcount != 77 {
		t.Errorf("loss row: %s %s %d", lsrc, lreason, lcount)
	}

	var (
		rt, cgPath, bundle, pod, ns string
		initPid                     uint32
		keys, vals                  []string
		label                       string
	)
	one(`SELECT ct_runtime, ct_cgroup_path, ct_bundle, ct_init_pid, ct_pod, ct_namespace, label_keys, label_values,
		label_values[indexOf(label_keys, 'io.x/b')] FROM events WHERE container_id = 'c-rt' AND kind = 'container'`,
		&rt, &cgPath, &bundle, &initPid, &pod, &ns, &keys, &vals, &label)
	if rt != "runc" || cgPath != "/c-rt" || bundle != "/run/b" || initPid != 100 || pod != "web-abc" || ns != "prod" ||
		!slices.Equal(keys, []string{"a", "io.x/b"}) || !slices.Equal(vals, []string{"1", "2"}) || label != "2" {
		t.Errorf("container row: %s %s %s %d %s %s %v %v %s", rt, cgPath, bundle, initPid, pod, ns, keys, vals, label)
	}

	var (
		pop      string
		child    uint32
		exitCode int32
	)
	one(`SELECT proc_op, proc_child_tgid, proc_exit_code FROM events WHERE container_id = 'c-rt' AND kind = 'process'`, &pop, &child, &exitCode)
	if pop != "exit" || child != 0 || exitCode != 137 {
		t.Errorf("process row: %s %d %d", pop, child, exitCode)
	}

	// Alert.
	var (
		alertID, trigID                      uuid.UUID
		score                                float64
		rule, prio, bv, tkind, tcomm, traddr string
		acount                               uint64
		codes, msgs, mitre                   []string
		scores                               []float64
		evidence                             []uuid.UUID
		tport                                uint16
		ats                                  time.Time
		trawOK                               bool
	)
	one(`SELECT alert_id, ts, score, rule, priority, baseline_version, count, reason_codes, reason_messages, reason_scores, mitre, evidence_ids,
		trigger_event_id, trigger_kind, trigger_comm, IPv6NumToString(trigger_remote_addr), trigger_remote_port, length(trigger_raw) > 0
		FROM alerts WHERE image_ref = 'docker.io/library/nginx:1.27'`,
		&alertID, &ats, &score, &rule, &prio, &bv, &acount, &codes, &msgs, &scores, &mitre, &evidence, &trigID, &tkind, &tcomm, &traddr, &tport, &trawOK)
	if alertID != uuid.UUID(alert.Id) || !ats.Equal(base.Add(10*time.Second)) || score != 0.93 || rule != "baseline.deviation" || prio != "Critical" ||
		bv != "v3" || acount != 2 || !slices.Equal(codes, []string{"network.unseen_peer", "exec.unseen"}) ||
		!slices.Equal(msgs, []string{"connect to 10.1.2.3:4444", "wget never ran"}) || !slices.Equal(scores, []float64{0.6, 0.33}) ||
		!slices.Equal(mitre, []string{"T1071", "T1041", "T1105"}) ||
		!slices.Equal(evidence, []uuid.UUID{uuid.UUID(evs[0].Id), uuid.UUID(evs[2].Id)}) ||
		trigID != uuid.UUID(trigger.Id) || tkind != "network" || tcomm != "sh" || traddr != "::ffff:10.1.2.3" || tport != 4444 || !trawOK {
		t.Errorf("alert row: %v %v %v %s %s %s %d %v %v %v %v %v %v %s %s %s %d %v", alertID, ats, score, rule, prio, bv, acount, codes, msgs, scores,
			mitre, evidence, trigID, tkind, tcomm, traddr, tport, trawOK)
	}
	var incident uuid.UUID
	one(`SELECT incident_id FROM alerts WHERE image_ref = 'docker.io/library/nginx:1.27'`, &incident)
	if incident != uuid.UUID(evs[5].Id) {
		t.Errorf("incident_id %v, want %v", incident, uuid.UUID(evs[5].Id))
	}
	var apod, ans string
	var lkeys, lvals []string
	one(`SELECT pod, namespace, label_keys, label_values FROM alerts WHERE image_ref = 'docker.io/library/nginx:1.27'`, &apod, &ans, &lkeys, &lvals)
	if apod != "web-7d4b9c8f6d-x2x9q" || ans != "shop" || !slices.Equal(lkeys, []string{"app", "io.kubernetes.pod.namespace"}) || !slices.Equal(lvals, []string{"web", "shop"}) {
		t.Errorf("alert pod %q namespace %q labels %v=%v", apod, ans, lkeys, lvals)
	}
	// Evidence joins back to events.
	if n := queryUint(t, s, `SELECT count() FROM events WHERE event_id IN (SELECT arrayJoin(evidence_ids) FROM alerts WHERE alert_id = ?)`,
		uuid.UUID(alert.Id).String()); n != 2 {
		t.Errorf("evidence join: %d events, want 2", n)
	}

	// Action.
	var (
		actionID, refAlert                    uuid.UUID
		typ, res, actor, reason, meth, detail string
		ascore                                float64
		lat                                   int64
	)
	one(`SELECT action_id, type, result, actor, reason, method, detail, alert_id, score, latency_ns FROM actions WHERE container_id = 'c-rt'`,
		&actionID, &typ, &res, &actor, &reason, &meth, &detail, &refAlert, &ascore, &lat)
	if actionID != uuid.UUID(action.Id) || typ != "pause" || res != "ok" || actor != "responder" || reason != "score 0.93 >= 0.9" ||
		meth != "cgroup-v1-freezer" || detail != "frozen in 4ms" || refAlert != uuid.UUID(alert.Id) || ascore != 0.93 || lat != 4_100_000 {
		t.Errorf("action row: %v %s %s %s %s %s %s %v %v %d", actionID, typ, res, actor, reason, meth, detail, refAlert, ascore, lat)
	}

	// Per-minute counts from the materialized view.
	if n := queryUint(t, s, "SELECT sum(events) FROM events_per_minute WHERE container_id = 'c-rt'"); n != uint64(len(evs)) {
		t.Errorf("events_per_minute sum %d, want %d", n, len(evs))
	}
}

// A redelivered batch (same ids) collapses to one row per event.
func TestRedeliveryIsIdempotent(t *testing.T) {
	cfg := testConfig(t)
	s := openStore(t, cfg)
	m := metrics.New()
	rs := s.bufs()
	ids := containv1.NewIDGen()
	b := bus.NewProducer("h", "test").Batch(sampleEvents(ids, "c-dup", time.Now()))
	for range 3 {
		if err := s.handle(context.Background(), rs, decoded([]*containv1.Batch{b}), m); err != nil {
			t.Fatal(err)
		}
	}
	if n := queryUint(t, s, "SELECT count() FROM events FINAL WHERE container_id = 'c-dup'"); n != uint64(len(b.Events)) {
		t.Errorf("FINAL count %d, want %d", n, len(b.Events))
	}
	if err := s.Conn().Exec(context.Background(), "OPTIMIZE TABLE events FINAL"); err != nil {
		t.Fatal(err)
	}
	if n := queryUint(t, s, "SELECT count() FROM events WHERE container_id = 'c-dup'"); n != uint64(len(b.Events)) {
		t.Errorf("count after merge %d, want %d", n, len(b.Events))
	}
}
