//! MLflow's run search syntax, for the embedded store: filters such as
//! `params.algorithm = 'miprov2' and metrics.val_score > 0.7` and orderings such as
//! `metrics.val_score DESC`. (A tracking server runs the same text itself.)

use std::cmp::Ordering;

use crate::{Run, TrackingError};

/// What a key names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Metric,
    Param,
    Tag,
    Attribute,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Key {
    kind: Kind,
    name: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Op {
    Eq,
    Ne,
    Lt,
    Gt,
    Le,
    Ge,
    Like,
    ILike,
}

#[derive(Debug, Clone, PartialEq)]
enum Literal {
    Text(String),
    Number(f64),
}

#[derive(Debug, Clone, PartialEq)]
struct Clause {
    key: Key,
    op: Op,
    value: Literal,
}

/// A parsed filter: clauses that must all hold.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Filter {
    clauses: Vec<Clause>,
}

/// A parsed ordering: keys, each ascending or descending.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct OrderBy {
    keys: Vec<(Key, bool)>,
}

struct Lexer<'a> {
    text: &'a str,
    pos: usize,
    what: &'static str,
}

impl<'a> Lexer<'a> {
    fn error(&self, message: impl std::fmt::Display) -> TrackingError {
        TrackingError::Search {
            what: self.what,
            text: self.text.to_string(),
            message: format!("{message} at column {}", self.pos + 1),
        }
    }

    fn rest(&self) -> &'a str {
        &self.text[self.pos..]
    }

    fn skip_space(&mut self) {
        let rest = self.rest();
        self.pos += rest.len() - rest.trim_start().len();
    }

    fn done(&mut self) -> bool {
        self.skip_space();
        self.pos >= self.text.len()
    }

    fn quoted(&mut self, quote: char) -> Result<String, TrackingError> {
        let rest = &self.rest()[quote.len_utf8()..];
        match rest.find(quote) {
            Some(end) => {
                self.pos += quote.len_utf8() * 2 + end;
                Ok(rest[..end].to_string())
            }
            None => Err(self.error(format!("unclosed `{quote}`"))),
        }
    }

    fn word(&mut self) -> &'a str {
        let rest = self.rest();
        let end = rest
            .find(|c: char| c.is_whitespace() || "=!<>,'\"`".contains(c))
            .unwrap_or(rest.len());
        self.pos += end;
        &rest[..end]
    }

    fn key(&mut self) -> Result<Key, TrackingError> {
        self.skip_space();
        let start = self.pos;
        let head = self.word();
        let (prefix, name) = match head.split_once('.') {
            Some((p, n)) => (p, n.to_string()),
            None => ("attributes", head.to_string()),
        };
        let kind = match prefix.to_ascii_lowercase().as_str() {
            "metrics" | "metric" => Kind::Metric,
            "params" | "param" | "parameters" | "parameter" => Kind::Param,
            "tags" | "tag" => Kind::Tag,
            "attributes" | "attribute" | "attr" | "run" => Kind::Attribute,
            _ => {
                self.pos = start;
                return Err(self.error(format!(
                    "unknown key `{head}` (expected `metrics.`, `params.`, `tags.` or `attributes.`)"
                )));
            }
        };
        let name = if name.is_empty() {
            match self.rest().chars().next() {
                Some(q @ ('`' | '"')) => self.quoted(q)?,
                _ => return Err(self.error(format!("a name is missing after `{prefix}.`"))),
            }
        } else {
            name
        };
        if kind == Kind::Attribute
            && !matches!(
                name.as_str(),
                "run_id"
                    | "run_name"
                    | "status"
                    | "start_time"
                    | "end_time"
                    | "artifact_uri"
                    | "experiment_id"
            )
        {
            self.pos = start;
            return Err(self.error(format!("unknown attribute `{name}`")));
        }
        Ok(Key { kind, name })
    }

    fn op(&mut self) -> Result<Op, TrackingError> {
        self.skip_space();
        for (text, op) in [
            ("!=", Op::Ne),
            ("<=", Op::Le),
            (">=", Op::Ge),
            ("=", Op::Eq),
            ("<", Op::Lt),
            (">", Op::Gt),
        ] {
            if self.rest().starts_with(text) {
                self.pos += text.len();
                return Ok(op);
            }
        }
        let word = self.word();
        match word.to_ascii_uppercase().as_str() {
            "LIKE" => Ok(Op::Like),
            "ILIKE" => Ok(Op::ILike),
            _ => Err(self.error(format!(
                "expected an operator (`=`, `!=`, `<`, `>`, `<=`, `>=`, `LIKE`, `ILIKE`), found `{word}`"
            ))),
        }
    }

    fn literal(&mut self) -> Result<Literal, TrackingError> {
        self.skip_space();
        match self.rest().chars().next() {
            Some(q @ ('\'' | '"')) => Ok(Literal::Text(self.quoted(q)?)),
            Some(_) => {
                let word = self.word();
                word.parse::<f64>().map(Literal::Number).map_err(|_| {
                    self.error(format!(
                        "expected a quoted string or a number, found `{word}`"
                    ))
                })
            }
            None => Err(self.error("a value is missing")),
        }
    }
}

impl Filter {
    /// Parses a filter; an empty text matches every run.
    pub fn parse(text: &str) -> Result<Self, TrackingError> {
        let mut lexer = Lexer {
            text,
            pos: 0,
            what: "filter",
        };
        let mut clauses = Vec::new();
        if lexer.done() {
            return Ok(Self { clauses });
        }
        loop {
            let key = lexer.key()?;
            let op = lexer.op()?;
            let value = lexer.literal()?;
            let numeric = key.kind == Kind::Metric
                || (key.kind == Kind::Attribute && key.name.ends_with("_time"));
            match (&value, numeric, op) {
                (Literal::Text(_), true, _) => {
                    return Err(lexer.error(format!(
                        "`{}` is a number; compare it with a number",
                        key.name
                    )))
                }
                (_, false, Op::Lt | Op::Gt | Op::Le | Op::Ge) => {
                    return Err(lexer.error(format!(
                        "`{}` is text; compare it with `=`, `!=`, `LIKE` or `ILIKE`",
                        key.name
                    )))
                }
                (_, true, Op::Like | Op::ILike) => {
                    return Err(lexer.error(format!(
                        "`LIKE` does not apply to the number `{}`",
                        key.name
                    )))
                }
                _ => {}
            }
            clauses.push(Clause { key, op, value });
            if lexer.done() {
                return Ok(Self { clauses });
            }
            let word = lexer.word();
            if !word.eq_ignore_ascii_case("and") {
                return Err(lexer.error(format!("expected `and`, found `{word}`")));
            }
        }
    }

    /// Whether a run matches.
    pub fn matches(&self, run: &Run) -> bool {
        self.clauses.iter().all(|c| clause_matches(c, run))
    }
}

fn attribute(run: &Run, name: &str) -> Option<Literal> {
    let info = &run.info;
    Some(match name {
        "run_id" => Literal::Text(info.run_id.clone()),
        "run_name" => Literal::Text(info.run_name.clone()),
        "status" => Literal::Text(info.status.as_str().to_string()),
        "artifact_uri" => Literal::Text(info.artifact_uri.clone()),
        "experiment_id" => Literal::Text(info.experiment_id.clone()),
        "start_time" => Literal::Number(info.start_time as f64),
        "end_time" => Literal::Number(info.end_time? as f64),
        _ => return None,
    })
}

fn value_of(run: &Run, key: &Key) -> Option<Literal> {
    match key.kind {
        Kind::Metric => run.metrics.get(&key.name).map(|v| Literal::Number(*v)),
        Kind::Param => run.params.get(&key.name).cloned().map(Literal::Text),
        Kind::Tag => run.tags.get(&key.name).cloned().map(Literal::Text),
        Kind::Attribute => attribute(run, &key.name),
    }
}

/// SQL `LIKE`: `%` any run of characters, `_` one character.
fn like(text: &[char], pattern: &[char]) -> bool {
    match pattern.split_first() {
        None => text.is_empty(),
        Some(('%', rest)) => (0..=text.len()).any(|i| like(&text[i..], rest)),
        Some(('_', rest)) => !text.is_empty() && like(&text[1..], rest),
        Some((c, rest)) => text.first() == Some(c) && like(&text[1..], rest),
    }
}

fn clause_matches(clause: &Clause, run: &Run) -> bool {
    let Some(actual) = value_of(run, &clause.key) else {
        return false;
    };
    match (actual, &clause.value) {
        (Literal::Number(a), Literal::Number(b)) => match clause.op {
            Op::Eq => a == *b,
            Op::Ne => a != *b,
            Op::Lt => a < *b,
            Op::Gt => a > *b,
            Op::Le => a <= *b,
            Op::Ge => a >= *b,
            Op::Like | Op::ILike => false,
        },
        (Literal::Text(a), b) => {
            let b = match b {
                Literal::Text(t) => t.clone(),
                Literal::Number(n) => n.to_string(),
            };
            match clause.op {
                Op::Eq => a == b,
                Op::Ne => a != b,
                Op::Like => like(
                    &a.chars().collect::<Vec<_>>(),
                    &b.chars().collect::<Vec<_>>(),
                ),
                Op::ILike => like(
                    &a.to_lowercase().chars().collect::<Vec<_>>(),
                    &b.to_lowercase().chars().collect::<Vec<_>>(),
                ),
                _ => false,
            }
        }
        (Literal::Number(_), Literal::Text(_)) => false,
    }
}

impl OrderBy {
    /// Parses orderings such as `metrics.val_score DESC`; runs without the key sort last.
    pub fn parse(items: &[String]) -> Result<Self, TrackingError> {
        let mut keys = Vec::new();
        for item in items {
            let mut lexer = Lexer {
                text: item,
                pos: 0,
                what: "order_by",
            };
            let key = lexer.key()?;
            let descending = if lexer.done() {
                false
            } else {
                let word = lexer.word();
                match word.to_ascii_uppercase().as_str() {
                    "ASC" => false,
                    "DESC" => true,
                    _ => {
                        return Err(lexer.error(format!("expected `ASC` or `DESC`, found `{word}`")))
                    }
                }
            };
            if !lexer.done() {
                return Err(lexer.error("unexpected text"));
            }
            keys.push((key, descending));
        }
        Ok(Self { keys })
    }

    /// Sorts runs: by the keys in turn, then newest first, then by id.
    pub fn sort(&self, runs: &mut [Run]) {
        runs.sort_by(|a, b| {
            for (key, descending) in &self.keys {
                let ordering = match (value_of(a, key), value_of(b, key)) {
                    (Some(x), Some(y)) => {
                        let o = compare(&x, &y);
                        if *descending {
                            o.reverse()
                        } else {
                            o
                        }
                    }
                    (Some(_), None) => Ordering::Less,
                    (None, Some(_)) => Ordering::Greater,
                    (None, None) => Ordering::Equal,
                };
                if ordering != Ordering::Equal {
                    return ordering;
                }
            }
            b.info
                .start_time
                .cmp(&a.info.start_time)
                .then_with(|| a.info.run_id.cmp(&b.info.run_id))
        });
    }
}

fn compare(a: &Literal, b: &Literal) -> Ordering {
    match (a, b) {
        (Literal::Number(x), Literal::Number(y)) => x.total_cmp(y),
        (Literal::Text(x), Literal::Text(y)) => x.cmp(y),
        (Literal::Number(_), Literal::Text(_)) => Ordering::Less,
        (Literal::Text(_), Literal::Number(_)) => Ordering::Greater,
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::{RunInfo, RunStatus};

    fn run(id: &str, algorithm: &str, score: Option<f64>, start: i64) -> Run {
        Run {
            info: RunInfo {
                run_id: id.into(),
                run_name: format!("run-{id}"),
                experiment_id: "1".into(),
                status: RunStatus::Finished,
                start_time: start,
                end_time: Some(start + 10),
                artifact_uri: String::new(),
            },
            params: [("algorithm".to_string(), algorithm.to_string())].into(),
            metrics: score
                .map(|s| [("val_score".to_string(), s)].into())
                .unwrap_or_default(),
            tags: [("mlflow.runName".to_string(), format!("run-{id}"))].into(),
        }
    }

    #[test]
    fn filters_match_like_mlflow() {
        let runs = [
            run("a", "miprov2", Some(0.8), 1),
            run("b", "miprov2", Some(0.6), 2),
            run("c", "gepa", Some(0.9), 3),
            run("d", "miprov2", None, 4),
        ];
        let pick = |f: &str| -> Vec<String> {
            let filter = Filter::parse(f).unwrap();
            runs.iter()
                .filter(|r| filter.matches(r))
                .map(|r| r.info.run_id.clone())
                .collect()
        };
        assert_eq!(
            pick("params.algorithm = 'miprov2' and metrics.val_score > 0.7"),
            ["a"]
        );
        assert_eq!(
            pick("metrics.val_score >= 0.6 AND params.algorithm != \"gepa\""),
            ["a", "b"]
        );
        assert_eq!(pick("params.algorithm LIKE 'mip%'"), ["a", "b", "d"]);
        assert_eq!(pick("params.algorithm ILIKE 'GE_A'"), ["c"]);
        assert_eq!(pick("tags.`mlflow.runName` = 'run-c'"), ["c"]);
        assert_eq!(
            pick("attributes.status = 'FINISHED' and start_time < 3"),
            ["a", "b"]
        );
        assert_eq!(pick(""), ["a", "b", "c", "d"]);
    }

    #[test]
    fn bad_filters_say_where() {
        let err = |f: &str| Filter::parse(f).unwrap_err().to_string();
        assert!(
            err("metrics.x > 'a'").contains("compare it with a number"),
            "{}",
            err("metrics.x > 'a'")
        );
        assert!(err("params.x > 1").contains("is text"));
        assert!(err("foo.x = 1").contains("unknown key `foo.x`"));
        assert!(err("metrics.x ~ 1").contains("expected an operator"));
        assert!(err("params.x = 'a' or params.y = 'b'").contains("expected `and`, found `or`"));
        assert!(err("params.x = 'a").contains("unclosed"));
        assert!(err("attributes.color = 'red'").contains("unknown attribute `color`"));
    }

    #[test]
    fn orderings_put_missing_values_last() {
        let mut runs = vec![
            run("a", "miprov2", Some(0.8), 1),
            run("d", "miprov2", None, 4),
            run("c", "gepa", Some(0.9), 3),
        ];
        OrderBy::parse(&["metrics.val_score DESC".into()])
            .unwrap()
            .sort(&mut runs);
        let ids: Vec<_> = runs.iter().map(|r| r.info.run_id.as_str()).collect();
        assert_eq!(ids, ["c", "a", "d"]);
        OrderBy::parse(&["params.algorithm".into(), "start_time DESC".into()])
            .unwrap()
            .sort(&mut runs);
        let ids: Vec<_> = runs.iter().map(|r| r.info.run_id.as_str()).collect();
        assert_eq!(ids, ["c", "d", "a"]);
        assert!(OrderBy::parse(&["metrics.x SIDEWAYS".into()]).is_err());
    }
}
