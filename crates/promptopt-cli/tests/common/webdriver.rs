//! A small WebDriver client for the browser tests: Debian's `chromedriver` driving headless
//! Chromium, spoken to over the W3C WebDriver protocol (JSON over HTTP) with `reqwest`.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use base64::Engine as _;
use serde_json::{json, Value};

/// The key of an element reference in WebDriver replies.
const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

/// Tab and Enter as WebDriver key codes.
pub const TAB: &str = "\u{E004}";
/// Enter.
pub const ENTER: &str = "\u{E007}";

fn which(names: &[&str]) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    for dir in std::env::split_paths(&path) {
        for name in names {
            let candidate = dir.join(name);
            if candidate.is_file() {
                return Some(candidate);
            }
        }
    }
    None
}

/// A headless Chromium session.
pub struct Browser {
    http: reqwest::Client,
    base: String,
    session: String,
    driver: Child,
}

impl Drop for Browser {
    /// Ends the session (the driver closes the browser), then stops the driver: also when a
    /// test fails half-way.
    fn drop(&mut self) {
        if !self.session.is_empty() {
            let url = format!("{}/session/{}", self.base, self.session);
            let _ = std::thread::spawn(move || {
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .ok()?;
                runtime.block_on(async {
                    reqwest::Client::new()
                        .delete(url)
                        .timeout(Duration::from_secs(10))
                        .send()
                        .await
                        .ok()
                })
            })
            .join();
        }
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

impl Browser {
    /// Starts `chromedriver` on a free loopback port and opens a headless Chromium session.
    /// `None` when Chromium or its driver is not installed (never in CI, where
    /// `scripts/test.sh` installs them).
    pub async fn start() -> Option<Browser> {
        let driver = which(&["chromedriver"]);
        let chromium = which(&["chromium", "chromium-browser", "google-chrome"]);
        let (Some(driver), Some(chromium)) = (driver, chromium) else {
            assert!(
                std::env::var("PROMPTOPT_CI").is_err(),
                "chromium and chromedriver must be installed in CI (scripts/test.sh installs them)"
            );
            return None;
        };
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let child = Command::new(driver)
            .arg(format!("--port={port}"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let base = format!("http://127.0.0.1:{port}");
        let http = reqwest::Client::new();
        let started = Instant::now();
        loop {
            let ready = http
                .get(format!("{base}/status"))
                .send()
                .await
                .ok()
                .filter(|r| r.status().is_success());
            if ready.is_some() {
                break;
            }
            assert!(
                started.elapsed() < Duration::from_secs(30),
                "chromedriver did not start"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let capabilities = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": chromium,
                "args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                         "--window-size=1280,1000", "--force-device-scale-factor=1", "--lang=en-US"]
            }
        }}});
        let mut browser = Browser {
            http,
            base,
            session: String::new(),
            driver: child,
        };
        let reply = browser.call("POST", "/session", Some(capabilities)).await;
        browser.session = reply["sessionId"].as_str().unwrap().to_string();
        Some(browser)
    }

    async fn call(&self, method: &str, path: &str, body: Option<Value>) -> Value {
        let url = format!("{}{path}", self.base);
        let request = match method {
            "GET" => self.http.get(&url),
            "DELETE" => self.http.delete(&url),
            _ => self
                .http
                .post(&url)
                .json(&body.unwrap_or_else(|| json!({}))),
        };
        let response = request.send().await.unwrap();
        let status = response.status();
        let value: Value = response.json().await.unwrap();
        assert!(
            status.is_success(),
            "WebDriver {method} {path}: {status} {value}"
        );
        value["value"].clone()
    }

    async fn session_call(&self, method: &str, path: &str, body: Option<Value>) -> Value {
        self.call(method, &format!("/session/{}{path}", self.session), body)
            .await
    }

    /// Opens `url`.
    pub async fn goto(&self, url: &str) {
        self.session_call("POST", "/url", Some(json!({ "url": url })))
            .await;
    }

    /// The address shown.
    pub async fn url(&self) -> String {
        self.session_call("GET", "/url", None)
            .await
            .as_str()
            .unwrap()
            .to_string()
    }

    /// The elements matching the CSS `selector`.
    pub async fn find_all(&self, selector: &str) -> Vec<String> {
        let value = self
            .session_call(
                "POST",
                "/elements",
                Some(json!({"using": "css selector", "value": selector})),
            )
            .await;
        value
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e[ELEMENT].as_str().unwrap().to_string())
            .collect()
    }

    /// The first element matching `selector` (fails the test when there is none).
    pub async fn find(&self, selector: &str) -> String {
        let found = self.find_all(selector).await;
        match found.into_iter().next() {
            Some(e) => e,
            None => panic!(
                "no `{selector}` on {}: {}",
                self.url().await,
                self.text_of("body").await
            ),
        }
    }

    /// The rendered text of the first element matching `selector` (empty when there is none);
    /// read in one step in the page, so a part of the page swapped meanwhile cannot go stale.
    pub async fn text_of(&self, selector: &str) -> String {
        let selector = serde_json::to_string(selector).unwrap();
        self.script(&format!(
            "const e = document.querySelector({selector}); return e ? e.innerText : '';"
        ))
        .await
        .as_str()
        .unwrap_or_default()
        .trim()
        .to_string()
    }

    /// Clicks an element.
    pub async fn click(&self, element: &str) {
        self.session_call("POST", &format!("/element/{element}/click"), None)
            .await;
    }

    /// Clicks the first element matching `selector`.
    pub async fn click_on(&self, selector: &str) {
        let element = self.find(selector).await;
        self.click(&element).await;
    }

    /// Replaces an input's value with `text`.
    pub async fn fill(&self, selector: &str, text: &str) {
        let element = self.find(selector).await;
        self.session_call("POST", &format!("/element/{element}/clear"), None)
            .await;
        self.session_call(
            "POST",
            &format!("/element/{element}/value"),
            Some(json!({ "text": text })),
        )
        .await;
    }

    /// Presses and releases `key` (see [`TAB`], [`ENTER`]).
    pub async fn press(&self, key: &str) {
        let actions = json!({"actions": [{"type": "key", "id": "keyboard", "actions": [
            {"type": "keyDown", "value": key}, {"type": "keyUp", "value": key}
        ]}]});
        self.session_call("POST", "/actions", Some(actions)).await;
    }

    /// Runs `script` (a function body) in the page and returns its value.
    pub async fn script(&self, script: &str) -> Value {
        self.session_call(
            "POST",
            "/execute/sync",
            Some(json!({"script": script, "args": []})),
        )
        .await
    }

    /// Waits until `condition` (a JavaScript expression) is true in the page, up to `limit`.
    pub async fn wait_until(&self, condition: &str, limit: Duration) -> bool {
        let started = Instant::now();
        while started.elapsed() < limit {
            if self.script(&format!("return !!({condition});")).await == json!(true) {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        false
    }

    /// Waits up to 20 s for an element matching `selector` (after a click that loads a page).
    pub async fn wait_for(&self, selector: &str) -> String {
        let started = Instant::now();
        loop {
            if let Some(e) = self.find_all(selector).await.into_iter().next() {
                return e;
            }
            assert!(
                started.elapsed() < Duration::from_secs(20),
                "no `{selector}` appeared on {}: {}",
                self.url().await,
                self.text_of("body").await
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Saves a PNG of the window to `path`.
    pub async fn screenshot(&self, path: &Path) {
        let data = self.session_call("GET", "/screenshot", None).await;
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(data.as_str().unwrap())
            .unwrap();
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, bytes).unwrap();
    }

    /// Ends the session (the browser closes).
    pub async fn quit(mut self) {
        self.session_call("DELETE", "", None).await;
        self.session.clear();
    }
}
