"""Wall time, memory and CPU of a command's whole process tree, for the benchmarks.

:func:`measure` runs a command in a subprocess and samples, every ``interval`` seconds, the
process and all its descendants (worker processes, a forkserver, SWarp ...) plus any other
process trees named in ``also`` (e.g. a dask cluster started for the run):

* **PSS** (proportional set size, psutil ``memory_full_info().pss``): shared pages are
  divided among the processes that share them, so the sum over a tree is the memory the
  tree really uses (RSS counts the pages of libraries and of a forked parent once per
  process);
* **RSS** summed over the tree, and each process's own high-water mark ``VmHWM`` (it
  catches a peak shorter than the sampling interval in one process);
* **CPU seconds** of the tree: the user + system time of every descendant that its parent
  waited for (``RUSAGE_CHILDREN`` of this process, before and after), or the sampled times
  of the live processes when larger; ``cpu_util`` = CPU seconds / (wall x CPUs).

:func:`self_peak_rss_mb` is the ``VmHWM`` of the calling process (a benchmark's child
reporting on itself).
"""

import os
import resource
import subprocess
import tempfile
import time
from dataclasses import dataclass

import psutil

from photometry_graph.pipeline.budget import proc_field_bytes

__all__ = ["Measurement", "measure", "self_peak_rss_mb", "vm_hwm_bytes"]

MB = 2 ** 20


@dataclass
class Measurement:
    """What :func:`measure` saw of one command (memory in bytes, times in seconds)."""

    wall_s: float
    peak_pss: int
    peak_rss: int
    peak_hwm: int
    cpu_s: float
    cpu_util: float
    returncode: object
    stdout: str
    stderr_tail: str
    samples: int
    extra_sys_s: float = 0.0
    extra_faults: int = 0

    @property
    def ok(self):
        """True when the command exited with 0."""
        return self.returncode == 0

    @property
    def peak_pss_mb(self):
        return self.peak_pss / MB

    @property
    def peak_rss_mb(self):
        """The larger of the summed tree RSS and the largest single ``VmHWM``."""
        return max(self.peak_rss, self.peak_hwm) / MB


def vm_hwm_bytes(pid="self"):
    """``VmHWM`` (peak RSS) of a process in bytes, 0 when unreadable (exited, not Linux)."""
    return proc_field_bytes(pid, "status", "VmHWM:") or 0


def self_peak_rss_mb():
    """Peak RSS of the calling process since it started (``VmHWM``), MB.

    ``getrusage(RUSAGE_SELF).ru_maxrss`` is only the fallback: Linux keeps it across
    ``exec``, so it would include the memory of the process that launched this one.
    """
    hwm = vm_hwm_bytes()
    if hwm:
        return hwm / MB
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def _tree(roots):
    procs = []
    for root in roots:
        procs.append(root)
        try:
            procs += root.children(recursive=True)
        except psutil.Error:
            pass
    return procs


def _sample(procs, cpu_seen):
    """Summed PSS and RSS of ``procs``, their largest VmHWM; updates ``cpu_seen`` per pid."""
    pss = rss = hwm = 0
    for p in procs:
        try:
            info = p.memory_full_info()
            times = p.cpu_times()
        except psutil.Error:
            continue
        pss += getattr(info, "pss", info.rss)
        rss += info.rss
        hwm = max(hwm, vm_hwm_bytes(p.pid))
        cpu_seen[(p.pid, p.create_time())] = times.user + times.system
    return pss, rss, hwm


def _counters(procs, seen):
    """Record in ``seen`` the CPU seconds (user and system), system seconds and minor page
    faults of each of ``procs`` so far (Linux ``/proc``), keyed by process (pid and start
    time)."""
    for p in procs:
        try:
            key = (p.pid, p.create_time())
            times = p.cpu_times()
            with open(f"/proc/{p.pid}/stat") as fh:
                faults = int(fh.read().rsplit(")", 1)[1].split()[7])  # minflt
        except (psutil.Error, OSError, IndexError, ValueError):
            continue
        seen[key] = (times.user + times.system, times.system, faults)


def _growth(before, after):
    """``(CPU seconds, system seconds, faults)`` gained between two :func:`_counters`
    records: each process's own growth (0 before for one started since; its last reading
    for one gone)."""
    zero = (0.0, 0.0, 0)
    return tuple(sum(v[i] - before.get(k, zero)[i] for k, v in after.items())
                 for i in range(3))


def _children_cpu():
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def measure(cmd, *, interval=0.07, timeout=None, env=None, cwd=None, also=()):
    """Run ``cmd``; return a :class:`Measurement` of its whole process tree.

    Parameters
    ----------
    cmd : list of str
    interval : float
        Sampling interval, seconds (each sample reads ``/proc/<pid>/smaps_rollup`` of
        every process of the tree).
    timeout : float, optional
        Kill the tree after this many seconds (``returncode`` is then ``"timeout"``).
    env, cwd
        Of the subprocess.
    also : sequence of int
        Pids of other processes whose trees count too (a dask cluster serving the run):
        their memory, the CPU they spend during the run, and (``extra_sys_s``,
        ``extra_faults``) their system time and minor page faults during it.
    """
    extra = [psutil.Process(pid) for pid in also]
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        cpu0 = _children_cpu()
        extra0, extra_seen = {}, {}  # the `also` trees' counters: at the start, last seen
        _counters(_tree(extra), extra0)
        extra_seen.update(extra0)
        t0 = time.perf_counter()
        child = subprocess.Popen(cmd, stdout=out, stderr=err, env=env, cwd=cwd)
        root = psutil.Process(child.pid)
        peak = [0, 0, 0]
        cpu_seen, samples, code = {}, 0, None
        while child.poll() is None:
            sample = _sample(_tree([root]), cpu_seen)  # the CPU of `also`: its difference
            if extra:
                procs = _tree(extra)
                more = _sample(procs, {})
                _counters(procs, extra_seen)
                sample = (sample[0] + more[0], sample[1] + more[1], max(sample[2], more[2]))
            peak = [max(a, b) for a, b in zip(peak, sample)]
            samples += 1
            if timeout and time.perf_counter() - t0 > timeout:
                for p in _tree([root]):
                    try:
                        p.kill()
                    except psutil.Error:
                        pass
                child.wait()
                code = "timeout"
                break
            time.sleep(interval)
        wall = time.perf_counter() - t0
        _counters(_tree(extra), extra_seen)
        cpu_extra, extra_sys, extra_faults = _growth(extra0, extra_seen)
        waited = _children_cpu() - cpu0  # every descendant reaped by its parent
        sampled = sum(cpu_seen.values())
        cpu = max(waited, sampled) + max(cpu_extra, 0.0)
        out.seek(0)
        err.seek(0)
        stdout = out.read().decode("utf-8", "replace")
        tail = "\n".join(err.read().decode("utf-8", "replace").strip().splitlines()[-8:])
    n_cpu = psutil.cpu_count() or 1
    return Measurement(wall_s=wall, peak_pss=peak[0], peak_rss=peak[1], peak_hwm=peak[2],
                       cpu_s=cpu, cpu_util=cpu / max(wall * n_cpu, 1e-9),
                       returncode=child.returncode if code is None else code, stdout=stdout,
                       stderr_tail=tail, samples=samples, extra_sys_s=extra_sys,
                       extra_faults=int(extra_faults))


def load_note():
    """``"load 0.12 0.30 0.41 (2 CPUs)"``: the machine's load averages when called."""
    one, five, fifteen = os.getloadavg()
    return f"load {one:.2f} {five:.2f} {fifteen:.2f} ({psutil.cpu_count()} CPUs)"
