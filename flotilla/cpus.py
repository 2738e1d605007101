"""How many CPUs this process may use: its CPU affinity, capped by its cgroup's CPU quota.

`os.cpu_count()` counts the machine's cores. A container limited to 2 CPUs on a 64-core node
(Kubernetes `limits.cpu: 2`, `docker --cpus 2`) sees 64 there, and 64 worker processes would
share 2 CPUs' worth of time. The quota is in the cgroup files of the process's own cgroup
and of its ancestors (the smallest wins):

- cgroup v2: `cpu.max` holds "<quota> <period>" in microseconds, or "max <period>";
- cgroup v1: `cpu.cfs_quota_us` (-1: none) over `cpu.cfs_period_us`.

The cgroup directories are found the way the kernel names them: the process's cgroup paths
in /proc/self/cgroup, under the mount points of /proc/self/mountinfo (both v1 and v2 may be
mounted at once). A fractional quota rounds up (1.5 CPUs: 2), as the JVM and .NET do: one
process per whole CPU would leave the half unused.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class CgroupDir:
    """One directory of the process's cgroup hierarchy that may hold a CPU quota."""

    version: int  # 1 or 2
    path: Path  # the process's own cgroup directory
    mount: Path  # where its hierarchy is mounted: the walk up stops there


def parse_cpu_max(text: str) -> float | None:
    """CPUs allowed by a cgroup v2 `cpu.max` ("150000 100000": 1.5); None when unlimited."""
    fields = text.split()
    if len(fields) != 2 or fields[0] == "max":
        return None
    try:
        quota, period = int(fields[0]), int(fields[1])
    except ValueError:
        return None
    return quota / period if quota > 0 and period > 0 else None


def parse_cfs(quota_text: str, period_text: str) -> float | None:
    """CPUs allowed by cgroup v1 `cpu.cfs_quota_us` / `cpu.cfs_period_us`; None when -1."""
    try:
        quota, period = int(quota_text.strip()), int(period_text.strip())
    except ValueError:
        return None
    return quota / period if quota > 0 and period > 0 else None


def cgroup_dirs(proc_cgroup: str, mountinfo: str) -> list[CgroupDir]:
    """The process's cgroup directories that can carry a CPU quota (v2, and v1 `cpu`)."""
    paths: dict[str, str] = {}  # "v2" or "cpu" -> the cgroup path of the process
    for line in proc_cgroup.splitlines():
        hierarchy, _, rest = line.partition(":")
        controllers, _, path = rest.partition(":")
        if hierarchy == "0" and controllers == "":
            paths["v2"] = path
        elif "cpu" in controllers.split(","):
            paths["cpu"] = path
    found = []
    for line in mountinfo.splitlines():
        fields = line.split()
        if "-" not in fields:
            continue
        sep = fields.index("-")
        root, mount_point = fields[3], fields[4]
        fstype, super_options = fields[sep + 1], fields[sep + 3] if len(fields) > sep + 3 else ""
        if fstype == "cgroup2" and "v2" in paths:
            version, path = 2, paths["v2"]
        elif fstype == "cgroup" and "cpu" in super_options.split(",") and "cpu" in paths:
            version, path = 1, paths["cpu"]
        else:
            continue
        # The mount shows the hierarchy from `root` down (a container sees "/" as its own).
        relative = os.path.relpath(path, root) if path.startswith(root) else "."
        mount = Path(mount_point)
        found.append(CgroupDir(version, (mount / relative).resolve(), mount))
    return found


def _read(path: Path) -> str | None:
    try:
        return path.read_text()
    except OSError:
        return None


def quota_of(directory: CgroupDir) -> float | None:
    """The smallest CPU quota on the way from the process's cgroup up to its mount."""
    quotas = []
    path = directory.path
    while True:
        if directory.version == 2:
            text = _read(path / "cpu.max")
            quota = parse_cpu_max(text) if text is not None else None
        else:
            q, p = _read(path / "cpu.cfs_quota_us"), _read(path / "cpu.cfs_period_us")
            quota = parse_cfs(q, p) if q is not None and p is not None else None
        if quota is not None:
            quotas.append(quota)
        if path == directory.mount or path.parent == path or directory.mount not in path.parents:
            break
        path = path.parent
    return min(quotas) if quotas else None


def cpu_quota(proc: Path = Path("/proc/self")) -> float | None:
    """CPUs the cgroup quota allows this process (None: no quota, or no cgroups here)."""
    proc_cgroup, mountinfo = _read(proc / "cgroup"), _read(proc / "mountinfo")
    if proc_cgroup is None or mountinfo is None:
        return None
    quotas = [q for d in cgroup_dirs(proc_cgroup, mountinfo) if (q := quota_of(d)) is not None]
    return min(quotas) if quotas else None


def affinity_cpus() -> int:
    """CPUs this process may be scheduled on (all of the machine's where affinity is unknown)."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def available_cpus(proc: Path = Path("/proc/self")) -> int:
    """The CPUs this process may use: affinity, capped by the cgroup quota rounded up; >= 1."""
    cpus = affinity_cpus()
    quota = cpu_quota(proc)
    if quota is not None:
        cpus = min(cpus, math.ceil(quota))
    return max(1, cpus)
