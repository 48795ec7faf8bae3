#![allow(clippy::unwrap_used)]
//! `pull` against a package index served in the test: two wheels, a download cut in the middle,
//! wrong hashes.

use std::collections::HashMap;
use std::io::Write;
use std::sync::{Arc, Mutex};

use axum::extract::{Path as UrlPath, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;

use super::*;

/// What the test index serves and what it saw.
#[derive(Default)]
struct Index {
    base: String,
    /// Wheel file name -> bytes.
    wheels: HashMap<String, Vec<u8>>,
    /// Digests to announce instead of the real ones.
    wrong_digest: bool,
    /// Cut the next full download of a wheel after half its bytes.
    cut_next: bool,
    /// The `Range` headers received.
    ranges: Vec<String>,
}

type Shared = Arc<Mutex<Index>>;

fn wheel(member: &str, data: &[u8]) -> Vec<u8> {
    let mut zip = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    let options = zip::write::SimpleFileOptions::default()
        .compression_method(zip::CompressionMethod::Deflated);
    zip.start_file("pkg/__init__.py", options).unwrap();
    zip.write_all(b"").unwrap();
    zip.start_file(member, options).unwrap();
    zip.write_all(data).unwrap();
    zip.finish().unwrap().into_inner()
}

fn sha(data: &[u8]) -> String {
    hex(&Sha256::digest(data))
}

async fn listing(State(index): State<Shared>, UrlPath(package): UrlPath<String>) -> Response {
    let index = index.lock().unwrap();
    let filename = format!("{}-1.0.0-py3-none-any.whl", package.replace('-', "_"));
    let Some(bytes) = index.wheels.get(&filename) else {
        return StatusCode::NOT_FOUND.into_response();
    };
    let digest = if index.wrong_digest {
        "0".repeat(64)
    } else {
        sha(bytes)
    };
    axum::Json(serde_json::json!({
        "info": {"version": "1.0.0"},
        "releases": {"1.0.0": [
            {"filename": format!("{package}-1.0.0.tar.gz"), "packagetype": "sdist",
             "url": "http://nowhere/sdist", "digests": {"sha256": "1".repeat(64)}, "size": 1},
            {"filename": filename, "packagetype": "bdist_wheel",
             "url": format!("{}/files/{filename}", index.base),
             "digests": {"sha256": digest}, "size": bytes.len()},
        ]}
    }))
    .into_response()
}

async fn file(
    State(index): State<Shared>,
    UrlPath(name): UrlPath<String>,
    headers: HeaderMap,
) -> Response {
    let mut index = index.lock().unwrap();
    let Some(bytes) = index.wheels.get(&name).cloned() else {
        return StatusCode::NOT_FOUND.into_response();
    };
    if let Some(range) = headers.get("range").and_then(|r| r.to_str().ok()) {
        index.ranges.push(range.to_string());
        let start: usize = range
            .trim_start_matches("bytes=")
            .trim_end_matches('-')
            .parse()
            .unwrap();
        return (StatusCode::PARTIAL_CONTENT, bytes[start..].to_vec()).into_response();
    }
    if std::mem::take(&mut index.cut_next) {
        let half = bytes[..bytes.len() / 2].to_vec();
        let chunks: Vec<Result<Vec<u8>, std::io::Error>> =
            vec![Ok(half), Err(std::io::Error::other("connection lost"))];
        // The error comes a moment after the first half, so that the half reaches the client.
        let stream = futures::StreamExt::then(futures::stream::iter(chunks), |chunk| async move {
            if chunk.is_err() {
                tokio::time::sleep(std::time::Duration::from_millis(200)).await;
            }
            chunk
        });
        return Response::builder()
            .header("content-length", bytes.len())
            .body(axum::body::Body::from_stream(stream))
            .unwrap();
    }
    bytes.into_response()
}

/// Serves `index`; returns it with its base URL.
async fn serve(index: Index) -> (Shared, String) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let shared = Arc::new(Mutex::new(Index { base, ..index }));
    let app = Router::new()
        .route("/pypi/{package}/json", get(listing))
        .route("/files/{name}", get(file))
        .with_state(Arc::clone(&shared));
    tokio::spawn(async move { axum::serve(listener, app).await });
    let base = shared.lock().unwrap().base.clone();
    (shared, base)
}

/// Serves `index`, pulls `model` into a fresh folder and expects the pull to fail: the error's
/// full chain and the folder.
async fn failed_pull(model: &CatalogModel, index: Index) -> (String, tempfile::TempDir) {
    let (_index, base) = serve(index).await;
    let dir = tempfile::tempdir().unwrap();
    let error = pull(model, dir.path(), &base, false).await.unwrap_err();
    (format!("{error:#}"), dir)
}

/// A model of two wheels whose members join into `a` then `b`.
fn model(a: &[u8], b: &[u8], sha256: &str) -> (CatalogModel, Index) {
    const PARTS: &[WheelPart] = &[
        WheelPart {
            package: "tiny-part1",
            version: "1.0.0",
            member: "tiny_part1/data/part01.bin",
        },
        WheelPart {
            package: "tiny-part2",
            version: "1.0.0",
            member: "tiny_part2/data/part02.bin",
        },
    ];
    let model = CatalogModel {
        name: "tiny",
        file: "tiny.gguf",
        sha256: Box::leak(sha256.to_string().into_boxed_str()),
        bytes: (a.len() + b.len()) as u64,
        description: "a test model",
        license: "none",
        parts: PARTS,
    };
    let mut index = Index::default();
    index.wheels.insert(
        "tiny_part1-1.0.0-py3-none-any.whl".into(),
        wheel(PARTS[0].member, a),
    );
    index.wheels.insert(
        "tiny_part2-1.0.0-py3-none-any.whl".into(),
        wheel(PARTS[1].member, b),
    );
    (model, index)
}

fn data(seed: u8, len: usize) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed) ^ (i >> 7) as u8)
        .collect()
}

#[tokio::test]
async fn two_wheels_are_joined_and_checked_and_a_cut_download_resumes() {
    let (a, b) = (data(1, 300_000), data(2, 200_000));
    let joined = [a.clone(), b.clone()].concat();
    let (model, mut index) = model(&a, &b, &sha(&joined));
    index.cut_next = true;
    let (index, base) = serve(index).await;
    let dir = tempfile::tempdir().unwrap();

    let error = pull(&model, dir.path(), &base, false).await.unwrap_err();
    let message = format!("{error:#}");
    assert!(message.contains("was interrupted after"), "{message}");
    assert!(
        message.contains("run the pull again to resume"),
        "{message}"
    );
    assert!(!dir.path().join("tiny.gguf").exists());
    let part = dir
        .path()
        .join(".pull-tiny/tiny_part1-1.0.0-py3-none-any.whl.part");
    let kept = std::fs::metadata(&part).unwrap().len();
    assert!(kept > 0, "the cut download kept nothing");

    let pulled = pull(&model, dir.path(), &base, false).await.unwrap();
    let dest = dir.path().join("tiny.gguf");
    assert_eq!(pulled, Pulled::Fetched(dest.clone()));
    assert_eq!(std::fs::read(&dest).unwrap(), joined);
    assert!(!dir.path().join(".pull-tiny").exists());
    assert!(!dir.path().join("tiny.gguf.partial").exists());
    assert_eq!(index.lock().unwrap().ranges, vec![format!("bytes={kept}-")]);

    // A third pull finds it in place and downloads nothing.
    let before = index.lock().unwrap().ranges.len();
    assert_eq!(
        pull(&model, dir.path(), &base, false).await.unwrap(),
        Pulled::Present(dest)
    );
    assert_eq!(index.lock().unwrap().ranges.len(), before);
}

#[tokio::test]
async fn a_wheel_that_does_not_match_the_index_digest_is_removed() {
    let (a, b) = (data(3, 1000), data(4, 1000));
    let joined = [a.clone(), b.clone()].concat();
    let (model, mut index) = model(&a, &b, &sha(&joined));
    index.wrong_digest = true;
    let (message, dir) = failed_pull(&model, index).await;
    assert!(message.contains("but the package index says"), "{message}");
    assert!(!dir.path().join("tiny.gguf").exists());
    assert!(!dir
        .path()
        .join(".pull-tiny/tiny_part1-1.0.0-py3-none-any.whl.part")
        .exists());
}

#[tokio::test]
async fn a_joined_file_with_the_wrong_hash_installs_nothing() {
    let (a, b) = (data(5, 1000), data(6, 1000));
    let (model, index) = model(&a, &b, &"a".repeat(64));
    let (message, dir) = failed_pull(&model, index).await;
    assert!(message.contains("nothing was installed"), "{message}");
    assert!(!dir.path().join("tiny.gguf").exists());
    assert!(!dir.path().join("tiny.gguf.partial").exists());
}

#[tokio::test]
async fn a_package_or_release_the_index_lacks_is_named() {
    let (model, _) = model(b"a", b"b", &"a".repeat(64));
    let (message, _dir) = failed_pull(&model, Index::default()).await;
    assert!(message.contains("answered 404 Not Found"), "{message}");
    assert!(message.contains("/pypi/tiny-part1/json"), "{message}");

    let listing = serde_json::json!({"releases": {"0.1.0": []}});
    let message = format!(
        "{:#}",
        wheel_from_listing(&listing, &model.parts[0]).unwrap_err()
    );
    assert!(
        message.contains("`tiny-part1` has no release 1.0.0"),
        "{message}"
    );
    let listing = serde_json::json!({"releases": {"1.0.0": [
        {"filename": "../evil.whl", "packagetype": "bdist_wheel", "url": "x",
         "digests": {"sha256": "a".repeat(64)}, "size": 1}]}});
    let message = format!(
        "{:#}",
        wheel_from_listing(&listing, &model.parts[0]).unwrap_err()
    );
    assert!(message.contains("unsafe file name"), "{message}");
}
