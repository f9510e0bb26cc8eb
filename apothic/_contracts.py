"""The frozen contracts between clients, workflows, activities and containers.

Each workflow and activity takes one of these dataclasses and returns one. They evolve
only by adding optional fields (with defaults) so that running workflows keep replaying.
Names here are also the names a person sees in the Temporal UI.
"""

from __future__ import annotations

import dataclasses
import re
from typing import Any

from ._data._serialization import CloudPickled

# Names of workflows, activities, signals and queries: stable, never renamed.
INVOCATION_WORKFLOW = "InvocationWorkflow"
MAP_WORKFLOW = "MapWorkflow"
FLEET_WORKFLOW = "FleetWorkflow"
CONTAINER_WORKFLOW = "ContainerWorkflow"
APP_WORKFLOW = "AppWorkflow"
EXECUTE_ACTIVITY = "apothic.execute"
EXECUTE_BATCH_ACTIVITY = "apothic.execute_batch"
# Error type of a batch input its container did not get to (requeued, never counted).
NOT_RUN = "apothic.NotRun"
RESOLVE_ACTIVITY = "apothic.resolve_deployment"
ENSURE_FLEET_ACTIVITY = "apothic.ensure_fleet"
CLOSED_JOBS_ACTIVITY = "apothic.closed_jobs"
RUN_CONTAINER_ACTIVITY = "apothic.run_container"
RELEASE_CONTAINER_ACTIVITY = "apothic.release_container"
SYNC_SCHEDULES_ACTIVITY = "apothic.sync_schedules"
# Signals of an InvocationWorkflow that add to the job's event log (see JobEventIn).
CONTAINER_EVENT_SIGNAL = "container_event"
RUNTIME_EVENTS_SIGNAL = "runtime_events"

# The job event types, in the order a job usually meets them. Container-side steps come from
# the control worker's run_container activity (signal container_event), started/log/output from the
# function container (signal runtime_events), the rest from the job's own workflow.
CONTAINER_EVENT_TYPES = ("placement", "provisioning", "image", "volume", "container")
TERMINAL_EVENT_TYPES = ("completed", "failed", "cancelled")
EVENT_TYPES = ("queued", *CONTAINER_EVENT_TYPES, "started", "log", "output", "retry", *TERMINAL_EVENT_TYPES)

# Exit codes of a function container (apothic.runtime).
EXIT_OK = 0  # drained or stopped on request
EXIT_REPLACE = 3  # an input could not be interrupted; the container retired itself
EXIT_BAD_CODE = 4  # the function's code could not be loaded

SEARCH_ATTR_APP = "ApothicApp"
SEARCH_ATTR_FUNCTION = "ApothicFunction"

NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,62}$")


def app_workflow_id(app: str) -> str:
    return f"apothic-app:{app}"


def fleet_workflow_id(app: str, function: str, version: int) -> str:
    return f"apothic-fleet:{app}:{function}:v{version}"


def container_workflow_id(app: str, function: str, version: int, container_id: str) -> str:
    return f"apothic-container:{app}:{function}:v{version}:{container_id}"


def schedule_id(app: str, function: str) -> str:
    """The Temporal Schedule of a function's ``schedule=`` (``:`` appears in no name)."""
    return f"apothic-schedule:{app}:{function}"


def scheduled_job_prefix(app: str, function: str) -> str:
    """Workflow id of a scheduled run, before the ``-<time>Z`` Temporal appends to it."""
    return f"job-sched-{app}.{function}"


def deployment_task_queue(app: str, function: str, version: int) -> str:
    return f"apothic:{app}:{function}:v{version}"


@dataclasses.dataclass(frozen=True)
class RetrySpec:
    """A function's retry policy for its own errors (see ``apothic.Retries``)."""

    max_retries: int = 0
    initial_delay: float = 1.0
    backoff_coefficient: float = 2.0
    max_delay: float = 60.0
    # Qualified names (module.Qualname) of exception types that are never retried.
    non_retryable: list[str] = dataclasses.field(default_factory=list)

    def delay(self, retry: int) -> float:
        """Seconds to wait before user retry number ``retry`` (1-based)."""
        return min(self.initial_delay * self.backoff_coefficient ** (retry - 1), self.max_delay)


@dataclasses.dataclass(frozen=True)
class ScheduleConfig:
    """A function's ``schedule=`` (``apothic.Cron`` or ``apothic.Period``) as deployed.

    ``cron`` is the expression as written (croniter's dialect); ``temporal_cron`` the Temporal
    cron strings it became (fired as their union); ``every_s`` a Period in whole seconds.
    """

    kind: str  # "cron" or "period"
    cron: str = ""
    temporal_cron: list[str] = dataclasses.field(default_factory=list)
    timezone: str = "UTC"
    every_s: int = 0
    # skip, buffer_one, buffer_all, cancel_other, terminate_other or allow_all
    overlap: str = "skip"


@dataclasses.dataclass(frozen=True)
class BatchSpec:
    """``@apothic.batched(max_batch_size=, wait_ms=)``: the runtime gathers single inputs into lists."""

    max_batch_size: int
    wait_ms: int


@dataclasses.dataclass(frozen=True)
class MountSpec:
    """One storage mount of a function: a volume or a bucket at ``path`` in its container.

    ``kind`` is ``"volume"`` (``name``, ``backend``: ``default``, ``cloud`` or ``vast_local``) or
    ``"bucket"`` (``name`` is the bucket; ``options``: ``prefix``, ``endpoint_url``,
    ``read_only``, ``access_key_secret``, ``secret_key_secret``). Secrets are named, never
    carried: their values are read where the container starts.
    """

    path: str
    kind: str
    name: str
    backend: str = "default"
    read_only: bool = False
    options: dict[str, Any] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass(frozen=True)
class FunctionSpec:
    """What the control plane needs to know about one function of a deployment."""

    name: str
    qualname: str = ""
    module: str = ""
    cpu: int = 1
    memory_mb: int = 1024
    timeout_s: int = 600
    retry: RetrySpec = dataclasses.field(default_factory=RetrySpec)
    concurrent_requests: int = 1
    max_pending_tasks: int = 100
    max_containers: int = 1
    tasks_per_container: int = 1
    provider: str = "process"
    is_async: bool = False
    is_generator: bool = False
    # apothic.Image.to_dict() of the function's image, or None for the worker's environment.
    image: dict[str, Any] | None = None
    # The placement filters that are set (``compile_filters`` arguments), recompiled by the
    # control worker; None: any machine that fits cpu/memory/disk_gb.
    placement: dict[str, Any] | None = None
    disk_gb: float | None = None
    # Run on this schedule (a Temporal Schedule kept in step with the current version).
    schedule: ScheduleConfig | None = None
    # @apothic.concurrent(target_inputs=): inputs per container the autoscaler aims at before it
    # starts another (None: concurrent_requests, the most one container takes at once).
    target_inputs: int | None = None
    # @apothic.batched(...), or None.
    batch: BatchSpec | None = None
    # Names of the secrets whose KEY=VALUE pairs go into the container's environment.
    secrets: list[str] = dataclasses.field(default_factory=list)
    # Volumes and bucket mounts, by mount path.
    mounts: list[MountSpec] = dataclasses.field(default_factory=list)


@dataclasses.dataclass(frozen=True)
class DeployFunction:
    spec: FunctionSpec
    code: CloudPickled


@dataclasses.dataclass(frozen=True)
class DeployRequest:
    """A whole app's functions, as ``app.deploy()`` sends them."""

    app: str
    functions: list[DeployFunction]
    code_hash: str
    client: str = ""


@dataclasses.dataclass(frozen=True)
class DeployResult:
    app: str
    version: int
    created: bool
    functions: list[str]


@dataclasses.dataclass(frozen=True)
class AppVersion:
    version: int
    code_hash: str
    deployed_at: str
    functions: list[DeployFunction]


@dataclasses.dataclass(frozen=True)
class AppState:
    """The AppWorkflow's state, carried across continue-as-new."""

    app: str
    versions: list[AppVersion] = dataclasses.field(default_factory=list)
    removed: bool = False


@dataclasses.dataclass(frozen=True)
class AppMemo:
    """The AppWorkflow's memo: its current version, readable with one ``describe``."""

    app: str
    version: int = 0
    deployed_at: str = ""
    functions: list[FunctionSpec] = dataclasses.field(default_factory=list)
    removed: bool = False


APP_MEMO_KEY = "apothic.current"


@dataclasses.dataclass(frozen=True)
class AppSummary:
    app: str
    version: int
    deployed_at: str
    functions: list[str]


@dataclasses.dataclass(frozen=True)
class Deployment:
    """One function at one version: where its inputs go and how they run."""

    app: str
    function: str
    version: int
    task_queue: str
    fleet_id: str
    spec: FunctionSpec
    # Platform settings (temporal-dev.yaml `worker`) of whoever resolved it: the client that
    # submitted the job, or the control worker for jobs started without one.
    startup_timeout_s: float = 300.0
    idle_s: float = 60.0


@dataclasses.dataclass(frozen=True)
class ResolveRequest:
    app: str
    function: str
    version: int = 0  # 0: the current version


@dataclasses.dataclass(frozen=True)
class CodeRequest:
    function: str
    version: int


def make_deployment(app: str, spec: FunctionSpec, version: int, startup_timeout_s: float, idle_s: float) -> Deployment:
    return Deployment(
        app=app,
        function=spec.name,
        version=version,
        task_queue=deployment_task_queue(app, spec.name, version),
        fleet_id=fleet_workflow_id(app, spec.name, version),
        spec=spec,
        startup_timeout_s=startup_timeout_s,
        idle_s=idle_s,
    )


def container_slots(spec: FunctionSpec) -> int:
    """Inputs one container runs at once: ``tasks_per_container`` processes, each taking
    ``concurrent_requests`` (a map's batch takes one slot)."""
    return max(1, spec.tasks_per_container) * max(1, spec.concurrent_requests)


def container_target(spec: FunctionSpec) -> int:
    """Inputs per container the fleet aims at before it starts another: ``target_inputs``
    (default ``concurrent_requests``) per process, times ``tasks_per_container``."""
    return max(1, spec.tasks_per_container) * max(1, spec.target_inputs or spec.concurrent_requests)


def fleet_slots(spec: FunctionSpec) -> int:
    """Inputs the whole fleet runs at once at its ceiling (``max_containers`` containers)."""
    return max(1, spec.max_containers) * container_slots(spec)


@dataclasses.dataclass(frozen=True)
class InvocationInput:
    """One call of a function: the Job."""

    job_id: str
    app: str
    function: str
    args: CloudPickled
    version: int = 0  # 0: the version current when the job starts
    submitted_at: str = ""
    # Resolved by the client from the app's memo; None: resolve in the workflow.
    deployment: Deployment | None = None
    # The client saw every slot of the fleet taken, or no fleet (FleetPending.saturated): the job
    # asks for capacity at once instead of after its first 250 ms.
    demand_now: bool = False


@dataclasses.dataclass(frozen=True)
class AttemptLogs:
    """What one attempt of a job printed (stdout and stderr), and how it ended.

    ``outcome`` is ``failed: <Type>: <message>``, ``container lost``, ``completed`` or
    ``cancelled``. ``logs`` is the runtime's last 256 KiB, or the tail of it for an old
    attempt (marked ``[... N earlier bytes of this attempt's output cut ...]``).
    """

    attempt: int
    outcome: str
    logs: str = ""


@dataclasses.dataclass(frozen=True)
class JobLogs:
    """The output of a job's earlier attempts (query ``logs``; once the job has ended, in its
    ``InvocationResult.earlier`` or in the failure's ``earlier`` detail).

    ``attempt`` is the attempt running now (or the last one), ``outcome`` how that one ended
    (``""`` while it runs). ``not_kept`` counts the first attempts whose output was dropped to
    keep the job's history small.
    """

    attempts: list[AttemptLogs] = dataclasses.field(default_factory=list)
    attempt: int = 0
    outcome: str = ""
    not_kept: int = 0


@dataclasses.dataclass(frozen=True)
class InvocationResult:
    value: CloudPickled
    logs: str = ""
    version: int = 0
    container_id: str = ""
    # The output of the attempts before the last one (None: a single attempt).
    earlier: JobLogs | None = None


@dataclasses.dataclass(frozen=True)
class AttemptRecord:
    """One failed attempt of a job and what was done about it.

    ``kind`` is ``user`` (the function raised or ran past its timeout; counts against its
    retries) or ``infrastructure`` (its container or host was lost; never counts).
    """

    attempt: int
    kind: str
    reason: str
    at: str
    retry_in_s: float = 0.0
    retried: bool = True


@dataclasses.dataclass(frozen=True)
class JobInfo:
    """What the ``info`` query of an InvocationWorkflow answers."""

    job_id: str
    app: str
    function: str
    version: int
    status: str
    attempt: int = 0
    container_id: str = ""
    error: str = ""
    attempts: list[AttemptRecord] = dataclasses.field(default_factory=list)


@dataclasses.dataclass(frozen=True)
class ExecuteInput:
    """One input for ``apothic.execute`` on a deployment's task queue."""

    job_id: str
    function: str
    version: int
    args: CloudPickled
    timeout_s: float
    attempt: int = 1
    # The last checkpoint of an earlier attempt lost to an infrastructure failure.
    checkpoint: CloudPickled | None = None
    # Workflow id to send this input's events to (signal runtime_events); "": none (maps).
    events_to: str = ""
    # Generator outputs already delivered by earlier attempts: the first ones yielded are skipped.
    skip_outputs: int = 0


@dataclasses.dataclass(frozen=True)
class ExecuteOutput:
    value: CloudPickled
    logs: str = ""
    container_id: str = ""
    # The attempt's events not yet sent by signal (a quick input sends none): added to the
    # job's event log before its terminal event.
    events: JobEventsIn | None = None


@dataclasses.dataclass(frozen=True)
class JobEventIn:
    """One step to add to a job's event log (signal ``container_event`` of its InvocationWorkflow).

    ``event`` is one of ``CONTAINER_EVENT_TYPES`` for the container side (other types sent by
    that signal are dropped); ``data`` is small JSON (at most ``MAX_EVENT_DATA_BYTES`` as a
    payload; larger data is replaced by a truncated ``summary``). ``at`` is when it happened
    (ISO 8601 with time zone; in a workflow ``workflow.now().isoformat()``); empty: when the job's
    workflow receives it. The job's workflow numbers events and keeps their times non-decreasing.
    """

    event: str
    data: dict[str, Any] = dataclasses.field(default_factory=dict)
    at: str = ""
    # The container the step is about (added to ``data`` as ``container_id``).
    container_id: str = ""


@dataclasses.dataclass(frozen=True)
class JobEventsIn:
    """A batch of events of one running attempt, from its container (signal ``runtime_events``).

    ``batch`` counts from 1 per attempt: a batch that arrives twice is added once.
    """

    attempt: int
    batch: int
    events: list[JobEventIn] = dataclasses.field(default_factory=list)
    container_id: str = ""


@dataclasses.dataclass(frozen=True)
class JobEventRecord:
    """One entry of a job's event log, as its workflow stream holds it (topic = ``event``).

    ``at`` is the workflow's time (ISO 8601, UTC); the sequence number is the stream offset + 1.
    """

    event: str
    at: str
    data: dict[str, Any] = dataclasses.field(default_factory=dict)


MAX_EVENT_DATA_BYTES = 16 * 1024


@dataclasses.dataclass(frozen=True)
class Demand:
    """Signal to a fleet: a job needs (``active``) or no longer needs capacity.

    ``weight`` is how many inputs at once it can use (a map asks for several).
    """

    job_id: str
    active: bool = True
    weight: int = 1


@dataclasses.dataclass(frozen=True)
class ContainerRecord:
    container_id: str
    started_at: str
    draining: bool = False


@dataclasses.dataclass(frozen=True)
class FleetInput:
    deployment: Deployment
    containers: list[ContainerRecord] = dataclasses.field(default_factory=list)
    outstanding: list[str] = dataclasses.field(default_factory=list)
    failures: int = 0
    retired: bool = False
    weights: dict[str, int] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass(frozen=True)
class FleetStatus:
    deployment: Deployment
    containers: list[ContainerRecord]
    outstanding: list[str]
    failures: int
    retired: bool
    last_error: str = ""
    # Inputs (a job: 1, a map: its batches in flight) of the outstanding callers.
    demand: int = 0
    # Inputs beyond what max_containers containers run at once (see FleetPending).
    waiting: int = 0
    # Inputs one container runs at once: tasks_per_container x concurrent_requests.
    slots_per_container: int = 1
    # Containers the demand asks for (ceil(demand / target per container), at most max_containers).
    wanted: int = 0


# The fleet's memo key of its FleetPending (read by clients with one describe).
FLEET_PENDING_MEMO_KEY = "apothic.pending"


@dataclasses.dataclass(frozen=True)
class FleetPending:
    """What a fleet tells clients before they submit (its memo ``apothic.pending``).

    ``waiting`` counts inputs beyond what ``max_containers`` containers run at once
    (``slots`` = max_containers x tasks_per_container x concurrent_requests); ``full`` is
    ``waiting >= limit`` (max_pending_tasks): spawn/remote are refused. ``saturated``: every slot
    is taken, so a new input waits. Written only when ``full`` or ``saturated`` changes, so
    ``waiting`` is the count at that moment.
    """

    full: bool = False
    saturated: bool = False
    waiting: int = 0
    limit: int = 0
    slots: int = 0


@dataclasses.dataclass(frozen=True)
class ContainerStopped:
    container_id: str
    ok: bool
    reason: str = ""


@dataclasses.dataclass(frozen=True)
class ContainerInput:
    container_id: str
    deployment: Deployment
    fleet_id: str


@dataclasses.dataclass(frozen=True)
class RunContainerInput:
    """For the provider activity that starts, watches and stops one container."""

    container_id: str
    container_workflow_id: str
    deployment: Deployment


@dataclasses.dataclass(frozen=True)
class RunContainerOutput:
    container_id: str
    exit_code: int
    reason: str = ""
    provider: str = ""
    # Where it ran: the provider's facts (pid, docker id, rented instance, offer, price).
    where: dict[str, Any] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass(frozen=True)
class ReleaseInput:
    container_id: str
    provider: str
    handle: dict[str, Any] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass(frozen=True)
class ClosedJobsRequest:
    job_ids: list[str]


@dataclasses.dataclass(frozen=True)
class ClosedJobsResult:
    closed: list[str]


@dataclasses.dataclass(frozen=True)
class SyncSchedulesRequest:
    """Make an app's Temporal Schedules match ``functions`` (the current version's; [] once the
    app is removed). ``known``: every function name the app has had, whose schedules may exist."""

    app: str
    functions: list[FunctionSpec]
    known: list[str] = dataclasses.field(default_factory=list)


@dataclasses.dataclass(frozen=True)
class SyncSchedulesResult:
    created: list[str] = dataclasses.field(default_factory=list)
    updated: list[str] = dataclasses.field(default_factory=list)
    deleted: list[str] = dataclasses.field(default_factory=list)


@dataclasses.dataclass(frozen=True)
class EnsureFleetRequest:
    deployment: Deployment
    demand: Demand


@dataclasses.dataclass(frozen=True)
class MapItem:
    """One input of a map: its position and its pickled ``(args, kwargs)``."""

    index: int
    args: CloudPickled


@dataclasses.dataclass(frozen=True)
class MapResultItem:
    """One output of a map: the pickled value, or the failure (message, type, details)."""

    index: int
    ok: bool
    value: CloudPickled | None = None
    error_message: str = ""
    error_type: str = ""
    error_detail: dict[str, Any] = dataclasses.field(default_factory=dict)
    # The error can never succeed on a retry (it was raised as non-retryable).
    final: bool = False


@dataclasses.dataclass(frozen=True)
class MapFeed:
    """A batch of inputs sent to a MapWorkflow (``final``: no more will come)."""

    items: list[MapItem]
    final: bool = False


@dataclasses.dataclass(frozen=True)
class MapFeedResult:
    accepted: bool
    fed: int


@dataclasses.dataclass(frozen=True)
class MapState:
    """What a MapWorkflow carries across continue-as-new."""

    pending: list[MapItem] = dataclasses.field(default_factory=list)
    fed: int = 0
    final: bool = False
    done: int = 0
    failed: int = 0
    acked: int = 0
    runs: int = 1
    # index -> [user retries, infrastructure retries] used so far
    retries: dict[str, list[int]] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass(frozen=True)
class ExecuteBatchInput:
    """Several inputs of a map for ``apothic.execute_batch``: run one after the other."""

    job_id: str
    function: str
    version: int
    items: list[MapItem]
    timeout_s: float


@dataclasses.dataclass(frozen=True)
class ExecuteBatchOutput:
    results: list[MapResultItem]
    container_id: str = ""


@dataclasses.dataclass(frozen=True)
class MapInput:
    map_id: str
    app: str
    function: str
    deployment: Deployment | None = None
    max_in_flight: int = 64
    state: MapState | None = None


@dataclasses.dataclass(frozen=True)
class MapResultsRequest:
    from_index: int
    max_bytes: int = 1_000_000


@dataclasses.dataclass(frozen=True)
class MapResults:
    items: list[MapResultItem]


@dataclasses.dataclass(frozen=True)
class MapProgress:
    """What the ``progress`` query of a MapWorkflow answers."""

    map_id: str
    fed: int
    final: bool
    done: int
    failed: int
    in_flight: int
    pending: int
    acked: int
    runs: int
