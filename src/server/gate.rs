//! [`Gate`]: part of a task's work polled only when its own waker fired.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::Context;

use futures_util::task::AtomicWaker;

/// Part of a task's work that is polled only when its own waker fired (or
/// it was opened by hand), not at every wake-up of the task: the
/// connection itself (not its streams), the watchers, and the timer of an
/// HTTP/1.1 connection's deadlines.
pub(super) struct Gate {
    flag: Arc<GateFlag>,
    waker: std::task::Waker,
}

impl Gate {
    /// Open, so the first pass polls what is behind it.
    pub(super) fn new() -> Self {
        Self::with(true)
    }

    /// Closed, for what has nothing to be polled for yet.
    pub(super) fn closed() -> Self {
        Self::with(false)
    }

    fn with(open: bool) -> Self {
        let flag = Arc::new(GateFlag { woken: AtomicBool::new(open), task: AtomicWaker::new() });
        let waker = futures_util::task::waker(Arc::clone(&flag));
        Gate { flag, waker }
    }

    /// The task to wake when this gate's waker fires.
    pub(super) fn register(&self, cx: &Context<'_>) {
        self.flag.task.register(cx.waker());
    }

    /// Whether to poll what is behind the gate now; closes it.
    pub(super) fn take(&self) -> bool {
        self.flag.woken.swap(false, Ordering::AcqRel)
    }

    pub(super) fn is_open(&self) -> bool {
        self.flag.woken.load(Ordering::Acquire)
    }

    /// Have the next pass poll what is behind the gate.
    pub(super) fn open(&self) {
        self.flag.woken.store(true, Ordering::Release);
    }

    /// The context to poll what is behind the gate with.
    pub(super) fn context(&self) -> Context<'_> {
        Context::from_waker(&self.waker)
    }
}

struct GateFlag {
    woken: AtomicBool,
    task: AtomicWaker,
}

impl futures_util::task::ArcWake for GateFlag {
    fn wake_by_ref(arc_self: &Arc<Self>) {
        arc_self.woken.store(true, Ordering::Release);
        arc_self.task.wake();
    }
}
