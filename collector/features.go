package collector

import (
	"errors"
	"fmt"
	"log/slog"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
	"github.com/cilium/ebpf/btf"
	"github.com/cilium/ebpf/features"

	"github.com/containsec/contain/internal/logfields"
)

// MinKernel is the oldest kernel the collector runs on, with BTF
// (CONFIG_DEBUG_INFO_BTF): bpf_loop (5.17) walks paths; before it, ring
// buffers (5.8), task local storage and bpf_get_current_task_btf (5.11)
// and CO-RE against the kernel's BTF.
const MinKernel = "5.17 with BTF"

// Attach modes (collector.attach_mode).
const (
	AttachAuto  = "auto"   // tp_btf, else raw tracepoints
	AttachTpBTF = "tp_btf" // BTF-typed tracepoints only
	AttachRawTP = "raw_tp" // raw tracepoints only (args read from the raw context)
)

// ErrKernelUnsupported wraps ebpf.ErrNotSupported: the kernel lacks what
// the collector needs (MinKernel) or what collector.attach_mode asks for.
var ErrKernelUnsupported = fmt.Errorf("kernel unsupported (the collector needs Linux %s): %w", MinKernel, ebpf.ErrNotSupported)

// kernelFeatures is what the running kernel offers the collector, probed
// once at start (cilium/ebpf features; each probe loads a tiny program or
// map).
type kernelFeatures struct {
	BTF     error // the kernel's BTF (/sys/kernel/btf/vmlinux)
	Ringbuf error // BPF_MAP_TYPE_RINGBUF
	Loop    error // bpf_loop
	TpBTF   error // BTF-typed tracepoints (BPF_PROG_TYPE_TRACING)
	RawTP   error // raw tracepoints
}

func probeFeatures() kernelFeatures {
	var f kernelFeatures
	if _, err := btf.LoadKernelSpec(); err != nil {
		f.BTF = err
	}
	f.Ringbuf = features.HaveMapType(ebpf.RingBuf)
	f.Loop = features.HaveProgramHelper(ebpf.RawTracepoint, asm.FnLoop)
	f.TpBTF = probeTpBTF()
	f.RawTP = features.HaveProgramType(ebpf.RawTracepoint)
	return f
}

// probeTpBTF loads a program that returns 0 as a BTF-typed tracepoint on
// sched_process_exec. (features.HaveProgramType(ebpf.Tracing) probes
// fentry, which a kernel may refuse while it takes tp_btf.)
func probeTpBTF() error {
	p, err := ebpf.NewProgram(&ebpf.ProgramSpec{
		Type:         ebpf.Tracing,
		AttachType:   ebpf.AttachTraceRawTp,
		AttachTo:     "sched_process_exec",
		Instructions: asm.Instructions{asm.LoadImm(asm.R0, 0, asm.DWord), asm.Return()},
		License:      "GPL",
	})
	if err != nil {
		return fmt.Errorf("tp_btf/sched_process_exec: %w: %w", ebpf.ErrNotSupported, err)
	}
	return p.Close()
}

// required is an error naming every missing feature the collector cannot
// do without, nil when none is.
func (f kernelFeatures) required() error {
	var errs []error
	for _, r := range []struct {
		name string
		err  error
	}{{"BTF", f.BTF}, {"ring buffer", f.Ringbuf}, {"bpf_loop", f.Loop}} {
		if r.err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", r.name, r.err))
		}
	}
	if f.TpBTF != nil && f.RawTP != nil {
		errs = append(errs, fmt.Errorf("tp_btf: %w; raw tracepoints: %w", f.TpBTF, f.RawTP))
	}
	if len(errs) == 0 {
		return nil
	}
	return fmt.Errorf("collector: %w: %w", ErrKernelUnsupported, errors.Join(errs...))
}

// families are the hook families to try for mode, in order of
// preference, given the kernel's features; an error when mode cannot be
// served.
func (f kernelFeatures) families(mode string) ([][]hook, error) {
	tp, raw := hookFamilies[0], hookFamilies[1]
	switch mode {
	case AttachTpBTF:
		if f.TpBTF != nil {
			return nil, fmt.Errorf("collector.attach_mode tp_btf: %w: %w", ErrKernelUnsupported, f.TpBTF)
		}
		return [][]hook{tp}, nil
	case AttachRawTP:
		if f.RawTP != nil {
			return nil, fmt.Errorf("collector.attach_mode raw_tp: %w: %w", ErrKernelUnsupported, f.RawTP)
		}
		return [][]hook{raw}, nil
	}
	var out [][]hook
	if f.TpBTF == nil {
		out = append(out, tp)
	}
	if f.RawTP == nil {
		out = append(out, raw)
	}
	return out, nil
}

// log reports the probe's outcome once, at start.
func (f kernelFeatures) log(log *slog.Logger, mode string) {
	has := func(err error) bool { return err == nil }
	log.Info("kernel features", logfields.MinKernel, MinKernel, logfields.AttachMode, mode,
		logfields.Btf, has(f.BTF), logfields.Ringbuf, has(f.Ringbuf), logfields.BpfLoop, has(f.Loop),
		logfields.TpBtf, has(f.TpBTF), logfields.RawTp, has(f.RawTP))
}
