"""Scale-out on a real NATS JetStream server (Debian's nats-server): one intake and worker
processes on one shared inbox, each with its own state directory, as on several hosts.

- 50 mixed files -> 50 outputs, each exactly once; the messages hold no name or path
- a worker killed (-9) mid-video -> another finishes it, one output, no partial file
- a worker stalled past AckWait comes back after another committed -> no second output
- the server stopped for 30 s mid-run -> intake keeps claiming, workers reconnect, nothing lost
- a file whose workers die every time -> failed/ with reason max_deliveries
"""

from __future__ import annotations

import json
import os
import signal
import time

import pytest

from cluster_harness import NATS_SERVER, NatsServer, cluster_section, tiny_video
from service_harness import Anond, files_under, hidden_files_under, noise_jpeg, wait_for, write_config

pytestmark = pytest.mark.skipif(NATS_SERVER is None, reason="Debian's nats-server is not installed "
                                "(packaging/setup-system.sh installs it)")


@pytest.fixture
def nats_server(tmp_path):
    server = NatsServer(tmp_path / "nats").start()
    yield server
    server.stop()


class Cluster:
    """Service processes sharing one inbox/outbox/failed folder, one state_dir each."""

    def __init__(self, tmp, models_dir, server) -> None:
        self.tmp, self.models_dir, self.server = tmp, models_dir, server
        self.inbox, self.outbox, self.failed = (tmp / n for n in ("inbox", "outbox", "failed"))
        self.inbox.mkdir()
        self.procs: list[Anond] = []

    def start(self, role: str, name: str, **cluster) -> Anond:
        state = self.tmp / f"state-{name}"
        config = write_config(
            self.tmp / f"{name}.toml", models_dir=self.models_dir,
            service={"state_dir": str(state), "failed_dir": str(self.failed), "stable_after_s": 0.3,
                     "retry_backoff_s": 0.5},
            inboxes=[{"name": "shared", "path": str(self.inbox), "outbox": str(self.outbox)}],
            sections={"cluster": cluster_section(self.server, role, ack_wait_s=4.0, **cluster)})
        svc = Anond(self.tmp, config, logdir=self.tmp).start()
        svc.name = name
        self.procs.append(svc)
        svc.wait_ready()
        svc.wait_event("cluster.connected", 30)
        return svc

    def outputs(self) -> list[str]:
        return files_under(self.outbox) if self.outbox.exists() else []

    def close(self) -> None:
        for svc in self.procs:
            svc.kill()


@pytest.fixture
def cluster(tmp_path, models_dir, nats_server):
    c = Cluster(tmp_path, models_dir, nats_server)
    yield c
    c.close()


def _completed(procs) -> list[str]:
    return [e["job"] for p in procs for e in p.events("job.completed")]


def test_fifty_files_two_workers_one_intake_each_output_exactly_once(cluster):
    intake = cluster.start("intake", "intake")
    workers = [cluster.start("worker", f"w{i}") for i in range(2)]
    names = []
    for i in range(45):
        (cluster.inbox / f"Jane_Doe_{i:02d}.jpg").write_bytes(noise_jpeg(100 + i))
        names.append(f"Jane_Doe_{i:02d}.jpg")
    for i in range(5):
        tiny_video(cluster.inbox / f"Jane_Doe_clip{i}.mp4", seed=i)
        names.append(f"Jane_Doe_clip{i}.mp4")
    wait_for(lambda: len(cluster.outputs()) >= 50, 180, "50 outputs", intake)
    time.sleep(2.0)  # anything late (a second output) would show now
    assert cluster.outputs() == sorted(names)
    assert hidden_files_under(cluster.outbox) == []
    done = _completed(workers)
    assert len(done) == 50 and len(set(done)) == 50
    assert all(_completed([w]) for w in workers)  # both workers took part
    published = intake.events("cluster.published")
    assert len(published) == 50
    logs = "".join(p.stderr() + p.stdout() for p in [intake, *workers])
    assert "Jane_Doe" not in logs
    # The global view: the stream drained, both workers heard from (heartbeats every 5 s).
    import subprocess
    import sys

    def status():
        out = subprocess.run([sys.executable, "-m", "anond.cli", "status", "--json", "--config",
                              str(cluster.tmp / "intake.toml")], capture_output=True, text=True,
                             cwd=cluster.tmp, timeout=60)
        return json.loads(out.stdout)["cluster"]
    view = wait_for(lambda: (lambda v: v if len(v.get("workers", {})) == 2 else None)(status()),
                    30, "both workers in anond status", intake, every=1.0)
    assert view["queued"] == 0 and view["in_flight"] == 0
    assert all(w["role"] == "worker" and w["slots"] == 1 for w in view["workers"].values())


def test_a_worker_killed_mid_video_is_replaced_one_output_no_partial_file(cluster):
    cluster.start("intake", "intake")
    first = cluster.start("worker", "w1")
    tiny_video(cluster.inbox / "long.mp4", seed=9, frames=400, size=320)
    (started,) = first.wait_event("job.started", 60)
    time.sleep(1.0)
    first.kill()  # SIGKILL mid-video
    second = cluster.start("worker", "w2")
    wait_for(lambda: second.events("job.completed"), 120, "the other worker finishes it", second)
    time.sleep(1.0)
    assert cluster.outputs() == ["long.mp4"]
    assert hidden_files_under(cluster.outbox) == []  # the killed worker's temporary is gone
    (delivered,) = [e for e in second.events("cluster.delivered") if e["job"] == started["job"]]
    assert delivered["attempt"] == 2


def test_a_stalled_worker_coming_back_after_a_redelivery_commits_nothing(cluster):
    cluster.start("intake", "intake")
    slow = cluster.start("worker", "w1")
    tiny_video(cluster.inbox / "clip.mp4", seed=4, frames=150, size=320)
    slow.wait_event("job.started", 60)
    os.kill(slow.proc.pid, signal.SIGSTOP)  # stalls past AckWait (4 s): no progress acks
    try:
        other = cluster.start("worker", "w2")
        wait_for(lambda: other.events("job.completed"), 120, "the redelivered job done", other)
    finally:
        os.kill(slow.proc.pid, signal.SIGCONT)
    wait_for(lambda: slow.events("job.lost_claim") or slow.events("job.commit_busy")
             or slow.events("job.completed"), 120, "the stalled worker's attempt to end", slow)
    time.sleep(2.0)
    assert cluster.outputs() == ["clip.mp4"]
    assert slow.events("job.completed") == []
    assert hidden_files_under(cluster.outbox) == []


def test_nats_away_for_30_s_intake_keeps_claiming_and_nothing_is_lost(cluster, nats_server):
    intake = cluster.start("intake", "intake")
    worker = cluster.start("worker", "w1")
    for i in range(5):
        (cluster.inbox / f"a{i}.jpg").write_bytes(noise_jpeg(i))
    wait_for(lambda: len(cluster.outputs()) == 5, 60, "the first 5", worker)
    nats_server.stop()
    for i in range(5):
        (cluster.inbox / f"b{i}.jpg").write_bytes(noise_jpeg(50 + i))
    wait_for(lambda: len(intake.events("job.queued")) == 10, 30, "intake claims while away", intake)
    time.sleep(28)
    assert not any(cluster.inbox.glob("b*.jpg"))  # claimed, not left waiting
    nats_server.start()
    wait_for(lambda: len(cluster.outputs()) == 10, 90, "all 10 after the server is back", worker)
    assert sorted(cluster.outputs()) == sorted([f"a{i}.jpg" for i in range(5)] + [f"b{i}.jpg" for i in range(5)])
    assert intake.events("cluster.disconnected") and worker.events("cluster.reconnected")


def test_a_file_that_kills_its_workers_goes_to_failed_after_max_deliver(cluster):
    cluster.start("intake", "intake", max_deliver=2)
    tiny_video(cluster.inbox / "poison.mp4", seed=5, frames=300, size=320)
    job = None
    for attempt in range(2):  # each worker dies on it (as on a decoder crash)
        worker = cluster.start("worker", f"w{attempt}", max_deliver=2)
        (started,) = worker.wait_event("job.started", 60)
        job = job or started["job"]
        worker.kill()
    last = cluster.start("worker", "w-last", max_deliver=2)
    wait_for(lambda: (cluster.failed / f"{job}.reason.json").exists(), 60, "quarantined", last)
    reason = json.loads((cluster.failed / f"{job}.reason.json").read_text())
    assert reason["code"] == "max_deliveries"
    assert (cluster.failed / job / "poison.mp4").exists() and cluster.outputs() == []
