//! `promptopt jobs ...`: submit optimizations to the job queue and follow them, or with
//! `--server URL` to a `promptopt serve` API; `promptopt optimize --queue URL`: submit and wait.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use indicatif::{ProgressBar, ProgressStyle};
use promptopt_jobs::{open_queue, JobRecord, JobSpec, JobState, Priority, SharedQueue};
use promptopt_optimize::{OptimizationRequest, OptimizationResult};
use promptopt_registry::default_home;

use crate::common::print_stdout;
use crate::optimize::{default_name, report, OptimizeArgs};
use crate::remote::{Remote, ServerArgs};

/// Queue optimizations for workers and follow them.
#[derive(Debug, clap::Args)]
pub struct JobsArgs {
    /// The queue: `redis://[:PASSWORD@]HOST[:PORT][/DB]`, `rediss://...` or `sqlite:PATH`
    /// (default: `PROMPTOPT_QUEUE`, else the embedded queue `PROMPTOPT_HOME/queue.sqlite`).
    #[arg(long, global = true)]
    pub queue: Option<String>,
    /// `--server URL` and `--token`: the jobs of a `promptopt serve` API instead of a queue.
    #[command(flatten)]
    pub server: ServerArgs,
    #[command(subcommand)]
    pub command: JobsCommand,
}

/// The `jobs` verbs.
#[derive(Debug, clap::Subcommand)]
pub enum JobsCommand {
    /// Queue an optimization request (checked first; nothing is queued if it does not validate).
    Submit(SubmitArgs),
    /// A job's state, attempts and progress.
    Status {
        /// The job id.
        id: String,
        /// Print the record as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Follow a job's progress until it ends.
    Watch {
        /// The job id.
        id: String,
    },
    /// A finished job's result: the same summary as `promptopt optimize`.
    Result {
        /// The job id.
        id: String,
        /// Print the result as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Cancel a job (a running one stops within a heartbeat and keeps its best so far).
    Cancel {
        /// The job id.
        id: String,
    },
    /// List jobs, newest first.
    List {
        /// Only jobs in this state (`queued`, `running`, `succeeded`, `failed`, `cancelled`,
        /// `timed_out`, `dead`).
        #[arg(long)]
        state: Option<String>,
        /// At most this many.
        #[arg(long, default_value_t = 50)]
        limit: usize,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Queue a failed, dead, cancelled or timed-out job again.
    Retry {
        /// The job id.
        id: String,
    },
}

/// `jobs submit`.
#[derive(Debug, clap::Args)]
pub struct SubmitArgs {
    /// The request file (YAML or JSON), as `promptopt optimize` reads it.
    pub request: PathBuf,
    /// `high`, `normal` or `low`.
    #[arg(long, default_value = "normal")]
    pub priority: String,
    /// Stop the optimization after this long, keeping the best so far (`90s`, `30m`, `2h`).
    #[arg(long)]
    pub timeout: Option<String>,
    /// Attempts before the job is `dead`.
    #[arg(long, default_value_t = 3)]
    pub max_attempts: u32,
    /// The saved model's name (default: the request's `name`, else the file's stem).
    #[arg(long)]
    pub name: Option<String>,
    /// Wait for the job to end, following its progress, then print its summary.
    #[arg(long)]
    pub wait: bool,
}

/// Reads, checks and makes self-contained a request for the queue.
fn job_spec(
    path: &Path,
    name: Option<&str>,
    priority: &str,
    timeout: Option<&str>,
    max_attempts: u32,
) -> anyhow::Result<(JobSpec, OptimizationRequest)> {
    let mut request = OptimizationRequest::from_path(path)?;
    request.name = Some(default_name(name, path, &request));
    request.validate(Some(path))?;
    let spec = JobSpec::for_request(request.clone(), priority, timeout, max_attempts)
        .with_context(|| format!("Cannot queue `{}`", path.display()))?;
    Ok((spec, request))
}

async fn queue_of(url: Option<&str>) -> anyhow::Result<SharedQueue> {
    Ok(open_queue(url, &default_home()).await?)
}

fn state_line(record: &JobRecord) -> String {
    let mut line = format!(
        "{} {} ({} priority, attempt {}/{})",
        record.job_id, record.state, record.priority, record.attempts, record.max_attempts
    );
    if let Some(p) = &record.progress {
        line.push_str(&format!(" | {}", progress_text(p)));
    }
    if let Some(m) = &record.model_id {
        line.push_str(&format!(" | model {m}"));
    }
    if let Some(e) = &record.error {
        line.push_str(&format!(" | {e}"));
    }
    line
}

fn progress_text(p: &promptopt_jobs::Progress) -> String {
    let trials = match p.trials_total {
        Some(total) => format!("trial {}/{total}", p.trial),
        None => format!("trial {}", p.trial),
    };
    let best = p
        .best_score
        .map_or_else(|| "-".to_string(), |b| format!("{b:.4}"));
    format!(
        "{} {trials} | best {best} | calls {} | ${:.4}",
        if p.stage.is_empty() { "-" } else { &p.stage },
        p.lm_calls,
        p.cost_usd
    )
}

/// The record as `jobs status` prints it.
pub fn render_status(record: &JobRecord) -> String {
    let mut out = String::new();
    let mut row = |k: &str, v: String| out.push_str(&format!("{k:<12} {v}\n"));
    row("job", record.job_id.clone());
    row("name", record.name.clone().unwrap_or_else(|| "-".into()));
    row("state", record.state.to_string());
    row("priority", record.priority.to_string());
    row(
        "attempts",
        format!("{} of {}", record.attempts, record.max_attempts),
    );
    if let Some(t) = record.timeout_seconds {
        row("timeout", format!("{t} s"));
    }
    if let Some(w) = &record.worker {
        row("worker", w.clone());
    }
    if let Some(p) = &record.progress {
        row("progress", progress_text(p));
    }
    if let Some(m) = &record.model_id {
        row("model", m.clone());
    }
    if let Some(e) = &record.error {
        row("error", e.clone());
    }
    if record.cancel_requested && !record.state.is_final() {
        row("cancel", "requested".into());
    }
    out
}

/// What a followed job shows on stderr: a spinner with its state line on a terminal, otherwise
/// each new state line; and the events worth showing, above it.
struct Tracker {
    bar: Option<ProgressBar>,
    last_line: String,
}

impl Tracker {
    fn new() -> Self {
        let terminal = std::io::stderr().is_terminal();
        let bar = terminal.then(|| {
            let bar = ProgressBar::new_spinner();
            bar.set_style(
                ProgressStyle::with_template("{spinner} {elapsed:>4} {msg}")
                    .unwrap_or_else(|_| ProgressStyle::default_spinner()),
            );
            bar.enable_steady_tick(Duration::from_millis(120));
            bar
        });
        Self {
            bar,
            last_line: String::new(),
        }
    }

    /// Shows a pipeline event, when it is one worth showing.
    fn event(&self, event: &serde_json::Value) {
        if let Some(text) = event_line(event) {
            match &self.bar {
                Some(bar) => bar.println(text),
                #[allow(clippy::print_stderr)]
                None => eprintln!("{text}"),
            }
        }
    }

    /// Shows the job's record.
    fn state(&mut self, record: &JobRecord) {
        let line = state_line(record);
        match &self.bar {
            Some(bar) => bar.set_message(line.clone()),
            #[allow(clippy::print_stderr)]
            None if line != self.last_line => eprintln!("{line}"),
            None => {}
        }
        self.last_line = line;
    }

    /// Clears the spinner.
    fn finish(self) {
        if let Some(bar) = self.bar {
            bar.finish_and_clear();
        }
    }
}

/// Follows a job until it ends (a progress bar on a terminal, lines otherwise); returns the
/// final record.
async fn follow(queue: &SharedQueue, id: &str) -> anyhow::Result<JobRecord> {
    let mut tracker = Tracker::new();
    let mut after = 0u64;
    loop {
        let record = queue.get(id).await?;
        for (n, event) in queue.events(id, after, 500).await? {
            after = n;
            tracker.event(&event);
        }
        tracker.state(&record);
        if record.state.is_final() {
            tracker.finish();
            return Ok(record);
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

/// A line for the events worth showing while following a job.
fn event_line(event: &serde_json::Value) -> Option<String> {
    let body = event;
    match event.get("event")?.as_str()? {
        "stage_finished" => Some(format!(
            "{} finished in {:.1} s",
            body.get("stage")?.as_str()?,
            body.get("seconds")?.as_f64()?
        )),
        "trial_scored" => Some(format!(
            "trial {}: {:.4}, best {:.4}",
            body.get("trial")?,
            body.get("score")?.as_f64()?,
            body.get("best_so_far")?.as_f64()?
        )),
        "warning" => Some(format!("warning: {}", body.get("message")?.as_str()?)),
        _ => None,
    }
}

fn exit_for(record: &JobRecord) -> ExitCode {
    if record.state == JobState::Succeeded {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}

async fn print_result(
    queue: &SharedQueue,
    record: &JobRecord,
    json: bool,
    output: Option<PathBuf>,
) -> anyhow::Result<ExitCode> {
    let value = queue.result(&record.job_id).await?;
    report_result(record, value, json, output)
}

/// Prints a job's result (`value`, `None` when it has none) as `promptopt optimize` does; exits
/// 1 when the job did not succeed.
fn report_result(
    record: &JobRecord,
    value: Option<serde_json::Value>,
    json: bool,
    output: Option<PathBuf>,
) -> anyhow::Result<ExitCode> {
    let id = &record.job_id;
    let Some(value) = value.filter(|v| !v.is_null()) else {
        anyhow::bail!(
            "Job `{id}` has no result ({}{})",
            record.state,
            record
                .error
                .as_ref()
                .map(|e| format!(": {e}"))
                .unwrap_or_default()
        );
    };
    let result: OptimizationResult = serde_json::from_value(value)
        .with_context(|| format!("The result of job `{id}` does not parse"))?;
    let code = report(&result, record.name.as_deref(), output, json)?;
    if record.state != JobState::Succeeded {
        #[allow(clippy::print_stderr)]
        {
            eprintln!("error: Job `{id}` ended {}", record.state);
        }
        return Ok(ExitCode::from(1));
    }
    Ok(code)
}

/// Prints a record as `jobs status` does: a table, or JSON.
fn print_status(record: &JobRecord, json: bool) -> anyhow::Result<()> {
    if json {
        print_stdout(&serde_json::to_string_pretty(record)?);
    } else {
        #[allow(clippy::print_stdout)]
        {
            print!("{}", render_status(record));
        }
    }
    Ok(())
}

/// Prints records as `jobs list` does: a table, or JSON.
fn print_list(records: &[JobRecord], json: bool) -> anyhow::Result<()> {
    if json {
        print_stdout(&serde_json::to_string_pretty(records)?);
    } else if records.is_empty() {
        print_stdout("No jobs");
    } else {
        let mut out = format!(
            "{:<20} {:<10} {:<7} {:<8} {:<28} {}\n",
            "JOB", "STATE", "PRIO", "ATTEMPT", "NAME", "MODEL"
        );
        for r in records {
            out.push_str(&format!(
                "{:<20} {:<10} {:<7} {:<8} {:<28} {}\n",
                r.job_id,
                r.state.as_str(),
                r.priority.as_str(),
                format!("{}/{}", r.attempts, r.max_attempts),
                r.name.as_deref().unwrap_or("-"),
                r.model_id.as_deref().unwrap_or("-")
            ));
        }
        #[allow(clippy::print_stdout)]
        {
            print!("{out}");
        }
    }
    Ok(())
}

/// What `jobs cancel` says about the record the cancel returned.
fn cancel_text(id: &str, record: &JobRecord) -> String {
    if record.state == JobState::Cancelled {
        format!("Cancelled job {id}")
    } else {
        format!("Asked job {id} to stop; its worker stops it at the next heartbeat")
    }
}

/// What `jobs retry` says about the record queued again.
fn retry_text(record: &JobRecord) -> String {
    format!(
        "Queued job {} again ({} priority)",
        record.job_id, record.priority
    )
}

/// What `jobs submit` says on stderr once the job is queued on `place`.
#[allow(clippy::print_stderr)]
fn say_queued(record: &JobRecord, place: &str) {
    eprintln!(
        "Queued job {} ({} priority) on {place}",
        record.job_id, record.priority
    );
}

/// Runs `promptopt jobs`.
pub async fn run(args: JobsArgs) -> anyhow::Result<ExitCode> {
    if let Some(remote) = args.server.remote()? {
        if args.queue.is_some() {
            anyhow::bail!("Give `--server` or `--queue`, not both");
        }
        return run_remote(&remote, args.command).await;
    }
    let queue = queue_of(args.queue.as_deref()).await?;
    match args.command {
        JobsCommand::Submit(submit) => {
            let (spec, _) = job_spec(
                &submit.request,
                submit.name.as_deref(),
                &submit.priority,
                submit.timeout.as_deref(),
                submit.max_attempts,
            )?;
            let record = queue.submit(&spec).await?;
            say_queued(&record, &queue.url());
            print_stdout(&record.job_id);
            if submit.wait {
                let record = follow(&queue, &record.job_id).await?;
                return print_result(&queue, &record, false, None).await;
            }
            Ok(ExitCode::SUCCESS)
        }
        JobsCommand::Status { id, json } => {
            let record = queue.get(&id).await?;
            print_status(&record, json)?;
            Ok(ExitCode::SUCCESS)
        }
        JobsCommand::Watch { id } => {
            let record = follow(&queue, &id).await?;
            print_stdout(&state_line(&record));
            Ok(exit_for(&record))
        }
        JobsCommand::Result { id, json } => {
            let record = queue.get(&id).await?;
            print_result(&queue, &record, json, None).await
        }
        JobsCommand::Cancel { id } => {
            let record = queue.cancel(&id).await?;
            print_stdout(&cancel_text(&id, &record));
            Ok(ExitCode::SUCCESS)
        }
        JobsCommand::List { state, limit, json } => {
            let state = state.map(|s| s.parse::<JobState>()).transpose()?;
            let records = queue.list(state, limit).await?;
            print_list(&records, json)?;
            Ok(ExitCode::SUCCESS)
        }
        JobsCommand::Retry { id } => {
            let record = queue.retry(&id).await?;
            print_stdout(&retry_text(&record));
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// Follows a job through the server's event stream until it ends; returns the final record.
/// A stream the server closes early is opened again (resuming after the last event seen).
async fn follow_remote(remote: &Remote, id: &str) -> anyhow::Result<JobRecord> {
    const REOPENS: usize = 3;
    let mut tracker = Tracker::new();
    let mut last_id: Option<String> = None;
    for _ in 0..=REOPENS {
        let mut stream = remote
            .events(&["v1", "jobs", id, "events"], last_id.as_deref())
            .await?;
        while let Some(event) = stream.next().await? {
            if event.id.is_some() {
                last_id.clone_from(&event.id);
            }
            match event.event.as_str() {
                "job" | "end" => {
                    let record: JobRecord =
                        serde_json::from_str(&event.data).with_context(|| {
                            format!("The server sent a job record of `{id}` that does not parse")
                        })?;
                    tracker.state(&record);
                    if event.event == "end" {
                        tracker.finish();
                        return Ok(record);
                    }
                }
                "error" => {
                    let body: serde_json::Value =
                        serde_json::from_str(&event.data).unwrap_or_default();
                    let message = body
                        .pointer("/error/message")
                        .and_then(serde_json::Value::as_str)
                        .unwrap_or(event.data.as_str());
                    anyhow::bail!("The event stream of job `{id}` failed: {message}");
                }
                _ => {
                    if let Ok(value) = serde_json::from_str(&event.data) {
                        tracker.event(&value);
                    }
                }
            }
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    anyhow::bail!(
        "The server at `{}` kept closing the event stream of job `{id}` before it ended",
        remote.url()
    )
}

/// A job's result from the server, printed as `jobs result` prints it.
async fn print_remote_result(
    remote: &Remote,
    record: &JobRecord,
    json: bool,
) -> anyhow::Result<ExitCode> {
    let id = record.job_id.as_str();
    let value = match remote.get(&["v1", "jobs", id, "result"], &[]).await {
        Ok(value) => Some(value),
        Err(error) if error.status() == Some(reqwest::StatusCode::CONFLICT) => None,
        Err(error) => return Err(error.into()),
    };
    report_result(record, value, json, None)
}

/// `promptopt jobs --server URL ...`: the same verbs, output and exit codes through the API.
async fn run_remote(remote: &Remote, command: JobsCommand) -> anyhow::Result<ExitCode> {
    match command {
        JobsCommand::Submit(submit) => {
            // Checked, named and made self-contained here: the server takes no file paths.
            let (spec, _) = job_spec(
                &submit.request,
                submit.name.as_deref(),
                &submit.priority,
                submit.timeout.as_deref(),
                submit.max_attempts,
            )?;
            let mut query = vec![
                ("priority", spec.priority.as_str().to_string()),
                ("max_attempts", spec.max_attempts.to_string()),
            ];
            if let Some(timeout) = &submit.timeout {
                query.push(("timeout", timeout.clone()));
            }
            let record: JobRecord = remote
                .post(&["v1", "optimizations"], &query, Some(&spec.request))
                .await?;
            say_queued(&record, remote.url());
            print_stdout(&record.job_id);
            if submit.wait {
                let record = follow_remote(remote, &record.job_id).await?;
                return print_remote_result(remote, &record, false).await;
            }
            Ok(ExitCode::SUCCESS)
        }
        JobsCommand::Status { id, json } => {
            let record: JobRecord = remote.get(&["v1", "jobs", &id], &[]).await?;
            print_status(&record, json)?;
            Ok(ExitCode::SUCCESS)
        }
        JobsCommand::Watch { id } => {
            let record = follow_remote(remote, &id).await?;
            print_stdout(&state_line(&record));
            Ok(exit_for(&record))
        }
        JobsCommand::Result { id, json } => {
            let record: JobRecord = remote.get(&["v1", "jobs", &id], &[]).await?;
            print_remote_result(remote, &record, json).await
        }
        JobsCommand::Cancel { id } => {
            let record: JobRecord = remote
                .post(&["v1", "jobs", &id, "cancel"], &[], None)
                .await?;
            print_stdout(&cancel_text(&id, &record));
            Ok(ExitCode::SUCCESS)
        }
        JobsCommand::List { state, limit, json } => {
            let state = state.map(|s| s.parse::<JobState>()).transpose()?;
            let mut query = vec![("limit", limit.to_string())];
            if let Some(state) = state {
                query.push(("state", state.as_str().to_string()));
            }
            #[derive(serde::Deserialize)]
            struct JobList {
                jobs: Vec<JobRecord>,
            }
            let list: JobList = remote.get(&["v1", "jobs"], &query).await?;
            print_list(&list.jobs, json)?;
            Ok(ExitCode::SUCCESS)
        }
        JobsCommand::Retry { id } => {
            let record: JobRecord = remote
                .post(&["v1", "jobs", &id, "retry"], &[], None)
                .await?;
            print_stdout(&retry_text(&record));
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// `promptopt optimize --queue URL REQUEST`: submits the (already checked) request as a job,
/// follows it and prints the same summary as a local run.
pub async fn optimize_on_queue(
    args: &OptimizeArgs,
    mut request: OptimizationRequest,
    url: &str,
) -> anyhow::Result<ExitCode> {
    request
        .inline_data()
        .with_context(|| format!("Reading the datasets of `{}`", args.request.display()))?;
    let queue = queue_of(Some(url)).await?;
    let spec = JobSpec {
        priority: Priority::Normal,
        ..JobSpec::new(serde_json::to_value(&request)?)
    };
    let record = queue.submit(&spec).await?;
    #[allow(clippy::print_stderr)]
    {
        eprintln!(
            "Queued job {} on {}; waiting for a worker",
            record.job_id,
            queue.url()
        );
    }
    let record = follow(&queue, &record.job_id).await?;
    print_result(&queue, &record, args.json, args.output.clone()).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use promptopt_core::Event;

    #[test]
    fn stored_events_become_progress_lines() {
        let line = |event: Event| event_line(&serde_json::to_value(event).unwrap_or_default());
        assert_eq!(
            line(Event::StageFinished {
                stage: "baseline".into(),
                seconds: 1.25
            })
            .as_deref(),
            Some("baseline finished in 1.2 s")
        );
        assert_eq!(
            line(Event::Warning {
                message: "slow".into()
            })
            .as_deref(),
            Some("warning: slow")
        );
        assert_eq!(
            event_line(&serde_json::json!({"event": "run_started", "name": "x"})),
            None
        );
    }
}
