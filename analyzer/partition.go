package analyzer

import (
	"cmp"
	"hash/fnv"
	"slices"
	"strconv"

	"github.com/containsec/contain/schemas/containv1"
)

// Router routes events to the partition of their baseline group; it is
// the enricher's enricher.Router, built from the analyzer's own config so
// that both compute the same group key (GroupKey, BaselineKey) and the
// same partition (containv1.Partition).
type Router struct {
	mode string
	n    int
}

// NewRouter is the routing of cfg (analyzer.group_by, analyzer.partitions).
func NewRouter(cfg Config) Router { return Router{mode: cfg.GroupBy, n: max(cfg.Partitions, 1)} }

// Partitions is the number of partitions.
func (r Router) Partitions() int { return r.n }

// Group is the baseline group a container's KIND_CONTAINER event names.
func (r Router) Group(ci *containv1.ContainerInfo) string { return GroupKey(r.mode, ci) }

// Partition is the partition of an event of a container of group.
func (r Router) Partition(group string, ev *containv1.Event) int {
	return containv1.Partition(BaselineKey(r.mode, group, ev), r.n)
}

// assign decides which member owns each of n partitions. Every (member,
// partition) pair has a rendezvous score; taking pairs from the highest
// score down, a partition goes to the first member that still has room
// (a member holds at most ceil(n/len(members))). A member joining or
// leaving moves few partitions besides its own share. It is pure and
// deterministic: all instances compute the same assignment from the same
// members, in any order.
func assign(members []string, n int) []string {
	out := make([]string, n)
	if len(members) == 0 || n <= 0 {
		return out
	}
	ms := slices.Clone(members)
	slices.Sort(ms)
	ms = slices.Compact(ms)
	room := (n + len(ms) - 1) / len(ms)
	type pair struct {
		m     string
		p     int
		score uint64
	}
	pairs := make([]pair, 0, n*len(ms))
	for p := range n {
		for _, m := range ms {
			pairs = append(pairs, pair{m, p, rendezvous(m, p)})
		}
	}
	slices.SortFunc(pairs, func(a, b pair) int {
		if c := cmp.Compare(b.score, a.score); c != 0 {
			return c
		}
		if c := cmp.Compare(a.p, b.p); c != 0 {
			return c
		}
		return cmp.Compare(a.m, b.m)
	})
	load := make(map[string]int, len(ms))
	left := n
	for _, pr := range pairs {
		if out[pr.p] != "" || load[pr.m] >= room {
			continue
		}
		out[pr.p] = pr.m
		load[pr.m]++
		if left--; left == 0 {
			break
		}
	}
	return out
}

func rendezvous(member string, p int) uint64 {
	h := fnv.New64a()
	_, _ = h.Write([]byte(member))
	_, _ = h.Write([]byte{0})
	_, _ = h.Write([]byte(strconv.Itoa(p)))
	// FNV of short, similar strings is correlated: mix (splitmix64's
	// finalizer) so that every member ranks partitions independently.
	x := h.Sum64()
	x ^= x >> 30
	x *= 0xbf58476d1ce4e5b9
	x ^= x >> 27
	x *= 0x94d049bb133111eb
	return x ^ x>>31
}

// dropPartition forgets the baselines whose key is in partition p of n,
// and the containers bound to them or grouped into them: a released
// partition is its new owner's, who loads them from the bucket.
func (e *Engine) dropPartition(p, n int) (baselines int) {
	in := func(key string) bool { return containv1.Partition(key, n) == p }
	for id, c := range e.containers {
		if c.base != nil && in(c.base.Key) || c.base == nil && c.group != "" && in(c.group) {
			delete(e.containers, id)
		}
	}
	for k := range e.images {
		if in(k) {
			delete(e.images, k)
			baselines++
		}
	}
	return baselines
}
