//! The built-in `search` tool: BM25 ranking over a local collection of documents (a JSONL
//! file of `{"id": ..., "title": ..., "text": ...}` lines, `id` and `title` optional), kept in
//! memory as an inverted index of our own.

use std::collections::HashMap;
use std::path::Path;

use async_trait::async_trait;
use serde_json::{json, Value};

use super::{Tool, ToolError};
use crate::error::CoreError;

/// BM25's term-frequency saturation.
const K1: f64 = 1.2;
/// BM25's length normalization.
const B: f64 = 0.75;
/// Documents returned when the call does not say.
const DEFAULT_K: usize = 3;
/// Documents returned at most.
const MAX_K: usize = 20;

/// One document of the collection.
#[derive(Debug, Clone, PartialEq)]
pub struct Document {
    /// Its id (the line number when the file gives none).
    pub id: String,
    /// Its title, if any.
    pub title: Option<String>,
    /// Its text.
    pub text: String,
}

/// The lower-cased words of `text` (letters and digits).
fn words(text: &str) -> Vec<String> {
    text.split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty())
        .map(str::to_lowercase)
        .collect()
}

/// The search tool over an indexed collection.
#[derive(Debug, Clone)]
pub struct Search {
    documents: Vec<Document>,
    /// Per word: (document, occurrences).
    postings: HashMap<String, Vec<(usize, u32)>>,
    lengths: Vec<f64>,
    average_length: f64,
    description: String,
    parameters: Value,
}

impl Search {
    /// Indexes `documents`.
    pub fn new(documents: Vec<Document>) -> Self {
        let mut postings: HashMap<String, Vec<(usize, u32)>> = HashMap::new();
        let mut lengths = Vec::with_capacity(documents.len());
        for (i, d) in documents.iter().enumerate() {
            let mut counts: HashMap<String, u32> = HashMap::new();
            let mut n = 0usize;
            for w in words(d.title.as_deref().unwrap_or_default())
                .into_iter()
                .chain(words(&d.text))
            {
                *counts.entry(w).or_insert(0) += 1;
                n += 1;
            }
            lengths.push(n as f64);
            for (w, c) in counts {
                postings.entry(w).or_default().push((i, c));
            }
        }
        let average_length = if lengths.is_empty() {
            0.0
        } else {
            lengths.iter().sum::<f64>() / lengths.len() as f64
        };
        Self {
            description: format!(
                "Searches a collection of {} documents by keywords and returns the best matches with their text.",
                documents.len()
            ),
            parameters: json!({
                "type": "object",
                "properties": {
                    "query": {"type": "string", "description": "Keywords to look for"},
                    "k": {"type": "integer", "description": "How many documents to return (default 3, at most 20)"}
                },
                "required": ["query"],
                "additionalProperties": false
            }),
            documents,
            postings,
            lengths,
            average_length,
        }
    }

    /// Reads and indexes a JSONL collection; a broken line is an error naming the file and the
    /// line.
    pub fn from_jsonl(path: &Path) -> Result<Self, CoreError> {
        let text = std::fs::read_to_string(path).map_err(|source| CoreError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        let mut documents = Vec::new();
        for (n, line) in text.lines().enumerate() {
            if line.trim().is_empty() {
                continue;
            }
            let bad = |message: String| CoreError::Malformed {
                format: "JSON",
                path: path.to_path_buf(),
                location: format!("line {}", n + 1),
                message,
            };
            let value: Value =
                serde_json::from_str(line).map_err(|e| bad(format!("not JSON: {e}")))?;
            let text = value["text"]
                .as_str()
                .ok_or_else(|| bad("a document needs a `text` string".into()))?;
            let id = match &value["id"] {
                Value::Null => (n + 1).to_string(),
                Value::String(s) => s.clone(),
                other => other.to_string(),
            };
            documents.push(Document {
                id,
                title: value["title"].as_str().map(str::to_string),
                text: text.to_string(),
            });
        }
        Ok(Self::new(documents))
    }

    /// The `k` best documents for `query`, best first, with their BM25 scores.
    pub fn query(&self, query: &str, k: usize) -> Vec<(&Document, f64)> {
        let n = self.documents.len() as f64;
        let mut scores: HashMap<usize, f64> = HashMap::new();
        let mut seen = Vec::new();
        for w in words(query) {
            if seen.contains(&w) {
                continue;
            }
            let Some(list) = self.postings.get(&w) else {
                seen.push(w);
                continue;
            };
            let df = list.len() as f64;
            let idf = ((n - df + 0.5) / (df + 0.5) + 1.0).ln();
            for &(doc, tf) in list {
                let tf = f64::from(tf);
                let norm = 1.0 - B + B * self.lengths[doc] / self.average_length.max(1e-9);
                *scores.entry(doc).or_insert(0.0) += idf * tf * (K1 + 1.0) / (tf + K1 * norm);
            }
            seen.push(w);
        }
        let mut ranked: Vec<(usize, f64)> = scores.into_iter().collect();
        ranked.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
        ranked
            .into_iter()
            .take(k)
            .map(|(i, s)| (&self.documents[i], s))
            .collect()
    }
}

#[async_trait]
impl Tool for Search {
    fn name(&self) -> &str {
        "search"
    }

    fn description(&self) -> &str {
        &self.description
    }

    fn parameters(&self) -> &Value {
        &self.parameters
    }

    async fn call(&self, arguments: &Value) -> Result<String, ToolError> {
        let query = arguments["query"].as_str().unwrap_or_default();
        let k = arguments["k"]
            .as_u64()
            .map_or(DEFAULT_K, |k| usize::try_from(k).unwrap_or(MAX_K))
            .clamp(1, MAX_K);
        let hits = self.query(query, k);
        if hits.is_empty() {
            return Ok(format!("No document matches `{query}`."));
        }
        let mut out = String::new();
        for (d, _) in hits {
            match &d.title {
                Some(t) => out.push_str(&format!("[{}] {t}: {}\n", d.id, d.text)),
                None => out.push_str(&format!("[{}] {}\n", d.id, d.text)),
            }
        }
        Ok(out.trim_end().to_string())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn collection() -> Search {
        let docs = [
            ("rhine", "The Rhine flows from the Swiss Alps to the North Sea."),
            ("danube", "The Danube flows through ten countries into the Black Sea."),
            ("alps", "The Alps are the highest mountain range in Europe, in Switzerland, Austria and France."),
            ("sea", "The North Sea lies between Britain and Scandinavia; the sea is shallow."),
        ];
        Search::new(
            docs.iter()
                .map(|(id, text)| Document {
                    id: (*id).into(),
                    title: None,
                    text: (*text).into(),
                })
                .collect(),
        )
    }

    #[test]
    fn the_best_match_comes_first() {
        let search = collection();
        let hits = search.query("Which river reaches the Black Sea?", 2);
        assert_eq!(hits[0].0.id, "danube");
        let hits = search.query("highest mountain range", 3);
        assert_eq!(hits[0].0.id, "alps");
        assert!(search.query("volcano", 3).is_empty());
        // A rarer word weighs more than a common one: "shallow" appears once, "sea" thrice.
        let hits = search.query("shallow sea", 1);
        assert_eq!(hits[0].0.id, "sea");
    }

    #[test]
    fn bm25_scores_match_the_formula() {
        let search = Search::new(vec![
            Document {
                id: "a".into(),
                title: None,
                text: "cat cat dog".into(),
            },
            Document {
                id: "b".into(),
                title: None,
                text: "dog".into(),
            },
        ]);
        // "cat": df 1 of N 2: idf = ln((2 - 1 + 0.5) / (1 + 0.5) + 1) = ln 2; doc a: tf 2,
        // length 3, average 2: 2 * 2.2 / (2 + 1.2 * (0.25 + 0.75 * 1.5)).
        let expected = 2f64.ln() * 2.0 * 2.2 / (2.0 + 1.2 * (0.25 + 0.75 * 1.5));
        let hits = search.query("cat", 5);
        assert_eq!(hits.len(), 1);
        assert!(
            (hits[0].1 - expected).abs() < 1e-12,
            "{} {expected}",
            hits[0].1
        );
    }

    #[tokio::test]
    async fn the_tool_returns_documents_and_files_are_checked() {
        let search = collection();
        let text = search
            .call(&json!({"query": "Swiss Alps river", "k": 1}))
            .await
            .unwrap();
        assert!(text.starts_with("[rhine] The Rhine"), "{text}");
        let none = search.call(&json!({"query": "volcano"})).await.unwrap();
        assert_eq!(none, "No document matches `volcano`.");

        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("docs.jsonl");
        std::fs::write(&path, "{\"id\": 7, \"title\": \"Rome\", \"text\": \"Rome is the capital of Italy.\"}\n\n{\"text\": \"Paris is in France.\"}\n").unwrap();
        let search = Search::from_jsonl(&path).unwrap();
        let text = search
            .call(&json!({"query": "capital of Italy"}))
            .await
            .unwrap();
        assert!(text.starts_with("[7] Rome: Rome is the capital"), "{text}");
        assert_eq!(search.query("paris", 1)[0].0.id, "3");
        std::fs::write(&path, "{\"text\": \"ok\"}\n{\"title\": \"no text\"}\n").unwrap();
        let e = Search::from_jsonl(&path).unwrap_err().to_string();
        assert!(e.contains("line 2") && e.contains("`text`"), "{e}");
    }
}
