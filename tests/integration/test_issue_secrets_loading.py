"""Reading intent at a commit: a second push parses only what changed, and the per-file loader
gives exactly what ``load_files`` gives."""

from __future__ import annotations

from pathlib import Path

from chamberlain.adapters.intent_source import IntentSource
from chamberlain.model.loader import LoadedFile, combine, load_file, load_files, read_dir
from chamberlain.model.validate import check
from chamberlain.steps.intent_loading import IntentLoader, LoadedIntent, LruCache
from tests.harness.environments import secret_intent
from tests.harness.gitrepo import IntentRepo

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "intent"


def _loader(tmp_path: Path) -> IntentLoader:
    files: LruCache[tuple[str, str], LoadedFile] = LruCache(1000)
    commits: LruCache[tuple[str, str], LoadedIntent] = LruCache(4)
    return IntentLoader(IntentSource(tmp_path / "cache"), files=files, commits=commits)


def test_a_second_commit_parses_only_the_changed_files(
    intent_repo: IntentRepo, tmp_path: Path
) -> None:
    files = {
        f"secrets/s{i}.yaml": secret_intent(f"s{i}", f"platform-data/s/s{i}") for i in range(6)
    }
    first = intent_repo.commit({**files, "README.md": "not intent\n"}, "six")
    edited = files["secrets/s3.yaml"].replace("team-payments", "team-b")
    second = intent_repo.commit(
        {"secrets/s3.yaml": edited, "secrets/s5.yaml": None}, "edit one, remove one"
    )
    intent_repo.push()
    loader = _loader(tmp_path)

    one = loader.load(intent_repo.url, first)
    two = loader.load(intent_repo.url, second)

    assert one.parsed == 6 and one.valid  # README.md is not intent: never parsed
    assert two.parsed == 1  # only the edited file; the removed one needs no parsing
    assert {s.name: s.owner for s in two.intent.secrets}["s3"] == "team-b"
    assert len(two.intent.secrets) == 5
    assert loader.load(intent_repo.url, second) is two  # a redelivery reads nothing


def test_an_invalid_commit_reports_problems_of_every_file(
    intent_repo: IntentRepo, tmp_path: Path
) -> None:
    sha = intent_repo.commit(
        {
            "a.yaml": "apiVersion: chamberlain.dev/v1alpha1\nkind: Nope\n",
            "b.yaml": "key: [unclosed\n",
            "c.yaml": secret_intent("c", "platform-data/c/c"),
        },
        "broken",
    )
    intent_repo.push()
    loaded = _loader(tmp_path).load(intent_repo.url, sha)
    assert not loaded.valid
    assert {p.file for p in loaded.problems} >= {"a.yaml", "b.yaml"}


def test_per_file_loading_equals_load_files_on_the_example_repository() -> None:
    files = read_dir(EXAMPLES)
    whole = load_files(files)
    pieces = combine(load_file(path, content) for path, content in reversed(files.items()))
    assert pieces == whole
    assert check(pieces) == check(whole)
