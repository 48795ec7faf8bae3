"""Tasks shared by the DSPy-side benchmark scripts: datasets, signatures and metrics.

The promptopt side of the benchmark reads the same files and is given the same instructions and
metric names, so both frameworks start from the same prompt and score the same way.
"""

from __future__ import annotations

import json
import math
import re
import string
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

DATA_DIR = Path(__file__).resolve().parent.parent / "data"


@dataclass(frozen=True)
class Task:
    """One benchmark task: which fields go in, which one comes out, and how it is scored."""

    name: str
    inputs: tuple[str, ...]
    output: str
    instructions: str
    metric: str  # promptopt metric names: "accuracy" (label equality) or "token_f1" (SQuAD F1)


TASKS: dict[str, Task] = {
    "sst2": Task(
        name="sst2",
        inputs=("text",),
        output="label",
        instructions="Classify the sentiment of the sentence. Answer with one word: positive or negative.",
        metric="accuracy",
    ),
    "trec": Task(
        name="trec",
        inputs=("text",),
        output="label",
        instructions=(
            "Classify the question by the kind of answer it asks for. Answer with one word: "
            "abbreviation, description, entity, human, location or number."
        ),
        metric="accuracy",
    ),
    "xquad_en": Task(
        name="xquad_en",
        inputs=("context", "question"),
        output="answer",
        instructions="Answer the question with a short span copied from the context.",
        metric="token_f1",
    ),
}


def read_jsonl(path: Path) -> list[dict]:
    """Reads a JSON Lines file into a list of dicts (blank lines skipped)."""
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def load_split(task: Task, split: str, limit: int | None = None) -> list[dict]:
    """Rows of `split` (train, dev or test) of a task, optionally the first `limit` only."""
    rows = read_jsonl(DATA_DIR / task.name / f"{split}.jsonl")
    return rows if limit is None else rows[:limit]


def normalize_label(value: object) -> str:
    """Label comparison as promptopt's `accuracy` does it: surrounding whitespace and case ignored."""
    return str(value).strip().lower()


def normalize_answer(value: object) -> str:
    """SQuAD answer normalisation: lower case, no punctuation, no articles, single spaces."""
    text = str(value).lower()
    text = "".join(ch for ch in text if ch not in set(string.punctuation))
    text = re.sub(r"\b(a|an|the)\b", " ", text)
    return " ".join(text.split())


def squad_f1(prediction: object, gold: object) -> float:
    """SQuAD token F1 between a predicted and a gold answer."""
    pred_tokens = normalize_answer(prediction).split()
    gold_tokens = normalize_answer(gold).split()
    if not pred_tokens or not gold_tokens:
        return float(pred_tokens == gold_tokens)
    common = Counter(pred_tokens) & Counter(gold_tokens)
    same = sum(common.values())
    if same == 0:
        return 0.0
    precision = same / len(pred_tokens)
    recall = same / len(gold_tokens)
    return 2 * precision * recall / (precision + recall)


def score(task: Task, gold: object, predicted: object) -> float:
    """The task's metric for one prediction, in [0, 1]."""
    if predicted is None:
        return 0.0
    if task.metric == "accuracy":
        return float(normalize_label(predicted) == normalize_label(gold))
    if task.metric == "token_f1":
        return squad_f1(predicted, gold)
    raise ValueError(f"Unknown metric `{task.metric}`")


def feedback(task: Task, gold: object, predicted: object, value: float) -> str:
    """A short explanation of a score, for reflective optimizers."""
    if value >= 1.0:
        return f"Correct: the expected {task.output} is `{gold}`."
    return f"Incorrect (score {value:.2f}): the answer was `{predicted}` but the expected {task.output} is `{gold}`."


def gepa_light_budget(valset_size: int, num_predictors: int = 1) -> int:
    """Metric calls DSPy's GEPA `auto="light"` allows (its `auto_budget` with n = 6)."""
    n = 6
    trials = int(max(2 * (2 * num_predictors) * math.log2(n), 1.5 * n))
    return valset_size + 5 * n + 35 * trials + ((trials + 1) // 5 + 1 + (1 if trials < 5 else 0)) * valset_size
