"""The ``sitsflow`` command line: validate, run, demo, schema.

Exit codes: 0 success, 2 bad input (manifest, catalog, reference, outputs: the message says what to
fix), 1 an unexpected failure (a bug: the traceback is printed).
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console

from pipeline.errors import SitsflowError
from pipeline.manifest import RunManifest, json_schema, load_manifest
from pipeline.warnings import SitsflowWarning

app = typer.Typer(
    add_completion=False,
    pretty_exceptions_enable=False,
    no_args_is_help=True,
    help="sitsflow: satellite image time series to maps (STAC -> cube -> samples -> model -> map "
    "-> accuracy) on dask.",
)
console = Console(stderr=True)

DEMO_MANIFEST = Path(__file__).resolve().parents[1] / "examples" / "slovenia" / "run.yaml"


def _fail(exc: SitsflowError) -> None:
    console.print(f"[bold red]error:[/bold red] {exc}", highlight=False, soft_wrap=True)
    raise typer.Exit(code=2)


def _show_warning(message: Any, category: Any, *_args: Any, **_kwargs: Any) -> None:
    console.print(f"[yellow]warning:[/yellow] {message}", highlight=False, soft_wrap=True)


def _load(path: Path, store: Path | None) -> RunManifest:
    manifest = load_manifest(path)
    if store is not None:
        spec = manifest.spec
        outputs = spec.outputs.model_copy(update={"store": str(store.expanduser().resolve())})
        manifest = manifest.model_copy(
            update={"spec": spec.model_copy(update={"outputs": outputs})}
        )
    return manifest


@app.command()
def validate(
    manifest: Annotated[Path, typer.Argument(help="Run manifest (YAML).")],
) -> None:
    """Check a manifest: schema, ranges, consistency. Reads no data and writes nothing."""
    try:
        run = load_manifest(manifest)
    except SitsflowError as exc:
        _fail(exc)
        return
    spec = run.spec
    console.print(
        f"[green]ok[/green]: {manifest} is a valid SitsRun '{run.name}' "
        f"({spec.task}, {len(spec.sensors)} sensor(s), {spec.period.start} .. {spec.period.end}, "
        f"outputs to {spec.outputs.store})",
        highlight=False,
    )


@app.command()
def run(
    manifest: Annotated[Path, typer.Argument(help="Run manifest (YAML).")],
    store: Annotated[
        Path | None, typer.Option(help="Write outputs here instead of spec.outputs.store.")
    ] = None,
) -> None:
    """Run the whole chain described by a manifest on a dask cluster."""
    _run(manifest, store)


@app.command()
def demo(
    store: Annotated[Path, typer.Option(help="Where the demo writes its outputs.")] = Path(
        "runs/slovenia-demo"
    ),
) -> None:
    """Map land cover over the bundled Slovenia Sentinel-2 time series (offline, a few minutes)."""
    if not DEMO_MANIFEST.exists():
        console.print(
            f"[bold red]error:[/bold red] the demo manifest {DEMO_MANIFEST} is not there; the demo "
            "runs from a clone of the sitsflow repository. Fix: clone it and run `make demo`."
        )
        raise typer.Exit(code=2)
    _run(DEMO_MANIFEST, store)


@app.command()
def schema() -> None:
    """Print the JSON Schema of a run's spec (the source of the Kubernetes CRD)."""
    print(json.dumps(json_schema(), indent=2))


def _run(manifest_path: Path, store: Path | None) -> None:
    from pipeline.run.progress import Progress
    from pipeline.run.runner import execute, plan_run

    warnings.showwarning = _show_warning
    warnings.simplefilter("default", SitsflowWarning)
    try:
        manifest = _load(manifest_path, store)
        progress = Progress(console)
        progress.info(f"planning run [bold]{manifest.name}[/bold] from {manifest_path}")
        plan = plan_run(manifest)
        estimate = plan.estimate
        progress.info(
            f"work: {estimate['grid']}, {estimate['chunks']} chunk(s), "
            f"{estimate['acquisitions']} acquisition(s), {estimate['features']} features; "
            f"about {estimate['memory_per_chunk'] / 2**20:.0f} MiB per chunk"
        )
        with progress:
            result = execute(plan, progress)
    except SitsflowError as exc:
        _fail(exc)
        return
    layout = result.layout
    console.print(f"[bold green]run {manifest.name} finished[/bold green]; outputs:")
    for label, path in (
        ("land-cover map (COG)", layout.labels),
        ("confidence (COG)", layout.confidence),
        ("feature cube (Zarr)", layout.cube),
        ("samples (GeoParquet)", layout.samples),
        ("model", layout.model),
        ("accuracy report", layout.report / "report.html"),
        ("metrics (JSON)", layout.report / "metrics.json"),
        ("run summary", layout.summary),
    ):
        # One line each, never truncated: paths are what users copy from here.
        console.print(f"  {label:<22} {path}", highlight=False, soft_wrap=True)
    m = result.metrics
    console.print(
        f"overall accuracy [bold]{m['overall_accuracy']:.3f}[/bold], kappa {m['kappa']:.3f} "
        f"on {m['n_samples']} validation pixels of polygons never used in training",
        highlight=False,
    )


def main() -> None:
    app()


if __name__ == "__main__":
    main()
