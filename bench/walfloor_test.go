package main

import (
	"strings"
	"testing"
	"time"
)

// A test_decoding INSERT line as PostgreSQL 15 prints it for the outbox table
// (include-xids=0), with the insert time bench_payload's callers add.
const decodedInsert = `table public.outbox: INSERT: id[uuid]:'6f1c2d3e-0000-4000-8000-000000000001' aggregatetype[text]:'order' aggregateid[text]:'42' type[text]:'OrderCreated' payload[jsonb]:'{"seq": 7, "insertedAtUs": 1000000}' created_at[timestamp with time zone]:'2026-12-02 13:00:00.1+00'`

func TestDecodedLines(t *testing.T) {
	d := &decodedLines{seen: map[string]bool{}}
	warm := strings.Replace(strings.Replace(decodedInsert, "aggregateid[text]:'42'", "aggregateid[text]:'warmup'", 1), "0001'", "0002'", 1)
	noTime := strings.Replace(strings.Replace(decodedInsert, `, "insertedAtUs": 1000000`, "", 1), "0001'", "0003'", 1)
	out := "BEGIN\n" + decodedInsert + "\nCOMMIT\n" + warm + "\n" + noTime + "\ntable public.outbox: INSERT: garbage\n"
	// Written in pieces that split lines, as a pipe may deliver them.
	for len(out) > 0 {
		n := min(17, len(out))
		if _, err := d.Write([]byte(out[:n])); err != nil {
			t.Fatal(err)
		}
		out = out[n:]
	}
	for _, id := range []string{"6f1c2d3e-0000-4000-8000-000000000001", "6f1c2d3e-0000-4000-8000-000000000002", "6f1c2d3e-0000-4000-8000-000000000003"} {
		if !d.seen[id] {
			t.Errorf("id %s not seen; seen %v", id, d.seen)
		}
	}
	if len(d.seen) != 3 {
		t.Errorf("seen %d ids, want 3: %v", len(d.seen), d.seen)
	}
	if d.warm != 1 {
		t.Errorf("warm-up events = %d, want 1", d.warm)
	}
	if d.bad != 2 {
		t.Errorf("bad lines = %d, want 2 (no insert time, no id)", d.bad)
	}
	if len(d.latency) != 1 {
		t.Fatalf("latencies = %v, want one", d.latency)
	}
	// Inserted at 1 s after the epoch: the latency is the write's time since then.
	if got := time.Unix(1, 0).Add(d.latency[0]); time.Since(got) > time.Minute || got.After(time.Now()) {
		t.Errorf("latency %v does not end at the write", d.latency[0])
	}
	if len(d.partial) != 0 {
		t.Errorf("partial line left: %q", d.partial)
	}
}

func TestLastLine(t *testing.T) {
	for in, want := range map[string]string{"a\nb\n": "b", "only": "only", "a\nb": "b", "": ""} {
		if got := lastLine(in); got != want {
			t.Errorf("lastLine(%q) = %q, want %q", in, got, want)
		}
	}
}
