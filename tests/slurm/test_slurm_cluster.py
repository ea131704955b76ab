"""`vislab submit` on a real Slurm cluster: submission, preemption (SIGUSR1, SIGTERM), sweeps, bad requests,
a dying rank, the requeue limit, and a job across two nodes.

Needs the local cluster (`.ci/run` starts it: `slurm/local_cluster_up.sh --nodes 2`): two slurmd, each in
its own network namespace and hostname, so jobs really span hosts. On a machine without Slurm these tests
skip (in CI, VISLAB_CI=1, they fail). Jobs train tiny_cnn on the digits shards: seconds of training each;
most of a job's time is the two processes importing torch and Lightning.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
from conftest import REPO, run_cli, skip_unless_ci

pytestmark = pytest.mark.slurm

CONFIG = REPO / "configs" / "classify" / "digits.yaml"
EPOCHS = 6  # a signal or kill sent in epoch 1 or 2 must land before the last step (CI once saw one land after)
STEPS_PER_EPOCH = 20  # 1258 digits / (2 ranks x 32)
# every job: 2 CPU tasks (gloo DDP), deterministic given the seed (no dropout; the loader's augmentation
# is seeded per batch), the keys of every batch logged, EMA on so that its state must survive a restart
TRAIN = ["model.name=tiny_cnn", "model.dropout=0.0", "data.num_workers=0", f"trainer.max_epochs={EPOCHS}",
         "trainer.ema_decay=0.9", "trainer.log_every_n_steps=5", "logger.sample_keys=true"]
RESOURCES = ["--cpus-per-task", "1", "--time", "15"]
TIMEOUT_S = 600  # per wait; a job takes ~1 min on 2 busy cores
FINAL = ("COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL", "OUT_OF_MEMORY", "BOOT_FAIL", "DEADLINE")


# ------------------------------------------------------------------------------------------ helpers
@dataclass
class Job:
    id: str
    run_dirs: list[Path]

    @property
    def run_dir(self) -> Path:
        return self.run_dirs[0]


def job_info(job_id: str) -> dict[str, str]:
    out = subprocess.run(["scontrol", "show", "job", "-o", job_id], capture_output=True, text=True)
    return dict(re.findall(r"(\w+)=(\S*)", out.stdout))


def logs(run_dir: Path) -> str:
    return "".join(f"\n--- {p.name}\n" + p.read_text()[-4000:] for p in sorted(run_dir.glob("slurm-*")))


def wait_for(condition, what: str, job: Job, timeout: float = TIMEOUT_S, every: float = 0.5):  # noqa: ANN001
    deadline = time.time() + timeout
    while time.time() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(every)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what} (job {job.id}: "
                         f"{job_info(job.id).get('JobState')}){logs(job.run_dir)}")


def wait_final(job: Job, expect: str = "COMPLETED") -> dict[str, str]:
    info = wait_for(lambda: (i := job_info(job.id)).get("JobState") in FINAL and i, "the job to end", job)
    assert info["JobState"] == expect, f"job {job.id} ended {info['JobState']} ({info.get('ExitCode')}){logs(job.run_dir)}"
    return info


def release_requeued(job: Job) -> None:
    """A requeued job waits ~2 min (Reason=BeginTime); start it now. Not within the second its previous run
    ended: Slurm revokes that run's credential with 1 s resolution, and kills a restart in the same second
    ("Job credential revoked")."""
    wait_for(lambda: job_info(job.id).get("JobState") == "PENDING", "the job to be requeued", job)
    wait_for(lambda: not job_pids(job.id), "the previous run's processes to end", job)
    time.sleep(2)
    subprocess.run(["scontrol", "update", f"JobId={job.id}", "StartTime=now"], check=True)


def trained_steps(run_dir: Path) -> int:
    path = run_dir / "sample_keys" / "rank0.txt"
    return len(path.read_text().splitlines()) if path.is_file() else 0


def submit(work: Path, *args: str) -> Job:
    res = run_cli(["submit", str(CONFIG), f"data.root={work / 'digits'}", *TRAIN, *RESOURCES, *args], cwd=work,
                  timeout=180)
    lines = res.stdout.strip().splitlines()
    assert lines[0].startswith("job "), res.stdout
    return Job(lines[0].split()[1], [Path(line.split("\t")[0]) for line in lines[1:]])


def starts(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "restarts.jsonl").read_text().splitlines()]


def keys(run_dir: Path) -> dict[int, list[list[str]]]:
    from vislab.train.keylog import read_sample_keys

    return {rank: [k for _, k in rows] for rank, rows in read_sample_keys(run_dir).items()}


def lr_by_step(run_dir: Path) -> dict[int, float]:
    import csv

    out = {}
    for path in sorted((run_dir / "logs").glob("version_*/metrics.csv")):
        for row in csv.DictReader(path.open()):
            if row.get("lr"):
                out[int(row["step"])] = float(row["lr"])
    return out


def wandb_runs(run_dir: Path) -> list[dict]:
    from vislab.train.wandb_reader import read_run

    return [read_run(d) for d in sorted((run_dir / "wandb").glob("offline-run-*"))]


def wandb_logged_train_loss(run_dir: Path) -> bool:
    """The run's wandb history on disk holds a train/loss row. wandb's service writes its offline log in
    blocks and dies with the job step's SIGTERM: rows it had not written yet are lost (wandb's limit, not
    vislab's), so a test of what survives a stop waits for some to be written before stopping."""
    try:
        return any("train/loss" in row for run in wandb_runs(run_dir) for row in run["history"])
    except (OSError, ValueError, IndexError):  # no file yet, or one being written
        return False


def job_pids(job_id: str, rank: int | None = None) -> list[int]:
    """Processes of the job's training step (with SLURM_PROCID=rank); all nodes share this PID namespace."""
    found = []
    for proc in Path("/proc").iterdir():
        try:
            env = dict(x.split("=", 1) for x in (proc / "environ").read_bytes().decode().split("\0") if "=" in x)
            cmd = (proc / "cmdline").read_bytes().decode()
        except (OSError, ValueError):
            continue
        if env.get("SLURM_JOB_ID") == job_id and rank in (None, int(env.get("SLURM_PROCID", -1))) \
                and "vislab.train.cli" in cmd:
            found.append(int(proc.name))
    return found


# ------------------------------------------------------------------------------------------ fixtures
@pytest.fixture(scope="module")
def cluster() -> dict[str, int]:
    """{node: CPUs} of the running local cluster, or skip / fail (CI) with how to start one."""
    if shutil.which("sbatch") is None:
        skip_unless_ci("Slurm is not installed (sudo slurm/local_cluster_up.sh --nodes 2 installs and starts it)")
    out = subprocess.run(["sinfo", "-h", "-N", "-o", "%N %c %T"], capture_output=True, text=True)
    nodes = {n: int(c) for n, c, state in (line.split() for line in out.stdout.splitlines())
             if state in ("idle", "mixed", "allocated", "completing")}
    if out.returncode != 0 or not nodes:
        skip_unless_ci(f"no Slurm cluster is up ({(out.stderr or out.stdout).strip()[:200]}); "
                       "start one: sudo slurm/local_cluster_up.sh --nodes 2")
    return nodes


@pytest.fixture(scope="module")
def work(tmp_path_factory: pytest.TempPathFactory, digits_root: Path, cluster: dict[str, int]) -> Path:
    work = tmp_path_factory.mktemp("slurm")
    (work / "digits").symlink_to(digits_root)
    return work


@pytest.fixture(scope="module")
def reference(work: Path) -> tuple[Job, str]:
    """An uninterrupted 2-task run (and the script `--dry-run` printed for it): the baseline of the others."""
    dry = run_cli(["submit", str(CONFIG), f"data.root={work / 'digits'}", *TRAIN, *RESOURCES, "run_id=reference",
                   "--dry-run"], cwd=work, timeout=180)
    job = submit(work, "run_id=reference")
    wait_final(job)
    return job, dry.stdout


# ------------------------------------------------------------------------------------------ tests
def test_two_task_ddp_job_completes_as_dry_run_showed(reference: tuple[Job, str], work: Path) -> None:
    job, dry_script = reference
    run = job.run_dir
    assert run == work / "runs" / "digits" / "reference"
    assert (run / "job.sbatch").read_text() == dry_script  # what --dry-run printed is what ran
    for line in ("#SBATCH --ntasks-per-node=2", "#SBATCH --nodes=1", "#SBATCH --signal=SIGUSR1@90",
                 "#SBATCH --requeue", "#SBATCH --open-mode=append", f"#SBATCH --output={run}/slurm-%j.out",
                 f"#SBATCH --error={run}/slurm-%j.err", "srun --kill-on-bad-exit=1 "):
        assert line in dry_script, line
    summary = json.loads((run / "summary.json").read_text())
    assert summary["num_processes"] == 2 and summary["global_step"] == EPOCHS * STEPS_PER_EPOCH
    assert summary["test_metrics"]["test/acc1"] > 0.3
    assert Path(summary["best_checkpoint"]).is_file() and (run / "checkpoints" / "last.ckpt").is_file()
    assert (run / "logs" / "version_0" / "metrics.csv").is_file()
    assert [r["run_id"] for r in wandb_runs(run)] == [(run / "wandb_id.txt").read_text().strip()]
    record = json.loads((run / "submit.json").read_text())
    assert record["job_id"] == job.id and "--dry-run" not in record["command"]
    assert f"[vislab] job {job.id} (start 1)" in (run / f"slurm-{job.id}.out").read_text()
    listing = run_cli(["runs", "--json"], cwd=work).stdout
    row = next(json.loads(x) for x in listing.splitlines() if json.loads(x)["run_dir"] == str(run))
    assert row["state"] == "COMPLETED" and row["step"] == EPOCHS * STEPS_PER_EPOCH
    assert row["best_checkpoint"] == summary["best_checkpoint"]


@pytest.mark.parametrize("how", ["scancel --signal=USR1", "scontrol requeue"])
def test_preempted_job_resumes_where_it_stopped(how: str, reference: tuple[Job, str], work: Path) -> None:
    """SIGUSR1 (time limit / scancel --signal) and SIGTERM (scontrol requeue, preemption): checkpoint at the
    next step, requeue, resume in the same run directory and wandb run at that step, same data stream,
    same LR schedule and EMA: the result equals the uninterrupted run's (observed: bit for bit)."""
    ref, _ = reference
    job = submit(work, f"run_id=preempt-{how.split()[0]}")
    run = job.run_dir
    wait_for(lambda: trained_steps(run) >= STEPS_PER_EPOCH + 5 and wandb_logged_train_loss(run),
             "training to reach mid epoch 1, with wandb history on disk", job, every=0.1)
    if how.startswith("scancel"):
        subprocess.run(["scancel", "--signal=USR1", job.id], check=True)
    else:
        subprocess.run(["scontrol", "requeue", job.id], check=True)
    release_requeued(job)
    info = wait_final(job)
    assert int(info["Restarts"]) == 1

    first, second = starts(run)
    assert first["stop_signal"] == ("SIGUSR1" if how.startswith("scancel") else "SIGTERM")
    assert STEPS_PER_EPOCH < first["stop_step"] < EPOCHS * STEPS_PER_EPOCH  # stopped mid-training, after epoch 0
    assert second["step"] == first["stop_step"]  # resumed at the saved step: no work lost
    assert second["restart_count"] == 1 and second["job_id"] == first["job_id"] == job.id
    out = (run / f"slurm-{job.id}.err").read_text()
    assert f"[vislab] {first['stop_signal']} at step {first['stop_step']}: checkpoint {run}/hpc_ckpt_1.ckpt" in out
    assert f"resuming from {run}/hpc_ckpt_1.ckpt" in out  # same run directory
    # the same wandb run, continued: the second part starts after the stop
    parts = wandb_runs(run)
    assert len(parts) == 2 and {p["run_id"] for p in parts} == {(run / "wandb_id.txt").read_text().strip()}
    logged = [[h["trainer/global_step"] for h in p["history"] if "train/loss" in h] for p in parts]
    assert logged[0] and logged[1] and max(logged[0]) < first["stop_step"] <= min(logged[1])
    # the data stream continued mid-epoch: every rank saw exactly the uninterrupted run's batches, in order
    # (nothing lost, nothing repeated)
    assert keys(run) == keys(ref.run_dir)
    assert lr_by_step(run) == lr_by_step(ref.run_dir)  # the LR schedule continued
    ours = json.loads((run / "summary.json").read_text())["test_metrics"]
    theirs = json.loads((ref.run_dir / "summary.json").read_text())["test_metrics"]
    assert ours.keys() == theirs.keys()
    for k in ours:  # tolerance 1e-6; EMA weights (what is tested) included
        assert ours[k] == pytest.approx(theirs[k], abs=1e-6), k


def test_sweep_runs_as_one_job_array(work: Path) -> None:
    sweep = work / "sweep.yaml"
    sweep.write_text("grid:\n  optim.lr: [0.002, 0.004, 0.008]\nmax_parallel: 3\ngroup: lr-sweep\n")
    # a 2-task job per element would run one at a time on this 2-CPU machine: one task each here
    one_task = ["trainer.devices=1", "data.batch_size=32", "trainer.max_epochs=1", "logger.sample_keys=false"]
    job = submit(work, *one_task, "--sweep", str(sweep))
    assert len(job.run_dirs) == 3
    sweep_dir = job.run_dirs[0].parent / job.run_dirs[0].name.rsplit("-", 1)[0]
    assert "#SBATCH --array=0-2%3" in (sweep_dir / "job.sbatch").read_text()
    assert (sweep_dir / "sweep.yaml").read_text() == sweep.read_text()
    for i, run in enumerate(job.run_dirs):
        element = Job(f"{job.id}_{i}", [run])
        wait_final(element)
    lrs, groups = [], set()
    from omegaconf import OmegaConf

    for i, run in enumerate(job.run_dirs):
        assert run.name.endswith(f"-{i}")
        cfg = OmegaConf.load(run / "config.yaml")
        lrs.append(cfg.optim.lr)
        groups.add(cfg.logger.group)
        assert json.loads((run / "summary.json").read_text())["global_step"] == 2 * STEPS_PER_EPOCH
        assert json.loads((run / "sweep.json").read_text())["overrides"] == {"optim.lr": lrs[-1]}
    assert lrs == [0.002, 0.004, 0.008] and groups == {"lr-sweep"}
    listing = [json.loads(x) for x in run_cli(["runs", "--json", "--experiment", "digits"], cwd=work).stdout.splitlines()]
    rows = {r["run_dir"]: r for r in listing}
    assert all(rows[str(d)]["state"] == "COMPLETED" and rows[str(d)]["best_checkpoint"] for d in job.run_dirs)
    table = run_cli(["runs"], cwd=work).stdout
    assert all(f"digits/{d.name}" in table for d in job.run_dirs)


@pytest.mark.parametrize(("args", "message"), [
    (["--partition", "gpu-a100"], "partition 'gpu-a100' does not exist on this cluster"),
    (["trainer.devices=3", "data.batch_size=66"], "3 tasks per node (trainer.devices) x 1 CPUs per task"),
    (["model.nam=tiny_cnn"], "unknown key 'model.nam' (did you mean 'model.name'?)"),
    (["--nodes", "5", "data.batch_size=640"], "--nodes 5 (trainer.num_nodes) but partition"),
])
def test_bad_submission_is_refused_before_sbatch(args: list[str], message: str, work: Path) -> None:
    before = subprocess.run(["squeue", "-h", "-o", "%i"], capture_output=True, text=True).stdout
    runs_before = set((work / "runs").glob("*/*")) if (work / "runs").is_dir() else set()
    res = run_cli(["submit", str(CONFIG), f"data.root={work / 'digits'}", *TRAIN, *RESOURCES, *args], cwd=work,
                  timeout=180, check=False)
    assert res.returncode == 2, res.stderr
    assert message in res.stderr and res.stderr.startswith("vislab: error: "), res.stderr
    assert subprocess.run(["squeue", "-h", "-o", "%i"], capture_output=True, text=True).stdout == before
    assert (set((work / "runs").glob("*/*")) if (work / "runs").is_dir() else set()) == runs_before


def test_a_job_that_makes_no_progress_stops_requeueing(reference: tuple[Job, str], work: Path) -> None:
    """Three starts in a row that resumed at the same step: the fourth gives up instead of training."""
    ref, _ = reference
    run = work / "runs" / "digits" / "stuck"
    shutil.copytree(ref.run_dir, run, ignore=shutil.ignore_patterns("slurm-*", "summary.json", "restarts.jsonl"))
    script = (run / "job.sbatch").read_text().replace(str(ref.run_dir), str(run))
    (run / "job.sbatch").write_text(script)
    (run / "restarts.jsonl").write_text("".join(json.dumps({"start": i, "step": 20}) + "\n" for i in range(4)))
    out = subprocess.run(["sbatch", "--parsable", str(run / "job.sbatch")], capture_output=True, text=True, check=True)
    job = Job(out.stdout.strip(), [run])
    info = wait_final(job, expect="FAILED")
    assert info["ExitCode"] == "4:0"
    assert "[vislab] giving up: the last 3 restarts" in (run / f"slurm-{job.id}.err").read_text()
    assert len(starts(run)) == 4  # refused before starting: nothing appended, nothing trained


def test_job_across_two_nodes_survives_a_rank_dying(cluster: dict[str, int], work: Path) -> None:
    """gloo DDP with one task on each of two hosts. Then the rank on the second host is killed: srun
    --kill-on-bad-exit ends the step at once (no hang until the time limit), the batch script requeues the
    job, and the restart resumes from the last checkpoint and finishes."""
    if len(cluster) < 2:
        skip_unless_ci(f"the cluster has one node ({', '.join(cluster)}); start two: "
                       "sudo slurm/local_cluster_up.sh --nodes 2")
    job = submit(work, "--nodes", "2", "trainer.devices=1", "run_id=two-nodes")
    run = job.run_dir
    assert "#SBATCH --nodes=2\n#SBATCH --ntasks-per-node=1\n" in (run / "job.sbatch").read_text()
    wait_for(lambda: trained_steps(run) >= STEPS_PER_EPOCH + 3, "training to pass epoch 0", job, every=0.1)
    hosts = subprocess.run(["scontrol", "show", "hostnames", job_info(job.id)["NodeList"]], capture_output=True,
                           text=True).stdout.split()
    assert len(hosts) == 2  # two hosts: own network namespace, address and hostname each
    victims = job_pids(job.id, rank=1)
    assert victims, "rank 1 not found"
    killed_at = time.time()
    for pid in victims:
        os.kill(pid, signal.SIGKILL)  # a process of the job this test submitted
    wait_for(lambda: job_info(job.id).get("JobState") not in ("RUNNING", "COMPLETING"), "the step to fail", job,
             timeout=60, every=0.2)
    assert time.time() - killed_at < 30
    release_requeued(job)
    wait_final(job)
    first, second = starts(run)
    assert "stop_signal" not in first  # a crash writes no checkpoint
    # resumed from the last epoch-end checkpoint before the kill (epoch 0's, unless the kill landed later)
    assert second["step"] % STEPS_PER_EPOCH == 0 and STEPS_PER_EPOCH <= second["step"] < EPOCHS * STEPS_PER_EPOCH
    assert second["nodes"] == first["nodes"] == job_info(job.id)["NodeList"]
    assert "training failed (exit" in (run / f"slurm-{job.id}.err").read_text()
    summary = json.loads((run / "summary.json").read_text())
    assert summary["num_processes"] == 2 and summary["global_step"] == EPOCHS * STEPS_PER_EPOCH
