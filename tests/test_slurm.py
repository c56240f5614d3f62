"""SLURM jobs: each job's resources from the command line, logs that say what runs and how it ended, and the
smoke benchmark submitted to a live one-node SLURM cluster (Debian's slurmctld, slurmd and munge) started here."""
from __future__ import annotations

import os
import pwd
import re
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Dict, Iterator, List

import pytest

from cli_helpers import run
from nnunetv2_imnet import cli
from nnunetv2_imnet.benchmark.synthetic import make_synthetic_dataset

DAEMONS = ("munged", "slurmctld", "slurmd")
CLIENTS = ("sbatch", "squeue", "sinfo", "scancel")
#: the live test took 16-20 minutes on 2 CPU cores shared with a training run (load 10-12); this bounds a hang
CLUSTER_TIMEOUT_S = 2700


def _scripts(tmp_path: Path, *options: str) -> Path:
    """Write the job scripts for a smoke benchmark (baseline and IMNet, fold 0) and return their folder."""
    raw = tmp_path / "raw"
    (raw / "Dataset990_IMNetDemo").mkdir(parents=True)  # only found, never read, when writing scripts
    jobs = tmp_path / "jobs"
    cli.main(["benchmark", "--raw", str(raw), "--work", str(tmp_path / "work"), "-d", "990", "--folds", "0",
              "--budget", "smoke", "--device", "cpu", "--eval-noise", "rician:5", "--slurm", str(jobs), *options])
    return jobs


def _directives(script: Path) -> List[str]:
    """The ``#SBATCH`` options of a job script other than its name, log file and array range."""
    options = re.findall(r"^#SBATCH (\S+)$", script.read_text(), flags=re.M)
    return [o for o in options if not o.startswith(("--job-name=", "--output=", "--array="))]


def test_default_jobs_ask_for_as_many_cpus_as_their_commands_use(tmp_path: Path) -> None:
    jobs = _scripts(tmp_path)
    assert _directives(jobs / "prepare.sbatch") == ["--cpus-per-task=2"]  # nnUNetv2_plan_and_preprocess -np 2
    assert _directives(jobs / "train.sbatch") == ["--cpus-per-task=2", "--requeue"]
    assert _directives(jobs / "report.sbatch") == ["--cpus-per-task=1"]
    assert "#SBATCH --array=0-1" in (jobs / "train.sbatch").read_text()


def test_each_job_kind_takes_its_own_options_and_they_replace_defaults_of_the_same_name(tmp_path: Path) -> None:
    jobs = _scripts(tmp_path, "--slurm-option=--gpus=1", "--slurm-option=--cpus-per-task=8",
                    "--slurm-prepare-option=--cpus-per-task=4", "--slurm-prepare-option=--partition=cpu",
                    "--slurm-report-option=--time=0:30:00")
    assert _directives(jobs / "train.sbatch") == ["--requeue", "--gpus=1", "--cpus-per-task=8"]
    assert _directives(jobs / "prepare.sbatch") == ["--cpus-per-task=4", "--partition=cpu"]
    assert _directives(jobs / "report.sbatch") == ["--cpus-per-task=1", "--time=0:30:00"]


def test_a_short_sbatch_option_is_refused_with_the_long_form_to_use(tmp_path: Path, capsys) -> None:
    with pytest.raises(SystemExit):
        _scripts(tmp_path, "--slurm-prepare-option=-c 4")
    error = capsys.readouterr().err
    assert "argument --slurm-prepare-option: '-c 4' is not a long sbatch option" in error
    assert "--cpus-per-task=8 rather than -c 8" in error
    assert not (tmp_path / "jobs").exists()


def test_a_failed_task_log_says_what_ran_and_ends_with_its_exit_status_and_how_to_rerun_it(tmp_path: Path) -> None:
    jobs = _scripts(tmp_path)
    env = {**os.environ, "SLURM_ARRAY_TASK_ID": "5", "SLURM_JOB_NAME": "imnet-train", "SLURM_JOB_ID": "77"}
    result = subprocess.run(["bash", str(jobs / "train.sbatch")], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, timeout=300)  # one log, as SLURM writes it
    lines = result.stdout.strip().splitlines()
    assert result.returncode == 1
    assert "imnet-train job 77 on" in lines[0] and "run of array index 5 (of 0-1)" in lines[0]
    assert f"full logs: the files it names in {tmp_path / 'work' / 'logs'}/" in lines[0]
    assert lines[1].endswith(f"benchmark-job --spec {tmp_path / 'work' / 'spec.json'} --index 5")
    assert any("--index 5 is out of range: the spec has 2 jobs" in line for line in lines)
    assert re.search(r"FAILED: exit status 1; see the error above; fix the cause, then sbatch --array=5 "
                     rf"{re.escape(str(jobs))}/train.sbatch \(it continues where it stopped\)", lines[-1])


def _find(program: str) -> str:
    """A program's path; the daemons live in /usr/sbin, which is not on every PATH."""
    path = shutil.which(program, path=os.pathsep.join([os.environ.get("PATH", ""), "/usr/sbin", "/sbin"]))
    if path is None:
        pytest.skip(f"{program} not found: the SLURM test needs Debian's slurmctld, slurmd and munge "
                    f"(apt-get install slurmctld slurmd munge; .ci/run installs them when it runs as root)")
    return path


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _wait_for(condition, timeout: float, what: str, logs: List[Path]) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"{what} within {timeout:.0f} s; the logs' ends:\n" + _tails(logs))
        time.sleep(0.5)


def _tails(logs: List[Path], lines: int = 30) -> str:
    return "\n".join(f"--- {log}\n" + "\n".join(log.read_text(errors="replace").splitlines()[-lines:])
                     for log in logs if log.is_file())


def _slurm_conf(folder: Path, host: str, munge_socket: Path) -> str:
    """One node with 2 CPUs on this machine; no cgroups, no accounting database (finished jobs go to a text file)."""
    return "\n".join([
        "ClusterName=imnettest", f"SlurmctldHost={host}(127.0.0.1)", f"SlurmctldPort={_free_port()}",
        f"SlurmdPort={_free_port()}", "SlurmUser=root", "SlurmdUser=root",
        "AuthType=auth/munge", "CredType=cred/munge", f"AuthInfo=socket={munge_socket}",
        f"StateSaveLocation={folder / 'state'}", f"SlurmdSpoolDir={folder / 'spool'}",
        f"SlurmctldPidFile={folder / 'slurmctld.pid'}", f"SlurmdPidFile={folder / 'slurmd.pid'}",
        f"SlurmctldLogFile={folder / 'slurmctld.log'}", f"SlurmdLogFile={folder / 'slurmd.log'}",
        "ProctrackType=proctrack/linuxproc", "TaskPlugin=task/none", "JobAcctGatherType=jobacct_gather/none",
        "AccountingStorageType=accounting_storage/none", "MpiDefault=none",
        "JobCompType=jobcomp/filetxt", f"JobCompLoc={folder / 'jobcomp.txt'}",
        "SelectType=select/cons_tres", "SelectTypeParameters=CR_CPU", "ReturnToService=2",
        f"NodeName={host} NodeAddr=127.0.0.1 CPUs=2 State=UNKNOWN",
        f"PartitionName=debug Nodes={host} Default=YES MaxTime=INFINITE State=UP",
    ]) + "\n"


@pytest.fixture
def slurm_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Dict[str, str]]:
    """munged, slurmctld and slurmd of a one-node cluster in a temporary folder; yields the clients' environment.

    On the way out it cancels the cluster's jobs (slurmstepd outlives slurmd) and stops the daemons it started.
    """
    programs = {name: _find(name) for name in DAEMONS + CLIENTS}
    if os.geteuid() != 0:
        pytest.skip("the SLURM test needs root: slurmd starts the jobs as the user who submitted them")
    folder = tmp_path_factory.mktemp("slurm")
    for sub in ("state", "spool"):
        (folder / sub).mkdir()
    key, munge_socket = folder / "munge.key", folder / "munge.socket"
    key.write_bytes(os.urandom(128))
    key.chmod(0o600)
    host = socket.gethostname().split(".")[0]
    conf = folder / "slurm.conf"
    conf.write_text(_slurm_conf(folder, host, munge_socket))
    env = {**os.environ, "SLURM_CONF": str(conf)}
    started: List[subprocess.Popen] = []
    outputs = [folder / f"{name}.out" for name in DAEMONS]

    def start(command: List[str], output: Path) -> None:
        with open(output, "w") as handle:
            started.append(subprocess.Popen(command, env=env, stdout=handle, stderr=subprocess.STDOUT))

    try:
        start([programs["munged"], "--foreground", "--force", f"--key-file={key}", f"--socket={munge_socket}",
               f"--pid-file={folder / 'munged.pid'}", f"--log-file={folder / 'munged.log'}",
               f"--seed-file={folder / 'munged.seed'}"], outputs[0])
        _wait_for(munge_socket.exists, 30, "munged did not create its socket", outputs)
        start([programs["slurmctld"], "-D", "-c", "-f", str(conf)], outputs[1])
        start([programs["slurmd"], "-D", "-f", str(conf), "-N", host], outputs[2])

        def idle() -> bool:
            state = subprocess.run([programs["sinfo"], "-h", "-o", "%T"], env=env, capture_output=True, text=True)
            return state.stdout.strip() == "idle"

        _wait_for(idle, 120, "the SLURM node did not become idle",
                  outputs + [folder / "slurmctld.log", folder / "slurmd.log"])
        yield {**env, "IMNET_SLURM_FOLDER": str(folder)}
    finally:
        if len(started) == len(DAEMONS):
            subprocess.run([programs["scancel"], f"--user={pwd.getpwuid(os.geteuid()).pw_name}"], env=env,
                           timeout=60)
            queue = [programs["squeue"], "-h"]
            deadline = time.monotonic() + 60
            while subprocess.run(queue, env=env, capture_output=True, text=True).stdout.strip():
                if time.monotonic() > deadline:
                    break
                time.sleep(1)
        for daemon in reversed(started):
            daemon.terminate()
            try:
                daemon.wait(timeout=30)
            except subprocess.TimeoutExpired:
                daemon.kill()
                daemon.wait()


def _finished_jobs(record: Path) -> List[Dict[str, str]]:
    """The jobs slurmctld recorded as finished (jobcomp/filetxt: one line of KEY=VALUE fields per job)."""
    if not record.is_file():
        return []
    return [dict(field.split("=", 1) for field in line.split() if "=" in field)
            for line in record.read_text().splitlines()]


@pytest.mark.integration
def test_smoke_benchmark_runs_on_a_live_two_cpu_slurm_cluster_with_the_default_scripts(slurm_cluster, tmp_path):
    started = time.monotonic()
    raw = make_synthetic_dataset(tmp_path / "raw")
    work, jobs = tmp_path / "work", tmp_path / "jobs"
    env = {k: v for k, v in slurm_cluster.items() if not k.startswith("nnUNet_")}  # the jobs inherit it (sbatch)
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    run(["nnunetv2-imnet", "benchmark", "--raw", str(raw.parent), "-d", "990", "-c", "3d_fullres", "--folds", "0",
         "--budget", "smoke", "--device", "cpu", "--eval-noise", "rician:5", "--work", str(work), "--slurm",
         str(jobs)], env)
    submitted = run(["bash", str(jobs / "submit.sh")], env).stdout
    ids = dict(re.findall(r"(prepare|train|report) (\d+)", submitted))
    assert set(ids) == {"prepare", "train", "report"}, submitted
    record = Path(slurm_cluster["IMNET_SLURM_FOLDER"]) / "jobcomp.txt"
    slurm_logs = work / "logs" / "slurm"

    def report_finished() -> bool:
        finished = _finished_jobs(record)
        failed = [job for job in finished if job.get("ExitCode") != "0:0" or job.get("JobState") != "COMPLETED"]
        queue = run(["squeue", "-h", "-o", "%i %r"], env).stdout
        if failed or "DependencyNeverSatisfied" in queue:
            pytest.fail(f"a SLURM job failed: {failed or queue}\n" + _tails(sorted(slurm_logs.glob("*.log"))))
        return any(job["JobId"] == ids["report"] for job in finished)

    _wait_for(report_finished, CLUSTER_TIMEOUT_S, "the report job did not finish",
              sorted(slurm_logs.glob("*.log")) + [record])
    finished = {(job.get("ArrayJobId", job["JobId"]), job.get("ArrayTaskId")): job for job in _finished_jobs(record)}
    assert set(finished) == {(ids["prepare"], None), (ids["train"], "0"), (ids["train"], "1"), (ids["report"], None)}
    # the scheduler gave every job the CPUs its script asks for by default
    assert {key: job["ProcCnt"] for key, job in finished.items()} == {
        (ids["prepare"], None): "2", (ids["train"], "0"): "2", (ids["train"], "1"): "2", (ids["report"], None): "1"}
    results = (work / "results" / "results.md").read_text()
    assert "## Leaderboard" in results and "`nnUNetTrainerIMNet`" in results

    for task, trainer in (("0", "nnUNetTrainer"), ("1", "nnUNetTrainerIMNet")):
        lines = (slurm_logs / f"imnet-train_{ids['train']}_{task}.log").read_text().splitlines()
        assert f"run of array index {task} (of 0-1)" in lines[0]
        assert f"Dataset990_IMNetDemo/3d_fullres {trainer} fold 0: nnUNetv2_train, then nnUNetv2_predict and " \
               "nnUNetv2_evaluate_folder for clean, rician_snr5" in lines
        train_log = Path(next(re.match(r"full logs: (\S+) and ", line) for line in lines
                              if line.startswith("full logs: ")).group(1))
        assert train_log.parent == work / "logs" and "nnUNetv2_train 990 3d_fullres 0" in train_log.read_text()
        assert lines[-1].endswith("finished: exit status 0")
    for kind in ("prepare", "report"):
        lines = (slurm_logs / f"imnet-{kind}_{ids[kind]}.log").read_text().splitlines()
        assert f"imnet-{kind} job {ids[kind]} on" in lines[0] and lines[-1].endswith("finished: exit status 0")
    print(f"smoke benchmark on the live SLURM cluster: {time.monotonic() - started:.0f} s")
