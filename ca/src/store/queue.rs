//! The job queue in front of a store's writer thread: callers hand it a job without
//! blocking (a full queue is `Overloaded`, a stopped one `ShuttingDown`), the thread
//! takes every pending job at once (group commit), and shutdown drains it.
//!
//! Must never: block a sender (async tasks send), or drop a queued job on shutdown (the
//! thread takes them all before it ends).

use crate::store::{answered, Pending, StoreError, WriteError};
use std::sync::mpsc::{self, Receiver, SyncSender, TrySendError};
use std::sync::{Mutex, RwLock};
use std::thread::JoinHandle;
use tokio::sync::oneshot;

pub(crate) struct Queue<J> {
    tx: RwLock<Option<SyncSender<J>>>,
    thread: Mutex<Option<JoinHandle<()>>>,
}

impl<J: Send + 'static> Queue<J> {
    /// Starts the thread `name` running `run` over the queue (`capacity` pending jobs).
    pub fn start(
        name: &str,
        capacity: usize,
        run: impl FnOnce(Receiver<J>) + Send + 'static,
    ) -> Result<Queue<J>, StoreError> {
        let (tx, rx) = mpsc::sync_channel(capacity);
        let thread = std::thread::Builder::new()
            .name(name.into())
            .spawn(move || run(rx))
            .map_err(|e| StoreError::Corrupt(format!("cannot start the writer thread: {e}")))?;
        Ok(Queue {
            tx: RwLock::new(Some(tx)),
            thread: Mutex::new(Some(thread)),
        })
    }

    /// Queues `job` without waiting.
    pub fn send(&self, job: J) -> Result<(), WriteError> {
        let guard = self.tx.read().unwrap_or_else(|e| e.into_inner());
        let tx = guard.as_ref().ok_or(WriteError::ShuttingDown)?;
        tx.try_send(job).map_err(|e| match e {
            TrySendError::Full(_) => WriteError::Overloaded,
            TrySendError::Disconnected(_) => WriteError::ShuttingDown,
        })
    }

    /// Queues the job `make` builds around its answer channel; the answer, or the
    /// refusal to queue it.
    pub fn ask<T>(
        &self,
        make: impl FnOnce(oneshot::Sender<Result<T, WriteError>>) -> J,
    ) -> Pending<T> {
        let (done, wait) = oneshot::channel();
        match self.send(make(done)) {
            Ok(()) => wait,
            Err(e) => answered(Err(e)),
        }
    }

    /// Queues the job `make` builds and waits for its answer (blocking: not on an async
    /// task).
    pub fn ask_blocking<T>(
        &self,
        make: impl FnOnce(oneshot::Sender<Result<T, StoreError>>) -> J,
    ) -> Result<T, StoreError> {
        let (done, wait) = oneshot::channel();
        self.send(make(done))?;
        wait.blocking_recv()
            .map_err(|_| StoreError::Write(WriteError::ShuttingDown))?
    }

    /// Stops taking jobs, lets the thread finish the queued ones, and joins it.
    pub fn shutdown(&self) {
        stop(&self.tx, &self.thread);
    }
}

impl<J> Drop for Queue<J> {
    /// As [`Queue::shutdown`].
    fn drop(&mut self) {
        stop(&self.tx, &self.thread);
    }
}

fn stop<J>(tx: &RwLock<Option<SyncSender<J>>>, thread: &Mutex<Option<JoinHandle<()>>>) {
    tx.write().unwrap_or_else(|e| e.into_inner()).take();
    let thread = thread.lock().unwrap_or_else(|e| e.into_inner()).take();
    if let Some(t) = thread {
        let _ = t.join();
    }
}
