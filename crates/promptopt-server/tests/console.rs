//! The web console through the router, as a browser without script uses it: signing in with a
//! token, pages over the queue, the registry, an experiment and a model's health, the 404
//! pages, and actions that ask first, check the form and report failures in words. (The
//! browser tests in `promptopt-cli/tests/console_browser.rs` drive the same pages in Chromium.)
#![allow(clippy::unwrap_used)]

mod common;

use std::sync::Arc;

use async_trait::async_trait;
use axum::body::Body;
use axum::http::{header, Request, StatusCode};
use axum::Router;
use http_body_util::BodyExt;
use promptopt_jobs::{JobQueue, JobSpec, SqliteQueue};
use promptopt_lm::{ScriptedLm, SharedLm};
use promptopt_registry::Registry;
use promptopt_server::{ModelLms, ServeConfig, Server, Tokens};
use serde_json::{json, Value};
use tower::ServiceExt;

/// Answers `negative` for texts with "bad", `positive` otherwise; the version whose
/// instructions say "careless" always answers `positive`.
struct Labels;

#[async_trait]
impl ModelLms for Labels {
    async fn lm_for(&self, _models: &[String]) -> Result<SharedLm, String> {
        Ok(Arc::new(ScriptedLm::new(|request| {
            let system = request.messages.first().map_or("", |m| m.content.as_str());
            let last = request.messages.last().map_or("", |m| m.content.as_str());
            let careless = system.contains("careless");
            Ok(if last.contains("bad") && !careless {
                "negative"
            } else {
                "positive"
            }
            .to_string())
        })))
    }
}

struct World {
    _home: tempfile::TempDir,
    registry: Registry,
    queue: Arc<SqliteQueue>,
    router: Router,
}

async fn world() -> World {
    let home = tempfile::tempdir().unwrap();
    let registry = Registry::new(home.path());
    common::save(&registry, "reviews", "Classify the review; be careless.");
    common::save(
        &registry,
        "reviews",
        "Classify the review as positive or negative.",
    );
    let queue = Arc::new(SqliteQueue::open(home.path().join("queue.sqlite")).unwrap());
    let mut tokens = Tokens::default();
    tokens.add_list("adm,look:predict", "test").unwrap();
    let database = format!("sqlite:{}", home.path().join("server.sqlite").display());
    let server = Server::new(
        registry.clone(),
        Arc::clone(&queue) as Arc<dyn JobQueue>,
        Arc::new(Labels),
        tokens,
        ServeConfig::default(),
    )
    .with_database(&database)
    .await
    .unwrap();
    World {
        router: server.router(),
        registry,
        queue,
        _home: home,
    }
}

struct Page {
    status: StatusCode,
    headers: axum::http::HeaderMap,
    text: String,
}

impl Page {
    fn location(&self) -> &str {
        self.headers
            .get(header::LOCATION)
            .map_or("", |v| v.to_str().unwrap())
    }

    /// The value of the first hidden `csrf` field.
    fn csrf(&self) -> String {
        let at = self
            .text
            .find("name=\"csrf\" value=\"")
            .unwrap_or_else(|| panic!("no csrf field in {}", self.text));
        let rest = &self.text[at + "name=\"csrf\" value=\"".len()..];
        rest[..rest.find('"').unwrap()].to_string()
    }
}

/// A browser: a session cookie, pages and forms.
struct Browser<'a> {
    router: &'a Router,
    cookie: Option<String>,
}

impl<'a> Browser<'a> {
    fn new(router: &'a Router) -> Self {
        Self {
            router,
            cookie: None,
        }
    }

    async fn send(&self, request: Request<Body>) -> Page {
        let response = self.router.clone().oneshot(request).await.unwrap();
        let status = response.status();
        let headers = response.headers().clone();
        let bytes = response.into_body().collect().await.unwrap().to_bytes();
        Page {
            status,
            headers,
            text: String::from_utf8_lossy(&bytes).into_owned(),
        }
    }

    async fn get(&self, uri: &str) -> Page {
        let mut builder = Request::get(uri);
        if let Some(c) = &self.cookie {
            builder = builder.header(header::COOKIE, c);
        }
        self.send(builder.body(Body::empty()).unwrap()).await
    }

    async fn post(&self, uri: &str, form: &[(&str, &str)]) -> Page {
        let body: String = form
            .iter()
            .map(|(k, v)| format!("{k}={}", encode(v)))
            .collect::<Vec<_>>()
            .join("&");
        let mut builder =
            Request::post(uri).header(header::CONTENT_TYPE, "application/x-www-form-urlencoded");
        if let Some(c) = &self.cookie {
            builder = builder.header(header::COOKIE, c);
        }
        self.send(builder.body(Body::from(body)).unwrap()).await
    }

    async fn sign_in(&mut self, token: &str) -> Page {
        let page = self
            .post("/ui/login", &[("token", token), ("next", "/ui/models")])
            .await;
        if let Some(set) = page.headers.get(header::SET_COOKIE) {
            let set = set.to_str().unwrap();
            assert!(
                set.contains("HttpOnly") && set.contains("SameSite=Strict"),
                "{set}"
            );
            self.cookie = Some(set.split(';').next().unwrap().to_string());
        }
        page
    }
}

/// Where `production` of `reviews` points.
fn production(registry: &Registry) -> String {
    registry
        .aliases("reviews")
        .unwrap()
        .into_iter()
        .find(|(a, _)| a == "production")
        .map(|(_, v)| v.to_string())
        .unwrap_or_default()
}

fn encode(text: &str) -> String {
    text.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
                char::from(b).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

async fn api(router: &Router, method: &str, uri: &str, token: &str, body: Value) -> Value {
    let request = Request::builder()
        .method(method)
        .uri(uri)
        .header(header::AUTHORIZATION, format!("Bearer {token}"))
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from(body.to_string()))
        .unwrap();
    let response = router.clone().oneshot(request).await.unwrap();
    let status = response.status();
    let bytes = response.into_body().collect().await.unwrap().to_bytes();
    let value: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    assert!(status.is_success(), "{method} {uri}: {status} {value}");
    value
}

#[tokio::test]
async fn signing_in_takes_a_valid_token_and_a_wrong_one_is_told_so() {
    let w = world().await;
    let mut browser = Browser::new(&w.router);
    let page = browser.get("/ui/jobs").await;
    assert_eq!(page.status, StatusCode::SEE_OTHER);
    assert_eq!(page.location(), "/ui/login?next=/ui/jobs");
    let login = browser.get("/ui/login?next=/ui/jobs").await;
    assert_eq!(login.status, StatusCode::OK);
    assert!(
        login
            .text
            .contains("<label for=\"token\">API token</label>"),
        "{}",
        login.text
    );

    let wrong = browser.sign_in("not-a-token").await;
    assert_eq!(wrong.status, StatusCode::UNAUTHORIZED);
    assert!(
        wrong.text.contains("That token is not valid"),
        "{}",
        wrong.text
    );
    assert!(
        !wrong.text.contains("not-a-token"),
        "the token is echoed back"
    );
    assert!(browser.cookie.is_none());

    let ok = browser.sign_in("adm").await;
    assert_eq!(ok.status, StatusCode::SEE_OTHER);
    assert_eq!(ok.location(), "/ui/models");
    let models = browser.get("/ui/models").await;
    assert_eq!(models.status, StatusCode::OK, "{}", models.text);
    assert!(
        models.text.contains("href=\"/ui/models/reviews\""),
        "{}",
        models.text
    );
    assert!(models.text.contains("Signed in (admin)"), "{}", models.text);
    let csp = models.headers.get(header::CONTENT_SECURITY_POLICY).unwrap();
    assert!(csp.to_str().unwrap().contains("frame-ancestors 'none'"));

    // Signing out ends the session on the server.
    let csrf = models.csrf();
    let out = browser.post("/ui/logout", &[("csrf", &csrf)]).await;
    assert_eq!(out.status, StatusCode::SEE_OTHER);
    assert_eq!(
        browser.get("/ui/models").await.status,
        StatusCode::SEE_OTHER
    );
}

#[tokio::test]
async fn a_job_page_shows_its_progress_and_chart_and_missing_things_are_404_pages() {
    let w = world().await;
    let request: promptopt_optimize::OptimizationRequest = serde_json::from_value(json!({
        "name": "reviews",
        "evaluation_metric": "exact_match",
        "algorithm": "bootstrapfewshot",
        "model": "scripted/test",
        "input_keys": ["text"],
        "output_keys": ["label"],
        "training_examples": [{"text": "good", "label": "positive"}],
    }))
    .unwrap();
    let record = w
        .queue
        .submit(&JobSpec::for_request(request, "normal", None, 3).unwrap())
        .await
        .unwrap();
    for (trial, score, best) in [(1, 0.5, 0.5), (2, 0.25, 0.5), (3, 0.75, 0.75)] {
        let event = json!({"event": "trial_scored", "trial": trial, "score": score, "best_so_far": best, "kind": "full"});
        w.queue.push_event(&record.job_id, &event).await.unwrap();
    }
    let mut browser = Browser::new(&w.router);
    browser.sign_in("adm").await;
    let list = browser.get("/ui/jobs?state=queued").await;
    assert_eq!(list.status, StatusCode::OK);
    assert!(list.text.contains(&record.job_id), "{}", list.text);
    let bad_state = browser.get("/ui/jobs?state=sleeping").await;
    assert_eq!(bad_state.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(
        bad_state.text.contains("`sleeping` is not a job state"),
        "{}",
        bad_state.text
    );

    let page = browser.get(&format!("/ui/jobs/{}", record.job_id)).await;
    assert_eq!(page.status, StatusCode::OK, "{}", page.text);
    assert!(
        page.text.contains("data-events=\"/ui/jobs/"),
        "{}",
        page.text
    );
    assert!(
        page.text.contains("class=\"series\""),
        "no best-so-far line: {}",
        page.text
    );
    assert_eq!(
        page.text.matches("class=\"point\"").count(),
        3,
        "{}",
        page.text
    );
    assert!(page.text.contains("Cancel job…"), "{}", page.text);
    let live = browser
        .get(&format!("/ui/jobs/{}/live", record.job_id))
        .await;
    assert!(
        live.text.starts_with("<div class=\"panel\""),
        "{}",
        live.text
    );

    // Cancelling asks first, refuses a forged form, then cancels.
    let confirm = browser
        .get(&format!("/ui/jobs/{}/cancel", record.job_id))
        .await;
    assert!(confirm.text.contains("Cancel the job"), "{}", confirm.text);
    let forged = browser
        .post(
            &format!("/ui/jobs/{}/cancel", record.job_id),
            &[("csrf", "0")],
        )
        .await;
    assert_eq!(forged.status, StatusCode::FORBIDDEN);
    assert!(
        forged.text.contains("The form has expired"),
        "{}",
        forged.text
    );
    let done = browser
        .post(
            &format!("/ui/jobs/{}/cancel", record.job_id),
            &[("csrf", &confirm.csrf())],
        )
        .await;
    assert_eq!(done.status, StatusCode::SEE_OTHER, "{}", done.text);
    let after = browser.get(done.location()).await;
    assert!(
        after.text.contains("The job was cancelled"),
        "{}",
        after.text
    );
    assert!(after.text.contains("state-cancelled"), "{}", after.text);
    // A second cancel fails, and says why in words.
    let again = browser
        .post(
            &format!("/ui/jobs/{}/cancel", record.job_id),
            &[("csrf", &confirm.csrf())],
        )
        .await;
    assert_eq!(again.status, StatusCode::CONFLICT, "{}", again.text);
    assert!(
        again.text.contains("The job was not cancelled:"),
        "{}",
        again.text
    );

    for missing in [
        "/ui/jobs/job-0000000000000000",
        "/ui/jobs/nonsense",
        "/ui/models/nothing-here",
        "/ui/models/reviews/versions/9.9.9",
        "/ui/experiments/no-such-test",
        "/ui/health/nothing-here",
        "/ui/no/such/page",
    ] {
        let page = browser.get(missing).await;
        assert_eq!(
            page.status,
            StatusCode::NOT_FOUND,
            "{missing}: {}",
            page.text
        );
        let kind = page
            .headers
            .get(header::CONTENT_TYPE)
            .unwrap()
            .to_str()
            .unwrap();
        assert!(kind.starts_with("text/html"), "{missing}: {kind}");
        assert!(
            page.text.contains("<h1>Not found</h1>"),
            "{missing}: {}",
            page.text
        );
        assert!(page.text.contains("role=\"alert\""), "{missing}");
    }
}

#[tokio::test]
async fn a_version_shows_its_exact_prompt_and_promotion_asks_and_checks_the_token() {
    let w = world().await;
    let mut admin = Browser::new(&w.router);
    admin.sign_in("adm").await;
    let page = admin.get("/ui/models/reviews/versions/1.0.1").await;
    assert_eq!(page.status, StatusCode::OK, "{}", page.text);
    // The stage's messages as the adapter renders them, inputs as placeholders.
    assert!(
        page.text
            .contains("Classify the review as positive or negative."),
        "{}",
        page.text
    );
    assert!(page.text.contains("{text}"), "{}", page.text);
    assert!(page.text.contains("Promote…"), "{}", page.text);

    let confirm = admin
        .get("/ui/models/reviews/promote?version=1.0.1&alias=production")
        .await;
    assert!(
        confirm.text.contains("The alias is new."),
        "{}",
        confirm.text
    );
    let csrf = confirm.csrf();
    let moved = admin
        .post(
            "/ui/models/reviews/promote",
            &[
                ("csrf", &csrf),
                ("version", "1.0.1"),
                ("alias", "production"),
            ],
        )
        .await;
    assert_eq!(moved.status, StatusCode::SEE_OTHER, "{}", moved.text);
    assert_eq!(production(&w.registry), "1.0.1");
    let after = admin.get(moved.location()).await;
    assert!(
        after.text.contains("The alias now points at this version."),
        "{}",
        after.text
    );

    // A bad alias is refused in words and nothing moves.
    let bad = admin
        .post(
            "/ui/models/reviews/promote",
            &[("csrf", &csrf), ("version", "1.0.0"), ("alias", "no way")],
        )
        .await;
    assert_eq!(bad.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", bad.text);
    assert!(bad.text.contains("The alias did not move:"), "{}", bad.text);

    // A predict token reads but cannot promote.
    let mut reader = Browser::new(&w.router);
    reader.sign_in("look").await;
    let page = reader.get("/ui/models/reviews/versions/1.0.0").await;
    assert_eq!(page.status, StatusCode::OK);
    assert!(!page.text.contains("Promote…"), "{}", page.text);
    assert!(page.text.contains("Signed in (predict)"), "{}", page.text);
    let refused = reader
        .post(
            "/ui/models/reviews/promote",
            &[
                ("csrf", &page.csrf()),
                ("version", "1.0.0"),
                ("alias", "production"),
            ],
        )
        .await;
    assert_eq!(refused.status, StatusCode::FORBIDDEN, "{}", refused.text);
    assert!(
        refused.text.contains("lacks the `admin` scope"),
        "{}",
        refused.text
    );
    assert_eq!(production(&w.registry), "1.0.1");
    // Jobs need the `optimize` scope: a page that says so.
    let jobs = reader.get("/ui/jobs").await;
    assert_eq!(jobs.status, StatusCode::FORBIDDEN, "{}", jobs.text);
    assert!(
        jobs.text.contains("Not allowed with this token"),
        "{}",
        jobs.text
    );
}

#[tokio::test]
async fn an_experiment_and_a_models_health_show_their_figures_and_decisions() {
    let w = world().await;
    api(
        &w.router,
        "PUT",
        "/v1/models/reviews/aliases/production",
        "adm",
        json!({"version": "1.0.0"}),
    )
    .await;
    api(
        &w.router,
        "POST",
        "/v1/experiments?start=true",
        "adm",
        json!({
            "name": "careful-vs-careless",
            "variants": {"control": "reviews@1.0.0", "treatment": "reviews@1.0.1"},
            "success_metric": "exact_match",
            "minimum_sample_size": 40,
            "auto_promote": false
        }),
    )
    .await;
    api(
        &w.router,
        "PUT",
        "/v1/models/reviews/learning",
        "adm",
        json!({"window": 20}),
    )
    .await;
    for i in 0..200 {
        let text = if i % 2 == 0 {
            format!("a bad film {i}")
        } else {
            format!("a fine film {i}")
        };
        let p = api(
            &w.router,
            "POST",
            "/v1/models/reviews/predict",
            "adm",
            json!({"inputs": {"text": text}, "user_id": format!("u{i}")}),
        )
        .await;
        let expected = if i % 2 == 0 { "negative" } else { "positive" };
        api(
            &w.router,
            "POST",
            "/v1/feedback",
            "adm",
            json!({"prediction_id": p["prediction_id"], "expected_output": expected}),
        )
        .await;
    }
    let mut browser = Browser::new(&w.router);
    browser.sign_in("adm").await;
    let page = browser.get("/ui/experiments/careful-vs-careless").await;
    assert_eq!(page.status, StatusCode::OK, "{}", page.text);
    assert!(
        page.text.contains("Winner: <strong>treatment</strong>"),
        "{}",
        page.text
    );
    assert!(page.text.contains("95% interval"), "{}", page.text);
    assert_eq!(
        page.text.matches("class=\"interval\"").count(),
        3,
        "{}",
        page.text
    );
    assert!(
        page.text
            .contains("Always-valid p-value against the control"),
        "{}",
        page.text
    );
    assert!(
        page.text.contains("class=\"series\""),
        "no evidence line: {}",
        page.text
    );
    assert!(page.text.contains("Sample-ratio check"), "{}", page.text);

    // Promote from the page: asks first, then production moves and the experiment ends.
    let confirm = browser
        .get("/ui/experiments/careful-vs-careless/promote?variant=treatment")
        .await;
    assert!(
        confirm.text.contains("Promote the variant?"),
        "{}",
        confirm.text
    );
    let done = browser
        .post(
            "/ui/experiments/careful-vs-careless/promote",
            &[("csrf", &confirm.csrf()), ("variant", "treatment")],
        )
        .await;
    assert_eq!(done.status, StatusCode::SEE_OTHER, "{}", done.text);
    assert_eq!(production(&w.registry), "1.0.1");
    let after = browser.get(done.location()).await;
    assert!(
        after.text.contains("promoted to production"),
        "{}",
        after.text
    );
    // A draft started and stopped from its page.
    api(
        &w.router,
        "POST",
        "/v1/experiments",
        "adm",
        json!({
            "name": "draft-one",
            "variants": {"control": "reviews@1.0.0", "treatment": "reviews@1.0.1"},
            "success_metric": "exact_match"
        }),
    )
    .await;
    let draft = browser.get("/ui/experiments/draft-one").await;
    assert!(
        draft.text.contains("Start…") && draft.text.contains("state-draft"),
        "{}",
        draft.text
    );
    let start = browser.get("/ui/experiments/draft-one/start").await;
    let started = browser
        .post(
            "/ui/experiments/draft-one/start",
            &[("csrf", &start.csrf())],
        )
        .await;
    assert_eq!(started.status, StatusCode::SEE_OTHER, "{}", started.text);
    let running = browser.get(started.location()).await;
    assert!(
        running.text.contains("The experiment started"),
        "{}",
        running.text
    );
    assert!(running.text.contains("state-running"), "{}", running.text);
    // Starting again fails, in words.
    let again = browser
        .post(
            "/ui/experiments/draft-one/start",
            &[("csrf", &start.csrf())],
        )
        .await;
    assert_eq!(again.status, StatusCode::CONFLICT, "{}", again.text);
    assert!(again.text.contains("Nothing changed:"), "{}", again.text);
    let stopped = browser
        .post("/ui/experiments/draft-one/stop", &[("csrf", &start.csrf())])
        .await;
    assert_eq!(stopped.status, StatusCode::SEE_OTHER, "{}", stopped.text);
    assert!(browser
        .get(stopped.location())
        .await
        .text
        .contains("state-stopped"));
    let unknown = browser
        .get("/ui/experiments/careful-vs-careless/explode")
        .await;
    assert_eq!(unknown.status, StatusCode::NOT_FOUND);

    let health = browser.get("/ui/health/reviews").await;
    assert_eq!(health.status, StatusCode::OK, "{}", health.text);
    assert!(
        health.text.contains("rolling mean of 20 outcomes"),
        "{}",
        health.text
    );
    assert!(health.text.contains("reviews@1.0.0"), "{}", health.text);
    assert!(health.text.contains("class=\"series\""), "{}", health.text);
    assert!(health.text.contains("event-enabled"), "{}", health.text);
    let list = browser.get("/ui/health").await;
    assert!(
        list.text.contains("href=\"/ui/health/reviews\""),
        "{}",
        list.text
    );
}
