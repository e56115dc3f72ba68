package store

import (
	"context"
	"testing"
	"time"
)

// TestKeptColumns: three INSERTs of the same events rows through one row
// buffer (appendBlock with keep): from the second on, the driver's
// String, integer, UUID, DateTime and FixedString columns take the
// storage the first one grew (the same arrays, no new growth), and every
// row reads back as sent (three copies of each distinct row, nothing
// mixed up between INSERTs). It fails if a driver version hides the
// storage from colSlices.
func TestKeptColumns(t *testing.T) {
	s := openStore(t, testConfig(t))
	ctx := context.Background()
	rs := newRowSet(false)
	for _, bt := range benchBatches(2, 1000) {
		rs.add(bt, time.Now(), nil)
	}
	buf := rs.events
	var first []uintptr
	for k := range 3 {
		batch, err := s.conn.PrepareBatch(ctx, buf.def.insertSQL())
		if err != nil {
			t.Fatal(err)
		}
		if err := appendBlock(batch, buf, true, nil); err != nil {
			t.Fatal(err)
		}
		if err := batch.Send(); err != nil {
			t.Fatal(err)
		}
		var ptrs []uintptr
		for _, kc := range buf.kept {
			for _, sl := range kc.slices {
				ptrs = append(ptrs, sl.Pointer())
			}
		}
		switch k {
		case 0:
			first = ptrs
		default:
			same := 0
			for i := range ptrs {
				if ptrs[i] == first[i] { // 0 for a column all empty strings
					same++
				}
			}
			if same != len(first) {
				t.Errorf("INSERT %d: %d of %d column arrays are the first INSERT's", k+1, same, len(first))
			}
		}
	}
	kept := 0
	for _, kc := range buf.kept {
		if len(kc.slices) > 0 {
			kept++
		}
	}
	if kept < 50 {
		t.Fatalf("storage kept for %d of %d columns (the driver's column layout changed?)", kept, len(buf.kept))
	}
	rows := uint64(buf.len())
	if n := queryUint(t, s, "SELECT count() FROM events"); n != 3*rows {
		t.Fatalf("%d rows, want %d", n, 3*rows)
	}
	if n := queryUint(t, s, `SELECT uniqExact(tuple(event_id, ts, ts_ns, kind, container_id, comm, pid, exec_filename, exec_cwd,
		syscall_name, syscall_ret, file_path, local_addr, remote_port, mono_ns, batch_seq)) FROM events`); n != rows {
		t.Fatalf("%d distinct rows, want %d", n, rows)
	}
	t.Logf("storage kept for %d of %d columns", kept, len(buf.kept))
}
