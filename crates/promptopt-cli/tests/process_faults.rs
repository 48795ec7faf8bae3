//! Processes that die and disks that fill: `kill -9` of `promptopt optimize` in the middle of its
//! search, then the same command again, repeats no more than the calls that were in flight and
//! saves one whole model; a disk that fills while a model is saved gives a clear error, leaves
//! no partial version and keeps the previous one.
#![allow(clippy::unwrap_used)]

use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use promptopt_lm::testing::{FixedReplyServer, Reply};
use serde_json::Value;

const CONCURRENCY: u64 = 2;

/// Labels by keyword, each reply after `delay`, so that a run lasts long enough to be killed.
fn lm(delay: Duration) -> FixedReplyServer {
    FixedReplyServer::with_handler(move |request| {
        let last = request.messages.last().map_or("", |m| m.content.as_str());
        Reply::text(if last.contains("bad") || last.contains("dull") {
            "negative"
        } else {
            "positive"
        })
        .after(delay)
    })
    .unwrap()
}

fn request(name: &str) -> String {
    let mut text = format!(
        "name: {name}\nevaluation_metric: exact_match\nalgorithm: bootstrapfewshot_random_search\n\
         model: openai/test-model\ninput_keys: [text]\noutput_keys: [label]\nseed: 5\n\
         algorithm_config: {{max_bootstrapped_demos: 2, max_labeled_demos: 2, num_candidate_programs: 6}}\n\
         training_examples:\n"
    );
    let words = ["good", "bad", "great", "dull", "fine", "awful"];
    for i in 0..24 {
        let word = words[i % words.len()];
        let label = if matches!(word, "bad" | "dull") {
            "negative"
        } else {
            "positive"
        };
        text.push_str(&format!(
            "  - {{text: \"a {word} film, take {i}\", label: {label}}}\n"
        ));
    }
    text
}

fn command(home: &Path, lm_url: &str, args: &[&str]) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_promptopt"));
    command
        .args(args)
        .env("PROMPTOPT_HOME", home)
        .env("OPENAI_BASE_URL", lm_url)
        .env("OPENAI_API_KEY", "sk-test")
        .env("DISABLE_MLFLOW", "1")
        .env_remove("MLFLOW_TRACKING_URI")
        .env_remove("PROMPTOPT_QUEUE")
        .env_remove("PROMPTOPT_SERVER");
    command
}

fn optimize(home: &Path, lm_url: &str, file: &Path) -> Command {
    let concurrency = CONCURRENCY.to_string();
    command(
        home,
        lm_url,
        &[
            "optimize",
            file.to_str().unwrap(),
            "--json",
            "--concurrency",
            &concurrency,
        ],
    )
}

fn versions(home: &Path, name: &str) -> Vec<String> {
    let dir = home.join("registry").join(name);
    let Ok(entries) = std::fs::read_dir(&dir) else {
        return Vec::new();
    };
    let mut names: Vec<String> = entries
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.chars().next().is_some_and(|c| c.is_ascii_digit()))
        .collect();
    names.sort();
    names
}

#[test]
fn a_killed_optimization_run_again_repeats_only_the_calls_in_flight() {
    let delay = Duration::from_millis(15);
    // The uninterrupted run: how many calls the whole run makes.
    let server = lm(delay);
    let home = tempfile::tempdir().unwrap();
    let file = home.path().join("r.yaml");
    std::fs::write(&file, request("killed")).unwrap();
    let out = optimize(home.path(), &server.base_url(), &file)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let whole = server.requests_served();
    let first: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(whole >= 40, "{whole} calls");

    // Killed at three points of its run, then run again with the same cache.
    for share in [0.2, 0.5, 0.8] {
        let server = lm(delay);
        let home = tempfile::tempdir().unwrap();
        std::fs::write(home.path().join("r.yaml"), request("killed")).unwrap();
        let file = home.path().join("r.yaml");
        let mut child = optimize(home.path(), &server.base_url(), &file)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let target = (whole as f64 * share) as u64;
        let started = Instant::now();
        while server.requests_served() < target {
            assert!(started.elapsed() < Duration::from_secs(120));
            std::thread::sleep(Duration::from_millis(2));
        }
        Command::new("kill")
            .args(["-KILL", &child.id().to_string()])
            .status()
            .unwrap();
        child.wait().unwrap();
        let before = server.requests_served();
        assert!(before < whole, "the run ended before it was killed");
        // Nothing half-saved: no version, and listing the registry works.
        assert_eq!(versions(home.path(), "killed"), Vec::<String>::new());
        let listed = command(home.path(), &server.base_url(), &["models", "list"])
            .output()
            .unwrap();
        assert!(listed.status.success(), "{listed:?}");

        let out: Output = optimize(home.path(), &server.base_url(), &file)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let again: Value = serde_json::from_slice(&out.stdout).unwrap();
        let total = server.requests_served();
        assert!(
            total <= whole + CONCURRENCY,
            "killed at {share}: {before} calls before the kill, {total} in all, {whole} uninterrupted"
        );
        assert_eq!(again["model_id"], "killed@1.0.0");
        assert_eq!(
            again["optimized_metrics"]["score"],
            first["optimized_metrics"]["score"]
        );
        assert_eq!(again["optimized_config"], first["optimized_config"]);
        assert_eq!(versions(home.path(), "killed"), ["1.0.0"]);
    }
}

/// A filesystem of `kib` KiB at a fresh mount point, or `None` where tmpfs cannot be mounted
/// (not root); the caller unmounts it.
fn small_disk(kib: u64) -> Option<tempfile::TempDir> {
    let dir = tempfile::tempdir().unwrap();
    let mounted = Command::new("mount")
        .args(["-t", "tmpfs", "-o", &format!("size={kib}k"), "tmpfs"])
        .arg(dir.path())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    mounted.then_some(dir)
}

fn unmount(dir: &Path) {
    let _ = Command::new("umount").arg(dir).status();
}

#[test]
fn a_disk_that_fills_while_saving_keeps_the_previous_version() {
    let Some(disk) = small_disk(1024) else {
        // Mounting needs root; CI runs as root and must run this test.
        assert!(
            std::env::var("PROMPTOPT_CI").is_err(),
            "a tmpfs could not be mounted; CI must run this test as root"
        );
        return;
    };
    unmount_later(disk.path(), || fill_while_saving(disk.path()));
}

fn fill_while_saving(disk: &Path) {
    let home = disk.join("home");
    std::fs::create_dir(&home).unwrap();
    let server = lm(Duration::ZERO);
    let file = disk.join("r.yaml");
    std::fs::write(&file, request("full")).unwrap();
    let run = || {
        command(
            &home,
            &server.base_url(),
            &["optimize", file.to_str().unwrap(), "--json", "--no-cache"],
        )
        .output()
        .unwrap()
    };
    let first = run();
    assert!(
        first.status.success(),
        "{}",
        String::from_utf8_lossy(&first.stderr)
    );
    assert_eq!(versions(&home, "full"), ["1.0.0"]);

    // Fill the disk to the last byte.
    let filler = disk.join("filler");
    let mut f = std::fs::File::create(&filler).unwrap();
    let block = vec![0u8; 4096];
    while std::io::Write::write_all(&mut f, &block).is_ok() {}
    while std::io::Write::write_all(&mut f, &[0u8]).is_ok() {}
    drop(f);

    let out = run();
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(
        !out.status.success(),
        "a save on a full disk succeeded: {err}"
    );
    assert!(err.contains("No space left on device"), "{err}");
    assert!(!err.contains("panicked"), "{err}");
    // The previous version is intact and nothing of the new one is left.
    assert_eq!(versions(&home, "full"), ["1.0.0"]);
    let leftovers: Vec<String> = std::fs::read_dir(home.join("registry").join("full"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with(".tmp"))
        .collect();
    assert_eq!(leftovers, Vec::<String>::new());
    std::fs::remove_file(&filler).unwrap();
    let shown = command(&home, &server.base_url(), &["models", "show", "full@1.0.0"])
        .output()
        .unwrap();
    assert!(shown.status.success(), "{shown:?}");
}

/// Runs `checks`, then unmounts `dir` whether they passed or not.
fn unmount_later(dir: &Path, checks: impl FnOnce()) {
    let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(checks));
    unmount(dir);
    if let Err(panic) = outcome {
        std::panic::resume_unwind(panic);
    }
}
