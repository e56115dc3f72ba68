// Package schemas holds contain's versioned event schema (contain/v1) and
// the generated Go in containv1. Regenerate with `go generate ./schemas`.
package schemas

//go:generate sh -c "protoc --plugin=protoc-gen-go=$(go tool -n protoc-gen-go) --go_out=. --go_opt=module=github.com/containsec/contain/schemas -I . contain/v1/events.proto"
