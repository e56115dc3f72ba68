package store

import (
	"encoding/binary"
	"fmt"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/google/uuid"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"

	"github.com/containsec/contain/schemas/containv1"
)

// eventRow is what one events, alerts or actions row is read from: the
// events table's values (f, read from the wire or from a decoded event),
// and for the other tables and the container body's columns the decoded
// event (ev; nil for a row read from the wire).
type eventRow struct {
	ev   *containv1.Event
	ct   *containv1.ContainerInfo
	id   uuid.UUID
	ts   time.Time
	tsNs uint32
	raw  string
	bi   batchInfo
	f    flatEvent
}

// batchInfo is what a row reads of its batch.
type batchInfo struct {
	host, stage, producer string
	seq                   uint64
}

func infoOf(b *containv1.Batch) batchInfo {
	return batchInfo{host: b.GetHost(), stage: b.GetStage(), producer: b.GetProducerId(), seq: b.GetSeq()}
}

// idNamespace derives stable ids for events that arrive without a valid
// 16-byte id (the same redelivered event gets the same id).
var idNamespace = uuid.MustParse("5b0c6f0e-6c2a-4c59-9d0e-3c6f1d8a2b10")

// maxTime is the last second a ClickHouse DateTime holds.
var maxTime = time.Unix(int64(^uint32(0)), 0)

// fill sets r for event i of a batch (bi) decoded; now stands in for a
// missing or negative wall time.
func (r *eventRow) fill(bi *batchInfo, i int, ev *containv1.Event, now time.Time, keepRaw bool) {
	*r = eventRow{ev: ev, bi: *bi, ct: ev.GetContainer(), id: rowID(bi, i, ev.GetId())}
	r.ts, r.tsNs = wallTime(ev.GetWallNs(), now)
	flatOf(ev, &r.f)
	if keepRaw {
		if raw, err := (proto.MarshalOptions{Deterministic: true}).Marshal(ev); err == nil {
			r.raw = string(raw)
		}
	}
}

// fillWire sets r for event i of a batch (bi) from its bytes (readWire);
// false: r is not set, the event is the decoder's.
func (r *eventRow) fillWire(bi *batchInfo, i int, raw []byte, now time.Time, a *arena) bool {
	id, wallNs, ok := readWire(raw, &r.f, a)
	if !ok {
		return false
	}
	r.ev, r.ct, r.raw, r.bi, r.id = nil, nil, "", *bi, rowID(bi, i, id)
	r.ts, r.tsNs = wallTime(wallNs, now)
	return true
}

// rowID is the row id of event i of a batch: its own 16-byte id, or one
// derived from the batch's producer, stage, sequence and position.
func rowID(bi *batchInfo, i int, id []byte) uuid.UUID {
	if len(id) == 16 {
		return uuid.UUID(id)
	}
	return derivedID([]byte(bi.producer), []byte(bi.stage), bi.seq, i, id)
}

// eventID is the row id of event i of batch b: its own 16-byte id, or one
// derived from the batch's producer, stage, sequence and position.
func eventID(b *containv1.Batch, i int, ev *containv1.Event) uuid.UUID {
	id := ev.GetId()
	if len(id) == 16 {
		return uuid.UUID(id)
	}
	return derivedID([]byte(b.GetProducerId()), []byte(b.GetStage()), b.GetSeq(), i, id)
}

// derivedID is the row id of event i of a batch whose id is not 16 bytes
// (see eventID).
func derivedID(producer, stage []byte, seq uint64, i int, id []byte) uuid.UUID {
	key := make([]byte, 0, len(producer)+len(stage)+len(id)+17)
	key = append(key, producer...)
	key = append(key, 0)
	key = append(key, stage...)
	key = binary.BigEndian.AppendUint64(key, seq)
	key = binary.BigEndian.AppendUint64(key, uint64(i))
	key = append(key, id...)
	return uuid.NewSHA1(idNamespace, key)
}

// wallTime splits Unix ns into a DateTime second and the ns within it.
// (Splitting the integer, not truncating a time.Time: Truncate was ~2% of
// the store's CPU; TestWallTime holds it to the Truncate form.)
func wallTime(ns int64, now time.Time) (time.Time, uint32) {
	if ns <= 0 {
		ns = now.UnixNano()
	}
	sec, sub := ns/1e9, ns%1e9
	if max := maxTime.Unix(); sec > max || sec == max && sub > 0 {
		return maxTime, 0
	}
	return time.Unix(sec, 0).UTC(), uint32(sub)
}

func procOf(ev *containv1.Event) *containv1.Process {
	switch b := ev.GetBody().(type) {
	case *containv1.Event_Exec:
		return b.Exec.GetProc()
	case *containv1.Event_Syscall:
		return b.Syscall.GetProc()
	case *containv1.Event_Network:
		return b.Network.GetProc()
	case *containv1.Event_File:
		return b.File.GetProc()
	case *containv1.Event_Process:
		return b.Process.GetProc()
	}
	return nil
}

// kindOf is the event's kind, from the body when the envelope omits it.
func kindOf(ev *containv1.Event) containv1.Kind {
	if k := ev.GetKind(); k != containv1.Kind_KIND_UNSPECIFIED {
		return k
	}
	switch ev.GetBody().(type) {
	case *containv1.Event_Exec:
		return containv1.Kind_KIND_EXEC
	case *containv1.Event_Syscall:
		return containv1.Kind_KIND_SYSCALL
	case *containv1.Event_Network:
		return containv1.Kind_KIND_NETWORK
	case *containv1.Event_File:
		return containv1.Kind_KIND_FILE
	case *containv1.Event_Alert:
		return containv1.Kind_KIND_ALERT
	case *containv1.Event_Action:
		return containv1.Kind_KIND_ACTION
	case *containv1.Event_Loss:
		return containv1.Kind_KIND_LOSS
	case *containv1.Event_Container:
		return containv1.Kind_KIND_CONTAINER
	case *containv1.Event_Process:
		return containv1.Kind_KIND_PROCESS
	case *containv1.Event_Commit:
		return containv1.Kind_KIND_COMMIT
	}
	return containv1.Kind_KIND_UNSPECIFIED
}

// enumNames maps an enum's numbers to lower-case names without prefix
// ("OP_CONNECT" -> "connect"); 0 (unspecified) maps to "", a number the
// enum does not define to its decimal text. Indexed by number up to the
// largest defined (a column reads one per row).
type enumNames []string

func newEnumNames(d protoreflect.EnumDescriptor, prefix string) enumNames {
	vals := d.Values()
	top := protoreflect.EnumNumber(0)
	for i := range vals.Len() {
		top = max(top, vals.Get(i).Number())
	}
	m := make(enumNames, top+1)
	for i := range m {
		if i > 0 {
			m[i] = strconv.Itoa(i)
		}
	}
	for i := range vals.Len() {
		if v := vals.Get(i); v.Number() > 0 {
			m[v.Number()] = strings.ToLower(strings.TrimPrefix(string(v.Name()), prefix))
		}
	}
	return m
}

func (m enumNames) name(n protoreflect.EnumNumber) string {
	if n >= 0 && int(n) < len(m) {
		return m[n]
	}
	return strconv.Itoa(int(n))
}

var (
	kindNames        = newEnumNames(containv1.Kind(0).Descriptor(), "KIND_")
	procOpNames      = newEnumNames(containv1.ProcessLifecycle_Op(0).Descriptor(), "OP_")
	syscallModeNames = newEnumNames(containv1.Syscall_Mode(0).Descriptor(), "MODE_")
	netOpNames       = newEnumNames(containv1.Network_Op(0).Descriptor(), "OP_")
	netProtoNames    = newEnumNames(containv1.Network_Protocol(0).Descriptor(), "PROTOCOL_")
	fileOpNames      = newEnumNames(containv1.File_Op(0).Descriptor(), "OP_")
	actionTypeNames  = newEnumNames(containv1.Action_Type(0).Descriptor(), "TYPE_")
	actionResNames   = newEnumNames(containv1.Action_Result(0).Descriptor(), "RESULT_")
)

// zero16 is the address of events without one; never written to.
var zero16 = make([]byte, 16)

// addr16 is a FixedString(16) address: 16 bytes as sent, 4 bytes as
// IPv4-mapped IPv6, anything else all zeros (IPv6NumToString gives "::").
// The column copies the bytes, so the result may alias b or zero16.
func addr16(b []byte) []byte {
	switch len(b) {
	case 16:
		return b
	case 4:
		out := make([]byte, 16)
		out[10], out[11] = 0xff, 0xff
		copy(out[12:], b)
		return out
	}
	return zero16
}

// refID turns an id that refers to another row into a UUID: zero when
// absent, a stable derived value when not 16 bytes.
func refID(b []byte) uuid.UUID {
	switch len(b) {
	case 0:
		return uuid.UUID{}
	case 16:
		return uuid.UUID(b)
	}
	return uuid.NewSHA1(idNamespace, b)
}

func port(p uint32) uint16 {
	if p > 0xffff {
		return 0
	}
	return uint16(p)
}

func b2u(b bool) uint8 {
	if b {
		return 1
	}
	return 0
}

// labels returns a container's labels as sorted parallel arrays.
func labels(m map[string]string) (keys, vals []string) {
	if len(m) == 0 {
		return []string{}, []string{}
	}
	keys = make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	vals = make([]string, len(keys))
	for i, k := range keys {
		vals[i] = m[k]
	}
	return keys, vals
}

// nonNil keeps Array columns from receiving nil slices.
func nonNil[T any](s []T) []T {
	if s == nil {
		return []T{}
	}
	return s
}

type row = *eventRow

// The parts of an events row (tableDef.part): the columns of a body are
// buffered only for the rows of that body, their value for every other
// row is the zero row's (the body's fields of flatEvent are zero unless
// the event has that body, and a row's container columns read ct, nil
// unless the event is a container's; TestEventPartsZero). A row of one
// kind buffers ~35 of the 75 columns.
const (
	partNone uint8 = iota
	partExec
	partSyscall
	partNetwork
	partFile
	partLoss
	partProcess
	partContainer
)

func eventPart(r row) uint8 {
	if r.ct != nil {
		return partContainer
	}
	switch r.f.body {
	case evExec:
		return partExec
	case evSyscall:
		return partSyscall
	case evNetwork:
		return partNetwork
	case evFile:
		return partFile
	case evLoss:
		return partLoss
	case evProcess:
		return partProcess
	}
	return partNone
}

var eventsTable = &tableDef[row]{name: "events", cols: []colDef[row]{
	col("ts", func(r row) time.Time { return r.ts }),
	col("ts_ns", func(r row) uint32 { return r.tsNs }),
	col("event_id", func(r row) uuid.UUID { return r.id }),
	col("kind", func(r row) string { return kindNames.name(r.f.rowKind().Number()) }),
	col("host", func(r row) string { return r.f.host }),
	col("container_id", func(r row) string { return r.f.containerID }),
	colByKey("container_name", func(r row) string { return r.f.containerName }),
	colByKey("image_ref", func(r row) string { return r.f.imageRef }),
	colByKey("image_digest", func(r row) string { return r.f.imageDig }),
	col("mono_ns", func(r row) uint64 { return r.f.monoNs }),
	col("cgroup_id", func(r row) uint64 { return r.f.cgroupID }),
	colByKey("profile_ref", func(r row) string { return r.f.profileRef }),
	col("schema_version", func(r row) uint32 { return r.f.schemaVersion }),
	col("pid", func(r row) uint32 { return r.f.pid }),
	col("tgid", func(r row) uint32 { return r.f.tgid }),
	col("ppid", func(r row) uint32 { return r.f.ppid }),
	col("ns_pid", func(r row) uint32 { return r.f.nsPid }),
	col("uid", func(r row) uint32 { return r.f.uid }),
	col("gid", func(r row) uint32 { return r.f.gid }),
	col("euid", func(r row) uint32 { return r.f.euid }),
	col("comm", func(r row) string { return r.f.comm }),
	col("non_utf8", func(r row) uint8 { return b2u(r.f.nonUTF8) }),
	colIn(partExec, "exec_filename", func(r row) string { return r.f.execFilename }),
	colIn(partExec, "exec_argv", func(r row) []string { return nonNil(r.f.execArgv) }),
	colIn(partExec, "exec_argc", func(r row) uint32 { return r.f.execArgc }),
	colIn(partExec, "exec_argv_truncated", func(r row) uint8 { return b2u(r.f.execArgvTruncated) }),
	colIn(partExec, "exec_cwd", func(r row) string { return r.f.execCwd }),
	colIn(partExec, "exec_exe", func(r row) string { return r.f.execExe }),
	col("proc_op", func(r row) string { return procOpNames.name(protoreflect.EnumNumber(r.f.procOp)) }),
	colIn(partProcess, "proc_child_tgid", func(r row) uint32 { return r.f.procChildTgid }),
	colIn(partProcess, "proc_exit_code", func(r row) int32 { return r.f.procExitCode }),
	col("syscall_mode", func(r row) string { return syscallModeNames.name(protoreflect.EnumNumber(r.f.sysMode)) }),
	colIn(partSyscall, "syscall_nr", func(r row) uint32 { return r.f.sysNr }),
	col("syscall_name", func(r row) string { return r.f.sysName }),
	colIn(partSyscall, "syscall_args", func(r row) []uint64 { return nonNil(r.f.sysArgs) }),
	colIn(partSyscall, "syscall_ret", func(r row) int64 { return r.f.sysRet }),
	colIn(partSyscall, "syscall_count", func(r row) uint64 { return r.f.sysCount }),
	colIn(partSyscall, "syscall_sequence", func(r row) []uint32 { return nonNil(r.f.sysSeq) }),
	col("net_op", func(r row) string { return netOpNames.name(protoreflect.EnumNumber(r.f.netOp)) }),
	col("net_protocol", func(r row) string { return netProtoNames.name(protoreflect.EnumNumber(r.f.netProto)) }),
	colIn(partNetwork, "net_family", func(r row) uint16 { return uint16(min(r.f.netFamily, 0xffff)) }),
	colIn(partNetwork, "local_addr", func(r row) []byte { return addr16(r.f.localAddr) }),
	colIn(partNetwork, "local_port", func(r row) uint16 { return port(r.f.localPort) }),
	colIn(partNetwork, "remote_addr", func(r row) []byte { return addr16(r.f.remoteAddr) }),
	colIn(partNetwork, "remote_port", func(r row) uint16 { return port(r.f.remotePort) }),
	colIn(partNetwork, "net_result", func(r row) int32 { return r.f.netResult }),
	col("file_op", func(r row) string { return fileOpNames.name(protoreflect.EnumNumber(r.f.fileOp)) }),
	colIn(partFile, "file_path", func(r row) string { return r.f.filePath }),
	colIn(partFile, "file_new_path", func(r row) string { return r.f.fileNewPath }),
	colIn(partFile, "file_flags", func(r row) uint32 { return r.f.fileFlags }),
	colIn(partFile, "file_mode", func(r row) uint32 { return r.f.fileMode }),
	colIn(partFile, "file_result", func(r row) int32 { return r.f.fileResult }),
	colIn(partFile, "file_uid", func(r row) uint32 { return r.f.fileUID }),
	colIn(partFile, "file_gid", func(r row) uint32 { return r.f.fileGID }),
	colIn(partFile, "file_path_relative", func(r row) uint8 { return b2u(r.f.filePathRelative) }),
	colIn(partFile, "file_path_unresolved", func(r row) uint8 { return b2u(r.f.filePathUnresolved) }),
	colIn(partFile, "file_new_path_unresolved", func(r row) uint8 { return b2u(r.f.fileNewPathUnresolved) }),
	col("loss_source", func(r row) string { return r.f.lossSource }),
	colIn(partLoss, "loss_reason", func(r row) string { return r.f.lossReason }),
	colIn(partLoss, "loss_count", func(r row) uint64 { return r.f.lossCount }),
	col("ct_runtime", func(r row) string { return r.ct.GetRuntime() }),
	colIn(partContainer, "ct_cgroup_path", func(r row) string { return r.ct.GetCgroupPath() }),
	colIn(partContainer, "ct_bundle", func(r row) string { return r.ct.GetBundle() }),
	colIn(partContainer, "ct_init_pid", func(r row) uint32 { return r.ct.GetInitPid() }),
	colIn(partContainer, "ct_pod", func(r row) string { return r.ct.GetPod() }),
	colIn(partContainer, "ct_namespace", func(r row) string { return r.ct.GetNamespace() }),
	colIn(partContainer, "ct_addresses", func(r row) []string { return addrStrings(r.ct.GetAddresses()) }),
	colIn(partContainer, "ct_host_network", func(r row) uint8 { return b2u(r.ct.GetHostNetwork()) }),
	colIn(partContainer, "label_keys", func(r row) []string { k, _ := labels(r.ct.GetLabels()); return k }),
	colIn(partContainer, "label_values", func(r row) []string { _, v := labels(r.ct.GetLabels()); return v }),
	col("batch_stage", func(r row) string { return r.bi.stage }),
	col("batch_producer", func(r row) string { return r.bi.producer }),
	col("batch_seq", func(r row) uint64 { return r.bi.seq }),
	col("raw", func(r row) string { return r.raw }),
}, part: eventPart, zero: &eventRow{}, key: func(r row) string { return r.f.containerID }}

// reasons flattens an alert's reasons into parallel arrays and the union
// of their MITRE techniques.
func reasons(a *containv1.Alert) (codes, msgs []string, scores []float64, mitre []string) {
	rs := a.GetReasons()
	codes, msgs, scores = make([]string, len(rs)), make([]string, len(rs)), make([]float64, len(rs))
	mitre = []string{}
	for i, r := range rs {
		codes[i], msgs[i], scores[i] = r.GetCode(), r.GetMessage(), r.GetScore()
		for _, t := range r.GetMitre() {
			if !slices.Contains(mitre, t) {
				mitre = append(mitre, t)
			}
		}
	}
	return codes, msgs, scores, mitre
}

func trigger(r row) *containv1.Event { return r.ev.GetAlert().GetTrigger() }

var alertsTable = &tableDef[row]{name: "alerts", cols: []colDef[row]{
	col("ts", func(r row) time.Time { return r.ts }),
	col("ts_ns", func(r row) uint32 { return r.tsNs }),
	col("alert_id", func(r row) uuid.UUID { return r.id }),
	col("incident_id", func(r row) uuid.UUID { return refID(r.ev.GetAlert().GetIncidentId()) }),
	col("pod", func(r row) string { return r.ev.GetAlert().GetPod() }),
	col("namespace", func(r row) string { return r.ev.GetAlert().GetNamespace() }),
	col("label_keys", func(r row) []string { k, _ := labels(r.ev.GetAlert().GetLabels()); return k }),
	col("label_values", func(r row) []string { _, v := labels(r.ev.GetAlert().GetLabels()); return v }),
	col("host", func(r row) string { return r.ev.GetHost() }),
	col("container_id", func(r row) string { return r.ev.GetContainerId() }),
	col("container_name", func(r row) string { return r.ev.GetContainerName() }),
	col("image_ref", func(r row) string { return r.ev.GetImageRef() }),
	col("image_digest", func(r row) string { return r.ev.GetImageDigest() }),
	col("cgroup_id", func(r row) uint64 { return r.ev.GetCgroupId() }),
	col("profile_ref", func(r row) string { return r.ev.GetProfileRef() }),
	col("score", func(r row) float64 { return r.ev.GetAlert().GetScore() }),
	col("rule", func(r row) string { return r.ev.GetAlert().GetRule() }),
	col("priority", func(r row) string { return r.ev.GetAlert().GetPriority() }),
	col("baseline_version", func(r row) string { return r.ev.GetAlert().GetBaselineVersion() }),
	col("count", func(r row) uint64 { return r.ev.GetAlert().GetCount() }),
	col("reason_codes", func(r row) []string { c, _, _, _ := reasons(r.ev.GetAlert()); return c }),
	col("reason_messages", func(r row) []string { _, m, _, _ := reasons(r.ev.GetAlert()); return m }),
	col("reason_scores", func(r row) []float64 { _, _, s, _ := reasons(r.ev.GetAlert()); return s }),
	col("mitre", func(r row) []string { _, _, _, t := reasons(r.ev.GetAlert()); return t }),
	col("evidence_ids", func(r row) []uuid.UUID {
		ids := r.ev.GetAlert().GetEvidenceIds()
		out := make([]uuid.UUID, len(ids))
		for i, id := range ids {
			out[i] = refID(id)
		}
		return out
	}),
	col("trigger_event_id", func(r row) uuid.UUID { return refID(trigger(r).GetId()) }),
	col("trigger_kind", func(r row) string {
		if t := trigger(r); t != nil {
			return kindNames.name(kindOf(t).Number())
		}
		return ""
	}),
	col("trigger_ts", func(r row) time.Time {
		if t := trigger(r); t.GetWallNs() > 0 {
			ts, _ := wallTime(t.GetWallNs(), r.ts)
			return ts
		}
		return time.Unix(0, 0)
	}),
	col("trigger_ts_ns", func(r row) uint32 {
		if t := trigger(r); t.GetWallNs() > 0 {
			_, ns := wallTime(t.GetWallNs(), r.ts)
			return ns
		}
		return 0
	}),
	col("trigger_pid", func(r row) uint32 { return procOf(trigger(r)).GetTgid() }),
	col("trigger_comm", func(r row) string { return procOf(trigger(r)).GetComm() }),
	col("trigger_exec_filename", func(r row) string { return trigger(r).GetExec().GetFilename() }),
	col("trigger_exec_argv", func(r row) []string { return nonNil(trigger(r).GetExec().GetArgv()) }),
	col("trigger_syscall_name", func(r row) string { return trigger(r).GetSyscall().GetName() }),
	col("trigger_remote_addr", func(r row) []byte { return addr16(trigger(r).GetNetwork().GetRemoteAddr()) }),
	col("trigger_remote_port", func(r row) uint16 { return port(trigger(r).GetNetwork().GetRemotePort()) }),
	col("trigger_file_path", func(r row) string { return trigger(r).GetFile().GetPath() }),
	col("trigger_raw", func(r row) string {
		t := trigger(r)
		if t == nil {
			return ""
		}
		raw, err := proto.MarshalOptions{Deterministic: true}.Marshal(t)
		if err != nil {
			return ""
		}
		return string(raw)
	}),
	col("batch_stage", func(r row) string { return r.bi.stage }),
	col("batch_producer", func(r row) string { return r.bi.producer }),
	col("batch_seq", func(r row) uint64 { return r.bi.seq }),
}}

var actionsTable = &tableDef[row]{name: "actions", cols: []colDef[row]{
	col("ts", func(r row) time.Time { return r.ts }),
	col("ts_ns", func(r row) uint32 { return r.tsNs }),
	col("action_id", func(r row) uuid.UUID { return r.id }),
	col("host", func(r row) string { return r.ev.GetHost() }),
	col("container_id", func(r row) string { return r.ev.GetContainerId() }),
	col("container_name", func(r row) string { return r.ev.GetContainerName() }),
	col("image_ref", func(r row) string { return r.ev.GetImageRef() }),
	col("image_digest", func(r row) string { return r.ev.GetImageDigest() }),
	col("cgroup_id", func(r row) uint64 { return r.ev.GetCgroupId() }),
	col("type", func(r row) string { return actionTypeNames.name(r.ev.GetAction().GetType().Number()) }),
	col("result", func(r row) string { return actionResNames.name(r.ev.GetAction().GetResult().Number()) }),
	col("actor", func(r row) string { return r.ev.GetAction().GetActor() }),
	col("reason", func(r row) string { return r.ev.GetAction().GetReason() }),
	col("method", func(r row) string { return r.ev.GetAction().GetMethod() }),
	col("detail", func(r row) string { return r.ev.GetAction().GetDetail() }),
	col("alert_id", func(r row) uuid.UUID { return refID(r.ev.GetAction().GetAlertId()) }),
	col("score", func(r row) float64 { return r.ev.GetAction().GetScore() }),
	col("latency_ns", func(r row) int64 { return r.ev.GetAction().GetLatencyNs() }),
	col("batch_stage", func(r row) string { return r.bi.stage }),
	col("batch_producer", func(r row) string { return r.bi.producer }),
	col("batch_seq", func(r row) uint64 { return r.bi.seq }),
}}

// rowSet buffers the rows of one fetch for the three tables.
type rowSet struct {
	events, alerts, actions *rowBuf[row]
	keepRaw                 bool
	scratch                 eventRow // column getters copy out of it
	arena                   arena    // the rows' repeated values read from the wire
	added                   idSet    // ids added since the last reset
	// local are the per-shard sets of write=local (design 023), made on
	// first use.
	local []*rowSet
}

func newRowSet(keepRaw bool) *rowSet { return newRowSetCap(keepRaw, 1024) }

// newRowSetCap preallocates capacity events rows.
func newRowSetCap(keepRaw bool, capacity int) *rowSet {
	return &rowSet{
		events:  newRowBuf(eventsTable, capacity),
		alerts:  newRowBuf(alertsTable, 16),
		actions: newRowBuf(actionsTable, 16),
		keepRaw: keepRaw,
		added:   idSet{},
	}
}

// add routes every event of b to its table: alerts and actions by body,
// everything else to events. It never fails: proto getters are nil-safe and
// every value is bounded to its column type. A row whose id is in skip,
// or was already added since the last reset, is left out; add returns how
// many were.
func (s *rowSet) add(b *containv1.Batch, now time.Time, skip idSet) (dups int) {
	bi := infoOf(b)
	for i, ev := range b.GetEvents() {
		if ev == nil {
			continue
		}
		r := &s.scratch
		r.fill(&bi, i, ev, now, s.keepRaw)
		if _, ok := skip[r.id]; ok {
			dups++
			continue
		}
		if _, ok := s.added[r.id]; ok {
			dups++
			continue
		}
		s.added[r.id] = struct{}{}
		switch ev.GetBody().(type) {
		case *containv1.Event_Alert:
			s.alerts.add(r)
		case *containv1.Event_Action:
			s.actions.add(r)
		default:
			s.events.add(r)
		}
	}
	return dups
}

func (s *rowSet) len() int { return s.events.len() + s.alerts.len() + s.actions.len() }

func (s *rowSet) reset() {
	s.events.reset()
	s.alerts.reset()
	s.actions.reset()
	clear(s.added)
}

// addrStrings renders 16-byte (or 4-byte) addresses as text; an address of
// another length is kept as hex so nothing is silently dropped.
func addrStrings(addrs [][]byte) []string {
	out := make([]string, 0, len(addrs))
	for _, b := range addrs {
		if a, ok := netip.AddrFromSlice(b); ok {
			out = append(out, a.Unmap().String())
			continue
		}
		out = append(out, fmt.Sprintf("%x", b))
	}
	return out
}
