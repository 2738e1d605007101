"""Jobs run on threads nicer to the CPU than sync calls (worker/consumer.py `job_threads`)."""

from __future__ import annotations

import os
import threading

import pytest

from worker.consumer import JOB_NICE, job_threads


def _nice() -> int:
    return os.getpriority(os.PRIO_PROCESS, threading.get_native_id())


@pytest.mark.skipif(not hasattr(os, "getpriority"), reason="POSIX priorities")
def test_job_threads_run_at_the_job_nice_and_leave_the_others_alone() -> None:
    before = _nice()
    if before > JOB_NICE:
        pytest.skip("this process is already nicer than job threads would be")
    with job_threads(2) as executor:
        nices = {executor.submit(_nice).result() for _ in range(4)}
    assert nices == {JOB_NICE}
    assert _nice() == before  # the calling thread (where sync calls' threads come from)
