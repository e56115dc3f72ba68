package store

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/containsec/contain/internal/logfields"
	"github.com/containsec/contain/internal/metrics"
)

// kvBucket is one KV bucket the store copies into ClickHouse.
type kvBucket struct {
	bucket, durable string
	// decode turns one entry into rows (in db) or says why not.
	decode func(key string, raw []byte, at time.Time, db *kvRows) error
}

// kvRows collects the rows of one fetch.
type kvRows struct {
	decls     []DeclarationRow
	baselines []BaselineRow
}

// KVDurables returns the consumer names Run uses on the KV buckets, by
// bucket (each bucket is the stream KV_<bucket>).
func (c Config) KVDurables() map[string]string {
	out := map[string]string{}
	for _, b := range c.kvBuckets() {
		out[b.bucket] = b.durable
	}
	return out
}

func (c Config) kvBuckets() []kvBucket {
	var out []kvBucket
	if c.ImagesBucket != "" {
		out = append(out, kvBucket{c.ImagesBucket, c.DurablePrefix + "-kv-images", func(key string, raw []byte, at time.Time, db *kvRows) error {
			r, err := imageRow(key, raw, at)
			if err == nil {
				db.decls = append(db.decls, r)
			}
			return err
		}})
	}
	if c.ProfilesBucket != "" {
		out = append(out, kvBucket{c.ProfilesBucket, c.DurablePrefix + "-kv-profiles", func(key string, raw []byte, at time.Time, db *kvRows) error {
			r, err := profileRow(key, raw, at)
			if err == nil {
				db.decls = append(db.decls, r)
			}
			return err
		}})
	}
	if c.BaselinesBucket != "" {
		out = append(out, kvBucket{c.BaselinesBucket, c.DurablePrefix + "-kv-baselines", func(_ string, raw []byte, at time.Time, db *kvRows) error {
			r, err := baselineRow(raw, at)
			if err == nil {
				db.baselines = append(db.baselines, r)
			}
			return err
		}})
	}
	return out
}

// watchKV copies every new version of a KV bucket into ClickHouse until
// ctx ends. It waits for the bucket to exist. A durable consumer on the
// bucket's stream (all history, explicit acks) keeps the position: an
// entry is acknowledged once its row is inserted, so a restart resumes
// after the last inserted version, and a redelivered one replaces its own
// row (ReplacingMergeTree keys). Deletes and purges make no row.
func (s *Store) watchKV(ctx context.Context, js jetstream.JetStream, b kvBucket, m *metrics.Metrics) {
	log := s.log.With(logfields.Bucket, b.bucket)
	stream := "KV_" + b.bucket
	prefix := "$KV." + b.bucket + "."
	waiting := false
	for ctx.Err() == nil {
		cons, err := js.CreateOrUpdateConsumer(ctx, stream, jetstream.ConsumerConfig{
			Durable:       b.durable,
			Description:   "contain store: " + b.bucket + " versions into ClickHouse",
			FilterSubject: prefix + ">",
			AckPolicy:     jetstream.AckExplicitPolicy,
			AckWait:       s.cfg.AckWait,
			DeliverPolicy: jetstream.DeliverAllPolicy,
			MaxAckPending: 4 * kvFetchMax,
			MaxDeliver:    -1,
		})
		if err != nil {
			if ctx.Err() != nil {
				return
			}
			if errors.Is(err, jetstream.ErrStreamNotFound) {
				if !waiting {
					log.Info("waiting for the KV bucket to exist")
					waiting = true
				}
			} else {
				m.Errors.WithLabelValues(metrics.StageStore, "kv").Inc()
				log.Warn("creating KV consumer, retrying", logfields.Durable, b.durable, logfields.Err, err)
			}
			sleepCtx(ctx, s.bucketPoll)
			continue
		}
		if waiting {
			log.Info("KV bucket found")
			waiting = false
		}
		if err := s.consumeKV(ctx, cons, b, prefix, m, log); err != nil && ctx.Err() == nil {
			m.Errors.WithLabelValues(metrics.StageStore, "kv").Inc()
			log.Warn("KV consumer lost; recreating", logfields.Durable, b.durable, logfields.Err, err)
			sleepCtx(ctx, s.bucketPoll)
		}
	}
}

// consumeKV runs one consumer until ctx ends or it is gone (bucket
// deleted): then it returns the error.
func (s *Store) consumeKV(ctx context.Context, cons jetstream.Consumer, b kvBucket, prefix string, m *metrics.Metrics, log *slog.Logger) error {
	var loggedMalformed atomic.Bool
	backoff := s.cfg.RetryDelay
	fails := 0
	for ctx.Err() == nil {
		msgs, err := fetchKV(cons, min(s.cfg.FetchMessages, kvFetchMax), s.cfg.InsertMaxAge)
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			if errors.Is(err, jetstream.ErrConsumerDeleted) || errors.Is(err, jetstream.ErrConsumerNotFound) ||
				errors.Is(err, jetstream.ErrStreamNotFound) || errors.Is(err, nats.ErrConnectionClosed) {
				return err
			}
			if fails++; fails >= 5 {
				return err
			}
			m.Errors.WithLabelValues(metrics.StageStore, "fetch").Inc()
			sleepCtx(ctx, 200*time.Millisecond)
			continue
		}
		fails = 0
		if len(msgs) == 0 {
			continue
		}
		var db kvRows
		for _, msg := range msgs {
			op := msg.Headers().Get("KV-Operation")
			if op == "DEL" || op == "PURGE" {
				continue
			}
			md, err := msg.Metadata()
			if err != nil {
				m.Errors.WithLabelValues(metrics.StageStore, "kv").Inc()
				continue
			}
			key := strings.TrimPrefix(msg.Subject(), prefix)
			err = b.decode(key, msg.Data(), md.Timestamp.UTC(), &db)
			if err != nil && !errors.Is(err, errSkip) {
				m.Malformed.WithLabelValues(metrics.StageStore).Inc()
				m.Errors.WithLabelValues(metrics.StageStore, "kv_malformed").Inc()
				if !loggedMalformed.Swap(true) {
					log.Error("skipping malformed KV value (logged once per bucket; see contain_malformed_messages_total)",
						logfields.Key, key, logfields.Revision, md.Sequence.Stream, logfields.Bytes, len(msg.Data()), logfields.Err, err)
				}
			}
		}
		if err := s.insertKV(ctx, &db, m); err != nil {
			if ctx.Err() != nil {
				return nil
			}
			log.Warn("inserting KV versions failed; they will be redelivered", logfields.Messages, len(msgs), logfields.RetryIn, backoff, logfields.Err, err)
			for _, msg := range msgs {
				_ = msg.NakWithDelay(backoff)
			}
			sleepCtx(ctx, backoff)
			backoff = min(2*backoff, 30*time.Second)
			continue
		}
		backoff = s.cfg.RetryDelay
		for _, msg := range msgs {
			if err := msg.Ack(); err != nil {
				m.Errors.WithLabelValues(metrics.StageStore, "ack").Inc()
			}
		}
	}
	return nil
}

// insertKV inserts the rows of one fetch.
func (s *Store) insertKV(ctx context.Context, db *kvRows, m *metrics.Metrics) error {
	if len(db.decls) == 0 && len(db.baselines) == 0 {
		return nil
	}
	err := s.InsertDeclaration(ctx, db.decls...)
	if err == nil {
		err = s.InsertBaseline(ctx, db.baselines...)
	}
	if err != nil {
		m.Errors.WithLabelValues(metrics.StageStore, "insert").Inc()
		if isUnavailable(err) {
			s.markDown(err, "inserting KV versions")
		}
		return err
	}
	s.markUp()
	m.EventsOut.WithLabelValues(metrics.StageStore).Add(float64(len(db.decls) + len(db.baselines)))
	return nil
}

// fetchKV takes what is pending (up to n) or waits up to wait for the
// first entry and takes what came with it.
// kvFetchMax bounds a KV fetch: a baseline version can be large.
const kvFetchMax = 512

func fetchKV(cons jetstream.Consumer, n int, wait time.Duration) ([]jetstream.Msg, error) {
	b, err := cons.FetchNoWait(n)
	out, err := drainKV(b, err)
	if err != nil || len(out) > 0 {
		return out, err
	}
	b, err = cons.Fetch(1, jetstream.FetchMaxWait(wait))
	if out, err = drainKV(b, err); err != nil || len(out) == 0 || n == 1 {
		return out, err
	}
	b, err = cons.FetchNoWait(n - 1)
	more, err := drainKV(b, err)
	return append(out, more...), err
}

func drainKV(b jetstream.MessageBatch, err error) ([]jetstream.Msg, error) {
	if err != nil {
		return nil, err
	}
	var out []jetstream.Msg
	for msg := range b.Messages() {
		out = append(out, msg)
	}
	if err := b.Error(); err != nil && !errors.Is(err, jetstream.ErrNoMessages) && !errors.Is(err, nats.ErrTimeout) {
		return out, fmt.Errorf("fetch: %w", err)
	}
	return out, nil
}

func sleepCtx(ctx context.Context, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
	case <-t.C:
	}
}
