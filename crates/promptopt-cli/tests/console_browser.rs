//! The web console in a real browser: headless Chromium (Debian's `chromium`) driven through
//! `chromedriver` over WebDriver, against the real `promptopt serve` (embedded queue, one
//! in-process worker, SQLite database) and a fake model server that answers slowly enough for a
//! job to be watched.
//!
//! A newcomer's path: sign in (a wrong token first), watch a job run to the end without
//! reloading, open the saved version, promote it, read an experiment's decision and a model's
//! health; a `predict` token sees no actions; a missing job is a 404 page. Every page passes
//! the accessibility basics: labelled controls, a keyboard path to the content, readable
//! contrast. Screenshots of each page go to `PROMPTOPT_CONSOLE_SCREENSHOTS` (default: the
//! test's temporary directory); the committed ones are in `docs/console/`.
#![allow(clippy::unwrap_used)]

mod common;

use std::path::PathBuf;
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::webdriver::{Browser, ENTER, TAB};
use promptopt_lm::testing::{FixedReplyServer, Reply};
use serde_json::{json, Value};

const ADMIN: &str = "console-admin";
const READER: &str = "console-reader";

/// Negative for reviews with "dull" or "bad", positive otherwise; but the more demos the prompt
/// has, the more often it is right (a third of the reviews with none, all of them with two), so
/// an optimization's best score climbs. Each reply takes a second while `slow` is set (so that a
/// job is still running when its page loads), 60 ms after.
fn fake_lm(slow: Arc<AtomicBool>) -> FixedReplyServer {
    FixedReplyServer::with_handler(move |request| {
        let last = request.messages.last().map_or("", |m| m.content.as_str());
        let tail = last.rsplit("[[ ## text ## ]]").next().unwrap_or(last);
        let negative = tail.contains("dull") || tail.contains("bad");
        let demos = request
            .messages
            .iter()
            .filter(|m| m.role == promptopt_lm::Role::Assistant)
            .count();
        let hash: usize = tail.bytes().map(usize::from).sum();
        let right = hash % 3 < demos + 1;
        let label = if negative == right {
            "negative"
        } else {
            "positive"
        };
        let delay = if slow.load(Ordering::SeqCst) {
            1000
        } else {
            60
        };
        Reply::text(label).after(Duration::from_millis(delay))
    })
    .unwrap()
}

fn request(seed: u64) -> Value {
    let reviews = [
        ("a warm and funny film", "positive"),
        ("dull from start to end", "negative"),
        ("a bad script and worse acting", "negative"),
        ("the best film of the year", "positive"),
        ("bright, sharp and moving", "positive"),
        ("a dull, bad sequel", "negative"),
        ("i loved every minute", "positive"),
        ("bad pacing, dull jokes", "negative"),
    ];
    let examples: Vec<Value> = reviews
        .iter()
        .map(|(t, l)| json!({"text": t, "label": l}))
        .collect();
    json!({
        "name": "reviews",
        "evaluation_metric": "exact_match",
        "algorithm": "bootstrapfewshot_random_search",
        "algorithm_config": {"num_candidate_programs": 4, "max_bootstrapped_demos": 2},
        "model": "openai/fake",
        "input_keys": ["text"],
        "output_keys": ["label"],
        "instructions": "Classify the sentiment of the review as positive or negative.",
        "seed": seed,
        "training_examples": examples,
        "validation_examples": examples,
    })
}

struct Api {
    client: reqwest::Client,
    url: String,
}

impl Api {
    async fn call(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> Value {
        let mut request = self
            .client
            .request(method.clone(), format!("{}{path}", self.url))
            .header("authorization", format!("Bearer {ADMIN}"));
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.unwrap();
        let status = response.status();
        let text = response.text().await.unwrap();
        assert!(status.is_success(), "{method} {path}: {status} {text}");
        serde_json::from_str(&text).unwrap_or(Value::Null)
    }

    async fn job_state(&self, id: &str) -> Value {
        self.call(reqwest::Method::GET, &format!("/v1/jobs/{id}"), None)
            .await
    }
}

fn screenshots() -> PathBuf {
    std::env::var_os("PROMPTOPT_CONSOLE_SCREENSHOTS").map_or_else(
        || PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("console-screenshots"),
        PathBuf::from,
    )
}

/// Labelled controls, a skip link that moves focus to the content, readable contrast.
async fn check_accessibility(browser: &Browser, page: &str) {
    let unlabelled = browser
        .script(
            "return [...document.querySelectorAll('input:not([type=hidden]), select, textarea')]
                .filter(e => !(e.labels && e.labels.length) && !e.getAttribute('aria-label'))
                .map(e => e.outerHTML);",
        )
        .await;
    assert_eq!(unlabelled, json!([]), "{page}: controls without a label");
    let low = browser
        .script(
            "function lum(c){const m=c.match(/[\\d.]+/g).map(Number);
                return [0,1,2].map(i=>{const v=m[i]/255;return v<=0.03928?v/12.92:Math.pow((v+0.055)/1.055,2.4)})
                  .reduce((a,v,i)=>a+v*[0.2126,0.7152,0.0722][i],0);}
             function bg(el){for(;el;el=el.parentElement){const c=getComputedStyle(el).backgroundColor;
                const m=c.match(/[\\d.]+/g); if(m&&(m.length<4||Number(m[3])>0)) return c;} return 'rgb(255,255,255)';}
             const bad=[];
             for(const el of document.querySelectorAll('body *')){
               if(el.closest('svg')||el.closest('.visually-hidden')||el.classList.contains('skip')) continue;
               const own=[...el.childNodes].some(n=>n.nodeType===3&&n.textContent.trim());
               if(!own||!el.getClientRects().length) continue;
               const a=lum(getComputedStyle(el).color), b=lum(bg(el));
               const r=(Math.max(a,b)+0.05)/(Math.min(a,b)+0.05);
               if(r<4.5) bad.push(el.tagName+' '+el.textContent.trim().slice(0,30)+' '+r.toFixed(2));
             }
             return bad;",
        )
        .await;
    assert_eq!(low, json!([]), "{page}: text below 4.5:1 contrast");
    // The keyboard, on the page freshly loaded: the login page puts the focus in the token
    // field; elsewhere the first Tab reaches the skip link, and Enter moves focus to the content.
    let here = browser.url().await;
    browser.goto(&here).await;
    if here.contains("/ui/login") {
        let focused = browser.script("return document.activeElement.id;").await;
        assert_eq!(
            focused,
            json!("token"),
            "{page}: the token field has no focus"
        );
        return;
    }
    browser.press(TAB).await;
    let focused = browser
        .script("return document.activeElement.className;")
        .await;
    assert_eq!(
        focused,
        json!("skip"),
        "{page}: the first Tab missed the skip link"
    );
    browser.press(ENTER).await;
    let moved = browser
        .wait_until(
            "document.activeElement.id === 'main'",
            Duration::from_secs(3),
        )
        .await;
    assert!(
        moved,
        "{page}: the skip link did not move focus to the content"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_newcomer_watches_a_job_promotes_and_reads_an_experiment() {
    let Some(browser) = Browser::start().await else {
        return;
    };
    let shots = screenshots();
    let home = tempfile::tempdir().unwrap();
    let slow = Arc::new(AtomicBool::new(true));
    let lm = fake_lm(Arc::clone(&slow));
    // The jobs are tracked on the test MLflow server (scripts/test.sh starts one), so the
    // version page links its run.
    let mlflow = std::env::var("PROMPTOPT_TEST_MLFLOW_URI").ok();
    assert!(
        mlflow.is_some() || std::env::var("PROMPTOPT_CI").is_err(),
        "PROMPTOPT_TEST_MLFLOW_URI must be set in CI (scripts/test.sh starts MLflow)"
    );
    let mut envs = vec![];
    if let Some(uri) = &mlflow {
        envs.push(("DISABLE_MLFLOW", "0"));
        envs.push(("MLFLOW_TRACKING_URI", uri.as_str()));
    }
    let serve = common::spawn_serve(
        home.path(),
        &lm.base_url(),
        &format!("{ADMIN}:admin,{READER}:predict"),
        &["--workers", "1"],
        &envs,
        Stdio::null(),
    );
    let url = serve.url.clone();
    let api = Api {
        client: reqwest::Client::new(),
        url: url.clone(),
    };

    // Signing in: a wrong token is told so, then the admin token opens the console.
    browser.goto(&format!("{url}/ui")).await;
    assert!(
        browser.url().await.contains("/ui/login"),
        "{}",
        browser.url().await
    );
    check_accessibility(&browser, "login").await;
    browser.fill("#token", "wrong-token").await;
    browser.click_on("form.login button").await;
    browser.wait_for("[role=alert]").await;
    let alert = browser.text_of("[role=alert]").await;
    assert!(alert.contains("That token is not valid"), "{alert}");
    browser.screenshot(&shots.join("login.png")).await;
    browser.fill("#token", ADMIN).await;
    browser.click_on("form.login button").await;
    browser.wait_for("nav.filters").await;
    assert!(
        browser.url().await.ends_with("/ui/jobs"),
        "{}",
        browser.url().await
    );

    // A job, watched live: the page is loaded once while the job waits or runs, and the state,
    // trials and chart arrive over the event stream.
    let first = api
        .call(reqwest::Method::POST, "/v1/optimizations", Some(request(1)))
        .await;
    let job = first["job_id"].as_str().unwrap().to_string();
    browser.goto(&format!("{url}/ui/jobs/{job}")).await;
    let at_load = browser.text_of("#job-state").await;
    assert!(at_load == "queued" || at_load == "running", "{at_load}");
    slow.store(false, Ordering::SeqCst);
    let ended = browser
        .wait_until(
            "document.querySelector('#live').getAttribute('data-ended') === 'true'",
            Duration::from_secs(180),
        )
        .await;
    let record = api.job_state(&job).await;
    assert!(
        ended,
        "the page did not follow the job to its end: {record:#}"
    );
    assert_eq!(
        browser.text_of("#job-state").await,
        "succeeded",
        "{record:#}"
    );
    assert_eq!(record["state"], "succeeded");
    assert!(!browser.find_all("#live circle.point").await.is_empty());
    assert!(!browser.find_all("#live path.series").await.is_empty());
    let trial = browser.text_of("#job-trial").await;
    assert!(trial.contains(" of "), "{trial}");
    browser.screenshot(&shots.join("job.png")).await;
    check_accessibility(&browser, "job").await;

    // A second version for the experiment, queued now.
    let second = api
        .call(reqwest::Method::POST, "/v1/optimizations", Some(request(2)))
        .await;
    let second = second["job_id"].as_str().unwrap().to_string();

    // The saved version: its exact prompt, then promotion through the confirmation page.
    browser.click_on("#job-model a").await;
    browser.wait_for("section.stage").await;
    let prompt = browser.text_of("section.stage").await;
    assert!(
        prompt.contains("Classify the sentiment of the review as positive or negative."),
        "{prompt}"
    );
    check_accessibility(&browser, "version").await;
    if let Some(uri) = &mlflow {
        // The run of the job that saved the version, linked on MLflow's own UI.
        let run = browser.text_of("#mlflow-run a").await;
        let href = browser
            .script("return document.querySelector('#mlflow-run a').getAttribute('href');")
            .await;
        assert_eq!(
            href,
            json!(format!("{}/#/runs/{run}", uri.trim_end_matches('/'))),
            "{run}"
        );
        let found = reqwest::Client::new()
            .get(format!("{uri}/api/2.0/mlflow/runs/get?run_id={run}"))
            .send()
            .await
            .unwrap();
        assert!(found.status().is_success(), "run {run}: {}", found.status());
    }
    browser.fill("#alias", "production").await;
    browser.click_on("form.inline button").await;
    browser.wait_for(".confirm").await;
    assert!(browser
        .text_of(".confirm")
        .await
        .contains("The alias is new."));
    browser.screenshot(&shots.join("promote-confirm.png")).await;
    browser.click_on(".confirm button.primary").await;
    browser.wait_for("[role=status]").await;
    let notice = browser.text_of("[role=status]").await;
    assert!(
        notice.contains("The alias now points at this version."),
        "{notice}"
    );
    assert!(browser.text_of("#aliases").await.contains("production"));
    browser.screenshot(&shots.join("version.png")).await;
    let model = api
        .call(reqwest::Method::GET, "/v1/models/reviews", None)
        .await;
    assert_eq!(model["aliases"]["production"], "1.0.0", "{model:#}");

    // The jobs page, once the second job is done too.
    let started = Instant::now();
    while api.job_state(&second).await["state"] != "succeeded" {
        assert!(started.elapsed() < Duration::from_secs(180));
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    browser.goto(&format!("{url}/ui/jobs")).await;
    assert_eq!(browser.find_all("tbody tr").await.len(), 2);
    browser.screenshot(&shots.join("jobs.png")).await;
    check_accessibility(&browser, "jobs").await;

    // An experiment between the two versions; users of the second do better.
    api.call(
        reqwest::Method::POST,
        "/v1/experiments?start=true",
        Some(json!({
            "name": "second-seed",
            "variants": {"control": "reviews@1.0.0", "treatment": "reviews@1.0.1"},
            "success_metric": "exact_match",
            "minimum_sample_size": 40,
            "auto_promote": false
        })),
    )
    .await;
    api.call(
        reqwest::Method::PUT,
        "/v1/models/reviews/learning",
        Some(json!({"window": 25, "min_new_labels": 1000, "check_every": "1s"})),
    )
    .await;
    for i in 0..160 {
        let p = api
            .call(
                reqwest::Method::POST,
                "/v1/models/reviews/predict",
                Some(json!({"inputs": {"text": format!("review number {i}")}, "user_id": format!("user-{i}")})),
            )
            .await;
        let success = p["variant"] == "treatment" || i % 3 == 0;
        api.call(
            reqwest::Method::POST,
            "/v1/feedback",
            Some(json!({"prediction_id": p["prediction_id"], "success": success})),
        )
        .await;
    }
    browser.goto(&format!("{url}/ui/experiments")).await;
    browser.click_on("tbody a").await;
    browser.wait_for("#decision").await;
    let decision = browser.text_of("#decision").await;
    assert!(decision.starts_with("Winner: treatment"), "{decision}");
    assert_eq!(browser.find_all("#variants tbody tr").await.len(), 2);
    assert!(!browser.find_all("line.interval").await.is_empty());
    browser.screenshot(&shots.join("experiment.png")).await;
    check_accessibility(&browser, "experiment").await;

    // Then production starts failing: the learning loop raises a drift alarm (no retraining:
    // `min_new_labels` is out of reach).
    for i in 0..80 {
        let p = api
            .call(
                reqwest::Method::POST,
                "/v1/models/reviews/predict",
                Some(json!({"inputs": {"text": format!("review number {i}")}})),
            )
            .await;
        api.call(
            reqwest::Method::POST,
            "/v1/feedback",
            Some(json!({"prediction_id": p["prediction_id"], "success": false})),
        )
        .await;
    }
    let started = Instant::now();
    loop {
        let history = api
            .call(
                reqwest::Method::GET,
                "/v1/models/reviews/learning/history",
                None,
            )
            .await;
        let kinds: Vec<&str> = history["events"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|e| e["kind"].as_str())
            .collect();
        if kinds.contains(&"drift") {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "no drift: {history:#}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }

    // The model's health: the live metric over time with the alarm, and the loop's history.
    browser.goto(&format!("{url}/ui/health")).await;
    browser.click_on("tbody a").await;
    browser.wait_for("#history").await;
    assert!(!browser
        .find_all("figure.chart path.series")
        .await
        .is_empty());
    assert!(browser.text_of("#history").await.contains("enabled"));
    assert!(browser.text_of("#history").await.contains("drift"));
    assert!(!browser
        .find_all("figure.chart line.marker")
        .await
        .is_empty());
    browser.screenshot(&shots.join("health.png")).await;
    check_accessibility(&browser, "health").await;

    // Models, and a missing job.
    browser.goto(&format!("{url}/ui/models")).await;
    browser.screenshot(&shots.join("models.png")).await;
    browser
        .goto(&format!("{url}/ui/jobs/job-0000000000000000"))
        .await;
    assert_eq!(browser.text_of("h1").await, "Not found");
    assert!(browser.text_of("[role=alert]").await.contains("No job"));

    // A `predict` token reads and has no actions.
    browser.click_on(".session button").await;
    browser.wait_for("#token").await;
    assert!(browser.url().await.contains("/ui/login"));
    browser.fill("#token", READER).await;
    browser.click_on("form.login button").await;
    browser.wait_for("main h1").await;
    browser
        .goto(&format!("{url}/ui/models/reviews/versions/1.0.0"))
        .await;
    assert!(browser.text_of(".session").await.contains("predict"));
    assert!(browser.find_all("form.inline").await.is_empty());
    browser.quit().await;
    drop(serve);
}
