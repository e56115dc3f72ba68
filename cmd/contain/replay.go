package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/spf13/cobra"
	"google.golang.org/protobuf/encoding/protojson"

	"github.com/containsec/contain/analyzer"
	"github.com/containsec/contain/internal/auth"
	"github.com/containsec/contain/internal/bus"
	"github.com/containsec/contain/schemas/containv1"
	"github.com/containsec/contain/store"
)

func init() { extraCommands = append(extraCommands, replayCommand) }

// publishRoles may publish replayed events (the enricher: events subjects).
var publishRoles = []string{auth.RoleEnricher, auth.RoleAdmin}

// Replay sources.
const (
	sourceJetStream  = "jetstream"
	sourceClickHouse = "clickhouse"
)

// selectionFlags are the flags that choose history, shared by replay,
// export and backtest.
type selectionFlags struct {
	since, until time.Duration
	from, to     string
	host         string
	container    string
	image        string
	kinds        []string
}

func (f *selectionFlags) register(cmd *cobra.Command, defSince time.Duration) {
	cmd.Flags().DurationVar(&f.since, "since", defSince, "start this long ago (unless --from)")
	cmd.Flags().DurationVar(&f.until, "until", 0, "stop this long ago (unless --to; 0: now)")
	cmd.Flags().StringVar(&f.from, "from", "", "start at this time (RFC 3339)")
	cmd.Flags().StringVar(&f.to, "to", "", "stop at this time (RFC 3339)")
	cmd.Flags().StringVar(&f.host, "event-host", "", "only events of this host")
	cmd.Flags().StringVar(&f.container, "container", "", "only this container (id, 8+ character id prefix, or name)")
	cmd.Flags().StringVar(&f.image, "image", "", "only this image (reference or digest)")
	cmd.Flags().StringSliceVar(&f.kinds, "kind", nil, "only these event kinds (exec, syscall, network, file, process, loss, container)")
}

// selection resolves the flags at now.
func (f *selectionFlags) selection(now time.Time) (store.Selection, error) {
	s := store.Selection{From: now.Add(-f.since), Host: f.host, Container: f.container, Image: f.image, Kinds: f.kinds}
	if f.until > 0 {
		s.To = now.Add(-f.until)
	}
	var err error
	if f.from != "" {
		if s.From, err = time.Parse(time.RFC3339Nano, f.from); err != nil {
			return s, fmt.Errorf("--from: %w", err)
		}
	}
	if f.to != "" {
		if s.To, err = time.Parse(time.RFC3339Nano, f.to); err != nil {
			return s, fmt.Errorf("--to: %w", err)
		}
	}
	if !s.To.IsZero() && !s.To.After(s.From) {
		return s, fmt.Errorf("the selection ends (%s) before it starts (%s)", s.To.Format(time.RFC3339), s.From.Format(time.RFC3339))
	}
	return s, nil
}

// matches applies a selection's filters (not its time range) to an event
// read from the stream, as the store's WHERE clause does to rows.
func matches(s store.Selection, ev *containv1.Event) bool {
	if s.Host != "" && ev.GetHost() != s.Host {
		return false
	}
	if c := s.Container; c != "" && ev.GetContainerId() != c && ev.GetContainerName() != c &&
		(len(c) < 8 || !strings.HasPrefix(ev.GetContainerId(), c)) {
		return false
	}
	if s.Image != "" && ev.GetImageRef() != s.Image && ev.GetImageDigest() != s.Image {
		return false
	}
	if len(s.Kinds) > 0 {
		k := kindName(ev)
		for _, want := range s.Kinds {
			if k == want {
				return true
			}
		}
		return false
	}
	return true
}

// onHostSubject reports whether subject is one of host's events subjects:
// contain.v1.events.<host> or a partition's, contain.v1.events.<host>.p<n>.
func onHostSubject(subject, host string) bool {
	own := containv1.EventsSubject(host)
	rest, ok := strings.CutPrefix(subject, own)
	return ok && (rest == "" || strings.HasPrefix(rest, "."))
}

// readHistory calls fn with every event sel selects from source, in order,
// and returns how many stream messages did not decode.
func readHistory(ctx context.Context, source string, js jetstream.JetStream, r *store.Reader, sel store.Selection,
	fn func(*containv1.Event) error) (malformed uint64, err error) {
	switch source {
	case sourceClickHouse:
		return 0, r.Events(ctx, sel, fn)
	case sourceJetStream:
		// Every events subject: a host's events are on its own subjects
		// (contain.v1.events.<host>[.p<n>]) or, with
		// enricher.fleet_batches, in the parts of fleet batches
		// (contain.v1.events.@fleet...), which hold many hosts. One
		// filter keeps them in stream order and within the reader's
		// consumer rights; the subject a batch was published on (a
		// part's: its host's) selects the host, as it binds a batch to
		// its host for every consumer: events replayed before under
		// another subject (replay --to-subject) are not the host's.
		subject := containv1.SubjectPrefix + ".events.>"
		err := readStreamOn(ctx, js, containv1.StreamEvents, subject, sel.From, sel.To, false, func(on string, b *containv1.Batch) error {
			if sel.Host != "" && !onHostSubject(on, sel.Host) {
				return nil
			}
			for _, ev := range b.GetEvents() {
				if ev != nil && matches(sel, ev) {
					if err := fn(ev); err != nil {
						return err
					}
				}
			}
			return nil
		}, func(string, error) { malformed++ })
		return malformed, err
	}
	return 0, fmt.Errorf("--source: %q is not %s or %s", source, sourceJetStream, sourceClickHouse)
}

func replayCommand(opts *globalOpts) *cobra.Command {
	var (
		sf                        selectionFlags
		source, format, toSubject string
		rescore, progress         bool
		rate                      float64
		batchSize                 int
	)
	cmd := &cobra.Command{
		Use:   "replay",
		Short: "Replay recorded events (JetStream or ClickHouse): dump them, re-score them, or publish them to a subject",
		Long: `replay reads recorded events selected by time range (--since/--until or
--from/--to), host, container, image and kind, from CONTAIN_EVENTS
(--source jetstream, through an ordered consumer that disturbs no other
reader; the range is the messages' stored time) or from the store's
ClickHouse database (--source clickhouse; the range is the events' time,
and history reaches as far back as the store keeps it).

Without --rescore or --to-subject it writes every event as one JSON object
per line (protojson of contain.v1.Event), for data teams' own tools.

With --to-subject it publishes the events, in order, as contain.v1.Batch
messages of --batch events to that subject (JetStream with acks when a
stream captures it, core NATS otherwise), at most --rate events per second
(0: as fast as possible): feed an analyzer, a test pipeline or a
colleague's consumer. Publishing connects with the enricher's credentials
(which may publish contain.v1.events.>: replay into the pipeline, e.g.
--to-subject contain.v1.events.replay) or admin's; for another subject
give a user allowed to publish it with --nkey-seed.

With --rescore it feeds the events to a new analyzer engine built from
this configuration's analyzer.* settings and prints the alerts it raises
(--format text, json or falco) and a summary; nothing is published
(see also contain backtest).

A progress line is drawn on stderr when stdout is a terminal (--progress
forces it).`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if format != "text" && format != "json" && format != "falco" {
				return fmt.Errorf("--format: %q is not text, json or falco", format)
			}
			if rescore && toSubject != "" {
				return errors.New("--rescore and --to-subject exclude each other")
			}
			if rate < 0 || batchSize < 1 {
				return errors.New("--rate must be >= 0 and --batch >= 1")
			}
			sel, err := sf.selection(time.Now())
			if err != nil {
				return err
			}
			cfg, err := opts.load(cmd)
			if err != nil {
				return err
			}
			if err := cfg.Analyzer.Validate(); err != nil {
				return err
			}
			r := replayer{w: cmd.OutOrStdout(), format: format, rate: rate, batch: batchSize}
			var js jetstream.JetStream
			if source == sourceJetStream {
				rcfg := *cfg // cliConnect records the seed it chose
				s, err := cliConnect(&rcfg, "replay", readerRoles...)
				if err != nil {
					return fmt.Errorf("replay: %w", err)
				}
				defer s.close()
				js = s.js
			}
			if toSubject != "" {
				pcfg := *cfg
				s, err := cliConnect(&pcfg, "replay", publishRoles...)
				if err != nil {
					return fmt.Errorf("replay: publishing: %w", err)
				}
				defer s.close()
				r.pub = newPublisher(s.nc, s.js, toSubject, cfg.Host)
			}
			var rd *store.Reader
			if source == sourceClickHouse {
				if rd, err = store.OpenReader(cfg.Store); err != nil {
					return fmt.Errorf("replay: %w", err)
				}
				defer rd.Close()
			}
			if rescore {
				if r.engine, err = analyzer.NewEngine(cfg.Analyzer, nil); err != nil {
					return err
				}
			}
			if progress || isTerminal(cmd.OutOrStdout()) {
				var total uint64
				if rd != nil {
					total, _ = rd.Count(cmd.Context(), sel)
				}
				r.bar = newProgressBar(cmd.ErrOrStderr(), "replay", total)
			}
			r.start = time.Now()
			r.malformed, err = readHistory(cmd.Context(), source, js, rd, sel, r.event)
			if err == nil {
				err = r.flush(cmd.Context())
			}
			r.bar.done(r.events)
			if err != nil {
				return fmt.Errorf("replay: %w", err)
			}
			return r.summary(cmd.ErrOrStderr())
		},
	}
	sf.register(cmd, 24*time.Hour)
	cmd.Flags().StringVar(&source, "source", sourceJetStream, "jetstream or clickhouse")
	cmd.Flags().BoolVar(&rescore, "rescore", false, "re-score with a fresh analyzer and print its alerts")
	cmd.Flags().StringVar(&format, "format", "text", "alerts with --rescore: text, json or falco")
	cmd.Flags().StringVar(&toSubject, "to-subject", "", "publish the events to this subject instead of printing them")
	cmd.Flags().Float64Var(&rate, "rate", 0, "at most this many events per second (0: no limit)")
	cmd.Flags().IntVar(&batchSize, "batch", 256, "events per published batch")
	cmd.Flags().BoolVar(&progress, "progress", false, "draw the progress line even when stdout is not a terminal")
	return cmd
}

// paceGrain is the shortest pause --rate makes.
const paceGrain = 5 * time.Millisecond

type replayer struct {
	w      io.Writer
	format string
	engine *analyzer.Engine
	pub    *publisher
	rate   float64
	batch  int
	bar    *progressBar
	start  time.Time

	pending                      []*containv1.Event
	published, events, malformed uint64
	alerts                       uint64
}

func (r *replayer) event(ev *containv1.Event) error {
	r.events++
	r.bar.set(r.events)
	if r.rate > 0 {
		// Pace: event n leaves no earlier than n/rate after the start.
		// Sleeps shorter than paceGrain are saved up, so that batches
		// still fill at high rates.
		if d := time.Until(r.start.Add(time.Duration(float64(r.events-1) / r.rate * float64(time.Second)))); d > paceGrain {
			if err := r.flush(context.Background()); err != nil { // nothing waits in a buffer while we sleep
				return err
			}
			time.Sleep(d)
		}
	}
	switch {
	case r.pub != nil:
		r.pending = append(r.pending, ev)
		if len(r.pending) >= r.batch {
			return r.flush(context.Background())
		}
		return nil
	case r.engine != nil:
		for _, a := range r.engine.Observe(ev) {
			r.alerts++
			if err := writeAlert(r.w, a, r.format); err != nil {
				return err
			}
		}
		return nil
	}
	line, err := protojson.Marshal(ev)
	if err != nil {
		return err
	}
	_, err = fmt.Fprintf(r.w, "%s\n", line)
	return err
}

// flush publishes the pending events as one batch.
func (r *replayer) flush(ctx context.Context) error {
	if r.pub == nil || len(r.pending) == 0 {
		return nil
	}
	if err := r.pub.publish(ctx, r.pending); err != nil {
		return err
	}
	r.published += uint64(len(r.pending))
	r.pending = r.pending[:0]
	return nil
}

func (r *replayer) summary(w io.Writer) error {
	el := time.Since(r.start)
	_, err := fmt.Fprintf(w, "replayed %d events in %v (%.0f events/s; %d malformed messages skipped)",
		r.events, el.Round(time.Millisecond), float64(r.events)/max(el.Seconds(), 1e-9), r.malformed)
	if err == nil && r.pub != nil {
		err = r.pub.finish()
		if err == nil {
			_, err = fmt.Fprintf(w, "; published %d events in %d batches to %s", r.published, r.pub.batches, r.pub.subject)
		}
	}
	if err == nil && r.engine != nil {
		s := r.engine.Stats()
		_, err = fmt.Fprintf(w, "; re-scored: %d alerts, %d learned, %d scored, %d deviations grouped, %d baselines",
			r.alerts, s.Learned, s.Scored, s.Grouped, len(r.engine.Keys()))
	}
	if err == nil {
		_, err = fmt.Fprintln(w)
	}
	return err
}

// publisher sends replayed batches to one subject: through JetStream
// (acknowledged) when a stream captures it, else as core NATS messages.
// The first batch finds out which: a JetStream publish that no stream
// answers (no responders) switches to core NATS.
type publisher struct {
	nc       *nats.Conn
	js       jetstream.JetStream
	core     bool
	probed   bool
	subject  string
	producer *bus.Producer
	batches  uint64
}

func newPublisher(nc *nats.Conn, js jetstream.JetStream, subject, host string) *publisher {
	return &publisher{nc: nc, js: js, subject: subject, producer: bus.NewProducer(host, "replay")}
}

func (p *publisher) publish(ctx context.Context, evs []*containv1.Event) error {
	b := p.producer.Batch(evs)
	p.batches++
	msg, err := bus.NewMsg(p.subject, b)
	if err != nil {
		return err
	}
	if !p.probed {
		p.probed = true
		pctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		_, err := p.js.PublishMsg(pctx, msg)
		cancel()
		if errors.Is(err, jetstream.ErrNoStreamResponse) || errors.Is(err, nats.ErrNoResponders) {
			p.core = true
			return p.nc.PublishMsg(msg)
		}
		return err
	}
	if p.core {
		return p.nc.PublishMsg(msg)
	}
	return bus.Publish(ctx, p.js, p.subject, b)
}

// finish waits until the server has every core NATS message.
func (p *publisher) finish() error {
	if p.core {
		return p.nc.FlushTimeout(10 * time.Second)
	}
	return nil
}

// isTerminal reports whether w is a character device (a terminal).
func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	st, err := f.Stat()
	return err == nil && st.Mode()&os.ModeCharDevice != 0
}
