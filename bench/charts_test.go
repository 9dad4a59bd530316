package main

import (
	"image/png"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

// syntheticReport has every case the charts draw: backlog A and B in both modes,
// C at-least-once only, live in both modes, and the debezium case.
func syntheticReport() *report {
	r := &report{}
	for i, c := range backlogCases {
		for _, eo := range []bool{false, true} {
			if c.name == "C" && eo {
				continue
			}
			r.backlog = append(r.backlog, backlogResult{
				c: c, exactlyOnce: eo,
				recvlogical: time.Duration(200+10*i) * time.Millisecond,
				pgoutbox:    time.Duration(250+100*i) * time.Millisecond,
			})
		}
	}
	for _, eo := range []bool{false, true} {
		var lat []time.Duration
		for i := range 1000 {
			lat = append(lat, time.Duration(500+i*7)*time.Microsecond)
		}
		r.live = append(r.live, liveResult{exactlyOnce: eo, rate: 2000, planned: 20 * time.Second, events: len(lat), latency: lat})
	}
	r.debezium = []debeziumResult{{c: backlogCases[1], runs: []debeziumRun{
		{label: "Debezium (defaults)", wall: 3 * time.Second},
		{label: "Debezium (tuned)", wall: 2 * time.Second},
		{label: "pgoutbox at-least-once", wall: 400 * time.Millisecond},
	}}}
	return r
}

func TestWriteChartsDrawsPNGs(t *testing.T) {
	dir := t.TempDir()
	files, err := writeCharts(syntheticReport(), dir)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, f := range files {
		names = append(names, f.name)
	}
	if !slices.Equal(names, []string{"drain.png", "latency.png"}) {
		t.Fatalf("charts written: %v, want drain.png and latency.png", names)
	}
	for _, name := range names {
		f, err := os.Open(filepath.Join(dir, name))
		if err != nil {
			t.Fatal(err)
		}
		img, err := png.Decode(f)
		f.Close()
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if b := img.Bounds(); b.Dx() != 1200 || b.Dy() != 750 {
			t.Errorf("%s is %dx%d, want 1200x750", name, b.Dx(), b.Dy())
		}
	}
}

func TestWriteChartsSkipsAndRemovesChartsWithoutData(t *testing.T) {
	dir := t.TempDir()
	stale := filepath.Join(dir, "drain.png")
	if err := os.WriteFile(stale, []byte("an earlier run's"), 0o644); err != nil {
		t.Fatal(err)
	}
	r := syntheticReport()
	r.backlog, r.debezium = nil, nil // only live ran
	files, err := writeCharts(r, dir)
	if err != nil {
		t.Fatal(err)
	}
	if len(files) != 1 || files[0].name != "latency.png" {
		t.Fatalf("charts written: %v, want only latency.png", files)
	}
	if _, err := os.Stat(stale); !os.IsNotExist(err) {
		t.Errorf("stale drain.png still there (stat: %v)", err)
	}
	r.charts = files
	if md := r.markdown(); !strings.Contains(md, "](latency.png)") || strings.Contains(md, "drain.png") {
		t.Errorf("report should link latency.png only:\n%s", md)
	}
}

func TestDrainChartGroupsAndSeries(t *testing.T) {
	ch := drainChart(syntheticReport())
	var labels []string
	for _, g := range ch.groups {
		labels = append(labels, strings.SplitN(g.label, "\n", 2)[0])
	}
	if !slices.Equal(labels, []string{"A: 1 event/tx", "B: 100 events/tx", "C: 1 tx"}) {
		t.Fatalf("groups %q", labels)
	}
	// A: pg_recvlogical and both modes; B: those and the debezium case's three
	// runs; C: pg_recvlogical and at-least-once.
	for i, want := range []int{3, 6, 2} {
		if n := len(ch.groups[i].bars); n != want {
			t.Errorf("group %s has %d bars, want %d", labels[i], n, want)
		}
	}
	// The debezium case's pgoutbox run: 100k events in 0.4 s.
	last := ch.groups[1].bars[5]
	if ch.series[last.series].name != "pgoutbox at-least-once, on real Kafka" || last.value != 250_000 {
		t.Errorf("last bar of B: %q %v", ch.series[last.series].name, last.value)
	}
	// pg_recvlogical is the faster of A's two results: both are 200 ms here.
	if first := ch.groups[0].bars[0]; first.series != 0 || first.value != 500_000 {
		t.Errorf("first bar of A: %+v", first)
	}
}

func TestFormatRate(t *testing.T) {
	for v, want := range map[float64]string{512: "512", 1234: "1.2k", 45678: "46k", 1_500_000: "1.5M"} {
		if got := formatRate(v); got != want {
			t.Errorf("formatRate(%v) = %q, want %q", v, got, want)
		}
	}
}

func TestThousandsAndTrimZeros(t *testing.T) {
	for n, want := range map[int]string{0: "0", 999: "999", 1000: "1,000", 200000: "200,000", 1234567: "1,234,567", -5000: "-5,000"} {
		if got := thousands(n); got != want {
			t.Errorf("thousands(%d) = %q, want %q", n, got, want)
		}
	}
	for s, want := range map[string]string{"4.00": "4", "0.50": "0.5", "12.5": "12.5", "1.0M": "1.0M", "500k": "500k", "10": "10"} {
		if got := trimZeros(s); got != want {
			t.Errorf("trimZeros(%q) = %q, want %q", s, got, want)
		}
	}
}
