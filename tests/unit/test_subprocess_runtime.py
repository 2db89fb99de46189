"""The resident-subprocess runtime against a tiny real child process (no network, no Apertium)."""

from __future__ import annotations

import os
import sys
import textwrap
import threading
from pathlib import Path

import numpy as np
import pytest
from modelyard.errors import ConfigError, UnavailableError, ValidationError
from modelyard.repository.manifest import Manifest
from modelyard.runtimes.subprocess import (
    Framing,
    LengthPrefixedFraming,
    NulFraming,
    ResidentProcess,
    SubprocessModel,
)

# The child upper-cases each request. b"CRASH" exits once (a marker file remembers), b"ALWAYS"
# exits every time, b"HANG" never answers, b"NOISE" floods stderr first, b"PID" answers its pid.
CHILD = textwrap.dedent(
    """
    import os, struct, sys, time
    mode, marker = sys.argv[1], sys.argv[2]
    inp, out = sys.stdin.buffer, sys.stdout.buffer
    def read():
        if mode == "nul":
            buf = b""
            while (c := inp.read(1)) not in (b"", b"\\0"):
                buf += c
            return buf if c else None
        head = inp.read(4)
        return inp.read(struct.unpack(">I", head)[0]) if len(head) == 4 else None
    def write(data):
        out.write(data + b"\\0" if mode == "nul" else struct.pack(">I", len(data)) + data)
        out.flush()
    while (req := read()) is not None:
        if req == b"CRASH" and not os.path.exists(marker):
            open(marker, "w").close()
            sys.exit(3)
        if req == b"ALWAYS":
            sys.exit(4)
        if req == b"HANG":
            time.sleep(3600)
        if req == b"NOISE":
            sys.stderr.write("x" * 1_000_000)
            sys.stderr.flush()
        write(str(os.getpid()).encode() if req == b"PID" else req.upper())
    """
)
PASS_THROUGH = "import os\nwhile data := os.read(0, 65536):\n    os.write(1, data)"


@pytest.fixture
def child(tmp_path: Path) -> Path:
    path = tmp_path / "child.py"
    path.write_text(CHILD)
    return path


def argv(child: Path, mode: str = "nul") -> list[str]:
    return [sys.executable, str(child), mode, str(child.with_suffix(".crashed"))]


def resident(child: Path, mode: str = "nul", **kw: float) -> ResidentProcess:
    framing: Framing = NulFraming() if mode == "nul" else LengthPrefixedFraming()
    return ResidentProcess(argv(child, mode), framing=framing, **kw)  # type: ignore[arg-type]


def gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


@pytest.mark.parametrize("mode", ["nul", "length"])
def test_round_trips(child: Path, mode: str) -> None:
    engine = resident(child, mode)
    try:
        assert engine.request(b"hello") == b"HELLO"
        assert engine.request(b"") == b""
        assert engine.request(b"x" * 100_000) == b"X" * 100_000  # larger than any pipe buffer
        assert engine.restarts == 0
    finally:
        engine.close()


def test_length_framing_carries_nul_and_nul_framing_refuses_it(child: Path) -> None:
    engine = resident(child, "length")
    try:
        assert engine.request(b"a\0b") == b"A\0B"
    finally:
        engine.close()
    with pytest.raises(ValidationError):
        NulFraming().encode(b"a\0b")


def test_crash_restarts_and_answers_the_request(child: Path) -> None:
    engine = resident(child)
    try:
        first = engine.request(b"PID")
        assert engine.request(b"CRASH") == b"CRASH"  # re-sent to the restarted engine
        assert engine.restarts == 1
        assert engine.request(b"PID") != first
        assert gone(int(first))
    finally:
        engine.close()


def test_input_that_always_crashes_gives_up_then_engine_still_works(child: Path) -> None:
    engine = resident(child, max_attempts=3, backoff_s=0.01)
    try:
        with pytest.raises(UnavailableError, match="3 times"):
            engine.request(b"ALWAYS")
        assert engine.request(b"ok") == b"OK"
        assert engine.restarts == 3
    finally:
        engine.close()


def test_timeout_kills_restarts_and_engine_still_works(child: Path) -> None:
    engine = resident(child, timeout_s=0.5)
    try:
        hung = int(engine.request(b"PID"))
        with pytest.raises(UnavailableError, match="no reply"):
            engine.request(b"HANG")
        assert gone(hung)
        assert engine.ready()
        assert engine.request(b"after") == b"AFTER"
        assert engine.restarts == 1
    finally:
        engine.close()


def test_stderr_flood_does_not_block(child: Path) -> None:
    engine = resident(child, timeout_s=10)
    try:
        assert engine.request(b"NOISE") == b"NOISE"
    finally:
        engine.close()


def test_concurrent_callers_all_answered_across_a_crash(child: Path) -> None:
    engine = resident(child)
    results: dict[tuple[int, int], bytes] = {}

    def caller(n: int) -> None:
        for i in range(25):
            payload = b"CRASH" if (n, i) == (3, 10) else f"t{n}-{i}".encode()
            results[n, i] = engine.request(payload)

    threads = [threading.Thread(target=caller, args=(n,)) for n in range(8)]
    try:
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    finally:
        engine.close()
    assert len(results) == 200
    for (n, i), reply in results.items():
        assert reply == (b"CRASH" if (n, i) == (3, 10) else f"T{n}-{i}".encode())
    assert engine.restarts == 1


def test_chain_member_killed_is_noticed_and_request_answered(child: Path) -> None:
    engine = ResidentProcess(
        argv(child), [sys.executable, "-c", PASS_THROUGH], framing=NulFraming(), timeout_s=5
    )
    try:
        assert engine.request(b"one") == b"ONE"
        pids = engine.pids
        os.kill(pids[1], 9)  # the downstream member; the first one is still alive
        assert engine.request(b"two") == b"TWO"
        assert engine.restarts == 1
        assert all(gone(p) for p in pids)
    finally:
        engine.close()


def test_close_leaves_no_process_and_refuses_requests(child: Path) -> None:
    engine = resident(child)
    engine.start()
    pids = engine.pids
    engine.close()
    assert pids
    assert all(gone(p) for p in pids)
    assert not engine.ready()
    with pytest.raises(UnavailableError, match="closed"):
        engine.request(b"late")


def test_missing_executable_is_a_config_error(tmp_path: Path) -> None:
    engine = ResidentProcess([str(tmp_path / "nope")], framing=NulFraming())
    with pytest.raises(ConfigError, match="cannot start"):
        engine.start()
    engine.close()


def manifest(parameters: dict[str, object]) -> Manifest:
    return Manifest.model_validate(
        {
            "name": "upper", "version": "1", "runtime": "subprocess",
            "inputs": [{"name": "text", "datatype": "BYTES", "shape": [-1]}],
            "outputs": [{"name": "upper", "datatype": "BYTES", "shape": [-1]}],
            "parameters": parameters,
        }
    )  # fmt: skip


def test_subprocess_model_maps_each_element(child: Path) -> None:
    command = [sys.executable, "{model_dir}/child.py", "length", "{model_dir}/crashed"]
    model = SubprocessModel(manifest({"command": command, "timeout_s": 0.5}), child.parent)
    model.load()
    try:
        texts = np.array([b"a", b"bc"], dtype=object)
        hang = np.array([b"HANG"], dtype=object)
        first, second = model.predict([{"text": texts}, {"text": hang}])
        assert isinstance(first, dict)
        assert first["upper"].tolist() == [b"A", b"BC"]
        assert isinstance(second, UnavailableError)  # that item fails, its batch mate does not
        assert model.ready()
    finally:
        model.unload()
    assert not model.ready()


def test_subprocess_model_rejects_bad_parameters(tmp_path: Path) -> None:
    model = SubprocessModel(manifest({"command": [], "framing": "xml"}), tmp_path)
    with pytest.raises(ConfigError, match="invalid subprocess parameters"):
        model.load()
