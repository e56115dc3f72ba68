package analyzer

import (
	"fmt"
	"sort"
	"strings"
	"unicode/utf8"

	"github.com/containsec/contain/schemas/containv1"
)

// Baseline grouping: which containers share a baseline (analyzer.group_by).
const (
	// GroupByDigest: one baseline per image digest (else image reference,
	// else container). The default.
	GroupByDigest = "digest"
	// GroupByRepository: one baseline per image repository, whatever the
	// tag or digest ("shop/web:1.2" and "shop/web@sha256:..." share
	// "repo:shop/web"), so a new release starts from what the previous
	// one learned.
	GroupByRepository = "repository"
	// GroupByCompose: one baseline per compose project and service
	// (labels com.docker.compose.project, com.docker.compose.service).
	GroupByCompose = "compose"
	// GroupByKubernetes: one baseline per Kubernetes workload and container
	// name: namespace (io.kubernetes.pod.namespace) + workload (label
	// app.kubernetes.io/name, else app, else the pod name without its
	// ReplicaSet/DaemonSet/Job suffix or StatefulSet ordinal) + container
	// (io.kubernetes.container.name).
	GroupByKubernetes = "kubernetes"
)

// GroupByModes lists the accepted analyzer.group_by values.
var GroupByModes = []string{GroupByDigest, GroupByRepository, GroupByCompose, GroupByKubernetes}

func validGroupBy(s string) error {
	if s == "" {
		return nil // digest
	}
	for _, m := range GroupByModes {
		if s == m {
			return nil
		}
	}
	return fmt.Errorf("analyzer.group_by: %q is not one of %s", s, strings.Join(GroupByModes, ", "))
}

// Label keys read for grouping.
const (
	LabelComposeProject  = "com.docker.compose.project"
	LabelComposeService  = "com.docker.compose.service"
	LabelK8sNamespace    = "io.kubernetes.pod.namespace"
	LabelK8sPod          = "io.kubernetes.pod.name"
	LabelK8sContainer    = "io.kubernetes.container.name"
	LabelCRINamespace    = "io.kubernetes.cri.sandbox-namespace"
	LabelCRIPod          = "io.kubernetes.cri.sandbox-name"
	LabelCRIContainer    = "io.kubernetes.cri.container-name"
	LabelAppName         = "app.kubernetes.io/name"
	LabelApp             = "app"
	maxGroupLabel        = 253
	groupPrefixCompose   = "compose:"
	groupPrefixK8s       = "k8s:"
	groupPrefixRepo      = "repo:"
	groupPrefixContainer = "container:"
)

// GroupKey is the baseline key of a container under mode, from the labels
// (and pod, namespace) of its KIND_CONTAINER event; "" when the labels do
// not name a group for mode (or mode groups by image): the container's
// events then use their image key (see BaselineKey).
func GroupKey(mode string, ci *containv1.ContainerInfo) string {
	if ci == nil {
		return ""
	}
	l := ci.Labels
	switch mode {
	case GroupByCompose:
		proj, svc := label(l, LabelComposeProject), label(l, LabelComposeService)
		if svc == "" {
			return ""
		}
		return groupPrefixCompose + proj + "/" + svc
	case GroupByKubernetes:
		ns := first(clean(ci.Namespace), label(l, LabelK8sNamespace), label(l, LabelCRINamespace))
		pod := first(clean(ci.Pod), label(l, LabelK8sPod), label(l, LabelCRIPod))
		ctr := first(label(l, LabelK8sContainer), label(l, LabelCRIContainer))
		wl := first(label(l, LabelAppName), label(l, LabelApp), PodWorkload(pod))
		if ns == "" || wl == "" {
			return ""
		}
		return groupPrefixK8s + ns + "/" + wl + "/" + ctr
	case GroupByRepository:
		// The runtime's image reference (never a label) when the collector
		// read it.
		if r := Repository(ci.ImageRef); r != "" && len(r) <= maxGroupLabel {
			return groupPrefixRepo + r
		}
	case GroupByDigest, "":
		// The runtime's digest (ContainerInfo.image_digest, from the
		// runtime's state or engine API) is the group: a label naming
		// another digest can neither move the container to another
		// baseline nor open a fresh learning window.
		if runtimeDigest(ci.ImageDigest) {
			return ci.ImageDigest
		}
	}
	return ""
}

// runtimeDigest reports an algorithm:hex digest (sha256 or sha512).
func runtimeDigest(d string) bool {
	alg, hex, ok := strings.Cut(d, ":")
	if !ok || (alg != "sha256" || len(hex) != 64) && (alg != "sha512" || len(hex) != 128) {
		return false
	}
	return strings.Trim(hex, "0123456789abcdef") == ""
}

// BaselineKey is the baseline an event belongs to under mode, given its
// container's GroupKey (may be "").
func BaselineKey(mode, group string, ev *containv1.Event) string {
	if group != "" {
		return group
	}
	if mode == GroupByRepository {
		if r := Repository(ev.ImageRef); r != "" {
			return groupPrefixRepo + r
		}
	}
	return ImageKey(ev)
}

func label(l map[string]string, k string) string { return clean(l[k]) }

// clean drops a value that could not name a group: over-long, or with a
// separator of the key.
func clean(v string) string {
	v = strings.TrimSpace(v)
	if len(v) > maxGroupLabel || strings.ContainsAny(v, "/\x00") {
		return ""
	}
	return v
}

func first(vs ...string) string {
	for _, v := range vs {
		if v != "" {
			return v
		}
	}
	return ""
}

// Repository is an image reference without its tag and digest:
// "registry:5000/shop/web:1.2@sha256:..." → "registry:5000/shop/web".
func Repository(ref string) string {
	if i := strings.IndexByte(ref, '@'); i >= 0 {
		ref = ref[:i]
	}
	if i := strings.LastIndexByte(ref, ':'); i >= 0 && !strings.Contains(ref[i:], "/") {
		ref = ref[:i]
	}
	return ref
}

// PodWorkload guesses the workload of a pod from its name: a Deployment's
// "web-7d4b9c8f6d-x2x9q" and a DaemonSet's or Job's "agent-x2x9q" name
// "web" and "agent"; a StatefulSet's "db-0" names "db". A name without
// such a suffix is its own workload.
func PodWorkload(pod string) string {
	parts := strings.Split(pod, "-")
	n := len(parts)
	switch {
	case n >= 2 && allDigits(parts[n-1]):
		return strings.Join(parts[:n-1], "-")
	case n >= 3 && isKubeSuffix(parts[n-1], 5, 5) && isKubeSuffix(parts[n-2], 6, 10):
		return strings.Join(parts[:n-2], "-")
	case n >= 2 && isKubeSuffix(parts[n-1], 5, 5):
		return strings.Join(parts[:n-1], "-")
	}
	return pod
}

func allDigits(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return true
}

// isKubeSuffix: Kubernetes' generated name suffixes use the alphabet
// "bcdfghjklmnpqrstvwxz2456789" (no vowels, no 0, 1, 3).
func isKubeSuffix(s string, minLen, maxLen int) bool {
	if len(s) < minLen || len(s) > maxLen {
		return false
	}
	for i := 0; i < len(s); i++ {
		if !strings.ContainsRune("bcdfghjklmnpqrstvwxz2456789", rune(s[i])) {
			return false
		}
	}
	return true
}

// containerInfo records the group of the container a KIND_CONTAINER event
// describes; its next event rebinds it to that group's baseline.
func (e *Engine) containerInfo(ev *containv1.Event) {
	ci := ev.GetContainer()
	if ci == nil {
		e.stats.Invalid++
		return
	}
	g := GroupKey(e.cfg.GroupBy, ci)
	pod, ns, labels := podOf(ci)
	c := e.containers[ev.ContainerId]
	if c == nil {
		if g == "" && pod == "" && ns == "" && len(labels) == 0 {
			return // nothing to remember: events find their image key
		}
		c = e.newContainer(ev)
	}
	// Kept: ev may point into a message's payload (bus.DecodeAliased).
	c.pod, c.namespace, c.labels = strings.Clone(pod), strings.Clone(ns), cloneLabels(labels)
	if c.group != g {
		c.group, c.base = strings.Clone(g), nil
	}
}

// cloneLabels copies l, keys and values.
func cloneLabels(l map[string]string) map[string]string {
	if l == nil {
		return nil
	}
	out := make(map[string]string, len(l))
	for k, v := range l {
		out[strings.Clone(k)] = strings.Clone(v)
	}
	return out
}

// Bounds of the labels an alert carries.
const (
	maxAlertLabels   = 32
	maxAlertLabelLen = 256
)

// podOf is the pod, namespace and labels (at most maxAlertLabels, the
// first by key, each cut to maxAlertLabelLen) an alert about the
// container carries.
func podOf(ci *containv1.ContainerInfo) (pod, ns string, labels map[string]string) {
	l := ci.GetLabels()
	ns = first(clean(ci.GetNamespace()), label(l, LabelK8sNamespace), label(l, LabelCRINamespace))
	pod = first(clean(ci.GetPod()), label(l, LabelK8sPod), label(l, LabelCRIPod))
	if len(l) == 0 {
		return pod, ns, nil
	}
	keys := make([]string, 0, len(l))
	for k := range l {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	labels = make(map[string]string, min(len(keys), maxAlertLabels))
	for _, k := range keys[:min(len(keys), maxAlertLabels)] {
		labels[cut(k, maxAlertLabelLen)] = cut(l[k], maxAlertLabelLen)
	}
	return pod, ns, labels
}

// cut bounds s to n bytes at a rune boundary.
func cut(s string, n int) string {
	if len(s) <= n {
		return s
	}
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return s[:n]
}
