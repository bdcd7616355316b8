"""Beam beyond one process: the example generator and the session sample generator run on
Beam's portable runner, against the job service Beam ships started as its own process
(`apache_beam.runners.portability.local_job_service_main`) with LOOPBACK workers, and write
exactly what the DirectRunner writes."""
from __future__ import annotations

import socket
import subprocess
import sys
import time

import pytest

from feedrank.events.simulator import ecommerce_io as EIO
from feedrank.examples.records import read_split
from feedrank.sessions import beam_samples as B
from tests.helpers import examplegen as H

DIRECT = ["--runner=DirectRunner", "--direct_running_mode=in_memory", "--direct_num_workers=1"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def job_service(tmp_path_factory):
    """Beam's local job service in its own process; yields the portable runner's options."""
    port = _free_port()
    log = open(tmp_path_factory.mktemp("jobs") / "job_service.log", "w")
    proc = subprocess.Popen([sys.executable, "-m", "apache_beam.runners.portability.local_job_service_main",
                             "--port", str(port)], stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 60
        while True:
            assert proc.poll() is None, "the job service exited"
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", port)) == 0:
                    break
            assert time.monotonic() < deadline, "the job service never listened"
            time.sleep(0.2)
        yield ["--runner=PortableRunner", f"--job_endpoint=localhost:{port}", "--environment_type=LOOPBACK"]
    finally:
        proc.terminate()
        proc.wait(30)
        log.close()
    with open(log.name) as f:
        assert "Completed job" in f.read()      # the jobs ran in that process


@pytest.mark.e2e
def test_example_generator_on_the_portable_runner_writes_what_the_direct_runner_writes(job_service, tmp_path):
    from feedrank import features as F
    from feedrank.examples import beam_pipeline

    log = H.make_log(str(tmp_path / "log"))
    outs = {}
    for name, args in (("direct", DIRECT), ("portable", job_service)):
        out, quarantine = str(tmp_path / name / "examples"), str(tmp_path / name / "quarantine")
        summary = beam_pipeline.run(log, out, quarantine, {"num_shards": 3}, args, spec=F.BUILTIN)
        outs[name] = (summary, H.by_impression(out))
    (direct, direct_ex), (portable, portable_ex) = outs["direct"], outs["portable"]
    assert len(direct_ex) > 1000 and portable_ex == direct_ex
    assert portable == direct


@pytest.mark.e2e
def test_session_samples_on_the_portable_runner_are_the_direct_runners(job_service, tmp_path):
    log = str(tmp_path / "shop")
    EIO.simulate_ecommerce(log, users=120, items=200, categories=8, days=3, seed=5)
    summaries, records = {}, {}
    for name, args in (("direct", DIRECT), ("portable", job_service)):
        out = str(tmp_path / name)
        summaries[name] = B.run(log, out, B.SampleSettings(), beam_args=args)
        records[name] = {split: sorted(read_split(out, split)) for split in ("train", "eval")}
    assert summaries["portable"] == summaries["direct"] and summaries["direct"]["samples_train"] > 0
    assert records["portable"] == records["direct"]
