// Package config loads contain's configuration with viper: defaults taken
// from typed structs, then a YAML file, then CONTAIN_* environment
// variables, then flags. Keys are the snake_case of the struct field names
// (Collector.QueueLen is collector.queue_len, env CONTAIN_COLLECTOR_QUEUE_LEN).
// Only cmd/ uses this package; stages receive their typed structs.
package config

import (
	"errors"
	"fmt"
	"reflect"
	"regexp"
	"strings"
	"time"
	"unicode"

	"github.com/go-viper/mapstructure/v2"
	"github.com/spf13/pflag"
	"github.com/spf13/viper"
)

// EnvPrefix prefixes every environment variable.
const EnvPrefix = "CONTAIN"

// SnakeCase turns a Go field name into its config key: QueueLen→queue_len,
// NATS→nats, StoreDir→store_dir, URL→url, IPv6Addr→ipv6_addr,
// NeverPauseIDs→never_pause_ids, CAFile→ca_file. An upper-case run is one
// word (its last letter starts the next word when a lower-case letter
// follows), except that a plural "s" (IDs, URLs) and a version "v<digit>"
// (IPv6) stay with the run.
func SnakeCase(s string) string {
	r := []rune(s)
	var b strings.Builder
	inRun := func(i int) bool { // r[i] (lower case) belongs to the upper-case run before it
		if i == 0 || !unicode.IsUpper(r[i-1]) || i < 2 || !unicode.IsUpper(r[i-2]) {
			return false
		}
		next := func(j int) bool { return j >= len(r) || unicode.IsUpper(r[j]) }
		return (r[i] == 's' && next(i+1)) || (r[i] == 'v' && i+1 < len(r) && unicode.IsDigit(r[i+1]))
	}
	for i, c := range r {
		if unicode.IsUpper(c) {
			startsWord := i > 0 && (unicode.IsLower(r[i-1]) || unicode.IsDigit(r[i-1]) ||
				(i+1 < len(r) && unicode.IsLower(r[i+1]) && !inRun(i+1) && unicode.IsUpper(r[i-1])))
			if startsWord {
				b.WriteByte('_')
			}
			b.WriteRune(unicode.ToLower(c))
			continue
		}
		b.WriteRune(c)
	}
	return b.String()
}

// Keys lists every leaf key of the struct v (a pointer or value) with its
// value, walking nested structs. time.Duration and other non-struct types
// are leaves.
func Keys(v any) map[string]any {
	out := map[string]any{}
	walk(reflect.Indirect(reflect.ValueOf(v)), "", out)
	return out
}

var durationType = reflect.TypeOf(time.Duration(0))

func walk(v reflect.Value, prefix string, out map[string]any) {
	t := v.Type()
	for i := range t.NumField() {
		f := t.Field(i)
		if !f.IsExported() {
			continue
		}
		key := SnakeCase(f.Name)
		if tag := f.Tag.Get("mapstructure"); tag != "" && tag != "-" {
			key = strings.Split(tag, ",")[0]
		}
		if prefix != "" {
			key = prefix + "." + key
		}
		fv := v.Field(i)
		if fv.Kind() == reflect.Struct && f.Type != durationType && f.Type.PkgPath() != "time" {
			walk(fv, key, out)
			continue
		}
		out[key] = fv.Interface()
	}
}

// Load fills cfg (a pointer to a struct holding its defaults) from file
// (optional), the environment and flags. flagKeys maps a flag name to the
// config key it sets. An unknown key or a value of the wrong type is an
// error naming the key.
func Load(cfg any, file string, flags *pflag.FlagSet, flagKeys map[string]string) error {
	v := viper.New()
	for k, val := range Keys(cfg) {
		v.SetDefault(k, val)
	}
	v.SetEnvPrefix(EnvPrefix)
	v.SetEnvKeyReplacer(strings.NewReplacer(".", "_"))
	v.AutomaticEnv()
	if file != "" {
		v.SetConfigFile(file)
		if err := v.ReadInConfig(); err != nil {
			return fmt.Errorf("reading config %s: %w", file, err)
		}
	}
	if flags != nil {
		for name, key := range flagKeys {
			if f := flags.Lookup(name); f != nil && f.Changed {
				if err := v.BindPFlag(key, f); err != nil {
					return fmt.Errorf("flag --%s: %w", name, err)
				}
			}
		}
	}
	err := v.Unmarshal(cfg, func(dc *mapstructure.DecoderConfig) {
		dc.ErrorUnused = true
		dc.WeaklyTypedInput = true
		dc.MatchName = func(mapKey, fieldName string) bool {
			return mapKey == SnakeCase(fieldName) || strings.EqualFold(mapKey, fieldName)
		}
	})
	if err != nil {
		return fmt.Errorf("config: %w", cleanErr(err))
	}
	return nil
}

// cleanErr flattens mapstructure's multi-line error and renames the Go
// field paths it names ('Collector.QueueLen') to config keys
// (collector.queue_len).
func cleanErr(err error) error {
	msg := err.Error()
	if _, rest, ok := strings.Cut(msg, "error(s):"); ok {
		var lines []string
		for _, l := range strings.Split(rest, "\n") {
			if l = strings.TrimSpace(strings.TrimPrefix(strings.TrimSpace(l), "*")); l != "" {
				lines = append(lines, l)
			}
		}
		msg = strings.Join(lines, "; ")
	}
	msg = fieldPath.ReplaceAllStringFunc(msg, func(m string) string {
		parts := strings.Split(strings.Trim(m, "'"), ".")
		for i, p := range parts {
			parts[i] = SnakeCase(p)
		}
		return strings.Join(parts, ".")
	})
	return errors.New(msg)
}

var fieldPath = regexp.MustCompile(`'[A-Z][A-Za-z0-9]*(\.[A-Za-z0-9]+)*'`)
