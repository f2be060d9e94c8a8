//! The HTTP app behind the client listener, with a short pause between the
//! listener closing and pingora's HTTP clean-up.
//!
//! When the listeners stop (SIGTERM, or SIGQUIT in a `-u` upgrade), pingora's
//! HTTP app is told to clean up and at once drops every connection still
//! waiting for its request head (`process_new_http` selects on that
//! signal). A connection the process accepted an instant before, whose
//! request bytes were still on the way, was dropped unanswered: the one
//! failed request measured in `-u` upgrades under load. This wrapper passes
//! connections through unchanged and delays that clean-up by
//! [`HEAD_GRACE`]: those connections get their request read and answered
//! (with `Connection: close`, the shutdown having begun); idle keep-alive
//! connections are still closed after the pause.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use pingora::apps::ServerApp;
use pingora::protocols::Stream;
use pingora::server::ShutdownWatch;

/// How long a connection accepted before the listener closed has to send
/// its request head. Shorter than any grace period worth configuring.
pub const HEAD_GRACE: Duration = Duration::from_secs(1);

pub struct DrainingApp<A> {
    inner: Arc<A>,
}

impl<A> DrainingApp<A> {
    pub fn new(inner: A) -> DrainingApp<A> {
        DrainingApp {
            inner: Arc::new(inner),
        }
    }
}

#[async_trait]
impl<A: ServerApp + Send + Sync + 'static> ServerApp for DrainingApp<A> {
    async fn process_new(
        self: &Arc<Self>,
        stream: Stream,
        shutdown: &ShutdownWatch,
    ) -> Option<Stream> {
        self.inner.process_new(stream, shutdown).await
    }

    async fn cleanup(&self) {
        tokio::time::sleep(HEAD_GRACE).await;
        self.inner.cleanup().await;
    }
}
