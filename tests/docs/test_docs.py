"""The documentation is true: the generated reference matches the code, the site builds with
warnings as errors, and every code example on the pages (and in the README) is checked.

What a fence's language means (``FENCE_LANGUAGES``; any other language, or none, fails):

* ``python`` blocks are executed, in page order, in one namespace per page, from a folder like a
  user's clone after ``make demo`` (``examples/`` and ``runs/slovenia-demo/``);
* ``bash`` blocks are executed line by line there (setup lines such as ``cd`` or ``source``
  are skipped, see ``SETUP_PREFIXES``);
* ``yaml`` blocks are validated with ``pipeline.manifest``: a whole SitsRun manifest as it is; a
  ``spec`` fragment, a fragment of spec sections (``model:``, ``compute:``...), a list of
  sensors, or fields of one sensor (``catalog:``...) put in place in the demo manifest
  (``examples/slovenia/run.yaml``), each given section replacing the demo's. Alternatives in one
  block are separate YAML documents (``---``); duplicate keys are refused, since YAML would keep
  only the last one;
* ``json`` blocks must parse;
* ``text`` (outputs, diagrams, layouts) and ``sh`` (commands that need what the tests do not
  have: a Kubernetes cluster, a STAC API on the internet) are shown, not run.

A ``yaml`` block that is deliberately not a valid manifest (placeholders such as ``<your API
URL>``) is preceded by the line ``<!-- not-validated: <why> -->``; the reason is required.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from pipeline.manifest import RunManifest, RunSpec, SensorSpec, parse_manifest
from pipeline.manifest.reference_doc import render
from tests.conftest import DEMO_DIR, DEMO_MANIFEST, REPO

DOCS = REPO / "docs"
FENCE = re.compile(
    r"^(?:<!-- not-validated: (?P<why>[^\n]*?) -->\n)?"
    r"(?P<indent>[ ]*)```(?P<lang>\w*)[^\n]*\n(?P<code>.*?)^(?P=indent)```[ ]*$",
    re.MULTILINE | re.DOTALL,
)
FENCE_LANGUAGES = {
    "python": "executed",
    "bash": "executed",
    "yaml": "validated against pipeline.manifest",
    "json": "parsed",
    "text": "shown: outputs, diagrams, layouts",
    "sh": "shown: needs a Kubernetes cluster or the internet",
}
# Shell lines that set up the reader's machine rather than demonstrate sitsflow.
SETUP_PREFIXES = ("make ", "git ", "cd ", "source ", "pip ", "#")
# The generated reference opens with a skeleton whose spec is "..." (checked below as such).
SKELETON_PAGE = DOCS / "reference" / "manifest.md"


@dataclass(frozen=True)
class Block:
    language: str
    code: str
    not_validated: str | None  # the reason given, for a yaml block marked so


def code_blocks(page: Path) -> list[Block]:
    return [
        Block(m["lang"], textwrap.dedent(m["code"]), m["why"])
        for m in FENCE.finditer(page.read_text())
    ]


def all_pages() -> list[Path]:
    return [*sorted(DOCS.rglob("*.md")), REPO / "README.md"]


def pages_with(*languages: str) -> list[Path]:
    return [p for p in all_pages() if any(b.language in languages for b in code_blocks(p))]


def page_id(page: Path) -> str:
    return str(page.relative_to(REPO))


def test_manifest_reference_is_generated_from_the_model() -> None:
    committed = (DOCS / "reference" / "manifest.md").read_text()
    assert committed == render(), (
        "docs/reference/manifest.md is out of date: run "
        "`python -m pipeline.manifest.reference_doc > docs/reference/manifest.md`"
    )


def test_site_builds_strict(tmp_path: Path) -> None:
    mkdocs = shutil.which("mkdocs", path=str(Path(sys.executable).parent))
    assert mkdocs, "mkdocs is a dev dependency: run make test (bootstrap installs it)"
    done = subprocess.run(
        [mkdocs, "build", "--strict", "--site-dir", str(tmp_path / "site")],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert (tmp_path / "site" / "tutorial" / "index.html").exists()


@pytest.mark.parametrize("page", sorted(DOCS.rglob("*.md")), ids=page_id)
def test_every_fence_has_a_checked_language(page: Path) -> None:
    """A fence without a language, or in one the tests do not know, would escape them (the
    README's python and bash blocks run too; its other fences are not held to this)."""
    text = page.read_text()
    opened = len(re.findall(r"^[ ]*```", text, re.MULTILINE))
    blocks = code_blocks(page)
    assert opened == 2 * len(blocks), f"{page_id(page)}: a fence is not closed where it opens"
    for number, block in enumerate(blocks):
        assert block.language in FENCE_LANGUAGES, (
            f"{page_id(page)} block {number}: language {block.language or '(none)'!r}; use one "
            f"of {', '.join(FENCE_LANGUAGES)} (see this test's docstring)"
        )
        if block.not_validated is not None:
            assert block.language == "yaml" and block.not_validated.strip(), (
                f"{page_id(page)} block {number}: <!-- not-validated: ... --> marks a yaml "
                "block and gives the reason"
            )


# --- yaml: manifests and fragments -----------------------------------------------------------


class _UniqueKeyLoader(yaml.SafeLoader):
    """SafeLoader that refuses a key given twice in one mapping (YAML would keep the last)."""


def _unique_mapping(loader: yaml.SafeLoader, node: yaml.MappingNode, deep: bool = False) -> Any:
    seen: set[Any] = set()
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=deep)
        if key in seen:
            raise yaml.constructor.ConstructorError(
                None, None, f"key {key!r} appears twice: write alternatives as separate YAML "
                "documents (---)", key_node.start_mark,
            )  # fmt: skip
        seen.add(key)
    return loader.construct_mapping(node, deep=deep)


_UniqueKeyLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _unique_mapping)


def _demo() -> dict[str, Any]:
    return yaml.safe_load(DEMO_MANIFEST.read_text())


def in_demo(document: Any) -> dict[str, Any]:
    """The whole manifest a yaml example stands for (see the module docstring)."""
    manifest = _demo()
    spec = manifest["spec"]
    if isinstance(document, dict) and set(document) & {"apiVersion", "kind", "metadata"}:
        return document  # a whole manifest, checked as it is
    if isinstance(document, dict) and set(document) == {"spec"}:
        document = document["spec"]
    if isinstance(document, list):
        document = {"sensors": document}
    assert isinstance(document, dict) and document, f"not a mapping or a list: {document!r}"
    if set(document) <= set(RunSpec.model_fields):
        if document.get("task", "classification") != "classification":
            spec.pop("postprocess", None)  # the demo's map products are for a label map
        spec.update(document)
    elif set(document) <= set(SensorSpec.model_fields):
        spec["sensors"][0].update(document)
    else:
        raise AssertionError(
            f"keys {sorted(document)} are neither a manifest, a spec section nor sensor fields; "
            "fix the example or mark it <!-- not-validated: <why> -->"
        )
    return manifest


def yaml_examples() -> list[tuple[Path, int, Block]]:
    return [
        (page, number, block)
        for page in pages_with("yaml")
        for number, block in enumerate(code_blocks(page))
        if block.language == "yaml" and block.not_validated is None
    ]


@pytest.mark.parametrize(
    ("page", "number", "block"),
    yaml_examples(),
    ids=[f"{page_id(p)}-block{n}" for p, n, _ in yaml_examples()],
)
def test_yaml_examples_are_valid_manifests(page: Path, number: int, block: Block) -> None:
    where = f"{page_id(page)} block {number}"
    documents = list(yaml.load_all(block.code, Loader=_UniqueKeyLoader))
    assert documents, f"{where}: empty"
    if page == SKELETON_PAGE:
        skeleton = documents[0]
        assert skeleton["spec"] == "...", where
        RunManifest.model_validate({**skeleton, "spec": _demo()["spec"]})
        return
    for document in documents:
        text = yaml.safe_dump(in_demo(document), sort_keys=False)
        parse_manifest(text, base_dir=DEMO_DIR, source=where)  # ManifestError names the field


def test_the_demo_manifest_is_what_fragments_are_checked_in() -> None:
    parse_manifest(DEMO_MANIFEST.read_text(), base_dir=DEMO_DIR)


def test_json_examples_parse() -> None:
    for page in pages_with("json"):
        for number, block in enumerate(code_blocks(page)):
            if block.language == "json":
                try:
                    json.loads(block.code)
                except json.JSONDecodeError as exc:
                    pytest.fail(f"{page_id(page)} block {number}: {exc}")


# --- python and bash: executed -----------------------------------------------------------------


@pytest.fixture(scope="module")
def workspace(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A folder like a user's clone after `make demo`: examples/ and runs/slovenia-demo/."""
    root = tmp_path_factory.mktemp("docs-workspace")
    (root / "examples").symlink_to(REPO / "examples")
    done = subprocess.run(
        [sys.executable, "-m", "pipeline.cli", "demo", "--store", "runs/slovenia-demo"],
        cwd=root,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    yield root


@pytest.mark.slow
@pytest.mark.parametrize("page", pages_with("python", "bash"), ids=page_id)
def test_code_examples_run(page: Path, workspace: Path) -> None:
    """Blocks run in page order, in one namespace per page, from the workspace folder."""
    namespace: dict[str, object] = {"__name__": "__docs__"}
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
    previous = Path.cwd()
    os.chdir(workspace)
    try:
        for number, block in enumerate(code_blocks(page)):
            where = f"{page.name} block {number} ({block.language})"
            if block.language == "python":
                exec(compile(block.code, where, "exec"), namespace)
            elif block.language == "bash":
                for line in block.code.splitlines():
                    line = line.strip()
                    if not line or line.startswith(SETUP_PREFIXES) or line == "sitsflow demo":
                        continue  # `sitsflow demo` already ran in the workspace fixture
                    done = subprocess.run(
                        line, shell=True, cwd=workspace, env=env, capture_output=True,
                        text=True, timeout=600, check=False,
                    )  # fmt: skip
                    assert done.returncode == 0, f"{where}: {line}\n{done.stdout}{done.stderr}"
    finally:
        os.chdir(previous)
