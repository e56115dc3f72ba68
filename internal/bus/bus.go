package bus

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"google.golang.org/protobuf/proto"

	"github.com/containsec/contain/internal/logfields"
	"github.com/containsec/contain/schemas/containv1"
)

// Header names set on every batch message.
const (
	HeaderSchema      = "Contain-Schema"
	HeaderContentType = "Content-Type"
	ContentType       = "application/x-protobuf; messageType=contain.v1.Batch"
)

// MaxPayload is the largest message the embedded server accepts and the
// size Batcher keeps batches under by default.
const MaxPayload = 8 << 20

// EmbeddedConfig configures the in-process NATS server.
type EmbeddedConfig struct {
	// Host and Port to listen on; Port -1 picks a random free port.
	Host string `config:"host"`
	Port int    `config:"port"`
	// StoreDir is JetStream's file store directory.
	StoreDir string `config:"store_dir"`
	// ServerName names the server in a cluster; defaults to the host name.
	ServerName string `config:"server_name"`
	// ConfigFile is an optional nats-server configuration file (e.g.
	// deploy/nats/contain.conf) supplying authorization, accounts and
	// limits. Host, Port, StoreDir and ServerName above override its listen
	// address, store directory and name; JetStream is always on and
	// max_payload is at least MaxPayload.
	ConfigFile string `config:"config_file"`
}

// Validate reports the first invalid field.
func (c EmbeddedConfig) Validate() error {
	if c.StoreDir == "" {
		return errors.New("nats.embedded.store_dir: must be set")
	}
	if c.Port < -1 || c.Port > 65535 {
		return fmt.Errorf("nats.embedded.port: %d out of range", c.Port)
	}
	return nil
}

// StartEmbedded starts a NATS server with JetStream in this process and
// waits until it accepts connections. With users, only they may connect
// (nkey authentication, each with its permissions): an anonymous client is
// refused. Without users and without a ConfigFile granting some, anyone
// may connect: tests only.
func StartEmbedded(cfg EmbeddedConfig, users ...*server.NkeyUser) (*server.Server, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if err := os.MkdirAll(cfg.StoreDir, 0o750); err != nil {
		return nil, fmt.Errorf("embedded nats: %w", err)
	}
	host := cfg.Host
	if host == "" {
		host = "127.0.0.1"
	}
	name := cfg.ServerName
	if name == "" {
		name, _ = os.Hostname()
	}
	opts := &server.Options{}
	if cfg.ConfigFile != "" {
		fo, err := server.ProcessConfigFile(cfg.ConfigFile)
		if err != nil {
			return nil, fmt.Errorf("nats.embedded.config_file: %w", err)
		}
		opts = fo
	}
	opts.ServerName = containv1.SubjectToken(name)
	opts.Host = host
	opts.Port = cfg.Port
	opts.JetStream = true
	opts.StoreDir = filepath.Clean(cfg.StoreDir)
	opts.MaxPayload = max(opts.MaxPayload, MaxPayload)
	opts.Nkeys = append(opts.Nkeys, users...)
	opts.NoSigs = true
	opts.NoLog = true
	s, err := server.NewServer(opts)
	if err != nil {
		return nil, fmt.Errorf("embedded nats: %w", err)
	}
	go s.Start()
	if !s.ReadyForConnections(10 * time.Second) {
		s.Shutdown()
		return nil, errors.New("embedded nats: not ready after 10s")
	}
	return s, nil
}

// writeBufferSize is the client's write buffer.
const writeBufferSize = 256 << 10

// Connect dials url and returns the connection and its JetStream context.
// The connection reconnects forever; a lost connection is logged.
func Connect(url, name string, log *slog.Logger, extra ...nats.Option) (*nats.Conn, jetstream.JetStream, error) {
	opts := append([]nats.Option{
		nats.Name(name),
		// One write per fetch's output instead of one per 32 KiB: an
		// enricher's PublishAll of ~3 × 26 KB took 5.8 system calls per
		// message with the client's default and 3.7 with this (design
		// 030, "Second pass").
		nats.WriteBufferSize(writeBufferSize),
		nats.MaxReconnects(-1),
		nats.ReconnectWait(250 * time.Millisecond),
		nats.DisconnectErrHandler(func(_ *nats.Conn, err error) {
			if err != nil {
				log.Warn("nats disconnected", logfields.Err, err)
			}
		}),
		nats.ReconnectHandler(func(c *nats.Conn) { log.Info("nats reconnected", logfields.URL, c.ConnectedUrl()) }),
		nats.ClosedHandler(forgetViolations),
		// Asynchronous errors, e.g. a permission the server refused.
		nats.ErrorHandler(func(nc *nats.Conn, sub *nats.Subscription, err error) {
			recordViolation(nc, err)
			subject := ""
			if sub != nil {
				subject = sub.Subject
			}
			log.Error("nats error", logfields.Subject, subject, logfields.Err, err)
		}),
	}, extra...)
	nc, err := nats.Connect(url, opts...)
	if err != nil {
		return nil, nil, fmt.Errorf("connecting to nats %s: %w", url, err)
	}
	js, err := jetstream.New(nc)
	if err != nil {
		nc.Close()
		return nil, nil, fmt.Errorf("jetstream: %w", err)
	}
	return nc, js, nil
}

// DefaultStreamMaxBytes bounds each stream by default (1 GiB): past it the
// oldest messages are discarded (counted by the consumers that had not
// read them, as expiry). The bound does not shrink JetStream's file
// blocks: nats-server (v2.15) gives a stream max_bytes/4 rounded to 4 MB
// or 8 MB, so 8 MB blocks from max_bytes 32 MiB up, and each block a
// reader or writer touches is cached whole in memory
// (docs/benchmarks.md, "Bounded memory").
const DefaultStreamMaxBytes = 1 << 30

// StreamsConfig sets the retention of contain's streams.
type StreamsConfig struct {
	// MaxAge bounds how long raw and enriched events are kept.
	EventsMaxAge time.Duration `config:"events_max_age"`
	// AlertsMaxAge bounds how long alerts and actions are kept.
	AlertsMaxAge time.Duration `config:"alerts_max_age"`
	// MaxBytes bounds each stream's size; <= 0 means unbounded.
	MaxBytes int64 `config:"max_bytes"`
	// Replicas for a clustered JetStream; 1 on one host.
	Replicas int `config:"replicas"`
	// Memory keeps streams in memory instead of files.
	Memory bool `config:"memory"`
}

// Validate reports the first invalid field.
func (c StreamsConfig) Validate() error {
	if c.EventsMaxAge < 0 || c.AlertsMaxAge < 0 {
		return errors.New("nats.streams: max ages must not be negative")
	}
	if c.Replicas < 0 || c.Replicas > 5 {
		return fmt.Errorf("nats.streams.replicas: %d out of range 1..5", c.Replicas)
	}
	return nil
}

// EnsureStreams creates or updates contain's JetStream streams.
func EnsureStreams(ctx context.Context, js jetstream.JetStream, c StreamsConfig) error {
	if err := c.Validate(); err != nil {
		return err
	}
	storage := jetstream.FileStorage
	if c.Memory {
		storage = jetstream.MemoryStorage
	}
	replicas := max(c.Replicas, 1)
	maxBytes := c.MaxBytes
	if maxBytes <= 0 {
		maxBytes = -1
	}
	for name, subj := range containv1.StreamSubjects() {
		age := c.EventsMaxAge
		if name == containv1.StreamAlerts || name == containv1.StreamActions {
			age = c.AlertsMaxAge
		}
		_, err := js.CreateOrUpdateStream(ctx, jetstream.StreamConfig{
			Name:       name,
			Subjects:   []string{subj},
			Storage:    storage,
			Replicas:   replicas,
			MaxAge:     age,
			MaxBytes:   maxBytes,
			Discard:    jetstream.DiscardOld,
			Duplicates: 2 * time.Minute,
		})
		if err != nil {
			return fmt.Errorf("stream %s: %w", name, err)
		}
	}
	return ensureDLQ(ctx, js, storage, replicas, c.AlertsMaxAge)
}

// Encode marshals a batch for the wire. Like proto.Marshal it refuses a
// string field that is not UTF-8.
func Encode(b *containv1.Batch) ([]byte, error) {
	data, err := b.MarshalVT()
	if err != nil {
		return nil, err
	}
	if err := checkUTF8(strictBatch(), data, 0); err != nil {
		return nil, fmt.Errorf("encoding batch: %w", err)
	}
	return data, nil
}

// ErrMalformed wraps every decoding failure.
var ErrMalformed = errors.New("malformed batch")

// Decode parses a wire batch. It is pure and safe on any input.
func Decode(data []byte) (*containv1.Batch, error) {
	return decode(data, false)
}

// DecodeAliased is Decode without copying: the batch's strings and bytes
// point into data, which must not change while any of them is in use. A
// consumer that keeps a string past its handler call (a map key, a cache
// entry) must strings.Clone it, or it pins the whole message in memory.
// It accepts and reads exactly what Decode does (FuzzDecodeMatchesProto).
func DecodeAliased(data []byte) (*containv1.Batch, error) {
	return decode(data, true)
}

func decode(data []byte, alias bool) (*containv1.Batch, error) {
	var b containv1.Batch
	var err error
	if alias {
		err = unmarshalAliased(&b, data)
	} else {
		err = b.UnmarshalVT(data)
	}
	if err != nil {
		// The generated code refuses what the protobuf runtime reads
		// (a known field with another wire type is an unknown field
		// to proto.Unmarshal): let the runtime decide.
		b = containv1.Batch{}
		if err := proto.Unmarshal(data, &b); err != nil {
			return nil, fmt.Errorf("%w: %v", ErrMalformed, err)
		}
	} else if err := checkUTF8(strictBatch(), data, 0); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrMalformed, err)
	}
	if b.SchemaVersion == 0 {
		return nil, fmt.Errorf("%w: no schema_version", ErrMalformed)
	}
	if b.SchemaVersion > containv1.ReadableSchemaVersion {
		return nil, fmt.Errorf("%w: schema_version %d is newer than this build's %d", ErrMalformed, b.SchemaVersion, containv1.ReadableSchemaVersion)
	}
	if err := b.Expand(); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrMalformed, err)
	}
	return &b, nil
}

// MsgID is the de-duplication id of a batch.
func MsgID(b *containv1.Batch) string {
	return msgID(b.Stage, b.ProducerId, b.Seq)
}

func msgID(stage, producerID string, seq uint64) string {
	return stage + "-" + producerID + "-" + strconv.FormatUint(seq, 10)
}

// NewMsg builds the NATS message for a batch.
func NewMsg(subject string, b *containv1.Batch) (*nats.Msg, error) {
	data, err := Encode(b)
	if err != nil {
		return nil, fmt.Errorf("encoding batch: %w", err)
	}
	return newMsg(subject, b, data)
}

// NewMsgChecked is NewMsg for a batch whose every string is already known
// to be UTF-8: decoded by Decode or DecodeAliased (which refuse any other)
// or checked by the caller. It skips Encode's walk of the bytes; if a
// string were not UTF-8 after all, every consumer's Decode would refuse
// the message as malformed.
func NewMsgChecked(subject string, b *containv1.Batch) (*nats.Msg, error) {
	data, err := b.MarshalVT()
	if err != nil {
		return nil, fmt.Errorf("encoding batch: %w", err)
	}
	return newMsg(subject, b, data)
}

// NewEncodedMsg is NewMsgChecked for a batch the caller encoded itself
// (data, its strings known to be UTF-8) with the given stage, producer id,
// sequence and schema_version: the message gets the Nats-Msg-Id MsgID
// gives that batch and the version's Contain-Schema header.
func NewEncodedMsg(subject, stage, producerID string, seq uint64, version uint32, data []byte) (*nats.Msg, error) {
	return encodedMsg(subject, msgID(stage, producerID, seq), version, data)
}

func newMsg(subject string, b *containv1.Batch, data []byte) (*nats.Msg, error) {
	return encodedMsg(subject, MsgID(b), b.GetSchemaVersion(), data)
}

// encodedMsg is the message of data with the headers of a batch of schema
// version (0, as the version field left out: SchemaVersion).
func encodedMsg(subject, id string, version uint32, data []byte) (*nats.Msg, error) {
	if len(data) > MaxPayload {
		return nil, fmt.Errorf("%w: batch of %d bytes exceeds %d", ErrTooLarge, len(data), MaxPayload)
	}
	msg := nats.NewMsg(subject)
	msg.Data = data
	msg.Header.Set(HeaderSchema, strconv.FormatUint(uint64(max(version, containv1.SchemaVersion)), 10))
	msg.Header.Set(HeaderContentType, ContentType)
	msg.Header.Set(jetstream.MsgIDHeader, id)
	return msg, nil
}

// Producer numbers the batches of one stage instance.
type Producer struct {
	Host  string
	Stage string
	ID    string
	seq   uint64
}

// NewProducer makes a producer with a random id.
func NewProducer(host, stage string) *Producer {
	return &Producer{Host: host, Stage: stage, ID: containv1.FormatID(containv1.NewIDGen().Next())[:8]}
}

// Batch wraps events in a new batch with the next sequence number. It is
// not safe for concurrent use.
func (p *Producer) Batch(events []*containv1.Event) *containv1.Batch {
	p.seq++
	return &containv1.Batch{
		SchemaVersion: containv1.SchemaVersion,
		Host:          p.Host,
		Stage:         p.Stage,
		ProducerId:    p.ID,
		Seq:           p.seq,
		Events:        events,
	}
}
