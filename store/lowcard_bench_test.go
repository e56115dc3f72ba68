package store

import (
	"crypto/sha256"
	"fmt"
	"math/rand/v2"
	"testing"

	chcol "github.com/ClickHouse/clickhouse-go/v2/lib/column"
)

// BenchmarkAppendLowCard appends one block of per-container values
// (image digests, container names: one length, differing near the end)
// as the fleet's rows hold them, each row from a random one of 2,000
// containers, and per-row kinds (few values), through appendLowCard.
func BenchmarkAppendLowCard(b *testing.B) {
	const rows = 20000
	rng := rand.New(rand.NewPCG(1, 2))
	digests := make([]string, 2000)
	names := make([]string, len(digests))
	for i := range digests {
		// A long common prefix, as the load generator's digests had
		// (sha256: and 48 zeros): the worst case for comparing values.
		digests[i] = fmt.Sprintf("sha256:%064x", rng.Uint64()>>8)
		if i%2 == 1 {
			digests[i] = fmt.Sprintf("sha256:%064x", sha256.Sum256([]byte(digests[i])))
		}
		names[i] = fmt.Sprintf("fleet-host-%03d-container-%02d", i/50, i%50)
	}
	kinds := []string{"exec", "file", "syscall", "net", "proc"}
	cols := map[string][]string{"digest": make([]string, rows), "name": make([]string, rows), "kind": make([]string, rows)}
	for r := range rows {
		c := rng.IntN(len(digests))
		// Copies: the store's values point into message payloads.
		cols["digest"][r] = string([]byte(digests[c]))
		cols["name"][r] = string([]byte(names[c]))
		cols["kind"][r] = string([]byte(kinds[rng.IntN(len(kinds))]))
	}
	for _, name := range []string{"digest", "name", "kind"} {
		vals := cols[name]
		b.Run(name, func(b *testing.B) {
			var d lowCardDict
			for b.Loop() {
				c, err := chcol.Type("LowCardinality(String)").Column("v", nil)
				if err != nil {
					b.Fatal(err)
				}
				if ok, err := d.appendLowCard(c.(*chcol.LowCardinality), vals); !ok || err != nil {
					b.Fatal(ok, err)
				}
			}
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*rows), "ns/row")
		})
	}
}
