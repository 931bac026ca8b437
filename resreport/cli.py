"""Parse the command line and call the pipeline; map errors to exit status 1 (run) or 2 (usage/config)."""
from __future__ import annotations

import argparse
import logging
import os
import shutil
import sys
from pathlib import Path

from resreport.config import ConfigError, load_config
from resreport.store import ResultsMissing

log = logging.getLogger("resreport")

DEFAULT_CONFIG = Path("report/report.toml")
DATA_ENV = "RESREPORT_DATA"
EXIT_FAILED, EXIT_USAGE = 1, 2


def main(argv: list[str] | None = None) -> int:
    """Run one command; return its exit status."""
    args = make_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(levelname)s %(name)s: %(message)s")
    for chatty in ("fontTools", "weasyprint", "weasyprint.progress", "matplotlib"):  # their INFO is per page/glyph
        logging.getLogger(chatty).setLevel(logging.WARNING)
    try:
        return args.handler(args)
    except (ConfigError, ResultsMissing) as error:
        print(f"resreport: error: {error}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("resreport: interrupted; finished cells are cached and the next build resumes from them",
              file=sys.stderr)
        return 130
    except Exception as error:
        if isinstance(error, (OSError, *_run_failures())):  # OSError: permissions, a full disk, a vanished file
            log.debug("details", exc_info=True)
            print(f"resreport: error: {error}", file=sys.stderr)
            return EXIT_FAILED
        raise


def make_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="resreport", description="Run the residual-network lab end to end and "
                                     "render a submittable report (HTML + PDF).")
    parser.add_argument("-v", "--verbose", action="store_true", help="log debugging detail")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    build = commands.add_parser("build", help="run both suites (cached cells are reused) and render the report",
                                description="Run the gradient and CIFAR-10 suites, write the tidy tables under "
                                "OUT/results/ and render OUT/report.html and OUT/report.pdf.")
    _add_compute_options(build)
    build.set_defaults(handler=run_build)

    run = commands.add_parser("run", help="run one suite and write its tables (no report)",
                              description="Run one suite and publish its tables under OUT/results/.")
    run.add_argument("suite", choices=["gradients", "cifar"], help="which suite to run")
    _add_compute_options(run)
    run.set_defaults(handler=run_one_suite)

    render = commands.add_parser("render", help="re-render the report from OUT/results/ alone (no compute)",
                                 description="Render OUT/report.html and OUT/report.pdf from the stored tables; "
                                 "torch does no work.")
    _add_common_options(render)
    render.set_defaults(handler=run_render)

    status = commands.add_parser("status", help="list cached, stale and missing cells per suite",
                                 description="For every cell of the configured grids, say whether its result is "
                                 "cached, stale (and which part of its key changed), missing or failed.")
    _add_compute_options(status, with_force=False)
    status.set_defaults(handler=run_status)

    clean = commands.add_parser("clean", help="delete the output folder (results, caches, report)",
                                description="Delete OUT entirely: results, cached cells, decoded data, report.")
    clean.add_argument("--out", type=Path, default=Path("build"), help="output folder to delete (default: build)")
    clean.set_defaults(handler=run_clean)
    return parser


def _add_common_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", type=Path, default=None,
                        help=f"report settings and experiment plan (default: {DEFAULT_CONFIG} when it exists, "
                        "else built-in defaults)")
    parser.add_argument("--out", type=Path, default=Path("build"),
                        help="output folder for results/, cache/, report.html, report.pdf (default: build)")
    parser.add_argument("--quick", action="store_true",
                        help="small grids that run in seconds (smoke tests and CI), instead of the lab's full grids")


def _add_compute_options(parser: argparse.ArgumentParser, with_force: bool = True) -> None:
    _add_common_options(parser)
    parser.add_argument("--data", type=Path, default=None,
                        help=f"CIFAR-10 folder in ImageFolder layout (train/<class>/*, test/<class>/*); default: "
                        f"${DATA_ENV}, else torchvision's CIFAR-10 download under ~/.cache/resreport/cifar10")
    parser.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto",
                        help="torch device (default: auto = cuda when available, else cpu)")
    parser.add_argument("--seeds", type=int, default=None, metavar="N",
                        help="train every CIFAR cell with N seeds (default: cifar.n_seeds in the config, 1)")
    parser.add_argument("--threads", type=int, default=None, metavar="N",
                        help="torch CPU threads (default: torch's choice, one per core); on a busy shared machine "
                        "--threads 1 avoids threads spin-waiting for each other")
    if with_force:
        parser.add_argument("--force", action="store_true", help="recompute every cell, ignoring the cache")


def _config(args):
    path = args.config if args.config is not None else (DEFAULT_CONFIG if DEFAULT_CONFIG.is_file() else None)
    if getattr(args, "seeds", None) is not None and args.seeds < 1:
        raise ConfigError(f"--seeds must be at least 1, got {args.seeds}")
    return load_config(path, use_quick=args.quick, n_seeds=getattr(args, "seeds", None))


def _options(args):
    from resreport.device import choose_device
    from resreport.pipeline import BuildOptions

    if args.out.exists() and not args.out.is_dir():
        raise ConfigError(f"--out {args.out} is a file, not a folder; pass a folder (it is created when missing)")
    if args.threads is not None:
        if args.threads < 1:
            raise ConfigError(f"--threads must be at least 1, got {args.threads}")
        import torch

        torch.set_num_threads(args.threads)
    data = args.data if args.data is not None else os.environ.get(DATA_ENV) or None
    return BuildOptions(out=args.out, data_dir=Path(data) if data else None, device=choose_device(args.device),
                        force=getattr(args, "force", False))


def run_build(args) -> int:
    from resreport.pipeline import build

    config = _config(args)
    report = build(config, _options(args))
    return _finish(report, args.out, rendered=True)


def run_one_suite(args) -> int:
    from resreport.pipeline import build

    config = _config(args)
    report = build(config, _options(args), suites=(args.suite,), render=False)
    return _finish(report, args.out, rendered=False)


def run_render(args) -> int:
    from resreport.pipeline import render_report

    timings: dict[str, float] = {}
    paths = render_report(_config(args), args.out, timings)
    print(f"rendered {paths.get('html')} and {paths.get('pdf')} in {timings['render']:.1f} s")
    return 0


def run_status(args) -> int:
    from resreport.pipeline import status

    rows = status(_config(args), _options(args))
    for suite in dict.fromkeys(row["suite"] for row in rows):
        mine = [row for row in rows if row["suite"] == suite]
        counts = {state: sum(row["state"] == state for row in mine) for state in ("cached", "stale", "missing",
                                                                                  "failed", "unknown")}
        print(f"{suite}: " + ", ".join(f"{n} {state}" for state, n in counts.items() if n or state != "unknown"))
        for row in mine:
            if row["state"] != "cached":
                why = f" (changed: {', '.join(row['changed'])})" if row["changed"] else ""
                print(f"  {row['state']:8} {row['cell']}{why}")
    return 0


def run_clean(args) -> int:
    out = args.out
    if not out.exists():
        print(f"{out} does not exist; nothing to clean")
        return 0
    ours = {"results", "cache", "report.html", "report.pdf", "figures", "changes.md"}
    if not out.is_dir() or not ({p.name for p in out.iterdir()} <= ours | {p.name for p in out.glob(".*")}):
        raise ConfigError(f"{out} holds files resreport did not write; refusing to delete it (remove it by hand)")
    shutil.rmtree(out)
    print(f"deleted {out}")
    return 0


def _finish(report, out: Path, rendered: bool) -> int:
    for name, outcome in report.outcomes.items():
        counts = outcome.counts()
        print(f"{name}: {counts['computed']} cells computed, {counts['cached']} cached, {counts['failed']} failed")
    if report.failed:
        print("resreport: build failed; these cells raised (details in the log and in OUT/cache/cells/*/*.failed.json):",
              file=sys.stderr)
        for cell, error in report.failed.items():
            print(f"  {cell}: {error}", file=sys.stderr)
        print("the previous results and report were left untouched; fix the cause and rerun to compute only these "
              "cells", file=sys.stderr)
        return EXIT_FAILED
    print(report.changes_markdown.strip())
    timing = ", ".join(f"{stage} {seconds:.1f} s" for stage, seconds in report.timings.items())
    where = f"{out / 'report.html'} and {out / 'report.pdf'}" if rendered else f"{out / 'results'}"
    print(f"wrote {where} ({timing})")
    return 0


def _run_failures() -> tuple[type[Exception], ...]:
    """Return the errors that mean the run failed for a stated reason (exit 1 with the message, no traceback)."""
    from resreport.data import DataError
    from resreport.render import RenderError

    return DataError, RenderError
