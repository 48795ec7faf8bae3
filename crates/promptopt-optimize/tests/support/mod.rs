//! What the optimizer tests with scripted models share: a label metric with feedback, the
//! six-word vocabulary the GEPA tests teach (a task model that follows `word -> label` rules, a
//! reflection model that writes them), the turns adapter's settings and a context for them.
#![allow(dead_code)]

use std::sync::Arc;

use promptopt_core::adapter::AdapterKind;
use promptopt_core::{Example, Metric, MetricInfo, Prediction, Program, RunSettings, Score, Trace};
use promptopt_lm::{ChatRequest, SharedLm};
use promptopt_optimize::{Budget, CollectSink, OptimizeContext};

/// Six words and their labels: what a scripted reflection can teach a scripted task model.
pub const VOCAB: [(&str, &str); 6] = [
    ("alpha", "pos"),
    ("beta", "pos"),
    ("gamma", "neg"),
    ("delta", "neg"),
    ("epsilon", "neu"),
    ("zeta", "neu"),
];

/// 1 when the predicted `label` is the example's, else 0 with feedback naming the expected one.
pub struct ExactLabel;

impl Metric for ExactLabel {
    fn info(&self) -> MetricInfo {
        MetricInfo {
            name: "exact".into(),
            higher_is_better: true,
            min: 0.0,
            max: 1.0,
        }
    }

    fn score(&self, example: &Example, prediction: &Prediction, _trace: &Trace) -> Score {
        let gold = example.text("label");
        if gold.is_some() && prediction.text("label") == gold {
            Score::with_feedback(1.0, "Correct.")
        } else {
            Score::with_feedback(0.0, format!("Expected `{}`.", gold.unwrap_or_default()))
        }
    }
}

/// Twelve training examples (each word twice) and six validation examples (each word once).
pub fn vocab_data() -> (Vec<Example>, Vec<Example>) {
    let train = (0..12)
        .map(|i| {
            let (word, label) = VOCAB[i % VOCAB.len()];
            Example::new()
                .with("text", format!("sample {i} about {word}"))
                .with("label", label)
        })
        .collect();
    let val = VOCAB
        .iter()
        .map(|(word, label)| {
            Example::new()
                .with("text", format!("check {word} now"))
                .with("label", *label)
        })
        .collect();
    (train, val)
}

/// The task model's call settings: the turns adapter (the input as the last user turn, replies
/// like `label: pos`), no JSON retry.
pub fn turns() -> RunSettings {
    RunSettings {
        adapter: AdapterKind::Turns,
        json_fallback: false,
        ..RunSettings::default()
    }
}

/// The last message's text (the user turn a scripted model answers), empty when there is none.
pub fn last_user(request: &ChatRequest) -> &str {
    request
        .messages
        .last()
        .map(|m| m.content.as_str())
        .unwrap_or("")
}

/// The task model's reply when it knows a word only from a `word -> label` line of the
/// instructions (the system message): that label, else `label: unknown`.
pub fn rule_reply(request: &ChatRequest) -> String {
    let system = request
        .messages
        .first()
        .map(|m| m.content.as_str())
        .unwrap_or("");
    let user = last_user(request);
    for (word, _) in VOCAB {
        if user.contains(word) {
            let prefix = format!("{word} -> ");
            if let Some(line) = system.lines().find(|l| l.starts_with(&prefix)) {
                return format!("label: {}", &line[prefix.len()..]);
            }
        }
    }
    "label: unknown".to_string()
}

/// The reflection model adds a `word -> label` rule for every failed example it is shown.
pub fn learning_reflection(request: &ChatRequest) -> String {
    let user = last_user(request);
    let current = user
        .split("```\n")
        .nth(1)
        .and_then(|rest| rest.split("\n```").next())
        .unwrap_or("")
        .to_string();
    let mut rules: Vec<String> = Vec::new();
    let mut word: Option<&str> = None;
    for line in user.lines() {
        if let Some(text) = line.strip_prefix("- text: ") {
            word = VOCAB.iter().map(|(w, _)| *w).find(|w| text.contains(w));
        }
        if let Some(fb) = line.strip_prefix("Feedback: Expected `") {
            let label = fb.trim_end_matches("`.");
            if let Some(w) = word {
                let rule = format!("{w} -> {label}");
                if !current.contains(&rule) && !rules.contains(&rule) {
                    rules.push(rule);
                }
            }
        }
    }
    let mut text = current;
    for rule in rules {
        text.push('\n');
        text.push_str(&rule);
    }
    format!("Here you go:\n```\n{text}\n```")
}

/// A context for `program` with these task and reflection models, [`ExactLabel`], the turns
/// adapter and three examples at a time.
pub fn vocab_context(
    program: &Program,
    task: SharedLm,
    reflect: SharedLm,
    seed: u64,
    budget: Budget,
    events: &CollectSink,
) -> OptimizeContext {
    OptimizeContext::builder(program.clone(), task, "scripted/task", Arc::new(ExactLabel))
        .prompt_model(reflect, "scripted/reflect")
        .settings(turns())
        .seed(seed)
        .concurrency(3)
        .budget(Arc::new(budget))
        .events(Arc::new(events.clone()))
        .build()
}

/// The stages the run started, in order.
pub fn stages_started(events: &CollectSink) -> Vec<String> {
    events
        .events()
        .into_iter()
        .filter_map(|e| match e {
            promptopt_optimize::Event::StageStarted { stage, .. } => Some(stage),
            _ => None,
        })
        .collect()
}
