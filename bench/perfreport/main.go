// Command perfreport regenerates the load test results of
// docs/performance.md from `herald loadtest` JSON results: the machine, the
// commands, two results tables and where the HTML reports are. It replaces
// only the text between the perf-report markers and the table of contents
// between the toc markers; every other section is left alone.
//
//	go run ./bench/perfreport [--doc docs/performance.md] [--scale modest|full] \
//	    [--load-before "$(cat /proc/loadavg)"] [--load-after …] [--note text] [--stdout] name=results.json…
//
// `make perf-report` (loadtest/scripts/perf-report.sh) runs the standard
// set and then this.
package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"time"
)

func main() {
	if err := run(os.Args[1:], os.Stdout, os.Stderr); err != nil {
		fmt.Fprintln(os.Stderr, "perfreport:", err)
		if errors.Is(err, errUsage) {
			os.Exit(2)
		}
		os.Exit(1)
	}
}

var errUsage = errors.New("usage")

func run(args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("perfreport", flag.ContinueOnError)
	fs.SetOutput(stderr)
	doc := fs.String("doc", "docs/performance.md", "Markdown document to update in place")
	scale := fs.String("scale", "modest", "scale of the runs: modest or full")
	loadBefore := fs.String("load-before", "", "contents of /proc/loadavg before the runs")
	loadAfter := fs.String("load-after", "", "contents of /proc/loadavg after the runs (default: now)")
	note := fs.String("note", "", "text added under the tables")
	toStdout := fs.Bool("stdout", false, "print the generated section instead of updating --doc")
	tocOnly := fs.Bool("toc-only", false, "only regenerate --doc's table of contents (after adding a section by hand); no results")
	fs.Usage = func() {
		fmt.Fprintln(stderr, "Usage: perfreport [flags] name=results.json…")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return nil
		}
		return fmt.Errorf("%w: %v", errUsage, err)
	}
	if *tocOnly {
		if fs.NArg() > 0 {
			return fmt.Errorf("%w: --toc-only takes no results", errUsage)
		}
		return updateTOC(*doc, stdout)
	}
	if fs.NArg() == 0 {
		fs.Usage()
		return fmt.Errorf("%w: no results given (name=path.json…)", errUsage)
	}
	if *scale != "modest" && *scale != "full" {
		return fmt.Errorf("%w: --scale must be modest or full, got %q", errUsage, *scale)
	}
	rep := Report{Date: time.Now(), Scale: *scale, Note: *note, Machine: gatherMachine()}
	rep.Machine.LoadBefore = loadFields(*loadBefore)
	if *loadAfter != "" {
		rep.Machine.LoadAfter = loadFields(*loadAfter)
	}
	for _, spec := range fs.Args() {
		r, err := loadRun(spec)
		if err != nil {
			return err
		}
		rep.Runs = append(rep.Runs, r)
	}
	if *toStdout {
		_, err := io.WriteString(stdout, Section(rep))
		return err
	}
	b, err := os.ReadFile(*doc)
	if err != nil {
		return fmt.Errorf("reading %s: %w", *doc, err)
	}
	out, err := Update(string(b), rep)
	if err != nil {
		return fmt.Errorf("updating %s: %w", *doc, err)
	}
	if err := writeAtomic(*doc, []byte(out)); err != nil {
		return err
	}
	fmt.Fprintf(stdout, "perfreport: updated %s (%d runs)\n", *doc, len(rep.Runs))
	return nil
}

// updateTOC regenerates the table of contents of the document at path.
func updateTOC(path string, stdout io.Writer) error {
	b, err := os.ReadFile(path)
	if err != nil {
		return fmt.Errorf("reading %s: %w", path, err)
	}
	out, err := ReplaceBetween(string(b), tocBegin, tocEnd, TOC(string(b)))
	if err != nil {
		return fmt.Errorf("updating %s: %w", path, err)
	}
	if err := writeAtomic(path, []byte(out)); err != nil {
		return err
	}
	fmt.Fprintf(stdout, "perfreport: table of contents of %s regenerated\n", path)
	return nil
}

// gatherMachine describes this machine with nproc, free -g, go version and
// uname -r (fields stay empty when a command is missing).
func gatherMachine() Machine {
	m := Machine{
		CPUs:      cmdOut("nproc"),
		GoVersion: cmdOut("go", "version"),
		Kernel:    cmdOut("uname", "-r"),
	}
	if m.CPUs == "" {
		m.CPUs = fmt.Sprint(runtime.NumCPU())
	}
	m.GoVersion = strings.TrimPrefix(m.GoVersion, "go version ")
	m.Memory = freeTotal(cmdOut("free", "-g"))
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		m.CPUModel = cpuModel(string(b))
	}
	if b, err := os.ReadFile("/proc/loadavg"); err == nil {
		m.LoadAfter = loadFields(string(b))
	}
	return m
}

func cmdOut(name string, args ...string) string {
	out, err := exec.Command(name, args...).Output()
	if err != nil {
		return ""
	}
	return strings.TrimSpace(string(out))
}

// freeTotal extracts the total of the "Mem:" line of `free -g`.
func freeTotal(out string) string {
	for _, line := range strings.Split(out, "\n") {
		if f := strings.Fields(line); len(f) > 1 && f[0] == "Mem:" {
			return f[1]
		}
	}
	return ""
}

// cpuModel is the first "model name" of /proc/cpuinfo.
func cpuModel(cpuinfo string) string {
	for _, line := range strings.Split(cpuinfo, "\n") {
		if k, v, ok := strings.Cut(line, ":"); ok && strings.TrimSpace(k) == "model name" {
			return strings.Join(strings.Fields(v), " ")
		}
	}
	return ""
}

// loadFields keeps the three load averages of a /proc/loadavg line.
func loadFields(s string) string {
	f := strings.Fields(s)
	if len(f) < 3 {
		return strings.TrimSpace(s)
	}
	return strings.Join(f[:3], " / ")
}
