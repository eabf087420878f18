#!/usr/bin/env python3
"""Median timeline of one queue-depth-1 I/O from an ftrace text trace.

    timeline.py TRACE...

Each I/O is the span from one io_submit to the next by the same process
(the trace holds one fio job at queue depth 1). In each span the first
occurrence of every event on every CPU is taken, relative to the span's
io_submit; the median over the spans is printed for the events seen in
more than half of them, in time order. Scheduler events are named after
the task they concern, workqueue events after the work's function.
Used by qd1-timeline.sh (a VM_SCRIPT); see tests/vm/README.md.
"""

import re
import statistics
import sys

LINE = re.compile(r"^\s*(.+?)-(\d+)\s+\[(\d+)\]\s+\S+\s+([\d.]+):\s+(.*)$")


def event(body):
    """(name, fields) of one event's text; syscalls as sys_enter_X / sys_exit_X."""
    m = re.match(r"sys_(\w+)\((.*)$", body)
    if m:
        return "sys_enter_" + m.group(1), m.group(2)
    m = re.match(r"sys_(\w+) -> (.*)$", body)
    if m:
        return "sys_exit_" + m.group(1), m.group(2)
    m = re.match(r"(\S+?):\s*(.*)$", body)
    if m:
        return m.group(1), m.group(2)
    return body, ""


def task(name):
    """A task's name without its CPU or pool (kworker/0:1 -> kworker)."""
    return name.split("/")[0]


def key(name, fields):
    """What one event is called in the timeline."""
    if name == "cpu_idle":
        return "idle_exit" if "state=4294967295" in fields else "idle_enter"
    if name == "sched_switch":
        m = re.search(r"next_comm=(\S+)", fields)
        return "switch_to_" + task(m.group(1)) if m else name
    if name in ("sched_waking", "sched_wakeup"):
        m = re.search(r"comm=(\S+)", fields)
        return name + "_" + task(m.group(1)) if m else name
    if name.startswith("workqueue_"):
        m = re.search(r"function=(\S+)", fields)
        return name + "_" + m.group(1) if m else name
    return name


def load(path):
    events = []
    with open(path, errors="replace") as f:
        for line in f:
            m = LINE.match(line)
            if not m:
                continue
            _comm, pid, cpu, t, body = m.groups()
            name, fields = event(body)
            events.append((float(t) * 1e6, int(cpu), int(pid), key(name, fields)))
    return events


def timeline(path):
    events = load(path)
    starts = [i for i, e in enumerate(events) if e[3] == "sys_enter_io_submit"]
    seen_in = {}
    for a, b in zip(starts, starts[1:]):
        t0 = events[a][0]
        first = {}
        for t, cpu, _pid, k in events[a:b]:
            first.setdefault(f"{k}@{cpu}", t - t0)
        for k, dt in first.items():
            seen_in.setdefault(k, []).append(dt)
    spans = max(len(starts) - 1, 0)
    print(f"{path}: {spans} I/Os (time after io_submit, median; event@CPU)")
    rows = sorted(
        (statistics.median(v), k, len(v)) for k, v in seen_in.items() if len(v) > spans / 2
    )
    for median, k, n in rows:
        print(f"{median:9.1f} us  {k:58s} in {n}")
    print()


def main():
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    for path in sys.argv[1:]:
        timeline(path)


if __name__ == "__main__":
    main()
