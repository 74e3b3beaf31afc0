"""The README is a front door of one or two screens, and the measurements it used to hold live where a
reader looks for them: the book's reproducibility appendix (each table with the command that made it) and
bench/README.md (how to run each script)."""

import re

import yaml

from conftest import ROOT

APPENDIX = "book/appendix_reproducibility"
COMMAND = re.compile(r"`(?:[A-Z_]+=\S+\s)*(python3?\s(?:bench/(\w+)\.py|tasks\.py\s\w+|-m\sasc_lib\.[\w.]+\s\w+)[^`]*|\.ci/run)`")


def test_readme_opens_with_the_two_commands_and_fits_two_screens():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    size = len(readme.encode())
    assert size <= 12 * 1024, f"README.md is {size:,} bytes: keep it to 12 KB"
    first_block = re.search(r"```bash\n(.*?)```", readme, re.S)
    assert first_block and first_block.start() < 2000, "the README's first code block comes within its first screen"
    commands = [line.split("#")[0].strip() for line in first_block[1].splitlines()]
    assert commands == ["python3 tasks.py book", "python3 tasks.py test"]


def test_the_appendix_is_in_the_book():
    toc = yaml.safe_load((ROOT / "_toc.yml").read_text())
    assert APPENDIX in [entry["file"] for entry in toc["chapters"]]
    assert (ROOT / f"{APPENDIX}.md").is_file()
    assert f"{APPENDIX}.md" in (ROOT / "README.md").read_text(encoding="utf-8")


def test_every_appendix_table_names_the_command_that_made_it():
    text = (ROOT / f"{APPENDIX}.md").read_text(encoding="utf-8")
    blocks = re.split(r"\n\s*\n", text)
    tables = [i for i, block in enumerate(blocks) if block.lstrip().startswith("|")]
    assert len(tables) >= 8  # the pinned kernels, fingerprints, seeds, convergence, times, INT8, full, ...
    for i in tables:
        assert COMMAND.search(blocks[i - 1]), f"no command names the table under: {blocks[i - 1][-200:]!r}"
    for script in {m[2] for m in COMMAND.finditer(text) if m[2]}:
        assert (ROOT / "bench" / f"{script}.py").is_file(), f"the appendix names bench/{script}.py, which is not there"


def test_bench_readme_says_how_to_run_every_script():
    readme = (ROOT / "bench" / "README.md").read_text(encoding="utf-8")
    for script in sorted((ROOT / "bench").glob("*.py")):
        assert f"bench/{script.name}" in readme, f"bench/README.md does not say how to run {script.name}"
