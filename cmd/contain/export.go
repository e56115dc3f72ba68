package main

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"os"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/parquet-go/parquet-go"
	"github.com/spf13/cobra"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"

	"github.com/containsec/contain/schemas/containv1"
	"github.com/containsec/contain/store"
)

func init() { extraCommands = append(extraCommands, exportCommand) }

// Export formats.
const (
	formatNDJSON  = "ndjson"
	formatParquet = "parquet"
)

func exportCommand(opts *globalOpts) *cobra.Command {
	var (
		sf                     selectionFlags
		source, format, output string
		progress               bool
	)
	cmd := &cobra.Command{
		Use:   "export",
		Short: "Export selected events as NDJSON or Parquet, from ClickHouse or JetStream",
		Long: `export writes the events a selection chooses (time range, host, container,
image, kind: as for replay) from the store's ClickHouse database
(--source clickhouse, the default) or CONTAIN_EVENTS (--source jetstream)
to --output (- is stdout).

--format ndjson writes one contain.v1.Event per line (protojson: field
names in lowerCamelCase, ids and bytes in base64, 64-bit integers as
strings), the same lines replay prints.

--format parquet writes one row per event (zstd), flat columns for the
common questions (time_ns, kind, host, container, image, process, exec,
syscall, network, file: see exportRow) and raw, the event's protobuf, so a
reader can rebuild exactly what the pipeline saw.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if format != formatNDJSON && format != formatParquet {
				return fmt.Errorf("--format: %q is not %s or %s", format, formatNDJSON, formatParquet)
			}
			sel, err := sf.selection(time.Now())
			if err != nil {
				return err
			}
			cfg, err := opts.load(cmd)
			if err != nil {
				return err
			}
			var js jetstream.JetStream
			var rd *store.Reader
			if source == sourceJetStream {
				s, err := cliConnect(cfg, "export", readerRoles...)
				if err != nil {
					return fmt.Errorf("export: %w", err)
				}
				defer s.close()
				js = s.js
			} else {
				if rd, err = store.OpenReader(cfg.Store); err != nil {
					return fmt.Errorf("export: %w", err)
				}
				defer rd.Close()
			}
			var w io.Writer = cmd.OutOrStdout()
			if output != "-" {
				f, err := os.Create(output)
				if err != nil {
					return fmt.Errorf("export: %w", err)
				}
				defer f.Close()
				w = f
			}
			var bar *progressBar
			if progress || output != "-" && isTerminal(cmd.OutOrStdout()) {
				var total uint64
				if rd != nil {
					total, _ = rd.Count(cmd.Context(), sel)
				}
				bar = newProgressBar(cmd.ErrOrStderr(), "export", total)
			}
			start := time.Now()
			ew := newExportWriter(w, format)
			var n uint64
			malformed, err := readHistory(cmd.Context(), source, js, rd, sel, func(ev *containv1.Event) error {
				n++
				bar.set(n)
				return ew.write(ev)
			})
			bar.done(n)
			if err == nil {
				err = ew.close()
			}
			if err != nil {
				return fmt.Errorf("export: %w", err)
			}
			el := time.Since(start)
			fmt.Fprintf(cmd.ErrOrStderr(), "exported %d events as %s in %v (%.0f events/s; %d malformed messages skipped)\n",
				n, format, el.Round(time.Millisecond), float64(n)/max(el.Seconds(), 1e-9), malformed)
			return nil
		},
	}
	sf.register(cmd, 24*time.Hour)
	cmd.Flags().StringVar(&source, "source", sourceClickHouse, "clickhouse or jetstream")
	cmd.Flags().StringVar(&format, "format", formatNDJSON, "ndjson or parquet")
	cmd.Flags().StringVarP(&output, "output", "o", "-", "file to write (-: stdout)")
	cmd.Flags().BoolVar(&progress, "progress", false, "draw the progress line on stderr even when it is not a terminal")
	return cmd
}

// exportRow is one Parquet row.
type exportRow struct {
	ID            string   `parquet:"id"`
	TimeNs        int64    `parquet:"time_ns,timestamp(nanosecond)"`
	Kind          string   `parquet:"kind,dict"`
	Host          string   `parquet:"host,dict"`
	ContainerID   string   `parquet:"container_id,dict"`
	ContainerName string   `parquet:"container_name,dict"`
	ImageRef      string   `parquet:"image_ref,dict"`
	ImageDigest   string   `parquet:"image_digest,dict"`
	PID           uint32   `parquet:"pid"`
	PPID          uint32   `parquet:"ppid"`
	UID           uint32   `parquet:"uid"`
	Comm          string   `parquet:"comm,dict"`
	ExecFilename  string   `parquet:"exec_filename,dict"`
	ExecArgv      []string `parquet:"exec_argv,list"`
	SyscallName   string   `parquet:"syscall_name,dict"`
	SyscallCount  uint64   `parquet:"syscall_count"`
	NetOp         string   `parquet:"net_op,dict"`
	RemoteAddr    string   `parquet:"remote_addr"`
	RemotePort    uint32   `parquet:"remote_port"`
	FileOp        string   `parquet:"file_op,dict"`
	FilePath      string   `parquet:"file_path"`
	FileNewPath   string   `parquet:"file_new_path"`
	Result        int64    `parquet:"result"`
	Raw           []byte   `parquet:"raw"`
}

func enumText(s, prefix string) string {
	s = strings.ToLower(strings.TrimPrefix(s, prefix))
	if s == "unspecified" {
		return ""
	}
	return s
}

// exportRowOf flattens ev.
func exportRowOf(ev *containv1.Event) (exportRow, error) {
	raw, err := proto.MarshalOptions{Deterministic: true}.Marshal(ev)
	if err != nil {
		return exportRow{}, err
	}
	r := exportRow{ID: uuidText(ev.GetId()), TimeNs: ev.GetWallNs(), Kind: kindName(ev), Host: ev.GetHost(),
		ContainerID: ev.GetContainerId(), ContainerName: ev.GetContainerName(), ImageRef: ev.GetImageRef(),
		ImageDigest: ev.GetImageDigest(), Raw: raw, ExecArgv: []string{}}
	if p := procOfEvent(ev); p != nil {
		r.PID, r.PPID, r.UID, r.Comm = p.GetTgid(), p.GetPpid(), p.GetUid(), p.GetComm()
	}
	switch {
	case ev.GetExec() != nil:
		r.ExecFilename, r.ExecArgv = ev.GetExec().GetFilename(), append(r.ExecArgv, ev.GetExec().GetArgv()...)
	case ev.GetSyscall() != nil:
		s := ev.GetSyscall()
		r.SyscallName, r.SyscallCount, r.Result = s.GetName(), s.GetCount(), s.GetRet()
	case ev.GetNetwork() != nil:
		n := ev.GetNetwork()
		r.NetOp, r.RemotePort, r.Result = enumText(n.GetOp().String(), "OP_"), n.GetRemotePort(), int64(n.GetResult())
		if a, ok := netip.AddrFromSlice(n.GetRemoteAddr()); ok {
			r.RemoteAddr = a.Unmap().String()
		}
	case ev.GetFile() != nil:
		f := ev.GetFile()
		r.FileOp, r.FilePath, r.FileNewPath, r.Result = enumText(f.GetOp().String(), "OP_"), f.GetPath(), f.GetNewPath(), int64(f.GetResult())
	}
	return r, nil
}

// exportWriter writes events in one format.
type exportWriter struct {
	format string
	bw     *bufio.Writer
	pw     *parquet.GenericWriter[exportRow]
	rows   []exportRow
}

// exportRowGroup is the rows buffered per Parquet write.
const exportRowGroup = 4096

func newExportWriter(w io.Writer, format string) *exportWriter {
	ew := &exportWriter{format: format}
	if format == formatParquet {
		ew.pw = parquet.NewGenericWriter[exportRow](w, parquet.Compression(&parquet.Zstd))
		return ew
	}
	ew.bw = bufio.NewWriterSize(w, 1<<16)
	return ew
}

func (ew *exportWriter) write(ev *containv1.Event) error {
	if ew.pw == nil {
		line, err := protojson.Marshal(ev)
		if err != nil {
			return err
		}
		ew.bw.Write(line)
		return ew.bw.WriteByte('\n')
	}
	r, err := exportRowOf(ev)
	if err != nil {
		return err
	}
	ew.rows = append(ew.rows, r)
	if len(ew.rows) >= exportRowGroup {
		return ew.flushRows()
	}
	return nil
}

func (ew *exportWriter) flushRows() error {
	if _, err := ew.pw.Write(ew.rows); err != nil {
		return fmt.Errorf("parquet: %w", err)
	}
	clear(ew.rows)
	ew.rows = ew.rows[:0]
	return nil
}

func (ew *exportWriter) close() error {
	if ew.pw == nil {
		return ew.bw.Flush()
	}
	return errors.Join(ew.flushRows(), ew.pw.Close())
}
