"""`ray_scan`: the same scan as a Ray Data pipeline, on a local Ray or an existing cluster.

Pipeline: the pending sources (`from_items`) -> `map_batches` through a pool of actors that
each hold a `Detector` (reading and decoding in its threads, batched inference on CPU or GPU)
-> one Parquet part per write task in the results folder, written under a temporary name and
renamed as the local engine's are. Rows have the local engine's schema and values, and resuming
works the same way: sources already in the folder's parts are skipped, new rows take the folder's columns, and the
parts holding transient rows the new ones supersede are rewritten without them.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from fakescope.detection import TRANSIENT
from fakescope.errors import ConfigError, FakescopeError
from fakescope.models import load_model
from fakescope.models.bundle import BUNDLED_DIR
from fakescope.scale.records import (
    detections_to_table,
    drop_superseded,
    part_files,
    read_folder,
    results_folder,
    source_key,
    writing_schema,
)
from fakescope.scale.scan import ScanSummary, recover_journals
from fakescope.scale.scoring import Scoring

LOOPBACK_ENV = {"RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0", "RAY_AUTH_MODE": "disabled"}
"""Keep a local Ray on 127.0.0.1 and without token auth (otherwise drivers fail to connect)."""


class DetectBatch:
    """A Ray Data actor: one `Detector` per actor, scoring a batch of `path`s into `SCHEMA` rows."""

    def __init__(self, detector_kwargs: dict[str, Any]):
        from fakescope.detector import Detector

        try:
            self.detector, self.error = Detector.load(**detector_kwargs), None
        except FakescopeError as exc:  # raised by the first batch: Ray keeps only the text of a constructor's error
            self.detector, self.error = None, exc

    def __call__(self, batch: pa.Table) -> pa.Table:
        if self.error:
            raise self.error
        return detections_to_table(self.detector.stream(batch.column("path").to_pylist()))


def ray_scan(
    sources: Iterable[str],
    out: str | os.PathLike,
    *,
    address: str | None = None,
    actors: int = 2,
    gpus_per_actor: float = 0.0,
    cpus_per_actor: int = 1,
    batch_size: int = 32,
    object_store_memory: int | None = None,
    verbose: bool = False,
    **detector_kwargs: Any,
) -> ScanSummary:
    """Score every source not yet in `out` with `actors` Ray actors and append Parquet parts.

    Without `address` (or `RAY_ADDRESS`) a local Ray is started on loopback (`cpus_per_actor` per actor plus one for
    reading and writing) and shut down afterwards; with one (`ray://...` or `host:port`) the
    existing cluster is used. Where this process has already joined a Ray, that one is used (a `host:port` naming
    another is refused). A CPU actor reserves `cpus_per_actor` CPUs and, unless `threads` is
    given, runs inference on that many threads, so actors do not oversubscribe the cores.
    `detector_kwargs` go to `Detector.load` inside each actor (`name_or_path`, `device`,
    `runtime`, `provenance`, `threshold`, decoding `workers`...). Ray's own log lines and progress stay
    in its session's log folder unless `verbose`; an actor's or the writer's `FakescopeError` is raised
    here as itself.

    Example:
        >>> ray_scan(scan_sources(["s3://bucket/images/"]), "results.parquet", actors=4)  # doctest: +SKIP
        ScanSummary(scanned=52000, failed=12, skipped=0)
    """
    folder = results_folder(out)
    recover_journals(folder)
    model = load_model(name := detector_kwargs.get("name_or_path"), lazy=True)  # a wrong name fails here, not in every actor
    scoring = Scoring.planned(model, **detector_kwargs)
    contents = read_folder(folder, scoring)
    sources = list(dict.fromkeys(map(source_key, sources)))  # rows store, and resume on, these keys
    pending = [s for s in sources if not contents.claim(s)]
    before = set(part_files(folder))
    if not pending:
        if contents.stale:  # those a run that stopped left behind, and rows of the folders this one lists
            drop_superseded(folder, contents, before)
        return ScanSummary(0, 0, len(sources))
    schema = scoring.on(writing_schema(folder, contents.schema))
    detector_kwargs["name_or_path"] = _for_actors(name, model.location)
    started = _connect(address, actors * cpus_per_actor, object_store_memory, verbose)
    import ray

    from fakescope.scale.ray_sink import PartSink  # imports ray: after _connect has set its variables

    try:
        if started and actors * gpus_per_actor > (gpus := ray.cluster_resources().get("GPU", 0)):
            raise ConfigError(f"{actors} actors x {gpus_per_actor:g} GPUs need {actors * gpus_per_actor:g} GPUs and the local "
                              f"Ray has {gpus:g}; lower --actors or --gpus-per-actor (the scan would wait for them forever)")
        detector_kwargs = {"batch_size": batch_size, **detector_kwargs}
        if gpus_per_actor:
            resources = {"num_gpus": gpus_per_actor}
        else:
            resources = {"num_cpus": cpus_per_actor}
            detector_kwargs["threads"] = detector_kwargs.get("threads") or cpus_per_actor
        with _ray_data_output(verbose):
            (
                ray.data.from_items([{"path": s} for s in pending])
                .map_batches(DetectBatch, fn_constructor_kwargs={"detector_kwargs": detector_kwargs},
                             batch_size=batch_size, batch_format="pyarrow", compute=ray.data.ActorPoolStrategy(size=actors),
                             **resources)
                .write_datasink(PartSink(folder.resolve(), schema))
            )
    except Exception as exc:  # an actor's or the writer's error arrives as a RayTaskError
        if (error := task_error(exc)) is None:
            raise
        raise error from None
    finally:
        if started:
            ray.shutdown()
    new_parts = [p for p in part_files(folder) if p not in before]
    kinds = [pq.read_table(p, columns=["error_kind"] * ("error_kind" in schema.names) + ["error"]) for p in new_parts]
    errors = sum(pc.sum(pc.is_valid(t.column("error"))).as_py() or 0 for t in kinds)
    transient = sum(pc.sum(pc.equal(t.column("error_kind"), TRANSIENT)).as_py() or 0
                    for t in kinds if "error_kind" in t.column_names)
    if contents.stale:  # the new rows supersede earlier transient rows: rewrite their parts without them
        drop_superseded(folder, contents, before)
    return ScanSummary(len(pending), errors, len(sources) - len(pending), transient)


def task_error(exc: BaseException) -> FakescopeError | None:
    """The `FakescopeError` that a Ray task or actor raised (the `cause` of a `RayTaskError` in `exc`'s chain),
    with the note Ray Data appends to its message (a line about retries) taken off; None for other errors."""
    from ray.exceptions import RayTaskError

    while exc is not None:
        if isinstance(exc, RayTaskError) and isinstance(cause := exc.cause, FakescopeError):
            cause.args = (str(cause).partition("\n")[0], *cause.args[1:])
            return cause
        exc = exc.__cause__ or exc.__context__
    return None


@contextlib.contextmanager
def _ray_data_output(verbose: bool) -> Iterator[None]:
    """Unless `verbose`, keep Ray Data's progress and log lines off the console (its log file in Ray's session
    folder still gets them) while the scan runs; always have map tasks raise their own errors, so that a
    `FakescopeError` reaches the driver as itself rather than as a `UserCodeException`."""
    from ray.data import DataContext

    context = DataContext.get_current()
    settings = {"raise_original_map_exception": True}
    if not verbose:
        settings |= {"enable_progress_bars": False, "print_on_execution_start": False}
    saved = {name: getattr(context, name) for name in settings}
    consoles = [] if verbose else [h for h in logging.getLogger("ray.data").handlers
                                   if isinstance(h, logging.StreamHandler) and not isinstance(h, logging.FileHandler)]
    levels = [h.level for h in consoles]
    for name, value in settings.items():
        setattr(context, name, value)
    for handler in consoles:
        handler.setLevel(logging.CRITICAL + 1)
    try:
        yield
    finally:
        for name, value in saved.items():
            setattr(context, name, value)
        for handler, level in zip(consoles, levels):
            handler.setLevel(level)


def _for_actors(name: str | os.PathLike | None, location: str) -> str | None:
    """The model as actors should load it: a local path made absolute (an actor's working directory may differ);
    a bundled name or an hf:// reference as given (each node resolves it)."""
    if name is None or str(name).startswith("hf://") or Path(location) == BUNDLED_DIR / str(name):
        return name
    return os.path.abspath(location)


def _connect(address: str | None, cpus: int, object_store_memory: int | None, verbose: bool = False) -> bool:
    """Join `address` (default: Ray's `RAY_ADDRESS` variable), or start a local loopback Ray; return True
    when this call started it. Ray's INFO lines and the actors' output reach the console only when `verbose`."""
    for key, value in LOOPBACK_ENV.items():  # for Ray's own processes, and for ray when first imported here
        os.environ.setdefault(key, value)
    import ray
    from ray._private import ray_constants

    # Ray reads its loopback switch once, at import: a program that imported ray before this call would start a
    # "loopback" Ray on the machine's interface address. Apply the switch as it stands now (ray reads it per call).
    ray_constants.ENABLE_RAY_CLUSTER = ray_constants.env_bool(ray_constants.ENABLE_RAY_CLUSTERS_ENV_VAR, True)

    address = address or os.environ.get("RAY_ADDRESS")  # ray.init would join it, refusing this local setup
    if ray.is_initialized():
        _check_joined(address, ray.get_runtime_context().gcs_address)
        return False
    level = logging.INFO if verbose else logging.WARNING
    if address and address != "local":  # Ray's name for a new local instance: the one started below
        _check_reachable(address)
        ray.init(address=address, log_to_driver=verbose, logging_level=level)
        return False
    ray.init(num_cpus=cpus + 1, object_store_memory=object_store_memory, include_dashboard=False,
             log_to_driver=verbose, logging_level=level, _node_ip_address="127.0.0.1")
    return True


def _check_joined(address: str | None, joined: str) -> None:
    """Refuse a `host:port` other than the cluster this process has already joined (which the scan would use) in one
    line; `auto`, `local` and `ray://` addresses are not checked."""
    if not address or address in ("auto", "local") or "://" in address:
        return
    (host, _, port), (joined_host, _, joined_port) = address.rpartition(":"), joined.rpartition(":")
    if port != joined_port or _host_key(host) != _host_key(joined_host):
        raise ConfigError(f"this process has already joined the Ray cluster at {joined}, not {address}: call "
                          "ray.shutdown() first to scan on another cluster, or drop the address to use this one")


def _host_key(host: str) -> str:
    """A host's IP address, or `this machine` for any of its own (Ray names a local cluster by the machine's
    interface address, which `localhost` and 127.0.0.1 also reach)."""
    try:
        ip = socket.gethostbyname(host)
    except (OSError, UnicodeError):
        return host
    with socket.socket() as sock:
        try:
            sock.bind((ip, 0))  # succeeds only for an address of this machine
        except OSError:
            return ip
    return "this machine"


def _check_reachable(address: str) -> None:
    """Fail in one line when a `host:port` or `ray://host:port` cluster, or the one `auto` finds, does not
    answer: `ray.init` retries for ~15 minutes (and a Ray Client address fails with a traceback)."""
    target = _running_cluster() if address == "auto" else address.removeprefix("ray://")
    if "://" in target:
        return
    host, _, port = target.rpartition(":")
    if not host or not port.isdigit():
        raise ConfigError(f"{address} is not a Ray cluster address: give host:port, ray://host:port, auto or local")
    try:
        socket.create_connection((host, int(port)), timeout=10).close()
    except OSError as exc:
        named = address if address != "auto" else f"auto ({target})"
        raise ConfigError(f"cannot reach the Ray cluster at {named}: {getattr(exc, 'strerror', None) or exc}") from None


def _running_cluster() -> str:
    """The `host:port` that `ray.init(address="auto")` joins (a cluster started on this machine, or the last
    one `ray start` recorded), or a one-line error where there is none (Ray raises a ConnectionError)."""
    from ray._private.services import canonicalize_bootstrap_address  # what ray.init itself calls

    try:
        return canonicalize_bootstrap_address("auto")
    except ConnectionError:
        raise ConfigError("no running Ray cluster found for address 'auto': start one with 'ray start --head', "
                          "or drop --address (and RAY_ADDRESS) to have the scan start a local Ray") from None
