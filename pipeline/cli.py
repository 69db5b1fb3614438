"""The ``sitsflow`` command line: validate, run (and --resume), status, demo, schema, crossval.

Exit codes: 0 success, 2 bad input (manifest, catalog, reference, outputs, cluster settings: the
one-paragraph message says what to fix), 1 an unexpected failure (a bug: the traceback is
printed).

Logs: readable text on a terminal, JSON lines when stderr is not a terminal (or with
``--log-format json``); secrets from the environment never appear in either.
"""

from __future__ import annotations

import gc
import json
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console

from pipeline.errors import SitsflowError
from pipeline.run.logs import LogFormat, RunLog, bridge_logging, resolve_format
from pipeline.warnings import SitsflowWarning

if TYPE_CHECKING:
    from pipeline.manifest import RunManifest
    from pipeline.manifest.fields import Command

# Light to import (typer, rich, the log): the manifest's models (pydantic, numpy) and everything a
# run needs are imported inside the commands, after a run's first line is printed.

app = typer.Typer(
    add_completion=False,
    pretty_exceptions_enable=False,
    no_args_is_help=True,
    help="sitsflow: satellite image time series to maps (STAC -> cube -> samples -> model -> map "
    "-> accuracy) on dask.",
)
console = Console(stderr=True)

DEMO_MANIFEST = Path(__file__).resolve().parents[1] / "examples" / "slovenia" / "run.yaml"

_settings: dict[str, Any] = {"log_format": "auto"}


@app.callback()
def _main(
    log_format: Annotated[
        str,
        typer.Option(
            "--log-format",
            envvar="SITSFLOW_LOG_FORMAT",
            help="auto (JSON lines when stderr is not a terminal), json or text.",
        ),
    ] = "auto",
) -> None:
    if log_format not in ("auto", "json", "text"):
        raise typer.BadParameter(
            f"{log_format!r}: use auto, json or text", param_hint="--log-format"
        )
    _settings["log_format"] = log_format


def _log(run: str | None = None) -> RunLog:
    fmt: LogFormat = _settings["log_format"]
    log = RunLog(resolve_format(fmt), console=Console(stderr=True), run=run)
    bridge_logging(log)
    return log


def _fail(
    log: RunLog, exc: SitsflowError, *, command: Command = "run", flags: list[str] | None = None
) -> None:
    from pipeline.manifest.fields import locate

    # The field as this command's user knows it (manifest path or option).
    text = str(locate(exc, command=command, flags=flags))
    log.error(text if not log.json else f"error: {text}")
    raise typer.Exit(code=2)


def _route_warnings(log: RunLog) -> None:
    def show(message: Any, category: Any, *_args: Any, **_kwargs: Any) -> None:
        log.warning(str(message), category=getattr(category, "__name__", str(category)))

    warnings.showwarning = show
    warnings.simplefilter("default", SitsflowWarning)


def _load(path: Path, store: str | None) -> RunManifest:
    from pipeline.manifest import load_manifest, with_store

    manifest = load_manifest(path)
    if store is not None:
        manifest = with_store(manifest, store)
    return manifest


StoreOption = Annotated[
    str | None,
    typer.Option(help="Run store (folder or s3://... URL) instead of spec.outputs.store."),
]


@app.command()
def validate(
    manifest: Annotated[Path, typer.Argument(help="Run manifest (YAML).")],
) -> None:
    """Check a manifest: schema, ranges, consistency, and the reference's fields and labels (its
    attributes only: no geometry, no imagery). Writes nothing."""
    from pipeline.manifest import load_manifest, resolve
    from pipeline.samples.reference import check_reference

    log = _log()
    try:
        run = load_manifest(manifest)
        config = resolve(run)
        check_reference(config.reference, config.period)
    except SitsflowError as exc:
        _fail(log, exc)
        return
    spec = run.spec
    log.info(
        f"ok: {manifest} is a valid SitsRun '{run.name}' ({spec.task}, {len(spec.sensors)} "
        f"sensor(s), {spec.period.start} .. {spec.period.end}, outputs to {spec.outputs.store})",
        "manifest.valid",
    )


@app.command()
def run(
    manifest: Annotated[Path, typer.Argument(help="Run manifest (YAML).")],
    store: StoreOption = None,
    resume: Annotated[
        bool,
        typer.Option(
            "--resume",
            help="Continue the run in the store: finished units whose inputs did not change are "
            "kept, the others run.",
        ),
    ] = False,
) -> None:
    """Run the whole chain described by a manifest on a dask cluster."""
    _run(manifest, store, resume=resume)


@app.command()
def status(
    manifest: Annotated[Path, typer.Argument(help="Run manifest (YAML).")],
    store: StoreOption = None,
) -> None:
    """What is done and what is left, per stage, for the run in the store. Writes nothing."""
    from pipeline.manifest import resolve
    from pipeline.run.lock import holder
    from pipeline.run.runner import plan_run, run_status, sessions

    log = _log()
    _route_warnings(log)
    try:
        loaded = _load(manifest, store)
        plan = plan_run(resolve(loaded), resume=True, check_lock=False)
        stages = run_status(plan)
        history = sessions(plan.store)
        running = holder(plan.store)
    except SitsflowError as exc:
        _fail(log, exc)
        return
    total = sum(s.total for s in stages)
    done = sum(s.done for s in stages)
    log.info(f"run {loaded.name} in {plan.store.root}: {done} of {total} units done", "status")
    for s in stages:
        note = plan.stages[s.stage].facts.get(s.stage)  # e.g. the cube: not kept
        log.info(
            f"  {s.stage:<10} {s.done:>6} / {s.total:<6} done, {s.left} left"
            + (f"; {note}" if isinstance(note, str) else ""),
            "status.stage",
            stage=s.stage,
            done=s.done,
            total=s.total,
            left=s.left,
        )
    if history:
        last = history[-1]
        state = last.get("state")
        if state == "running" and (running is None or running.get("session") != last["session"]):
            state = "interrupted (its driver stopped without finishing)"
        log.info(
            f"last session {last.get('session')}: {state}, started "
            f"{last.get('started')} on {last.get('host')}"
            + (f", dashboard {last['dashboard']}" if last.get("dashboard") else ""),
            "status.session",
            session=last,
        )
    if running is not None:
        live = next((h for h in history if h.get("session") == running.get("session")), {})
        log.info(
            f"running now: session {running.get('session')} on {running.get('host')} (heartbeat "
            f"{running['age_s']} s ago)"
            + (f", dashboard {live['dashboard']}" if live.get("dashboard") else ""),
            "status.running",
            running=True,
        )
    elif done == total:
        log.info("the run is complete", "status.complete", complete=True)
    else:
        log.info(
            f"{total - done} unit(s) left; finish with: sitsflow run {manifest} --resume"
            + (f" --store {store}" if store else ""),
            "status.incomplete",
            complete=False,
        )


@app.command()
def demo(
    store: Annotated[str, typer.Option(help="Where the demo writes its outputs.")] = (
        "runs/slovenia-demo"
    ),
) -> None:
    """Map land cover over the bundled Slovenia Sentinel-2 time series (offline, a few minutes).

    Running it again reuses what an earlier demo run in the same store finished.
    """
    if not DEMO_MANIFEST.exists():
        _fail(
            _log(),
            SitsflowError(
                f"the demo manifest {DEMO_MANIFEST} is not there; the demo runs from a clone of "
                "the sitsflow repository",
                fix="clone it and run `make demo`",
            ),
        )
    _run(DEMO_MANIFEST, store, resume=True)


@app.command()
def warm() -> None:
    """Compile the numba kernels of the cube, the pixel table, the trees and post-processing, once.

    The install runs it (scripts/bootstrap.sh), so that a first run's workers load the kernels
    (under a second) instead of compiling them (about 12 CPU s each). numba compiles again by
    itself when a kernel's source or the numba version changes.
    """
    import time

    import numba

    from pipeline.cube.build import load_kernels as cube_kernels
    from pipeline.learn.rows import load_kernels as rows_kernels
    from pipeline.learn.trees import load_kernels as trees_kernels
    from pipeline.postprocess._kernels import load_kernels as postprocess_kernels

    started = time.perf_counter()
    cube_kernels()
    rows_kernels()
    trees_kernels()
    postprocess_kernels()
    where = getattr(numba.config, "CACHE_DIR", "") or "__pycache__ beside their sources"
    typer.echo(f"numba kernels ready in {time.perf_counter() - started:.1f} s (cache: {where})")


@app.command()
def schema() -> None:
    """Print the JSON Schema of a run's spec (the source of the Kubernetes CRD)."""
    from pipeline.manifest import json_schema

    print(json.dumps(json_schema(), indent=2))


def _model_params(params: list[str]) -> dict[str, Any]:
    """``NAME=VALUE`` options as keyword arguments; values are YAML scalars (100, 0.5, true,
    null, sqrt)."""
    import yaml

    parsed: dict[str, Any] = {}
    for item in params:
        name, sep, text = item.partition("=")
        if not sep or not name.strip().isidentifier():
            raise typer.BadParameter(
                f"{item!r} is not NAME=VALUE (e.g. n_estimators=100)", param_hint="--param"
            )
        try:
            parsed[name.strip()] = yaml.safe_load(text) if text.strip() else ""
        except yaml.YAMLError:
            parsed[name.strip()] = text
    return parsed


def _estimator_spec(estimator: str, params: dict[str, Any], *, standardize: bool = False) -> Any:
    """The ModelSpec of --estimator/--param, or an error naming --estimator."""
    import pydantic

    from pipeline.errors import ModelError
    from pipeline.manifest import ModelSpec

    try:
        return ModelSpec(
            kind="sklearn", estimator=estimator, params=params, standardize=standardize
        )
    except pydantic.ValidationError as exc:
        raise ModelError(
            f"{estimator!r} is not an estimator import path ({exc.errors()[0]['msg']})",
            fix="give a full import path such as sklearn.ensemble.RandomForestClassifier",
            field="--estimator",
        ) from None


@app.command()
def crossval(
    table: Annotated[
        Path, typer.Argument(help="Sample table: CSV/Parquet, long (sits) or wide form.")
    ],
    out: Annotated[Path, typer.Option(help="Folder for metrics.json, report.html, folds.json.")],
    estimator: Annotated[
        str, typer.Option(help="Import path of a scikit-learn compatible classifier.")
    ] = "sklearn.ensemble.RandomForestClassifier",
    param: Annotated[
        list[str] | None,
        typer.Option(help="Estimator parameter NAME=VALUE (repeatable), e.g. n_estimators=100."),
    ] = None,
    standardize: Annotated[
        bool, typer.Option(help="Scale features to zero mean and unit variance first.")
    ] = False,
    folds: Annotated[int, typer.Option(help="Number of folds (k-fold).")] = 5,
    repeats: Annotated[
        int,
        typer.Option(
            help="Repeats of the k-fold, or number of random splits with --train-fraction."
        ),
    ] = 1,
    train_fraction: Annotated[
        float | None,
        typer.Option(
            help="Repeated random splits with this share for training, instead of k-fold."
        ),
    ] = None,
    seed: Annotated[int, typer.Option(help="Seed of the splits and the models.")] = 0,
    group_by: Annotated[
        str,
        typer.Option(
            help="Keep samples together: location (same longitude/latitude), sample (sample "
            "id), none, or the name of a column (a polygon id)."
        ),
    ] = "location",
    bands: Annotated[
        str | None, typer.Option(help="Comma-separated bands to use (default: all).")
    ] = None,
) -> None:
    """Cross-validate a model on a sample table: k-fold, or repeated random splits.

    Writes the accuracy report (the map-validation format, with the mean and 95% interval
    across splits) and every split's scores into --out, and prints a summary.
    """

    from pipeline.samples.tables import read_sample_table
    from pipeline.validate.crossval import (
        FOLDS_JSON,
        CrossValPlan,
        GroupBy,
        cross_validate_table,
        write_crossval_report,
    )
    from pipeline.validate.report import HTML, METRICS_JSON

    log = _log()
    _route_warnings(log)
    params = _model_params(param or [])
    builtin = ("location", "sample", "none")
    mode: GroupBy = group_by if group_by in builtin else "column"  # type: ignore[assignment]
    try:
        spec = _estimator_spec(estimator, params, standardize=standardize)
        plan = CrossValPlan(
            method="kfold" if train_fraction is None else "split",
            folds=folds,
            repeats=repeats,
            train_fraction=train_fraction,
            seed=seed,
        )
        samples = read_sample_table(
            table,
            bands=[b.strip() for b in bands.split(",")] if bands else None,
            group_column=None if mode != "column" else group_by,
        )
        result = cross_validate_table(samples, spec, plan, group_by=mode)
        write_crossval_report(
            out, samples, result, title=f"Cross-validation: {table.name}", source=str(table)
        )
    except SitsflowError as exc:
        _fail(log, exc, command="crossval")
        return
    overall = result.summary.overall
    scores = ", ".join(
        f"{label} {overall[key].mean:.3f} ± {overall[key].half_width:.3f}"
        for label, key in (
            ("overall accuracy", "overall_accuracy"),
            ("kappa", "kappa"),
            ("macro F1", "macro_f1"),
        )
    )
    grouped = "" if result.grouped_by == "none" else f" ({result.n_groups} groups)"
    typer.echo(
        f"{plan.describe(result.grouped_by)} of {spec.estimator} on {len(samples)} samples"
        f"{grouped}, seed {seed}"
    )
    typer.echo(f"{scores} (mean ± 95% interval over {len(result.folds)} splits)")
    typer.echo(
        f"pooled held-out predictions: overall accuracy {result.pooled.overall_accuracy:.3f}, "
        f"kappa {result.pooled.kappa:.3f}"
    )
    typer.echo(f"report {out / HTML}, metrics {out / METRICS_JSON}, per split {out / FOLDS_JSON}")


@app.command()
def train(
    table: Annotated[
        Path, typer.Argument(help="Sample table: CSV/Parquet, long (sits) or wide form.")
    ],
    manifest: Annotated[
        Path,
        typer.Option(help="The run the model is for: its bands, date grid and model."),
    ],
    out: Annotated[Path, typer.Option(help="Model folder to write (model file + model.json).")],
    estimator: Annotated[
        str | None,
        typer.Option(help="Import path of a classifier instead of the manifest's model."),
    ] = None,
    param: Annotated[
        list[str] | None,
        typer.Option(help="Estimator parameter NAME=VALUE (repeatable), with --estimator."),
    ] = None,
    group_by: Annotated[
        str | None,
        typer.Option(help="Column keeping samples together in any inner split (a polygon id)."),
    ] = None,
) -> None:
    """Train a run's model from a sample table another tool extracted (sits, iota2, eo-learn).

    The table is checked against the run's features (bands and date grid); the model folder it
    writes is used by the run with model: {kind: external, path: OUT}.
    """

    from pipeline.learn.from_table import train_from_table
    from pipeline.samples.tables import read_sample_table

    log = _log()
    _route_warnings(log)
    try:
        run_manifest = _load(manifest, None)
        model = None
        if estimator is not None:
            model = _estimator_spec(estimator, _model_params(param or []))
        samples = read_sample_table(table, group_column=group_by)
        done = train_from_table(samples, run_manifest.spec, out, model=model, source=str(table))
    except SitsflowError as exc:
        given = {"--estimator": estimator, "--param": param, "--group-by": group_by}
        _fail(log, exc, command="train", flags=[f for f, v in given.items() if v])
        return
    contract = done.contract
    typer.echo(
        f"trained {contract.estimator} on {done.samples} samples of {len(done.classes)} classes "
        f"({len(contract.feature_names)} features: {contract.feature_names[0]} .. "
        f"{contract.feature_names[-1]})"
    )
    typer.echo(f"model {out}; use it with model: {{kind: external, path: {out}}}")


def _progress(log: RunLog) -> Any:
    """The progress display; inside an operator-started pod it also reports to the SitsRun."""
    from pipeline.k8s.reporter import progress_for

    progress = progress_for(log.console)
    progress.use_log(log)
    return progress


def _raw_manifest(path: Path) -> dict[str, Any]:
    """The manifest's YAML as it is, unvalidated ({} where it cannot be read so): what the run
    needs to know before the manifest's models are imported."""
    import yaml

    try:
        document = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError):
        return {}
    return document if isinstance(document, dict) else {}


def _run_name(document: dict[str, Any]) -> str | None:
    """The raw manifest's metadata.name; None where it is not a usable name."""
    metadata = document.get("metadata")
    name = metadata.get("name") if isinstance(metadata, dict) else None
    ok = isinstance(name, str) and 0 < len(name) <= 253 and name.isprintable()
    return name if ok else None


def _local_model_kind(document: dict[str, Any]) -> str | None:
    """The raw manifest's model kind when it has a spec and its cluster is local (the default);
    None otherwise."""
    spec = document.get("spec")
    if not isinstance(spec, dict):
        return None
    compute, model = spec.get("compute"), spec.get("model")
    cluster = compute.get("cluster", "local") if isinstance(compute, dict) else "local"
    kind = model.get("kind", "sklearn") if isinstance(model, dict) else "sklearn"
    return kind if cluster == "local" and isinstance(kind, str) else None


def _run(manifest_path: Path, store: str | None, *, resume: bool) -> None:
    log = _log()
    _route_warnings(log)
    started: list[ClusterStarter] = []
    # The first line, at once: validating the manifest imports its models and the estimator
    # (scikit-learn: 1-2 s), planning imports dask and pandas (2-3 s).
    raw = _raw_manifest(manifest_path)
    name = log.run = _run_name(raw)
    log.info(
        f"planning run {name} from {manifest_path}" if name else f"planning {manifest_path}",
        "run.planning",
    )
    kind = _local_model_kind(raw)
    try:
        if kind is not None:
            # The local workers' fork server imports their modules on the second core while
            # this one validates and plans (pipeline.run.forkserver, light to import).
            from pipeline.run import forkserver

            forkserver.prestart(kind)
        manifest = _load(manifest_path, store)
        log.run = manifest.name
        from pipeline.manifest import resolve
        from pipeline.manifest.to_config import compute_config
        from pipeline.run.clusters import ClusterStarter
        from pipeline.run.runner import execute, plan_run

        compute, model_kind = compute_config(manifest.spec.compute), manifest.spec.model.kind
        if kind is not None and not resume:
            # A local cluster starts now, while the driver plans: its workers fork from the
            # server above once it has imported everything, so they take no CPU from planning
            # (spawned workers importing for themselves did: planning took two to three times
            # longer). Planning then tells it the stages left (``warm_up``). A new run always
            # has work; a resumed one may have none (a cluster started for nothing cost a
            # finished run's rerun 1 s), so it starts its cluster once planning finds work.
            started.append(
                ClusterStarter(compute, manifest.name, model_kind=model_kind, preload=True)
            )
        work_ahead: list[str] = []

        def start_cluster(stages: list[str]) -> None:
            # The inputs checked out and work is left: the cluster starts while planning ends.
            work_ahead.extend(stages)
            if started:
                started[0].warm_up(stages)
            else:
                started.append(
                    ClusterStarter(
                        compute, manifest.name, stages, model_kind=model_kind, preload=True
                    )
                )

        plan = plan_run(resolve(manifest), resume=resume, on_work_ahead=start_cluster)
        progress = _progress(log)
        with progress:
            # A finished run reports on itself without a cluster.
            cluster = started[0] if started and work_ahead else None
            result = execute(plan, progress, cluster=cluster)
    except SitsflowError as exc:
        _fail(log, exc)
        return
    finally:
        for cluster in started:
            cluster.close()
        if kind is not None:  # a run that stopped before its cluster started, or had no work
            from pipeline.run import forkserver

            forkserver.stop()
    summary = result.summary
    log.info(f"run {manifest.name} finished; outputs:", "run.finished", summary=summary)
    for label, key in (
        ("land-cover map (COG)", "labels"),
        ("confidence (COG)", "confidence"),
        ("value map (COG)", "values"),
        ("feature cube (Zarr)", "cube"),
        ("samples (GeoParquet)", "samples"),
        ("model", "model"),
        ("STAC catalog", "catalog"),
        ("accuracy report", "report"),
        ("metrics (JSON)", "metrics"),
    ):
        if key in summary["outputs"]:
            log.info(f"  {label:<22} {summary['outputs'][key]}", "run.output", output=key)
    log.info(
        f"  {'run summary':<22} {result.store.url('run.json')}", "run.output", output="summary"
    )
    memory = summary["memory"]["peak_worker_memory_bytes"] / 2**20
    pixels = summary["throughput"].get("cube", {}).get("pixels_per_second", 0)
    fused = summary["estimate"].get("cube")  # no cube kept: its features computed by predict
    log.info(
        f"{summary['units_run']} unit(s) run, {summary['units_skipped']} kept from before; "
        + (f"cube {fused}; " if isinstance(fused, str) else f"cube {pixels:,.0f} px/s; ")
        + f"peak worker memory {memory:.0f} MiB; "
        + ", ".join(f"{k} {v:.1f} s" for k, v in summary["stage_seconds"].items()),
        "run.summary",
    )
    m = result.metrics
    if manifest.spec.task == "extraction":
        log.info(
            f"extracted {m['pixels']} sample pixel(s) ({m['training_pixels']} train, "
            f"{m['validation_pixels']} validation), {result.summary['estimate']['features']} "
            "features each, read straight from the imagery (no cube written)",
            "run.extracted",
        )
        return
    word = m.get("features", "polygons")  # the reference's: points, polygons or both
    if "rmse" in m:
        log.info(
            f"RMSE {m['rmse']:.4g}, MAE {m['mae']:.4g}, bias {m['bias']:.4g}, R² "
            f"{m['r2']:.3f} on {m['n_samples']} validation pixels of {word} never used in "
            "training",
            "run.accuracy",
        )
    else:
        log.info(
            f"overall accuracy {m['overall_accuracy']:.3f}, kappa {m['kappa']:.3f} on "
            f"{m['n_samples']} validation pixels of {word} never used in training",
            "run.accuracy",
        )
    if m.get("scored_model"):  # a final model mapped: whose scores these are
        log.info(m["scored_model"], "run.accuracy")
    _log_across_runs(log, m.get("across_runs"))


def _log_across_runs(log: RunLog, runs: dict[str, Any] | None) -> None:
    """Repeated runs (sampling.runs): each score's mean and interval across the runs."""
    if not runs:
        return
    level = f"{100 * float(runs.get('confidence', 0.95)):g}%"
    shown = []
    for name, score in runs.get("overall", {}).items():
        if score.get("mean") is None:
            continue
        text = f"{name.replace('_', ' ')} {score['mean']:.3f}"
        if score.get("ci_half_width") is not None:
            half, low, high = score["ci_half_width"], score["ci_low"], score["ci_high"]
            text += f" ± {half:.3f} ({low:.3f} .. {high:.3f})"
        shown.append(text)
    log.info(
        f"across {runs.get('runs')} runs (seeds {runs.get('seeds')}), mean ± {level} "
        f"Student-t half-width: {'; '.join(shown)} (run 0's model made the map)",
        "run.accuracy_across_runs",
        across_runs=runs,
    )


def main() -> None:
    try:
        app()
    finally:
        # The interpreter's final garbage collections walk the whole heap of a run (pandas,
        # GDAL, scikit-learn objects): 1.5 s or more at exit. Frozen objects are skipped.
        gc.freeze()


if __name__ == "__main__":
    main()
