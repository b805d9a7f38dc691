"""Command line of the reflection ablation (see the package docstring)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from .config import ARMS, DEFAULT_BANDS, StudyConfig


def _parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="python -m bench.experiments.reflection", description=__doc__)
    sub = ap.add_subparsers(dest="cmd", required=True)
    bands = sub.add_parser("bands", help="first-try accuracy per env setting (find the boundary band)")
    bands.add_argument("--specs", nargs="+", default=list(DEFAULT_BANDS))
    bands.add_argument("-n", type=int, default=64)
    bands.add_argument("--tokens", type=int, default=128)
    bands.add_argument("--greedy", action="store_true")
    bands.add_argument("--model", default="default")
    bands.add_argument("--json", type=Path, help="also write the rows here")
    run = sub.add_parser("run", help="run (or resume) the study, then write the report")
    run.add_argument("--out", type=Path, default=Path("runs/reflection"))
    run.add_argument("--envs", nargs="+", default=list(DEFAULT_BANDS))
    run.add_argument("--arms", nargs="+", default=list(ARMS))
    for name in ("failures", "k", "solve-tokens", "reflect-tokens", "seed", "library-tasks"):
        run.add_argument(f"--{name}", type=int)
    run.add_argument("--model", default="default")
    run.add_argument("--no-report", action="store_true")
    planted = sub.add_parser("planted", help="instruction with an example answer value vs without, paired")
    planted.add_argument("--out", type=Path, default=Path("runs/reflection"))
    planted.add_argument("--specs", nargs="+", default=None)
    planted.add_argument("-n", type=int, default=160)
    planted.add_argument("--seed", type=int, default=7)
    planted.add_argument("--model", default="default")
    retrieval = sub.add_parser("retrieval", help="first-try accuracy with and without memory hints, paired")
    retrieval.add_argument("--out", type=Path, default=Path("runs/reflection"))
    retrieval.add_argument("--spec", default="arithmetic:digits=2")
    retrieval.add_argument("-n", type=int, default=160)
    retrieval.add_argument("--train", type=int, default=256, help="train tasks attempted once to fill the library")
    retrieval.add_argument("--model", default="default")
    report = sub.add_parser("report", help="write docs/reflection.md from the --out directories alone")
    report.add_argument("--out", type=Path, action="append",
                        help="a study directory (repeat for studies made with other settings; default runs/reflection)")
    report.add_argument("--doc", type=Path, default=Path("docs/reflection.md"))
    return ap


def main(argv: list[str] | None = None) -> None:
    args = _parser().parse_args(argv)
    if args.cmd == "bands":
        from .bands import main as bands

        rows = bands(args.model, args.specs, args.n, args.tokens, args.greedy)
        if args.json:
            args.json.write_text(json.dumps(rows, indent=1))
        return
    if args.cmd == "planted":
        from .planted import DEFAULT_SPECS
        from .planted import main as planted

        print(planted(args.model, args.specs or list(DEFAULT_SPECS), args.n, args.seed, args.out))
        return
    if args.cmd == "retrieval":
        from .retrieval import main as retrieval

        print(retrieval(args.model, args.spec, args.n, args.train, args.out))
        return
    if args.cmd == "run":
        from .study import run

        fields = {k: getattr(args, k) for k in ("failures", "k", "solve_tokens", "reflect_tokens", "seed",
                                                "library_tasks") if getattr(args, k) is not None}
        cfg = StudyConfig(model=args.model, envs=args.envs, arms=args.arms, **fields)
        run(cfg, args.out)
        if args.no_report:
            return
        args.doc = Path("docs/reflection.md")
    from .report import write_report

    outs = args.out if isinstance(args.out, list) else [args.out or Path("runs/reflection")]
    print(write_report(outs, args.doc))


if __name__ == "__main__":
    main()
