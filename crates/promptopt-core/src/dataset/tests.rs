#![allow(clippy::unwrap_used, clippy::print_stderr)]

use std::io::Write;
use std::path::{Path, PathBuf};

use super::*;
use crate::FieldType;

fn write(dir: &Path, name: &str, content: &str) -> PathBuf {
    let path = dir.join(name);
    let mut file = std::fs::File::create(&path).unwrap();
    file.write_all(content.as_bytes()).unwrap();
    path
}

fn keys(names: &[&str]) -> Option<Vec<String>> {
    Some(names.iter().map(|s| s.to_string()).collect())
}

#[test]
fn loads_jsonl_and_infers_keys() {
    let dir = tempfile::tempdir().unwrap();
    let path = write(
        dir.path(),
        "train.jsonl",
        "{\"id\": 1, \"text\": \"good\", \"label\": \"positive\"}\n\n{\"id\": 2, \"text\": \"bad\", \"label\": \"negative\"}\n",
    );
    let ds = Dataset::load(&path, None, None).unwrap();
    assert_eq!(ds.len(), 2);
    assert_eq!(ds.input_keys, ["text"]);
    assert_eq!(ds.output_keys, ["label"]);
}

#[test]
fn malformed_jsonl_names_file_and_line() {
    let dir = tempfile::tempdir().unwrap();
    let path = write(
        dir.path(),
        "train.jsonl",
        "{\"text\": \"a\", \"label\": \"x\"}\n{\"text\": \"b\", \"label\": \"y\"}\n{\"text\": \"c\", \"label\n",
    );
    let err = load_examples(&path).unwrap_err().to_string();
    let expected = format!("Malformed JSON on line 3 of `{}`: ", path.display());
    assert!(err.starts_with(&expected), "{err}");
    assert!(!err.contains("at line 1"), "{err}");
}

#[test]
fn jsonl_line_that_is_not_an_object_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let path = write(dir.path(), "d.jsonl", "{\"a\": 1}\n[1, 2]\n");
    let err = load_examples(&path).unwrap_err().to_string();
    assert_eq!(
        err,
        format!(
            "Malformed JSON on line 2 of `{}`: expected an object, found an array",
            path.display()
        )
    );
}

#[test]
fn json_array_loads_and_reports_the_index() {
    let dir = tempfile::tempdir().unwrap();
    let ok = write(
        dir.path(),
        "ok.json",
        "[{\"question\": \"q\", \"answer\": \"a\"}, {\"question\": \"r\", \"answer\": \"b\"}]",
    );
    let ds = Dataset::load(&ok, None, None).unwrap();
    assert_eq!(ds.input_keys, ["question"]);
    assert_eq!(ds.output_keys, ["answer"]);

    let bad = write(dir.path(), "bad.json", "[{\"a\": 1}, 7]");
    let err = load_examples(&bad).unwrap_err().to_string();
    assert_eq!(
        err,
        format!(
            "Malformed JSON on index 1 of `{}`: expected an object, found a number",
            bad.display()
        )
    );

    let broken = write(dir.path(), "broken.json", "[\n{\"a\": 1},\n{\"a\" 2}\n]");
    let err = load_examples(&broken).unwrap_err().to_string();
    assert!(
        err.starts_with(&format!(
            "Malformed JSON on line 3 of `{}`",
            broken.display()
        )),
        "{err}"
    );
}

#[test]
fn json_file_with_one_object_per_line_is_read_as_json_lines() {
    let dir = tempfile::tempdir().unwrap();
    let path = write(
        dir.path(),
        "d.json",
        "{\"a\": \"1\", \"label\": \"x\"}\n{\"a\": \"2\", \"label\": \"y\"}\n",
    );
    assert_eq!(load_examples(&path).unwrap().len(), 2);
}

#[test]
fn csv_values_are_strings_and_quoted_fields_work() {
    let dir = tempfile::tempdir().unwrap();
    let path = write(
        dir.path(),
        "d.csv",
        "id,text,label\n1,\"hello, world\",positive\n2,\"multi\nline\",negative\n",
    );
    let ds = Dataset::load(&path, None, None).unwrap();
    assert_eq!(ds.len(), 2);
    assert_eq!(ds.examples[0].get("id"), Some(&Value::String("1".into())));
    assert_eq!(ds.examples[0].text("text").unwrap(), "hello, world");
    assert_eq!(ds.examples[1].text("text").unwrap(), "multi\nline");
    // Blank lines (and a missing final newline) are not records.
    let blank = write(dir.path(), "blank.csv", "text,label\na,x\n\n\nb,y");
    assert_eq!(load_examples(&blank).unwrap().len(), 2);
    assert_eq!(ds.input_keys, ["text"]);
}

#[test]
fn csv_short_row_is_an_error_with_the_line() {
    let dir = tempfile::tempdir().unwrap();
    let path = write(dir.path(), "d.csv", "text,label\na,x\nb,y\nc\n");
    let err = load_examples(&path).unwrap_err().to_string();
    assert_eq!(
        err,
        format!(
            "Malformed CSV on line 4 of `{}`: the record has 1 fields but the header has 2 (missing `label`)",
            path.display()
        )
    );
}

#[test]
fn csv_long_row_and_duplicate_header_are_errors() {
    let dir = tempfile::tempdir().unwrap();
    let long = write(dir.path(), "long.csv", "text,label\na,x,extra\n");
    let err = load_examples(&long).unwrap_err().to_string();
    assert!(err.contains("line 2"), "{err}");
    let dup = write(dir.path(), "dup.csv", "text,text\na,b\n");
    let err = load_examples(&dup).unwrap_err().to_string();
    assert!(err.contains("column `text` appears twice"), "{err}");
}

#[test]
fn unsupported_extension_and_missing_file() {
    let err = load_examples("data/train.txt").unwrap_err().to_string();
    assert!(err.starts_with("Unsupported dataset format `txt`"), "{err}");
    let err = load_examples("/nonexistent/train.jsonl")
        .unwrap_err()
        .to_string();
    assert!(
        err.starts_with("Cannot read `/nonexistent/train.jsonl`"),
        "{err}"
    );
}

#[test]
fn empty_dataset_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let path = write(dir.path(), "empty.jsonl", "\n\n");
    let err = Dataset::load(&path, None, None).unwrap_err().to_string();
    assert_eq!(err, format!("Dataset `{}` has no examples", path.display()));
}

#[test]
fn missing_key_names_it_and_the_existing_keys() {
    let examples = vec![Example::new().with("text", "a").with("label", "x")];
    let err = Dataset::new(examples.clone(), keys(&["txt"]), keys(&["label"]), "test")
        .unwrap_err()
        .to_string();
    assert_eq!(
        err,
        "Input key `txt` is in no example; the examples have: `text`, `label`"
    );
    let err = Dataset::new(examples, None, keys(&["answer"]), "test")
        .unwrap_err()
        .to_string();
    assert_eq!(
        err,
        "Output key `answer` is in no example; the examples have: `text`, `label`"
    );
}

#[test]
fn inference_refuses_to_guess() {
    let no_candidate = vec![Example::new().with("question", "q").with("reply", "r")];
    let err = Dataset::new(no_candidate, None, None, "test")
        .unwrap_err()
        .to_string();
    assert!(
        err.starts_with("Cannot infer the dataset's keys: none of the output key candidates"),
        "{err}"
    );
    assert!(
        err.ends_with("set `input_keys` and `output_keys` explicitly"),
        "{err}"
    );

    let different = vec![
        Example::new().with("text", "a").with("label", "x"),
        Example::new()
            .with("text", "b")
            .with("label", "y")
            .with("extra", 1),
    ];
    let err = Dataset::new(different.clone(), None, None, "test")
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("example 2 has the fields `text`, `label`, `extra`"),
        "{err}"
    );
    // Explicit keys resolve it.
    let ds = Dataset::new(different, keys(&["text"]), keys(&["label"]), "test").unwrap();
    assert_eq!(ds.input_keys, ["text"]);
}

#[test]
fn output_candidates_are_tried_in_order() {
    let e = Example::new()
        .with("id", "1")
        .with("summary", "s")
        .with("answer", "a")
        .with("doc", "d");
    let (inputs, outputs) = infer_keys(&[e]).unwrap();
    assert_eq!(outputs, ["answer"]);
    assert_eq!(inputs, ["summary", "doc"]);
}

#[test]
fn partial_keys_are_completed() {
    let examples = vec![Example::new()
        .with("id", 1)
        .with("q", "a")
        .with("ctx", "c")
        .with("answer", "x")];
    let ds = Dataset::new(examples.clone(), None, keys(&["answer"]), "t").unwrap();
    assert_eq!(ds.input_keys, ["q", "ctx"]);
    let ds = Dataset::new(examples, keys(&["q"]), None, "t").unwrap();
    assert_eq!(ds.output_keys, ["answer"]);
}

#[test]
fn key_both_input_and_output_is_an_error() {
    let examples = vec![Example::new().with("q", "a").with("answer", "x")];
    let err = Dataset::new(examples, keys(&["q", "answer"]), keys(&["answer"]), "t")
        .unwrap_err()
        .to_string();
    assert_eq!(
        err,
        "Invalid dataset keys: `answer` is both an input and an output key"
    );
}

#[test]
fn label_inference_rule() {
    let make = |labels: &[&str]| -> Vec<Example> {
        labels
            .iter()
            .map(|l| Example::new().with("label", *l))
            .collect()
    };
    assert_eq!(
        infer_labels(&make(&["b", "a", "b", "a"]), "label"),
        Some(vec!["a".to_string(), "b".to_string()])
    );
    // Three distinct values in three examples: free text, not labels.
    assert_eq!(infer_labels(&make(&["a", "b", "c"]), "label"), None);
    // One value only: no choice to make.
    assert_eq!(infer_labels(&make(&["a", "a"]), "label"), None);
    // Few distinct relative to the examples, even with singletons.
    assert_eq!(
        infer_labels(&make(&["a", "a", "a", "b", "c", "a"]), "label"),
        Some(vec!["a".to_string(), "b".to_string(), "c".to_string()])
    );
    // Missing on one example.
    let mut missing = make(&["a", "b", "a", "b"]);
    missing.push(Example::new().with("other", "x"));
    assert_eq!(infer_labels(&missing, "label"), None);
    // Integers count as their text.
    let ints: Vec<Example> = [0, 1, 1, 0]
        .iter()
        .map(|i| Example::new().with("y", *i))
        .collect();
    assert_eq!(
        infer_labels(&ints, "y"),
        Some(vec!["0".to_string(), "1".to_string()])
    );
}

#[test]
fn signature_uses_labels_when_inferred() {
    let examples: Vec<Example> = ["positive", "negative", "positive", "negative"]
        .iter()
        .enumerate()
        .map(|(i, l)| {
            Example::new()
                .with("id", i)
                .with("text", format!("t{i}"))
                .with("label", *l)
        })
        .collect();
    let ds = Dataset::new(examples, None, None, "t").unwrap();
    let sig = ds.signature();
    assert_eq!(sig.input_names(), ["text"]);
    assert_eq!(
        sig.outputs[0].ty,
        FieldType::Label {
            allowed: vec!["negative".to_string(), "positive".to_string()]
        }
    );
}

#[test]
fn split_is_seeded_disjoint_and_complete() {
    let examples: Vec<Example> = (0..50)
        .map(|i| {
            Example::new()
                .with("id", i)
                .with("text", format!("t{i}"))
                .with("label", "x")
        })
        .collect();
    let ds = Dataset::new(examples, None, None, "t").unwrap();
    let (a, b) = ds.split(0.8, 7).unwrap();
    assert_eq!((a.len(), b.len()), (40, 10));
    let (a2, b2) = ds.split(0.8, 7).unwrap();
    assert_eq!(a, a2);
    assert_eq!(b, b2);
    let (a3, _) = ds.split(0.8, 8).unwrap();
    assert_ne!(a, a3);
    let mut ids: Vec<String> = a
        .examples
        .iter()
        .chain(&b.examples)
        .map(|e| e.id().unwrap())
        .collect();
    ids.sort_by_key(|s| s.parse::<u32>().unwrap());
    assert_eq!(ids, (0..50).map(|i| i.to_string()).collect::<Vec<_>>());
    assert_eq!(b.input_keys, ["text"]);
    assert!(ds.split(1.0, 1).is_err());
    assert!(ds.split(0.0, 1).is_err());
    assert!(ds.split(f64::NAN, 1).is_err());
}

/// Every dataset shipped beside the repository loads, with inferred and with explicit keys.
#[test]
fn loads_every_shared_dataset() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/datasets");
    if !root.is_dir() {
        eprintln!("skipping: {} not found", root.display());
        return;
    }
    // (folder, inferred inputs, inferred output, explicit inputs, explicit output, labels?)
    type Case<'a> = (
        &'a str,
        &'a [&'a str],
        &'a str,
        &'a [&'a str],
        &'a str,
        bool,
    );
    let cases: [Case<'_>; 7] = [
        ("sst2", &["text"], "label", &["text"], "label", true),
        (
            "agnews",
            &["text", "title", "description"],
            "label",
            &["text"],
            "label",
            true,
        ),
        (
            "agnews_headline",
            &["document", "topic"],
            "summary",
            &["document"],
            "summary",
            false,
        ),
        ("banking77", &["text"], "label", &["text"], "label", true),
        (
            "gsm8k",
            &["question", "rationale", "solution_raw"],
            "answer",
            &["question"],
            "answer",
            false,
        ),
        (
            "trec",
            &["text", "fine_label"],
            "label",
            &["text"],
            "label",
            true,
        ),
        (
            "xquad_en",
            &["title", "context", "question", "answers", "answer_start"],
            "answer",
            &["context", "question"],
            "answer",
            false,
        ),
    ];
    for (folder, inferred_inputs, inferred_output, inputs, output, labelled) in cases {
        for split in ["train", "dev", "test"] {
            let path = root.join(folder).join(format!("{split}.jsonl"));
            let ds = Dataset::load(&path, None, None).unwrap();
            assert!(!ds.is_empty(), "{folder}/{split}");
            assert_eq!(ds.input_keys, inferred_inputs, "{folder}/{split}");
            assert_eq!(ds.output_keys, [inferred_output], "{folder}/{split}");
            let explicit = Dataset::load(
                &path,
                Some(inputs.iter().map(|s| s.to_string()).collect()),
                Some(vec![output.to_string()]),
            )
            .unwrap();
            assert_eq!(explicit.input_keys, inputs);
            let sig = explicit.signature();
            let is_label = matches!(sig.outputs[0].ty, FieldType::Label { .. });
            if split == "train" {
                assert_eq!(is_label, labelled, "{folder}: label inference");
            }
        }
    }
    let sst2 = Dataset::load(root.join("sst2/train.jsonl"), None, None).unwrap();
    assert_eq!(
        sst2.labels("label"),
        Some(vec!["negative".to_string(), "positive".to_string()])
    );
    let banking = Dataset::load(root.join("banking77/train.jsonl"), None, None).unwrap();
    assert!(banking.labels("label").unwrap().len() > 50);
}
