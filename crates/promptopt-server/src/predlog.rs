//! The prediction log: every prediction served is written to the server's database in the
//! background, in batches, so that serving never waits on a write; an outcome for a prediction
//! not yet written waits for the log to catch up.

use std::time::Duration;

use promptopt_experiments::{ExperimentStore, PredictionRecord};
use tokio::sync::{mpsc, oneshot};

/// Predictions queued for writing before `record` waits (back-pressure, never a drop).
const QUEUE: usize = 65_536;
/// Predictions written in one transaction at most.
const BATCH: usize = 512;

enum Message {
    Record(Box<PredictionRecord>),
    Flush(oneshot::Sender<()>),
}

/// The sending side of the log.
#[derive(Debug, Clone)]
pub(crate) struct PredictionLog {
    sender: mpsc::Sender<Message>,
}

impl std::fmt::Debug for Message {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Message::Record(r) => write!(f, "Record({})", r.prediction_id),
            Message::Flush(_) => f.write_str("Flush"),
        }
    }
}

impl PredictionLog {
    /// Starts the writer task over `store`.
    pub(crate) fn start(store: ExperimentStore) -> Self {
        let (sender, receiver) = mpsc::channel(QUEUE);
        tokio::spawn(writer(store, receiver));
        Self { sender }
    }

    /// Queues a prediction for writing.
    pub(crate) async fn record(&self, record: PredictionRecord) {
        if self
            .sender
            .send(Message::Record(Box::new(record)))
            .await
            .is_err()
        {
            tracing::error!("the prediction log's writer has stopped; a prediction was not logged");
        }
    }

    /// Waits until everything queued so far is written.
    pub(crate) async fn flush(&self) {
        let (tx, rx) = oneshot::channel();
        if self.sender.send(Message::Flush(tx)).await.is_ok() {
            let _ = rx.await;
        }
    }
}

async fn writer(store: ExperimentStore, mut receiver: mpsc::Receiver<Message>) {
    let mut batch = Vec::with_capacity(BATCH);
    let mut waiting = Vec::new();
    while let Some(first) = receiver.recv().await {
        let mut next = Some(first);
        while let Some(message) = next.take() {
            match message {
                Message::Record(r) => batch.push(*r),
                Message::Flush(done) => waiting.push(done),
            }
            if batch.len() < BATCH {
                next = receiver.try_recv().ok();
            }
        }
        let mut delay = Duration::from_millis(50);
        while !batch.is_empty() {
            match store.record_predictions(&batch).await {
                Ok(()) => batch.clear(),
                Err(e) => {
                    tracing::warn!(error = %e, predictions = batch.len(), "cannot log predictions; retrying");
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(Duration::from_secs(5));
                }
            }
        }
        for done in waiting.drain(..) {
            let _ = done.send(());
        }
    }
}
