//! Console sessions: a token entered once on the login page is kept in the server's memory
//! under a random session id, which the browser holds in an `HttpOnly`, `SameSite=Strict`
//! cookie scoped to `/ui`. Every page and action of the console runs with that token, through
//! the same checks as the API: a `predict` token reads, an `admin` token may act.
//!
//! Actions are `POST` forms carrying the session's anti-forgery value, checked before anything
//! changes. Sessions end on logout, after [`IDLE`] without a request, or when the server
//! restarts.

use std::collections::{BTreeSet, HashMap};
use std::time::{Duration, Instant};

use axum::extract::{FromRequestParts, Query, State};
use axum::http::request::Parts;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use axum::Form;
use maud::html;
use parking_lot::Mutex;
use serde::Deserialize;
use sha2::{Digest, Sha256};

use super::page;
use crate::auth::Scope;
use crate::AppState;

/// The cookie holding the session id.
const COOKIE: &str = "promptopt_session";
/// A session unused this long ends.
pub(crate) const IDLE: Duration = Duration::from_secs(12 * 3600);
/// Sessions kept at most; the least recently used goes first beyond it.
const MAX_SESSIONS: usize = 10_000;
/// How long a failed login waits before answering (slows guessing down).
const FAILED_LOGIN_DELAY: Duration = Duration::from_millis(400);

struct Session {
    token: String,
    scopes: BTreeSet<Scope>,
    csrf: String,
    last_seen: Instant,
}

/// The console's sessions.
pub(crate) struct Sessions {
    by_id: Mutex<HashMap<[u8; 32], Session>>,
    /// The anti-forgery value of the console when authentication is off.
    open_csrf: String,
}

impl Default for Sessions {
    fn default() -> Self {
        Self {
            by_id: Mutex::new(HashMap::new()),
            open_csrf: random_hex(),
        }
    }
}

fn random_hex() -> String {
    hex::encode(rand::random::<[u8; 32]>())
}

fn key(id: &str) -> [u8; 32] {
    Sha256::digest(id.as_bytes()).into()
}

/// Compares two strings in time that does not depend on where they differ.
fn same(a: &str, b: &str) -> bool {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

impl Sessions {
    /// Opens a session for `token` with `scopes`: its id (for the cookie).
    fn open(&self, token: &str, scopes: BTreeSet<Scope>) -> String {
        let id = random_hex();
        let mut map = self.by_id.lock();
        let now = Instant::now();
        map.retain(|_, s| now.duration_since(s.last_seen) < IDLE);
        if map.len() >= MAX_SESSIONS {
            if let Some(oldest) = map.iter().min_by_key(|(_, s)| s.last_seen).map(|(k, _)| *k) {
                map.remove(&oldest);
            }
        }
        map.insert(
            key(&id),
            Session {
                token: token.to_string(),
                scopes,
                csrf: random_hex(),
                last_seen: now,
            },
        );
        id
    }

    fn close(&self, id: &str) {
        self.by_id.lock().remove(&key(id));
    }

    /// The live session `id`, touched.
    fn get(&self, id: &str) -> Option<(String, BTreeSet<Scope>, String)> {
        let mut map = self.by_id.lock();
        let k = key(id);
        let now = Instant::now();
        let session = map.get_mut(&k)?;
        if now.duration_since(session.last_seen) >= IDLE {
            map.remove(&k);
            return None;
        }
        session.last_seen = now;
        Some((
            session.token.clone(),
            session.scopes.clone(),
            session.csrf.clone(),
        ))
    }
}

/// Who is looking at the console: the session's token (as the API's `Authorization` header),
/// its scopes and the anti-forgery value its forms carry.
pub(crate) struct Viewer {
    headers: HeaderMap,
    scopes: BTreeSet<Scope>,
    pub(crate) csrf: String,
    /// Whether the server checks tokens at all (a logout button is pointless otherwise).
    pub(crate) signed_in: bool,
}

impl Viewer {
    /// The headers the API handlers read the token from.
    pub(crate) fn headers(&self) -> HeaderMap {
        self.headers.clone()
    }

    /// Whether the token has `scope` (`admin` has them all).
    pub(crate) fn can(&self, scope: Scope) -> bool {
        self.scopes.contains(&scope)
    }

    /// The scopes, for the header.
    pub(crate) fn scope_names(&self) -> String {
        if self.scopes.contains(&Scope::Admin) {
            return "admin".into();
        }
        self.scopes
            .iter()
            .map(|s| s.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// Checks a form's anti-forgery value: `None` when it matches, else the page that says so.
    pub(crate) fn csrf_refusal(&self, sent: &str) -> Option<Response> {
        if same(sent, &self.csrf) {
            None
        } else {
            Some(page::error_page(
                self,
                StatusCode::FORBIDDEN,
                "The form has expired",
                "The form was not sent from this console session (or the session changed since). Reload the page and try again.",
            ))
        }
    }
}

fn cookie_value(headers: &HeaderMap) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, _)| *name == COOKIE)
        .map(|(_, value)| value.trim().to_string())
        .filter(|v| v.len() == 64 && v.chars().all(|c| c.is_ascii_hexdigit()))
}

/// Where a page that needs a session sends the browser without one.
fn to_login(parts: &Parts) -> Response {
    // Inside the nested router the URI lacks `/ui`: the original one has it.
    let uri = parts
        .extensions
        .get::<axum::extract::OriginalUri>()
        .map_or(&parts.uri, |o| &o.0);
    let next = uri
        .path_and_query()
        .map_or("/ui", |p| p.as_str())
        .to_string();
    let next = page::percent_encode(&next, b"/");
    Redirect::to(&format!("/ui/login?next={next}")).into_response()
}

impl FromRequestParts<AppState> for Viewer {
    type Rejection = Response;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        if state.tokens.is_disabled() {
            return Ok(Viewer {
                headers: HeaderMap::new(),
                scopes: Scope::ALL.into_iter().collect(),
                csrf: state.console.open_csrf.clone(),
                signed_in: false,
            });
        }
        let session = cookie_value(&parts.headers).and_then(|id| state.console.get(&id));
        let Some((token, scopes, csrf)) = session else {
            return Err(to_login(parts));
        };
        let mut headers = HeaderMap::new();
        let value =
            HeaderValue::from_str(&format!("Bearer {token}")).map_err(|_| to_login(parts))?;
        headers.insert(header::AUTHORIZATION, value);
        Ok(Viewer {
            headers,
            scopes,
            csrf,
            signed_in: true,
        })
    }
}

/// Where to go after logging in.
#[derive(Debug, Deserialize)]
pub(crate) struct NextQuery {
    next: Option<String>,
}

/// The login form: a token.
#[derive(Debug, Deserialize)]
pub(crate) struct LoginForm {
    token: String,
    #[serde(default)]
    next: Option<String>,
}

/// Only console pages are followed after a login (never another site).
fn safe_next(next: Option<&str>) -> &str {
    match next {
        Some(n) if n.starts_with("/ui") && !n.starts_with("/ui/login") && !n.contains("//") => n,
        _ => "/ui/jobs",
    }
}

fn login_form(next: &str, status: StatusCode, problem: Option<&str>) -> Response {
    let body = html! {
        @if let Some(problem) = problem {
            p.alert role="alert" { (problem) }
        }
        form.login method="post" action="/ui/login" {
            input type="hidden" name="next" value=(next);
            p {
                label for="token" { "API token" }
                input #token type="password" name="token" autocomplete="current-password" required autofocus;
            }
            p.hint { "A token from " code { "PROMPTOPT_API_TOKENS" } " or the server's configuration. A " code { "predict" } " token can look; an " code { "admin" } " token can also promote, start and stop." }
            button type="submit" { "Sign in" }
        }
    };
    (status, page::bare("Sign in to the promptopt console", body)).into_response()
}

/// `GET /ui/login`.
pub(crate) async fn login_page(
    State(state): State<AppState>,
    query: Result<Query<NextQuery>, axum::extract::rejection::QueryRejection>,
) -> Response {
    let next = query.ok().and_then(|Query(q)| q.next);
    let next = safe_next(next.as_deref()).to_string();
    if state.tokens.is_disabled() {
        return Redirect::to(&next).into_response();
    }
    login_form(&next, StatusCode::OK, None)
}

/// `POST /ui/login`: a known token opens a session; an unknown one gets the form back with
/// the reason.
pub(crate) async fn login(
    State(state): State<AppState>,
    form: Result<Form<LoginForm>, axum::extract::rejection::FormRejection>,
) -> Response {
    let Ok(Form(form)) = form else {
        return login_form(
            "/ui/jobs",
            StatusCode::BAD_REQUEST,
            Some("The form was incomplete: enter a token."),
        );
    };
    let next = safe_next(form.next.as_deref()).to_string();
    let token = form.token.trim();
    let scopes = (!token.is_empty())
        .then(|| state.tokens.scopes_of(token))
        .flatten();
    let Some(scopes) = scopes else {
        tokio::time::sleep(FAILED_LOGIN_DELAY).await;
        tracing::info!(target: "promptopt_server::console", "console login refused: unknown token");
        return login_form(
            &next,
            StatusCode::UNAUTHORIZED,
            Some("That token is not valid on this server. Check it and try again."),
        );
    };
    let id = state.console.open(token, scopes);
    let cookie = format!("{COOKIE}={id}; Path=/ui; HttpOnly; SameSite=Strict");
    let mut response = Redirect::to(&next).into_response();
    if let Ok(value) = HeaderValue::from_str(&cookie) {
        response.headers_mut().insert(header::SET_COOKIE, value);
    }
    response
}

/// The logout form.
#[derive(Debug, Deserialize)]
pub(crate) struct LogoutForm {
    #[serde(default)]
    csrf: String,
}

/// `POST /ui/logout`: ends the session.
pub(crate) async fn logout(
    State(state): State<AppState>,
    viewer: Viewer,
    headers: HeaderMap,
    Form(form): Form<LogoutForm>,
) -> Response {
    if let Some(page) = viewer.csrf_refusal(&form.csrf) {
        return page;
    }
    if let Some(id) = cookie_value(&headers) {
        state.console.close(&id);
    }
    let mut response = Redirect::to("/ui/login").into_response();
    let expired = format!("{COOKIE}=; Path=/ui; HttpOnly; SameSite=Strict; Max-Age=0");
    if let Ok(value) = HeaderValue::from_str(&expired) {
        response.headers_mut().insert(header::SET_COOKIE, value);
    }
    response
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn sessions_open_read_and_close() {
        let sessions = Sessions::default();
        let id = sessions.open("t0ken", [Scope::Predict].into_iter().collect());
        assert_eq!(id.len(), 64);
        let (token, scopes, csrf) = sessions.get(&id).unwrap();
        assert_eq!(token, "t0ken");
        assert!(scopes.contains(&Scope::Predict) && !scopes.contains(&Scope::Admin));
        assert_eq!(csrf.len(), 64);
        assert!(sessions.get(&random_hex()).is_none());
        sessions.close(&id);
        assert!(sessions.get(&id).is_none());
    }

    #[test]
    fn cookies_are_found_among_others_and_junk_is_ignored() {
        let mut headers = HeaderMap::new();
        let id = "a".repeat(64);
        headers.insert(
            header::COOKIE,
            HeaderValue::from_str(&format!("x=1; {COOKIE}={id}; y=2")).unwrap(),
        );
        assert_eq!(cookie_value(&headers).as_deref(), Some(id.as_str()));
        let mut bad = HeaderMap::new();
        bad.insert(
            header::COOKIE,
            HeaderValue::from_static("promptopt_session=../../etc"),
        );
        assert_eq!(cookie_value(&bad), None);
    }

    #[test]
    fn only_console_pages_are_followed_after_login() {
        assert_eq!(safe_next(Some("/ui/models/x")), "/ui/models/x");
        assert_eq!(safe_next(Some("https://evil.example/")), "/ui/jobs");
        assert_eq!(safe_next(Some("/ui//evil.example")), "/ui/jobs");
        assert_eq!(safe_next(Some("/v1/models")), "/ui/jobs");
        assert_eq!(safe_next(None), "/ui/jobs");
        assert!(same("abc", "abc") && !same("abc", "abd") && !same("abc", "ab"));
    }
}
