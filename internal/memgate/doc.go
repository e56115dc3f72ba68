// Package memgate holds back new work while the process is at its memory
// bound.
//
// Consumes: the Go runtime's live heap (after the last collection) and its
// soft memory limit (debug.SetMemoryLimit, set from memory.limit_mb).
//
// Emits: nothing; Wait returns how long it held the caller.
//
// Guarantees: Wait returns at once while the live heap is under Fraction of
// the limit, or when there is no limit; otherwise it returns when the heap
// is back under it, when ctx ends or after the caller's maximum, whichever
// comes first, so work is delayed, never stopped. A consumer that waits
// before each fetch leaves its backlog in JetStream (on disk) instead of in
// memory while the collector catches up (docs/design/027).
package memgate
