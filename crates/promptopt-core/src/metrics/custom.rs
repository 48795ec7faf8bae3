//! User metrics: a closure ([`FnMetric`]) or an external command ([`CommandMetric`]).

use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use serde_json::{json, Value};

use super::common::info;
use crate::{value_to_text, CoreError, Example, Metric, MetricInfo, Prediction, Score, Trace};

/// A metric from a closure `(example, prediction) -> Score`.
///
/// ```
/// use promptopt_core::metrics::FnMetric;
/// use promptopt_core::{Example, Metric, Prediction, Score, Trace};
///
/// let short = FnMetric::new("short_answer", true, |_example: &Example, prediction: &Prediction| {
///     let words = prediction.text("answer").unwrap_or_default().split_whitespace().count();
///     Score::new(if words <= 5 { 1.0 } else { 0.0 })
/// });
/// let prediction = Prediction { outputs: Example::new().with("answer", "Paris") };
/// assert_eq!(short.score(&Example::new(), &prediction, &Trace::default()).value, 1.0);
/// ```
pub struct FnMetric<F> {
    info: MetricInfo,
    f: F,
}

impl<F> FnMetric<F>
where
    F: Fn(&Example, &Prediction) -> Score + Send + Sync,
{
    /// A metric named `name` whose range is 0–1 (change it with [`FnMetric::with_range`]).
    pub fn new(name: impl Into<String>, higher_is_better: bool, f: F) -> Self {
        Self {
            info: info(&name.into(), higher_is_better, 0.0, 1.0),
            f,
        }
    }

    /// Builder: sets the range of values.
    pub fn with_range(mut self, min: f64, max: f64) -> Self {
        self.info.min = min;
        self.info.max = max;
        self
    }
}

impl<F> std::fmt::Debug for FnMetric<F> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FnMetric")
            .field("info", &self.info)
            .finish()
    }
}

impl<F> Metric for FnMetric<F>
where
    F: Fn(&Example, &Prediction) -> Score + Send + Sync,
{
    fn info(&self) -> MetricInfo {
        self.info.clone()
    }

    fn score(&self, example: &Example, prediction: &Prediction, _trace: &Trace) -> Score {
        (self.f)(example, prediction)
    }
}

/// How long [`CommandMetric`] waits for a reply line by default.
pub const DEFAULT_COMMAND_TIMEOUT: Duration = Duration::from_secs(60);

/// How much of the command's standard error is kept for error messages.
const STDERR_TAIL_CHARS: usize = 2000;

/// A metric computed by an external command that stays running.
///
/// The command is started once. For each prediction it receives one JSON line on standard input,
/// `{"example": {...}, "prediction": {...}}`, and answers with one line on standard output: a
/// bare number, or `{"score": 0.5, "feedback": "..."}` (`feedback` optional). Its standard error
/// is kept (the last 2,000 characters) for error messages. If the command exits it is started
/// again on the next call.
///
/// Calls are serialised by a mutex and use blocking pipes: [`Metric::is_blocking`] is `true`,
/// and async callers must run [`Metric::score`] inside `tokio::task::spawn_blocking` (or an
/// equivalent) rather than on the runtime's worker threads.
///
/// [`Metric::try_score`] (what the evaluator calls) restarts a process that died once in the
/// metric's life and asks again; a second death, a reply that is neither a number nor a score
/// object, or no reply within the timeout is an error that stops the evaluation with the reason.
/// [`Metric::score`] instead scores such a call as the worst value of the range, with the error
/// as feedback; [`CommandMetric::failures`] counts such calls and [`CommandMetric::last_error`]
/// returns the latest.
pub struct CommandMetric {
    info: MetricInfo,
    program: String,
    args: Vec<String>,
    dir: Option<PathBuf>,
    display: String,
    timeout: Duration,
    process: Mutex<Option<Running>>,
    failures: AtomicUsize,
    restarts: AtomicUsize,
    last_error: Mutex<Option<String>>,
}

/// Why one call failed: the process is gone (it may be restarted), or it answered badly.
enum CallError {
    Died(CoreError),
    Failed(CoreError),
}

struct Running {
    child: Child,
    stdin: ChildStdin,
    lines: Receiver<std::io::Result<String>>,
    stderr_tail: Arc<Mutex<String>>,
}

impl Drop for Running {
    fn drop(&mut self) {
        // The process may already have exited; either way it is reaped.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl CommandMetric {
    /// Starts `program` with `args`; fails at once when it cannot be started. Higher is better
    /// and the range is 0–1 unless changed with the builders.
    pub fn new(
        name: impl Into<String>,
        program: impl Into<String>,
        args: Vec<String>,
    ) -> Result<Self, CoreError> {
        Self::start(name.into(), program.into(), args, None)
    }

    fn start(
        name: String,
        program: String,
        args: Vec<String>,
        dir: Option<PathBuf>,
    ) -> Result<Self, CoreError> {
        let mut display = program.clone();
        for arg in &args {
            display.push(' ');
            display.push_str(arg);
        }
        let metric = Self {
            info: info(&name, true, 0.0, 1.0),
            program,
            args,
            dir,
            display,
            timeout: DEFAULT_COMMAND_TIMEOUT,
            process: Mutex::new(None),
            failures: AtomicUsize::new(0),
            restarts: AtomicUsize::new(0),
            last_error: Mutex::new(None),
        };
        let running = metric.spawn()?;
        *lock(&metric.process) = Some(running);
        Ok(metric)
    }

    /// Runs a command line through `sh -c`.
    pub fn shell(name: impl Into<String>, command_line: &str) -> Result<Self, CoreError> {
        let mut metric = Self::new(name, "sh", vec!["-c".to_string(), command_line.to_string()])?;
        metric.display = command_line.to_string();
        Ok(metric)
    }

    /// Runs a command line through `sh -c` in the folder `dir` (a request's folder, so that
    /// `python3 metrics/score.py` is found beside the request file).
    pub fn shell_in(
        name: impl Into<String>,
        command_line: &str,
        dir: &Path,
    ) -> Result<Self, CoreError> {
        let mut metric = Self::start(
            name.into(),
            "sh".to_string(),
            vec!["-c".to_string(), command_line.to_string()],
            Some(dir.to_path_buf()),
        )?;
        metric.display = command_line.to_string();
        Ok(metric)
    }

    /// Builder: whether a higher value is better.
    pub fn with_higher_is_better(mut self, higher_is_better: bool) -> Self {
        self.info.higher_is_better = higher_is_better;
        self
    }

    /// Builder: the range of values.
    pub fn with_range(mut self, min: f64, max: f64) -> Self {
        self.info.min = min;
        self.info.max = max;
        self
    }

    /// Builder: how long to wait for each reply.
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// How many calls have failed so far.
    pub fn failures(&self) -> usize {
        self.failures.load(Ordering::Relaxed)
    }

    /// The latest failure's message, if any.
    pub fn last_error(&self) -> Option<String> {
        lock(&self.last_error).clone()
    }

    fn error(&self, message: impl Into<String>) -> CoreError {
        CoreError::MetricCommand {
            command: self.display.clone(),
            message: message.into(),
        }
    }

    fn spawn(&self) -> Result<Running, CoreError> {
        let mut command = Command::new(&self.program);
        if let Some(dir) = &self.dir {
            command.current_dir(dir);
        }
        let mut child = command
            .args(&self.args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| self.error(format!("cannot start it: {e}")))?;
        let (Some(stdin), Some(stdout), Some(mut stderr)) =
            (child.stdin.take(), child.stdout.take(), child.stderr.take())
        else {
            let _ = child.kill();
            let _ = child.wait();
            return Err(self.error("its standard streams could not be opened"));
        };
        let (sender, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                if sender.send(line).is_err() {
                    break;
                }
            }
        });
        let stderr_tail = Arc::new(Mutex::new(String::new()));
        let tail = Arc::clone(&stderr_tail);
        std::thread::spawn(move || {
            let mut buffer = [0u8; 4096];
            while let Ok(n) = stderr.read(&mut buffer) {
                if n == 0 {
                    break;
                }
                let mut text = lock(&tail);
                text.push_str(&String::from_utf8_lossy(&buffer[..n]));
                let len = text.chars().count();
                if len > STDERR_TAIL_CHARS {
                    *text = text.chars().skip(len - STDERR_TAIL_CHARS).collect();
                }
            }
        });
        Ok(Running {
            child,
            stdin,
            lines,
            stderr_tail,
        })
    }

    /// Why the process is gone: its exit status and the end of its standard error.
    fn exit_reason(running: &mut Running) -> String {
        // Give the stderr reader a moment to collect the last words.
        std::thread::sleep(Duration::from_millis(20));
        let status = match running.child.try_wait() {
            Ok(Some(status)) => format!("it exited ({status})"),
            _ => "it closed its output".to_string(),
        };
        let stderr = lock(&running.stderr_tail).trim().to_string();
        if stderr.is_empty() {
            status
        } else {
            format!("{status}; its standard error ends with: {stderr}")
        }
    }

    /// One call to the running process (started first when it is not running).
    fn call(&self, example: &Example, prediction: &Prediction) -> Result<Score, CallError> {
        let request = json!({"example": example, "prediction": prediction.outputs});
        let mut line = request.to_string();
        line.push('\n');
        let mut process = lock(&self.process);
        if process.is_none() {
            *process = Some(self.spawn().map_err(CallError::Failed)?);
        }
        let Some(running) = process.as_mut() else {
            return Err(CallError::Failed(self.error("it is not running")));
        };
        let write = running
            .stdin
            .write_all(line.as_bytes())
            .and_then(|()| running.stdin.flush());
        if let Err(e) = write {
            let reason = Self::exit_reason(running);
            *process = None;
            return Err(CallError::Died(
                self.error(format!("cannot write to it ({e}): {reason}")),
            ));
        }
        let reply = match running.lines.recv_timeout(self.timeout) {
            Ok(Ok(reply)) => reply,
            Ok(Err(e)) => {
                *process = None;
                return Err(CallError::Died(
                    self.error(format!("cannot read its output: {e}")),
                ));
            }
            Err(RecvTimeoutError::Timeout) => {
                *process = None;
                return Err(CallError::Failed(self.error(format!(
                    "no reply within {} s; it was stopped",
                    self.timeout.as_secs_f64()
                ))));
            }
            Err(RecvTimeoutError::Disconnected) => {
                let reason = Self::exit_reason(running);
                *process = None;
                return Err(CallError::Died(self.error(format!("no reply: {reason}"))));
            }
        };
        drop(process);
        parse_metric_reply(&reply).map_err(|message| CallError::Failed(self.error(message)))
    }

    /// How many times the process was restarted after dying.
    pub fn restarts(&self) -> usize {
        self.restarts.load(Ordering::Relaxed)
    }

    fn worst(&self) -> f64 {
        if self.info.higher_is_better {
            self.info.min
        } else {
            self.info.max
        }
    }
}

/// Parses one reply line of the custom-metric protocol: a number, or
/// `{"score": number, "feedback": ...}`; anything else is an error naming what was answered.
///
/// ```
/// use promptopt_core::metrics::parse_metric_reply;
///
/// assert_eq!(parse_metric_reply("0.5").unwrap().value, 0.5);
/// let scored = parse_metric_reply(r#"{"score": 1, "feedback": "right"}"#).unwrap();
/// assert_eq!(scored.feedback.as_deref(), Some("right"));
/// assert!(parse_metric_reply("NaN").is_err());
/// ```
pub fn parse_metric_reply(reply: &str) -> Result<Score, String> {
    let shown: String = reply.trim().chars().take(200).collect();
    let bad = || {
        format!(
            "it answered `{shown}`; expected a number or {{\"score\": <number>, \"feedback\": \"...\"}}"
        )
    };
    let value: Value = serde_json::from_str(reply.trim()).map_err(|_| bad())?;
    let (score, feedback) = match &value {
        Value::Number(n) => (n.as_f64(), None),
        Value::Object(map) => {
            let score = map.get("score").and_then(Value::as_f64);
            let feedback = match map.get("feedback") {
                None | Some(Value::Null) => None,
                Some(other) => Some(value_to_text(other)),
            };
            (score, feedback)
        }
        _ => (None, None),
    };
    match score {
        Some(value) if value.is_finite() => Ok(Score { value, feedback }),
        _ => Err(bad()),
    }
}

impl std::fmt::Debug for CommandMetric {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CommandMetric")
            .field("info", &self.info)
            .field("command", &self.display)
            .field("timeout", &self.timeout)
            .finish()
    }
}

impl Metric for CommandMetric {
    fn info(&self) -> MetricInfo {
        self.info.clone()
    }

    fn score(&self, example: &Example, prediction: &Prediction, trace: &Trace) -> Score {
        match self.try_score(example, prediction, trace) {
            Ok(score) => score,
            Err(e) => {
                self.failures.fetch_add(1, Ordering::Relaxed);
                let message = e.to_string();
                *lock(&self.last_error) = Some(message.clone());
                Score::with_feedback(self.worst(), message)
            }
        }
    }

    fn try_score(
        &self,
        example: &Example,
        prediction: &Prediction,
        _trace: &Trace,
    ) -> Result<Score, CoreError> {
        match self.call(example, prediction) {
            Ok(score) => Ok(score),
            Err(CallError::Failed(error)) => Err(error),
            Err(CallError::Died(error)) => {
                if self.restarts.fetch_add(1, Ordering::Relaxed) > 0 {
                    return Err(CoreError::MetricCommand {
                        command: self.display.clone(),
                        message: format!(
                            "it died again after one restart; {}",
                            match error {
                                CoreError::MetricCommand { message, .. } => message,
                                other => other.to_string(),
                            }
                        ),
                    });
                }
                match self.call(example, prediction) {
                    Ok(score) => Ok(score),
                    Err(CallError::Died(error) | CallError::Failed(error)) => Err(error),
                }
            }
        }
    }

    fn is_blocking(&self) -> bool {
        true
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn pred(answer: &str) -> Prediction {
        Prediction {
            outputs: Example::new().with("answer", answer),
        }
    }

    #[test]
    fn fn_metric_scores_with_the_closure() {
        let m = FnMetric::new("len", true, |_: &Example, p: &Prediction| {
            Score::new(p.text("answer").unwrap_or_default().len() as f64)
        })
        .with_range(0.0, 100.0);
        assert_eq!(m.info().max, 100.0);
        assert_eq!(
            m.score(&Example::new(), &pred("abc"), &Trace::default())
                .value,
            3.0
        );
        assert!(!m.is_blocking());
    }

    #[test]
    fn parses_replies() {
        assert_eq!(parse_metric_reply("0.5").unwrap(), Score::new(0.5));
        assert_eq!(
            parse_metric_reply("{\"score\": 1, \"feedback\": \"good\"}").unwrap(),
            Score::with_feedback(1.0, "good")
        );
        let err = parse_metric_reply("hello").unwrap_err();
        assert!(
            err.starts_with("it answered `hello`; expected a number"),
            "{err}"
        );
        assert!(parse_metric_reply("{\"feedback\": \"x\"}").is_err());
    }

    #[cfg(unix)]
    #[test]
    fn command_metric_keeps_one_process_and_reads_lines() {
        // Replies with the length of each request line, then a bad line, then exits.
        let script = "n=0; while read -r line; do n=$((n+1)); \
            if [ $n -eq 3 ]; then echo oops; elif [ $n -eq 4 ]; then echo gone >&2; exit 3; \
            else echo \"{\\\"score\\\": $n, \\\"feedback\\\": \\\"call $n\\\"}\"; fi; done";
        let m = CommandMetric::shell("calls", script)
            .unwrap()
            .with_range(0.0, 10.0);
        assert!(m.is_blocking());
        let e = Example::new().with("answer", "x");
        let s1 = m.score(&e, &pred("a"), &Trace::default());
        let s2 = m.score(&e, &pred("b"), &Trace::default());
        assert_eq!(s1, Score::with_feedback(1.0, "call 1"));
        assert_eq!(s2, Score::with_feedback(2.0, "call 2"));
        let err = m
            .try_score(&e, &pred("c"), &Trace::default())
            .unwrap_err()
            .to_string();
        assert!(err.contains("it answered `oops`"), "{err}");
        // The fourth line kills it: it is restarted once and answers the same request afresh.
        let s4 = m.score(&e, &pred("d"), &Trace::default());
        assert_eq!(s4, Score::with_feedback(1.0, "call 1"));
        assert_eq!(m.restarts(), 1);
        assert_eq!(m.failures(), 0);
    }

    #[cfg(unix)]
    #[test]
    fn a_command_that_dies_twice_stops_with_the_reason() {
        let m = CommandMetric::shell("dies", "read -r line; echo bye >&2; exit 4").unwrap();
        let e = Example::new().with("answer", "x");
        let err = m
            .try_score(&e, &pred("a"), &Trace::default())
            .unwrap_err()
            .to_string();
        // Restarted once; the restarted process died too.
        assert!(err.contains("no reply: it exited"), "{err}");
        let err = m
            .try_score(&e, &pred("b"), &Trace::default())
            .unwrap_err()
            .to_string();
        assert!(err.contains("died again after one restart"), "{err}");
        assert!(err.contains("bye"), "{err}");
    }

    #[test]
    fn missing_command_is_a_clear_error() {
        let err = CommandMetric::new("m", "/nonexistent/promptopt-metric", vec![])
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with(
                "Metric command `/nonexistent/promptopt-metric` failed: cannot start it"
            ),
            "{err}"
        );
    }

    #[cfg(unix)]
    #[test]
    fn command_metric_sends_example_and_prediction() {
        // Echo the request back as feedback.
        let m = CommandMetric::shell(
            "echo",
            "while read -r line; do printf '{\"score\": 1, \"feedback\": %s}\\n' \"$line\"; done",
        )
        .unwrap();
        let e = Example::new().with("question", "q");
        let s = m.try_score(&e, &pred("a"), &Trace::default()).unwrap();
        assert_eq!(
            s.feedback.unwrap(),
            "{\"example\":{\"question\":\"q\"},\"prediction\":{\"answer\":\"a\"}}"
        );
    }
}
