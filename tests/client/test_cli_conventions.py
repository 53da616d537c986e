"""CLI conventions against a real ``livt serve``: ``--output table|json`` and ``-q`` on every
client command, ``download``, ``datasets``, ``pipeline``, shell completion, a closed pipe and the
tqdm bar of ``livt wait`` on a terminal."""

from __future__ import annotations

import fcntl
import json
import os
import pty
import re
import shutil
import struct
import subprocess
import sys
import termios
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from livt.cli import build_parser, main
from livt.completion import script
from tests.live_server import TINY_FINETUNE, LiveServer, server_env

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    with LiveServer.start(tmp_path_factory.mktemp("livt-cli-conv")) as live:
        yield live


@pytest.fixture(scope="module")
def sub_env(server: LiveServer) -> dict[str, str]:
    env = {**server_env(server.data_dir), "LIVT_URL": server.url}
    env["LIVT_TOKEN"] = server.create_token("dora")
    env["PYTHONPATH"] = str(ROOT)
    return env


@pytest.fixture
def env(server: LiveServer, sub_env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LIVT_URL", server.url)
    monkeypatch.setenv("LIVT_TOKEN", sub_env["LIVT_TOKEN"])


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture(scope="module")
def spec_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("conv-specs") / "tiny.yaml"
    path.write_text(yaml.safe_dump({**TINY_FINETUNE, "name": "conv-tiny"}))
    return path


@pytest.fixture(scope="module")
def finished(sub_env: dict[str, str], spec_file: Path) -> str:
    """``livt submit --wait -q`` in a subprocess: stdout is the job id alone."""
    done = subprocess.run(
        [sys.executable, "-m", "livt.cli", "submit", str(spec_file), "--wait", "-q"],
        env=sub_env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, (done.stdout, done.stderr)
    assert re.fullmatch(r"j_\S+\n", done.stdout), done.stdout
    return done.stdout.strip()


def test_json_and_quiet_on_job_commands(env, finished: str, capsys) -> None:
    code, out, _ = run(capsys, "jobs", "--output", "json")
    assert code == 0 and finished in [j["id"] for j in json.loads(out)["items"]]
    code, out, _ = run(capsys, "jobs", "-q", "--status", "succeeded")
    assert code == 0 and finished in out.split() and all(x.startswith("j_") for x in out.split())
    code, out, _ = run(capsys, "show", finished, "--output", "json")
    job = json.loads(out)
    assert (job["id"], job["status"], job["result"]["per_class"][0]["class"]) == (
        finished,
        "succeeded",
        0,
    )
    assert run(capsys, "show", finished, "-q")[1] == f"{finished}\n"
    code, out, _ = run(capsys, "results", finished, "--json")  # --json: --output json
    assert code == 0 and len(json.loads(out)["per_class"]) == 10
    code, out, _ = run(capsys, "wait", finished, "--output", "json")
    assert code == 0 and json.loads(out)["status"] == "succeeded"
    assert run(capsys, "wait", finished, "-q")[1] == f"{finished}\n"
    code, out, _ = run(capsys, "logs", finished, "--output", "json")
    lines = [json.loads(x) for x in out.splitlines()]  # JSON Lines
    assert lines and {"seq", "message", "level", "ts"} <= set(lines[0])
    code, out, _ = run(capsys, "logs", finished, "-q")
    assert out.splitlines() == [x["message"] for x in lines]


def test_output_flags_are_exclusive_and_checked(env, capsys) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["jobs", "--output", "yaml"])
    assert exc.value.code == 2 and "invalid choice: 'yaml'" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["jobs", "--output", "json", "-q"])
    assert "not allowed with argument" in capsys.readouterr().err


def test_every_client_command_has_the_output_options() -> None:
    parser = build_parser(("livt.client_cli",))
    sub = parser._subparsers._group_actions[0]  # noqa: SLF001
    leaves = []
    for name, p in sub.choices.items():
        nested = [a for a in p._actions if hasattr(a, "choices") and isinstance(a.choices, dict)]
        leaves += [(f"{name} {n}", c) for a in nested for n, c in a.choices.items()] or [(name, p)]
    for name, p in leaves:
        options = {o for a in p._actions for o in a.option_strings}
        assert {"--output", "-q", "--json"} <= options, name


def test_download_all_one_and_unknown(env, finished: str, tmp_path: Path, capsys) -> None:
    code, out, _ = run(capsys, "download", finished, "-d", str(tmp_path), "--output", "json")
    saved = json.loads(out)
    assert code == 0 and "checkpoint-best.pth" in {s["name"] for s in saved}
    for s in saved:
        assert Path(s["path"]).stat().st_size == s["size_bytes"] > 0
    one = tmp_path / "one"
    one.mkdir()
    code, out, _ = run(capsys, "download", finished, "checkpoint-best.pth", "-d", str(one), "-q")
    assert code == 0 and out == f"{one / 'checkpoint-best.pth'}\n"
    assert [p.name for p in one.iterdir()] == ["checkpoint-best.pth"]
    code, _, err = run(capsys, "download", finished, "nope.bin", "-d", str(one))
    assert code == 1 and "has no artifact nope.bin (it has: " in err and "checkpoint-best" in err


def test_datasets_register_list_show(env, capsys) -> None:
    code, out, _ = run(
        capsys,
        *("datasets", "register", "conv-g10", "--kind", "fashion-mnist-lt"),
        *("--param", "imbalance_factor=10", "--param", "n_max=200"),
    )
    assert code == 0 and re.match(r"registered conv-g10 \(fashion-mnist-lt, \d+ training", out)
    code, out, _ = run(capsys, "datasets", "list")
    assert code == 0 and re.search(r"^conv-g10\s+fashion-mnist-lt\s+\(bundled\)\s+10\s", out, re.M)
    assert "conv-g10" in run(capsys, "datasets", "list", "-q")[1].split()
    code, out, _ = run(capsys, "datasets", "show", "conv-g10")
    assert code == 0 and re.search(r"^\s*0\s+\S.*\s200\s+many$", out, re.M), out
    data = json.loads(run(capsys, "datasets", "show", "conv-g10", "--output", "json")[1])
    assert data["class_counts"][0] == 200 and data["class_counts"][-1] == 20
    code, _, err = run(capsys, "datasets", "show", "missing")
    assert code == 1 and "no dataset 'missing' (known: " in err and "conv-g10" in err
    code, _, err = run(
        capsys, "datasets", "register", "bad", "--kind", "imagefolder", "--root", "/etc"
    )
    assert code == 2 and re.search(r"^  root: ", err, re.M), err


def test_pipeline_submit_show(env, tmp_path: Path, capsys) -> None:
    stages = [
        {**TINY_FINETUNE, "kind": "pretrain", "epochs": 40},
        {**TINY_FINETUNE},
    ]
    del stages[0]["warmup_epochs"]
    spec = tmp_path / "pipe.yaml"
    spec.write_text(yaml.safe_dump({"name": "conv-pipe", "stages": stages}))
    code, out, _ = run(capsys, "pipeline", "submit", str(spec), "--output", "json")
    assert code == 0, out
    pipeline = json.loads(out)
    first, second = (j["id"] for j in pipeline["jobs"])
    try:
        code, out, _ = run(capsys, "pipeline", "show", pipeline["id"])
        assert code == 0 and out.startswith(f"pipeline {pipeline['id']}  conv-pipe\n")
        assert re.search(rf"^\s*1\s+{second}\s+finetune\s+queued", out, re.M), out
        assert run(capsys, "pipeline", "show", pipeline["id"], "-q")[1].split() == [first, second]
    finally:
        run(capsys, "cancel", first, "-q")
    assert run(capsys, "wait", second, "-q", "--poll", "0.3")[0] == 3  # cancelled with its parent
    single = tmp_path / "single.yaml"
    single.write_text(yaml.safe_dump(TINY_FINETUNE))
    code, _, err = run(capsys, "pipeline", "submit", str(single))
    assert code == 2 and "has no `stages` list" in err


def test_closed_pipe_exits_quietly(sub_env: dict[str, str], finished: str) -> None:
    # the reader is gone before the command writes: every write fails with EPIPE
    proc = subprocess.Popen(
        [sys.executable, "-m", "livt.cli", "jobs", "--output", "json"],
        env=sub_env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    proc.stdout.close()
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 141 and err == b"", err.decode()
    # and as a shell pipeline: `livt logs --output json | head -1`, many lines into a short read
    cmd = f"{shlex_join([sys.executable, '-m', 'livt.cli', 'logs', finished, '--json'])} | head -1"
    done = subprocess.run(
        ["bash", "-o", "pipefail", "-c", cmd], env=sub_env, capture_output=True, timeout=60
    )
    assert done.stderr == b"", done.stderr.decode()
    assert json.loads(done.stdout)["seq"] == 0
    assert done.returncode in (0, 141)  # 141 when the pipe closed before the last write


def shlex_join(argv: list[str]) -> str:
    import shlex

    return shlex.join(argv)


def test_wait_draws_a_tqdm_bar_on_a_terminal(sub_env: dict[str, str], finished: str) -> None:
    leader, follower = pty.openpty()
    fcntl.ioctl(follower, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 160, 0, 0))
    try:
        done = subprocess.run(
            [sys.executable, "-m", "livt.cli", "wait", finished],
            env=sub_env,
            stdout=subprocess.PIPE,
            stderr=follower,
            timeout=60,
        )
        os.close(follower)
        follower = -1
        chunks = []
        while True:
            try:
                chunk = os.read(leader, 65536)
            except OSError:
                break
            if not chunk:
                break
            chunks.append(chunk)
    finally:
        os.close(leader)
        if follower >= 0:
            os.close(follower)
    bar = b"".join(chunks).decode()
    assert done.returncode == 0 and f"{finished} succeeded" in done.stdout.decode()
    # tqdm's own format: "<desc>: 100%|█████| 6/6 [00:00<00:00, ...step/s, succeeded, ...]"
    assert re.search(rf"{finished}: 100%\|.+\| 6/6 \[.*step/s, succeeded, epoch 2/2", bar), bar


def test_completion_scripts(tmp_path: Path, capsys) -> None:
    bash_script = tmp_path / "livt.bash"
    bash_script.write_text(script(build_parser(), "bash"))
    probe = (
        f"source {bash_script}\n"
        'for line in "livt jo" "livt datasets " "livt jobs --output " "livt pipeline s" '
        '"livt jobs --st" "livt train f"; do\n'
        '  read -ra COMP_WORDS <<< "$line"; [[ "$line" == *" " ]] && COMP_WORDS+=("")\n'
        "  COMP_CWORD=$((${#COMP_WORDS[@]} - 1)); _livt_complete\n"
        '  echo "${COMPREPLY[*]}"\n'
        "done\n"
    )
    done = subprocess.run(["bash", "-c", probe], capture_output=True, text=True, timeout=30)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == [
        "jobs",
        "list register show --help -h",
        "table json",
        "show submit",
        "--status",
        "finetune",
    ]
    assert main(["completion", "zsh"]) == 0
    zsh = capsys.readouterr().out
    assert zsh.startswith("#compdef livt\n") and "bashcompinit" in zsh
    assert "complete -o default -F _livt_complete livt" in zsh
    if shutil.which("zsh"):
        check = subprocess.run(["zsh", "-n"], input=zsh, text=True, capture_output=True)
        assert check.returncode == 0, check.stderr


def test_webhooks_commands_and_a_delivery_from_a_real_job(env, spec_file: Path, capsys) -> None:
    import time

    from api.webhooks import signature
    from tests.api.test_webhooks import Receiver

    receiver = Receiver([200])
    try:
        code, out, _ = run(capsys, "webhooks", "create", receiver.url, "--output", "json")
        hook = json.loads(out)
        assert code == 0 and len(hook["secret"]) == 64
        assert run(capsys, "webhooks", "list", "-q")[1].split() == [hook["id"]]
        code, out, _ = run(capsys, "submit", str(spec_file), "--wait", "-q")
        assert code == 0
        job_id = out.strip()
        deadline = time.monotonic() + 60
        while True:  # the server's dispatcher polls every 2 s
            code, out, _ = run(capsys, "webhooks", "deliveries", hook["id"], "--json")
            items = json.loads(out)
            if items and items[0]["status"] == "delivered":
                break
            assert time.monotonic() < deadline, items
            time.sleep(0.5)
        assert [d["job_id"] for d in items] == [job_id]
        ((headers, body),) = receiver.requests
        assert headers["X-Livt-Signature"] == signature(
            hook["secret"], headers["X-Livt-Timestamp"], body
        )
        assert json.loads(body)["result"]["overall"] is not None
        code, out, _ = run(capsys, "webhooks", "deliveries", hook["id"])
        assert re.search(rf"^\s*\d+\s+{job_id}\s+job\.succeeded\s+delivered\s+1\s+200\b", out, re.M)
        assert run(capsys, "webhooks", "delete", hook["id"])[1] == f"deleted {hook['id']}\n"
        assert run(capsys, "webhooks", "list")[1].startswith("no webhooks")
    finally:
        receiver.close()
