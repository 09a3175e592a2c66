"""The documentation points at things that exist.

README.md, CHANGELOG.md and docs/*.md name files, headings, tests and modules of this repository.
Code moves; when a reference stops resolving, these tests fail naming the document, the line and
the reference:

- every relative Markdown link or image, ``[text](path)`` / ``[text](path#anchor)``, resolves to
  a file or folder, and an anchor into a Markdown file to one of its headings (the ids GitHub
  gives headings). Web links and anchors on the same page are not checked;
- every repository path written as code (inline or in a code block) exists: ``docs/x.md``,
  ``smartpick_ml/.../y.py``, ``benchmarks/bench_*.py`` (a pattern must match a file),
  ``tests/.../test_z.py::test_name`` (the test must be defined in that file). Run outputs
  (``data/raw/``, ``models/``) and ``../shared`` are not repository paths and are not checked;
- every dotted name of the package written as code, such as ``serving.pyfunc.validate_pairs`` or
  ``contracts.pairs.APPLICANT_INPUTS``, names a module that exists and a name defined in it;

and the README stays short enough to read in five minutes (issue #15: at most 8,000 characters).
"""

from __future__ import annotations

import ast
import functools
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "smartpick_ml"
README_LIMIT = 8000

FENCE = re.compile(r"^[ \t]*(```|~~~).*?^[ \t]*\1[ \t]*$", re.M | re.S)
INLINE_CODE = re.compile(r"(`+)(.+?)\1", re.S)
#: [text](target) or ![alt](target), with an optional "title"; text may hold one level of [ ]
LINK = re.compile(r"!?\[(?:[^\[\]]|\[[^\[\]]*\])*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
HEADING = re.compile(r"^#{1,6}[ \t]+(.+?)[ \t#]*$", re.M)
#: a path in a committed top-level folder, or a committed top-level file; ``::name`` a test in it
REPO_PATH = re.compile(
    r"(?<![\w./~-])((?:docs|smartpick_ml|benchmarks|tests|pipelines|scripts|notebooks|examples"
    r"|\.ci)/[\w.*/-]*|(?:README|CHANGELOG)\.md|Makefile|pyproject\.toml)(::[\w*]+)?")
#: dotted names of the package, written with or without ``smartpick_ml.`` (not file names)
SUBPACKAGES = ("contracts", "data", "simulation", "modelling", "training", "inference",
               "serving")
FILE_SUFFIXES = ("py", "md", "toml", "json", "csv", "parquet", "png", "ipynb", "html", "db",
                 "txt", "skops")
DOTTED = re.compile(r"(?<![\w./-])((?:smartpick_ml\.)?(?:" + "|".join(SUBPACKAGES) +
                    r")(?:\.[A-Za-z_]\w*)+)")


def documents() -> list[Path]:
    return [ROOT / "README.md", ROOT / "CHANGELOG.md", *sorted((ROOT / "docs").glob("*.md"))]


def doc_id(path: Path) -> str:
    return path.relative_to(ROOT).as_posix()


def _line_of(text: str, pos: int) -> int:
    return text.count("\n", 0, pos) + 1


def _blank(match: re.Match[str]) -> str:
    """A span replaced by its newlines only, so line numbers stay right."""
    return "\n" * match.group(0).count("\n")


def prose(text: str) -> str:
    """The text outside code blocks and inline code, where ``[a](b)`` is a link."""
    return INLINE_CODE.sub(_blank, FENCE.sub(_blank, text))


def code_spans(text: str) -> list[tuple[int, str]]:
    """(first line, code) of every code block and inline code span."""
    spans = [(_line_of(text, m.start()), m.group(0)) for m in FENCE.finditer(text)]
    outside = FENCE.sub(_blank, text)
    spans += [(_line_of(outside, m.start()), m.group(2)) for m in INLINE_CODE.finditer(outside)]
    return spans


def github_anchor(heading: str) -> str:
    """The id GitHub gives a heading: a link keeps its text; lower case; everything but letters,
    digits, ``_``, ``-`` and spaces removed; spaces become hyphens."""
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", heading)
    return re.sub(r"[^\w\- ]", "", text.strip().lower()).replace(" ", "-")


@functools.cache
def anchors(path: Path) -> frozenset[str]:
    """The heading ids of a Markdown file (a repeated heading gets -1, -2, ...)."""
    seen: dict[str, int] = {}
    out = set()
    for m in HEADING.finditer(FENCE.sub(_blank, path.read_text(encoding="utf-8"))):
        slug = github_anchor(m.group(1))
        n = seen.get(slug, 0)
        seen[slug] = n + 1
        out.add(slug if n == 0 else f"{slug}-{n}")
    return frozenset(out)


def link_problems(doc: Path, text: str) -> list[str]:
    problems = []
    text = prose(text)
    for m in LINK.finditer(text):
        target = m.group(1)
        if re.match(r"[a-z][a-z0-9+.-]*:", target, re.I) or target.startswith("#"):
            continue  # a web or mail link, or an anchor on the same page
        where = f"{doc_id(doc)}:{_line_of(text, m.start())}: link ({target})"
        file_part, _, anchor = target.partition("#")
        resolved = (doc.parent / file_part).resolve()
        if not resolved.exists():
            problems.append(f"{where}: no such file or folder")
        elif anchor and resolved.suffix == ".md" and anchor not in anchors(resolved):
            problems.append(f"{where}: {file_part} has no heading with the id '{anchor}'")
    return problems


def path_problems(doc: Path, text: str) -> list[str]:
    problems = []
    for line, code in code_spans(text):
        for m in REPO_PATH.finditer(code):
            raw, test_name = m.group(1).rstrip("."), m.group(2)
            where = f"{doc_id(doc)}:{line + code.count(chr(10), 0, m.start())}: `{m.group(0)}`"
            if "*" in raw:
                if not any(ROOT.glob(raw)):
                    problems.append(f"{where}: no file matches {raw}")
            elif not (ROOT / raw).exists():
                problems.append(f"{where}: no such file or folder")
            elif test_name:
                name = test_name[2:]
                pattern = re.escape(name).replace(r"\*", r"\w*")
                source = (ROOT / raw).read_text(encoding="utf-8")
                if not re.search(rf"^\s*(?:async\s+)?def\s+{pattern}\b", source, re.M):
                    problems.append(f"{where}: {raw} defines no {name}")
    return problems


@functools.cache
def defined_names(module: Path) -> frozenset[str]:
    """Names a module defines or imports at top level (also under ``if`` / ``try``), and
    ``Class.member`` for the members of its classes."""
    names: set[str] = set()

    def visit(body: list[ast.stmt], prefix: str = "") -> None:
        for node in body:
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                names.add(prefix + node.name)
            elif isinstance(node, ast.ClassDef):
                names.add(prefix + node.name)
                if not prefix:
                    visit(node.body, node.name + ".")
            elif isinstance(node, ast.Assign | ast.AnnAssign | ast.AugAssign):
                targets = node.targets if isinstance(node, ast.Assign) else [node.target]
                for target in targets:
                    for leaf in ast.walk(target):
                        if isinstance(leaf, ast.Name):
                            names.add(prefix + leaf.id)
            elif isinstance(node, ast.Import | ast.ImportFrom) and not prefix:
                names.update((a.asname or a.name).split(".")[0] for a in node.names)
            elif isinstance(node, ast.If | ast.Try | ast.With):
                for part in ("body", "orelse", "finalbody", "handlers"):
                    for child in getattr(node, part, []):
                        visit(child.body if isinstance(child, ast.ExceptHandler) else [child],
                              prefix)

    visit(ast.parse(module.read_text(encoding="utf-8")).body)
    return frozenset(names)


def _module_file(parts: list[str]) -> tuple[Path | None, list[str]]:
    """The longest prefix of ``parts`` that is a module of smartpick_ml, and the rest."""
    for n in range(len(parts), 0, -1):
        base = PACKAGE.joinpath(*parts[:n])
        for candidate in (base.with_suffix(".py"), base / "__init__.py"):
            if candidate.is_file():
                return candidate, parts[n:]
    return None, parts


def dotted_problems(doc: Path, text: str) -> list[str]:
    problems = []
    for line, code in code_spans(text):
        for m in DOTTED.finditer(code):
            name = m.group(1)
            parts = name.removeprefix("smartpick_ml.").split(".")
            if parts[-1] in FILE_SUFFIXES:
                continue  # a file name (`serving.md`), not a package name
            where = f"{doc_id(doc)}:{line + code.count(chr(10), 0, m.start())}: `{name}`"
            module, rest = _module_file(parts)
            if module is None:
                problems.append(f"{where}: no module smartpick_ml.{parts[0]}")
                continue
            member = ".".join(rest[:2])
            if rest and rest[0] not in defined_names(module):
                problems.append(f"{where}: {doc_id(module)} defines no {rest[0]}")
            elif len(rest) > 1 and rest[0][:1].isupper() and member not in defined_names(module):
                problems.append(f"{where}: {doc_id(module)} defines no {member}")
    return problems


def _check(doc: Path, check) -> list[str]:  # type: ignore[no-untyped-def]
    """``check`` on the document's text; a missing document is test_document_exists' failure."""
    return check(doc, doc.read_text(encoding="utf-8")) if doc.is_file() else []


@pytest.mark.parametrize("doc", documents(), ids=doc_id)
def test_document_exists(doc: Path) -> None:
    assert doc.is_file(), f"{doc_id(doc)} is missing"


@pytest.mark.parametrize("doc", documents(), ids=doc_id)
def test_every_relative_link_resolves(doc: Path) -> None:
    problems = _check(doc, link_problems)
    assert not problems, "broken link(s):\n  " + "\n  ".join(problems)


@pytest.mark.parametrize("doc", documents(), ids=doc_id)
def test_every_repository_path_exists(doc: Path) -> None:
    problems = _check(doc, path_problems)
    assert not problems, "path(s) that do not exist:\n  " + "\n  ".join(problems)


@pytest.mark.parametrize("doc", documents(), ids=doc_id)
def test_every_package_name_resolves(doc: Path) -> None:
    problems = _check(doc, dotted_problems)
    assert not problems, "package name(s) that do not resolve:\n  " + "\n  ".join(problems)


def test_the_documents_the_code_refers_to_exist() -> None:
    for name in ("simulation", "catalog", "results", "benchmarks", "serving", "reliability",
                 "schemas"):
        assert (ROOT / "docs" / f"{name}.md").is_file(), f"docs/{name}.md is missing"


def test_readme_is_at_most_8000_characters() -> None:
    size = len((ROOT / "README.md").read_bytes())  # bytes, as `wc -c` counts them (≥ characters)
    assert size <= README_LIMIT, (
        f"README.md is {size} bytes; the limit is {README_LIMIT} (issue #15): move the detail "
        f"into docs/")


# ------------------------------------------------------------------ the checks themselves


@pytest.mark.parametrize("heading, anchor", [
    ("Where a single-pair request's CPU goes", "where-a-single-pair-requests-cpu-goes"),
    ("The training run: `make run`", "the-training-run-make-run"),
    ("2026-11-30: one subpackage per stage", "2026-11-30-one-subpackage-per-stage"),
    ("The served goal over time (README headline)", "the-served-goal-over-time-readme-headline"),
    ("[docs](docs/x.md) and `ms_per_request`", "docs-and-ms_per_request"),
])
def test_github_anchor(heading: str, anchor: str) -> None:
    assert github_anchor(heading) == anchor


README = ROOT / "README.md"


@pytest.mark.parametrize("text, broken", [
    ("[ok](docs/serving.md) [web](https://example.org/x.md) [here](#nothing) [m](mailto:a@b)", []),
    ("![plot](docs/img/reliability_by_type.png) [anchor](docs/serving.md#errors)", []),
    ("[gone](docs/nowhere.md)", ["link (docs/nowhere.md): no such file"]),
    ("line 1\n[bad anchor](docs/serving.md#no-such-heading)",
     ["README.md:2: link (docs/serving.md#no-such-heading): docs/serving.md has no heading"]),
    ("`[in code](docs/nowhere.md)`\n```\n[in a block](docs/nowhere.md)\n```", []),
])
def test_link_check(text: str, broken: list[str]) -> None:
    problems = link_problems(README, text)
    assert len(problems) == len(broken), problems
    for want, got in zip(broken, problems, strict=True):
        assert want in got


@pytest.mark.parametrize("text, broken", [
    ("`smartpick_ml/cli.py`, `benchmarks/bench_*.py`, `docs/`, `pipelines/train.toml`.", []),
    ("`tests/test_docs.py::test_github_anchor`, `tests/test_docs.py::test_link_*`", []),
    ("`tests/test_docs.py::test_no_such_test`", ["defines no test_no_such_test"]),
    ("text\n```bash\n.venv/bin/python benchmarks/bench_nothing.py\n```",
     ["README.md:3: `benchmarks/bench_nothing.py`: no such file"]),
    ("`smartpick_ml/train.py`", ["`smartpick_ml/train.py`: no such file"]),
    ("`data/raw/applicants.parquet`, `models/manifest.json`, `../shared/data/x.csv`", []),
])
def test_path_check(text: str, broken: list[str]) -> None:
    problems = path_problems(README, text)
    assert len(problems) == len(broken), problems
    for want, got in zip(broken, problems, strict=True):
        assert want in got


@pytest.mark.parametrize("text, broken", [
    ("`contracts.pairs.APPLICANT_INPUTS`, `smartpick_ml.serving.pyfunc`, `modelling.persist`",
     []),
    ("`inference.fastpath.FastScorer.score`, `training.tracking.log_training_run(x=1)`", []),
    ("`serving.validate_pairs`", ["smartpick_ml/serving/__init__.py defines no validate_pairs"]),
    ("`contracts.pairs.NO_SUCH_NAME`", ["contracts/pairs.py defines no NO_SUCH_NAME"]),
    ("`inference.fastpath.FastScorer.no_such_method`", ["defines no FastScorer.no_such_method"]),
    ("`pd.NA`, `mlflow.sklearn.load_model`, `functools.partial`, `data/raw/`, `features.parquet`",
     []),
    ("`serving.md`, `data.csv`, `simulation.toml`: file names, not package names", []),
])
def test_package_name_check(text: str, broken: list[str]) -> None:
    problems = dotted_problems(README, text)
    assert len(problems) == len(broken), problems
    for want, got in zip(broken, problems, strict=True):
        assert want in got
