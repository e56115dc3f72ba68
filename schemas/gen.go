// Package schemas holds contain's versioned event schema (contain/v1) and
// the generated Go in containv1: the protobuf-go types and, for the bus's
// hot path, protoc-gen-go-vtproto's MarshalVT/UnmarshalVT/SizeVT (no
// reflection; internal/bus checks UTF-8 as proto.Unmarshal does).
// Regenerate with `go generate ./schemas`.
package schemas

//go:generate sh -c "protoc --plugin=protoc-gen-go=$(go tool -n protoc-gen-go) --go_out=. --go_opt=module=github.com/containsec/contain/schemas -I . contain/v1/events.proto"
//go:generate sh -c "protoc --plugin=protoc-gen-go-vtproto=$(go tool -n protoc-gen-go-vtproto) --go-vtproto_out=. --go-vtproto_opt=module=github.com/containsec/contain/schemas,features=marshal+unmarshal+unmarshal_unsafe+size -I . contain/v1/events.proto"
