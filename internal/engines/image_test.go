package engines

import (
	"runtime"
	"testing"
)

func TestParseManifest(t *testing.T) {
	manifest := `{"schemaVersion":2,"mediaType":"application/vnd.docker.distribution.manifest.v2+json","config":{"digest":"sha256:c0"}}`
	if cfg, next, _, err := ParseManifest([]byte(manifest), ""); err != nil || cfg != "sha256:c0" || next != "" {
		t.Fatalf("manifest: %q %q %v", cfg, next, err)
	}
	index := `{"schemaVersion":2,"manifests":[` +
		`{"mediaType":"m1","digest":"sha256:other","platform":{"os":"plan9","architecture":"mips"}},` +
		`{"mediaType":"m2","digest":"sha256:mine","platform":{"os":"` + runtime.GOOS + `","architecture":"` + runtime.GOARCH + `"}}]}`
	if cfg, next, typ, err := ParseManifest([]byte(index), "application/vnd.oci.image.index.v1+json"); err != nil || cfg != "" || next != "sha256:mine" || typ != "m2" {
		t.Fatalf("index: %q %q %q %v", cfg, next, typ, err)
	}
	if _, next, _, err := ParseManifest([]byte(`{"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[]}`), ""); err != nil || next != "" {
		t.Fatalf("empty index: %q %v", next, err)
	}
	if _, _, _, err := ParseManifest([]byte(`{"manifests":[{}]}`), "application/vnd.oci.image.index.v1+json"); err == nil {
		t.Fatal("index entry without digest accepted")
	}
	if _, _, _, err := ParseManifest([]byte(`{`), ""); err == nil {
		t.Fatal("truncated manifest accepted")
	}
}

func FuzzParseManifest(f *testing.F) {
	f.Add([]byte(`{"config":{"digest":"sha256:c0"}}`), "")
	f.Add([]byte(`{"manifests":[{"digest":"sha256:a","platform":{"os":"linux","architecture":"amd64"}}]}`), "application/vnd.oci.image.index.v1+json")
	f.Add([]byte(`{"mediaType":"application/vnd.docker.distribution.manifest.list.v2+json","manifests":[{}]}`), "")
	f.Add([]byte(`null`), "")
	f.Fuzz(func(t *testing.T, b []byte, mediaType string) {
		cfg, next, _, err := ParseManifest(b, mediaType)
		if err == nil && cfg != "" && next != "" {
			t.Fatalf("both a config %q and a next manifest %q", cfg, next)
		}
	})
}
