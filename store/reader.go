package store

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"
	"github.com/google/uuid"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"

	"github.com/containsec/contain/schemas/containv1"
)

// Reader runs the queries of contain's forensic commands (timeline,
// replay, export, backtest) against the store's database. It never writes
// and never migrates.
type Reader struct {
	conn driver.Conn
	addr string
}

// OpenReader connects to cfg's database (which must exist).
func OpenReader(cfg Config) (*Reader, error) {
	conn, err := openConn(cfg)
	if err != nil {
		return nil, err
	}
	return &Reader{conn: conn, addr: strings.Join(cfg.Addr, ",")}, nil
}

// Close closes the connection.
func (r *Reader) Close() error { return r.conn.Close() }

// Selection chooses rows: a time range (From inclusive, To exclusive; zero
// To is open) and optional equality filters.
type Selection struct {
	From, To  time.Time
	Host      string
	Container string // container id, or a prefix of it of 8+ characters
	Image     string // image_ref or image_digest
	Kinds     []string
	Limit     int // 0: no limit
}

// where renders s as a WHERE clause for a table with the given columns.
func (s Selection) where(hasKind bool) string {
	var c []string
	if !s.From.IsZero() {
		c = append(c, fmt.Sprintf("ts >= toDateTime(%d)", s.From.Unix()))
	}
	if !s.To.IsZero() {
		c = append(c, fmt.Sprintf("ts <= toDateTime(%d)", s.To.Unix()))
	}
	if s.Host != "" {
		c = append(c, "host = "+quote(s.Host))
	}
	if s.Container != "" {
		if len(s.Container) >= 8 && len(s.Container) < 64 {
			c = append(c, fmt.Sprintf("(container_id = %s OR startsWith(container_id, %s) OR container_name = %s)",
				quote(s.Container), quote(s.Container), quote(s.Container)))
		} else {
			c = append(c, fmt.Sprintf("(container_id = %s OR container_name = %s)", quote(s.Container), quote(s.Container)))
		}
	}
	if s.Image != "" {
		c = append(c, fmt.Sprintf("(image_ref = %s OR image_digest = %s)", quote(s.Image), quote(s.Image)))
	}
	if hasKind && len(s.Kinds) > 0 {
		q := make([]string, len(s.Kinds))
		for i, k := range s.Kinds {
			q[i] = quote(k)
		}
		c = append(c, "kind IN ("+strings.Join(q, ", ")+")")
	}
	if len(c) == 0 {
		return ""
	}
	return " WHERE " + strings.Join(c, " AND ")
}

// inRange drops the sub-second part the DateTime filter cannot see.
func (s Selection) inRange(ev *containv1.Event) bool {
	ns := ev.GetWallNs()
	return (s.From.IsZero() || ns >= s.From.UnixNano()) && (s.To.IsZero() || ns < s.To.UnixNano())
}

// eventCols are read back by Events, in scan order.
const eventCols = `ts, ts_ns, event_id, kind, host, container_id, container_name, image_ref, image_digest,
 mono_ns, cgroup_id, profile_ref, schema_version, pid, tgid, ppid, ns_pid, uid, gid, euid, comm, non_utf8,
 exec_filename, exec_argv, exec_argc, exec_argv_truncated, exec_cwd, exec_exe,
 proc_op, proc_child_tgid, proc_exit_code,
 syscall_mode, syscall_nr, syscall_name, syscall_args, syscall_ret, syscall_count, syscall_sequence,
 net_op, net_protocol, net_family, local_addr, local_port, remote_addr, remote_port, net_result,
 file_op, file_path, file_new_path, file_flags, file_mode, file_result, file_uid, file_gid,
 file_path_relative, file_path_unresolved, file_new_path_unresolved,
 loss_source, loss_reason, loss_count,
 ct_runtime, ct_cgroup_path, ct_bundle, ct_init_pid, ct_pod, ct_namespace, ct_addresses, ct_host_network,
 label_keys, label_values, raw`

// Events calls fn with every event s selects, in time order (ts, ts_ns,
// then id). An event is its stored protobuf when the store kept it
// (store.store_raw) and is otherwise rebuilt from the columns: every field
// the store writes comes back, in the form the pipeline sent it (an IPv4
// address as 16 IPv4-mapped bytes).
func (r *Reader) Events(ctx context.Context, s Selection, fn func(*containv1.Event) error) error {
	q := "SELECT " + eventCols + " FROM events" + s.where(true) + " ORDER BY ts, ts_ns, event_id"
	if s.Limit > 0 {
		q += fmt.Sprintf(" LIMIT %d", s.Limit)
	}
	rows, err := r.conn.Query(ctx, q)
	if err != nil {
		return fmt.Errorf("store: reading events at clickhouse %s: %w", r.addr, err)
	}
	defer rows.Close()
	for rows.Next() {
		var x eventScan
		if err := rows.Scan(x.dest()...); err != nil {
			return fmt.Errorf("store: reading events: %w", err)
		}
		ev, err := x.event()
		if err != nil {
			return err
		}
		if !s.inRange(ev) {
			continue
		}
		if err := fn(ev); err != nil {
			return err
		}
	}
	if err := rows.Err(); err != nil {
		return fmt.Errorf("store: reading events: %w", err)
	}
	return nil
}

// eventScan holds one events row as scanned.
type eventScan struct {
	ts                                             time.Time
	tsNs                                           uint32
	id                                             uuid.UUID
	kind, host, cid, cname, imgRef, imgDigest      string
	mono, cgroup                                   uint64
	profileRef                                     string
	schema, pid, tgid, ppid, nsPid, uid, gid, euid uint32
	comm                                           string
	nonUTF8                                        uint8
	execFile                                       string
	argv                                           []string
	argc                                           uint32
	argvTrunc                                      uint8
	cwd, exe                                       string
	procOp                                         string
	childTgid                                      uint32
	exitCode                                       int32
	scMode                                         string
	scNr                                           uint32
	scName                                         string
	scArgs                                         []uint64
	scRet                                          int64
	scCount                                        uint64
	scSeq                                          []uint32
	netOp, netProto                                string
	family                                         uint16
	laddr                                          string
	lport                                          uint16
	raddr                                          string
	rport                                          uint16
	netResult                                      int32
	fileOp, path, newPath                          string
	flags, mode                                    uint32
	fileResult                                     int32
	fuid, fgid                                     uint32
	relative, unresolved, newUnresolved            uint8
	lossSource, lossReason                         string
	lossCount                                      uint64
	runtime, cgPath, bundle                        string
	initPid                                        uint32
	pod, namespace                                 string
	addrs                                          []string
	hostNet                                        uint8
	labelKeys, labelVals                           []string
	raw                                            string
}

func (x *eventScan) dest() []any {
	return []any{&x.ts, &x.tsNs, &x.id, &x.kind, &x.host, &x.cid, &x.cname, &x.imgRef, &x.imgDigest,
		&x.mono, &x.cgroup, &x.profileRef, &x.schema, &x.pid, &x.tgid, &x.ppid, &x.nsPid, &x.uid, &x.gid, &x.euid, &x.comm, &x.nonUTF8,
		&x.execFile, &x.argv, &x.argc, &x.argvTrunc, &x.cwd, &x.exe,
		&x.procOp, &x.childTgid, &x.exitCode,
		&x.scMode, &x.scNr, &x.scName, &x.scArgs, &x.scRet, &x.scCount, &x.scSeq,
		&x.netOp, &x.netProto, &x.family, &x.laddr, &x.lport, &x.raddr, &x.rport, &x.netResult,
		&x.fileOp, &x.path, &x.newPath, &x.flags, &x.mode, &x.fileResult, &x.fuid, &x.fgid,
		&x.relative, &x.unresolved, &x.newUnresolved,
		&x.lossSource, &x.lossReason, &x.lossCount,
		&x.runtime, &x.cgPath, &x.bundle, &x.initPid, &x.pod, &x.namespace, &x.addrs, &x.hostNet,
		&x.labelKeys, &x.labelVals, &x.raw}
}

// event rebuilds the event (see Events).
func (x *eventScan) event() (*containv1.Event, error) {
	if x.raw != "" {
		ev := &containv1.Event{}
		if err := proto.Unmarshal([]byte(x.raw), ev); err != nil {
			return nil, fmt.Errorf("store: event %s: raw: %w", x.id, err)
		}
		return ev, nil
	}
	id := x.id
	ev := &containv1.Event{
		Id: id[:], Kind: containv1.Kind(kindNames.number(x.kind)), Host: x.host,
		ContainerId: x.cid, ContainerName: x.cname, ImageRef: x.imgRef, ImageDigest: x.imgDigest,
		MonoNs: x.mono, WallNs: x.ts.UnixNano() + int64(x.tsNs), CgroupId: x.cgroup,
		ProfileRef: x.profileRef, SchemaVersion: x.schema,
	}
	proc := &containv1.Process{Pid: x.pid, Tgid: x.tgid, Ppid: x.ppid, NsPid: x.nsPid, Uid: x.uid, Gid: x.gid, Euid: x.euid, Comm: x.comm}
	switch ev.Kind {
	case containv1.Kind_KIND_EXEC:
		ev.Body = &containv1.Event_Exec{Exec: &containv1.Exec{Proc: proc, Filename: x.execFile, Argv: x.argv, Argc: x.argc,
			ArgvTruncated: x.argvTrunc != 0, Cwd: x.cwd, Exe: x.exe, NonUtf8: x.nonUTF8 != 0}}
	case containv1.Kind_KIND_PROCESS:
		ev.Body = &containv1.Event_Process{Process: &containv1.ProcessLifecycle{Proc: proc,
			Op: containv1.ProcessLifecycle_Op(procOpNames.number(x.procOp)), ChildTgid: x.childTgid, ExitCode: x.exitCode}}
	case containv1.Kind_KIND_SYSCALL:
		ev.Body = &containv1.Event_Syscall{Syscall: &containv1.Syscall{Proc: proc,
			Mode: containv1.Syscall_Mode(syscallModeNames.number(x.scMode)), Nr: x.scNr, Name: x.scName,
			Args: x.scArgs, Ret: x.scRet, Count: x.scCount, Sequence: x.scSeq}}
	case containv1.Kind_KIND_NETWORK:
		ev.Body = &containv1.Event_Network{Network: &containv1.Network{Proc: proc,
			Op:       containv1.Network_Op(netOpNames.number(x.netOp)),
			Protocol: containv1.Network_Protocol(netProtoNames.number(x.netProto)), Family: uint32(x.family),
			LocalAddr: addrBack(x.laddr), LocalPort: uint32(x.lport), RemoteAddr: addrBack(x.raddr), RemotePort: uint32(x.rport),
			Result: x.netResult}}
	case containv1.Kind_KIND_FILE:
		ev.Body = &containv1.Event_File{File: &containv1.File{Proc: proc, Op: containv1.File_Op(fileOpNames.number(x.fileOp)),
			Path: x.path, NewPath: x.newPath, Flags: x.flags, Mode: x.mode, Result: x.fileResult, Uid: x.fuid, Gid: x.fgid,
			PathRelative: x.relative != 0, PathUnresolved: x.unresolved != 0, NewPathUnresolved: x.newUnresolved != 0,
			NonUtf8: x.nonUTF8 != 0}}
	case containv1.Kind_KIND_LOSS:
		ev.Body = &containv1.Event_Loss{Loss: &containv1.Loss{Source: x.lossSource, Reason: x.lossReason, Count: x.lossCount}}
	case containv1.Kind_KIND_CONTAINER:
		ct := &containv1.ContainerInfo{Runtime: x.runtime, CgroupPath: x.cgPath, Bundle: x.bundle, InitPid: x.initPid,
			Pod: x.pod, Namespace: x.namespace, HostNetwork: x.hostNet != 0}
		if len(x.labelKeys) > 0 {
			ct.Labels = make(map[string]string, len(x.labelKeys))
			for i, k := range x.labelKeys {
				if i < len(x.labelVals) {
					ct.Labels[k] = x.labelVals[i]
				}
			}
		}
		for _, a := range x.addrs {
			if p, err := parseAddr(a); err == nil {
				ct.Addresses = append(ct.Addresses, p)
			}
		}
		ev.Body = &containv1.Event_Container{Container: ct}
	}
	return ev, nil
}

// addrBack returns a FixedString(16) address as sent; all zeros (no
// address) as none.
func addrBack(s string) []byte {
	if s == "" || s == string(zero16) {
		return nil
	}
	return []byte(s)
}

// number is the reverse of name.
func (m enumNames) number(s string) protoreflect.EnumNumber {
	if s == "" {
		return 0
	}
	for n, name := range m {
		if name == s && name != strconv.Itoa(n) { // a defined name, not a number's text
			return protoreflect.EnumNumber(n)
		}
	}
	return 0
}

// LastEvent is the time of the last event s selects (zero: none).
func (r *Reader) LastEvent(ctx context.Context, s Selection) (time.Time, error) {
	var n uint64
	var last time.Time
	q := "SELECT count(), max(ts) FROM events" + s.where(true)
	if err := r.conn.QueryRow(ctx, q).Scan(&n, &last); err != nil {
		return time.Time{}, fmt.Errorf("store: reading events at clickhouse %s: %w", r.addr, err)
	}
	if n == 0 {
		return time.Time{}, nil
	}
	return last, nil
}

// Count is how many events s selects (to the second: a progress total).
func (r *Reader) Count(ctx context.Context, s Selection) (uint64, error) {
	var n uint64
	if err := r.conn.QueryRow(ctx, "SELECT count() FROM events"+s.where(true)).Scan(&n); err != nil {
		return 0, fmt.Errorf("store: counting events at clickhouse %s: %w", r.addr, err)
	}
	return n, nil
}
