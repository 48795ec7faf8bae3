//! Tools from MCP servers: a request (or a saved model) names a server, by the command that
//! starts it (stdio) or by its URL (streamable HTTP); promptopt starts or reaches it, asks for
//! its tools and calls them through the Model Context Protocol. A server's command comes only
//! from the request or the saved model, never from a model's reply.
//!
//! ```yaml
//! tools:
//!   - mcp: {command: python3, args: [weather_server.py]}
//!   - mcp: {url: "http://127.0.0.1:8931/mcp", tools: [lookup]}
//! ```

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use rmcp::model::{CallToolRequestParams, ContentBlock};
use rmcp::service::RunningService;
use rmcp::transport::{StreamableHttpClientTransport, TokioChildProcess};
use rmcp::{RoleClient, ServiceExt};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::{SharedTool, Tool, ToolError};
use crate::CoreError;

/// How long a server may take to start and list its tools when its entry does not say.
pub const DEFAULT_STARTUP_TIMEOUT: Duration = Duration::from_secs(20);

/// An MCP server as a request declares it: a command (stdio) or a URL (streamable HTTP).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct McpServer {
    /// The program that serves MCP over its standard input and output.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub command: Option<String>,
    /// Its arguments.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub args: Vec<String>,
    /// The server's streamable HTTP endpoint instead of a command.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// Only these of the server's tools (all of them when empty).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tools: Vec<String>,
    /// Seconds the server may take to start and list its tools (20 when absent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub startup_timeout_s: Option<u32>,
}

impl McpServer {
    /// How errors name the server: its command line or its URL (without credentials).
    pub fn label(&self) -> String {
        match (&self.command, &self.url) {
            (Some(command), _) => std::iter::once(command.as_str())
                .chain(self.args.iter().map(String::as_str))
                .collect::<Vec<_>>()
                .join(" "),
            (None, Some(url)) => redact_url(url),
            (None, None) => "(no command or url)".into(),
        }
    }

    /// The entry with a relative command path (one holding a `/`) and relative arguments that
    /// name existing files made absolute against `base` (the request's folder).
    pub fn resolved(mut self, base: &Path) -> Self {
        if let Some(command) = &self.command {
            let path = Path::new(command);
            if path.is_relative() && command.contains('/') {
                self.command = Some(base.join(path).to_string_lossy().into_owned());
            }
        }
        for arg in &mut self.args {
            let path = Path::new(arg.as_str());
            if path.is_relative() && !arg.starts_with('-') && base.join(path).is_file() {
                *arg = base.join(path).to_string_lossy().into_owned();
            }
        }
        self
    }

    fn fail(&self, message: impl Into<String>) -> CoreError {
        CoreError::ToolServer {
            server: self.label(),
            message: message.into(),
        }
    }

    /// Starts (or reaches) the server and returns its tools (those `tools` names, when given).
    pub async fn connect(&self) -> Result<Vec<SharedTool>, CoreError> {
        let timeout = self
            .startup_timeout_s
            .map(|s| Duration::from_secs(u64::from(s)))
            .unwrap_or(DEFAULT_STARTUP_TIMEOUT);
        match tokio::time::timeout(timeout, self.connect_now()).await {
            Ok(result) => result,
            Err(_) => Err(self.fail(format!(
                "did not start and list its tools within {} s",
                timeout.as_secs()
            ))),
        }
    }

    async fn connect_now(&self) -> Result<Vec<SharedTool>, CoreError> {
        let service: RunningService<RoleClient, ()> = match (&self.command, &self.url) {
            (Some(_), Some(_)) => {
                return Err(self.fail("give either `command` or `url`, not both"));
            }
            (None, None) => {
                return Err(self.fail("an `mcp` entry needs a `command` (stdio) or a `url`"));
            }
            (Some(command), None) => {
                let mut cmd = tokio::process::Command::new(command);
                cmd.args(&self.args);
                let (transport, _stderr) = TokioChildProcess::builder(cmd)
                    .stderr(std::process::Stdio::null())
                    .spawn()
                    .map_err(|e| self.fail(format!("could not be started: {e}")))?;
                ().serve(transport)
                    .await
                    .map_err(|e| self.fail(format!("did not complete the MCP handshake: {e}")))?
            }
            (None, Some(url)) => {
                if url.starts_with("https://") {
                    return Err(self.fail(
                        "is an `https://` address, which the MCP client does not support yet: use a stdio `command`, or `http://` on loopback or a trusted network",
                    ));
                }
                if !url.starts_with("http://") {
                    return Err(self.fail("`url` must be an `http://` address"));
                }
                let transport = StreamableHttpClientTransport::from_uri(url.as_str());
                ().serve(transport)
                    .await
                    .map_err(|e| self.fail(format!("did not complete the MCP handshake: {e}")))?
            }
        };
        let listed = service
            .list_all_tools()
            .await
            .map_err(|e| self.fail(format!("did not list its tools: {e}")))?;
        if let Some(missing) = self
            .tools
            .iter()
            .find(|wanted| !listed.iter().any(|t| t.name == wanted.as_str()))
        {
            let names: Vec<&str> = listed.iter().map(|t| t.name.as_ref()).collect();
            return Err(self.fail(format!(
                "has no tool `{missing}` (it has: {})",
                names.join(", ")
            )));
        }
        let connection = Arc::new(Connection {
            label: self.label(),
            service,
        });
        Ok(listed
            .into_iter()
            .filter(|t| self.tools.is_empty() || self.tools.iter().any(|w| t.name == w.as_str()))
            .map(|t| {
                let tool: SharedTool = Arc::new(McpTool {
                    name: t.name.to_string(),
                    description: t
                        .description
                        .as_deref()
                        .unwrap_or("(the server gives no description)")
                        .to_string(),
                    parameters: Value::Object((*t.input_schema).clone()),
                    connection: Arc::clone(&connection),
                });
                tool
            })
            .collect())
    }
}

/// A URL with any `user:password@` removed.
fn redact_url(url: &str) -> String {
    match (url.find("://"), url.find('@')) {
        (Some(scheme), Some(at)) if at > scheme && !url[scheme + 3..at].contains('/') => {
            format!("{}://***@{}", &url[..scheme], &url[at + 1..])
        }
        _ => url.to_string(),
    }
}

/// A running server (the child process ends when the last of its tools is dropped).
struct Connection {
    label: String,
    service: RunningService<RoleClient, ()>,
}

/// One tool of an MCP server.
struct McpTool {
    name: String,
    description: String,
    parameters: Value,
    connection: Arc<Connection>,
}

#[async_trait]
impl Tool for McpTool {
    fn name(&self) -> &str {
        &self.name
    }
    fn description(&self) -> &str {
        &self.description
    }
    fn parameters(&self) -> &Value {
        &self.parameters
    }
    async fn call(&self, arguments: &Value) -> Result<String, ToolError> {
        let failed = |message: String| ToolError::Failed {
            tool: self.name.clone(),
            message,
        };
        let mut params = CallToolRequestParams::new(self.name.clone());
        params.arguments = match arguments {
            Value::Object(map) => Some(map.clone()),
            Value::Null => None,
            other => return Err(failed(format!("the arguments are not an object: {other}"))),
        };
        let result = self
            .connection
            .service
            .call_tool(params)
            .await
            .map_err(|e| {
                failed(format!(
                    "the MCP server `{}` did not answer properly: {e}",
                    self.connection.label
                ))
            })?;
        let texts: Vec<&str> = result
            .content
            .iter()
            .filter_map(ContentBlock::as_text)
            .map(|t| t.text.as_str())
            .collect();
        let text = if !texts.is_empty() {
            texts.join("\n")
        } else if let Some(structured) = &result.structured_content {
            structured.to_string()
        } else {
            return Err(failed(format!(
                "the MCP server `{}` returned no text or structured content",
                self.connection.label
            )));
        };
        if result.is_error == Some(true) {
            return Err(failed(text));
        }
        Ok(text)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn labels_name_the_server_without_credentials() {
        let stdio: McpServer =
            serde_json::from_str(r#"{"command": "python3", "args": ["server.py", "--quiet"]}"#)
                .unwrap();
        assert_eq!(stdio.label(), "python3 server.py --quiet");
        let http: McpServer =
            serde_json::from_str(r#"{"url": "https://me:secret@tools.example.com/mcp"}"#).unwrap();
        assert_eq!(http.label(), "https://***@tools.example.com/mcp");
        let unknown = serde_json::from_str::<McpServer>(r#"{"cmd": "x"}"#).unwrap_err();
        assert!(unknown.to_string().contains("cmd"), "{unknown}");
    }

    #[test]
    fn relative_commands_and_existing_files_resolve_against_the_request_folder() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("server.py"), "").unwrap();
        let server = McpServer {
            command: Some("./bin/server".into()),
            args: vec!["server.py".into(), "--port".into(), "8080".into()],
            url: None,
            tools: Vec::new(),
            startup_timeout_s: None,
        }
        .resolved(dir.path());
        assert_eq!(
            server.command.unwrap(),
            dir.path().join("./bin/server").to_string_lossy()
        );
        assert_eq!(
            server.args,
            [
                dir.path().join("server.py").to_string_lossy().into_owned(),
                "--port".into(),
                "8080".into()
            ]
        );
        let on_path = McpServer {
            command: Some("python3".into()),
            args: Vec::new(),
            url: None,
            tools: Vec::new(),
            startup_timeout_s: None,
        }
        .resolved(dir.path());
        assert_eq!(on_path.command.as_deref(), Some("python3"));
    }

    #[tokio::test]
    async fn servers_that_do_not_start_or_answer_are_named_in_the_error() {
        let missing = McpServer {
            command: Some("/nonexistent/mcp-server".into()),
            args: Vec::new(),
            url: None,
            tools: Vec::new(),
            startup_timeout_s: Some(5),
        };
        let e = missing.connect().await.err().unwrap().to_string();
        assert!(e.contains("`/nonexistent/mcp-server`"), "{e}");
        assert!(e.contains("could not be started"), "{e}");
        let silent = McpServer {
            command: Some("sleep".into()),
            args: vec!["30".into()],
            url: None,
            tools: Vec::new(),
            startup_timeout_s: Some(1),
        };
        let e = silent.connect().await.err().unwrap().to_string();
        assert!(e.contains("`sleep 30`"), "{e}");
        assert!(e.contains("within 1 s"), "{e}");
        let mute = McpServer {
            command: Some("true".into()),
            args: Vec::new(),
            url: None,
            tools: Vec::new(),
            startup_timeout_s: Some(5),
        };
        let e = mute.connect().await.err().unwrap().to_string();
        assert!(e.contains("handshake"), "{e}");
        let neither = McpServer {
            command: None,
            args: Vec::new(),
            url: None,
            tools: Vec::new(),
            startup_timeout_s: None,
        };
        let e = neither.connect().await.err().unwrap().to_string();
        assert!(e.contains("needs a `command`"), "{e}");
        let tls = McpServer {
            command: None,
            args: Vec::new(),
            url: Some("https://tools.example.com/mcp".into()),
            tools: Vec::new(),
            startup_timeout_s: None,
        };
        let e = tls.connect().await.err().unwrap().to_string();
        assert!(e.contains("`https://` address"), "{e}");
    }
}
