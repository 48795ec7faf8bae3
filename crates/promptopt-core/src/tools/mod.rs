//! Tools a program's stages may call: a name, a description, a JSON schema of the arguments and
//! an async call. A [`Toolbox`] holds a run's tools and makes every call safe to feed back to a
//! model: the arguments are checked against the schema, each call has a timeout, the run has a
//! call budget, and every failure is a [`ToolError`] whose text becomes the observation (a tool
//! never crashes a run).
//!
//! Built in: [`calculator::Calculator`] (arithmetic only, no code evaluation) and
//! [`search::Search`] (BM25 over a local JSONL collection).
//!
//! ```
//! use promptopt_core::tools::{calculator::Calculator, Toolbox};
//! use serde_json::json;
//!
//! # tokio::runtime::Runtime::new().unwrap().block_on(async {
//! let toolbox = Toolbox::new(vec![std::sync::Arc::new(Calculator::default())]);
//! let answer = toolbox.call("calculator", &json!({"expression": "6 * 7"})).await;
//! assert_eq!(answer.unwrap(), "42");
//! let refused = toolbox.call("calculator", &json!({"expr": "6 * 7"})).await.unwrap_err();
//! assert!(refused.to_string().contains("`expression`"));
//! # });
//! ```

pub mod calculator;
pub mod mcp;
mod schema;
pub mod search;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::CoreError;

pub use schema::{check_arguments, describe_arguments};

/// Why a tool call gave no result; its text is what the model is told.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum ToolError {
    /// The model named a tool the stage does not have.
    #[error("There is no tool `{name}`; the tools are: {available}")]
    Unknown {
        /// The name asked for.
        name: String,
        /// The tools there are, comma-separated.
        available: String,
    },
    /// The arguments break the tool's schema.
    #[error("The arguments of `{tool}` do not fit its schema: {message}")]
    BadArguments {
        /// The tool.
        tool: String,
        /// What is wrong.
        message: String,
    },
    /// The tool ran and failed.
    #[error("`{tool}` failed: {message}")]
    Failed {
        /// The tool.
        tool: String,
        /// Why.
        message: String,
    },
    /// The tool did not answer in time.
    #[error("`{tool}` did not answer within {seconds} s")]
    Timeout {
        /// The tool.
        tool: String,
        /// The limit.
        seconds: f64,
    },
    /// The run has used all its tool calls.
    #[error("The run's budget of {limit} tool calls is spent")]
    BudgetSpent {
        /// The budget.
        limit: u64,
    },
}

/// A tool.
#[async_trait]
pub trait Tool: Send + Sync {
    /// Its name, as the model calls it.
    fn name(&self) -> &str;
    /// What it does, for the model.
    fn description(&self) -> &str;
    /// The JSON schema of its arguments (an object).
    fn parameters(&self) -> &Value;
    /// Calls it with arguments that fit [`Tool::parameters`].
    async fn call(&self, arguments: &Value) -> Result<String, ToolError>;
}

/// A shared tool.
pub type SharedTool = Arc<dyn Tool>;

/// How long a call may take when the toolbox does not say.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);

/// A run's tools, with a timeout per call and a budget of calls.
pub struct Toolbox {
    tools: Vec<SharedTool>,
    timeout: Duration,
    budget: Option<u64>,
    calls: AtomicU64,
}

impl std::fmt::Debug for Toolbox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Toolbox")
            .field("tools", &self.names())
            .field("timeout", &self.timeout)
            .field("budget", &self.budget)
            .field("calls", &self.calls())
            .finish()
    }
}

impl Toolbox {
    /// A toolbox of `tools` with the default timeout and no budget.
    pub fn new(tools: Vec<SharedTool>) -> Self {
        Self {
            tools,
            timeout: DEFAULT_TIMEOUT,
            budget: None,
            calls: AtomicU64::new(0),
        }
    }

    /// Each call's time limit.
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// The calls allowed in all.
    pub fn with_budget(mut self, calls: u64) -> Self {
        self.budget = Some(calls);
        self
    }

    /// The tools, in order.
    pub fn tools(&self) -> &[SharedTool] {
        &self.tools
    }

    /// Their names.
    pub fn names(&self) -> Vec<&str> {
        self.tools.iter().map(|t| t.name()).collect()
    }

    /// The tool called `name`.
    pub fn get(&self, name: &str) -> Option<&SharedTool> {
        self.tools.iter().find(|t| t.name() == name)
    }

    /// Calls made so far (refused ones included: they cost a step).
    pub fn calls(&self) -> u64 {
        self.calls.load(Ordering::SeqCst)
    }

    /// Calls `name` with `arguments`: checked against its schema, within the timeout and the
    /// budget.
    pub async fn call(&self, name: &str, arguments: &Value) -> Result<String, ToolError> {
        let made = self.calls.fetch_add(1, Ordering::SeqCst);
        if let Some(limit) = self.budget {
            if made >= limit {
                return Err(ToolError::BudgetSpent { limit });
            }
        }
        let tool = self.get(name).ok_or_else(|| ToolError::Unknown {
            name: name.to_string(),
            available: self.names().join(", "),
        })?;
        check_arguments(tool.parameters(), arguments).map_err(|message| {
            ToolError::BadArguments {
                tool: name.to_string(),
                message,
            }
        })?;
        match tokio::time::timeout(self.timeout, tool.call(arguments)).await {
            Ok(result) => result,
            Err(_) => Err(ToolError::Timeout {
                tool: name.to_string(),
                seconds: self.timeout.as_secs_f64(),
            }),
        }
    }
}

/// A tool as a request (or a saved model) declares it: a built-in tool with its settings, or an
/// MCP server whose tools are all used (or those it lists).
///
/// ```yaml
/// tools:
///   - {builtin: calculator}
///   - {builtin: search, corpus: docs.jsonl, description: "Searches the product manual."}
///   - mcp: {command: python3, args: [weather_server.py]}
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ToolSpec {
    /// `calculator` or `search`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub builtin: Option<String>,
    /// An MCP server whose tools to use.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mcp: Option<mcp::McpServer>,
    /// The name the model calls a built-in tool by instead of its own (two `search` tools over
    /// different collections need two names).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// The JSONL collection `search` looks in (relative to the request's folder).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub corpus: Option<PathBuf>,
    /// A description for the model instead of the tool's own (built-in tools).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
}

/// A tool under another name or description (what a request chose).
struct Renamed {
    inner: SharedTool,
    name: Option<String>,
    description: Option<String>,
}

#[async_trait]
impl Tool for Renamed {
    fn name(&self) -> &str {
        self.name.as_deref().unwrap_or_else(|| self.inner.name())
    }
    fn description(&self) -> &str {
        self.description
            .as_deref()
            .unwrap_or_else(|| self.inner.description())
    }
    fn parameters(&self) -> &Value {
        self.inner.parameters()
    }
    async fn call(&self, arguments: &Value) -> Result<String, ToolError> {
        self.inner.call(arguments).await
    }
}

impl ToolSpec {
    /// The built-in tool `name`.
    pub fn builtin(name: impl Into<String>) -> Self {
        Self {
            builtin: Some(name.into()),
            mcp: None,
            name: None,
            corpus: None,
            description: None,
        }
    }

    /// The tools of an MCP server.
    pub fn mcp(server: mcp::McpServer) -> Self {
        Self {
            builtin: None,
            mcp: Some(server),
            name: None,
            corpus: None,
            description: None,
        }
    }

    /// The spec with its paths (a corpus, an MCP server's command and files) made absolute
    /// against `base` (a request's folder).
    pub fn resolved(mut self, base: Option<&Path>) -> Self {
        let Some(base) = base else {
            return self;
        };
        if let Some(corpus) = &self.corpus {
            if corpus.is_relative() {
                self.corpus = Some(base.join(corpus));
            }
        }
        self.mcp = self.mcp.map(|server| server.resolved(base));
        self
    }

    /// How errors name the entry.
    fn label(&self) -> String {
        match (&self.builtin, &self.mcp) {
            (Some(name), _) => name.clone(),
            (None, Some(server)) => format!("mcp: {}", server.label()),
            (None, None) => "(empty)".into(),
        }
    }

    /// Builds the tools of this entry: one built-in tool, or an MCP server's tools (the server
    /// started now).
    pub async fn build(&self) -> Result<Vec<SharedTool>, CoreError> {
        let invalid = |message: &str| CoreError::InvalidTool {
            tool: self.label(),
            message: message.into(),
        };
        let tool: SharedTool = match (&self.builtin, &self.mcp) {
            (Some(_), Some(_)) => {
                return Err(invalid("an entry is either `builtin` or `mcp`, not both"))
            }
            (None, None) => return Err(invalid("an entry needs `builtin` or `mcp`")),
            (None, Some(server)) => {
                if self.corpus.is_some() || self.description.is_some() || self.name.is_some() {
                    return Err(invalid(
                        "an `mcp` entry takes no `corpus`, `name` or `description` (its tools name and describe themselves; `tool_selection` can rewrite the descriptions)",
                    ));
                }
                return server.connect().await;
            }
            (Some(name), None) => match (name.as_str(), &self.corpus) {
                ("calculator", None) => Arc::new(calculator::Calculator::default()),
                ("calculator", Some(_)) => return Err(invalid("`calculator` takes no `corpus`")),
                ("search", Some(corpus)) => Arc::new(search::Search::from_jsonl(corpus)?),
                ("search", None) => {
                    return Err(invalid(
                        "`search` needs a `corpus`: a JSONL file of `{\"text\": ...}` lines",
                    ))
                }
                _ => {
                    return Err(invalid(
                        "no such built-in tool (the built-in tools are `calculator` and `search`)",
                    ))
                }
            },
        };
        if let Some(name) = &self.name {
            let valid = !name.is_empty()
                && name.len() <= 64
                && name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
            if !valid || name == crate::program::react::FINISH {
                return Err(invalid(
                    "a tool `name` is 1 to 64 letters, digits, `_` or `-`, and not `finish`",
                ));
            }
        }
        Ok(vec![if self.name.is_none() && self.description.is_none() {
            tool
        } else {
            Arc::new(Renamed {
                inner: tool,
                name: self.name.clone(),
                description: self.description.clone(),
            })
        }])
    }
}

impl Toolbox {
    /// The toolbox of `specs` (default timeout, no budget), MCP servers started now; two tools
    /// of one name are refused.
    pub async fn from_specs(specs: &[ToolSpec]) -> Result<Self, CoreError> {
        let mut tools: Vec<SharedTool> = Vec::new();
        for spec in specs {
            for tool in spec.build().await? {
                if tools.iter().any(|t| t.name() == tool.name()) {
                    return Err(CoreError::InvalidTool {
                        tool: tool.name().to_string(),
                        message: "declared twice".into(),
                    });
                }
                tools.push(tool);
            }
        }
        Ok(Self::new(tools))
    }

    /// The toolbox of `specs`, built once per process (a search collection is read and indexed
    /// once, an MCP server started once, however many runs use them).
    pub async fn shared(specs: &[ToolSpec]) -> Result<Arc<Toolbox>, CoreError> {
        static BUILT: OnceLock<tokio::sync::Mutex<HashMap<Vec<ToolSpec>, Arc<Toolbox>>>> =
            OnceLock::new();
        let mut cache = BUILT
            .get_or_init(|| tokio::sync::Mutex::new(HashMap::new()))
            .lock()
            .await;
        if let Some(found) = cache.get(specs) {
            return Ok(Arc::clone(found));
        }
        let built = Arc::new(Self::from_specs(specs).await?);
        cache.insert(specs.to_vec(), Arc::clone(&built));
        Ok(built)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use serde_json::json;

    use super::*;

    #[tokio::test]
    async fn specs_build_tools_and_bad_ones_say_why() {
        let specs: Vec<ToolSpec> =
            serde_yaml_like(r#"[{"builtin": "calculator", "description": "Does sums."}]"#);
        let toolbox = Toolbox::from_specs(&specs).await.unwrap();
        assert_eq!(toolbox.names(), ["calculator"]);
        assert_eq!(
            toolbox.get("calculator").unwrap().description(),
            "Does sums."
        );
        async fn bad(json: &str) -> String {
            Toolbox::from_specs(&serde_yaml_like(json))
                .await
                .unwrap_err()
                .to_string()
        }
        assert!(bad(r#"[{"builtin": "shell"}]"#)
            .await
            .contains("no such built-in tool"));
        assert!(bad(r#"[{"builtin": "search"}]"#)
            .await
            .contains("needs a `corpus`"));
        assert!(
            bad(r#"[{"builtin": "calculator"}, {"builtin": "calculator"}]"#)
                .await
                .contains("declared twice")
        );
        assert!(bad(r#"[{}]"#).await.contains("needs `builtin` or `mcp`"));
        assert!(
            bad(r#"[{"builtin": "calculator", "mcp": {"command": "x"}}]"#)
                .await
                .contains("not both")
        );
        let missing = bad(r#"[{"builtin": "search", "corpus": "/nonexistent/docs.jsonl"}]"#).await;
        assert!(missing.contains("/nonexistent/docs.jsonl"), "{missing}");
        let unknown = serde_json::from_str::<ToolSpec>(r#"{"builtin": "search", "shell": {}}"#);
        assert!(unknown.unwrap_err().to_string().contains("shell"));
        let renamed: Vec<ToolSpec> = serde_yaml_like(
            r#"[{"builtin": "calculator", "name": "arith"}, {"builtin": "calculator"}]"#,
        );
        let toolbox = Toolbox::from_specs(&renamed).await.unwrap();
        assert_eq!(toolbox.names(), ["arith", "calculator"]);
        assert_eq!(
            toolbox
                .call("arith", &serde_json::json!({"expression": "2*3"}))
                .await
                .unwrap(),
            "6"
        );
        assert!(bad(r#"[{"builtin": "calculator", "name": "finish"}]"#)
            .await
            .contains("not `finish`"));
        assert!(bad(r#"[{"builtin": "calculator", "name": "a b"}]"#)
            .await
            .contains("1 to 64 letters"));
        let relative = ToolSpec {
            corpus: Some("docs.jsonl".into()),
            ..ToolSpec::builtin("search")
        }
        .resolved(Some(Path::new("/data")));
        assert_eq!(relative.corpus.unwrap(), Path::new("/data/docs.jsonl"));
        let a = Toolbox::shared(&specs).await.unwrap();
        let b = Toolbox::shared(&specs).await.unwrap();
        assert!(Arc::ptr_eq(&a, &b));
    }

    fn serde_yaml_like(json: &str) -> Vec<ToolSpec> {
        serde_json::from_str(json).unwrap()
    }

    struct Sleepy;

    #[async_trait]
    impl Tool for Sleepy {
        fn name(&self) -> &str {
            "sleepy"
        }
        fn description(&self) -> &str {
            "Never answers in time."
        }
        fn parameters(&self) -> &Value {
            static EMPTY: std::sync::OnceLock<Value> = std::sync::OnceLock::new();
            EMPTY.get_or_init(|| json!({"type": "object", "properties": {}}))
        }
        async fn call(&self, _arguments: &Value) -> Result<String, ToolError> {
            tokio::time::sleep(Duration::from_secs(60)).await;
            Ok("late".into())
        }
    }

    #[tokio::test]
    async fn unknown_tools_bad_arguments_timeouts_and_the_budget_are_observations() {
        let toolbox = Toolbox::new(vec![
            Arc::new(calculator::Calculator::default()),
            Arc::new(Sleepy),
        ])
        .with_timeout(Duration::from_millis(50))
        .with_budget(4);
        let e = toolbox.call("shell", &json!({})).await.unwrap_err();
        assert_eq!(
            e.to_string(),
            "There is no tool `shell`; the tools are: calculator, sleepy"
        );
        let e = toolbox
            .call("calculator", &json!({"expression": 42}))
            .await
            .unwrap_err();
        assert!(
            e.to_string().contains("`expression` must be a string"),
            "{e}"
        );
        let e = toolbox.call("sleepy", &json!({})).await.unwrap_err();
        assert_eq!(e.to_string(), "`sleepy` did not answer within 0.05 s");
        assert_eq!(
            toolbox
                .call("calculator", &json!({"expression": "2+2"}))
                .await
                .unwrap(),
            "4"
        );
        let e = toolbox
            .call("calculator", &json!({"expression": "2+2"}))
            .await
            .unwrap_err();
        assert_eq!(e, ToolError::BudgetSpent { limit: 4 });
        assert_eq!(toolbox.calls(), 5);
    }
}
