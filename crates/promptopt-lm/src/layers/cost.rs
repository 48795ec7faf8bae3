//! Usage and cost accounting.

use std::collections::HashMap;
use std::sync::Arc;

use async_trait::async_trait;
use parking_lot::RwLock;

use crate::pricing::{ModelPrice, PriceTable};
use crate::usage::UsageTracker;
use crate::{ChatRequest, ChatResponse, Lm, LmError};

/// Prices each call and counts it in a shared [`UsageTracker`].
///
/// A model's price is resolved from the [`PriceTable`] the first time the model is seen and
/// remembered. A response that already carries a cost (a local engine, a test model) keeps it;
/// a cache hit costs 0; a model without a price reports `cost_usd = None`.
#[derive(Debug)]
pub struct CostLayer<L> {
    inner: L,
    table: PriceTable,
    resolved: RwLock<HashMap<String, Option<ModelPrice>>>,
    tracker: Arc<UsageTracker>,
}

impl<L: Lm> CostLayer<L> {
    /// Wraps `inner`, pricing with `table` and counting in `tracker`.
    pub fn new(inner: L, table: PriceTable, tracker: Arc<UsageTracker>) -> Self {
        Self {
            inner,
            table,
            resolved: RwLock::new(HashMap::new()),
            tracker,
        }
    }

    /// The tracker calls are counted in.
    pub fn tracker(&self) -> &Arc<UsageTracker> {
        &self.tracker
    }

    fn price(&self, model: &str) -> Option<ModelPrice> {
        if let Some(price) = self.resolved.read().get(model) {
            return *price;
        }
        let price = self.table.resolve(model);
        self.resolved.write().insert(model.to_owned(), price);
        price
    }
}

#[async_trait]
impl<L: Lm> Lm for CostLayer<L> {
    async fn chat(&self, request: &ChatRequest) -> Result<ChatResponse, LmError> {
        match self.inner.chat(request).await {
            Ok(mut response) => {
                if response.cache_hit {
                    response.cost_usd = Some(0.0);
                } else if response.cost_usd.is_none() {
                    response.cost_usd = self
                        .price(&request.model)
                        .map(|price| price.cost(&response.usage));
                }
                self.tracker.record(&response);
                Ok(response)
            }
            Err(error) => {
                self.tracker.record_error(&error);
                Err(error)
            }
        }
    }

    fn supports_json_schema(&self, model: &str) -> bool {
        self.inner.supports_json_schema(model)
    }

    fn context_tokens(&self, model: &str) -> Option<u64> {
        self.inner.context_tokens(model)
    }
}
