//! Tools from a real MCP server (the `mcp_fixture` example, built with the MCP SDK's server
//! side) over stdio and streamable HTTP: listed, called, filtered, and every failure an error
//! that names the server and the tool.
#![allow(clippy::unwrap_used)]

use std::io::BufRead;
use std::path::PathBuf;
use std::time::Duration;

use promptopt_core::tools::mcp::McpServer;
use promptopt_core::tools::{ToolError, ToolSpec, Toolbox};
use serde_json::json;

/// The fixture server's binary (built by `cargo test`; built here when a single test runs).
fn fixture() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let profile_dir = exe.parent().and_then(|d| d.parent()).unwrap();
    let path = profile_dir.join("examples").join("mcp_fixture");
    if !path.is_file() {
        let status = std::process::Command::new(env!("CARGO"))
            .args(["build", "-p", "promptopt-core", "--example", "mcp_fixture"])
            .status()
            .unwrap();
        assert!(status.success());
    }
    path
}

fn stdio(tools: &[&str]) -> ToolSpec {
    ToolSpec::mcp(McpServer {
        command: Some(fixture().to_string_lossy().into_owned()),
        args: Vec::new(),
        url: None,
        tools: tools.iter().map(|t| t.to_string()).collect(),
        startup_timeout_s: Some(20),
    })
}

#[tokio::test]
async fn a_stdio_server_is_listed_and_called_and_its_failures_are_observations() {
    let toolbox = Toolbox::from_specs(&[stdio(&[]), ToolSpec::builtin("calculator")])
        .await
        .unwrap()
        .with_timeout(Duration::from_millis(300));
    assert_eq!(
        toolbox.names(),
        ["add", "capital", "fails", "slow", "calculator"]
    );
    let add = toolbox.get("add").unwrap();
    assert_eq!(add.description(), "Adds two numbers.");
    assert_eq!(add.parameters()["required"], json!(["a", "b"]));
    assert_eq!(
        toolbox
            .call("add", &json!({"a": 2, "b": 3.5}))
            .await
            .unwrap(),
        "5.5"
    );
    assert_eq!(
        toolbox
            .call("capital", &json!({"country": "Kenya"}))
            .await
            .unwrap(),
        "Nairobi"
    );
    // The schema is checked before the server sees the call.
    let bad = toolbox.call("add", &json!({"a": "two"})).await.unwrap_err();
    assert!(matches!(bad, ToolError::BadArguments { .. }), "{bad}");
    // An error result, and a protocol error, are failures naming the tool.
    let failed = toolbox.call("fails", &json!({})).await.unwrap_err();
    assert_eq!(
        failed.to_string(),
        "`fails` failed: the fixture always fails"
    );
    let slow = toolbox
        .call("slow", &json!({"seconds": 5}))
        .await
        .unwrap_err();
    assert_eq!(slow.to_string(), "`slow` did not answer within 0.3 s");
    // The server still answers after a call timed out.
    assert_eq!(
        toolbox.call("add", &json!({"a": 1, "b": 1})).await.unwrap(),
        "2"
    );
}

#[tokio::test]
async fn a_server_entry_can_name_some_of_its_tools_and_a_missing_one_is_an_error() {
    let toolbox = Toolbox::from_specs(&[stdio(&["capital"])]).await.unwrap();
    assert_eq!(toolbox.names(), ["capital"]);
    let e = Toolbox::from_specs(&[stdio(&["weather"])])
        .await
        .unwrap_err()
        .to_string();
    assert!(e.starts_with("The MCP server `"), "{e}");
    assert!(e.contains("mcp_fixture`"), "{e}");
    assert!(
        e.contains("has no tool `weather` (it has: add, capital, fails, slow)"),
        "{e}"
    );
    // Two entries giving one tool name are refused.
    let e = Toolbox::from_specs(&[stdio(&["add"]), stdio(&["add"])])
        .await
        .unwrap_err()
        .to_string();
    assert!(e.contains("`add`") && e.contains("declared twice"), "{e}");
}

/// The fixture serving streamable HTTP on a free loopback port; killed when dropped.
struct HttpFixture {
    child: std::process::Child,
    url: String,
}

impl Drop for HttpFixture {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn http_fixture() -> HttpFixture {
    let mut child = std::process::Command::new(fixture())
        .args(["--http", "0"])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    std::io::BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    HttpFixture {
        child,
        url: line.trim().to_string(),
    }
}

#[tokio::test]
async fn a_streamable_http_server_is_listed_and_called() {
    let server = http_fixture();
    assert!(
        server.url.starts_with("http://127.0.0.1:"),
        "{}",
        server.url
    );
    let spec = ToolSpec::mcp(McpServer {
        command: None,
        args: Vec::new(),
        url: Some(server.url.clone()),
        tools: vec!["add".into(), "capital".into()],
        startup_timeout_s: Some(20),
    });
    let toolbox = Toolbox::from_specs(&[spec]).await.unwrap();
    assert_eq!(toolbox.names(), ["add", "capital"]);
    assert_eq!(
        toolbox
            .call("add", &json!({"a": 40, "b": 2}))
            .await
            .unwrap(),
        "42"
    );
    assert_eq!(
        toolbox
            .call("capital", &json!({"country": "Peru"}))
            .await
            .unwrap(),
        "Lima"
    );
    // A URL where nothing listens is an error naming it.
    let url = server.url.clone();
    drop(server);
    let gone = ToolSpec::mcp(McpServer {
        command: None,
        args: Vec::new(),
        url: Some(url.clone()),
        tools: Vec::new(),
        startup_timeout_s: Some(10),
    });
    let e = Toolbox::from_specs(&[gone]).await.unwrap_err().to_string();
    assert!(e.contains(&format!("`{url}`")), "{e}");
}
