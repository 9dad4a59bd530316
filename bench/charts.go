package main

import (
	"errors"
	"fmt"
	"image/color"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"gonum.org/v1/plot"
	"gonum.org/v1/plot/font"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/text"
	"gonum.org/v1/plot/vg"
	"gonum.org/v1/plot/vg/draw"
	"gonum.org/v1/plot/vg/vgimg"
)

// The charts are the report's main numbers as pictures, for the README: drawn
// with gonum.org/v1/plot, pure Go with its Liberation fonts compiled in, so the
// bench needs no cgo and nothing fetched at run time.

// Chart geometry: 8 × 5 inches at 150 dots per inch, 1200 × 750 pixels.
const (
	chartDPI    = 150
	chartWidth  = 8 * vg.Inch
	chartHeight = 5 * vg.Inch
)

// chartFile is a chart written next to the report: its file name (the report
// links it by that relative name) and its alternative text.
type chartFile struct {
	name, alt string
}

// barChart is a grouped bar chart: one group per category on the X axis, in
// each group one bar per series that has a value there.
type barChart struct {
	title, xLabel, yLabel string
	series                []chartSeries
	groups                []barGroup
	format                func(float64) string // bar value labels and Y ticks
}

type chartSeries struct {
	name  string
	color color.Color
}

type barGroup struct {
	label string
	bars  []chartBar
}

type chartBar struct {
	series int // index into barChart.series
	value  float64
}

// Series colours, the same in every chart.
var (
	colorRecvlogical = color.RGBA{0x7f, 0x7f, 0x7f, 0xff}
	colorAtLeastOnce = color.RGBA{0x1f, 0x77, 0xb4, 0xff}
	colorExactlyOnce = color.RGBA{0xff, 0x7f, 0x0e, 0xff}
	colorDebezium    = []color.Color{ // the debezium case's Debezium runs, in order
		color.RGBA{0x2c, 0xa0, 0x2c, 0xff},
		color.RGBA{0xd6, 0x27, 0x28, 0xff},
		color.RGBA{0x94, 0x67, 0xbd, 0xff},
	}
	colorPgoutboxRealKafka = color.RGBA{0x9e, 0xc9, 0xe8, 0xff} // a lighter at-least-once blue
)

// writeCharts writes drain.png and latency.png into dir and returns the ones
// written. A chart with no data (its cases did not run) is not written, and a
// file of that name left by an earlier run is removed, so the pictures next to
// the report are always this run's.
func writeCharts(r *report, dir string) ([]chartFile, error) {
	var written []chartFile
	var errs []error
	for _, c := range []struct {
		file chartFile
		bars barChart
	}{
		{chartFile{"drain.png", "Backlog drain, events/s per case"}, drainChart(r)},
		{chartFile{"latency.png", "Live latency percentiles per mode"}, latencyChart(r)},
	} {
		path := filepath.Join(dir, c.file.name)
		if len(c.bars.groups) == 0 {
			if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
				errs = append(errs, fmt.Errorf("remove stale %s: %w", path, err))
			}
			continue
		}
		if err := c.bars.save(path); err != nil {
			errs = append(errs, fmt.Errorf("chart %s: %w", path, err))
			continue
		}
		written = append(written, c.file)
	}
	return written, errors.Join(errs...)
}

// drainChart is events/s per backlog case: pg_recvlogical, pgoutbox in each
// mode (on kfake), and, in the debezium case's group, each of its runs (on real
// Kafka). pg_recvlogical is the fastest of its runs for that case.
func drainChart(r *report) barChart {
	ch := barChart{
		title:  "Backlog drain, process start → every event consumed (higher is better)",
		xLabel: "backlog case; pg_recvlogical writes to /dev/null, pgoutbox to kfake, the debezium case to real Kafka",
		yLabel: "events/s",
		format: formatRate,
	}
	index := map[string]int{}
	add := func(name string, c color.Color) int {
		if i, ok := index[name]; ok {
			return i
		}
		index[name] = len(ch.series)
		ch.series = append(ch.series, chartSeries{name, c})
		return index[name]
	}
	groups := map[string]*barGroup{}
	group := func(c backlogCase) *barGroup {
		if groups[c.name] == nil {
			groups[c.name] = &barGroup{label: fmt.Sprintf("%s\n%s events", c.label, thousands(c.events))}
		}
		return groups[c.name]
	}
	// Series are added in a fixed order so their colours and legend order do not
	// depend on the order of the cases.
	recv, alo, eo := -1, -1, -1
	if len(r.backlog) > 0 {
		recv = add("pg_recvlogical → /dev/null (the walsender's speed)", colorRecvlogical)
	}
	for _, x := range r.backlog {
		if !x.exactlyOnce && alo < 0 {
			alo = add("pgoutbox at-least-once, on kfake", colorAtLeastOnce)
		}
	}
	for _, x := range r.backlog {
		if x.exactlyOnce && eo < 0 {
			eo = add("pgoutbox exactly-once, on kfake", colorExactlyOnce)
		}
	}
	best := map[string]float64{}
	for _, x := range r.backlog {
		best[x.c.name] = max(best[x.c.name], rate(x.c.events, x.recvlogical.Seconds()))
	}
	for _, x := range r.backlog {
		g := group(x.c)
		if !hasSeries(g, recv) {
			g.bars = append(g.bars, chartBar{recv, best[x.c.name]})
		}
		s := alo
		if x.exactlyOnce {
			s = eo
		}
		g.bars = append(g.bars, chartBar{s, rate(x.c.events, x.pgoutbox.Seconds())})
	}
	for _, d := range r.debezium {
		g := group(d.c)
		dbz := 0
		for _, run := range d.runs {
			var c color.Color = colorPgoutboxRealKafka
			if !strings.HasPrefix(run.label, "pgoutbox") {
				c = colorDebezium[dbz%len(colorDebezium)]
				dbz++
			}
			s := add(run.label+", on real Kafka", c)
			g.bars = append(g.bars, chartBar{s, rate(d.c.events, run.wall.Seconds())})
		}
	}
	for _, c := range backlogCases {
		if g := groups[c.name]; g != nil {
			ch.groups = append(ch.groups, *g)
		}
	}
	return ch
}

func hasSeries(g *barGroup, s int) bool {
	for _, b := range g.bars {
		if b.series == s {
			return true
		}
	}
	return false
}

func rate(events int, seconds float64) float64 {
	if seconds <= 0 {
		return 0
	}
	return float64(events) / seconds
}

// latencyChart is the live case's latency percentiles, one series per mode.
func latencyChart(r *report) barChart {
	ch := barChart{
		title:  "Live latency, INSERT → independent consumer (lower is better)",
		yLabel: "latency (ms)",
		format: formatMillis,
	}
	if len(r.live) == 0 {
		return ch
	}
	x0 := r.live[0]
	ch.xLabel = fmt.Sprintf("percentile over %v at %s events/s, one-event transactions", x0.planned, thousands(x0.rate))
	quantiles := []struct {
		label string
		q     float64
	}{{"p50", 0.50}, {"p90", 0.90}, {"p99", 0.99}, {"max", 1}}
	ch.groups = make([]barGroup, len(quantiles))
	for i, q := range quantiles {
		ch.groups[i].label = q.label
	}
	for _, x := range r.live {
		c := colorAtLeastOnce
		if x.exactlyOnce {
			c = colorExactlyOnce
		}
		s := len(ch.series)
		ch.series = append(ch.series, chartSeries{fmt.Sprintf("pgoutbox %s (%s events)", modeName(x.exactlyOnce), thousands(x.events)), c})
		for i, q := range quantiles {
			ms := float64(percentile(x.latency, q.q).Microseconds()) / 1000
			ch.groups[i].bars = append(ch.groups[i].bars, chartBar{s, ms})
		}
	}
	return ch
}

// formatRate is an events/s figure, short enough to sit on a bar.
func formatRate(v float64) string {
	switch {
	case v >= 10e6:
		return fmt.Sprintf("%.0fM", v/1e6)
	case v >= 1e6:
		return fmt.Sprintf("%.1fM", v/1e6)
	case v >= 10e3:
		return fmt.Sprintf("%.0fk", v/1e3)
	case v >= 1e3:
		return fmt.Sprintf("%.1fk", v/1e3)
	}
	return fmt.Sprintf("%.0f", v)
}

// formatMillis is a latency in milliseconds with three significant digits at most.
func formatMillis(v float64) string {
	switch {
	case v >= 100:
		return fmt.Sprintf("%.0f", v)
	case v >= 10:
		return fmt.Sprintf("%.1f", v)
	}
	return fmt.Sprintf("%.2f", v)
}

// save draws the chart to a PNG file: the plot on top, its legend in a strip
// below it (series names are long; inside the plot they would cover bars).
func (ch barChart) save(path string) error {
	p, legend, err := ch.plot()
	if err != nil {
		return err
	}
	img := vgimg.NewWith(vgimg.UseWH(chartWidth, chartHeight), vgimg.UseDPI(chartDPI))
	c := draw.New(img)
	strip := legend.Rectangle(c).Size().Y + 0.25*vg.Inch
	p.Draw(draw.Crop(c, 0, 0, strip, 0))
	legend.Draw(draw.Crop(c, 0.6*vg.Inch, 0, 0.1*vg.Inch, strip-c.Size().Y-0.1*vg.Inch))
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	if _, err := (vgimg.PngCanvas{Canvas: img}).WriteTo(f); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// plot lays the bars out: in each group the bars it has, side by side and
// centred on the group's tick, each labelled with its value.
func (ch barChart) plot() (*plot.Plot, *plot.Legend, error) {
	p := plot.New()
	p.Title.Text = ch.title
	p.Title.TextStyle.Font = sans(13)
	p.X.Label.Text = ch.xLabel
	p.Y.Label.Text = ch.yLabel
	p.X.Label.TextStyle.Font = sans(10)
	p.Y.Label.TextStyle.Font = sans(11)
	p.Y.Tick.Label.Font = sans(10)
	labels := make([]string, len(ch.groups))
	for i, g := range ch.groups {
		labels[i] = g.label
	}
	p.NominalX(labels...)
	p.X.Tick.Label.Font = sans(10)
	p.X.Min, p.X.Max = -0.5, float64(len(ch.groups))-0.5
	p.Y.Min = 0
	p.Y.Tick.Marker = plot.TickerFunc(func(lo, hi float64) []plot.Tick {
		ticks := plot.DefaultTicks{}.Ticks(lo, hi)
		for i := range ticks {
			if ticks[i].Label != "" {
				ticks[i].Label = trimZeros(ch.format(ticks[i].Value))
			}
		}
		return ticks
	})
	grid := plotter.NewGrid()
	grid.Vertical.Color = nil
	p.Add(grid)

	most, top := 1, 0.0
	for _, g := range ch.groups {
		most = max(most, len(g.bars))
		for _, b := range g.bars {
			top = max(top, b.value)
		}
	}
	// Room above the tallest bar for its value label.
	p.Y.Max = max(top*1.12, 1e-9)
	plotWidth := chartWidth - 1.2*vg.Inch
	width := min(0.6*vg.Inch, 0.85*plotWidth/vg.Length(len(ch.groups)*most))

	legend := plot.NewLegend()
	legend.Left, legend.Top = true, true
	legend.TextStyle.Font = sans(10)
	legend.Padding = vg.Points(3)
	inLegend := make([]bool, len(ch.series))
	valueStyle := text.Style{
		Font:    sans(8),
		Handler: plot.DefaultTextHandler,
		XAlign:  draw.XCenter,
	}
	for gi, g := range ch.groups {
		for bi, b := range g.bars {
			offset := (vg.Length(bi) - vg.Length(len(g.bars)-1)/2) * width
			bc, err := plotter.NewBarChart(plotter.Values{b.value}, width)
			if err != nil {
				return nil, nil, err
			}
			s := ch.series[b.series]
			bc.XMin, bc.Offset, bc.Color = float64(gi), offset, s.color
			bc.LineStyle.Width = 0
			p.Add(bc)
			if !inLegend[b.series] {
				legend.Add(s.name, bc)
				inLegend[b.series] = true
			}
			lb, err := plotter.NewLabels(plotter.XYLabels{
				XYs:    plotter.XYs{{X: float64(gi), Y: b.value}},
				Labels: []string{ch.format(b.value)},
			})
			if err != nil {
				return nil, nil, err
			}
			lb.TextStyle[0] = valueStyle
			lb.Offset = vg.Point{X: offset, Y: vg.Points(2)}
			p.Add(lb)
		}
	}
	return p, &legend, nil
}

// sans is the Liberation Sans face that plot embeds, in points: it reads
// better than plot's default serif at these sizes.
func sans(points float64) font.Font {
	f := plot.DefaultFont
	f.Variant = "Sans"
	return font.From(f, vg.Points(points))
}

// thousands writes n with thousands separators: 200000 is 200,000.
func thousands(n int) string {
	if n < 0 {
		return "-" + thousands(-n)
	}
	s := fmt.Sprint(n)
	for i := len(s) - 3; i > 0; i -= 3 {
		s = s[:i] + "," + s[i:]
	}
	return s
}

// trimZeros drops the zeros a fixed number of decimals leaves on a round tick
// value: 4.00 is 4, 0.50 is 0.5.
func trimZeros(s string) string {
	if _, err := strconv.ParseFloat(s, 64); err != nil || !strings.Contains(s, ".") {
		return s // 1.0M, 500k, 12
	}
	return strings.TrimSuffix(strings.TrimRight(s, "0"), ".")
}

// chartsMarkdown links the charts written next to the report.
func (r *report) chartsMarkdown() string {
	if len(r.charts) == 0 {
		return ""
	}
	var b strings.Builder
	for _, c := range r.charts {
		fmt.Fprintf(&b, "![%s](%s)\n\n", c.alt, c.name)
	}
	return b.String()
}
