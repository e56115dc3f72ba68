package enricher

import (
	"encoding/json"
	"reflect"
	"strings"
	"testing"
	"unsafe"

	"github.com/containsec/contain/schemas/kvdoc"
)

func TestImageFromLabels(t *testing.T) {
	d := testDigest
	for _, tc := range []struct {
		name       string
		labels     map[string]string
		ref, digst string
	}{
		{"oci annotations", map[string]string{"org.opencontainers.image.ref.name": "web:1", "org.opencontainers.image.digest": d}, "web:1", d},
		{"contain labels win", map[string]string{"io.contain.image.ref": "a:1", "org.opencontainers.image.ref.name": "b:1"}, "a:1", ""},
		{"digest in reference", map[string]string{"io.kubernetes.cri.image-name": "docker.io/library/nginx@" + d}, "docker.io/library/nginx@" + d, d},
		{"cri image-ref", map[string]string{"io.kubernetes.cri.image-name": "nginx:1", "io.kubernetes.cri.image-ref": "docker.io/library/nginx@" + d}, "nginx:1", d},
		{"bad digest ignored", map[string]string{"io.contain.image.ref": "x", "io.contain.image.digest": "sha256:zz"}, "x", ""},
		{"none", map[string]string{"foo": "bar"}, "", ""},
		{"nil", nil, "", ""},
		{"too long ref ignored", map[string]string{"io.contain.image.ref": strings.Repeat("a", 2000)}, "", ""},
	} {
		ref, digest := ImageFromLabels(tc.labels)
		if ref != tc.ref || digest != tc.digst {
			t.Errorf("%s: got (%q, %q), want (%q, %q)", tc.name, ref, digest, tc.ref, tc.digst)
		}
	}
}

// FuzzImageFromLabels: any labels give a valid digest or none, never a panic.
func FuzzImageFromLabels(f *testing.F) {
	f.Add("org.opencontainers.image.ref.name", "web@"+testDigest, "io.contain.image.digest", testDigest)
	f.Add("io.kubernetes.cri.image-ref", "x@sha256:", "io.contain.image.ref", "@@@")
	f.Add("", "", "", "")
	f.Fuzz(func(t *testing.T, k1, v1, k2, v2 string) {
		ref, digest := ImageFromLabels(map[string]string{k1: v1, k2: v2})
		if digest != "" && !ValidDigest(digest) {
			t.Fatalf("invalid digest %q returned", digest)
		}
		if len(ref) > maxLabelValue {
			t.Fatalf("over-long ref returned")
		}
		// The key built from what labels give is a valid NATS KV key (its
		// bytes, no empty '/' or '.' token) that unescapes to its parts:
		// kvdoc keeps an interior single '/', which NATS KV allows.
		key := kvdoc.ContainerKey(ref, digest)
		for _, c := range []byte(key) {
			if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_' || c == '-' || c == '=' || c == '.' || c == '/') {
				t.Fatalf("kv key %q has %q", key, c)
			}
		}
		parts := strings.Split(key, ".")
		if len(parts) != 2 {
			t.Fatalf("kv key %q: %d tokens, want 2", key, len(parts))
		}
		for i, want := range []string{ref, digest} {
			p := parts[i]
			if strings.HasPrefix(p, "/") || strings.HasSuffix(p, "/") || strings.Contains(p, "//") {
				t.Fatalf("kv key %q: token %q has an empty '/' segment", key, p)
			}
			if got, err := kvdoc.UnescapeKey(p); err != nil || got != want {
				t.Fatalf("kv key %q: token %q unescapes to %q (%v), want %q", key, p, got, err, want)
			}
		}
	})
}

// FuzzDecodeContainerRecord: container records from KV are parsed safely.
func FuzzDecodeContainerRecord(f *testing.F) {
	good, _ := json.Marshal(ContainerImage{Host: "h", ContainerID: "c", ImageRef: "r", ImageDigest: testDigest})
	f.Add(good)
	f.Add([]byte(`{"container_id":"c","image_digest":"nope"}`))
	f.Add([]byte(`{`))
	f.Fuzz(func(t *testing.T, b []byte) {
		rec, err := decodeContainerRecord(b)
		if err != nil {
			return
		}
		if rec.ContainerID == "" || rec.ImageDigest != "" && !ValidDigest(rec.ImageDigest) {
			t.Fatalf("accepted bad record %+v", rec)
		}
	})
}

func TestConfigValidate(t *testing.T) {
	if err := DefaultConfig().Validate(); err != nil {
		t.Fatalf("default config: %v", err)
	}
	for key, mut := range map[string]func(*Config){
		"enricher.workers":              func(c *Config) { c.Workers = -1 },
		"enricher.fetch":                func(c *Config) { c.Fetch = 0 },
		"enricher.containers_bucket":    func(c *Config) { c.ContainersBucket = "a.b" },
		"enricher.image_sources.daemon": func(c *Config) { c.ImageSources.Daemon = true },
		"enricher.compose_files[0]":     func(c *Config) { c.ComposeFiles = []string{""} },
	} {
		c := DefaultConfig()
		mut(&c)
		if err := c.Validate(); err == nil || !strings.HasPrefix(err.Error(), key) {
			t.Errorf("%s: got %v", key, err)
		}
	}
}

// TestContainerImageCloneCopiesEveryString holds clone to every string of
// ContainerImage, a field added later included: a record built from an
// aliased event (bus.DecodeAliased) must not keep the message's payload.
func TestContainerImageCloneCopiesEveryString(t *testing.T) {
	payload := []byte(strings.Repeat("x", 64))
	inPayload := func(s string) bool {
		if len(s) == 0 {
			return false
		}
		p := uintptr(unsafe.Pointer(unsafe.StringData(s)))
		start := uintptr(unsafe.Pointer(&payload[0]))
		return p >= start && p < start+uintptr(len(payload))
	}
	aliased := unsafe.String(&payload[0], 8)
	var c ContainerImage
	v := reflect.ValueOf(&c).Elem()
	for i := range v.NumField() {
		switch f := v.Field(i); f.Kind() {
		case reflect.String:
			f.SetString(aliased)
		case reflect.Slice:
			if f.Type().Elem().Kind() != reflect.String {
				t.Fatalf("field %s: a slice of %s; teach clone and this test about it", v.Type().Field(i).Name, f.Type().Elem())
			}
			f.Set(reflect.ValueOf([]string{aliased, aliased}))
		case reflect.Bool, reflect.Int64:
		default:
			t.Fatalf("field %s of kind %s: teach clone and this test about it", v.Type().Field(i).Name, f.Kind())
		}
	}
	cv := reflect.ValueOf(c.clone())
	for i := range cv.NumField() {
		f := cv.Field(i)
		switch f.Kind() {
		case reflect.String:
			if f.String() != aliased || inPayload(f.String()) {
				t.Errorf("clone kept field %s in the payload (or changed it: %q)", cv.Type().Field(i).Name, f.String())
			}
		case reflect.Slice:
			for j := range f.Len() {
				if inPayload(f.Index(j).String()) {
					t.Errorf("clone kept %s[%d] in the payload", cv.Type().Field(i).Name, j)
				}
			}
		}
	}
}
