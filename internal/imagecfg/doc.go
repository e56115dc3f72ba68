// Package imagecfg reads an image's declarations: its config (ports, user,
// entrypoint, volumes, env names, labels), its history (the Dockerfile
// lines that built it) and the files its layers ship. Images come from
// go-containerregistry: a registry, an OCI image layout or a `docker save`
// tarball. Parsing functions are pure and fuzzed; secret-looking env values
// are redacted before a Declaration exists, so they are never stored.
package imagecfg
