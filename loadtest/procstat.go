package loadtest

import (
	"bytes"
	"fmt"
	"os"
	"strconv"
	"syscall"
	"time"
)

// clockTicks is USER_HZ, the unit of /proc/<pid>/stat CPU times; it is 100
// on every Linux architecture Go supports.
const clockTicks = 100

// procSample is one reading of a process's resource use.
type procSample struct {
	at  time.Time
	rss uint64  // bytes
	cpu float64 // CPU seconds (user+system) since the process started
}

// readProc reads RSS and CPU time of pid from /proc.
func readProc(pid int) (procSample, error) {
	s := procSample{at: time.Now()}
	base := "/proc/" + strconv.Itoa(pid)
	stat, err := os.ReadFile(base + "/stat")
	if err != nil {
		return s, fmt.Errorf("reading %s/stat: %w", base, err)
	}
	// The command name (field 2) may hold spaces: fields start after ')'.
	i := bytes.LastIndexByte(stat, ')')
	if i < 0 {
		return s, fmt.Errorf("parsing %s/stat: no ')'", base)
	}
	f := bytes.Fields(stat[i+1:])
	if len(f) < 22 {
		return s, fmt.Errorf("parsing %s/stat: %d fields", base, len(f))
	}
	// f[0] is field 3 (state): utime is field 14, stime field 15, rss field 24.
	ut, err1 := strconv.ParseUint(string(f[11]), 10, 64)
	st, err2 := strconv.ParseUint(string(f[12]), 10, 64)
	rss, err3 := strconv.ParseInt(string(f[21]), 10, 64)
	if err1 != nil || err2 != nil || err3 != nil {
		return s, fmt.Errorf("parsing %s/stat: bad numbers", base)
	}
	s.cpu = float64(ut+st) / clockTicks
	s.rss = uint64(max(rss, 0)) * uint64(os.Getpagesize())
	return s, nil
}

// cpuPercent is the CPU use between two samples, 100 = one core.
func cpuPercent(a, b procSample) float64 {
	d := b.at.Sub(a.at).Seconds()
	if d <= 0 {
		return 0
	}
	return (b.cpu - a.cpu) / d * 100
}

// selfCPU returns the CPU seconds this process used so far.
func selfCPU() float64 {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano()).Seconds()
}

// raiseFileLimit lifts the soft open-file limit to the hard one and returns
// the resulting soft limit.
func raiseFileLimit() uint64 {
	var l syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &l); err != nil {
		return 0
	}
	if l.Cur < l.Max {
		l.Cur = l.Max
		_ = syscall.Setrlimit(syscall.RLIMIT_NOFILE, &l)
		_ = syscall.Getrlimit(syscall.RLIMIT_NOFILE, &l)
	}
	return l.Cur
}
