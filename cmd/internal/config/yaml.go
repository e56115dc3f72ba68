package config

import (
	"fmt"
	"reflect"
	"sort"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"
)

// Masked replaces a secret's value in YAML output.
const Masked = "********"

// YAML renders the struct v as the nested YAML document Load reads, keys
// in declaration order; a non-empty string whose key mask reports is
// printed as Masked. Pasted back into a file it loads to the same values.
func YAML(v any, mask func(key string) bool) ([]byte, error) {
	n, err := node(reflect.Indirect(reflect.ValueOf(v)), "", mask)
	if err != nil {
		return nil, err
	}
	return yaml.Marshal(&yaml.Node{Kind: yaml.DocumentNode, Content: []*yaml.Node{n}})
}

func node(v reflect.Value, key string, mask func(string) bool) (*yaml.Node, error) {
	t := v.Type()
	switch {
	case t == durationType:
		return scalar(time.Duration(v.Int()).String())
	case t.Kind() == reflect.Struct:
		m := &yaml.Node{Kind: yaml.MappingNode}
		for i := range t.NumField() {
			f := t.Field(i)
			name, _, _ := strings.Cut(f.Tag.Get(Tag), ",")
			if !f.IsExported() || name == "-" {
				continue
			}
			if name == "" {
				return nil, fmt.Errorf("config: %s.%s has no %s tag", t, f.Name, Tag)
			}
			sub := name
			if key != "" {
				sub = key + "." + name
			}
			c, err := node(v.Field(i), sub, mask)
			if err != nil {
				return nil, err
			}
			m.Content = append(m.Content, &yaml.Node{Kind: yaml.ScalarNode, Value: name}, c)
		}
		return m, nil
	case t.Kind() == reflect.Slice:
		s := &yaml.Node{Kind: yaml.SequenceNode, Style: yaml.FlowStyle}
		for i := range v.Len() {
			c, err := node(v.Index(i), key, mask)
			if err != nil {
				return nil, err
			}
			if c.Kind != yaml.ScalarNode {
				s.Style = 0
			}
			s.Content = append(s.Content, c)
		}
		return s, nil
	case t.Kind() == reflect.Map:
		m := &yaml.Node{Kind: yaml.MappingNode}
		keys := v.MapKeys()
		sort.Slice(keys, func(i, j int) bool { return fmt.Sprint(keys[i]) < fmt.Sprint(keys[j]) })
		if len(keys) == 0 {
			m.Style = yaml.FlowStyle
		}
		for _, k := range keys {
			kn, err := scalar(k.Interface())
			if err != nil {
				return nil, err
			}
			c, err := node(v.MapIndex(k), key, mask)
			if err != nil {
				return nil, err
			}
			m.Content = append(m.Content, kn, c)
		}
		return m, nil
	case t.Kind() == reflect.String && v.String() != "" && mask != nil && mask(key):
		return scalar(Masked)
	}
	return scalar(v.Interface())
}

func scalar(v any) (*yaml.Node, error) {
	var n yaml.Node
	if err := n.Encode(v); err != nil {
		return nil, fmt.Errorf("config: %w", err)
	}
	return &n, nil
}

// Inline renders one value on one line (docs/config.md's defaults).
func Inline(v reflect.Value) string {
	n, err := node(v, "", nil)
	if err != nil {
		return fmt.Sprint(v.Interface())
	}
	if n.Kind == yaml.SequenceNode || n.Kind == yaml.MappingNode {
		n.Style = yaml.FlowStyle
	}
	out, err := yaml.Marshal(n)
	if err != nil {
		return fmt.Sprint(v.Interface())
	}
	return strings.TrimSpace(string(out))
}
