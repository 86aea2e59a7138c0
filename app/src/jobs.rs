//! The one way the app works in the background: a job is a closure run on a thread of its own,
//! with progress, cancelling and its result handed back to whoever polls it (the UI thread, each
//! frame). A [`JobSlot`] holds the jobs of one kind: at most one runs at a time, a new one
//! cancels the one it supersedes and starts when that one has stopped, and only the newest
//! one's result is delivered.

use eframe::egui;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

/// What a running job says about itself, for a progress bar.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Progress {
    pub message: String,
    /// 0..=1, or None when the job cannot tell.
    pub fraction: Option<f32>,
}

/// Wakes the window when a job reports; does nothing without a window (`headwise render`, the
/// tests).
#[derive(Clone, Default)]
pub struct Repaint(Option<egui::Context>);

impl Repaint {
    pub fn new(ctx: &egui::Context) -> Self {
        Self(Some(ctx.clone()))
    }

    pub fn none() -> Self {
        Self(None)
    }

    pub fn request(&self) {
        if let Some(ctx) = &self.0 {
            ctx.request_repaint();
        }
    }
}

/// Marks an egui context whose frames are drawn once, offscreen (`headwise render`, PNG
/// export): caches compute there at once what a window would compute in a job.
pub fn set_inline_work(ctx: &egui::Context) {
    ctx.data_mut(|d| d.insert_temp(egui::Id::unique(INLINE_WORK), true));
}

/// Whether `ctx` was marked by [`set_inline_work`].
pub fn inline_work(ctx: &egui::Context) -> bool {
    ctx.data(|d| d.get_temp::<bool>(egui::Id::unique(INLINE_WORK)))
        .unwrap_or(false)
}

const INLINE_WORK: &str = "headwise inline work";

/// What a job's closure is handed: where to report progress and whether it was cancelled.
pub struct JobContext {
    cancel: Arc<AtomicBool>,
    progress: Arc<Mutex<Progress>>,
    repaint: Repaint,
}

impl JobContext {
    /// Whether the job was cancelled or superseded: it should stop at the next chance.
    pub fn cancelled(&self) -> bool {
        self.cancel.load(Ordering::Relaxed)
    }

    /// The flag itself, for engine calls that take one.
    pub fn cancel_flag(&self) -> &AtomicBool {
        &self.cancel
    }

    pub fn progress(&self, message: impl Into<String>, fraction: Option<f32>) {
        *self.progress.lock().unwrap_or_else(PoisonError::into_inner) = Progress {
            message: message.into(),
            fraction,
        };
        self.repaint.request();
    }
}

/// One job running on its own thread. Dropping it cancels it.
pub struct Job<T> {
    cancel: Arc<AtomicBool>,
    progress: Arc<Mutex<Progress>>,
    result: Arc<Mutex<Option<T>>>,
    finished: Arc<AtomicBool>,
}

impl<T: Send + 'static> Job<T> {
    /// Starts `work` on a thread named `name`.
    pub fn spawn(
        name: &str,
        repaint: Repaint,
        work: impl FnOnce(&JobContext) -> T + Send + 'static,
    ) -> Self {
        let job = Self {
            cancel: Arc::new(AtomicBool::new(false)),
            progress: Arc::new(Mutex::new(Progress::default())),
            result: Arc::new(Mutex::new(None)),
            finished: Arc::new(AtomicBool::new(false)),
        };
        let context = JobContext {
            cancel: job.cancel.clone(),
            progress: job.progress.clone(),
            repaint: repaint.clone(),
        };
        let (result, finished) = (job.result.clone(), job.finished.clone());
        let spawned = std::thread::Builder::new()
            .name(format!("headwise {name}"))
            .spawn(move || {
                let value = work(&context);
                *result.lock().unwrap_or_else(PoisonError::into_inner) = Some(value);
                finished.store(true, Ordering::Release);
                repaint.request();
            });
        if spawned.is_err() {
            // No thread: the job ends at once with no result, as a cancelled one would.
            job.finished.store(true, Ordering::Release);
        }
        job
    }
}

impl<T> Job<T> {
    /// The result, once, when the job has finished.
    pub fn poll(&self) -> Option<T> {
        if !self.is_finished() {
            return None;
        }
        self.result
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take()
    }

    pub fn is_finished(&self) -> bool {
        self.finished.load(Ordering::Acquire)
    }

    pub fn progress(&self) -> Progress {
        self.progress
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    pub fn cancel(&self) {
        self.cancel.store(true, Ordering::Relaxed);
    }

    /// Waits for the job to finish and returns its result (None if it had no thread).
    pub fn wait(self) -> Option<T> {
        while !self.is_finished() {
            std::thread::sleep(std::time::Duration::from_millis(2));
        }
        self.poll()
    }
}

impl<T> Drop for Job<T> {
    fn drop(&mut self) {
        self.cancel();
    }
}

type Work<T> = Box<dyn FnOnce(&JobContext) -> T + Send>;

/// The jobs of one kind, keyed by what they compute (`K`): at most one in flight; a new one
/// cancels the one in flight and waits for it to stop, so jobs never pile up while a slider is
/// dragged; a superseded job's result is dropped.
pub struct JobSlot<K, T> {
    name: &'static str,
    running: Option<(K, Job<T>)>,
    waiting: Option<(K, Work<T>, Repaint)>,
}

impl<K: Clone + PartialEq, T: Send + 'static> JobSlot<K, T> {
    pub fn new(name: &'static str) -> Self {
        Self {
            name,
            running: None,
            waiting: None,
        }
    }

    /// Starts `work` for `key`, superseding whatever the slot was doing; `repaint` is woken
    /// when it reports.
    pub fn start(
        &mut self,
        key: K,
        repaint: &Repaint,
        work: impl FnOnce(&JobContext) -> T + Send + 'static,
    ) {
        self.waiting = Some((key, Box::new(work), repaint.clone()));
        if let Some((_, job)) = &self.running {
            job.cancel();
        }
        self.advance();
    }

    /// The key of the newest job asked for, running or waiting.
    pub fn key(&self) -> Option<&K> {
        self.waiting
            .as_ref()
            .map(|(k, _, _)| k)
            .or(self.running.as_ref().map(|(k, _)| k))
    }

    /// Whether a job is running or waiting.
    pub fn busy(&self) -> bool {
        self.running.is_some() || self.waiting.is_some()
    }

    /// The newest job's progress, while one is under way.
    pub fn progress(&self) -> Option<Progress> {
        match (&self.waiting, &self.running) {
            (Some(_), _) => Some(Progress::default()),
            (None, Some((_, job))) => Some(job.progress()),
            (None, None) => None,
        }
    }

    /// Cancels the job in flight and forgets the one waiting.
    pub fn cancel(&mut self) {
        self.waiting = None;
        if let Some((_, job)) = &self.running {
            job.cancel();
        }
    }

    /// The newest job's result once it is done, with its key; starts a waiting job once the one
    /// it superseded has stopped. Call it every frame.
    pub fn poll(&mut self) -> Option<(K, T)> {
        let done = match &self.running {
            Some((_, job)) => job.is_finished(),
            None => false,
        };
        let mut delivered = None;
        if done && let Some((key, job)) = self.running.take() {
            let superseded = self.waiting.is_some() || job.cancel.load(Ordering::Relaxed);
            if let Some(value) = job.poll()
                && !superseded
            {
                delivered = Some((key, value));
            }
        }
        self.advance();
        delivered
    }

    /// Waits for the newest job and returns its result (for headless callers and tests).
    pub fn wait(&mut self) -> Option<(K, T)> {
        loop {
            if let Some(done) = self.poll() {
                return Some(done);
            }
            if !self.busy() {
                return None;
            }
            std::thread::sleep(std::time::Duration::from_millis(2));
        }
    }

    fn advance(&mut self) {
        if self.running.is_none()
            && let Some((key, work, repaint)) = self.waiting.take()
        {
            let job = Job::spawn(self.name, repaint, work);
            self.running = Some((key, job));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc::channel;

    #[test]
    fn a_jobs_result_and_progress_come_back_to_the_poller() {
        let job = Job::spawn("test", Repaint::none(), |cx| {
            cx.progress("half", Some(0.5));
            41 + 1
        });
        assert_eq!(job.wait(), Some(42));
    }

    #[test]
    fn a_new_job_cancels_the_one_in_flight_waits_for_it_and_only_its_result_arrives() {
        let mut slot = JobSlot::new("test");
        let (started, first_started) = channel();
        let (release, first_release) = channel::<()>();
        slot.start(1, &Repaint::none(), move |cx: &JobContext| {
            started.send(()).unwrap();
            // Stopping only at a cancel: as a pass over many inputs does between inputs.
            first_release.recv().unwrap();
            if cx.cancelled() { -1 } else { 1 }
        });
        first_started.recv().unwrap();
        slot.start(2, &Repaint::none(), |_: &JobContext| 2);
        assert_eq!(slot.key(), Some(&2));
        // The second does not start while the first runs.
        assert_eq!(slot.poll(), None);
        assert!(slot.busy());
        release.send(()).unwrap();
        assert_eq!(slot.wait(), Some((2, 2)));
        assert!(!slot.busy());
    }

    #[test]
    fn a_cancelled_slot_delivers_nothing() {
        let mut slot = JobSlot::new("test");
        slot.start((), &Repaint::none(), |cx: &JobContext| {
            while !cx.cancelled() {
                std::thread::sleep(std::time::Duration::from_millis(1));
            }
            7
        });
        slot.cancel();
        assert_eq!(slot.wait(), None);
    }
}
