"""Takes the README's dashboard screenshots from a real run.

Starts ``livt serve`` on a temporary data directory, runs a small Fashion-MNIST-LT pipeline
(pretrain → fine-tune with Bal-BCE → evaluate) plus a cross-entropy fine-tune from the same
pretrained model, and photographs the job list, the job page and the compare view with headless
Chromium. Run from the repository root (a few minutes on a laptop CPU):

    python -m scripts.screenshots --out docs/screenshots --transcript docs/screenshots/cli.txt

``--transcript`` also records the client commands the README quotes (``livt results``, ``jobs``,
``wait``, a rejected ``submit`` and a call without a token), run against the same server.
"""

from __future__ import annotations

import argparse
import logging
import os
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from livt.client import LivtClient
from tests.live_server import CHROMIUM, LiveServer, launch_chromium

logger = logging.getLogger("screenshots")

VIEWPORT = {"width": 1360, "height": 860}


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=Path("docs/screenshots"))
    parser.add_argument("--pretrain-epochs", type=int, default=10)
    parser.add_argument("--finetune-epochs", type=int, default=20)
    parser.add_argument(
        "--steps", type=int, default=0, help="max steps per epoch (0: whole epochs)"
    )
    parser.add_argument(
        "--transcript", type=Path, default=None, help="write the client commands' output here"
    )
    return parser.parse_args()


def livt_command(url: str, token: str | None) -> tuple[list[str], dict[str, str]]:
    """The ``livt`` client of this interpreter and an environment pointing it at the server."""
    env = {k: v for k, v in os.environ.items() if k not in ("LIVT_URL", "LIVT_TOKEN")}
    env.update(LIVT_URL=url, COLUMNS="200")
    if token is not None:
        env["LIVT_TOKEN"] = token
    script = Path(sys.executable).with_name("livt")  # the console script of this environment
    return ([str(script)] if script.is_file() else [sys.executable, "-m", "livt.cli"]), env


def transcript_entry(argv: list[str], output: str, status: int, note: str = "") -> str:
    head = "$ livt " + shlex.join(argv)
    if note:
        head = f"{head:<38} # {note}"
    tail = "" if status == 0 else f"(exit status {status})\n"
    return f"{head}\n{output.rstrip()}\n{tail}\n"


def run_client(
    url: str, token: str | None, argv: list[str], note: str = "", cwd: Path | None = None
) -> str:
    base, env = livt_command(url, token)
    proc = subprocess.run(
        [*base, *argv], env=env, cwd=cwd, capture_output=True, text=True, timeout=120, check=False
    )
    return transcript_entry(argv, proc.stdout + proc.stderr, proc.returncode, note)


def submit_jobs(client: LivtClient, args: argparse.Namespace) -> dict[str, str]:
    common = {"preset": "fashion-mnist-lt", "max_steps_per_epoch": args.steps or None}
    pipeline = client.submit_pipeline(
        [
            {
                **common,
                "kind": "pretrain",
                "name": "fmnist-mgp",
                "epochs": args.pretrain_epochs,
                "warmup_epochs": 1,
            },
            {
                **common,
                "kind": "finetune",
                "name": "fmnist-bft-bal-bce",
                "loss": "bal_bce",
                "epochs": args.finetune_epochs,
                "warmup_epochs": 1,
            },
            {"kind": "evaluate", "preset": "fashion-mnist-lt", "name": "fmnist-eval"},
        ],
        name="fashion-mnist-lt demo",
    )
    pretrain, bal_bce, evaluate = (j.id for j in pipeline.jobs)
    logger.info("pipeline %s: %s → %s → %s", pipeline.id, pretrain, bal_bce, evaluate)
    # a finetune may start only from a succeeded pretrain job
    if client.wait(pretrain, poll=2).status != "succeeded":
        raise SystemExit(f"the pretrain job {pretrain} did not succeed")
    ce = client.submit(
        {
            **common,
            "kind": "finetune",
            "name": "fmnist-bft-ce",
            "loss": "ce",
            "init": {"job": pretrain},
            "epochs": args.finetune_epochs,
            "warmup_epochs": 1,
        }
    )
    return {"pretrain": pretrain, "bal_bce": bal_bce, "evaluate": evaluate, "ce": ce.id}


def wait_running(client: LivtClient, job_id: str, min_epoch: int = 1) -> None:
    while True:
        job = client.job(job_id)
        if job.finished or (job.progress and (job.progress.epoch or 0) >= min_epoch):
            return
        time.sleep(1)


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    args = parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    from playwright.sync_api import sync_playwright

    with tempfile.TemporaryDirectory() as tmp, LiveServer.start(Path(tmp) / "data") as server:
        token = server.create_token("demo")
        client = LivtClient(server.url, token)
        ids = submit_jobs(client, args)
        stopped = client.submit(
            {
                "kind": "finetune",
                "preset": "fashion-mnist-lt",
                "name": "fmnist-bal-ce-trial",
                "loss": "bal_ce",
                "epochs": 30,
            }
        )
        client.cancel(stopped.id)
        waiter = None
        if args.transcript:
            base, env = livt_command(server.url, token)
            waiter = subprocess.Popen(
                [*base, "wait", ids["ce"]],
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
            )

        with sync_playwright() as playwright:
            if not CHROMIUM.exists():
                raise SystemExit(f"Chromium is missing at {CHROMIUM}")
            context = launch_chromium(playwright, Path(tmp) / "profile", viewport=VIEWPORT)
            page = context.new_page()
            page.goto(f"{server.url}/?token={token}#/jobs")

            wait_running(client, ids["bal_bce"], min_epoch=2)
            page.wait_for_timeout(2500)
            # down to the end of the content, without the empty page below it
            bottom = page.evaluate("document.querySelector('main').getBoundingClientRect().bottom")
            clip = {
                "x": 0,
                "y": 0,
                "width": VIEWPORT["width"],
                "height": min(bottom, VIEWPORT["height"]),
            }
            page.screenshot(path=str(args.out / "jobs.png"), clip=clip)
            logger.info("jobs.png")

            for key in ("bal_bce", "ce", "evaluate"):
                client.wait(ids[key], poll=2)
            page.goto(f"{server.url}/#/jobs/{ids['bal_bce']}")
            page.locator("#chart-per-class circle.scatter-dot").first.wait_for()
            page.wait_for_timeout(1500)
            page.screenshot(path=str(args.out / "job.png"), full_page=True)
            logger.info("job.png")

            page.goto(f"{server.url}/#/compare?ids={ids['ce']},{ids['bal_bce']}")
            page.locator("#chart-compare rect.bar").first.wait_for()
            page.wait_for_timeout(800)
            page.screenshot(path=str(args.out / "compare.png"), full_page=True)
            logger.info("compare.png")

            context.close()
        client.close()
        if args.transcript and waiter is not None:
            waited = waiter.communicate(timeout=600)[0]
            spec = Path(tmp) / "finetune.yaml"
            spec.write_text(
                "kind: finetune\npreset: fashion-mnist-lt\nloss: focal\nepochs: 0\n",
                encoding="utf-8",
            )
            entries = [
                run_client(server.url, token, ["results", ids["bal_bce"], "--per-class"]),
                run_client(server.url, token, ["jobs"]),
                transcript_entry(["wait", ids["ce"]], waited, waiter.returncode),
                run_client(
                    server.url, token, ["submit", spec.name], "epochs: 0, loss: focal", spec.parent
                ),
                run_client(server.url, None, ["jobs"], "no token"),
            ]
            args.transcript.write_text("".join(entries), encoding="utf-8")
            logger.info("%s", args.transcript)


if __name__ == "__main__":
    main()
