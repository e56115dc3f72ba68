package notify

import (
	"errors"
	"fmt"
	"net/url"
	"slices"
	"strings"
	"time"
)

// Output types.
const (
	TypeWebhook       = "webhook"
	TypeSyslog        = "syslog"
	TypeFalcosidekick = "falcosidekick"
)

// Webhook payload formats.
const (
	FormatJSON  = "json"  // the Notification document
	FormatSlack = "slack" // Slack incoming-webhook message (text + attachments)
)

// Config configures the notify stage (key notify).
type Config struct {
	// Outputs are where alerts and actions are pushed; none: the stage
	// does not run in `contain run`.
	Outputs []OutputConfig `config:"outputs"`
	// MinScore: alerts scoring below it are not pushed (actions always are,
	// skipped ones never).
	MinScore float64 `config:"min_score"`
	// Alerts pushes alerts; false pushes only the responder's actions.
	Alerts bool `config:"alerts"`
	// DurablePrefix names the stage's consumers: <prefix>-alerts on
	// CONTAIN_ALERTS, <prefix>-actions on CONTAIN_ACTIONS.
	DurablePrefix string `config:"durable_prefix"`
	// DeliverNew makes new consumers start at the streams' ends rather
	// than pushing every retained alert and action at first start.
	DeliverNew bool `config:"deliver_new"`
}

// OutputConfig is one output (an element of notify.outputs).
type OutputConfig struct {
	// Name labels the output's metrics and logs; default: its type and
	// position ("webhook-0").
	Name string `config:"name"`
	// Type: webhook, syslog or falcosidekick.
	Type string `config:"type"`
	// URL: http(s) URL of a webhook or Falcosidekick; for syslog
	// udp://host:port, tcp://host:port, unix:///dev/log (stream) or
	// unixgram:///dev/log (datagrams).
	URL string `config:"url"`
	// Format of a webhook: json (default) or slack.
	Format string `config:"format"`
	// Headers are added to every HTTP request (e.g. Authorization).
	Headers map[string]string `config:"headers"`
	// Facility of syslog messages (0-23; default 10, authpriv).
	Facility int `config:"facility"`
	// AppName of syslog messages (default contain).
	AppName string `config:"app_name"`
	// Timeout bounds one delivery attempt (default 5s).
	Timeout time.Duration `config:"timeout"`
	// MaxRetries is how many times a failed attempt is retried, with
	// exponential back-off, before the message is left to JetStream's
	// redelivery (default 5).
	MaxRetries int `config:"max_retries"`
	// Backoff is the first retry's delay, doubled each retry up to
	// MaxBackoff (defaults 500ms, 30s).
	Backoff    time.Duration `config:"backoff"`
	MaxBackoff time.Duration `config:"max_backoff"`
	// QueueLen bounds the messages waiting for this output; a message
	// that finds it full is dropped and counted (default 1024).
	QueueLen int `config:"queue_len"`
	// MaxInFlight is how many deliveries run at once (default 4).
	MaxInFlight int `config:"max_in_flight"`
}

// DefaultConfig is notify's configuration with no outputs.
func DefaultConfig() Config {
	return Config{Alerts: true, MinScore: 0, DurablePrefix: "notify"}
}

// Enabled reports whether any output is configured.
func (c Config) Enabled() bool { return len(c.Outputs) > 0 }

// withDefaults fills the zero fields of output i.
func (o OutputConfig) withDefaults(i int) OutputConfig {
	if o.Name == "" {
		o.Name = fmt.Sprintf("%s-%d", o.Type, i)
	}
	if o.Format == "" {
		o.Format = FormatJSON
	}
	if o.Facility == 0 {
		o.Facility = 10
	}
	if o.AppName == "" {
		o.AppName = "contain"
	}
	if o.Timeout <= 0 {
		o.Timeout = 5 * time.Second
	}
	if o.MaxRetries == 0 {
		o.MaxRetries = 5
	}
	if o.Backoff <= 0 {
		o.Backoff = 500 * time.Millisecond
	}
	if o.MaxBackoff <= 0 {
		o.MaxBackoff = 30 * time.Second
	}
	if o.QueueLen <= 0 {
		o.QueueLen = 1024
	}
	if o.MaxInFlight <= 0 {
		o.MaxInFlight = 4
	}
	return o
}

// Validate reports the first invalid setting.
func (c Config) Validate() error {
	if c.MinScore < 0 || c.MinScore > 1 {
		return fmt.Errorf("notify.min_score: %v must be in [0, 1]", c.MinScore)
	}
	if c.Enabled() && c.DurablePrefix == "" {
		return errors.New("notify.durable_prefix: must be set")
	}
	var names []string
	for i, o := range c.Outputs {
		o = o.withDefaults(i)
		key := fmt.Sprintf("notify.outputs[%d]", i)
		if slices.Contains(names, o.Name) {
			return fmt.Errorf("%s.name: %q used twice", key, o.Name)
		}
		names = append(names, o.Name)
		if err := o.validate(); err != nil {
			return fmt.Errorf("%s.%w", key, err)
		}
	}
	return nil
}

func (o OutputConfig) validate() error {
	u, err := url.Parse(o.URL)
	if err != nil || o.URL == "" {
		return fmt.Errorf("url: %q is not a URL", o.URL)
	}
	switch o.Type {
	case TypeWebhook, TypeFalcosidekick:
		if u.Scheme != "http" && u.Scheme != "https" || u.Host == "" {
			return fmt.Errorf("url: %q: a %s needs an http(s) URL", o.URL, o.Type)
		}
		if o.Type == TypeWebhook && o.Format != FormatJSON && o.Format != FormatSlack {
			return fmt.Errorf("format: %q is not json or slack", o.Format)
		}
	case TypeSyslog:
		switch u.Scheme {
		case "udp", "tcp":
			if u.Host == "" || u.Port() == "" {
				return fmt.Errorf("url: %q: syslog over %s needs host:port", o.URL, u.Scheme)
			}
		case "unix", "unixgram":
			if u.Path == "" {
				return fmt.Errorf("url: %q: syslog over %s needs a socket path", o.URL, u.Scheme)
			}
		default:
			return fmt.Errorf("url: %q: syslog needs udp://, tcp://, unix:// or unixgram://", o.URL)
		}
		if o.Facility < 0 || o.Facility > 23 {
			return fmt.Errorf("facility: %d out of 0-23", o.Facility)
		}
		if strings.ContainsAny(o.AppName, " \t\n") || len(o.AppName) > 48 {
			return fmt.Errorf("app_name: %q must be 1-48 printable characters without spaces", o.AppName)
		}
	default:
		return fmt.Errorf("type: %q is not webhook, syslog or falcosidekick", o.Type)
	}
	if o.MaxRetries < 0 {
		return fmt.Errorf("max_retries: %d is negative", o.MaxRetries)
	}
	return nil
}
