# Copyright 2026 The cosmos3_ros Authors
# SPDX-License-Identifier: Apache-2.0
"""``cosmos3-ros fleet`` for real (slow): a local Ray Serve application with 2 replicas of the tiny checkpoint on
CPU, as the sidecar's robots see it, batching across robots, and its faults (a replica and the gateway killed while
4 robots, one of them the real openpi-client, keep asking)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from fleet_util import OPENPI_ROBOT, TOKEN, FleetProcess, Robot, ask, healthz, open_ws
from sidecar_util import free_port
from sidecar_util import openpi_python as _openpi_python
from websockets.exceptions import ConnectionClosed, InvalidStatus

from cosmos3_ros.core.synthetic import moving_scene_frame
from cosmos3_ros.model.runtime import Cosmos3PolicyRuntime
from cosmos3_ros.sidecar import protocol as proto

pytestmark = pytest.mark.slow

FRAME = moving_scene_frame(0.0)
#: Four requests of different robots that may share one model call (same shapes and schedule).
ROBOTS = [("pick up the red cup", 1), ("open the drawer", 2), ("wipe the table", 3), ("stack the blocks", 4)]


@pytest.fixture(scope="session")
def openpi_python():
    """Python of a venv with the real openpi-client (sidecar_util's, created once)."""
    return _openpi_python()


@pytest.fixture(scope="module")
def fleet(tiny_model, tmp_path_factory):
    """2 replicas of the tiny checkpoint, one CPU each; batches of up to 4 within 0.3 s; 1 MiB messages."""
    try:
        import ray.serve  # noqa: F401
    except ImportError as exc:  # the fleet extra (pip install 'ray[serve]'); CI installs it
        if os.environ.get("CI"):
            pytest.fail(f"ray[serve] is not installed: {exc}")
        pytest.skip(f"ray[serve] is not installed: {exc}")
    args = ["--model", str(tiny_model), "--num-replicas", "2", "--replica-cpus", "1", "--max-batch-size", "4"]
    args += ["--batch-wait-timeout-s", "0.3", "--num-steps", "2", "--image-size", "256", "--max_message_mb", "1"]
    args += ["--request-timeout", "120"]
    process = FleetProcess(args, free_port(), tmp_path_factory.mktemp("fleet") / "fleet.log").start()
    t0 = time.monotonic()
    process.wait_healthy(running=2)
    print(f"fleet of 2 tiny replicas healthy after {time.monotonic() - t0:.1f} s")
    yield process
    rc = process.stop()
    log = process.log()
    assert rc == 0, log[-4000:]
    assert "stopping the fleet" in log and "stopped in" in log


def _pid(replica: str) -> int:
    return int(replica.rsplit(":", 1)[1])


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def test_robots_see_the_sidecar_protocol(fleet):
    status, body = healthz(fleet.port)
    assert status == 200 and body["status"] == "ok" and body["replicas"] == {"RUNNING": 2}
    # the token at the handshake, as the sidecar checks it
    for token, reason in ((None, "unauthorized: no token"), ("wrong", "unauthorized: wrong token")):
        with pytest.raises(InvalidStatus) as refused:
            open_ws(fleet.url, token)
        response = refused.value.response
        assert response.status_code == 401 and bytes(response.body).decode().startswith(reason)
    ws, meta = open_ws(fleet.url)
    with ws:
        assert (meta["protocol"], meta["server"], meta["auth"]) == (proto.PROTOCOL, "cosmos3_ros fleet", True)
        assert meta["max_message_bytes"] == 2**20 and meta["settings"]["num_steps"] == 2
        assert (meta["action_chunk_size"], meta["action_dim"], meta["model_action_dim"]) == (16, 10, 64)
        reply = ask(ws, {"observation/image": FRAME, "prompt": "pick", "observation/timestamp": 2.5})
        assert reply["action"].shape == (16, 10) and reply["action"].dtype == np.float32
        assert reply["observation/timestamp"] == 2.5 and reply["fleet"]["batch_size"] >= 1
        assert {"infer_ms", "queue_ms", "unpack_ms"} <= set(reply["server_timing"])
        # a bad request: the sidecar's error text frame, and the connection stays usable
        bad = ask(ws, {"prompt": "no image"})
        assert bad["error"]["type"] == proto.ERROR_BAD_REQUEST and "no image" in bad["error"]["message"]
        assert ask(ws, {"__ctrl__": "reset"})["__ack__"] == "reset"
        assert ask(ws, {"observation/image": FRAME})["action"].shape == (16, 10)
        ws.send(b"\x00" * (2**20 + 1))  # over max_message_mb: closed with 1009, as the sidecar does
        with pytest.raises(ConnectionClosed) as closed:
            ws.recv(timeout=30)
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 1009


def test_a_batched_call_gives_each_robot_what_it_gets_alone(fleet):
    def message(prompt: str, seed: int) -> dict:
        return {"observation/image": FRAME, "prompt": prompt, "settings": {"seed": seed}}

    connections = [open_ws(fleet.url)[0] for _ in ROBOTS]
    try:
        for _ in range(5):  # 4 robots at once: the batch wait (0.3 s) gathers them on the replicas
            replies: list[dict] = [{}] * len(ROBOTS)
            barrier = threading.Barrier(len(ROBOTS))

            def one(k: int, barrier: threading.Barrier, replies: list[dict]) -> None:
                barrier.wait()
                replies[k] = ask(connections[k], message(*ROBOTS[k]))

            threads = [threading.Thread(target=one, args=(k, barrier, replies)) for k in range(len(ROBOTS))]
            for t in threads:
                t.start()
            for t in threads:
                t.join(120)
            if max(r["fleet"]["batch_size"] for r in replies) >= 2:
                break
        together = [r for r in replies if r["fleet"]["batch_size"] >= 2]
        assert together, [r["fleet"] for r in replies]
        # one batched model call where the runtime has one (else the batch runs one call after the other)
        assert all(r["fleet"]["batched"] is hasattr(Cosmos3PolicyRuntime, "policy_batch") for r in together)
        for k, reply in enumerate(replies):  # the same request alone (the only one in flight: a batch of 1)
            single = ask(connections[k], message(*ROBOTS[k]))
            assert single["fleet"]["batch_size"] == 1
            np.testing.assert_array_equal(reply["action"], single["action"])
        assert len({r["action"].tobytes() for r in replies}) == len(ROBOTS)  # each robot its own chunk
    finally:
        for ws in connections:
            ws.close()


def test_killed_replica_and_gateway_lose_no_robot(fleet, openpi_python, tmp_path):
    frame_path, stop_path = tmp_path / "frame.npy", tmp_path / "stop"
    np.save(frame_path, FRAME)
    (tmp_path / "robot.py").write_text(OPENPI_ROBOT)
    openpi = subprocess.Popen(
        [str(openpi_python), str(tmp_path / "robot.py"), str(fleet.port), TOKEN, str(frame_path), str(stop_path)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    stop, pause = threading.Event(), threading.Event()
    kinds = ("raw", "backend", "backend")
    robots = [Robot(f"robot{k}", fleet.url, FRAME, kind, stop, pause) for k, kind in enumerate(kinds)]
    for robot in robots:
        robot.start()
    raw = robots[0]
    try:
        # Which replica a request meets is Ray's routing; a burst of concurrent requests meets both.
        first: set[str] = set()
        _wait_for(lambda: len(first.update(_burst(fleet.url)) or first) == 2, 90, "both replicas serving")
        # Mid-request, for certain: a long request (200 steps) runs on one replica; the replica whose CPU time grows
        # is the one running it. The robots pause meanwhile (the openpi robot goes on).
        pause.set()
        _wait_for(lambda: all(r.idle for r in robots), 60, "robots paused")
        slow, _ = open_ws(fleet.url)
        settings = {"num_steps": 200, "shift": 5.0, "image_size": 480, "seed": 7}
        slow.send(proto.packb({"observation/image": FRAME, "prompt": "a long one", "settings": settings}))
        time.sleep(0.5)
        before = {r: _cpu_s(_pid(r)) for r in first}
        time.sleep(0.5)
        grown = {r: _cpu_s(_pid(r)) - before[r] for r in first}
        victim = max(grown, key=grown.get)
        assert grown[victim] > 0.2 and grown[victim] > 2 * min(grown.values()), grown
        os.kill(_pid(victim), signal.SIGKILL)
        t_kill = time.monotonic()
        reply = proto.parse_error_frame(slow.recv(timeout=30))
        assert reply is not None and reply["error"]["type"] == proto.ERROR_MODEL, reply
        assert "the model replica serving this request failed" in reply["error"]["message"]
        print(f"replica {victim} killed mid-request: error answered after {time.monotonic() - t_kill:.2f} s")
        slow.close()
        pause.clear()
        # Ray Serve replaces it (a new process, warmed up before it takes a request)
        t_kill = time.monotonic()
        seen: set[str] = set()
        _wait_for(lambda: seen.update(_burst(fleet.url)) or seen - first, 120, "a new replica serving")
        print(f"replica {victim} killed: a new one served after {time.monotonic() - t_kill:.1f} s")
        # the gateway too: every robot's connection is lost; each connects again and goes on
        gateway = healthz(fleet.port)[1]["gateway"]
        killed_gateway_at = time.time()
        os.kill(_pid(gateway), signal.SIGKILL)
        answered = [len(r.answers) for r in robots]
        t_kill = time.monotonic()
        _wait_for(lambda: all(len(r.answers) > n for r, n in zip(robots, answered, strict=True)), 90, "robots back")
        print(f"gateway {gateway} killed: every robot answered again after {time.monotonic() - t_kill:.1f} s")
        time.sleep(2.0)
    finally:
        stop.set()
        stop_path.touch()
        for robot in robots:
            robot.join(90)
        out, err = openpi.communicate(timeout=120)
    assert openpi.returncode == 0, err[-3000:]
    result = json.loads(out.strip().splitlines()[-1])
    for robot in robots:
        assert not robot.is_alive() and robot.failure is None, (robot.name, robot.failure)
        assert robot.longest_s < 70  # an error or an answer, never a hang
    assert result["longest_s"] < 70 and result["reconnects"] >= 1, result
    assert result["answers"] and max(result["answers"]) > killed_gateway_at, result  # the openpi robot went on
    assert raw.reconnects >= 1 and all(r.answers for r in robots)
    errors = [e for r in robots for e in r.errors] + result["errors"]
    expected = ("model replica", "connection", "cannot connect", "unreachable")
    assert all(any(text in e for text in expected) for e in errors), errors
    # no request was served by a replica before its warm-up ended (the replacement included)
    assert all(a["started_at"] >= a["warmed_at"] for a in raw.answers)
    assert not _alive(_pid(victim))
    status, body = healthz(fleet.port)
    assert status == 200 and body["replicas"].get("RUNNING") == 2, body


def _burst(url: str, n: int = 6) -> set[str]:
    """The replicas that answer ``n`` requests sent at once on ``n`` connections."""
    conns = [open_ws(url)[0] for _ in range(n)]
    try:
        settings = {"num_steps": 2, "image_size": 256}
        for k, ws in enumerate(conns):
            ws.send(proto.packb({"observation/image": FRAME, "prompt": f"burst {k}", "settings": settings}))
        replies = [ws.recv(timeout=60) for ws in conns]
    finally:
        for ws in conns:
            ws.close()
    answers = [proto.unpackb(r)["fleet"] for r in replies if not isinstance(r, str)]
    assert all(a["started_at"] >= a["warmed_at"] for a in answers)  # never served before its warm-up ended
    return {a["replica"] for a in answers}


def _cpu_s(pid: int) -> float:
    """CPU seconds (user + system) a process has used so far (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _wait_for(predicate, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            pytest.fail(f"{what}: not within {timeout} s")
        time.sleep(0.1)
