package loadtest

import (
	"fmt"
	"html"
	"html/template"
	"io"
	"math"
	"sort"
	"strings"
	"time"
)

// WriteHTML renders res as a self-contained HTML page: tables plus inline
// SVG plots (latency CDF, deliveries over time, server RSS against
// connections, CPU over time). No external script, style or font.
func WriteHTML(w io.Writer, res *Result) error {
	lat := []series{}
	for i, k := range []string{"publish_to_delivery", "publish_ack", "connect", "subscribe"} {
		h := res.Histograms[k]
		if h == nil || h.Count() == 0 {
			continue
		}
		var pts [][2]float64
		for _, p := range h.CDF() {
			pts = append(pts, [2]float64{math.Max(float64(p.Value)/1e6, 0.001), p.Fraction * 100})
		}
		lat = append(lat, series{name: k, color: palette[i], pts: pts})
	}
	var deliv, acks, conns, srvCPU, cliCPU, rss []([2]float64)
	var win [2]float64
	for _, s := range res.Timeline {
		deliv = append(deliv, [2]float64{s.T, s.DeliveriesPerS})
		acks = append(acks, [2]float64{s.T, s.AcksPerS})
		conns = append(conns, [2]float64{s.T, float64(s.Conns)})
		cliCPU = append(cliCPU, [2]float64{s.T, s.ClientCPU})
		if res.Server != nil {
			srvCPU = append(srvCPU, [2]float64{s.T, s.ServerCPU})
			if s.ServerRSS > 0 {
				rss = append(rss, [2]float64{float64(s.Conns), float64(s.ServerRSS) / (1 << 20)})
			}
		}
		if s.Phase == "steady" {
			if win[0] == 0 {
				win[0] = s.T - 1
			}
			win[1] = s.T
		}
	}
	data := struct {
		R                          *Result
		Title                      string
		Summary                    []row
		Latency                    [][]string
		LatencyPlot, DelivPlot     template.HTML
		ConnPlot, RSSPlot, CPUPlot template.HTML
		Errors                     [][]string
		Generated                  string
	}{R: res, Title: fmt.Sprintf("Herald loadtest: %s", res.Scenario), Generated: time.Now().UTC().Format(time.RFC3339)}

	data.Summary = summaryRows(res)
	for _, k := range []string{"connect", "subscribe", "publish_ack", "publish_to_delivery"} {
		l := res.Latency[k]
		data.Latency = append(data.Latency, []string{k, fmt.Sprint(l.Count), ms(l.Mean), ms(l.P50), ms(l.P90), ms(l.P99), ms(l.P999), ms(l.Max)})
	}
	data.LatencyPlot = plot(plotSpec{title: "Latency CDF", xlabel: "latency (ms, log)", ylabel: "percent at or below", logX: true, yMax: 100}, lat)
	data.DelivPlot = plot(plotSpec{title: "Deliveries and acked publishes per second", xlabel: "time (s)", ylabel: "messages/s", window: win},
		[]series{{name: "deliveries/s", color: palette[0], pts: deliv}, {name: "acked publishes/s", color: palette[1], pts: acks}})
	data.ConnPlot = plot(plotSpec{title: "Connections ready", xlabel: "time (s)", ylabel: "connections", window: win},
		[]series{{name: "ready", color: palette[2], pts: conns}})
	if len(rss) > 0 {
		data.RSSPlot = plot(plotSpec{title: "Server RSS against connections", xlabel: "connections ready", ylabel: "RSS (MiB)", dots: true},
			[]series{{name: "RSS", color: palette[3], pts: rss}})
	}
	cpu := []series{{name: "load tester CPU %", color: palette[1], pts: cliCPU}}
	if len(srvCPU) > 0 {
		cpu = append([]series{{name: "server CPU %", color: palette[3], pts: srvCPU}}, cpu...)
	}
	data.CPUPlot = plot(plotSpec{title: "CPU (100 % = one core)", xlabel: "time (s)", ylabel: "percent", window: win}, cpu)
	keys := make([]string, 0, len(res.Errors))
	for k := range res.Errors {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		data.Errors = append(data.Errors, []string{k, fmt.Sprint(res.Errors[k])})
	}
	return reportTmpl.Execute(w, data)
}

type row struct {
	K, V string
	Bad  bool
}

func summaryRows(res *Result) []row {
	cs, t, d := res.Connections, res.Throughput, res.Delivery
	c := res.Config
	rows := []row{
		{K: "scenario", V: res.Scenario},
		{K: "target", V: res.URL},
		{K: "started", V: res.Started.UTC().Format(time.RFC3339)},
		{K: "phases", V: fmt.Sprintf("connect at %g/s, warm-up %s, window %s, drain %s", c.ConnectRate, c.Warmup, c.Duration, c.Drain)},
		{K: "workload", V: fmt.Sprintf("%d connections, %d channels, %g msg/s, %d publishers, payload %d B", c.Conns, c.Channels, c.Rate, c.Publishers, c.Payload)},
		{K: "processes", V: fmt.Sprint(res.Processes)},
		{K: "connections", V: fmt.Sprintf("%d connected, %d failed of %d; peak %d, at end %d; reconnects %d, churned %d",
			cs.Connected, cs.ConnectFailed, cs.Target, cs.Peak, cs.AtEnd, cs.Reconnects, cs.Churned), Bad: cs.ConnectFailed > 0},
		{K: "throughput (window)", V: fmt.Sprintf("%.1f acked publishes/s, %.1f deliveries/s", t.PublishesPerS, t.DeliveriesPerS)},
		{K: "totals", V: fmt.Sprintf("published %d, acked %d, publish errors %d, unacked %d, deliveries %d", t.Published, t.Acked, t.PublishErrors, t.Unacked, t.Deliveries), Bad: t.PublishErrors > 0},
	}
	if d.Tracked {
		rows = append(rows, row{K: "delivery", V: fmt.Sprintf("expected %d, received %d, lost %d, duplicated %d, out of order %d",
			d.Expected, d.Received, d.Lost, d.Duplicated, d.OutOfOrder), Bad: d.Lost+d.Duplicated+d.OutOfOrder > 0})
	}
	if rc := res.Recovery; rc != nil {
		rows = append(rows, row{K: "recovery", V: fmt.Sprintf("dropped %d, resubscribed %d, recovered %d, not recovered %d, recovered publications %d",
			rc.Dropped, rc.Resubscribed, rc.Recovered, rc.NotRecovered, rc.RecoveredPubs), Bad: rc.NotRecovered > 0})
	}
	if l := res.LiveHeap; l != nil {
		rows = append(rows, row{K: "server heap", V: l.describe()})
	}
	if s := res.Server; s != nil {
		rows = append(rows, row{K: "server", V: s.describe(res.Scenario)})
	}
	for _, p := range res.Procs {
		rows = append(rows, row{K: "process " + p.Name, V: p.describe(), Bad: p.Error != ""})
	}
	rows = append(rows, row{K: "load tester", V: fmt.Sprintf("%.1f CPU s, %.0f%% average in the window", res.Client.CPUSeconds, res.Client.CPUAvgPct)})
	if res.Aborted {
		rows = append(rows, row{K: "aborted", V: "the run was interrupted", Bad: true})
	}
	return rows
}

func ms(v float64) string { return fmt.Sprintf("%.3f", v) }

var palette = []string{"#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd"}

type series struct {
	name  string
	color string
	pts   [][2]float64
}

type plotSpec struct {
	title, xlabel, ylabel string
	logX                  bool
	yMax                  float64    // fixed top of the y axis (0 = from data)
	window                [2]float64 // shaded x range (the steady-state window)
	dots                  bool
}

const (
	plotW, plotH           = 720, 320
	padL, padR, padT, padB = 70, 20, 30, 50
	innerW, innerH         = plotW - padL - padR, plotH - padT - padB
)

// plot renders series as an inline SVG line chart.
func plot(sp plotSpec, ss []series) template.HTML {
	var b strings.Builder
	fmt.Fprintf(&b, `<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="%d" viewBox="0 0 %d %d" role="img">`, plotW, plotH, plotW, plotH)
	fmt.Fprintf(&b, `<text x="%d" y="18" font-size="14" font-weight="bold">%s</text>`, padL, html.EscapeString(sp.title))
	xmin, xmax, ymin, ymax := math.Inf(1), math.Inf(-1), 0.0, sp.yMax
	n := 0
	for _, s := range ss {
		for _, p := range s.pts {
			if sp.logX && p[0] <= 0 {
				continue
			}
			xmin, xmax = math.Min(xmin, p[0]), math.Max(xmax, p[0])
			if sp.yMax == 0 {
				ymax = math.Max(ymax, p[1])
			}
			n++
		}
	}
	if n == 0 {
		fmt.Fprintf(&b, `<text x="%d" y="%d" font-size="13" fill="#888">no data</text></svg>`, padL+20, padT+innerH/2)
		return template.HTML(b.String())
	}
	if ymax <= ymin {
		ymax = ymin + 1
	}
	ymax = niceCeil(ymax)
	if sp.logX {
		xmin = math.Pow(10, math.Floor(math.Log10(xmin)))
		xmax = math.Pow(10, math.Ceil(math.Log10(xmax)))
		if xmax <= xmin {
			xmax = xmin * 10
		}
	} else {
		xmin = math.Min(xmin, 0)
		if xmax <= xmin {
			xmax = xmin + 1
		}
		xmax = niceCeil(xmax)
	}
	fx := func(x float64) float64 {
		if sp.logX {
			return padL + (math.Log10(x)-math.Log10(xmin))/(math.Log10(xmax)-math.Log10(xmin))*innerW
		}
		return padL + (x-xmin)/(xmax-xmin)*innerW
	}
	fy := func(y float64) float64 { return padT + innerH - (y-ymin)/(ymax-ymin)*innerH }

	if sp.window[1] > sp.window[0] {
		x0, x1 := fx(math.Max(sp.window[0], xmin)), fx(math.Min(sp.window[1], xmax))
		fmt.Fprintf(&b, `<rect x="%.1f" y="%d" width="%.1f" height="%d" fill="#f0f4ff"/>`, x0, padT, x1-x0, innerH)
		fmt.Fprintf(&b, `<text x="%.1f" y="%d" font-size="10" fill="#669">steady-state window</text>`, x0+4, padT+12)
	}
	// grid and ticks
	for _, yt := range linTicks(ymin, ymax) {
		y := fy(yt)
		fmt.Fprintf(&b, `<line x1="%d" x2="%d" y1="%.1f" y2="%.1f" stroke="#ddd"/>`, padL, padL+innerW, y, y)
		fmt.Fprintf(&b, `<text x="%d" y="%.1f" font-size="11" text-anchor="end">%s</text>`, padL-6, y+4, tickLabel(yt))
	}
	var xt []float64
	if sp.logX {
		for v := xmin; v <= xmax*1.0001; v *= 10 {
			xt = append(xt, v)
		}
	} else {
		xt = linTicks(xmin, xmax)
	}
	for _, v := range xt {
		x := fx(v)
		fmt.Fprintf(&b, `<line x1="%.1f" x2="%.1f" y1="%d" y2="%d" stroke="#eee"/>`, x, x, padT, padT+innerH)
		fmt.Fprintf(&b, `<text x="%.1f" y="%d" font-size="11" text-anchor="middle">%s</text>`, x, padT+innerH+16, tickLabel(v))
	}
	fmt.Fprintf(&b, `<rect x="%d" y="%d" width="%d" height="%d" fill="none" stroke="#444"/>`, padL, padT, innerW, innerH)
	fmt.Fprintf(&b, `<text x="%d" y="%d" font-size="12" text-anchor="middle">%s</text>`, padL+innerW/2, plotH-10, html.EscapeString(sp.xlabel))
	fmt.Fprintf(&b, `<text x="14" y="%d" font-size="12" text-anchor="middle" transform="rotate(-90 14 %d)">%s</text>`, padT+innerH/2, padT+innerH/2, html.EscapeString(sp.ylabel))
	for i, s := range ss {
		var pts []string
		for _, p := range s.pts {
			if sp.logX && p[0] <= 0 {
				continue
			}
			pts = append(pts, fmt.Sprintf("%.1f,%.1f", fx(p[0]), fy(p[1])))
		}
		if sp.dots {
			for _, p := range pts {
				xy := strings.SplitN(p, ",", 2)
				fmt.Fprintf(&b, `<circle cx="%s" cy="%s" r="2.5" fill="%s"/>`, xy[0], xy[1], s.color)
			}
		}
		if len(pts) > 0 {
			fmt.Fprintf(&b, `<polyline fill="none" stroke="%s" stroke-width="1.6" points="%s"/>`, s.color, strings.Join(pts, " "))
		}
		ly := padT + 14 + i*16
		fmt.Fprintf(&b, `<rect x="%d" y="%d" width="10" height="10" fill="%s"/>`, padL+innerW-180, ly-9, s.color)
		fmt.Fprintf(&b, `<text x="%d" y="%d" font-size="11">%s</text>`, padL+innerW-165, ly, html.EscapeString(s.name))
	}
	b.WriteString(`</svg>`)
	return template.HTML(b.String())
}

func niceCeil(v float64) float64 {
	if v <= 0 {
		return 1
	}
	p := math.Pow(10, math.Floor(math.Log10(v)))
	for _, m := range []float64{1, 2, 2.5, 5, 10} {
		if m*p >= v {
			return m * p
		}
	}
	return 10 * p
}

func linTicks(lo, hi float64) []float64 {
	step := niceCeil((hi - lo) / 5)
	var out []float64
	for v := math.Ceil(lo/step) * step; v <= hi+step*1e-9; v += step {
		out = append(out, v)
	}
	return out
}

func tickLabel(v float64) string {
	switch a := math.Abs(v); {
	case a >= 1e6:
		return fmt.Sprintf("%gM", v/1e6)
	case a >= 1e3:
		return fmt.Sprintf("%gk", v/1e3)
	case a == 0 || a >= 1:
		return fmt.Sprintf("%g", math.Round(v*100)/100)
	}
	return fmt.Sprintf("%g", v)
}

var reportTmpl = template.Must(template.New("report").Parse(`<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<title>{{.Title}}</title>
<style>
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:24px;color:#222;max-width:1100px}
h1{font-size:22px}h2{font-size:17px;margin-top:28px}
table{border-collapse:collapse;margin:8px 0}td,th{border:1px solid #ccc;padding:4px 8px;font-size:13px;text-align:left}
th{background:#f4f4f4}td.num{text-align:right;font-variant-numeric:tabular-nums}
tr.bad td{background:#fdecea}.plots svg{margin:8px 0;display:block}
footer{margin-top:32px;font-size:12px;color:#777}
</style></head><body>
<h1>{{.Title}}</h1>
<table>{{range .Summary}}<tr{{if .Bad}} class="bad"{{end}}><th>{{.K}}</th><td>{{.V}}</td></tr>{{end}}</table>
<h2>Latency (ms)</h2>
<table><tr><th>measure</th><th>count</th><th>mean</th><th>p50</th><th>p90</th><th>p99</th><th>p99.9</th><th>max</th></tr>
{{range .Latency}}<tr>{{range $i, $c := .}}{{if $i}}<td class="num">{{$c}}</td>{{else}}<th>{{$c}}</th>{{end}}{{end}}</tr>{{end}}</table>
<p>Publish-to-delivery: publications sent in the steady-state window, timestamped by the publisher and measured on receipt
(same clock). Publish-ack: from the write of a publish to its reply. Log-linear histogram, values within 0.8 %.</p>
<div class="plots">
{{.LatencyPlot}}
{{.DelivPlot}}
{{.ConnPlot}}
{{if .RSSPlot}}{{.RSSPlot}}{{else}}<p>No server RSS: run with --server-pid to sample the server from /proc.</p>{{end}}
{{.CPUPlot}}
</div>
{{if .Errors}}<h2>Errors</h2><table><tr><th>kind</th><th>count</th></tr>{{range .Errors}}<tr><td>{{index . 0}}</td><td class="num">{{index . 1}}</td></tr>{{end}}</table>
{{if .R.ErrorSample}}<ul>{{range .R.ErrorSample}}<li><code>{{.}}</code></li>{{end}}</ul>{{end}}{{end}}
<footer>Generated {{.Generated}} by herald loadtest. Raw numbers: the JSON results (--out).</footer>
</body></html>
`))
