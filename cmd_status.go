package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/pgoutbox/pgoutbox/checkpoint"
	"github.com/pgoutbox/pgoutbox/outbox"
	"github.com/pgoutbox/pgoutbox/relay"
	"github.com/pgoutbox/pgoutbox/source"
)

// statusError carries the exit code of `pgoutbox status` after it printed its report.
type statusError struct{ code int }

func (e *statusError) Error() string { return fmt.Sprintf("status: exit %d", e.code) }

const statusIntro = `pgoutbox status reads the replication slot, the publication and the checkpoint and
prints them. It exits 0 when all is well, 1 when something needs attention (slot lost or
missing, a gap between checkpoint and slot, an inactive slot retaining much WAL), and 2 on
a usage error.

Usage:
  pgoutbox status [flags]
`

// statusReport is what `pgoutbox status --json` prints.
type statusReport struct {
	Server      string             `json:"server"`
	Slot        *slotStatus        `json:"slot"`
	Publication *publicationStatus `json:"publication"`
	Checkpoint  *checkpointStatus  `json:"checkpoint"`
	Problems    []string           `json:"problems"`
	OK          bool               `json:"ok"`
}

type slotStatus struct {
	Name          string `json:"name"`
	Plugin        string `json:"plugin"`
	Active        bool   `json:"active"`
	ActivePID     int32  `json:"active_pid,omitempty"`
	RestartLSN    string `json:"restart_lsn"`
	ConfirmedLSN  string `json:"confirmed_flush_lsn"`
	WALStatus     string `json:"wal_status"`
	RetainedBytes int64  `json:"retained_wal_bytes"`
}

type publicationStatus struct {
	Name     string `json:"name"`
	HasTable bool   `json:"includes_table"`
	Insert   bool   `json:"publishes_insert"`
}

type checkpointStatus struct {
	Store     string    `json:"store"`
	LSN       string    `json:"lsn"`
	Slot      string    `json:"slot"`
	SystemID  string    `json:"system_id"`
	UpdatedAt time.Time `json:"updated_at"`
}

// statusFlags are the flags pgoutbox status reads: where the slot, publication,
// tables and checkpoint are, and how to report.
type statusFlags struct {
	*flags
	postgresURL, slot, publication                   *string
	tables                                           *listFlag
	checkpointStore, checkpointFile, checkpointTable *string
	asJSON                                           *bool
	maxRetained                                      *int
}

func newStatusFlags() *statusFlags {
	f := &statusFlags{flags: newFlags("pgoutbox status")}
	d := outbox.DefaultConfig()
	f.postgresURL = f.postgresURLFlag()
	f.slot = f.string(groupPostgres, "slot", "pgoutbox", "logical replication slot `name`")
	f.publication = f.string(groupPostgres, "publication", "pgoutbox", "publication `name`")
	f.tables = f.list(groupPostgres, "table", "outbox `table` (schema.table) the publication must publish, repeatable")
	f.tables.def = d.FirstTable()
	f.checkpointStore = f.string(groupOps, "checkpoint-store", relay.StoreFile, "file or postgres")
	f.checkpointFile = f.string(groupOps, "checkpoint-file", "pgoutbox.checkpoint", "checkpoint `path` for --checkpoint-store=file")
	f.checkpointTable = f.string(groupOps, "checkpoint-table", "public.pgoutbox_checkpoint", "checkpoint `table` for --checkpoint-store=postgres")
	f.asJSON = f.bool(groupOps, "json", false, "print the report as JSON")
	f.maxRetained = f.int(groupOps, "max-retained-mb", 1024, "an inactive slot retaining more WAL than this many MiB needs attention")
	return f
}

func runStatus(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	f := newStatusFlags()
	if err := f.parse(args, getenv); err != nil {
		if err == errHelp {
			f.usage(stdout, statusIntro)
		}
		return err
	}
	if *f.postgresURL == "" {
		return &usageError{errors.New("--postgres-url is required")}
	}
	tables := f.tables.values
	if len(tables) == 0 {
		tables = []string{f.tables.def}
	}
	for i, t := range tables {
		tables[i] = qualify(t)
	}
	conn, err := source.Connect(ctx, *f.postgresURL)
	if err != nil {
		return err
	}
	defer conn.Close(context.Background())
	rep := statusReport{Server: source.Describe(*f.postgresURL)}
	problem := func(format string, args ...any) { rep.Problems = append(rep.Problems, fmt.Sprintf(format, args...)) }

	server, err := conn.Server(ctx)
	if err != nil {
		return err
	}
	if err := source.CheckServer(server); err != nil {
		problem("%v", err)
	}

	slot, found, err := conn.Slot(ctx, *f.slot)
	if err != nil {
		return err
	}
	if found {
		rep.Slot = &slotStatus{Name: slot.Name, Plugin: slot.Plugin, Active: slot.Active, ActivePID: slot.ActivePID,
			RestartLSN: slot.RestartLSN.String(), ConfirmedLSN: slot.ConfirmedLSN.String(), WALStatus: slot.WALStatus, RetainedBytes: slot.RetainedBytes}
		if !slot.Active && slot.RetainedBytes > int64(*f.maxRetained)<<20 {
			problem("slot %q is inactive and retains %d MiB of WAL; start pgoutbox or drop the slot before the disk fills", slot.Name, slot.RetainedBytes>>20)
		}
	} else {
		problem("slot %q does not exist (pgoutbox creates it on first start)", *f.slot)
	}

	for _, table := range tables {
		pub, pubFound, err := conn.Publication(ctx, *f.publication, table)
		if err != nil {
			return err
		}
		if !pubFound {
			problem("publication %q does not exist (pgoutbox creates it on first start if allowed)", *f.publication)
			break
		}
		if rep.Publication == nil {
			rep.Publication = &publicationStatus{Name: pub.Name, HasTable: pub.HasTable, Insert: pub.Insert}
		}
		rep.Publication.HasTable = rep.Publication.HasTable && pub.HasTable
		if err := source.CheckPublication(pub, table); err != nil {
			problem("%v", err)
		}
	}

	cfg := relay.Config{Slot: *f.slot, CheckpointStore: *f.checkpointStore, CheckpointFile: *f.checkpointFile, CheckpointTable: *f.checkpointTable}
	store, err := relay.OpenStore(ctx, cfg, conn)
	if err != nil {
		problem("checkpoint: %v", err)
	} else {
		cp, err := store.Load(ctx, *f.slot)
		switch {
		case err == nil:
			rep.Checkpoint = &checkpointStatus{Store: store.Describe(), LSN: cp.LSN.String(), Slot: cp.Slot, SystemID: cp.SystemID, UpdatedAt: cp.UpdatedAt}
		case errors.Is(err, checkpoint.ErrNotFound):
		default:
			problem("checkpoint: %v", err)
		}
		// The relay's own decision: what would keep it from starting.
		if err := relay.CheckStart(ctx, cfg, conn, store, server.SystemID, server.Database); err != nil {
			problem("%v", err)
		}
	}
	rep.OK = len(rep.Problems) == 0
	if rep.Problems == nil {
		rep.Problems = []string{}
	}

	if *f.asJSON {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		if err := enc.Encode(rep); err != nil {
			return err
		}
	} else {
		printStatus(stdout, rep)
	}
	if !rep.OK {
		return &statusError{code: 1}
	}
	return nil
}

// qualify is the one place a table name gets its schema: public unless given.
func qualify(table string) string {
	if table != "" && !strings.Contains(table, ".") {
		return "public." + table
	}
	return table
}

func printStatus(w io.Writer, rep statusReport) {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintf(tw, "server\t%s\n", rep.Server)
	if s := rep.Slot; s != nil {
		active := "no"
		if s.Active {
			active = fmt.Sprintf("yes (pid %d)", s.ActivePID)
		}
		fmt.Fprintf(tw, "slot\t%s (plugin %s)\n", s.Name, s.Plugin)
		fmt.Fprintf(tw, "  active\t%s\n", active)
		fmt.Fprintf(tw, "  confirmed_flush_lsn\t%s\n", s.ConfirmedLSN)
		fmt.Fprintf(tw, "  restart_lsn\t%s\n", s.RestartLSN)
		fmt.Fprintf(tw, "  retained WAL\t%s\n", humanBytes(s.RetainedBytes))
		fmt.Fprintf(tw, "  wal_status\t%s\n", s.WALStatus)
	} else {
		fmt.Fprintf(tw, "slot\t(missing)\n")
	}
	if p := rep.Publication; p != nil {
		fmt.Fprintf(tw, "publication\t%s (includes table: %v, publishes insert: %v)\n", p.Name, p.HasTable, p.Insert)
	} else {
		fmt.Fprintf(tw, "publication\t(missing)\n")
	}
	if c := rep.Checkpoint; c != nil {
		fmt.Fprintf(tw, "checkpoint\t%s\n", c.Store)
		fmt.Fprintf(tw, "  lsn\t%s (slot %s, saved %s)\n", c.LSN, c.Slot, c.UpdatedAt.Format(time.RFC3339))
	} else {
		fmt.Fprintf(tw, "checkpoint\t(none yet)\n")
	}
	tw.Flush()
	if rep.OK {
		fmt.Fprintln(w, "status: ok")
		return
	}
	fmt.Fprintln(w, "status: needs attention")
	for _, p := range rep.Problems {
		fmt.Fprintf(w, "  - %s\n", p)
	}
}

func humanBytes(n int64) string {
	switch {
	case n >= 1<<30:
		return fmt.Sprintf("%.1f GiB", float64(n)/(1<<30))
	case n >= 1<<20:
		return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20))
	case n >= 1<<10:
		return fmt.Sprintf("%.1f KiB", float64(n)/(1<<10))
	}
	return fmt.Sprintf("%d B", n)
}
