//! Differential test: ROUGE, BLEU, the Porter stemmer, the 13a tokenizer and SQuAD EM/F1
//! against the Python reference implementations (`rouge-score`, `sacrebleu`, `nltk`) on
//! seeded generated cases plus real dataset texts.
//!
//! Needs `.venv-ci` (created by `scripts/python-venv.sh`). Without it the test prints a notice
//! and passes, unless `PROMPTOPT_CI` is set, in which case it fails.

#![allow(clippy::unwrap_used, clippy::print_stderr)]

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

use promptopt_core::metrics::{
    corpus_bleu, exact_match_score, porter_stem, rouge_multi, rouge_tokenize, sentence_bleu,
    token_f1_score, tokenize_13a, RougeKind,
};
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde_json::{json, Value};

const TOLERANCE: f64 = 1e-6;
const SYNTHETIC_CASES: usize = 400;

const WORDS: &[&str] = &[
    "the",
    "a",
    "an",
    "The",
    "A",
    "cat",
    "cats",
    "sat",
    "on",
    "mat",
    "dog",
    "dogs",
    "running",
    "runs",
    "ran",
    "happiness",
    "happy",
    "generalization",
    "generalizations",
    "skies",
    "sky",
    "dying",
    "agreed",
    "feed",
    "relational",
    "conditional",
    "electricity",
    "adjustment",
    "controlling",
    "rolling",
    "cried",
    "news",
    "innings",
    "proceed",
    "hopping",
    "filing",
    "Government",
    "officials",
    "said",
    "Tuesday",
    "market",
    "shares",
    "rose",
    "percent",
    "Inc",
    "U.S.",
    "e.g.",
    "isn't",
    "don't",
    "it's",
    "New",
    "York",
    "analogies",
    "university",
    "Oil",
    "prices",
    "quickly",
    "connection",
    "connected",
    "formalize",
    "hopeful",
    "goodness",
    "traditional",
    "sensibility",
    "probate",
    "rate",
    "cease",
    "controll",
    "fully",
    "yes",
    "by",
];
const PUNCT: &[&str] = &[
    ",",
    ".",
    "!",
    "?",
    "'s",
    "n't",
    "-",
    "--",
    "(",
    ")",
    "\"",
    "$",
    "%",
    "&",
    "&amp;",
    "&quot;",
    "&lt;",
    "&gt;",
    "<skipped>",
    "...",
    "@",
    "#",
    "/",
    ":",
    ";",
    "'",
    "`",
    "[",
    "]",
    "{",
    "}",
    "~",
    "^",
    "_",
    "|",
    "+",
    "=",
    "*",
];
const NUMBERS: &[&str] = &[
    "3.14",
    "1,000",
    "1990-2000",
    "-5",
    "42",
    "0.5",
    "7",
    "2-3",
    "100%",
    "$4.99",
    "5.",
    ",5",
];
const UNICODE: &[&str] = &[
    "café",
    "naïve",
    "Straße",
    "日本語",
    "İstanbul",
    "Ωmega",
    "—",
    "“quoted”",
    "😀",
    "\u{a0}",
    "\u{212a}elvin",
    "ﬁne",
    "déjà-vu",
    "Ärger",
    "ça",
    "über",
    "\u{1c}",
    "\u{2003}",
    "ＡＢＣ",
    "a\u{308}",
    "x\u{85}y",
];
const SEPARATORS: &[&str] = &[" ", " ", " ", " ", " ", "", "\n", "  ", "\t", "-\n"];

fn venv_python() -> Option<PathBuf> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let python = root.join(".venv-ci/bin/python");
    python.exists().then_some(python)
}

fn random_token(rng: &mut ChaCha8Rng) -> String {
    let pool = match rng.gen_range(0..100) {
        0..=64 => WORDS,
        65..=79 => PUNCT,
        80..=89 => NUMBERS,
        _ => UNICODE,
    };
    (*pool.choose(rng).unwrap()).to_string()
}

fn join(tokens: &[String], rng: &mut ChaCha8Rng) -> String {
    let mut text = String::new();
    for (i, token) in tokens.iter().enumerate() {
        if i > 0 {
            text.push_str(SEPARATORS.choose(rng).unwrap());
        }
        text.push_str(token);
    }
    if rng.gen_bool(0.1) {
        text.push_str(["  ", "\n", " .", "\t "].choose(rng).unwrap());
    }
    text
}

fn random_tokens(rng: &mut ChaCha8Rng, max: usize) -> Vec<String> {
    let len = rng.gen_range(0..=max);
    (0..len).map(|_| random_token(rng)).collect()
}

/// A prediction related to a reference: edited, repeated, shuffled, unrelated or empty.
fn related(reference: &[String], rng: &mut ChaCha8Rng) -> Vec<String> {
    match rng.gen_range(0..10) {
        0 => Vec::new(),
        1 => random_tokens(rng, 12),
        2 => reference.to_vec(),
        3 => {
            // A repeated phrase.
            let phrase: Vec<String> = reference.iter().take(3).cloned().collect();
            let times = rng.gen_range(1..5);
            phrase
                .iter()
                .cycle()
                .take(phrase.len() * times)
                .cloned()
                .collect()
        }
        4 => {
            let mut shuffled = reference.to_vec();
            shuffled.shuffle(rng);
            shuffled
        }
        _ => {
            let mut edited = Vec::new();
            for token in reference {
                match rng.gen_range(0..10) {
                    0 => {}
                    1 => edited.push(random_token(rng)),
                    2 => {
                        edited.push(token.clone());
                        edited.push(random_token(rng));
                    }
                    3 => edited.push(token.to_uppercase()),
                    _ => edited.push(token.clone()),
                }
            }
            edited
        }
    }
}

struct Case {
    prediction: String,
    references: Vec<String>,
}

fn synthetic_cases(rng: &mut ChaCha8Rng) -> Vec<Case> {
    let mut cases = vec![
        Case {
            prediction: String::new(),
            references: vec![String::new()],
        },
        Case {
            prediction: "hello".into(),
            references: vec![String::new()],
        },
        Case {
            prediction: String::new(),
            references: vec!["hello world".into()],
        },
        Case {
            prediction: "...!!!".into(),
            references: vec!["?!".into()],
        },
        Case {
            prediction: "the the the the".into(),
            references: vec!["the".into()],
        },
    ];
    while cases.len() < SYNTHETIC_CASES {
        let first = random_tokens(rng, 25);
        let prediction = related(&first, rng);
        let mut references = vec![join(&first, rng)];
        for _ in 0..rng.gen_range(0..3) {
            let other = related(&first, rng);
            references.push(join(&other, rng));
        }
        references.shuffle(rng);
        cases.push(Case {
            prediction: join(&prediction, rng),
            references,
        });
    }
    cases
}

fn dataset_rows(name: &str) -> Vec<Value> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../../shared/datasets")
        .join(name)
        .join("train.jsonl");
    let Ok(text) = std::fs::read_to_string(path) else {
        return Vec::new();
    };
    text.lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

/// Real texts: headline generation (the document's first words against the title) and QA
/// (a window of the context against the answers).
fn real_cases(rng: &mut ChaCha8Rng) -> Vec<Case> {
    let mut cases = Vec::new();
    for row in dataset_rows("agnews_headline").iter().take(100) {
        let document = row["document"].as_str().unwrap_or_default();
        let summary = row["summary"].as_str().unwrap_or_default();
        let words: Vec<&str> = document.split(' ').collect();
        let take = rng.gen_range(1..=words.len().clamp(1, 15));
        cases.push(Case {
            prediction: words[..take].join(" "),
            references: vec![summary.into()],
        });
    }
    for row in dataset_rows("xquad_en").iter().take(100) {
        let answers: Vec<String> = row["answers"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|v| v.as_str().map(String::from))
                    .collect()
            })
            .unwrap_or_default();
        let context = row["context"].as_str().unwrap_or_default();
        let start = row["answer_start"].as_u64().unwrap_or(0) as usize;
        let words_before = context.get(..start).map_or(0, |s| s.split(' ').count());
        let words: Vec<&str> = context.split(' ').collect();
        let from = words_before
            .saturating_sub(rng.gen_range(1..3))
            .min(words.len());
        let to = (from + rng.gen_range(1..6)).min(words.len());
        if !answers.is_empty() {
            cases.push(Case {
                prediction: words[from..to].join(" "),
                references: answers,
            });
        }
    }
    cases
}

fn stem_words(cases: &[Case]) -> Vec<String> {
    let mut words: BTreeSet<String> = WORDS.iter().map(|w| w.to_lowercase()).collect();
    for case in cases {
        for text in std::iter::once(&case.prediction).chain(&case.references) {
            words.extend(rouge_tokenize(text, false));
        }
    }
    for row in dataset_rows("agnews_headline") {
        words.extend(rouge_tokenize(
            row["document"].as_str().unwrap_or_default(),
            false,
        ));
    }
    words.into_iter().collect()
}

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() <= TOLERANCE
}

#[test]
fn metrics_agree_with_the_python_references() {
    let Some(python) = venv_python() else {
        assert!(
            std::env::var_os("PROMPTOPT_CI").is_none(),
            "PROMPTOPT_CI is set but .venv-ci is missing: run scripts/python-venv.sh"
        );
        eprintln!(
            "skipping the differential metrics test: run scripts/python-venv.sh to create .venv-ci"
        );
        return;
    };
    let mut rng = ChaCha8Rng::seed_from_u64(20_240_501);
    let mut cases = synthetic_cases(&mut rng);
    cases.extend(real_cases(&mut rng));
    let corpora: Vec<Vec<usize>> = (0..cases.len())
        .collect::<Vec<_>>()
        .chunks(25)
        .map(<[usize]>::to_vec)
        .chain(std::iter::once((0..cases.len()).collect()))
        .collect();
    let words = stem_words(&cases);
    let tokenize: Vec<String> = cases.iter().flat_map(|c| c.references.clone()).collect();

    let input = json!({
        "cases": cases.iter().map(|c| json!({"prediction": c.prediction, "references": c.references})).collect::<Vec<_>>(),
        "corpora": corpora,
        "words": words,
        "tokenize": tokenize,
    });
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("cases.json");
    std::fs::write(&path, input.to_string()).unwrap();
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/reference_metrics.py");
    let output = Command::new(&python)
        .arg(&script)
        .arg(&path)
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "reference script failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let reference: Value = serde_json::from_slice(&output.stdout).unwrap();

    let mut mismatches: Vec<String> = Vec::new();
    let kinds = [RougeKind::Rouge1, RougeKind::Rouge2, RougeKind::RougeL];
    let expected_cases = reference["cases"].as_array().unwrap();
    assert_eq!(expected_cases.len(), cases.len());
    for (i, (case, expected)) in cases.iter().zip(expected_cases).enumerate() {
        for (stem, field) in [(false, "rouge"), (true, "rouge_stem")] {
            for (k, kind) in kinds.iter().enumerate() {
                let ours = rouge_multi(*kind, &case.references, &case.prediction, stem).fmeasure;
                let theirs = expected[field][k].as_f64().unwrap();
                if !close(ours, theirs) {
                    mismatches.push(format!(
                        "case {i} {field} {}: {ours} vs {theirs}",
                        kind.name()
                    ));
                }
            }
        }
        let ours = sentence_bleu(&case.prediction, &case.references);
        let theirs = expected["bleu"].as_f64().unwrap();
        if !close(ours, theirs) {
            mismatches.push(format!("case {i} sentence BLEU: {ours} vs {theirs}"));
        }
        let em = case
            .references
            .iter()
            .map(|r| exact_match_score(&case.prediction, r))
            .fold(0.0, f64::max);
        let f1 = case
            .references
            .iter()
            .map(|r| token_f1_score(&case.prediction, r))
            .fold(0.0, f64::max);
        if !close(em, expected["em"].as_f64().unwrap()) {
            mismatches.push(format!("case {i} SQuAD EM: {em} vs {}", expected["em"]));
        }
        if !close(f1, expected["f1"].as_f64().unwrap()) {
            mismatches.push(format!("case {i} SQuAD F1: {f1} vs {}", expected["f1"]));
        }
    }
    // The cases must exercise partial overlaps, not only the trivial 0 and 1 ends.
    let partial = |field: &str, index: Option<usize>, max: f64| {
        expected_cases
            .iter()
            .filter(|c| {
                let v = match index {
                    Some(k) => c[field][k].as_f64().unwrap(),
                    None => c[field].as_f64().unwrap(),
                };
                v > 0.0 && v < max
            })
            .count()
    };
    let (partial_bleu, partial_rouge2, partial_f1) = (
        partial("bleu", None, 100.0),
        partial("rouge", Some(1), 1.0),
        partial("f1", None, 1.0),
    );
    assert!(
        partial_bleu >= 150 && partial_rouge2 >= 150 && partial_f1 >= 100,
        "too few partial scores: BLEU {partial_bleu}, ROUGE-2 {partial_rouge2}, F1 {partial_f1}"
    );
    let expected_corpora = reference["corpora"].as_array().unwrap();
    for (group, expected) in corpora.iter().zip(expected_corpora) {
        let pairs: Vec<(String, Vec<String>)> = group
            .iter()
            .map(|&i| (cases[i].prediction.clone(), cases[i].references.clone()))
            .collect();
        let ours = corpus_bleu(&pairs);
        let theirs = expected.as_f64().unwrap();
        if !close(ours, theirs) {
            mismatches.push(format!(
                "corpus BLEU of {} cases from {}: {ours} vs {theirs}",
                group.len(),
                group[0]
            ));
        }
    }
    let stems = reference["stems"].as_array().unwrap();
    for (word, expected) in words.iter().zip(stems) {
        let ours = porter_stem(word);
        if ours != expected.as_str().unwrap() {
            mismatches.push(format!("stem of `{word}`: `{ours}` vs {expected}"));
        }
    }
    let tokens = reference["tokens_13a"].as_array().unwrap();
    for (text, expected) in tokenize.iter().zip(tokens) {
        let ours = tokenize_13a(text);
        if ours != expected.as_str().unwrap() {
            mismatches.push(format!("13a of {text:?}: {ours:?} vs {expected}"));
        }
    }
    eprintln!(
        "partial (strictly between the ends) scores: BLEU {partial_bleu}, ROUGE-2 {partial_rouge2}, SQuAD F1 {partial_f1}"
    );
    eprintln!(
        "compared {} cases (ROUGE-1/2/L with and without stemming, sentence BLEU, SQuAD EM/F1), \
         {} corpus BLEU groups, {} stems, {} 13a tokenisations",
        cases.len(),
        corpora.len(),
        words.len(),
        tokenize.len()
    );
    assert!(cases.len() >= 300);
    assert!(
        mismatches.is_empty(),
        "{} mismatches, first ones:\n{}",
        mismatches.len(),
        mismatches
            .iter()
            .take(20)
            .cloned()
            .collect::<Vec<_>>()
            .join("\n")
    );
}
