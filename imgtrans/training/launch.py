"""`nproc=N`: a run kind's command started again as N processes of one torchrun job on this machine, and
watched from here. The job's MLflow run is opened here first (the processes continue it); torchrun's
temporary folders live in a scratch folder that goes with the job; a process that dies (killed, out of
memory) is said in one line and recorded as the run's reason — not as torchrun's traceback, and not as the
"interrupted (SIGTERM)" of the processes torchrun then stops."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from dataclasses import dataclass

from mlflow.exceptions import MlflowException

from imgtrans.cli import ONLY_GIVEN_OPTIONS
from imgtrans.compute.distributed import PEER_LOST
from imgtrans.files import scratch_dir
from imgtrans.interrupts import RESUME_HINT
from imgtrans.tracking import store
from imgtrans.tracking.tracker import FAILED_RANK_TAG, open_run
from imgtrans.training import checkpoint

TORCHRUN_LOGGER = re.compile(r"torch[./]distributed[./]elastic")
# What the surviving processes say when another one died: the consequence, not the cause.
CONSEQUENCES = ("imgtrans: interrupted (", f"imgtrans: error: {PEER_LOST}")
TRACEBACK = "Traceback (most recent call last):"
TORCHRUN_STOPPED = "SignalException"
# How Python joins the tracebacks of an exception raised while another was handled.
CHAINED = ("During handling of the above exception, another exception occurred:",
           "The above exception was the direct cause of the following exception:")
TORCHRUN_LOGGING_ERROR = "--- Logging error ---"  # torchrun logging as a signal stops it; its traceback follows


@dataclass(frozen=True)
class Death:
    rank: int
    exitcode: int

    def describe(self) -> str:
        how = f"was killed by {signal.Signals(-self.exitcode).name}" if self.exitcode < 0 else \
            f"exited with status {self.exitcode}"
        return f"the process of rank {self.rank} {how}"


def launch(nproc: int, arguments: list[str], name: str, command: str, experiment: str,
           tags: dict[str, str]) -> int:
    """`imgtrans ARGUMENTS` as `torchrun --standalone --nproc_per_node nproc` (one machine; for several, start
    torchrun yourself with --nnodes and a rendezvous). Returns its exit status; an interrupt is passed on."""
    run = open_run(experiment, name, command, "train", tags=tags)
    with scratch_dir("torchrun") as scratch:
        env = {**os.environ, "MLFLOW_RUN_ID": run.run_id, ONLY_GIVEN_OPTIONS: "1", "TMPDIR": str(scratch)}
        job = subprocess.Popen([sys.executable, "-m", "torch.distributed.run", "--standalone",
                                f"--nproc_per_node={nproc}", "-m", "imgtrans", "--", *arguments],  # after --: ours
                               env=env, stderr=subprocess.PIPE, text=True, bufsize=1)
        try:
            death, held, _ = _relay(job)
            status = job.wait()
        except KeyboardInterrupt:  # torchrun hands SIGTERM to its processes, which checkpoint and stop together
            job.send_signal(signal.SIGTERM)
            _, _, said = _relay(job)
            job.wait()
            # A terminal's Ctrl-C reached torchrun too (not the processes: it starts them in sessions of their own),
            # which can then pass them both signals, and a second one stops them before they say where; the last
            # checkpoint is where the run continues.
            if not any(RESUME_HINT in line for line in said) and _resumable(run.run_id):
                print(f"imgtrans: stopped; {RESUME_HINT} {run.run_id}", file=sys.stderr)
            raise
    if death is None:
        for line in held:  # the job was stopped from outside: the processes say so themselves
            print(line, file=sys.stderr)
        return status
    reason = death.describe()
    recorded = store.get_run(run.run_id)
    if death.exitcode == 2:  # bad input, which the processes said in one line (rank 0 ended the run with it)
        if store.is_running(recorded):
            store.end_run(run.run_id, "FAILED", reason)
        if _resumable(run.run_id):  # found after a checkpoint (a damaged image, a full disk): fixed, go on
            print(f"imgtrans: when that is fixed, {RESUME_HINT} {run.run_id}", file=sys.stderr)
        return 2
    if FAILED_RANK_TAG not in recorded.data.tags:  # no process recorded a reason of its own
        store.end_run(run.run_id, "FAILED", reason)
    print(f"imgtrans: error: {reason}; the job stopped (run {run.run_id}: resume it with --resume "
          f"{run.run_id})", file=sys.stderr)
    return status or 1


def _resumable(run_id: str) -> bool:
    """Whether the run has a checkpoint to resume from (not when the store cannot say)."""
    try:
        return store.has_artifact(run_id, checkpoint.LAST_ARTIFACT)
    except MlflowException:
        return False


def _relay(job: subprocess.Popen) -> tuple[Death | None, list[str], set[str]]:
    """Pass the processes' stderr on, each of their `imgtrans:` lines once (every process says the same); keep
    torchrun's own logging and tracebacks back, and read from them which process died first. The survivors'
    "interrupted (SIGTERM)" and "another process stopped" lines are held back: they are the consequence, not
    the cause, when one of them died. Returns (the death, the lines held back, every `imgtrans:` line said)."""
    held, tail, said = [], [], set()
    for line in job.stderr:
        line = line.rstrip("\n")
        if TORCHRUN_LOGGER.search(line) or line == TORCHRUN_LOGGING_ERROR or line in said:
            continue
        ours = line.startswith("imgtrans: ")  # a process's one line, even after torchrun's traceback began
        if ours:
            said.add(line)
        if line.startswith(CONSEQUENCES):
            held.append(line)
        elif not ours and (tail or line.startswith(TRACEBACK)):  # torchrun's: tracebacks are sorted at the end
            tail.append(line)
        else:
            print(line, file=sys.stderr)
    death = None
    for block in _tracebacks(tail):
        if "ChildFailedError" not in block:
            if TORCHRUN_STOPPED not in block:  # a process's own (not torchrun's, as it stops on a signal): pass it on
                print(TRACEBACK + block, file=sys.stderr)
            continue
        found = re.search(r"rank\s*:\s*(\d+).*?exitcode\s*:\s*(-?\d+)", block.split("Root Cause", 1)[-1], re.S)
        death = Death(int(found[1]), int(found[2])) if found else None
    return death, held, said


def _tracebacks(lines: list[str]) -> list[str]:
    """The tracebacks in `lines`, an exception's chain as one: a signal that stops torchrun while it handles
    another exception (a logging cache miss, say) prints that exception first, and the chain is torchrun's."""
    tracebacks = []
    for block in "\n".join(lines).split(TRACEBACK)[1:]:
        if tracebacks and tracebacks[-1].rstrip().endswith(CHAINED):
            tracebacks[-1] += TRACEBACK + block
        else:
            tracebacks.append(block)
    return tracebacks
