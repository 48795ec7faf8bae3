//! The console's page frame (header, navigation, sign-out), its error pages and the small
//! formatting helpers every page uses.

use axum::extract::{FromRequestParts, Query};
use axum::http::request::Parts;
use axum::http::StatusCode;
use axum::response::{Html, IntoResponse, Redirect, Response};
use maud::{html, Markup, DOCTYPE};
use serde::Deserialize;
use serde_json::Value;

use super::session::Viewer;
use crate::error::ApiError;

/// The sections of the console.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Nav {
    /// The queue.
    Jobs,
    /// The registry.
    Models,
    /// A/B experiments.
    Experiments,
    /// Live metrics and the learning loops.
    Health,
}

impl Nav {
    const ALL: [(Nav, &'static str, &'static str); 4] = [
        (Nav::Jobs, "Jobs", "/ui/jobs"),
        (Nav::Models, "Models", "/ui/models"),
        (Nav::Experiments, "Experiments", "/ui/experiments"),
        (Nav::Health, "Health", "/ui/health"),
    ];
}

fn head(title: &str) -> Markup {
    html! {
        head {
            meta charset="utf-8";
            meta name="viewport" content="width=device-width, initial-scale=1";
            title { (title) " · promptopt" }
            link rel="stylesheet" href="/ui/static/console.css";
            script src="/ui/static/console.js" defer {}
        }
    }
}

/// A full page of the console: the header with the sections and the session, then `body`
/// under an `h1` of `title`.
pub(crate) fn layout(viewer: &Viewer, nav: Option<Nav>, title: &str, body: Markup) -> Html<String> {
    let page = html! {
        (DOCTYPE)
        html lang="en" {
            (head(title))
            body {
                a.skip href="#main" { "Skip to content" }
                header.top {
                    span.brand { "promptopt" }
                    nav aria-label="Sections" {
                        ul {
                            @for (item, label, href) in Nav::ALL {
                                li {
                                    @if Some(item) == nav {
                                        a href=(href) aria-current="page" { (label) }
                                    } @else {
                                        a href=(href) { (label) }
                                    }
                                }
                            }
                        }
                    }
                    div.session {
                        @if viewer.signed_in {
                            span { "Signed in (" (viewer.scope_names()) ")" }
                            form method="post" action="/ui/logout" {
                                input type="hidden" name="csrf" value=(viewer.csrf);
                                button.link type="submit" { "Sign out" }
                            }
                        } @else {
                            span { "Authentication is off" }
                        }
                    }
                }
                main #main tabindex="-1" {
                    h1 { (title) }
                    (body)
                }
            }
        }
    };
    Html(page.into_string())
}

/// A page without the navigation (the login page).
pub(crate) fn bare(title: &str, body: Markup) -> Html<String> {
    let page = html! {
        (DOCTYPE)
        html lang="en" {
            (head(title))
            body {
                main #main.narrow {
                    h1 { (title) }
                    (body)
                }
            }
        }
    };
    Html(page.into_string())
}

/// An error as a page: its status, a heading and what went wrong in words.
pub(crate) fn error_page(
    viewer: &Viewer,
    status: StatusCode,
    title: &str,
    message: &str,
) -> Response {
    let body = html! {
        p.alert role="alert" { (message) }
        p { a href="/ui/jobs" { "Back to the console" } }
    };
    (status, layout(viewer, None, title, body)).into_response()
}

/// An error of the API underneath as a page for `viewer` (a missing token goes to the login).
pub(crate) fn render_error(viewer: &Viewer, e: ApiError) -> Response {
    let title = match e.status {
        StatusCode::NOT_FOUND => "Not found",
        StatusCode::UNAUTHORIZED => return Redirect::to("/ui/login").into_response(),
        StatusCode::FORBIDDEN => "Not allowed with this token",
        StatusCode::CONFLICT => "Not possible now",
        StatusCode::UNPROCESSABLE_ENTITY | StatusCode::BAD_REQUEST => "Invalid",
        StatusCode::SERVICE_UNAVAILABLE => "Unavailable",
        _ => "Something went wrong",
    };
    error_page(viewer, e.status, title, &e.message)
}

/// Renders `result` for `viewer`: the page, or the error as a page.
pub(crate) fn respond(viewer: &Viewer, result: Result<Response, ApiError>) -> Response {
    result.unwrap_or_else(|e| render_error(viewer, e))
}

/// The 404 page for a path the console does not have.
pub(crate) async fn not_found(
    viewer: Result<Viewer, Response>,
    axum::extract::OriginalUri(uri): axum::extract::OriginalUri,
) -> Response {
    match viewer {
        Ok(viewer) => error_page(
            &viewer,
            StatusCode::NOT_FOUND,
            "Not found",
            &format!("The console has no page `{}`.", uri.path()),
        ),
        Err(login) => login,
    }
}

/// A JSON value as short text: strings bare, `null` as a dash, the rest as JSON.
pub(crate) fn text(value: &Value) -> String {
    match value {
        Value::Null => "–".into(),
        Value::String(s) => s.clone(),
        Value::Number(n) => n
            .as_f64()
            .map_or_else(|| n.to_string(), super::chart::number),
        other => other.to_string(),
    }
}

/// A state as a badge (its name is its class, for colour).
pub(crate) fn badge(state: &str) -> Markup {
    html! { span class=(format!("badge state-{state}")) { (state) } }
}

/// Percent-encodes `text`, keeping ASCII letters, digits, `-_.~` and the bytes of `keep`.
pub(crate) fn percent_encode(text: &str, keep: &[u8]) -> String {
    let mut out = String::with_capacity(text.len());
    for b in text.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') || keep.contains(&b)
        {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Percent-encodes a path segment (`@` kept, for `name@version`).
pub(crate) fn segment(text: &str) -> String {
    percent_encode(text, b"@")
}

/// A confirmation page for an action: what will happen, a form that does it, a way back.
pub(crate) struct Confirm<'a> {
    /// The heading.
    pub(crate) title: &'a str,
    /// What will happen, in words.
    pub(crate) question: Markup,
    /// Where the form posts.
    pub(crate) action: String,
    /// Hidden fields besides the anti-forgery value.
    pub(crate) fields: Vec<(&'a str, String)>,
    /// The button's text.
    pub(crate) button: &'a str,
    /// Where "Cancel" goes.
    pub(crate) back: String,
    /// A failure of an earlier try, shown above the question.
    pub(crate) problem: Option<String>,
}

impl Confirm<'_> {
    /// The page, with `status`.
    pub(crate) fn render(self, viewer: &Viewer, nav: Nav, status: StatusCode) -> Response {
        let body = html! {
            @if let Some(problem) = &self.problem {
                p.alert role="alert" { (problem) }
            }
            div.confirm {
                p { (self.question) }
                form method="post" action=(self.action) {
                    input type="hidden" name="csrf" value=(viewer.csrf);
                    @for (name, value) in &self.fields {
                        input type="hidden" name=(name) value=(value);
                    }
                    button.primary type="submit" { (self.button) }
                    " "
                    a.button href=(self.back) { "Cancel" }
                }
            }
        };
        (status, layout(viewer, Some(nav), self.title, body)).into_response()
    }
}

/// The `?done=` code of a page reached after an action (see [`notice`]); anything else in the
/// query is ignored.
pub(crate) struct Done(pub(crate) Option<String>);

impl<S: Send + Sync> FromRequestParts<S> for Done {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        #[derive(Deserialize)]
        struct DoneQuery {
            done: Option<String>,
        }
        let done = Query::<DoneQuery>::try_from_uri(&parts.uri)
            .ok()
            .and_then(|Query(q)| q.done);
        Ok(Done(done))
    }
}

/// A notice after an action succeeded, by its code (never text from the address).
pub(crate) fn notice(code: Option<&str>) -> Option<&'static str> {
    Some(match code? {
        "promoted" => "The alias now points at this version.",
        "cancelled" => "The job was cancelled (a running job stops at its next heartbeat, keeping its best so far).",
        "started" => "The experiment started: predictions on its model are split from now on.",
        "stopped" => "The experiment stopped without a winner.",
        "experiment-promoted" => "The variant was promoted to production and the experiment ended.",
        _ => return None,
    })
}

/// The notice block, when there is one.
pub(crate) fn notice_block(code: Option<&str>) -> Markup {
    html! {
        @if let Some(text) = notice(code) {
            p.notice role="status" { (text) }
        }
    }
}
