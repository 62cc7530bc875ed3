"""The README and docs/ work as written: every link lands, every file a command names exists, every
curl example answers 2xx with JSON from a real server, and `make train` fails loudly without data.

A ```sh block preceded by an HTML comment starting "not run in tests" (e.g. `<!-- not run in tests:
needs a cluster -->`) is left out of the curl run; its file names are still checked.
"""

import ast
import json
import os
import re
import shlex
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from markdown_it import MarkdownIt

from conftest import ROOT, served

PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
NOT_RUN = re.compile(r"<!--\s*not run in tests\b", re.IGNORECASE)
EXAMPLE_HOST = "localhost:8000"
SHELL_OPERATORS = {"|", "||", "&&", ";", ">", "<", "&"}
GENERATED = ("build/", "data/", "models/logs/")  # made by the commands themselves, not shipped
PLACEHOLDER = re.compile(r"[<>*$]|\b(?:NAME|DIR|FILE|RECORD|PATH)\b|\.\.\.")
MARKDOWN = MarkdownIt("commonmark").enable("table")


def relative(page: Path) -> str:
    return str(page.relative_to(ROOT))


# ---------------------------------------------------------------- reading the pages


@dataclass
class Block:
    page: Path
    line: int
    info: str
    text: str
    runnable: bool


def tokens(page: Path):
    return MARKDOWN.parse(page.read_text(encoding="utf-8"))


def blocks(page: Path) -> list[Block]:
    """Fenced code blocks, each runnable unless the HTML block just before it says otherwise."""
    found, previous = [], None
    for token in tokens(page):
        if token.type == "fence":
            marked = previous is not None and previous.type == "html_block" and NOT_RUN.search(previous.content)
            found.append(Block(page, token.map[0] + 1, token.info.strip(), token.content, not marked))
        if token.level == 0:  # the page's own blocks, not what is nested in them
            previous = token
    return found


def inline_children(page: Path):
    for token in tokens(page):
        if token.type == "inline":
            yield token, token.children or []


def links(page: Path) -> list[tuple[int, str]]:
    """(line, target) of every link and image outside code."""
    found = []
    for token, children in inline_children(page):
        for child in children:
            if child.type == "link_open":
                found.append((token.map[0] + 1, child.attrs["href"]))
            elif child.type == "image":
                found.append((token.map[0] + 1, child.attrs["src"]))
    return found


def code_spans(page: Path) -> list[tuple[int, str]]:
    return [(token.map[0] + 1, child.content) for token, children in inline_children(page)
            for child in children if child.type == "code_inline"]


def github_anchors(page: Path) -> set[str]:
    """The anchors GitHub gives a page's headings: lower case, punctuation other than '-' and '_'
    dropped, spaces to '-', a repeated slug suffixed -1, -2, ..."""
    anchors, seen = set(), {}
    stream = tokens(page)
    for index, token in enumerate(stream):
        if token.type != "heading_open":
            continue
        text = "".join(c.content for c in stream[index + 1].children or [] if c.type in ("text", "code_inline"))
        slug = re.sub(r"[^\w\- ]", "", text.strip().lower()).replace(" ", "-")
        count = seen.get(slug, 0)
        seen[slug] = count + 1
        anchors.add(slug if count == 0 else f"{slug}-{count}")
    return anchors


def commands(block: Block) -> list[str]:
    """The block's command lines, continuation lines joined, comments dropped."""
    joined = block.text.replace("\\\n", " ")
    return [line.split(" #")[0].strip() for line in joined.splitlines()
            if line.strip() and not line.lstrip().startswith("#")]


def shell_blocks() -> list[Block]:
    return [b for page in PAGES for b in blocks(page) if b.info in ("sh", "bash", "shell", "console")]


# ---------------------------------------------------------------- links


def test_the_readme_is_a_front_page():
    lines = (ROOT / "README.md").read_text(encoding="utf-8").splitlines()
    assert len(lines) <= 150, f"README.md has {len(lines)} lines; the reference belongs in docs/"
    first_block = next(b for b in blocks(ROOT / "README.md") if b.info == "sh")
    assert [c.split()[:2] for c in commands(first_block)] == [["make", "run"], ["make", "test"]]


@pytest.mark.parametrize("page", PAGES, ids=relative)
def test_every_relative_link_resolves_to_a_file_and_its_heading(page):
    broken = []
    for line, target in links(page):
        if re.match(r"^[a-z][a-z0-9+.-]*:", target):  # https:, mailto:, ...
            continue
        path, _, anchor = target.partition("#")
        file = (page.parent / path).resolve() if path else page
        if not file.exists():
            broken.append(f"{relative(page)}:{line}: {target}: no file {path}")
        elif anchor and file.suffix == ".md" and anchor not in github_anchors(file):
            broken.append(f"{relative(page)}:{line}: {target}: no heading #{anchor} in {path or page.name}")
    assert not broken, "\n".join(broken)


def test_the_anchor_rule_is_githubs(tmp_path):
    page = tmp_path / "page.md"
    page.write_text("# Open Inference Protocol V2\n\n## How the recipe was chosen: inside DS1 only\n\n"
                    "## `make train`\n\n## A & B\n\n## Notes\n\n## Notes\n\n```sh\n# not a heading\n```\n")
    assert github_anchors(page) == {"open-inference-protocol-v2", "how-the-recipe-was-chosen-inside-ds1-only",
                                    "make-train", "a--b", "notes", "notes-1"}


def test_every_docs_page_is_linked_from_the_docs_index():
    index = {target.partition("#")[0] for _, target in links(ROOT / "docs" / "README.md")}
    pages = {p.name for p in (ROOT / "docs").glob("*.md")} - {"README.md"}
    assert not pages - index, f"docs pages missing from docs/README.md: {sorted(pages - index)}"


# ---------------------------------------------------------------- files named by examples


CLUSTER_TOOLS = ("kubectl ", "helm ", "kustomize ")  # they name resources (service/ecg-api), not files
FILE_FLAGS = ("-f", "-k", "--filename", "--kustomize")


def named_paths(text: str) -> list[str]:
    """Repository paths in a command or code span: '@file' arguments and words that start with a
    top-level folder of the repository (for cluster tools, only their -f / -k arguments);
    placeholders (<name>, DIR, *.json, ...) are left out."""
    top = {p.name for p in ROOT.iterdir() if not p.name.startswith(".")}
    words = re.split(r"[\s'\"=(),]+", text)
    if text.startswith(CLUSTER_TOOLS):
        words = [w for flag, w in zip(words, words[1:]) if flag in FILE_FLAGS]
    found = []
    for word in words:
        uploaded = word.startswith("@")  # curl -d @FILE, -F name=@FILE: always a file
        word = word.lstrip("@").rstrip(".:;")
        if not word or PLACEHOLDER.search(word) or word.startswith(GENERATED):
            continue
        if uploaded or "/" in word and word.split("/")[0] in top:
            found.append(word)
    return found


def dotted_name_exists(name: str) -> bool:
    """service.signal.context.context_beats: the longest module prefix is a file, the rest a name
    defined at its top level."""
    parts = name.split(".")
    for cut in range(len(parts), 0, -1):
        base = ROOT.joinpath(*parts[:cut])
        source = base.with_suffix(".py") if base.with_suffix(".py").is_file() else base / "__init__.py"
        if not source.is_file():
            continue
        rest = parts[cut:]
        if not rest:
            return True
        tree = ast.parse(source.read_text(encoding="utf-8"))
        defined = {n.name for n in tree.body if isinstance(n, (ast.FunctionDef, ast.ClassDef, ast.AsyncFunctionDef))}
        defined |= {t.id for n in tree.body if isinstance(n, (ast.Assign, ast.AnnAssign))
                    for t in (n.targets if isinstance(n, ast.Assign) else [n.target]) if isinstance(t, ast.Name)}
        return rest[0] in defined
    return False


@pytest.mark.parametrize("page", PAGES, ids=relative)
def test_every_file_and_module_the_page_names_exists(page):
    missing = []
    named = [(b.line, c) for b in blocks(page) if b.info in ("sh", "bash", "shell", "console") for c in commands(b)]
    named += code_spans(page)
    for line, text in named:
        for path in named_paths(text):
            as_record = list((ROOT / path).parent.glob(f"{Path(path).name}.*"))  # WFDB: 'mitdb/100' is 100.hea...
            if not (ROOT / path).exists() and not as_record:
                missing.append(f"{relative(page)}:{line}: {path}")
        for dotted in re.findall(r"(?<![\w/.-])(?:service|training)(?:\.\w+)+", text):
            if not dotted_name_exists(dotted):
                missing.append(f"{relative(page)}:{line}: {dotted}")
    assert not missing, "named but not in the repository:\n" + "\n".join(missing)


def test_the_example_bodies_are_what_make_examples_writes(tmp_path):
    """examples/strip.json and observation.json can be remade, and are the remade ones."""
    subprocess.run([sys.executable, "scripts/make-examples.py", "--out", str(tmp_path)], cwd=ROOT, check=True,
                   capture_output=True)
    for name in ("strip.json", "observation.json"):
        assert json.loads((tmp_path / name).read_text()) == json.loads((ROOT / "examples" / name).read_text()), name


def test_the_observation_example_is_a_valid_fhir_r4_observation():
    from fhir.resources.R4B.observation import Observation

    observation = Observation.model_validate_json((ROOT / "examples" / "observation.json").read_text())
    assert [c.code.text for c in observation.component] == ["MLII", "V5"]
    assert all(len(c.valueSampledData.data.split()) == 30 * 360 for c in observation.component)


# ---------------------------------------------------------------- curl examples against a real server


def curl_examples() -> list[tuple[str, str]]:
    found = []
    for block in shell_blocks():
        if not block.runnable:
            continue
        for command in commands(block):
            if command.startswith("curl ") and EXAMPLE_HOST in command:
                route = re.search(EXAMPLE_HOST + r"(/[^\s'\"?]*)", command).group(1)
                found.append((f"{relative(block.page)}:{block.line}:{route}", command))
    return found


@pytest.fixture(scope="module")
def server():
    with served() as (base, _process):
        yield base


def test_the_docs_have_curl_examples():
    assert len(curl_examples()) >= 4


@pytest.mark.parametrize("where,command", curl_examples(), ids=[w for w, _ in curl_examples()])
def test_each_curl_example_answers_2xx_with_json(server, where, command, tmp_path):
    words = shlex.split(command.replace(EXAMPLE_HOST, server.removeprefix("http://")))
    assert not SHELL_OPERATORS & set(words), f"{where}: keep examples to one curl call: {command}"
    body = tmp_path / "answer"
    result = subprocess.run([*words, "-o", str(body), "-w", "%{http_code}"], cwd=ROOT, capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 0, f"{where}: curl failed: {result.stderr}"
    status = int(result.stdout)
    assert 200 <= status < 300, f"{where}: HTTP {status}: {body.read_text()[:500]}"
    json.loads(body.read_text())


# ---------------------------------------------------------------- which model to pick


def test_models_marks_the_recommended_ones_and_says_what_each_is_for(server):
    cards = httpx.get(f"{server}/models", timeout=30).json()["models"]
    recommended = {name for name, card in cards.items() if card["recommended"]}
    assert recommended == {"context-odenet", "context-resnet"}
    assert all(card["use"] for card in cards.values()), "every shipped model says what it is for"
    models_page = (ROOT / "docs" / "models.md").read_text(encoding="utf-8")
    for name in recommended:
        assert f"| `{name}` | **yes** |" in models_page


# ---------------------------------------------------------------- make train fails loudly


def run_training(*args, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    return subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=600)


def test_make_train_without_the_database_fails_and_says_how_to_get_it(tmp_path):
    missing = tmp_path / "mitdb"
    venv = Path(sys.executable).parent.parent  # the environment running the tests; not reinstalled (-o)
    result = run_training("make", "--no-print-directory", f"VENV={venv}", "-o", f"{venv}/.dev", "train",
                          f"DATA={missing}", cwd=ROOT)
    assert result.returncode != 0
    assert f"not in {missing}" in result.stderr
    assert "wfdb.dl_database('mitdb', 'data/mitdb')" in result.stderr
    assert "make train DATA=data/mitdb" in result.stderr


def test_train_all_names_the_records_an_incomplete_database_lacks(tmp_path, fixture_dir):
    partial = tmp_path / "mitdb"
    partial.mkdir()
    for record in ("100", "208", "232"):
        for ext in ("hea", "dat", "atr"):
            (partial / f"{record}.{ext}").write_bytes((fixture_dir / f"{record}.{ext}").read_bytes())
    (partial / "232.atr").unlink()
    result = run_training(str(ROOT / "scripts" / "train-all.sh"), str(partial), cwd=tmp_path)
    assert result.returncode == 2
    assert "46 of its 48 records missing or incomplete" in result.stderr
    assert " 232" in result.stderr and " 100 " not in result.stderr.split("(", 1)[1]
    assert not (tmp_path / "models").exists(), "nothing is trained or written before the data is checked"


def test_a_failing_training_run_fails_the_whole_training(tmp_path):
    """Every record present but unreadable: the real ecg-train fails on it, in each lane, and the
    script exits non-zero naming the model and its log instead of leaving the error in the log."""
    from training.data import RECORDS

    corrupt = tmp_path / "mitdb"
    corrupt.mkdir()
    for record in RECORDS:
        for ext in ("hea", "dat", "atr"):
            (corrupt / f"{record}.{ext}").write_text("not a WFDB file\n")
    result = run_training(str(ROOT / "scripts" / "train-all.sh"), str(corrupt), cwd=tmp_path)
    assert result.returncode == 1
    for first_of_lane in ("odenet", "resnet"):
        assert f"training {first_of_lane} failed; its log is models/logs/{first_of_lane}.log" in result.stderr
        assert (tmp_path / "models" / "logs" / f"{first_of_lane}.log").is_file()
    assert "not every model was trained" in result.stderr
    assert not (tmp_path / "models" / "odenet-ds1").exists(), "a lane stops at its first failure"


def test_train_all_has_help():
    result = subprocess.run([str(ROOT / "scripts" / "train-all.sh"), "--help"], capture_output=True, text=True)
    assert result.returncode == 0 and "Usage: scripts/train-all.sh [DATA_DIR]" in result.stdout
