"""The dev evaluation tasks (conf/eval/dev_suite.yaml): built from held-out documents in neither a test task nor
training text, and adding them leaves every test-side file as it was.

    pytest tests/test_eval_dev.py
"""
from __future__ import annotations

import json
import sys
from collections import defaultdict
from pathlib import Path
from typing import Any, Iterable

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "data"))
import heldout  # noqa: E402
import prepare_eval  # noqa: E402

SEED, PER_OUTLET, PER_ACCOUNT = 13, 4, 3
DEV_FILES = ("news_outlet_classification_dev", "news_outlet_clustering_dev", "tweet_account_classification_dev")


def fixture_articles() -> list[dict[str, Any]]:
    """3 outlets x (8 train, 3 dev, 3 test) articles, each longer than a lead so leads are cut."""
    splits = ["train"] * 8 + ["dev"] * 3 + ["test"] * 3
    return [{"id": f"{outlet}{i}", "title": f"headline {outlet} {i}", "outlet": outlet, "split": split,
             "text": f"article {outlet} {i} " + " ".join(f"w{i}x{j}" for j in range(120))}
            for outlet in "abc" for i, split in enumerate(splits)]


def fixture_tweets() -> list[heldout.Tweet]:
    """3 accounts x 80 tweets: 14 to 21 held out per account (seed 13), at least the 12 test and dev take."""
    return [heldout.Tweet(f"tweet {i} from {account} about health", account) for account in "xyz" for i in range(80)]


def all_tasks(articles: list[dict[str, Any]], tweets: list[heldout.Tweet]) -> dict[str, list[dict[str, Any]]]:
    pe = prepare_eval
    return {**pe.news_tasks(articles, SEED, PER_OUTLET), **pe.news_dev_tasks(articles, SEED, PER_OUTLET),
            **pe.tweet_tasks(tweets, SEED, PER_ACCOUNT), **pe.tweet_dev_tasks(tweets, SEED, PER_ACCOUNT)}


def texts(rows: Iterable[dict[str, Any]]) -> set[str]:
    return {t for row in rows for t in heldout._texts_of(row)}


def scored(rows: list[dict[str, Any]]) -> set[str]:
    """The texts a task scores (a classification file's train rows only fit the classifier)."""
    return {r["text"] for r in rows if r.get("split", "test") == "test"}


def test_dev_files_share_no_scored_text_with_test_files_or_training() -> None:
    articles, tweets = fixture_articles(), fixture_tweets()
    tasks = all_tasks(articles, tweets)
    test_side = texts(r for name, rows in tasks.items() if name not in DEV_FILES for r in rows)
    dev_leads = {prepare_eval.lead(a["text"]) for a in articles if a["split"] == "dev"}
    assert scored(tasks["news_outlet_classification_dev"]) == dev_leads == texts(tasks["news_outlet_clustering_dev"])
    assert not dev_leads & test_side
    assert not dev_leads & {prepare_eval.lead(a["text"]) for a in articles if a["split"] == "train"}
    train_rows = [r for r in tasks["news_outlet_classification_dev"] if r["split"] == "train"]
    assert train_rows == [r for r in tasks["news_outlet_classification"] if r["split"] == "train"]  # by design
    dev_tweets = texts(tasks["tweet_account_classification_dev"])
    assert len(tasks["tweet_account_classification_dev"]) == 3 * 2 * PER_ACCOUNT
    assert not dev_tweets & texts(tasks["tweet_account_classification"])  # train rows included
    assert all(heldout.tweet_held_out(t, SEED) for t in tweets if t.text in dev_tweets)


def test_training_text_holds_no_dev_text(tmp_path: Path) -> None:
    """The instruct and distill builders on a fixture build whose eval folder holds the dev files."""
    import prepare
    import prepare_text

    articles, tweets = fixture_articles(), fixture_tweets()
    prepare.write_jsonl(tmp_path / "news" / "articles.jsonl", articles)
    tasks = all_tasks(articles, tweets)
    for name, rows in tasks.items():
        prepare.write_jsonl(tmp_path / "eval" / f"{name}.jsonl", rows)
    snippets = [heldout.Snippet(f"review {i} of a film", "fresh" if i % 2 else "rotten", f"m{i % 3}")
                for i in range(12)]
    held = heldout.build_held_out(tmp_path, snippets, tweets, SEED)
    rows = [r for table in prepare_text.instruct_tasks(tmp_path, snippets, tweets, held, SEED).values() for r in table]
    trained = texts(rows) | {t for r in rows for t in r["pos"]}
    distill = prepare_text.distill_sources(tmp_path, snippets, tweets, held, SEED)
    trained |= {t for source in distill.values() for t in source}
    assert {t.text for t in tweets} & trained  # the training side is not empty: the check below means something
    dev = {t for name in DEV_FILES for t in scored(tasks[name])} | texts(tasks["tweet_account_classification_dev"])
    assert not dev & trained
    dev_bodies = [a["text"] for a in articles if a["split"] == "dev"]
    assert not any(t in body for t in trained for body in dev_bodies)  # no window of a dev article either


def v2_news(articles: list[dict[str, Any]], seed: int, per_outlet: int) -> list[list[dict[str, Any]]]:
    """Outlet classification and clustering as built before the dev files existed (data VERSION 2)."""
    by_outlet: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for a in articles:
        if a["split"] == "train":
            by_outlet[a["outlet"]].append(a)
    rank, lead = prepare_eval.rank, prepare_eval.lead
    train = [a for o in sorted(by_outlet) for a in sorted(by_outlet[o], key=lambda a: rank(seed, a["id"]))[:per_outlet]]
    test = sorted((a for a in articles if a["split"] == "test"), key=lambda a: rank(seed, a["id"]))
    return [[{"text": lead(a["text"]), "label": a["outlet"], "split": "train"} for a in train]
            + [{"text": lead(a["text"]), "label": a["outlet"], "split": "test"} for a in test],
            [{"text": lead(a["text"]), "label": a["outlet"]} for a in test]]


def v2_tweets(tweets: list[heldout.Tweet], seed: int, per_account: int) -> list[dict[str, Any]]:
    """Account classification as built before the dev file existed (data VERSION 2)."""
    by_account: dict[str, list[heldout.Tweet]] = defaultdict(list)
    for t in tweets:
        if heldout.tweet_held_out(t, seed):
            by_account[t.account].append(t)
    rows = []
    for account in sorted(by_account):
        chosen = sorted(by_account[account], key=lambda t: prepare_eval.rank(seed, t.text))[:2 * per_account]
        rows += [{"text": t.text, "label": account, "split": "train" if i < len(chosen) // 2 else "test"}
                 for i, t in enumerate(chosen)]
    return rows


@pytest.mark.parametrize("per_account", [PER_ACCOUNT, 7])  # 7: some accounts run short of 2 x 7, as v2 allowed
def test_test_side_rows_are_those_before_the_dev_files(per_account: int) -> None:
    articles, tweets = fixture_articles(), fixture_tweets()
    news = prepare_eval.news_tasks(articles, SEED, PER_OUTLET)
    assert [news["news_outlet_classification"], news["news_outlet_clustering"]] == v2_news(articles, SEED, PER_OUTLET)
    expected = v2_tweets(tweets, SEED, per_account)
    assert prepare_eval.tweet_tasks(tweets, SEED, per_account)["tweet_account_classification"] == expected
    # the dev rows continue each account's order where the test file stops
    dev = prepare_eval.tweet_dev_tasks(tweets, SEED, per_account)["tweet_account_classification_dev"]
    for account, ranked in prepare_eval.held_out_tweets(tweets, SEED).items():
        taken = [r["text"] for r in expected if r["label"] == account]
        following = ranked[len(taken):len(taken) + 2 * per_account]
        assert [r["text"] for r in dev if r["label"] == account] == [t.text for t in following]


def test_prepared_dev_files_share_no_scored_text_with_test_files() -> None:
    folder = ROOT / "data" / "build" / "eval"
    if not all((folder / f"{name}.jsonl").exists() for name in DEV_FILES):
        pytest.skip("prepared data missing: python data/prepare.py news && python data/prepare_eval.py")

    def read(name: str) -> list[dict[str, Any]]:
        return [json.loads(line) for line in open(folder / f"{name}.jsonl", encoding="utf-8")]

    test_side = texts(r for path in folder.rglob("*.jsonl") if not path.stem.endswith("_dev")
                      for r in map(json.loads, open(path, encoding="utf-8")))
    news = ROOT / "data" / "build" / "news"
    articles = prepare_eval.read_articles(news / "articles.jsonl")
    dev_leads = {prepare_eval.lead(a["text"]) for a in articles if a["split"] == "dev"}
    assert scored(read("news_outlet_classification_dev")) == dev_leads == texts(read("news_outlet_clustering_dev"))
    assert not dev_leads & test_side
    with open(news / "train.jsonl", encoding="utf-8") as handle:
        train_pairs = {t for r in map(json.loads, handle) for t in [r["query"], *r["pos"]]}
    assert not dev_leads & (train_pairs | {prepare_eval.lead(a["text"]) for a in articles if a["split"] == "train"})
    tweets = read("tweet_account_classification_dev")
    assert len(tweets) == len(read("tweet_account_classification")) and not texts(tweets) & test_side


def compose_eval(group: str) -> Any:
    from hydra import compose, initialize_config_dir

    from trainer.config import CONF_DIR, register_configs

    register_configs()
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return compose(config_name="evaluate", overrides=[f"eval={group}", "paths.data=DATA"]).eval.tasks


def test_dev_suite_mirrors_its_test_tasks_and_eval_dev_needs_only_news() -> None:
    dev, dev_suite, suite = (compose_eval(g) for g in ("dev", "dev_suite", "suite"))
    assert [dict(t) for t in dev_suite[:len(dev)]] == [dict(t) for t in dev]
    by_name = {t.name: t for t in suite}
    for task in dev_suite[len(dev):]:
        twin = by_name[task.name.removesuffix("-dev")]
        assert (task.kind, task.task, task.main_score) == (twin.kind, twin.task, twin.main_score)
        assert task.path == twin.path.replace(".jsonl", "_dev.jsonl")
    # training runs load every task of eval=dev before step 0: it may read only what data/prepare.py news writes
    assert all(t.path.startswith("DATA/news/") for t in dev)
