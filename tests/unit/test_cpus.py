"""flotilla.cpus: the CPUs a process may use, from its affinity and its cgroup's CPU quota
(v1 and v2 files in a fake /proc and cgroup tree)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from flotilla import cpus
from flotilla.cpus import CgroupDir, cgroup_dirs, parse_cfs, parse_cpu_max


@pytest.mark.parametrize(
    ("text", "quota"),
    [("max 100000\n", None), ("200000 100000\n", 2.0), ("150000 100000", 1.5),
     ("50000 100000", 0.5), ("", None), ("garbage", None), ("0 100000", None),
     ("100000 0", None)],
)
def test_cpu_max(text: str, quota: float | None) -> None:
    assert parse_cpu_max(text) == quota


@pytest.mark.parametrize(
    ("quota_us", "period_us", "quota"),
    [("-1\n", "100000\n", None), ("300000\n", "100000\n", 3.0), ("25000", "100000", 0.25),
     ("x", "100000", None)],
)
def test_cfs_quota(quota_us: str, period_us: str, quota: float | None) -> None:
    assert parse_cfs(quota_us, period_us) == quota


# A cgroup v1 + v2 hybrid (this machine's shape) and a container's pure v2 view.
HYBRID_CGROUP = "4:memory:/x\n3:cpuset:/\n1:cpu,cpuacct:/kubepods/pod1/c1\n0::/kubepods/pod1/c1\n"
HYBRID_MOUNTS = (
    "30 25 0:26 / /sys/fs/cgroup/cpu,cpuacct rw,relatime shared:10 - cgroup cgroup "
    "rw,cpu,cpuacct\n"
    "31 25 0:27 / /sys/fs/cgroup/memory rw,relatime shared:11 - cgroup cgroup rw,memory\n"
    "29 25 0:25 / /sys/fs/cgroup/unified rw,relatime shared:9 - cgroup2 cgroup2 rw\n"
)
CONTAINER_CGROUP = "0::/\n"
CONTAINER_MOUNTS = (
    "600 590 0:30 /kubepods/pod1/c1 /sys/fs/cgroup ro,nosuid - cgroup2 cgroup rw\n"
)


def test_cgroup_dirs_of_a_hybrid_host() -> None:
    assert cgroup_dirs(HYBRID_CGROUP, HYBRID_MOUNTS) == [
        CgroupDir(1, Path("/sys/fs/cgroup/cpu,cpuacct/kubepods/pod1/c1"),
                  Path("/sys/fs/cgroup/cpu,cpuacct")),
        CgroupDir(2, Path("/sys/fs/cgroup/unified/kubepods/pod1/c1"),
                  Path("/sys/fs/cgroup/unified")),
    ]


def test_cgroup_dirs_of_a_container_see_their_own_root() -> None:
    assert cgroup_dirs(CONTAINER_CGROUP, CONTAINER_MOUNTS) == [
        CgroupDir(2, Path("/sys/fs/cgroup"), Path("/sys/fs/cgroup")),
    ]


def fake_host(tmp_path: Path, cgroup: str, mounts: str) -> Path:
    """A /proc/self with `cgroup` and `mounts` whose mount points lie under tmp_path."""
    proc = tmp_path / "proc"
    proc.mkdir()
    (proc / "cgroup").write_text(cgroup)
    (proc / "mountinfo").write_text(mounts.replace(" /sys/", f" {tmp_path}/sys/"))
    return proc


def write(path: Path, text: str) -> None:
    path.mkdir(parents=True, exist_ok=True)
    for line in text.split(";"):
        name, _, value = line.partition("=")
        (path / name).write_text(value + "\n")


def test_the_smallest_quota_on_the_way_up_wins(tmp_path: Path) -> None:
    proc = fake_host(tmp_path, HYBRID_CGROUP, HYBRID_MOUNTS)
    v1 = tmp_path / "sys/fs/cgroup/cpu,cpuacct"
    write(v1 / "kubepods/pod1/c1", "cpu.cfs_quota_us=-1;cpu.cfs_period_us=100000")
    write(v1 / "kubepods/pod1", "cpu.cfs_quota_us=250000;cpu.cfs_period_us=100000")
    write(v1 / "kubepods", "cpu.cfs_quota_us=800000;cpu.cfs_period_us=100000")
    assert cpus.cpu_quota(proc) == 2.5
    write(tmp_path / "sys/fs/cgroup/unified/kubepods/pod1/c1", "cpu.max=120000 100000")
    assert cpus.cpu_quota(proc) == 1.2


def test_no_quota_files_mean_no_quota(tmp_path: Path) -> None:
    proc = fake_host(tmp_path, HYBRID_CGROUP, HYBRID_MOUNTS)
    assert cpus.cpu_quota(proc) is None
    assert cpus.cpu_quota(tmp_path / "nowhere") is None


@pytest.mark.parametrize(("cpu_max", "affinity", "expected"),
                         [("max 100000", 8, 8), ("200000 100000", 8, 2), ("150000 100000", 8, 2),
                          ("50000 100000", 8, 1), ("800000 100000", 2, 2)])
def test_available_cpus_is_the_affinity_capped_by_the_quota_rounded_up(
    tmp_path: Path, cpu_max: str, affinity: int, expected: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    proc = fake_host(tmp_path, CONTAINER_CGROUP, CONTAINER_MOUNTS)
    write(tmp_path / "sys/fs/cgroup", f"cpu.max={cpu_max}")
    monkeypatch.setattr(cpus, "affinity_cpus", lambda: affinity)
    assert cpus.available_cpus(proc) == expected


def test_this_process() -> None:
    assert 1 <= cpus.available_cpus() <= (os.cpu_count() or 1)
