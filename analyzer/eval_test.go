package analyzer

import (
	"bytes"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// x86_64 syscall numbers used by the synthetic workloads.
const (
	nrRead, nrWrite, nrOpen, nrClose, nrFstat, nrPoll, nrMmap = 0, 1, 2, 3, 5, 7, 9
	nrSocket, nrConnect, nrAccept, nrSendto, nrRecvfrom       = 41, 42, 43, 44, 45
	nrClone, nrExecve, nrDup2, nrWait4, nrSetuid, nrPtrace    = 56, 59, 33, 61, 105, 101
	nrChroot, nrMount, nrUnshare, nrSetns, nrOpenat, nrEpoll  = 161, 165, 272, 308, 257, 232
)

// serverTrace is a web server handling requests: a Markov walk over a few
// request shapes.
func serverTrace(r *rand.Rand, n int) []uint32 {
	shapes := [][]uint32{
		{nrEpoll, nrAccept, nrRead, nrOpenat, nrFstat, nrRead, nrClose, nrWrite, nrClose},
		{nrEpoll, nrAccept, nrRead, nrWrite, nrClose},
		{nrEpoll, nrRead, nrWrite},
		{nrPoll, nrRecvfrom, nrSendto},
		{nrMmap, nrRead, nrClose},
	}
	var t []uint32
	for len(t) < n {
		t = append(t, shapes[r.IntN(len(shapes))]...)
	}
	return t[:n]
}

// inject puts an attack fragment in the middle of a normal trace.
func inject(r *rand.Rand, n int, frag []uint32) []uint32 {
	t := serverTrace(r, n)
	at := r.IntN(n - len(frag))
	return append(append(append([]uint32(nil), t[:at]...), frag...), t[at:]...)
}

func synthetic(seed uint64) (train, normal [][]uint32, attack map[string][][]uint32) {
	r := rand.New(rand.NewPCG(seed, 1))
	for range 200 {
		train = append(train, serverTrace(r, 400))
	}
	for range 200 {
		normal = append(normal, serverTrace(r, 400))
	}
	fams := map[string][]uint32{
		"reverse-shell": {nrSocket, nrConnect, nrDup2, nrDup2, nrDup2, nrExecve, nrRead, nrWrite},
		"escape":        {nrUnshare, nrMount, nrChroot, nrExecve, nrSetns},
		"privesc":       {nrSetuid, nrExecve, nrOpen, nrWrite, nrClose},
		"injection":     {nrPtrace, nrPtrace, nrPtrace, nrWrite, nrClone, nrWait4},
	}
	attack = map[string][][]uint32{}
	for f, frag := range fams {
		for range 50 {
			attack[f] = append(attack[f], inject(r, 400, frag))
		}
	}
	return train, normal, attack
}

func TestEvalSynthetic(t *testing.T) {
	train, normal, attack := synthetic(7)
	r, err := EvalTraces(train, normal, attack, EvalConfig{})
	if err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	_ = r.WriteText(&buf)
	t.Logf("\n%s", buf.String())
	if r.AUC < 0.99 || r.DetectedAt1 < 0.95 || r.DetectedAt5 < 0.95 {
		t.Errorf("weak detection: %+v", r)
	}
	for f, fr := range r.Families {
		if fr.DetectedAt5 < 0.9 {
			t.Errorf("family %s detected %.2f at 5%% FPR", f, fr.DetectedAt5)
		}
	}
	// Mimicry (an "attack" made of normal behaviour) must not look
	// detectable: the evaluation is not rigged.
	r2, err := EvalTraces(train, normal, map[string][][]uint32{"mimicry": normal[:100]}, EvalConfig{})
	if err != nil {
		t.Fatal(err)
	}
	if r2.AUC > 0.7 || r2.DetectedAt1 > 0.05 {
		t.Errorf("normal traces separated from normal: AUC %.3f, det@1%% %.3f", r2.AUC, r2.DetectedAt1)
	}
}

func TestEvalFromDirs(t *testing.T) {
	train, normal, attack := synthetic(3)
	dir := t.TempDir()
	write := func(sub string, ts [][]uint32) {
		p := filepath.Join(dir, sub)
		if err := os.MkdirAll(p, 0o755); err != nil {
			t.Fatal(err)
		}
		for i, tr := range ts {
			var sb strings.Builder
			for j, x := range tr {
				if j > 0 {
					sb.WriteString([]string{" ", "\n", "\t"}[j%3])
				}
				fmt.Fprint(&sb, x)
			}
			if err := os.WriteFile(filepath.Join(p, fmt.Sprintf("%04d.txt", i)), []byte(sb.String()), 0o644); err != nil {
				t.Fatal(err)
			}
		}
	}
	write("train", train)
	write("normal", normal)
	for f, ts := range attack {
		write(filepath.Join("attack", f), ts)
	}
	r, err := Eval(filepath.Join(dir, "train"), filepath.Join(dir, "normal"), filepath.Join(dir, "attack"), EvalConfig{})
	if err != nil {
		t.Fatal(err)
	}
	if r.Train != 200 || r.Attack != 200 || len(r.Families) != 4 || r.AUC < 0.99 {
		t.Errorf("%+v", r)
	}
	if err := os.WriteFile(filepath.Join(dir, "normal", "bad.txt"), []byte("1 2 x"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := Eval(filepath.Join(dir, "train"), filepath.Join(dir, "normal"), filepath.Join(dir, "attack"), EvalConfig{}); err == nil || !strings.Contains(err.Error(), "bad.txt") {
		t.Errorf("bad trace: %v", err)
	}
}

func TestAUC(t *testing.T) {
	if a := auc([]float64{0, 0.1}, []float64{0.5, 0.9}); a != 1 {
		t.Errorf("separated: %v", a)
	}
	if a := auc([]float64{0.5, 0.5}, []float64{0.5, 0.5}); a != 0.5 {
		t.Errorf("ties: %v", a)
	}
	if a := auc([]float64{0.9}, []float64{0.1}); a != 0 {
		t.Errorf("inverted: %v", a)
	}
}
