//! The admin server seen from outside its thread (the HTTP API's tasks): a `Send` handle that
//! hands a request to the admin thread, where [`super::server::handle`] runs it exactly as it
//! runs one from pub/sub or the command stream, and, when another daemon owns the request's
//! partition, forwards it on `<prefix>:forward` and waits for that daemon's reply. So any
//! daemon takes any request, and it is applied once, by its partition's owner.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};

use super::client::{AdminClient, ClientError, RequestOptions};
use crate::domain::ErrorCode;
use crate::wire::{Reply, Request};

/// How many requests may wait for the admin thread at once before callers wait to hand theirs
/// over.
pub const QUEUE_DEPTH: usize = 1024;
/// How long a forwarded request keeps trying (a takeover, a partition without an owner)
/// before it is answered UNAVAILABLE; the caller retries with the same id.
pub const FORWARD_TOTAL: Duration = Duration::from_secs(30);

/// One request for the admin thread, and where its reply goes (`None`: another daemon's).
pub(super) struct Job {
    pub request: Request,
    pub reply_tx: oneshot::Sender<Option<Reply>>,
}

/// A way into the admin server from any thread or task. Cheap to clone.
#[derive(Clone)]
pub struct AdminHandle {
    jobs: mpsc::Sender<Job>,
    forwarder: Arc<AdminClient>,
}

impl std::fmt::Debug for AdminHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AdminHandle").finish_non_exhaustive()
    }
}

impl AdminHandle {
    pub(super) fn new(jobs: mpsc::Sender<Job>, forwarder: Arc<AdminClient>) -> AdminHandle {
        AdminHandle { jobs, forwarder }
    }

    /// Runs `request` (its id, channel, command and args; `replyTo` is not used) and returns
    /// its one reply: from this daemon when it owns the request's partition, else from the
    /// owner, through `<prefix>:forward`. The request's channel must be established by the
    /// caller (an API token's): it is trusted.
    ///
    /// A daemon that is stopping, or a partition nobody owns for [`FORWARD_TOTAL`], gives
    /// UNAVAILABLE (never kept: a retry with the same id is answered once it can be).
    pub async fn execute(&self, mut request: Request) -> Reply {
        request.reply_to = None;
        let id = request.id.clone();
        if super::command::is_internal(&request.command) {
            // Only daemons send these, on `<prefix>:forward`.
            return Reply::error(
                Some(id),
                ErrorCode::UnknownCommand,
                format!("unknown command '{}'", request.command),
            );
        }
        let (reply_tx, reply_rx) = oneshot::channel();
        let job = Job {
            request: request.clone(),
            reply_tx,
        };
        let stopping = || {
            Reply::error(
                Some(id.clone()),
                ErrorCode::Unavailable,
                "this daemon is stopping; retry with the same id",
            )
        };
        if self.jobs.send(job).await.is_err() {
            return stopping();
        }
        match reply_rx.await {
            Ok(Some(reply)) => return reply,
            Ok(None) => {}
            Err(_) => return stopping(),
        }
        let options = RequestOptions {
            id: Some(request.id.clone()),
            channel: request.channel.clone(),
            attempt_timeout: super::command::FORWARD_ATTEMPT,
            total_timeout: FORWARD_TOTAL,
        };
        match self
            .forwarder
            .request_with(options, &request.command, request.args)
            .await
        {
            Ok(reply) => reply,
            Err(ClientError::Timeout { waited, .. }) => Reply::error(
                Some(id),
                ErrorCode::Unavailable,
                format!(
                    "no daemon answered for this request's partition within {} s (a takeover?); retry with the same id",
                    waited.as_secs()
                ),
            ),
            Err(e) => Reply::error(
                Some(id),
                ErrorCode::Unavailable,
                format!("cannot forward the request to its partition's owner: {e}; retry with the same id"),
            ),
        }
    }
}
