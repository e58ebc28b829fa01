package loadtest

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"time"
)

// WorkerEnv is set to "1" in the environment of worker processes. A binary
// other than herald (a test binary) that runs Run with several workers must
// call WorkerMain when it is set (see Options.WorkerCommand).
const WorkerEnv = "HERALD_LOADTEST_WORKER"

// Options are the process-level settings of Run.
type Options struct {
	Stderr io.Writer    // progress line and workers' stderr; default os.Stderr
	Log    *slog.Logger // default discards
	// WorkerCommand is the argv that starts a worker process (which must end
	// up in WorkerMain). Default: this executable with "loadtest --worker",
	// which is what `herald loadtest` understands.
	WorkerCommand []string
}

// Main is `herald loadtest`: it parses args, runs the scenario, prints a
// summary on stdout and writes --out / --html. `--worker` as the first
// argument runs a worker process instead. Bad arguments return an error
// wrapping ErrUsage.
func Main(ctx context.Context, args []string, log *slog.Logger) error {
	if len(args) > 0 && args[0] == "--worker" {
		return WorkerMain(ctx, os.Stdin, os.Stdout)
	}
	cfg, err := ParseArgs(args, os.Stderr)
	if err != nil {
		return err
	}
	res, err := Run(ctx, cfg, Options{Stderr: os.Stderr, Log: log})
	if err != nil {
		return err
	}
	res.WriteSummary(os.Stdout)
	if err := WriteOutputs(res, cfg.Out, cfg.HTML); err != nil {
		return err
	}
	if p := res.Problems(); cfg.FailOnLoss && len(p) > 0 {
		return fmt.Errorf("run had problems: %s", strings.Join(p, ", "))
	}
	return nil
}

// WriteOutputs writes the JSON results and the HTML report (empty paths are
// skipped).
func WriteOutputs(res *Result, jsonPath, htmlPath string) error {
	if jsonPath != "" {
		b, err := json.MarshalIndent(res, "", "  ")
		if err != nil {
			return fmt.Errorf("encoding results: %w", err)
		}
		if err := writeFile(jsonPath, append(b, '\n')); err != nil {
			return err
		}
	}
	if htmlPath != "" {
		var sb strings.Builder
		if err := WriteHTML(&sb, res); err != nil {
			return fmt.Errorf("rendering report: %w", err)
		}
		if err := writeFile(htmlPath, []byte(sb.String())); err != nil {
			return err
		}
	}
	return nil
}

func writeFile(path string, b []byte) error {
	if dir := filepath.Dir(path); dir != "" {
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return fmt.Errorf("writing %s: %w", path, err)
		}
	}
	if err := os.WriteFile(path, b, 0o644); err != nil {
		return fmt.Errorf("writing %s: %w", path, err)
	}
	return nil
}

// Run executes cfg, in this process or, when cfg needs more connections
// than one process holds (or cfg.Workers > 1), in worker processes whose
// reports it merges. Cancelling ctx ends the run early; the partial result
// is returned with Aborted set.
func Run(ctx context.Context, cfg *Config, o Options) (*Result, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if o.Stderr == nil {
		o.Stderr = os.Stderr
	}
	if o.Log == nil {
		o.Log = slog.New(slog.DiscardHandler)
	}
	raiseFileLimit()
	n := cfg.workerCount()
	plans := makePlans(cfg, n)
	mon := newMonitor(cfg, o.Stderr)
	mon.liveBase(ctx)
	started := time.Now()
	var (
		reps []*report
		tl   timeline
		err  error
	)
	if n == 1 {
		reps, tl, err = runLocal(ctx, cfg, plans[0], mon)
	} else {
		o.Log.Info("loadtest: starting worker processes", "workers", n, "conns", cfg.Conns)
		reps, tl, err = runWorkers(ctx, cfg, plans, o, mon)
	}
	samples := mon.stop()
	if err != nil {
		return nil, err
	}
	res := buildResult(cfg, reps, tl, samples, started, time.Now(), ctx.Err() != nil)
	res.LiveHeap = mon.liveStats()
	res.Procs = mon.procStats()
	return res, nil
}

func runLocal(ctx context.Context, cfg *Config, p plan, mon *monitor) ([]*report, timeline, error) {
	r, err := newRunner(cfg, p)
	if err != nil {
		return nil, timeline{}, err
	}
	mon.start(r.progress)
	_ = r.connect(ctx) // failures are counted; ctx end is checked below
	tl := newTimeline(cfg, time.Now())
	mon.setTimeline(tl)
	if ctx.Err() == nil {
		r.run(ctx, tl)
	}
	return []*report{r.finish()}, tl, nil
}

// Messages between the parent and its workers: the parent writes one
// workerInit line, later one workerCmd line ("start") on the worker's stdin
// (EOF aborts the run); the worker writes workerMsg lines on stdout.
type workerInit struct {
	Config *Config `json:"config"`
	Plan   plan    `json:"plan"`
}

type workerCmd struct {
	Cmd      string   `json:"cmd"`
	Timeline timeline `json:"timeline"`
}

type workerMsg struct {
	Type     string    `json:"type"` // "progress", "connected", "report"
	Progress *progress `json:"progress,omitempty"`
	Report   *report   `json:"report,omitempty"`
}

type workerProc struct {
	idx       int
	cmd       *exec.Cmd
	stdin     io.WriteCloser
	connected chan struct{}
	done      chan struct{}

	mu   sync.Mutex
	last progress
	rep  *report
	err  error
}

func runWorkers(ctx context.Context, cfg *Config, plans []plan, o Options, mon *monitor) ([]*report, timeline, error) {
	argv := o.WorkerCommand
	if len(argv) == 0 {
		exe, err := os.Executable()
		if err != nil {
			return nil, timeline{}, fmt.Errorf("finding own executable for workers: %w", err)
		}
		argv = []string{exe, "loadtest", "--worker"}
	}
	var ws []*workerProc
	var wg sync.WaitGroup
	defer wg.Wait()
	closeAll := func() {
		for _, w := range ws {
			_ = w.stdin.Close()
		}
	}
	for i, p := range plans {
		w, err := startWorker(i, argv, cfg, p, o.Stderr, &wg)
		if err != nil {
			closeAll()
			return nil, timeline{}, err
		}
		ws = append(ws, w)
	}
	mon.start(func() progress {
		sum := progress{CPU: selfCPU()}
		for _, w := range ws {
			w.mu.Lock()
			l := w.last
			w.mu.Unlock()
			sum.Ready += l.Ready
			sum.Attempted += l.Attempted
			sum.Delivered += l.Delivered
			sum.Published += l.Published
			sum.Acked += l.Acked
			sum.Errors += l.Errors
			sum.CPU += l.CPU
		}
		return sum
	})

	// Barrier: every worker connected (or gone).
	for _, w := range ws {
		select {
		case <-w.connected:
		case <-w.done:
		case <-ctx.Done():
		}
	}
	tl := newTimeline(cfg, time.Now().Add(100*time.Millisecond))
	mon.setTimeline(tl)
	if ctx.Err() == nil {
		line, _ := json.Marshal(workerCmd{Cmd: "start", Timeline: tl})
		for _, w := range ws {
			_, _ = w.stdin.Write(append(line, '\n'))
		}
	}
	// Wait for the reports; on cancellation close stdin (abort) and give the
	// workers a grace period to report before killing them.
	stop := context.AfterFunc(ctx, closeAll)
	defer stop()
	for _, w := range ws {
		grace := time.Until(time.Unix(0, tl.End)) + cfg.Timeout + 30*time.Second
		t := time.NewTimer(grace)
		select {
		case <-w.done:
		case <-t.C:
			_ = w.cmd.Process.Kill()
			<-w.done
		}
		t.Stop()
	}
	closeAll()
	var reps []*report
	var errs []error
	for _, w := range ws {
		if w.rep == nil {
			errs = append(errs, fmt.Errorf("worker %d sent no report: %v", w.idx, w.err))
			continue
		}
		reps = append(reps, w.rep)
	}
	if len(errs) > 0 {
		return nil, tl, errors.Join(errs...)
	}
	return reps, tl, nil
}

func startWorker(i int, argv []string, cfg *Config, p plan, stderr io.Writer, wg *sync.WaitGroup) (*workerProc, error) {
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Env = append(os.Environ(), WorkerEnv+"=1")
	cmd.Stderr = stderr
	stdin, err := cmd.StdinPipe()
	if err != nil {
		return nil, fmt.Errorf("starting worker %d: %w", i, err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return nil, fmt.Errorf("starting worker %d: %w", i, err)
	}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("starting worker %d (%s): %w", i, argv[0], err)
	}
	w := &workerProc{idx: i, cmd: cmd, stdin: stdin, connected: make(chan struct{}), done: make(chan struct{})}
	line, err := json.Marshal(workerInit{Config: cfg, Plan: p})
	if err != nil {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
		return nil, fmt.Errorf("encoding worker config: %w", err)
	}
	_, _ = stdin.Write(append(line, '\n'))
	wg.Add(1)
	go func() {
		defer wg.Done()
		defer close(w.done)
		sc := bufio.NewScanner(stdout)
		sc.Buffer(make([]byte, 64<<10), 256<<20)
		once := sync.Once{}
		for sc.Scan() {
			var m workerMsg
			if err := json.Unmarshal(sc.Bytes(), &m); err != nil {
				continue // not ours (a stray print): ignore
			}
			switch m.Type {
			case "progress":
				if m.Progress != nil {
					w.mu.Lock()
					w.last = *m.Progress
					w.mu.Unlock()
				}
			case "connected":
				once.Do(func() { close(w.connected) })
			case "report":
				w.mu.Lock()
				w.rep = m.Report
				if m.Report != nil {
					w.last = m.Report.Final
				}
				w.mu.Unlock()
			}
		}
		err := cmd.Wait()
		w.mu.Lock()
		w.err = err
		w.mu.Unlock()
	}()
	return w, nil
}

// WorkerMain runs one worker: it reads its workerInit from in, connects,
// reports "connected", waits for "start", runs and writes its report to out.
// EOF on in (or ctx) aborts the run early; the report is still written.
func WorkerMain(ctx context.Context, in io.Reader, out io.Writer) error {
	raiseFileLimit()
	sc := bufio.NewScanner(in)
	sc.Buffer(make([]byte, 64<<10), 16<<20)
	if !sc.Scan() {
		return errors.New("worker: no configuration on stdin")
	}
	var init workerInit
	if err := json.Unmarshal(sc.Bytes(), &init); err != nil || init.Config == nil {
		return fmt.Errorf("worker: decoding configuration: %v", err)
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	cmds := make(chan workerCmd, 1)
	// Reads the parent's commands until EOF, which cancels the run. It
	// ends with stdin (the process exits right after the report).
	go func() {
		defer cancel()
		for sc.Scan() {
			var c workerCmd
			if json.Unmarshal(sc.Bytes(), &c) == nil {
				select {
				case cmds <- c:
				default:
				}
			}
		}
	}()
	var outMu sync.Mutex
	send := func(m workerMsg) {
		b, err := json.Marshal(m)
		if err != nil {
			return
		}
		outMu.Lock()
		defer outMu.Unlock()
		_, _ = out.Write(append(b, '\n'))
	}
	r, err := newRunner(init.Config, init.Plan)
	if err != nil {
		return err
	}
	tickDone := make(chan struct{})
	tickStop := make(chan struct{})
	go func() {
		defer close(tickDone)
		t := time.NewTicker(time.Second)
		defer t.Stop()
		for {
			select {
			case <-tickStop:
				return
			case <-t.C:
				p := r.progress()
				send(workerMsg{Type: "progress", Progress: &p})
			}
		}
	}()
	_ = r.connect(ctx)
	send(workerMsg{Type: "connected"})
	select {
	case c := <-cmds:
		if c.Cmd == "start" {
			r.run(ctx, c.Timeline)
		}
	case <-ctx.Done():
	}
	rep := r.finish()
	close(tickStop)
	<-tickDone
	send(workerMsg{Type: "report", Report: rep})
	return nil
}
