"""`vislab submit`: one config (or a sweep of them) to Slurm, validated before anything is queued.

    vislab submit CONFIG [key=value ...] [--nodes N --gpus-per-node G --cpus-per-task C --mem M --time T
                  --partition P --account A --qos Q --constraint X] [--sweep sweep.yaml [--max-parallel K]]
                  [--dry-run]
    vislab submit robustness MODEL --data ROOT [its flags] [--nodes N --gpus-per-node G ...] [--dry-run]

Resources come from the config's `slurm:` section, overridden by the flags. `--nodes` and
`--gpus-per-node` are `trainer.num_nodes` and `trainer.devices` (one task per device, Lightning's
convention). Before `sbatch`: the config is validated (every sweep element), the resources are checked
against the trainer settings and against the cluster (partition, CPUs and GPUs per node, node count;
then `sbatch --test-only`). Then the run directory is created with its config, wandb id and the batch
script rendered from slurm/job.sbatch.in; `--dry-run` prints the script and creates and submits nothing.
"""

from __future__ import annotations

import argparse
import difflib
import json
import re
import shlex
import shutil
import sys
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import jinja2
import yaml

from vislab.core.config import RunConfig, to_yaml
from vislab.core.errors import ConfigError
from vislab.train.config import load_config
from vislab.train.slurm import cluster
from vislab.train.slurm.sweep import Sweep, array_spec, load_sweep

TEMPLATE = Path(__file__).resolve().parents[2] / "slurm" / "job.sbatch.in"
SCRIPT_FILE = "job.sbatch"
SUBMIT_FILE = "submit.json"
EXIT_PREEMPTED = 3  # = vislab.train.slurm.preemption.EXIT_PREEMPTED (kept here: no torch import at submission)
_TIME = re.compile(r"^(?:(\d+)-)?(\d+)(?::(\d+))?(?::(\d+))?$")


@dataclass
class Resources:
    """What one job asks Slurm for (per node unless said otherwise)."""

    nodes: int
    ntasks_per_node: int
    gpus_per_node: int
    cpus_per_task: int
    time: str
    partition: str | None = None
    account: str | None = None
    qos: str | None = None
    constraint: str | None = None
    mem: str | None = None
    extra_sbatch: list[str] = field(default_factory=list)

    def optional_lines(self) -> list[str]:
        named = {"partition": self.partition, "account": self.account, "qos": self.qos,
                 "constraint": self.constraint, "mem": self.mem}
        return [f"--{k}={v}" for k, v in named.items() if v]


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="vislab submit", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("config", help="YAML config file")
    p.add_argument("overrides", nargs="*", help="key=value overrides, as for vislab fit")
    p.add_argument("--nodes", type=int, help="nodes (= trainer.num_nodes)")
    p.add_argument("--gpus-per-node", type=int, help="GPUs per node (= trainer.devices, one task each)")
    p.add_argument("--cpus-per-task", type=int, help="CPUs per task (data loader workers + 1)")
    p.add_argument("--mem", help="memory per node, e.g. 64G")
    p.add_argument("--time", help="time limit, e.g. 2-00:00:00 or 90 (minutes)")
    p.add_argument("--partition")
    p.add_argument("--account")
    p.add_argument("--qos")
    p.add_argument("--constraint")
    p.add_argument("--sweep", type=Path, help="sweep file: a grid / list of overrides -> one job array")
    p.add_argument("--max-parallel", type=int, help="at most this many array tasks at once (--array=...%%K)")
    p.add_argument("--dry-run", action="store_true", help="print the batch script; create and submit nothing")
    return p


# ------------------------------------------------------------------------------------------- config
def flag_overrides(args: argparse.Namespace) -> list[str]:
    """`--nodes`, `--gpus-per-node` and the slurm flags as config overrides (the config holds the truth)."""
    out = []
    if args.nodes is not None:
        out.append(f"trainer.num_nodes={args.nodes}")
    if args.gpus_per_node is not None:
        out += [f"trainer.devices={args.gpus_per_node}", f"slurm.gpus_per_node={args.gpus_per_node}"]
    for name in ("cpus_per_task", "mem", "time", "partition", "account", "qos", "constraint"):
        value = getattr(args, name)
        if value is not None:
            out.append(f"slurm.{name}={json.dumps(value) if isinstance(value, str) else value}")
    return out


def _conflicts(flags: list[str], overrides: list[str]) -> list[str]:
    given = {o.split("=", 1)[0]: o for o in overrides}
    return [f"command line: '{given[f.split('=', 1)[0]]}' contradicts the flag that sets {f}"
            for f in flags if f.split("=", 1)[0] in given and given[f.split("=", 1)[0]] != f]


def quote_times(config: str, overrides: list[str]) -> list[str]:
    """The overrides, with `slurm.time` kept exactly as written. YAML 1.1 reads an unquoted 1:30:00 as the
    base-60 integer 5400, which Slurm would take for 5400 minutes: such values become quoted overrides."""

    def quoted(o: str) -> str:
        key, _, value = o.partition("=")
        return f"{key}={json.dumps(value)}" if key == "slurm.time" and re.fullmatch(r"[\d:]+", value) else o

    out = [quoted(o) for o in overrides]
    if any(o.startswith("slurm.time=") for o in overrides) or not Path(config).is_file():
        return out
    try:
        root = yaml.compose(Path(config).read_text())
    except yaml.YAMLError:
        return out  # load_config reports it
    for section in root.value if isinstance(root, yaml.MappingNode) else []:
        if section[0].value == "slurm" and isinstance(section[1], yaml.MappingNode):
            for key, node in section[1].value:
                if key.value == "time" and isinstance(node, yaml.ScalarNode) and node.style is None and ":" in node.value:
                    out.append(f"slurm.time={json.dumps(node.value)}")
    return out


def load_configs(config: str, overrides: list[str], flags: list[str], sweep: Sweep | None) -> list[RunConfig]:
    """One validated config per job (array element); all problems of all elements at once."""
    problems = _conflicts(flags, overrides)
    if problems:
        raise ConfigError(problems)
    overrides = quote_times(config, overrides)
    elements = [sweep.overrides(i) for i in range(len(sweep.runs))] if sweep else [[]]
    configs, problems = [], []
    for i, extra in enumerate(elements):
        clash = {o.split("=", 1)[0] for o in extra} & {o.split("=", 1)[0] for o in overrides + flags}
        if clash:
            problems.append(f"{sweep.source if sweep else ''}: sweep varies {', '.join(sorted(clash))}, "
                            "also set on the command line")
            break
        try:
            configs.append(load_config(config, [*overrides, *flags, *extra]))
        except ConfigError as e:
            where = f"sweep run {i} ({' '.join(extra)}): " if sweep else ""
            problems += [where + p for p in e.problems]
    if problems:
        raise ConfigError(problems)
    return configs


def time_seconds(value: str) -> int | None:
    """Slurm's time formats (M, M:S, H:M:S, D-H, D-H:M, D-H:M:S) in seconds; None if malformed."""
    m = _TIME.match(value.strip())
    if not m:
        return None
    days, first, *rest = (int(x) for x in m.groups(default="-1"))
    rest = [x for x in rest if x >= 0]
    if days >= 0:  # D-H[:M[:S]]
        h, mi, sec = ([first, *rest] + [0, 0])[:3]
        return days * 86400 + h * 3600 + mi * 60 + sec
    if not rest:
        return first * 60  # minutes
    if len(rest) == 1:
        return first * 60 + rest[0]  # M:S
    return first * 3600 + rest[0] * 60 + rest[1]  # H:M:S


def resources(cfg: RunConfig, source: str) -> Resources:
    """Resources of one job from `slurm:` and `trainer:`, checked against each other."""
    s, t = cfg.slurm, cfg.trainer
    problems = []
    # a cluster job asks for GPUs unless the config says cpu: 'auto' means one GPU per device there
    gpu = t.accelerator in ("gpu", "cuda", "auto")
    if t.accelerator in ("cpu", "mps") and s.gpus_per_node:
        problems.append(f"{source}: slurm.gpus_per_node={s.gpus_per_node} but trainer.accelerator={t.accelerator}")
    if gpu and s.gpus_per_node is not None and s.gpus_per_node != t.devices:
        problems.append(f"{source}: slurm.gpus_per_node={s.gpus_per_node} but trainer.devices={t.devices}: "
                        "one task per GPU, so they must match (--gpus-per-node sets both)")
    if t.strategy == "ddp_spawn":
        problems.append(f"{source}: trainer.strategy=ddp_spawn: under Slurm srun starts one process per device; "
                        "use trainer.strategy=ddp (or auto)")
    limit = time_seconds(s.time)
    if limit is None:
        problems.append(f"{source}: slurm.time={s.time!r} is not a Slurm time (minutes, H:M:S, D-H:M:S, ...)")
    elif limit <= s.signal_lead_s:
        problems.append(f"{source}: slurm.time={s.time} leaves no time before the checkpoint signal "
                        f"(slurm.signal_lead_s={s.signal_lead_s})")
    if s.cpus_per_task < 1:
        problems.append(f"{source}: slurm.cpus_per_task must be >= 1")
    bad_env = [e for e in s.env if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*=.*", e)]
    if bad_env:
        problems.append(f"{source}: slurm.env entries must be NAME=value, got {bad_env}")
    if problems:
        raise ConfigError(problems)
    return Resources(nodes=t.num_nodes, ntasks_per_node=t.devices, gpus_per_node=t.devices if gpu else 0,
                     cpus_per_task=s.cpus_per_task, time=s.time, partition=s.partition, account=s.account,
                     qos=s.qos, constraint=s.constraint, mem=s.mem, extra_sbatch=list(s.extra_sbatch))


def check_cluster(res: Resources) -> None:
    """The request fits the cluster: partition, node count, CPUs and GPUs per node (from sinfo)."""
    parts = cluster.partitions()
    if not parts:
        raise ConfigError(["sinfo lists no partitions: is slurmctld running (slurm/local_cluster_up.sh)?"])
    name = res.partition or next((p.name for p in parts.values() if p.default), None)
    if name is None:
        raise ConfigError([f"the cluster has no default partition: give --partition ({', '.join(parts)})"])
    if name not in parts:

        close = difflib.get_close_matches(name, list(parts), n=1)
        hint = f"did you mean '{close[0]}'? " if close else ""
        raise ConfigError([f"partition '{name}' does not exist on this cluster ({hint}partitions: "
                           f"{', '.join(sorted(parts))}); set --partition or slurm.partition"])
    part, problems = parts[name], []
    if res.nodes > len(part.nodes):
        problems.append(f"--nodes {res.nodes} (trainer.num_nodes) but partition '{name}' has {len(part.nodes)} node(s)")
    cpus = res.ntasks_per_node * res.cpus_per_task
    if cpus > part.max_cpus:
        problems.append(f"{res.ntasks_per_node} tasks per node (trainer.devices) x {res.cpus_per_task} CPUs per task "
                        f"(slurm.cpus_per_task) = {cpus} CPUs, but the nodes of partition '{name}' have at most "
                        f"{part.max_cpus}")
    if res.gpus_per_node > part.max_gpus:
        problems.append(f"{res.gpus_per_node} GPUs per node requested, but the nodes of partition '{name}' have at "
                        f"most {part.max_gpus}")
    if problems:
        raise ConfigError(problems)


# ------------------------------------------------------------------------------------------- script
@dataclass
class Job:
    """Everything the batch script says; one run directory, or a sweep (array) of them."""

    name: str
    resources: Resources
    run_dirs: list[Path]
    script: Path
    command: str
    workdir: Path
    max_requeues: int
    requeue_on_failure: bool
    signal_lead_s: int
    env: dict[str, str]
    array: str | None = None
    sweep_id: str | None = None


def render(job: Job) -> str:
    env = jinja2.Environment(undefined=jinja2.StrictUndefined, keep_trailing_newline=True, autoescape=False)
    template = env.from_string(TEMPLATE.read_text())
    r = job.resources
    runs_dir = job.run_dirs[0].parent
    return template.render(
        command=job.command, script=shlex.quote(str(job.script)), job_name=job.name, nodes=r.nodes,
        ntasks_per_node=r.ntasks_per_node, cpus_per_task=r.cpus_per_task, gpus_per_node=r.gpus_per_node,
        time=r.time, optional=r.optional_lines(), array=job.array, workdir=shlex.quote(str(job.workdir)),
        log_dir=(runs_dir / f"{job.sweep_id}-%a") if job.array else job.run_dirs[0],
        signal_lead_s=job.signal_lead_s, extra_sbatch=r.extra_sbatch, runs_dir=shlex.quote(str(runs_dir)),
        sweep_id=job.sweep_id, run_dir=shlex.quote(str(job.run_dirs[0])),
        env=[(k, shlex.quote(v)) for k, v in sorted(job.env.items())], python=shlex.quote(sys.executable),
        max_requeues=job.max_requeues, exit_preempted=EXIT_PREEMPTED, requeue_on_failure=job.requeue_on_failure,
    )


def plan(configs: list[RunConfig], sweep: Sweep | None, command: str) -> tuple[Job, list[RunConfig]]:
    """Fix run ids, run directories (absolute), wandb group and the job's shape; nothing is written."""
    from vislab.train.run import new_run_id  # torch and Lightning: kept off the CLI's start-up path

    first = configs[0]
    res = resources(first, "config")
    for i, cfg in enumerate(configs[1:], start=1):
        if resources(cfg, f"sweep run {i}") != res:
            raise ConfigError([f"sweep run {i} changes the job's resources (trainer.devices / num_nodes / slurm.*): "
                               "one job array has one shape; submit such runs separately"])
    base_id = first.run_id or new_run_id()
    runs_dir = Path(first.runs_root).resolve() / first.experiment
    planned = []
    for i, cfg in enumerate(configs):
        run_id = f"{base_id}-{i}" if sweep else base_id
        group = (sweep.group if sweep else None) or cfg.logger.group or (f"{cfg.experiment}-{base_id}" if sweep else None)
        planned.append(replace(cfg, run_id=run_id, runs_root=str(runs_dir.parent), resume="auto",
                               logger=replace(cfg.logger, group=group)))
    run_dirs = [runs_dir / c.run_id for c in planned]  # type: ignore[operator]
    s = first.slurm
    job = Job(
        name=f"{first.experiment}-{base_id}", resources=res, run_dirs=run_dirs,
        script=(runs_dir / base_id / SCRIPT_FILE) if sweep else run_dirs[0] / SCRIPT_FILE,
        command=command, workdir=Path.cwd(), max_requeues=s.max_requeues, requeue_on_failure=s.requeue_on_failure,
        signal_lead_s=s.signal_lead_s, env=dict(e.split("=", 1) for e in s.env),
        array=array_spec(len(configs), sweep.max_parallel) if sweep else None, sweep_id=base_id if sweep else None,
    )
    return job, planned


def write_runs(job: Job, configs: list[RunConfig], script: str, sweep: Sweep | None) -> None:
    """Create the run directories with config, wandb id and script; a directory that exists is an error."""
    from vislab.train.tracking import wandb_id  # torch and Lightning: kept off the CLI's start-up path

    existing = [d for d in job.run_dirs if d.exists()] + ([job.script.parent] if sweep and job.script.parent.exists() else [])
    if existing:
        raise ConfigError([f"run directory {d} exists: resubmit it with `sbatch {d / SCRIPT_FILE}` "
                           "(it resumes), or choose another run_id" for d in existing])
    for i, (d, cfg) in enumerate(zip(job.run_dirs, configs, strict=True)):
        d.mkdir(parents=True)
        (d / "config.yaml").write_text(to_yaml(cfg))
        wandb_id(d)  # fixed now: every restart of the job continues this wandb run
        if sweep:
            (d / "sweep.json").write_text(json.dumps({"index": i, "overrides": sweep.runs[i],
                                                      "sweep_dir": str(job.script.parent)}, indent=1))
    job.script.parent.mkdir(parents=True, exist_ok=True)
    job.script.write_text(script)
    if sweep:
        shutil.copyfile(sweep.source, job.script.parent / "sweep.yaml")


def record_submission(job: Job, job_id: str) -> None:
    for i, d in enumerate(job.run_dirs):
        info: dict[str, Any] = {
            "job_id": f"{job_id}_{i}" if job.array else job_id, "array_job_id": job_id if job.array else None,
            "submitted_at": time.time(), "command": job.command, "workdir": str(job.workdir),
            "script": str(job.script), "resources": job.resources.__dict__,
        }
        (d / SUBMIT_FILE).write_text(json.dumps(info, indent=1))


def verb_parser() -> argparse.ArgumentParser:
    """`vislab submit robustness ...`: the resource flags; everything else goes to the verb."""
    p = argparse.ArgumentParser(prog="vislab submit robustness", allow_abbrev=False, add_help=False)
    p.add_argument("--nodes", type=int, default=1)
    p.add_argument("--gpus-per-node", type=int, default=0, help="GPUs per node (one task each)")
    p.add_argument("--tasks-per-node", type=int, help="processes per node (default: one per GPU, else 1)")
    p.add_argument("--cpus-per-task", type=int, default=4)
    p.add_argument("--time", default="12:00:00")
    for name in ("mem", "partition", "account", "qos", "constraint"):
        p.add_argument(f"--{name}")
    p.add_argument("--dry-run", action="store_true")
    return p


def submit_verb(argv: list[str]) -> int:
    """`vislab submit robustness MODEL --data ROOT [verb flags] [resource flags] [--dry-run]`: the verb's
    arguments are checked by the verb itself, the resources against the cluster, then one job is queued."""
    # torch and the model code: kept off the CLI's start-up path
    from vislab.families.robustness.slurm import SCRIPT_FILE, job_script

    args, rest = verb_parser().parse_known_args(argv[1:])
    tasks = args.tasks_per_node or max(1, args.gpus_per_node)
    res = Resources(nodes=args.nodes, ntasks_per_node=tasks, gpus_per_node=args.gpus_per_node,
                    cpus_per_task=args.cpus_per_task, time=args.time, partition=args.partition, account=args.account,
                    qos=args.qos, constraint=args.constraint, mem=args.mem)
    if time_seconds(args.time) is None:
        raise ConfigError([f"--time {args.time!r} is not a Slurm time (minutes, H:M:S, D-H:M:S, ...)"])
    lines = [f"#SBATCH --nodes={res.nodes}", f"#SBATCH --ntasks-per-node={tasks}",
             f"#SBATCH --cpus-per-task={res.cpus_per_task}", f"#SBATCH --time={res.time}",
             *([f"#SBATCH --gpus-per-node={res.gpus_per_node}"] if res.gpus_per_node else []),
             *(f"#SBATCH {o}" for o in res.optional_lines())]
    command = shlex.join(["vislab", "submit", *(a for a in argv if a != "--dry-run")])
    script, out = job_script(rest, lines, sys.executable, command)
    if cluster.available():
        check_cluster(res)
        cluster.sbatch(script, test_only=True)
    elif not args.dry_run:
        raise ConfigError(["sbatch not found: this machine is not a Slurm submit host"])
    if args.dry_run:
        print(script, end="")
        return 0
    out.mkdir(parents=True, exist_ok=True)
    (out / SCRIPT_FILE).write_text(script)
    print(f"job {cluster.sbatch(out / SCRIPT_FILE)}\n{out}")
    return 0


def submit(argv: list[str]) -> int:
    if argv[:1] == ["robustness"]:  # an evaluation verb as a job, not a training config
        return submit_verb(argv)
    args = parser().parse_intermixed_args(argv)
    command = shlex.join(["vislab", "submit", *(a for a in argv if a != "--dry-run")])  # what submits this script
    sweep = load_sweep(args.sweep) if args.sweep else None
    if sweep and args.max_parallel is not None:
        sweep.max_parallel = args.max_parallel
    configs = load_configs(args.config, args.overrides, flag_overrides(args), sweep)
    job, planned = plan(configs, sweep, command)
    if configs[0].data.num_workers >= configs[0].slurm.cpus_per_task:
        print(f"vislab: note: data.num_workers={configs[0].data.num_workers} loader processes + the training "
              f"process per task share slurm.cpus_per_task={configs[0].slurm.cpus_per_task} CPUs", file=sys.stderr)
    script = render(job)
    if cluster.available():
        check_cluster(job.resources)
        cluster.sbatch(script, test_only=True)  # Slurm's own verdict on the request, nothing queued
    elif not args.dry_run:
        raise ConfigError(["sbatch not found: this machine is not a Slurm submit host "
                           "(try the local cluster: sudo slurm/local_cluster_up.sh)"])
    else:
        print("vislab: note: no Slurm here; resources not checked against a cluster", file=sys.stderr)
    if args.dry_run:
        print(script, end="")
        return 0
    write_runs(job, planned, script, sweep)
    try:
        job_id = cluster.sbatch(job.script)
    except ConfigError:
        for d in job.run_dirs + ([job.script.parent] if sweep else []):
            shutil.rmtree(d, ignore_errors=True)
        raise
    record_submission(job, job_id)
    # stdout: the job id, then one run directory per line (tab, then the sweep's overrides)
    print(f"job {job_id}" + (f" (array {job.array})" if job.array else ""))
    for i, d in enumerate(job.run_dirs):
        print(f"{d}\t{sweep.describe(i)}" if sweep else d)
    return 0
