"""Command line: `python -m ipt_utils run|validate|list|plan|synthesize|synth-merge`.

Exit codes: 0 ok, 1 a stage failed, 2 invalid profile or arguments (nothing executed).
"""
from __future__ import annotations

import argparse
import sys

from . import plan, rehearse, runner
from .profiles import available_profiles, load_profile
from .registry import STAGES
from .schema import SchemaError
from .synthesize import cli_main


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m ipt_utils", description=__doc__)
    sub = p.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("run", help="run a profile's stages through papermill")
    r.add_argument("--profile", required=True, help="profile name in params/ or a YAML path")
    r.add_argument("--stages", help="comma-separated stages (names, sections or numbers); default all")
    r.add_argument("--out", help="run directory (default results/runs/<profile>)")
    r.add_argument("--force", action="store_true", help="re-run the selected stages even if complete")
    r.add_argument("--rehearse", action="store_true",
                   help="rehearse a GPU profile on this CPU, offline: hub-layout mirrors, tiny models and "
                        "budgets, 2-process launches (default --out results/runs/<profile>-rehearsal)")
    v = sub.add_parser("validate", help="validate profiles without running anything")
    v.add_argument("profiles", nargs="*", help="names or paths (default: every profile in params/)")
    sub.add_parser("list", help="list profiles and stages")
    pl = sub.add_parser("plan", help="what a profile will download, write and cost (GPU-hours), before it runs")
    pl.add_argument("--profile", required=True, help="profile name in params/ or a YAML path")
    pl.add_argument("--out", help="run directory (default results/runs/<profile>); for --print hub_cache")
    pl.add_argument("--json", action="store_true", help="print the machine-readable plan (as in manifest.json)")
    pl.add_argument("--print", dest="value", metavar="KEY",
                    help="print one value for scripts: num_shards | synth_model | synth_gpus | hub_cache | "
                         "gpu_hours_per_shard")
    sy = sub.add_parser("synthesize", help="stage 02 for one shard, without papermill (Slurm arrays, one job per GPU)")
    sm = sub.add_parser("synth-merge", help="merge the finished shards of stage 02 into augmented.jsonl + metrics")
    for q in (sy, sm):
        q.add_argument("--profile", required=True, help="profile name in params/ or a YAML path")
        q.add_argument("--out", help="run directory (default results/runs/<profile>)")
        q.add_argument("--num-shards", type=int, help="override synthesize.num_shards")
    which = sy.add_mutually_exclusive_group()
    which.add_argument("--shard-index", type=int, help="override synthesize.shard_index")
    which.add_argument("--all-shards", action="store_true",
                       help="synthesize every shard in turn in this process, then merge them")
    return p


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.cmd == "list":
        print("profiles:", ", ".join(available_profiles()))
        print("stages:  ", ", ".join(s.name for s in STAGES))
        return 0
    names = args.profiles or available_profiles() if args.cmd == "validate" else [args.profile]
    try:
        profiles = [load_profile(n) for n in names]
    except SchemaError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if args.cmd == "plan":
        if args.value:
            try:
                print(plan.query(profiles[0], args.value, args.out))
            except KeyError as e:
                print(f"error: {e.args[0]}", file=sys.stderr)
                return 2
            return 0
        est = plan.estimate(profiles[0])
        if args.json:
            import json

            print(json.dumps(est, indent=1))
        else:
            print(plan.render(est))
        return 0
    if args.cmd in ("synthesize", "synth-merge"):
        return cli_main(args, profiles[0])
    if args.cmd == "validate":
        for prof in profiles:
            print(f"ok: {prof.path}")
        return 0

    try:
        runner.parse_stages(args.stages)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    try:
        if args.rehearse:
            rep = rehearse.run(args.profile, stages=args.stages, out=args.out, force=args.force)
        else:
            rep = runner.run(profiles[0], stages=args.stages, out=args.out, force=args.force)
    except (runner.MissingPackages, ValueError) as e:  # nothing ran
        print(f"error: {e}", file=sys.stderr)
        return 2
    except runner.StageFailed as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(f"run complete: {rep.run_dir} (ran {len(rep.ran)}, skipped {len(rep.skipped)})")
    return 0
