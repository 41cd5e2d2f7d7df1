"""Where batch jobs run: a local pool (`--executor local`, the default) or Ray tasks on an
existing cluster or a local Ray instance (`--executor ray [--address ADDR]`).

Both call ``jobs.run_job`` for each job, so a job runs the same way in both: a child
process with its limits, writing OUT/jobs/NAME. The Ray executor needs OUT and the
manifest's folder at the same path on every node (a shared file system).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from typing import Any

from convertkit.batch.classify import JobOutcome, outcome_from_error
from convertkit.batch.jobs import JobContext, allow_jobs, run_job, stop_running_jobs
from convertkit.batch.manifest import JobSpec
from convertkit.config import enable_ray_token_auth, ray_auth_mode, ray_auth_token_source
from convertkit.dependencies import require
from convertkit.errors import UsageError

EXECUTORS = ("local", "ray")


@dataclass(frozen=True)
class Work:
    job: JobSpec
    context: JobContext


OnStart = Callable[[JobSpec], None]
OnDone = Callable[[JobOutcome], None]


def run_local(work: Sequence[Work], parallel: int, on_start: OnStart, on_done: OnDone) -> None:
    """Run ``work`` on this machine, ``parallel`` jobs at a time."""
    allow_jobs()
    with ThreadPoolExecutor(max_workers=max(1, parallel),
                            thread_name_prefix="convertkit-job") as pool:
        pending: dict[Future, Work] = {}
        queue = list(work)
        try:
            while queue or pending:
                while queue and len(pending) < parallel:
                    item = queue.pop(0)
                    on_start(item.job)
                    pending[pool.submit(run_job, item.job, item.context)] = item
                done, _ = wait(pending, return_when=FIRST_COMPLETED)
                for future in done:
                    item = pending.pop(future)
                    on_done(_result(future, item))
        except BaseException:
            stop_running_jobs()
            for future in pending:
                future.cancel()
            raise


def _result(future: Future, item: Work) -> JobOutcome:
    try:
        return future.result()
    except Exception as exc:  # the batch side of a job failed (disk full, ...)
        return outcome_from_error(item.job.name, {
            "code": "batch-error", "exit_code": 2,
            "message": f"the batch could not run the job: {type(exc).__name__}: {exc}"}, 0.0)


def run_on_ray(work: Sequence[Work], parallel: int | None, address: str | None,
               on_start: OnStart, on_done: OnDone) -> None:
    """Run ``work`` as Ray tasks, each asking for one CPU per math thread plus the custom
    resources of its targets (manifest `resources:`). Without ``address`` a local Ray
    instance is started with ``parallel`` CPUs (default: this machine's) and stopped
    after."""
    ray = require("ray", name="Ray", extra="batch", needed_for="needed for --executor ray")

    started_here = False
    if not ray.is_initialized():
        options: dict[str, Any] = {"include_dashboard": False, "log_to_driver": False,
                                   "configure_logging": False}
        if address:
            options["address"] = address
            if enable_ray_token_auth():
                # Ray read RAY_AUTH_MODE when imported: reload, as its _enable_token_auth does.
                ray._raylet.Config.initialize("")
        else:  # "local": always a new instance, never a cluster `ray start` left running
            options.update(address="local", num_cpus=parallel or os.cpu_count() or 1)
        try:
            ray.init(**options)
        except (ConnectionError, RuntimeError, ValueError,
                ray.exceptions.AuthenticationError) as exc:
            if _is_auth_refusal(ray, exc):
                raise _auth_error(ray, address, exc) from exc
            raise UsageError(f"cannot connect to {_cluster(address)}: {exc}",
                             hint="pass --address HOST:PORT of a running cluster (`ray status` "
                             "on its head node), or leave --address out for a local instance",
                             code="ray-unreachable") from exc
        started_here = True
    try:
        _submit_and_collect(ray, work, parallel, on_start, on_done)
    finally:
        if started_here:
            ray.shutdown()


def _is_auth_refusal(ray, exc: BaseException | None) -> bool:
    """Whether ``ray.init`` failed on token authentication. Ray raises AuthenticationError
    itself only when it has no token to send; a cluster that refuses the client shows only
    in the text of the ConnectionError's cause (the gRPC status, ``InvalidAuthToken``)."""
    while exc is not None:
        if isinstance(exc, ray.exceptions.AuthenticationError) or "InvalidAuthToken" in str(exc):
            return True
        exc = exc.__cause__ or exc.__context__
    return False


def _cluster(address: str | None) -> str:
    return f"the Ray cluster at {address}" if address else "the local Ray instance"


def _auth_error(ray, address: str | None, exc: BaseException) -> UsageError:
    mode, source = ray_auth_mode(), ray_auth_token_source()
    if isinstance(exc, ray.exceptions.AuthenticationError):  # raised before connecting
        problem = f"cannot authenticate to {_cluster(address)}: {exc.message}"
    elif mode is not None and mode.lower() != "token":
        problem = (f"{_cluster(address)} wants an authentication token, and "
                   f"RAY_AUTH_MODE={mode} here sends none")
    elif source is None:
        problem = (f"{_cluster(address)} wants an authentication token, and "
                   "there is none here")
    else:
        problem = f"{_cluster(address)} refused the authentication token from {source}"
    return UsageError(
        problem,
        hint="put the cluster's token (`ray get-auth-token` on its head node) in "
             "~/.ray/auth_token here, or in RAY_AUTH_TOKEN (or a file named by "
             "RAY_AUTH_TOKEN_PATH), with RAY_AUTH_MODE unset or `token`",
        code="ray-auth")


def _submit_and_collect(ray, work: Sequence[Work], parallel: int | None, on_start: OnStart,
                        on_done: OnDone) -> None:
    remote = ray.remote(max_retries=0)(_run_job_task)
    available = ray.cluster_resources()
    queue = list(work)
    in_flight: dict[Any, tuple[Work, float]] = {}
    limit = parallel or len(queue) or 1
    try:
        while queue or in_flight:
            while queue and len(in_flight) < limit:
                item = queue.pop(0)
                resources = dict(item.job.resources)
                cpus = float(item.job.limits.threads or item.context.threads or 1)
                missing = [name for name, amount in resources.items()
                           if available.get(name, 0.0) < amount]
                on_start(item.job)
                if missing:
                    on_done(_infeasible(item.job, missing))
                    continue
                ref = remote.options(num_cpus=cpus, resources=resources).remote(
                    item.job.to_dict(), item.context.to_dict())
                in_flight[ref] = (item, time.monotonic())
            if not in_flight:
                continue
            ready, _ = ray.wait(list(in_flight), num_returns=1)
            for ref in ready:
                item, started = in_flight.pop(ref)
                try:
                    outcome = JobOutcome.from_dict(ray.get(ref))
                except Exception as exc:  # the Ray worker itself died
                    outcome = outcome_from_error(item.job.name, {
                        "code": "job-crashed", "exit_code": 3,
                        "message": f"the Ray task failed: {type(exc).__name__}: "
                                   f"{str(exc).splitlines()[0] if str(exc) else ''}"},
                        round(time.monotonic() - started, 3))
                on_done(outcome)
    except BaseException:
        for ref in in_flight:
            ray.cancel(ref, force=True)
        raise


def _run_job_task(job: dict, context: dict) -> dict:
    """The Ray task: runs in a Ray worker, on whichever node has the resources."""
    return run_job(JobSpec.from_dict(job), JobContext(**context)).to_dict()


def _infeasible(job: JobSpec, missing: list[str]) -> JobOutcome:
    return outcome_from_error(job.name, {
        "code": "missing-resource", "exit_code": 4,
        "message": "no node of the Ray cluster offers "
                   + ", ".join(f"{name}={amount:g}" for name, amount in job.resources
                               if name in missing),
        "hint": "start a node that has the toolchain with `ray start --resources "
                "'{\"NAME\": N}'`, or drop the target from this model"}, 0.0)
