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
# Error type of an input whose process exited or was killed by a signal while its code ran
# (reported by the container's supervisor, apothic/runtime/_supervisor.py; a user failure).
PROCESS_DIED = "apothic.ProcessDied"
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
# The providers a job's attempts ran on (KeywordList), upserted once its container is known.
SEARCH_ATTR_PROVIDER = "ApothicProvider"

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
    # A class (@app.cls): its methods and parameters (ClassSpec, at the end of this file); None: a function.
    cls: ClassSpec | None = None


@dataclasses.dataclass(frozen=True)
class DeployFunction:
    spec: FunctionSpec
    code: CloudPickled
    # An @apothic.liv function: the generated code frozen into ``code`` and where it came from.
    liv: LivRecord | None = None


@dataclasses.dataclass(frozen=True)
class DeployRequest:
    """A whole app's functions, as ``app.deploy()`` sends them."""

    app: str
    functions: list[DeployFunction]
    code_hash: str
    client: str = ""
    # An ephemeral run's deploy (``apothic run``, ``app.run()``): the run removes the app when it ends.
    ephemeral: bool = False


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
    # Deployed by an ephemeral run (its last deploy said so).
    ephemeral: bool = False
    # The last version of the app's earlier registry (removed, then deployed again): numbers go on
    # from it, so that a new version never reuses the task queue of a container still draining.
    versions_before: int = 0


@dataclasses.dataclass(frozen=True)
class AppMemo:
    """The AppWorkflow's memo: its current version, readable with one ``describe``."""

    app: str
    version: int = 0
    deployed_at: str = ""
    functions: list[FunctionSpec] = dataclasses.field(default_factory=list)
    removed: bool = False
    ephemeral: bool = False


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
    # A class instance's parameter values (canonical JSON, ``apothic/_cls/_identity.py``); "": none.
    params: str = ""


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
    # Where it ran (Placement and AttemptPlacement, at the end of this file): the container of the
    # latest attempt that started, every started attempt's, and their rented seconds and cost.
    placement: Placement | None = None
    ran: list[AttemptPlacement] = dataclasses.field(default_factory=list)
    rented_s: float = 0.0
    cost_usd: float = 0.0


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
    # Jobs held by a drain (``apothic apps stop``) and a drain not yet done, across continue-as-new.
    held: list[str] = dataclasses.field(default_factory=list)
    drain: bool = False


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
    # The start failed in a way no other start can escape (an image that cannot be built or
    # pulled, no offer at all): the fleet fails the waiting jobs at once.
    permanent: bool = False


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
    # The same as a Placement (None: the container never started), and how long it was rented
    # (from its start to its end, by the control plane's clock) at its price.
    placement: Placement | None = None
    rented_s: float = 0.0
    cost_usd: float = 0.0


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
    # What the input printed (its tail), for a map that shows its output (``ExecuteBatchInput.output``).
    logs: str = ""


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
    # Return each input's output with its result (the caller shows it: live output).
    output: bool = False


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
    # The caller shows each input's output (live output): results carry it.
    output: bool = False


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


@dataclasses.dataclass(frozen=True)
class MethodSpec:
    """One ``@apothic.method()`` of a class: how callers call it."""

    name: str
    is_async: bool = False
    is_generator: bool = False


@dataclasses.dataclass(frozen=True)
class ParameterSpec:
    """One ``apothic.parameter()`` of a class. ``type`` is ``str``, ``int``, ``float``, ``bool`` or
    ``bytes``; ``default`` the canonical JSON of the default value ("" when required)."""

    name: str
    type: str
    required: bool = True
    default: str = ""


@dataclasses.dataclass(frozen=True)
class ClassSpec:
    """A class of an app (``@app.cls``): deployed as one function whose input names the method.

    ``enter``/``exit`` name the lifecycle methods, in the order they run.
    """

    methods: list[MethodSpec] = dataclasses.field(default_factory=list)
    parameters: list[ParameterSpec] = dataclasses.field(default_factory=list)
    enter: list[str] = dataclasses.field(default_factory=list)
    exit: list[str] = dataclasses.field(default_factory=list)


# --- Generated functions (liv): the generation workflow, its activities, what a deploy freezes ---

LIV_WORKFLOW = "LivWorkflow"
LIV_LOOKUP_ACTIVITY = "apothic.liv_lookup"
LIV_GENERATE_ACTIVITY = "apothic.liv_generate"
LIV_STAGE_ACTIVITY = "apothic.liv_stage"
LIV_UNSTAGE_ACTIVITY = "apothic.liv_unstage"
LIV_STORE_ACTIVITY = "apothic.liv_store"
# Where a generation is kept: every app of the control plane, this app only, or nowhere.
LIV_CACHE_SCOPES = ("account", "app", "none")


def liv_workflow_id(app: str, function: str, key: str) -> str:
    """The generation of ``app.function`` for the stub, examples and settings digested in ``key``."""
    return f"apothic-liv:{app}:{function}:{key[:16]}"


@dataclasses.dataclass(frozen=True)
class LivRecord:
    """One generated implementation, as frozen into a deployment (and kept in the cache).

    ``round`` is the round whose answer passed (1 = the first answer), ``rounds`` the most the
    generation could take; ``app``/``function``/``workflow_id``/``generated_at`` say which
    generation made it; ``cache_hit`` whether the deploy that froze it took it from the cache.
    """

    source: str
    model: str
    round: int
    rounds: int
    generated_at: str
    app: str
    function: str
    key: str
    scope: str
    workflow_id: str = ""
    self_debug: bool = False
    examples_run: int = 0
    cache_hit: bool = False


@dataclasses.dataclass(frozen=True)
class LivExample:
    """One example: ``call`` and ``expected`` as the model reads them (``expected`` "" when
    none was given), ``args`` the job's arguments when it runs (self_debug)."""

    call: str
    args: CloudPickled
    expected: str = ""


@dataclasses.dataclass(frozen=True)
class LivRequest:
    """What ``app.deploy()`` asks of the LivWorkflow for one ``@apothic.liv`` function.

    ``key`` digests the stub's source and docstring, the examples, ``self_debug`` and ``model``
    (the model the control worker uses when empty is added by ``apothic.liv_lookup``);
    ``signature`` is the stub's ``def`` line the answer must keep; ``spec`` and ``stub_code``
    make the candidate whose jobs run the examples.
    """

    app: str
    function: str
    key: str
    scope: str
    model: str
    rounds: int
    self_debug: bool
    system: str
    prompt: str
    signature: str
    is_async: bool
    examples: list[LivExample]
    spec: FunctionSpec
    stub_code: CloudPickled


@dataclasses.dataclass(frozen=True)
class LivLookup:
    app: str
    function: str
    key: str
    scope: str
    model: str = ""


@dataclasses.dataclass(frozen=True)
class LivLookupResult:
    """The model in force, the final cache key, the cached generation if any, and the model
    call's timeout (the control worker's settings; never its API key)."""

    model: str
    key: str
    timeout_s: float
    record: LivRecord | None = None


@dataclasses.dataclass(frozen=True)
class LivMessage:
    role: str  # system, user or assistant
    content: str


@dataclasses.dataclass(frozen=True)
class LivGenerateInput:
    model: str
    messages: list[LivMessage]
    function: str
    signature: str
    is_async: bool
    round: int = 1


@dataclasses.dataclass(frozen=True)
class LivAnswer:
    """The model's answer: its text (``content``), the code found in it (``source``) and why
    that code cannot be used (``problem``; "" when it parses and defines the function)."""

    content: str
    source: str
    problem: str = ""
    model: str = ""
    finish_reason: str = ""


@dataclasses.dataclass(frozen=True)
class LivStageInput:
    """Deploy ``source`` as the candidate app ``app`` (its examples' jobs check each result)."""

    app: str
    origin: str  # "<app>.<function>" the candidate is for
    spec: FunctionSpec
    stub_code: CloudPickled
    source: str
    round: int = 1


@dataclasses.dataclass(frozen=True)
class LivStoreInput:
    scope: str
    app: str
    record: LivRecord


@dataclasses.dataclass(frozen=True)
class LivRound:
    """One round of a generation: what the model answered and how it was judged."""

    round: int
    outcome: str  # "passed", "invalid answer", "examples failed"
    problem: str = ""
    source: str = ""


@dataclasses.dataclass(frozen=True)
class LivResult:
    record: LivRecord
    rounds: list[LivRound] = dataclasses.field(default_factory=list)


@dataclasses.dataclass(frozen=True)
class LivProgress:
    """The ``progress`` query of a LivWorkflow."""

    status: str
    model: str = ""
    rounds: list[LivRound] = dataclasses.field(default_factory=list)


# --- apothic.Dict and apothic.Queue (apothic/_coord): one entity workflow each on the control queue ---

DICT_WORKFLOW = "DictWorkflow"
QUEUE_WORKFLOW = "QueueWorkflow"
# A workflow's whole state travels as one payload through continue-as-new, which Temporal refuses
# over 2 MiB: writes that would grow it past this estimate (base64 pickles plus overhead) are refused.
COORD_MAX_STATE_BYTES = 1_500_000
# Accepted updates per run before continue-as-new (Temporal admits 2,000 per run; rejected ones do not count).
COORD_UPDATES_PER_RUN = 1_000
# Blocking gets waiting at once per Queue (Temporal admits 10 updates in flight per workflow).
QUEUE_MAX_WAITERS = 5
QUEUE_MAX_PARTITION_ITEMS = 5_000
# Stored values are "<py>:<base64 pickle>" inline, or "<py>@<JSON blob reference>" (blob store).


def dict_workflow_id(name: str) -> str:
    """The DictWorkflow of a named Dict (an ephemeral one: ``~<hex>`` instead of the name)."""
    return f"apothic-dict:{name}"


def queue_workflow_id(name: str) -> str:
    return f"apothic-queue:{name}"


@dataclasses.dataclass(frozen=True)
class DictEntry:
    """One key of a Dict: its pickle, its stored value and its insertion number (iteration order)."""

    key: str
    value: str
    seq: int


@dataclasses.dataclass(frozen=True)
class DictState:
    """A DictWorkflow's input: entries by key id (a hash of the key's canonical form)."""

    name: str
    entries: dict[str, DictEntry] = dataclasses.field(default_factory=dict)
    next_seq: int = 1
    # Ephemeral: the workflow deletes itself this long after the last sign of its owner (0: never).
    lease_s: float = 0.0
    runs: int = 1


@dataclasses.dataclass(frozen=True)
class DictItem:
    key_id: str
    key: str
    value: str


@dataclasses.dataclass(frozen=True)
class DictPutRequest:
    items: list[DictItem]
    skip_if_exists: bool = False


@dataclasses.dataclass(frozen=True)
class DictKeyRequest:
    key_id: str


@dataclasses.dataclass(frozen=True)
class DictLookup:
    found: bool
    value: str = ""


@dataclasses.dataclass(frozen=True)
class CoordPageRequest:
    """A page of a Dict (entries after ``after``, a seq) or of a Queue partition (items from ``after``,
    an absolute index), at most ``max_bytes`` of stored values (always at least one)."""

    after: int = 0
    partition: str = ""
    max_bytes: int = 1_000_000


@dataclasses.dataclass(frozen=True)
class DictPage:
    entries: list[DictEntry]
    done: bool


@dataclasses.dataclass(frozen=True)
class CoordStats:
    """The ``stats`` query of a Dict or Queue: what it holds and what that costs of its budget."""

    name: str
    count: int
    state_bytes: int
    max_state_bytes: int
    runs: int
    partitions: int = 0
    waiting: int = 0


@dataclasses.dataclass(frozen=True)
class QueuePartition:
    """One FIFO partition: its items, how many left it before them (absolute indexes), its TTL."""

    items: list[str] = dataclasses.field(default_factory=list)
    removed: int = 0
    ttl_s: float = 86_400.0
    expires_at: float = 0.0  # POSIX seconds: cleared then unless written again


@dataclasses.dataclass(frozen=True)
class QueueState:
    name: str
    partitions: dict[str, QueuePartition] = dataclasses.field(default_factory=dict)
    lease_s: float = 0.0
    runs: int = 1


@dataclasses.dataclass(frozen=True)
class QueuePutRequest:
    items: list[str]
    partition: str = ""
    ttl_s: float = 86_400.0


@dataclasses.dataclass(frozen=True)
class QueueGetRequest:
    partition: str = ""
    n: int = 1
    wait_s: float = 0.0
    max_bytes: int = 1_000_000


@dataclasses.dataclass(frozen=True)
class QueueGetResult:
    items: list[str]
    # Released before its wait ended without an item (the queue moves to a new run): ask again.
    retry: bool = False


@dataclasses.dataclass(frozen=True)
class QueueLenRequest:
    partition: str = ""
    total: bool = False


@dataclasses.dataclass(frozen=True)
class QueueClearRequest:
    partition: str = ""
    all: bool = False


@dataclasses.dataclass(frozen=True)
class QueuePage:
    items: list[str]
    first: int  # absolute index of items[0]


# A map's container reports what a batch finished when the server may not have taken the batch's
# own result (an outage timed the batch out): signal MAP_REPORT_SIGNAL to the map's workflow id.
MAP_REPORT_SIGNAL = "batch_report"


@dataclasses.dataclass(frozen=True)
class MapBatchReport:
    """What one ``execute_batch`` finished: ``items`` are all the batch's indexes (in order),
    ``results`` those of the inputs it finished; the container is done with the batch."""

    items: list[int]
    results: list[MapResultItem]


# --- Where containers and jobs ran (workflows/_container.py, workflows/_invocation.py) ---

# run_container tells its ContainerWorkflow where it placed the container (signal), which keeps
# it in its memo; the container's runtime reads that memo and names it in each input's started event.
CONTAINER_PLACED_SIGNAL = "placed"
PLACEMENT_MEMO_KEY = "apothic.placement"


@dataclasses.dataclass(frozen=True)
class Placement:
    """Where one function container runs.

    ``instance`` is the provider's id of it: a process's pid, a Docker container's id (12 hex),
    a rented Vast.ai instance's id. ``host`` is the machine (this host's name for ``process``
    and ``docker``; ``machine <id>`` and its address for a rented one). ``image`` is the image
    reference (docker, vast), the image's tag for a process in a virtual environment, "" for a
    process on the control worker's own Python. ``dph`` is the price in USD per hour (the
    offer's ``dph_total``; this host costs 0). ``started_at`` is when it started (ISO 8601, UTC).
    """

    container_id: str
    provider: str
    offer_id: str = ""
    instance: str = ""
    host: str = ""
    image: str = ""
    dph: float = 0.0
    gpu_name: str = ""
    num_gpus: int = 0
    geolocation: str = ""
    started_at: str = ""


@dataclasses.dataclass(frozen=True)
class AttemptPlacement:
    """Where one attempt of a job ran (``JobInfo.ran``).

    ``placement`` is None when the container did not say (a runtime from before this, or one
    whose ContainerWorkflow had not heard from its control worker). ``rented_s`` runs from the
    attempt's start in its container to its end as the job saw it (0 while it runs); ``cost_usd``
    is that time at the container's price.
    """

    attempt: int
    container_id: str
    placement: Placement | None = None
    started_at: str = ""
    ended_at: str = ""
    rented_s: float = 0.0
    cost_usd: float = 0.0
