//! A small MCP server for promptopt's tests and examples: `add` (two numbers), `capital` (the
//! capital of a few countries), `fails` (always an error result) and `slow` (answers after
//! `seconds`).
//!
//! ```text
//! mcp_fixture              # serves MCP over standard input and output
//! mcp_fixture --http 0     # serves streamable HTTP on 127.0.0.1 (0: a free port); prints the URL
//! ```

// A server: printing its URL for the caller is its job.
#![allow(clippy::print_stdout)]

use std::sync::Arc;
use std::time::Duration;

use rmcp::model::{
    CallToolRequestParams, CallToolResponse, CallToolResult, ContentBlock, ListToolsResult,
    PaginatedRequestParams, ServerCapabilities, ServerConfig, Tool,
};
use rmcp::service::RequestContext;
use rmcp::{ErrorData, RoleServer, ServerHandler, ServiceExt};
use serde_json::{json, Map, Value};

#[derive(Clone, Default)]
struct Fixture;

fn schema(value: Value) -> Arc<Map<String, Value>> {
    match value {
        Value::Object(map) => Arc::new(map),
        _ => Arc::new(Map::new()),
    }
}

fn tools() -> Vec<Tool> {
    vec![
        Tool::new(
            "add",
            "Adds two numbers.",
            schema(json!({
                "type": "object",
                "properties": {"a": {"type": "number"}, "b": {"type": "number"}},
                "required": ["a", "b"]
            })),
        ),
        Tool::new(
            "capital",
            "The capital city of a country.",
            schema(json!({
                "type": "object",
                "properties": {"country": {"type": "string"}},
                "required": ["country"]
            })),
        ),
        Tool::new(
            "fails",
            "Always fails.",
            schema(json!({"type": "object", "properties": {}})),
        ),
        Tool::new(
            "slow",
            "Answers after a while.",
            schema(json!({
                "type": "object",
                "properties": {"seconds": {"type": "number"}},
                "required": ["seconds"]
            })),
        ),
    ]
}

fn text(result: impl Into<String>) -> CallToolResponse {
    CallToolResult::success(vec![ContentBlock::text(result)]).into()
}

fn number(arguments: &Map<String, Value>, key: &str) -> Result<f64, ErrorData> {
    arguments
        .get(key)
        .and_then(Value::as_f64)
        .ok_or_else(|| ErrorData::invalid_params(format!("`{key}` must be a number"), None))
}

impl ServerHandler for Fixture {
    fn get_info(&self) -> ServerConfig {
        ServerConfig::new(ServerCapabilities::builder().enable_tools().build())
    }

    async fn list_tools(
        &self,
        _request: Option<PaginatedRequestParams>,
        _context: RequestContext<RoleServer>,
    ) -> Result<ListToolsResult, ErrorData> {
        Ok(ListToolsResult::with_all_items(tools()))
    }

    async fn call_tool(
        &self,
        request: CallToolRequestParams,
        _context: RequestContext<RoleServer>,
    ) -> Result<CallToolResponse, ErrorData> {
        let arguments = request.arguments.unwrap_or_default();
        match request.name.as_ref() {
            "add" => {
                let sum = number(&arguments, "a")? + number(&arguments, "b")?;
                Ok(text(sum.to_string()))
            }
            "capital" => {
                let country = arguments
                    .get("country")
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_lowercase();
                let capital = match country.as_str() {
                    "france" => "Paris",
                    "japan" => "Tokyo",
                    "kenya" => "Nairobi",
                    "peru" => "Lima",
                    _ => "unknown",
                };
                Ok(text(capital))
            }
            "fails" => Ok(CallToolResult::error(vec![ContentBlock::text(
                "the fixture always fails",
            )])
            .into()),
            "slow" => {
                let seconds = number(&arguments, "seconds")?;
                tokio::time::sleep(Duration::from_secs_f64(seconds.clamp(0.0, 600.0))).await;
                Ok(text("done"))
            }
            other => Err(ErrorData::invalid_params(
                format!("no tool `{other}`"),
                None,
            )),
        }
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.as_slice() {
        [] => {
            let running = Fixture.serve(rmcp::transport::stdio()).await?;
            running.waiting().await?;
        }
        [flag, port] if flag == "--http" => {
            use rmcp::transport::streamable_http_server::{
                session::local::LocalSessionManager, StreamableHttpServerConfig,
                StreamableHttpService,
            };
            let service = StreamableHttpService::new(
                || Ok(Fixture),
                Arc::new(LocalSessionManager::default()),
                StreamableHttpServerConfig::default(),
            );
            let router = axum::Router::new().nest_service("/mcp", service);
            let listener = tokio::net::TcpListener::bind(format!("127.0.0.1:{port}")).await?;
            println!("http://{}/mcp", listener.local_addr()?);
            axum::serve(listener, router).await?;
        }
        _ => return Err("usage: mcp_fixture [--http PORT]".into()),
    }
    Ok(())
}
