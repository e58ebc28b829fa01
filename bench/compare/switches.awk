# Context switches by call stack, from `perf script` of a
# `perf record -e sched:sched_switch -g` (compare.sh PROFILE=1): the share
# of switches per first four Go frames of the switching thread's stack
# (kernel frames skipped), largest first after `sort -rn`.
function flush() {
  if (inside) { tot++; if (key == "") key = "(kernel only)"; c[key]++ }
  inside = 0; key = ""; n = 0
}
/^[^ \t]/ { flush(); inside = 1; next }
/^[ \t]+[0-9a-f]+ / {
  sym = $2; sub(/\+0x[0-9a-f]+$/, "", sym)
  if (sym ~ /\./ && sym !~ /^(__|do_|x64|entry|schedule|futex|hrtimer|ep_|sys_)/ && n < 4) {
    key = key (n ? " < " : "") sym; n++
  }
  next
}
/^[ \t]*$/ { flush() }
END { flush(); for (k in c) printf "%5.1f%% %s\n", 100 * c[k] / tot, k; printf "%6d switches in all\n", tot }
