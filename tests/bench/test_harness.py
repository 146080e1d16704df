"""Unit tests of the benchmark harness pieces that need no running service."""

from __future__ import annotations

import os
import random
from pathlib import Path

import orjson
import pytest
from websockets.frames import Frame, Opcode
from websockets.streams import StreamReader

from bench.brokerstats import depths_dict, parse_list_queues, total_backlog
from bench.connections import close_all, connect_many
from bench.engine import ChatEngine
from bench.frames import encode_client_text, mask_bytes
from bench.model import Account, Conversation
from bench.procstat import Meter, parse_stat, parse_status_kb, sample
from bench.report import ResultWriter, evaluate_targets, render_summary
from bench.stats import percentile, summarize
from bench.workloads.chat import devices
from bench.workloads.w3_capacity import verdict
from tests.bench.fakegateway import FakeGateway


def test_percentiles_use_nearest_rank() -> None:
    values = list(range(1, 101))
    assert percentile(values, 50) == 50
    assert percentile(values, 99) == 99
    assert percentile(values, 100) == 100
    summary = summarize([3.0, 1.0, 2.0])
    assert summary["n"] == 3 and summary["p50"] == 2.0 and summary["max"] == 3.0


def test_empty_summary_has_nan_percentiles() -> None:
    summary = summarize([])
    assert summary["n"] == 0
    assert summary["p99"] != summary["p99"]


def _parse_frame(data: bytes) -> Frame:
    reader = StreamReader()
    reader.feed_data(data)
    parser = Frame.parse(reader.read_exact, mask=True)
    try:
        next(parser)
    except StopIteration as done:
        frame: Frame = done.value
        return frame
    raise AssertionError("incomplete frame")


@pytest.mark.parametrize("size", [0, 5, 125, 126, 1000, 70000])
def test_pre_encoded_frame_is_a_valid_masked_text_frame(size: int) -> None:
    payload = orjson.dumps({"type": "message.send", "body": "x" * size})
    frame = _parse_frame(encode_client_text(payload))
    assert frame.opcode is Opcode.TEXT
    assert frame.fin
    assert frame.data == payload


def test_masking_is_its_own_inverse() -> None:
    key = os.urandom(4)
    data = os.urandom(37)
    assert mask_bytes(mask_bytes(data, key), key) == data


def test_proc_stat_parsing_handles_spaces_in_the_command_name() -> None:
    text = "123 (my (odd) proc) S 1 2 3 4 5 6 7 8 9 10 250 50 0 0 20 0 1 0 100 0 0"
    comm, ticks = parse_stat(text)
    assert comm == "my (odd) proc"
    assert ticks == 300
    assert parse_status_kb("Name:\tx\nVmHWM:\t  2048 kB\nVmRSS:\t 1024 kB\n", "VmHWM") == 2048
    assert parse_status_kb("Name:\tkthread\n", "VmRSS") == 0


def test_meter_sees_cpu_spent_by_this_process() -> None:
    meter = Meter()
    roles = {"loader": [os.getpid()]}
    meter.start(roles)
    deadline = sum(i * i for i in range(2_000_000))
    window = meter.stop(roles)
    assert deadline > 0
    assert window.groups["loader"].cpu_ms > 0
    assert window.groups["loader"].hwm_kb >= window.groups["loader"].rss_kb > 0
    assert sample(os.getpid()) is not None
    assert "loader" in window.as_dict(10)["processes"]  # type: ignore[operator]


def test_rabbitmqctl_json_is_parsed_into_depths() -> None:
    raw = (
        b'[{"name":"chat.store.rpc","messages":12,"messages_unacknowledged":2,"consumers":1},'
        b'{"name":"idle","messages":0,"messages_unacknowledged":0,"consumers":1}]'
    )
    depths = parse_list_queues(raw)
    assert total_backlog(depths) == 12
    assert depths_dict(depths) == {"chat.store.rpc": {"messages": 12, "unacked": 2, "consumers": 1}}


def test_devices_give_each_admin_one_connection_and_users_the_rest() -> None:
    users = [Account(f"u{i}", f"u{i}", "USER", "t") for i in range(3)]
    admins = [Account("a", "a", "ADMIN", "t")]
    out = devices(users, admins, 8)
    assert len(out) == 8
    assert out.count(admins[0]) == 1
    assert sorted(out.count(u) for u in users) == [2, 2, 3]


def _population(n_users: int) -> tuple[list[Account], list[Account], list[Conversation]]:
    admins = [Account(f"admin{i}", f"admin{i}", "ADMIN", f"admin{i}") for i in range(2)]
    users = [Account(f"user{i}", f"user{i}", "USER", f"user{i}") for i in range(n_users)]
    convs = [Conversation(f"conv{i}", u, admins[i % 2]) for i, u in enumerate(users)]
    return admins, users, convs


async def test_open_loop_engine_times_acks_and_deliveries_on_both_ends() -> None:
    admins, users, convs = _population(4)
    gateway = FakeGateway({c.conversation_id: (c.user.user_id, c.admin.user_id) for c in convs})
    await gateway.start()
    try:
        connected = await connect_many(gateway.url, devices(users, admins, 10), "http://localhost:3000")
        assert not connected.failures
        engine = ChatEngine(convs, connected.clients, tag="t")
        plan = engine.plan(200.0, 0.5, random.Random(1))
        await engine.run(plan)
        assert await engine.drain(plan.step, 5.0)
        step = engine.steps[plan.step].as_dict()
        assert step["sent"] == step["planned"] == step["acked"] > 50
        assert step["delivered"] == step["expected_deliveries"] > 0
        assert step["out_of_order"] == 0 and step["lost_deliveries"] == 0
        assert step["latency_ms"]["send_to_recipient"]["n"] == step["delivered"]  # type: ignore[index]
        assert step["latency_ms"]["send_to_ack"]["p50"] >= 0  # type: ignore[index]
    finally:
        await close_all(connected.clients)
        await gateway.stop()


def test_a_step_with_a_slow_p99_does_not_hold() -> None:
    record = {
        "drained": True,
        "lost_deliveries": 0,
        "errors": {},
        "send_failed": 0,
        "rate": 100.0,
        "latency_ms": {"send_to_recipient": {"p99": 150.0}},
    }
    assert "p99" in (verdict(record, 100.0) or "")
    record["latency_ms"] = {"send_to_recipient": {"p99": 20.0}}
    assert verdict(record, 100.0) is None
    record["drained"] = False
    assert verdict(record, 100.0) is not None


def test_results_are_written_as_json_lines_summary_and_plot(tmp_path: Path) -> None:
    writer = ResultWriter(tmp_path / "run", "test")
    latency = {"n": 10, "p50": 3.0, "p95": 8.0, "p99": 20.0, "max": 30.0, "mean": 4.0}
    for wl, rate in (("W2", 200.0), ("W3", 400.0), ("W3", 800.0)):
        writer.write(
            {
                "workload": wl,
                "kind": "step",
                "rate": rate,
                "sent": 10,
                "lost_deliveries": 0,
                "errors": {},
                "latency_ms": {
                    "send_to_recipient": latency,
                    "send_to_ack": latency,
                    "send_to_event": latency,
                },
                "window": {"processes": {"gateway": {"cpu_ms_per_msg": 0.5}}},
                "held": True,
            }
        )
    writer.write({"workload": "W3", "kind": "capacity", "capacity": 800.0, "reason": "test"})
    summary, plot = writer.finish()
    lines = (writer.dir / "results.jsonl").read_bytes().splitlines()
    assert len(lines) == 4 and orjson.loads(lines[0])["workload"] == "W2"
    text = summary.read_text()
    assert "W3 capacity" in text and "800" in text
    assert plot is not None and plot.stat().st_size > 1000
    targets = {name: met for name, _, _, met in evaluate_targets(writer.records)}
    assert targets["W2 @200/s send→recipient p50"] is True
    assert targets["W3 capacity"] is False
    assert "Targets" in render_summary(writer.records)


def test_render_rebuilds_the_summary_of_an_existing_run(tmp_path: Path) -> None:
    from bench.cli import main

    run = tmp_path / "old"
    writer = ResultWriter(run, "x")
    writer.write({"workload": "W3", "kind": "capacity", "capacity": 300.0, "reason": "test"})
    assert main(["--render", str(run)]) == 0
    assert "300" in (run / "summary.md").read_text()
