"""Reference scores for the differential test of promptopt-core's metrics.

Reads a JSON file of cases (written by `metrics_differential.rs`) and prints one JSON object:
ROUGE from `rouge-score`, BLEU from `sacrebleu`, Porter stems from NLTK, and SQuAD v1.1
exact match / token F1 from the normalisation of the official evaluation script.

Usage: reference_metrics.py CASES.json
"""

import collections
import json
import re
import string
import sys

import sacrebleu
from nltk.stem.porter import PorterStemmer
from rouge_score import rouge_scorer


def squad_normalize(text):
    text = text.lower()
    punctuation = set(string.punctuation)
    text = "".join(ch for ch in text if ch not in punctuation)
    text = re.sub(r"\b(a|an|the)\b", " ", text)
    return " ".join(text.split())


def squad_f1(prediction, gold):
    prediction_tokens = squad_normalize(prediction).split()
    gold_tokens = squad_normalize(gold).split()
    common = collections.Counter(prediction_tokens) & collections.Counter(gold_tokens)
    same = sum(common.values())
    if same == 0:
        return 0.0
    precision = same / len(prediction_tokens)
    recall = same / len(gold_tokens)
    return 2 * precision * recall / (precision + recall)


def squad_em(prediction, gold):
    return float(squad_normalize(prediction) == squad_normalize(gold))


def main():
    with open(sys.argv[1], encoding="utf-8") as handle:
        data = json.load(handle)
    cases = data["cases"]
    types = ["rouge1", "rouge2", "rougeL"]
    plain = rouge_scorer.RougeScorer(types, use_stemmer=False)
    stemmed = rouge_scorer.RougeScorer(types, use_stemmer=True)

    results = []
    for case in cases:
        prediction, references = case["prediction"], case["references"]
        rouge_plain = plain.score_multi(references, prediction)
        rouge_stem = stemmed.score_multi(references, prediction)
        results.append(
            {
                "rouge": [rouge_plain[t].fmeasure for t in types],
                "rouge_stem": [rouge_stem[t].fmeasure for t in types],
                "bleu": sacrebleu.sentence_bleu(prediction, references).score,
                "em": max(squad_em(prediction, r) for r in references),
                "f1": max(squad_f1(prediction, r) for r in references),
            }
        )

    corpora = []
    for group in data["corpora"]:
        hypotheses = [cases[i]["prediction"] for i in group]
        width = max(len(cases[i]["references"]) for i in group)
        streams = [
            [
                cases[i]["references"][k] if k < len(cases[i]["references"]) else None
                for i in group
            ]
            for k in range(width)
        ]
        corpora.append(sacrebleu.corpus_bleu(hypotheses, streams).score)

    stemmer = PorterStemmer()
    stems = [stemmer.stem(word) for word in data["words"]]
    tokens_13a = [sacrebleu.BLEU().tokenizer(text.rstrip()) for text in data["tokenize"]]

    json.dump(
        {"cases": results, "corpora": corpora, "stems": stems, "tokens_13a": tokens_13a},
        sys.stdout,
    )


if __name__ == "__main__":
    main()
