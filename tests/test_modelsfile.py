"""models.txt parsing: every problem found at once, each naming its file and line; never any other exception."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hf_cache.cli import exit_code
from hf_cache.errors import ModelsFileError
from hf_cache.modelsfile import parse_models_file, parse_models_text
from tests.refresh_helpers import run_cli, run_refresh

SHA = "0123456789abcdef0123456789abcdef01234567"


def test_valid_file_with_comments_options_and_revisions(tmp_path: Path) -> None:
    text = (
        "\ufeff# header\r\n"
        "openai-community/gpt2\r\n"
        "\n"
        "   # indented comment\n"
        f"org/model@{SHA}   # pinned\n"
        "org/model@v1.0 include=*.json,*.safetensors exclude=onnx/\n"
        "org/data type=dataset\n"
        f"local/ckpt source=file://{tmp_path}\n"
        "gpt2\n"
    )
    entries = parse_models_text(text)
    assert [e.repo_id for e in entries] == [
        "openai-community/gpt2",
        "org/model",
        "org/model",
        "org/data",
        "local/ckpt",
        "gpt2",
    ]
    assert [e.line for e in entries] == [2, 5, 6, 7, 8, 9]
    gpt2, pinned, tagged, data, local, bare = entries
    assert gpt2.requested_revision == "main" and gpt2.ref_name == "main"
    assert pinned.ref_name is None and pinned.requested_revision == SHA
    assert tagged.ref_name == "v1.0" and tagged.include == ("*.json", "*.safetensors")
    assert tagged.wants("config.json") and not tagged.wants("onnx/model.json") and not tagged.wants("a.bin")
    assert data.repo_type == "dataset"
    assert local.source == tmp_path
    assert bare.repo_id == "gpt2"


@pytest.mark.parametrize(
    ("line", "fragment"),
    [
        ("bad--id", "'--'"),
        ("a/b/c", "more than one '/'"),
        ("-org/x", "cannot start or end"),
        ("org/x@", "empty revision"),
        ("org/x@abc1234", "full 40-character sha"),
        ("org/x@a..b", "invalid revision"),
        ("org/x@v1:2", "invalid revision"),
        ("org/x foo=1", "unknown option 'foo'"),
        ("org/x include", "has no '='"),
        ("org/x include=", "empty value"),
        ("org/x include=[abc", "unbalanced"),
        ("org/x include=*.json,,*.bin", "empty glob"),
        ("org/x type=space", "not one of model, dataset"),
        ("org/x source=http://example.com/x", "not a file:// URL"),
        ("org/x source=file:///no/such/folder", "does not exist"),
        ("org/x type=model type=dataset", "given twice"),
        ("include=*.json", "expected a repo id first"),
    ],
)
def test_each_problem_names_file_line_and_fix(line: str, fragment: str) -> None:
    with pytest.raises(ModelsFileError) as err:
        parse_models_text(f"ok/model\n\n{line}\n", "clusters/models.txt")
    assert len(err.value.problems) == 1
    problem = err.value.problems[0]
    assert problem.startswith("clusters/models.txt:3: ")
    assert fragment in problem
    assert exit_code(err.value) == 2


def test_all_problems_reported_and_duplicates_name_both_lines(tmp_path: Path) -> None:
    text = "a/b\nbad--id\na/b\nc/d@v1 source=file://" + str(tmp_path) + "\n"
    with pytest.raises(ModelsFileError) as err:
        parse_models_text(text)
    problems = err.value.problems
    assert len(problems) == 3
    assert problems[0].startswith("models.txt:2:")
    assert problems[1] == "models.txt:3: duplicate entry a/b@main (first on line 1); remove one"
    assert problems[2].startswith("models.txt:4:") and "cannot be pinned with source=" in problems[2]


def test_same_repo_different_revisions_and_types_are_not_duplicates() -> None:
    entries = parse_models_text("a/b\na/b@v2\na/b type=dataset\n")
    assert len(entries) == 3


def test_missing_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ModelsFileError) as err:
        parse_models_file(tmp_path / "nope.txt")
    assert "no such file" in str(err.value) and exit_code(err.value) == 2


line_chars = st.characters(
    blacklist_categories=("Cs",), blacklist_characters="\r\n\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029"
)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.text(line_chars, max_size=60), max_size=8))
def test_fuzzed_input_either_parses_or_names_every_bad_line(lines: list[str]) -> None:
    text = "\n".join(lines)
    try:
        entries = parse_models_text(text, "fuzz.txt")
    except ModelsFileError as exc:
        assert exc.problems
        for problem in exc.problems:
            prefix, _, rest = problem.partition(": ")
            name, _, lineno = prefix.rpartition(":")
            assert name == "fuzz.txt" and 1 <= int(lineno) <= len(lines) and rest
        return
    for entry in entries:
        assert 1 <= entry.line <= len(lines)
        assert entry.repo_id and " " not in entry.repo_id


@settings(max_examples=200, deadline=None)
@given(
    org=st.from_regex(r"[A-Za-z0-9][A-Za-z0-9_]{0,10}", fullmatch=True),
    name=st.from_regex(r"[A-Za-z0-9][A-Za-z0-9_.]{0,10}[A-Za-z0-9]", fullmatch=True),
    rev=st.one_of(st.none(), st.from_regex(r"v[0-9]{1,3}(\.[0-9]{1,3}){0,2}", fullmatch=True)),
    kind=st.sampled_from(["model", "dataset"]),
)
def test_valid_entries_round_trip(org: str, name: str, rev: str | None, kind: str) -> None:
    if ".." in name:
        return
    spec = f"{org}/{name}" + (f"@{rev}" if rev else "")
    (entry,) = parse_models_text(f"{spec} type={kind}  # comment\n")
    assert (entry.repo_id, entry.revision, entry.repo_type) == (f"{org}/{name}", rev, kind)


@pytest.mark.parametrize(
    ("first", "second", "names"),
    [
        ("org/x", "org/x@main/x", ("'main/x'", "'main'")),
        ("org/x@release/v1", "org/x@release", ("'release'", "'release/v1'")),
        ("org/x@a/b", "org/x@a/b/c", ("'a/b/c'", "'a/b'")),
    ],
)
def test_clashing_ref_names_are_refused_with_both_lines(first: str, second: str, names: tuple[str, str]) -> None:
    """refs/main and refs/main/x cannot both exist in a cache folder (a file and a folder of the same name)."""
    with pytest.raises(ModelsFileError) as err:
        parse_models_text(f"{first}\nother/repo\n\n{second}  # later\n")
    (problem,) = err.value.problems
    assert problem.startswith("models.txt:4: ")
    assert "(line 1)" in problem and "clashes" in problem
    assert names[0] in problem and names[1] in problem


def test_refs_that_only_share_a_prefix_or_live_in_other_repos_do_not_clash() -> None:
    text = "org/x\norg/x@main-2\norg/x@mainline/a\norg/y@main/x\norg/x@main/x type=dataset\n"
    assert len(parse_models_text(text)) == 5


def test_whole_root_filesystem_as_source_is_refused() -> None:
    with pytest.raises(ModelsFileError) as err:
        parse_models_text("org/x source=file:///\n")
    assert "whole root filesystem" in err.value.problems[0]


def test_reader_side_parse_keeps_syntax_checks_but_not_the_writers_folders(tmp_path: Path) -> None:
    """Reader nodes never have the writer's source= folders: only writer=True checks them."""
    text = "org/x source=file:///no/such/folder\n"
    with pytest.raises(ModelsFileError, match="does not exist"):
        parse_models_text(text)
    (entry,) = parse_models_text(text, writer=False)
    assert entry.source == Path("/no/such/folder")
    for bad in ("org/x source=http://h/x", "org/x@v1 source=file:///no/such", "bad--id", "org/x\norg/x@main/x"):
        with pytest.raises(ModelsFileError):
            parse_models_text(bad, writer=False)
    path = tmp_path / "models.txt"
    path.write_text(text)
    assert parse_models_file(path, writer=False)[0].repo_id == "org/x"


def test_warm_accepts_the_writers_models_file_on_a_reader_node(
    tmp_path: Path, bucket: str, s3_env: dict[str, str], mounted
) -> None:
    """The CronJob's models.txt names source= folders only the writer has; a reader node warms from it all the same."""
    src = tmp_path / "ckpt"
    (src / "sub").mkdir(parents=True)
    (src / "config.json").write_text('{"a": 1}')
    (src / "sub" / "w.bin").write_bytes(b"w" * 4096)
    models = tmp_path / "models.txt"
    models.write_text(f"team/ckpt source=file://{src}\n")
    assert run_refresh(models, bucket, s3_env, prefix="hf").returncode == 0
    for f in (src / "sub" / "w.bin", src / "config.json"):
        f.unlink()
    (src / "sub").rmdir()
    src.rmdir()  # what a reader node sees: no such folder
    m = mounted(bucket=bucket, prefix="hf")
    result = run_cli(["warm", "--models", str(models), "--mountpoint", str(m.mountpoint)], s3_env)
    assert result.returncode == 0, result.stderr
    assert re.search(r"warmed 1 snapshots?: 2 files", result.stdout), result.stdout
