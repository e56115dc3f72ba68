package containv1

import "strings"

// Fleet batches (docs/design/036-fleet-batches.md, proposal 1): the
// enricher publishes one message per partition per fetch, holding the
// output batches of many hosts as its parts (Batch.parts), instead of one
// message per host per partition. A part is the batch the enricher would
// have published alone on EventsPartitionSubject(part's host, p); readers
// split the fleet batch and read each part as that batch, bound to that
// subject (bus.CheckHost), so that the stages past the bus see what they
// saw before.

// SchemaVersionFleet is the schema_version of a fleet batch. Readers of
// this build split it (bus.FleetParts); older readers refuse it as newer
// than theirs instead of reading a batch with no events.
const SchemaVersionFleet = 3

// FleetToken is the host token of a fleet batch's subject. No host's
// token can be it: SubjectToken maps '@' to '_'.
const FleetToken = "@fleet"

// FleetSubject is the subject of the fleet batches of partition p, or
// with partitions <= 1 (p < 0) of all events: contain.v1.events.@fleet.p<n>
// or contain.v1.events.@fleet. The analyzers' partition filters
// (EventsPartitionFilter) and the store's contain.v1.events.> select it
// with the per-host subjects.
func FleetSubject(p int) string {
	s := SubjectPrefix + ".events." + FleetToken
	if p >= 0 {
		s += "." + PartitionToken(p)
	}
	return s
}

// IsFleetSubject reports whether subject is a fleet batch's.
func IsFleetSubject(subject string) bool {
	rest, ok := strings.CutPrefix(subject, SubjectPrefix+".events."+FleetToken)
	return ok && (rest == "" || rest[0] == '.')
}

// FleetPartSubject is the subject a part about host would have had alone:
// fleetSubject with the fleet token replaced by host's token.
func FleetPartSubject(fleetSubject, host string) string {
	rest, _ := strings.CutPrefix(fleetSubject, SubjectPrefix+".events."+FleetToken)
	return EventsSubject(host) + rest
}
