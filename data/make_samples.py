"""Write the small sample files of ``data/samples/``: one per input format the trainer reads (see data/README.md).

    python data/make_samples.py          # rewrites data/samples/{st_triplets.csv,flag.jsonl,...} (committed)

The same 16 hand-written (question, answer, wrong answer) triples in each format, so a sample's rows are easy to
check by eye and tests can assert exact values. ``toy.jsonl`` (our schema, every field) is hand-written, not here.
"""
from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

SAMPLES = Path(__file__).resolve().parent / "samples"
TRIPLES = [
    ("how do I cook rice on the stove", "Rinse the rice, simmer it covered in one and a half times its volume of water "
     "for about fifteen minutes, then let it stand off the heat.", "Knead bread dough for ten minutes until smooth."),
    ("why does bread go stale", "Bread goes stale as its starch recrystallises and pushes water out, which firms the "
     "crumb even in a sealed bag.", "Cheese keeps longest wrapped in wax paper in the fridge."),
    ("how to soften hard brown sugar", "Seal hard brown sugar in a container with a slice of bread overnight; the "
     "sugar takes up its moisture and softens.", "White sugar dissolves faster in warm water than in cold."),
    ("what temperature kills bacteria in chicken", "Chicken is safe once its thickest part reaches 74 degrees Celsius "
     "(165 Fahrenheit).", "Beef steak can be served rare at 52 degrees Celsius."),
    ("how far away is the Moon", "The Moon orbits Earth at an average distance of about 384,400 kilometres.",
     "The Sun is about 150 million kilometres from Earth."),
    ("why do stars twinkle", "Stars twinkle because turbulent air in Earth's atmosphere bends their light slightly "
     "differently from moment to moment.", "Planets shine by reflected sunlight."),
    ("what is a black hole", "A black hole is a region of space where gravity is so strong that nothing, not even "
     "light, can escape once past its event horizon.", "A neutron star is the collapsed core of a massive star."),
    ("how long is a day on Mars", "A day on Mars, called a sol, lasts about 24 hours and 37 minutes.",
     "A year on Mars lasts about 687 Earth days."),
    ("what is a comet made of", "A comet is a loose ball of ice, dust and rock that grows a glowing tail of gas when "
     "it nears the Sun.", "Asteroids are rocky or metallic bodies, mostly between Mars and Jupiter."),
    ("how to copy a file in Python", "Use shutil.copy(src, dst) to copy a file's contents, or shutil.copy2 to keep its "
     "metadata too.", "os.remove(path) deletes a file."),
    ("what is a race condition", "A race condition is a bug where the result depends on the unpredictable order in "
     "which threads or processes run.", "A deadlock is when two threads each wait for a lock the other holds."),
    ("what does SQL JOIN do", "A SQL JOIN combines rows of two tables whose columns match a condition, such as equal "
     "customer ids.", "SQL GROUP BY collapses rows with equal values into one summary row."),
    ("how to undo the last git commit", "git reset --soft HEAD~1 removes the last commit but keeps its changes staged.",
     "git log lists the commits of the current branch."),
    ("what is recursion", "Recursion is when a function solves a problem by calling itself on smaller parts of it "
     "until it reaches a base case.", "A loop repeats a block of code while a condition holds."),
    ("what is an API", "An API is a defined set of calls one program offers so that other programs can use its "
     "features without knowing its internals.", "A GUI is the windows and buttons a person clicks on."),
    ("why use a virtual environment in Python", "A virtual environment keeps each project's installed packages "
     "separate, so projects needing different versions do not clash.", "pip freeze lists installed packages."),
]
TOPICS = ["cooking"] * 4 + ["astronomy"] * 5 + ["programming"] * 7
PROMPT = "Represent this question for searching relevant passages: "


def write_st_triplets(path: Path) -> None:
    """sentence-transformers triplets: columns anchor, positive, negative."""
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["anchor", "positive", "negative"])
        writer.writerows(TRIPLES)


def write_text_label(path: Path) -> None:
    """A sentence-transformers classification table: (text, label), the answers labelled by topic."""
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["text", "label"])
        writer.writerows((p, t) for (_, p, _), t in zip(TRIPLES, TOPICS))


def write_flag(path: Path) -> None:
    """FlagEmbedding fine-tuning rows: query/pos/neg lists, teacher scores, a prompt and a type."""
    rows = [{"query": q, "pos": [p], "neg": [n], "pos_scores": [0.9], "neg_scores": [0.2], "prompt": PROMPT,
             "type": "normal"} for q, p, n in TRIPLES]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")


def write_custom(path: Path) -> None:
    """A JSON array whose columns need a mapping: data.columns={question: query, answer: pos, topic: task}."""
    rows = [{"id": i + 1, "question": q, "answer": p, "topic": t}
            for i, ((q, p, _), t) in enumerate(zip(TRIPLES, TOPICS))]
    path.write_text(json.dumps(rows, indent=1) + "\n", encoding="utf-8")


def write_datasets(parquet: Path, saved: Path) -> None:
    """sentence-transformers pairs as parquet, and our schema as a ``save_to_disk`` folder."""
    import datasets

    datasets.Dataset.from_list([{"anchor": q, "positive": p} for q, p, _ in TRIPLES]).to_parquet(str(parquet))
    shutil.rmtree(saved, ignore_errors=True)
    ours = [{"query": q, "pos": [p], "neg": [n], "task": t} for (q, p, n), t in zip(TRIPLES, TOPICS)]
    datasets.Dataset.from_list(ours).save_to_disk(str(saved))


def main() -> None:
    write_st_triplets(SAMPLES / "st_triplets.csv")
    write_text_label(SAMPLES / "st_text_label.csv")
    write_flag(SAMPLES / "flag.jsonl")
    write_custom(SAMPLES / "custom_columns.json")
    write_datasets(SAMPLES / "st_pairs.parquet", SAMPLES / "saved")
    print(f"samples written to {SAMPLES}")


if __name__ == "__main__":
    main()
