//! The OpenAPI 3.1 document of the API, generated from the handlers and types
//! (`GET /openapi.json`; committed as `docs/openapi.json`).

use axum::http::header;
use axum::response::IntoResponse;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

use crate::learning::routes as learning;
use crate::{experiments, jobs, middleware, models, predict};

struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some(
                        "A token from `PROMPTOPT_API_TOKENS` or the server's configuration, with the scope the operation names (`admin` has them all)",
                    ))
                    .build(),
            ),
        );
    }
}

/// Every operation that can answer 401 can also answer 429: the client was refused as
/// unauthorized too often in the last minute (`max_failed_auth_per_minute`).
struct LockoutResponse;

impl Modify for LockoutResponse {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        for (path, item) in &mut openapi.paths.paths {
            // The service routes answer a locked-out client too.
            if matches!(path.as_str(), "/healthz" | "/readyz" | "/metrics") {
                continue;
            }
            let operations = [
                &mut item.get,
                &mut item.put,
                &mut item.post,
                &mut item.delete,
                &mut item.patch,
            ];
            for operation in operations.into_iter().flatten() {
                let responses = &mut operation.responses.responses;
                let Some(utoipa::openapi::RefOr::T(unauthorized)) = responses.get("401") else {
                    continue;
                };
                let mut locked = unauthorized.clone();
                locked.description = "Too many requests from this client were refused as unauthorized in the last minute; see `Retry-After`".into();
                responses.insert("429".into(), utoipa::openapi::RefOr::T(locked));
            }
        }
    }
}

#[derive(OpenApi)]
#[openapi(
    info(
        title = "promptopt",
        description = "Optimization jobs, saved models and predictions of promptopt (`promptopt serve`). Errors are `{\"error\": {\"code\", \"message\", \"field\"}}`.",
        license(name = "Apache-2.0", identifier = "Apache-2.0"),
    ),
    paths(
        jobs::submit, jobs::list, jobs::get_job, jobs::result, jobs::events, jobs::cancel,
        jobs::retry,
        models::list, models::get_model, models::get_version, models::set_alias,
        models::remove_alias, models::delete_version,
        predict::predict,
        experiments::create, experiments::list, experiments::get_experiment, experiments::start,
        experiments::stop, experiments::promote, experiments::feedback,
        learning::status, learning::history, learning::enable, learning::disable,
        learning::rollback, learning::export,
        middleware::healthz, middleware::readyz, middleware::metrics,
    ),
    components(schemas(crate::ErrorBody, crate::ErrorDetail)),
    modifiers(&BearerAuth, &LockoutResponse),
    tags(
        (name = "optimizations", description = "Queue optimization requests and follow them"),
        (name = "models", description = "Saved models, versions and aliases"),
        (name = "predictions", description = "Call saved models"),
        (name = "experiments", description = "A/B experiments between versions of a model, and outcomes"),
        (name = "learning", description = "Continuous learning: drift, retraining, deployment and rollback of a model"),
        (name = "service", description = "Health, readiness and metrics"),
    )
)]
struct ApiDoc;

/// The OpenAPI document as pretty JSON (what `GET /openapi.json` serves).
pub fn openapi_json() -> String {
    let mut doc = ApiDoc::openapi();
    doc.info.version = env!("CARGO_PKG_VERSION").to_string();
    doc.to_pretty_json()
        .unwrap_or_else(|e| format!("{{\"error\": \"{e}\"}}"))
}

/// `GET /openapi.json`.
pub(crate) async fn serve_openapi() -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "application/json")], openapi_json())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    /// The committed `docs/openapi.json` is the document the code generates (regenerate with
    /// `promptopt serve --print-openapi > docs/openapi.json`).
    #[test]
    fn the_committed_document_is_current() {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/openapi.json");
        let committed = std::fs::read_to_string(&path).unwrap_or_default();
        let generated = openapi_json();
        if std::env::var_os("PROMPTOPT_UPDATE_OPENAPI").is_some() {
            std::fs::write(&path, format!("{generated}\n")).unwrap();
            return;
        }
        assert_eq!(
            committed.trim_end(),
            generated,
            "docs/openapi.json is stale: run `PROMPTOPT_UPDATE_OPENAPI=1 cargo test -p promptopt-server openapi`"
        );
    }

    #[test]
    fn the_document_is_openapi_3_1_with_every_route() {
        let doc: serde_json::Value = serde_json::from_str(&openapi_json()).unwrap();
        assert!(doc["openapi"].as_str().unwrap().starts_with("3.1"));
        for path in [
            "/v1/optimizations",
            "/v1/jobs/{id}/events",
            "/v1/models/{name}/predict",
            "/v1/models/{name}/aliases/{alias}",
            "/metrics",
            "/v1/models/{name}/learning",
            "/v1/models/{name}/learning/export",
        ] {
            assert!(doc["paths"].get(path).is_some(), "{path}");
        }
        assert!(doc["components"]["schemas"].get("JobRecord").is_some());
    }
}
