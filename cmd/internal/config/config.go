// Package config loads contain's configuration with viper: defaults taken
// from typed structs, then a YAML file, then CONTAIN_* environment
// variables, then flags. Every exported field of a config struct names its
// key in a `config:"..."` tag (Collector.QueueLen `config:"queue_len"` is
// collector.queue_len, env CONTAIN_COLLECTOR_QUEUE_LEN); a field without one
// is a programming error that Fields reports. An optional `help:"..."` tag
// overrides the field's doc comment in docs/config.md.
// Only cmd/ uses this package; stages receive their typed structs.
package config

import (
	"errors"
	"fmt"
	"os"
	"reflect"
	"regexp"
	"sort"
	"strings"
	"time"

	"github.com/go-viper/mapstructure/v2"
	"github.com/spf13/pflag"
	"github.com/spf13/viper"
	"go.yaml.in/yaml/v3"
)

// EnvPrefix prefixes every environment variable.
const EnvPrefix = "CONTAIN"

// Tag is the struct tag naming a field's key.
const Tag = "config"

// Field is one leaf key of a config struct.
type Field struct {
	Key   string // dotted: nats.embedded.store_dir
	Value reflect.Value
	// Struct and Name locate the Go field (for doc comments); Help is its
	// help tag.
	Struct reflect.Type
	Name   string
	Help   string
}

// Env is the environment variable that sets key.
func Env(key string) string {
	return EnvPrefix + "_" + strings.ToUpper(strings.ReplaceAll(key, ".", "_"))
}

var durationType = reflect.TypeOf(time.Duration(0))

// isLeaf: nested structs are walked, everything else (durations, slices
// of structs, maps) is one key.
func isLeaf(t reflect.Type) bool {
	return t.Kind() != reflect.Struct || t == durationType || t.PkgPath() == "time"
}

// Fields lists every leaf key of the struct v (a pointer or value) in
// declaration order, walking nested structs. It fails on an exported field
// without a config tag, or a key used twice.
func Fields(v any) ([]Field, error) {
	var out []Field
	if err := walk(reflect.Indirect(reflect.ValueOf(v)), "", &out); err != nil {
		return nil, err
	}
	seen := map[string]bool{}
	for _, f := range out {
		if seen[f.Key] {
			return nil, fmt.Errorf("config: key %s used twice", f.Key)
		}
		seen[f.Key] = true
	}
	return out, nil
}

func walk(v reflect.Value, prefix string, out *[]Field) error {
	t := v.Type()
	for i := range t.NumField() {
		f := t.Field(i)
		if !f.IsExported() {
			continue
		}
		key, _, _ := strings.Cut(f.Tag.Get(Tag), ",")
		if key == "-" {
			continue
		}
		if key == "" {
			return fmt.Errorf("config: %s.%s has no %s tag", t, f.Name, Tag)
		}
		if prefix != "" {
			key = prefix + "." + key
		}
		fv := v.Field(i)
		if !isLeaf(f.Type) {
			if err := walk(fv, key, out); err != nil {
				return err
			}
			continue
		}
		if f.Type.Kind() == reflect.Slice && f.Type.Elem().Kind() == reflect.Struct {
			if err := checkTags(f.Type.Elem()); err != nil {
				return err
			}
		}
		*out = append(*out, Field{Key: key, Value: fv, Struct: t, Name: f.Name, Help: f.Tag.Get("help")})
	}
	return nil
}

// checkTags requires tags in the element structs of list keys too.
func checkTags(t reflect.Type) error {
	for i := range t.NumField() {
		f := t.Field(i)
		if !f.IsExported() {
			continue
		}
		if f.Tag.Get(Tag) == "" {
			return fmt.Errorf("config: %s.%s has no %s tag", t, f.Name, Tag)
		}
		if f.Type.Kind() == reflect.Struct && f.Type != durationType {
			if err := checkTags(f.Type); err != nil {
				return err
			}
		}
	}
	return nil
}

// Keys lists every leaf key of v with its value. It panics where Fields
// fails (a missing tag is caught by every test that loads a config).
func Keys(v any) map[string]any {
	fs, err := Fields(v)
	if err != nil {
		panic(err)
	}
	out := make(map[string]any, len(fs))
	for _, f := range fs {
		out[f.Key] = f.Value.Interface()
	}
	return out
}

// Load fills cfg (a pointer to a struct holding its defaults) from file
// (optional), the environment and flags. flagKeys maps a flag name to the
// config key it sets. An unknown key, or a value that is not of its key's
// type, is an error naming the key and showing the value.
func Load(cfg any, file string, flags *pflag.FlagSet, flagKeys map[string]string) error {
	fields, err := Fields(cfg)
	if err != nil {
		return err
	}
	// viper splits keys at its delimiter, in files too: "::" keeps a map
	// entry such as io.contain.critical one key.
	v := viper.NewWithOptions(viper.KeyDelimiter(delim))
	for _, f := range fields {
		v.SetDefault(vkey(f.Key), f.Value.Interface())
	}
	v.SetEnvPrefix(EnvPrefix)
	v.SetEnvKeyReplacer(strings.NewReplacer(delim, "_"))
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
				if err := v.BindPFlag(vkey(key), f); err != nil {
					return fmt.Errorf("flag --%s: %w", name, err)
				}
			}
		}
	}
	if err := renameKeys(v); err != nil {
		return err
	}
	if err := checkKeys(v, fields); err != nil {
		return err
	}
	for _, f := range fields {
		if err := decodeValue(v.Get(vkey(f.Key)), f.Value.Type()); err != nil {
			return fmt.Errorf("config: %s: %w", f.Key, err)
		}
	}
	settings := v.AllSettings()
	for old := range Renamed {
		dropKey(settings, strings.Split(old, "."))
	}
	if err := decode(settings, cfg); err != nil {
		return fmt.Errorf("config: %w", err)
	}
	return nil
}

// Renamed maps a key an earlier release used to its successor: a file,
// variable or flag that still sets the old key sets the new one (a config
// that worked before an upgrade keeps working), unless the new key is set
// too, which is an error naming both.
var Renamed = map[string]string{
	"store.flush_interval": "store.insert_max_age",
}

func renameKeys(v *viper.Viper) error {
	set := map[string]bool{}
	for _, k := range v.AllKeys() {
		set[strings.ReplaceAll(k, delim, ".")] = true
	}
	olds := make([]string, 0, len(Renamed))
	for old := range Renamed {
		olds = append(olds, old)
	}
	sort.Strings(olds)
	for _, old := range olds {
		if !set[old] && os.Getenv(EnvPrefix+"_"+strings.ToUpper(strings.ReplaceAll(old, ".", "_"))) == "" {
			continue
		}
		nk := Renamed[old]
		if v.InConfig(vkey(nk)) || os.Getenv(EnvPrefix+"_"+strings.ToUpper(strings.ReplaceAll(nk, ".", "_"))) != "" {
			return fmt.Errorf("config: %s is the old name of %s; set only %s", old, nk, nk)
		}
		v.Set(vkey(nk), v.Get(vkey(old)))
	}
	return nil
}

// dropKey deletes the nested key path from m (viper's settings).
func dropKey(m map[string]any, path []string) {
	if len(path) == 1 {
		delete(m, path[0])
		return
	}
	if sub, ok := m[path[0]].(map[string]any); ok {
		dropKey(sub, path[1:])
	}
}

// isRenamed reports whether k is an old key Load maps to its successor.
func isRenamed(k string) bool { _, ok := Renamed[k]; return ok }

const delim = "::"

func vkey(key string) string { return strings.ReplaceAll(key, ".", delim) }

// checkKeys rejects a key that is no field's: viper lists the file's keys
// flattened, so a map-valued key's entries are allowed under it.
func checkKeys(v *viper.Viper, fields []Field) error {
	known := map[string]bool{}
	var maps []string
	for _, f := range fields {
		known[f.Key] = true
		if f.Value.Kind() == reflect.Map {
			maps = append(maps, f.Key+".")
		}
	}
	var unknown []string
	for _, k := range v.AllKeys() {
		k = strings.ReplaceAll(k, delim, ".")
		if known[k] || isRenamed(k) {
			continue
		}
		underMap := false
		for _, m := range maps {
			underMap = underMap || strings.HasPrefix(k, m)
		}
		if !underMap {
			unknown = append(unknown, k)
		}
	}
	if len(unknown) == 0 {
		return nil
	}
	sort.Strings(unknown)
	return fmt.Errorf("config: unknown key %s", strings.Join(unknown, ", "))
}

func decode(in, out any) error {
	dec, err := mapstructure.NewDecoder(&mapstructure.DecoderConfig{
		TagName:          Tag,
		ErrorUnused:      true,
		WeaklyTypedInput: true,
		Result:           out,
		DecodeHook: mapstructure.ComposeDecodeHookFunc(
			mapstructure.StringToTimeDurationHookFunc(),
			yamlString,
			commaList,
		),
	})
	if err != nil {
		return err
	}
	return dec.Decode(in)
}

// decodeValue decodes one key's raw value into its type, describing a
// failure in the words of the YAML, not of Go.
func decodeValue(raw any, t reflect.Type) error {
	out := reflect.New(t)
	err := decode(raw, out.Interface())
	if err == nil {
		return nil
	}
	if t.Kind() == reflect.Slice && t.Elem().Kind() == reflect.Struct {
		return errors.New(cleanMsg(err.Error()))
	}
	return fmt.Errorf("%s is not %s", show(raw), describe(t))
}

func show(raw any) string {
	if s, ok := raw.(string); ok {
		return fmt.Sprintf("%q", s)
	}
	return fmt.Sprintf("%v", raw)
}

// describe names a Go type as YAML values.
func describe(t reflect.Type) string {
	switch {
	case t == durationType:
		return "a duration (e.g. 500ms, 30s, 5m, 24h)"
	case t.Kind() == reflect.Bool:
		return "true or false"
	case t.Kind() >= reflect.Int && t.Kind() <= reflect.Int64:
		return "an integer"
	case t.Kind() >= reflect.Uint && t.Kind() <= reflect.Uintptr:
		return "a non-negative integer"
	case t.Kind() == reflect.Float32 || t.Kind() == reflect.Float64:
		return "a number"
	case t.Kind() == reflect.String:
		return "a string"
	case t.Kind() == reflect.Slice:
		return "a list of " + strings.TrimPrefix(strings.TrimPrefix(describe(t.Elem()), "an "), "a ") + "s"
	case t.Kind() == reflect.Map:
		return "a map of " + strings.TrimPrefix(describe(t.Elem()), "a ") + "s"
	}
	return "a " + t.Kind().String()
}

var (
	parseErr  = regexp.MustCompile(`'([^']*)' (?:cannot parse value as|expected type) '(\w+)'[^;]*`)
	unusedErr = regexp.MustCompile(`'([^']*)' has invalid keys: ([^;]*)`)
	goWords   = map[string]string{"float64": "a number", "float32": "a number", "int": "an integer", "int64": "an integer",
		"uint64": "a non-negative integer", "bool": "true or false", "string": "a string", "time.Duration": "a duration"}
)

// cleanMsg flattens mapstructure's multi-line error and drops its Go type
// names (expected type 'float64' → a number).
func cleanMsg(msg string) string {
	if _, rest, ok := strings.Cut(msg, "error(s):"); ok {
		var lines []string
		for _, l := range strings.Split(rest, "\n") {
			if l = strings.TrimSpace(strings.TrimPrefix(strings.TrimSpace(l), "*")); l != "" {
				lines = append(lines, l)
			}
		}
		msg = strings.Join(lines, "; ")
	}
	msg = parseErr.ReplaceAllStringFunc(msg, func(m string) string {
		sm := parseErr.FindStringSubmatch(m)
		if w, ok := goWords[sm[2]]; ok {
			return sm[1] + ": not " + w
		}
		return sm[1] + ": not a valid value"
	})
	msg = unusedErr.ReplaceAllString(msg, "$1: unknown key $2")
	for goName, yaml := range map[string]string{
		"'float64'": "a number", "'float32'": "a number", "'int'": "an integer", "'int64'": "an integer",
		"'bool'": "true or false", "'string'": "a string", "'time.Duration'": "a duration",
	} {
		msg = strings.ReplaceAll(msg, "expected type "+goName, "expected "+yaml)
	}
	return msg
}

// yamlString lets an environment variable (always a string) set a map or
// a list of objects: its value is read as YAML ({k: v}, [{name: x}]).
func yamlString(from, to reflect.Type, data any) (any, error) {
	if from.Kind() != reflect.String {
		return data, nil
	}
	if to.Kind() != reflect.Map && (to.Kind() != reflect.Slice || to.Elem().Kind() != reflect.Struct) {
		return data, nil
	}
	var out any
	if err := yaml.Unmarshal([]byte(data.(string)), &out); err != nil {
		return nil, fmt.Errorf("%q is not YAML: %w", data, err)
	}
	return out, nil
}

// commaList splits an environment variable's "a,b" into a list.
func commaList(from, to reflect.Type, data any) (any, error) {
	if from.Kind() != reflect.String || to.Kind() != reflect.Slice || to.Elem().Kind() == reflect.Struct {
		return data, nil
	}
	s := strings.TrimSpace(data.(string))
	if s == "" {
		return []string{}, nil
	}
	parts := strings.Split(s, ",")
	for i := range parts {
		parts[i] = strings.TrimSpace(parts[i])
	}
	return parts, nil
}
