"""Takes the README's dashboard screenshots from a real run.

Starts ``livt serve`` on a temporary data directory, runs a small Fashion-MNIST-LT pipeline
(pretrain → fine-tune with Bal-BCE → evaluate) plus a cross-entropy fine-tune from the same
pretrained model, and photographs the job list, the job page and the compare view with headless
Chromium. Run from the repository root (a few minutes on a laptop CPU):

    python -m scripts.screenshots --out docs/screenshots
"""

from __future__ import annotations

import argparse
import logging
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
    return parser.parse_args()


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


if __name__ == "__main__":
    main()
