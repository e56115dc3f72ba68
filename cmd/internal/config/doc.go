package config

import (
	"fmt"
	"go/ast"
	"go/parser"
	"go/token"
	"path/filepath"
	"reflect"
	"strings"
)

// Markdown documents every key of v (holding the defaults): type, default,
// environment variable and description, one table per top-level section.
// Descriptions are the fields' help tags or doc comments, read from the Go
// sources under moduleRoot (module is its module path).
func Markdown(v any, moduleRoot, module, title, intro string) (string, error) {
	fields, err := Fields(v)
	if err != nil {
		return "", err
	}
	docs := map[string]string{} // pkgpath.Type.Field → comment
	parsed := map[string]bool{}
	for _, f := range fields {
		pkg := f.Struct.PkgPath()
		if parsed[pkg] {
			continue
		}
		parsed[pkg] = true
		rel, ok := strings.CutPrefix(pkg, module)
		if !ok {
			continue
		}
		if err := comments(filepath.Join(moduleRoot, rel), pkg, docs); err != nil {
			return "", err
		}
	}
	var b strings.Builder
	fmt.Fprintf(&b, "# %s\n\n%s\n", title, intro)
	section := "\x00"
	for _, f := range fields {
		top, _, nested := strings.Cut(f.Key, ".")
		if !nested {
			top = ""
		}
		if top != section {
			section = top
			name := section
			if name == "" {
				name = "(top level)"
			}
			fmt.Fprintf(&b, "\n## %s\n\n| key | type | default | env | description |\n| --- | --- | --- | --- | --- |\n", name)
		}
		desc := f.Help
		if desc == "" {
			desc = docs[f.Struct.PkgPath()+"."+f.Struct.Name()+"."+f.Name]
		}
		def := Inline(f.Value)
		if f.Value.Kind() == reflect.String && f.Value.String() == "" {
			def = `""`
		}
		fmt.Fprintf(&b, "| `%s` | %s | `%s` | `%s` | %s |\n", f.Key, typeName(f.Value.Type()), cell(def), Env(f.Key), cell(desc))
		if t := f.Value.Type(); t.Kind() == reflect.Slice && t.Elem().Kind() == reflect.Struct {
			elemRows(&b, f.Key+"[]", t.Elem(), docs)
		}
	}
	return b.String(), nil
}

// elemRows documents the fields of a list's objects (key[].field); they
// are set with the list, in the file or as YAML in its variable.
func elemRows(b *strings.Builder, prefix string, t reflect.Type, docs map[string]string) {
	for i := range t.NumField() {
		f := t.Field(i)
		name, _, _ := strings.Cut(f.Tag.Get(Tag), ",")
		if !f.IsExported() || name == "" || name == "-" {
			continue
		}
		key := prefix + "." + name
		if f.Type.Kind() == reflect.Struct && f.Type != durationType {
			elemRows(b, key, f.Type, docs)
			continue
		}
		desc := f.Tag.Get("help")
		if desc == "" {
			desc = docs[t.PkgPath()+"."+t.Name()+"."+f.Name]
		}
		fmt.Fprintf(b, "| `%s` | %s | | | %s |\n", key, typeName(f.Type), cell(desc))
	}
}

func cell(s string) string {
	return strings.ReplaceAll(strings.ReplaceAll(s, "|", `\|`), "\n", " ")
}

func typeName(t reflect.Type) string {
	switch {
	case t == durationType:
		return "duration"
	case t.Kind() == reflect.Slice:
		return "list of " + typeName(t.Elem())
	case t.Kind() == reflect.Map:
		return "map of " + typeName(t.Elem())
	case t.Kind() == reflect.Struct:
		return "object"
	case t.Kind() >= reflect.Int && t.Kind() <= reflect.Uint64:
		return "integer"
	case t.Kind() == reflect.Float64 || t.Kind() == reflect.Float32:
		return "number"
	}
	return t.Kind().String()
}

// comments reads the doc (or trailing) comment of every struct field in
// the package at dir.
func comments(dir, pkg string, out map[string]string) error {
	fset := token.NewFileSet()
	files, err := filepath.Glob(filepath.Join(dir, "*.go"))
	if err != nil {
		return err
	}
	for _, fn := range files {
		if strings.HasSuffix(fn, "_test.go") {
			continue
		}
		f, err := parser.ParseFile(fset, fn, nil, parser.ParseComments)
		if err != nil {
			return fmt.Errorf("config: %w", err)
		}
		ast.Inspect(f, func(n ast.Node) bool {
			ts, ok := n.(*ast.TypeSpec)
			if !ok {
				return true
			}
			st, ok := ts.Type.(*ast.StructType)
			if !ok {
				return true
			}
			prevText, prevEnd := "", -1
			for _, fld := range st.Fields.List {
				text := fld.Doc.Text()
				if text == "" {
					text = fld.Comment.Text()
				}
				// A field right below a documented one shares its
				// comment ("CertFile and KeyFile are ...").
				line := fset.Position(fld.Pos()).Line
				if text == "" && line == prevEnd+1 {
					text = prevText
				}
				prevText, prevEnd = text, fset.Position(fld.End()).Line
				for _, name := range fld.Names {
					out[pkg+"."+ts.Name.Name+"."+name.Name] = strings.Join(strings.Fields(text), " ")
				}
			}
			return false
		})
	}
	return nil
}
