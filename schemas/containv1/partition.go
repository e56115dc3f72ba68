package containv1

import (
	"hash/fnv"
	"strconv"
	"strings"
)

// Partitions of CONTAIN_EVENTS (docs/design/022-analyzer-partitions.md).
// With n > 1 partitions the enricher publishes each event on
// EventsPartitionSubject(host, Partition(key, n)), key being the baseline
// group key of the event's container (analyzer.Router), and each analyzer
// instance consumes the partitions it holds a lease on. With n <= 1
// events go to EventsSubject(host), as before partitions existed.

// PartitionPrefix starts the partition token of a partitioned events
// subject: contain.v1.events.<host>.p<partition>.
const PartitionPrefix = "p"

// MaxPartitions bounds the number of partitions.
const MaxPartitions = 1024

// Partition is the partition of a baseline group key among n: FNV-1a (32
// bits) of the key, modulo n; 0 when n <= 1. It is the contract between
// the enricher (which routes) and the analyzer (which owns): both compute
// it from the same key, so it must never change for a given key and n.
func Partition(key string, n int) int {
	if n <= 1 {
		return 0
	}
	h := fnv.New32a()
	_, _ = h.Write([]byte(key))
	return int(h.Sum32() % uint32(n))
}

// PartitionToken is the subject token of partition p.
func PartitionToken(p int) string { return PartitionPrefix + strconv.Itoa(p) }

// EventsPartitionSubject carries host's enriched events of partition p.
func EventsPartitionSubject(host string, p int) string {
	return EventsSubject(host) + "." + PartitionToken(p)
}

// EventsPartitionFilter selects partition p of every host.
func EventsPartitionFilter(p int) string {
	return SubjectPrefix + ".events.*." + PartitionToken(p)
}

// ParsePartitionToken is the partition a subject token names, ok false
// when the token is not p<decimal> below MaxPartitions.
func ParsePartitionToken(tok string) (int, bool) {
	digits, ok := strings.CutPrefix(tok, PartitionPrefix)
	if !ok || digits == "" || len(digits) > 4 || (len(digits) > 1 && digits[0] == '0') {
		return 0, false
	}
	p, err := strconv.Atoi(digits)
	if err != nil || p < 0 || p >= MaxPartitions || strings.Trim(digits, "0123456789") != "" {
		return 0, false
	}
	return p, true
}
