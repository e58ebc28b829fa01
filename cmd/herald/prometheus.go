package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"syscall"
	"time"

	"github.com/herald-chat/herald/dashboards"
)

// prometheusAddr is where `herald dev --prometheus` serves Prometheus's UI.
const prometheusAddr = "127.0.0.1:9090"

// startPrometheus runs the Debian `prometheus` binary (apt-get install
// prometheus) for the local stack: the repository's scrape config
// (dashboards/prometheus.yml: the admin endpoints on 127.0.0.1:9100-9103) and
// alert rules, its UI on 127.0.0.1:9090, its TSDB and log under
// dataDir/prometheus. It returns once Prometheus is ready. stop terminates it
// and waits; canceling ctx terminates it too.
//
// dataDir must be absolute when the dev stack already runs: the embedded S3
// changes the working directory (pass st.Opts.DataDir).
func startPrometheus(ctx context.Context, dataDir string, log *slog.Logger) (stop func(), url string, err error) {
	bin, err := exec.LookPath("prometheus")
	if err != nil {
		return nil, "", fmt.Errorf("prometheus is not installed (apt-get install prometheus): %w", err)
	}
	dir, err := filepath.Abs(filepath.Join(dataDir, "prometheus"))
	if err != nil {
		return nil, "", fmt.Errorf("prometheus directory: %w", err)
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, "", fmt.Errorf("creating prometheus directory: %w", err)
	}
	for _, name := range []string{"prometheus.yml", "alerts.yml"} {
		b, err := dashboards.Files.ReadFile(name)
		if err != nil {
			return nil, "", fmt.Errorf("reading embedded %s: %w", name, err)
		}
		if err := os.WriteFile(filepath.Join(dir, name), b, 0o644); err != nil {
			return nil, "", fmt.Errorf("writing %s: %w", name, err)
		}
	}
	logPath := filepath.Join(dir, "prometheus.log")
	logFile, err := os.Create(logPath)
	if err != nil {
		return nil, "", fmt.Errorf("creating prometheus log: %w", err)
	}

	ctx, cancel := context.WithCancel(ctx)
	cmd := exec.CommandContext(ctx, bin,
		"--config.file="+filepath.Join(dir, "prometheus.yml"),
		"--storage.tsdb.path="+filepath.Join(dir, "data"),
		"--web.listen-address="+prometheusAddr,
	)
	cmd.Dir = dir
	cmd.Stdout, cmd.Stderr = logFile, logFile
	cmd.Cancel = func() error { return cmd.Process.Signal(syscall.SIGTERM) }
	cmd.WaitDelay = 10 * time.Second // then SIGKILL
	if err := cmd.Start(); err != nil {
		cancel()
		logFile.Close()
		return nil, "", fmt.Errorf("starting prometheus: %w", err)
	}
	exited := make(chan struct{})
	var waitErr error
	go func() { // owned by stop, which waits for it
		waitErr = cmd.Wait()
		logFile.Close()
		close(exited)
	}()
	var once sync.Once
	stop = func() {
		once.Do(func() {
			cancel()
			<-exited
			log.Info("prometheus stopped")
		})
	}

	url = "http://" + prometheusAddr
	deadline := time.Now().Add(20 * time.Second)
	for {
		select {
		case <-exited:
			stop()
			return nil, "", fmt.Errorf("prometheus exited (%v; is %s already in use?): %s", waitErr, prometheusAddr, tail(logPath))
		default:
		}
		if resp, err := http.Get(url + "/-/ready"); err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				log.Info("prometheus ready", "url", url, "config", filepath.Join(dir, "prometheus.yml"), "log", logPath)
				return stop, url, nil
			}
		}
		if time.Now().After(deadline) {
			stop()
			return nil, "", errors.New("prometheus not ready after 20s: " + tail(logPath))
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// tail returns the last lines of a log file for an error message.
func tail(path string) string {
	b, _ := os.ReadFile(path)
	b = bytes.TrimSpace(b)
	if i := len(b) - 2000; i > 0 {
		b = b[i:]
	}
	return string(b)
}
