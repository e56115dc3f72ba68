package auth

import (
	"slices"
	"sort"

	"github.com/containsec/contain/schemas/containv1"
	"github.com/containsec/contain/schemas/kvdoc"
)

// Role names. A per-host role's user is "<role>-<host>"; the others are
// named by their role.
const (
	RoleCollector = "collector"
	RoleEnricher  = "enricher"
	RoleAnalyzer  = "analyzer"
	RoleResponder = "responder"
	RoleStore     = "store"
	RoleNotify    = "notify"
	RoleOperator  = "operator"
	RoleReader    = "reader"
	RoleAdmin     = "admin"
)

// Roles lists every role, in the order users are generated and printed.
var Roles = []string{RoleCollector, RoleResponder, RoleEnricher, RoleAnalyzer, RoleStore, RoleNotify, RoleOperator, RoleReader, RoleAdmin}

// PerHost reports whether role has one user per host.
func PerHost(role string) bool { return role == RoleCollector || role == RoleResponder }

// People reports whether role is held by people (its credentials may be
// readable by the operators' group) rather than by a stage.
func People(role string) bool { return role == RoleOperator || role == RoleReader }

// UserName is the user of role on host ("collector-node-a", "enricher").
func UserName(role, host string) string {
	if PerHost(role) {
		return role + "-" + containv1.SubjectToken(host)
	}
	return role
}

// Names are the consumer and bucket names the stages use; the table grants
// rights on exactly these. DefaultNames matches the stages' defaults.
type Names struct {
	EnricherDurable string
	AnalyzerDurable string
	// AnalyzerPartitions (analyzer.partitions): above 1, the analyzer's
	// consumers are <AnalyzerDurable>-p<n>, one per partition, and it owns
	// the leases bucket (kvdoc.AnalyzerLeasesBucket).
	AnalyzerPartitions int
	// StoreDurablePrefix: the store's consumers are <prefix>-events,
	// -alerts, -actions, -kv-images, -kv-profiles, -kv-baselines.
	StoreDurablePrefix string
	// ResponderDurable is the responder's consumer on host; "" means
	// "responder-<host>" (the restore consumer adds "-restore").
	ResponderDurable string
	// NotifyDurablePrefix: notify's consumers are <prefix>-alerts and
	// <prefix>-actions.
	NotifyDurablePrefix string

	ContainersBucket string
	ProfilesBucket   string
	ImagesBucket     string
	BaselinesBucket  string
}

// DefaultNames are the stages' default names.
func DefaultNames() Names {
	return Names{
		EnricherDurable:     "enricher",
		AnalyzerDurable:     "analyzer",
		StoreDurablePrefix:  "store",
		NotifyDurablePrefix: "notify",
		ContainersBucket:    "contain_containers",
		ProfilesBucket:      "contain_profiles",
		ImagesBucket:        "contain_images",
		BaselinesBucket:     "contain_baselines",
	}
}

func (n Names) responderDurable(host string) string {
	if n.ResponderDurable != "" {
		return n.ResponderDurable
	}
	return "responder-" + containv1.SubjectToken(host)
}

// Consumer is a right on one JetStream consumer: create it (with Filter,
// or none), read its info, fetch from it, and optionally acknowledge and
// delete. Durable "*" is any ephemeral consumer a reader makes (ordered
// consumers, KV watchers): such grants never reach a named durable of the
// table (those are denied, see User.Deny).
type Consumer struct {
	Stream, Durable, Filter string
	Ack, Delete             bool
}

// subjects are the JetStream API subjects the grant allows.
func (c Consumer) subjects() []string {
	p := "$JS.API.CONSUMER."
	out := []string{p + "INFO." + c.Stream + "." + c.Durable, p + "MSG.NEXT." + c.Stream + "." + c.Durable}
	if c.Filter != "" {
		out = append(out, p+"CREATE."+c.Stream+"."+c.Durable+"."+c.Filter)
	} else {
		out = append(out, p+"CREATE."+c.Stream+"."+c.Durable)
	}
	if c.Ack {
		// A stage's consumer reads its stream's info to count messages
		// that expired before delivery (bus: contain_expired_total).
		out = append(out, "$JS.ACK."+c.Stream+"."+c.Durable+".>", "$JS.API.STREAM.INFO."+c.Stream)
	}
	if c.Delete {
		out = append(out, p+"DELETE."+c.Stream+"."+c.Durable)
	}
	return out
}

// User is one NATS user of the table: a role (on a host, for per-host
// roles) and what it may publish and subscribe to.
type User struct {
	Name, Role, Host string
	// Publish are plain subjects the user may publish (events, KV puts,
	// JetStream API calls other than consumers).
	Publish []string
	// Consumers are its JetStream consumer rights.
	Consumers []Consumer
	// Subscribe are subjects it may subscribe to; its inbox
	// _INBOX.<name>.> is always added.
	Subscribe []string
	// Respond lets it answer one request per request message (the
	// responder's control replies), within a minute.
	Respond bool
	// Deny are subjects refused even when an allow matches: the named
	// durables of other users on streams where this one may make
	// ephemeral consumers.
	Deny []string
}

// Inbox is the user's reply-subject prefix (nats.CustomInboxPrefix).
func (u User) Inbox() string { return InboxPrefix(u.Name) }

// InboxPrefix is the inbox prefix of a user name.
func InboxPrefix(name string) string { return "_INBOX." + name }

// PublishAllow is every subject the user may publish, sorted.
func (u User) PublishAllow() []string {
	out := slices.Clone(u.Publish)
	for _, c := range u.Consumers {
		out = append(out, c.subjects()...)
	}
	return sortedUniq(out)
}

// SubscribeAllow is every subject the user may subscribe to, sorted.
func (u User) SubscribeAllow() []string {
	return sortedUniq(append(slices.Clone(u.Subscribe), u.Inbox()+".>"))
}

func sortedUniq(s []string) []string {
	sort.Strings(s)
	return slices.Compact(s)
}

// kv is the right to use one KV bucket.
type kv struct {
	bucket string
	// write: put and purge keys; own: create and update the bucket.
	write, own bool
}

func (k kv) publish() []string {
	s := "KV_" + k.bucket
	out := []string{
		"$JS.API.STREAM.INFO." + s,
		"$JS.API.DIRECT.GET." + s + ".>",
		"$JS.API.STREAM.MSG.GET." + s,
		// Watchers and key listers are ordered push consumers; their flow
		// control replies go to $JS.FC.
		"$JS.FC." + s + ".>",
	}
	if k.write {
		out = append(out, "$KV."+k.bucket+".>")
	}
	if k.own {
		// Creating a bucket reads the account's JetStream limits first.
		out = append(out, "$JS.API.STREAM.CREATE."+s, "$JS.API.STREAM.UPDATE."+s, "$JS.API.INFO")
	}
	return out
}

func (k kv) watcher() Consumer {
	return Consumer{Stream: "KV_" + k.bucket, Durable: "*", Filter: "$KV." + k.bucket + ".>", Delete: true}
}

// ordered is an ephemeral ordered consumer on stream (alerts, replay).
func ordered(stream, filter string) Consumer {
	return Consumer{Stream: stream, Durable: "*", Filter: filter, Delete: true}
}

// Table is the permission table: the users of the given hosts (a collector
// and a responder each) and the central ones. It is the one definition the
// embedded server's permissions and deploy/nats/contain.conf come from.
func Table(n Names, hosts []string) []User {
	var users []User
	kvs := func(u *User, ks ...kv) {
		for _, k := range ks {
			u.Publish = append(u.Publish, k.publish()...)
			u.Consumers = append(u.Consumers, k.watcher())
		}
	}
	for _, role := range Roles {
		if !PerHost(role) {
			continue
		}
		for _, h := range hosts {
			h = containv1.SubjectToken(h)
			u := User{Name: UserName(role, h), Role: role, Host: h}
			switch role {
			case RoleCollector:
				u.Publish = []string{containv1.RawSubject(h)}
			case RoleResponder:
				d := n.responderDurable(h)
				u.Publish = []string{containv1.ActionsSubject(h)}
				u.Consumers = []Consumer{
					{Stream: containv1.StreamAlerts, Durable: d, Filter: containv1.AlertsSubject(h), Ack: true},
					{Stream: containv1.StreamActions, Durable: d + "-restore", Filter: containv1.ActionsSubject(h), Delete: true},
				}
				u.Subscribe = []string{containv1.SubjectPrefix + ".control." + h + ".>"}
				u.Respond = true
			}
			users = append(users, u)
		}
	}
	raw, events, alerts, actions := containv1.SubjectPrefix+".raw.>", containv1.SubjectPrefix+".events.>",
		containv1.SubjectPrefix+".alerts.>", containv1.SubjectPrefix+".actions.>"
	sp := n.StoreDurablePrefix
	enr := User{Name: RoleEnricher, Role: RoleEnricher, Publish: []string{events},
		Consumers: []Consumer{{Stream: containv1.StreamRaw, Durable: n.EnricherDurable, Filter: raw, Ack: true}}}
	kvs(&enr, kv{n.ContainersBucket, true, true}, kv{n.ProfilesBucket, true, true}, kv{n.ImagesBucket, true, true})
	ana := User{Name: RoleAnalyzer, Role: RoleAnalyzer, Publish: []string{alerts},
		Consumers: []Consumer{
			{Stream: containv1.StreamEvents, Durable: n.AnalyzerDurable, Ack: true},
			{Stream: containv1.StreamEvents, Durable: n.AnalyzerDurable, Filter: events, Ack: true},
		}}
	kvs(&ana, kv{n.BaselinesBucket, true, true}, kv{n.ProfilesBucket, false, false})
	if n.AnalyzerPartitions > 1 {
		for p := range n.AnalyzerPartitions {
			ana.Consumers = append(ana.Consumers, Consumer{Stream: containv1.StreamEvents,
				Durable: n.AnalyzerDurable + "-" + containv1.PartitionToken(p), Filter: containv1.EventsPartitionFilter(p), Ack: true})
		}
		kvs(&ana, kv{kvdoc.AnalyzerLeasesBucket, true, true})
	}
	st := User{Name: RoleStore, Role: RoleStore}
	for stream, suffix := range map[string]string{containv1.StreamEvents: "-events", containv1.StreamAlerts: "-alerts", containv1.StreamActions: "-actions"} {
		st.Consumers = append(st.Consumers, Consumer{Stream: stream, Durable: sp + suffix, Ack: true})
	}
	for b, suffix := range map[string]string{n.ImagesBucket: "-kv-images", n.ProfilesBucket: "-kv-profiles", n.BaselinesBucket: "-kv-baselines"} {
		st.Publish = append(st.Publish, "$JS.API.STREAM.INFO.KV_"+b)
		st.Consumers = append(st.Consumers, Consumer{Stream: "KV_" + b, Durable: sp + suffix, Filter: "$KV." + b + ".>", Ack: true})
	}
	// notify reads alerts and actions (every host) to push them out.
	nt := User{Name: RoleNotify, Role: RoleNotify, Consumers: []Consumer{
		{Stream: containv1.StreamAlerts, Durable: n.NotifyDurablePrefix + "-alerts", Ack: true},
		{Stream: containv1.StreamActions, Durable: n.NotifyDurablePrefix + "-actions", Ack: true},
	}}
	// The reader reads every stream and the buckets an operator reviews
	// (alerts, replay, baseline list/show/export, audit, quarantine list).
	rd := User{Name: RoleReader, Role: RoleReader,
		Publish: []string{containv1.SubjectPrefix + ".control.*." + "quarantine.list"},
		Consumers: []Consumer{
			ordered(containv1.StreamAlerts, alerts), ordered(containv1.StreamEvents, events), ordered(containv1.StreamActions, actions),
		}}
	kvs(&rd, kv{n.BaselinesBucket, false, false}, kv{n.ContainersBucket, false, false}, kv{n.ProfilesBucket, false, false}, kv{n.ImagesBucket, false, false})
	// The operator reads what the reader reads, requests control verbs
	// (signed, see sign.go) and writes baselines (signed operations).
	op := rd
	op.Name, op.Role = RoleOperator, RoleOperator
	op.Publish = append(slices.Clone(rd.Publish), containv1.SubjectPrefix+".control.>")
	op.Consumers = slices.Clone(rd.Consumers)
	kvs(&op, kv{n.BaselinesBucket, true, false})
	adm := User{Name: RoleAdmin, Role: RoleAdmin, Publish: []string{"$JS.API.>"}}
	users = append(users, enr, ana, st, nt, op, rd, adm)
	addDeadLetters(users)
	addDenies(users)
	return users
}

// addDenies refuses every user with ephemeral-consumer rights on a stream
// the named durables of other users there, so that a reader can neither
// update, fetch from nor delete the responder's or the store's consumer.
// addDeadLetters lets each user that acknowledges a stream's messages
// copy the ones its handler gives up on to the dead-letter stream
// (bus.DLQSubject: contain.v1.dlq.<stage>.<original subject>); a per-host
// user only its own host's subjects.
func addDeadLetters(users []User) {
	for i := range users {
		u := &users[i]
		if !slices.ContainsFunc(u.Consumers, func(c Consumer) bool { return c.Ack }) {
			continue
		}
		dlq := containv1.SubjectPrefix + ".dlq." + u.Role + "."
		if u.Host != "" {
			u.Publish = append(u.Publish, dlq+containv1.SubjectPrefix+".*."+u.Host)
		} else {
			u.Publish = append(u.Publish, dlq+">")
		}
	}
}

func addDenies(users []User) {
	named := map[string][]string{} // stream -> "user durable"
	owner := map[string]string{}
	for _, u := range users {
		for _, c := range u.Consumers {
			if c.Durable != "*" {
				k := c.Stream + "." + c.Durable
				if _, ok := owner[k]; !ok {
					named[c.Stream] = append(named[c.Stream], c.Durable)
				}
				owner[k] = u.Name
			}
		}
	}
	for i := range users {
		u := &users[i]
		var deny []string
		for _, c := range u.Consumers {
			if c.Durable != "*" {
				continue
			}
			for _, d := range named[c.Stream] {
				if owner[c.Stream+"."+d] == u.Name {
					continue
				}
				p := "$JS.API.CONSUMER."
				deny = append(deny, p+"CREATE."+c.Stream+"."+d, p+"CREATE."+c.Stream+"."+d+".>",
					p+"MSG.NEXT."+c.Stream+"."+d, p+"DELETE."+c.Stream+"."+d, "$JS.ACK."+c.Stream+"."+d+".>")
			}
		}
		u.Deny = sortedUniq(deny)
	}
}
