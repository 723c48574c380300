//! A session's two queues: pushes in (from the dispatcher) and frames out
//! (to the client's response stream), and the response stream that runs
//! the session.
//!
//! Both queues are a `VecDeque` behind a mutex in one small allocation,
//! with no buffer while empty. They replace two tokio channels, which cost
//! an idle session ~2.1 KB (a 512 B cache-padded channel struct each, and
//! slot blocks allocated 32 at a time when the channel is made), and the
//! session no longer has a task of its own: [`SessionFrames`] polls the
//! session's future from inside the response stream, so hyper's stream
//! task drives it (docs/benchmarks.md, "Where a session's memory goes").

use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};

use futures::Stream;

use super::Push;

/// What the dispatcher hands a session, queued: bounded by the dispatcher
/// (it pushes a `Resync` instead of queueing past its bound).
#[derive(Default)]
pub struct PushQueue {
    inner: Mutex<PushInner>,
}

#[derive(Default)]
struct PushInner {
    queue: VecDeque<Push>,
    /// The session waiting for a push.
    waker: Option<Waker>,
}

impl PushQueue {
    /// Queues `p` unless `max` are queued already (then hands it back).
    pub fn try_push(&self, p: Push, max: usize) -> Result<(), Push> {
        let mut g = self.inner.lock().expect("push queue");
        if g.queue.len() >= max {
            return Err(p);
        }
        g.queue.push_back(p);
        if let Some(w) = g.waker.take() {
            w.wake();
        }
        Ok(())
    }

    /// Queues a resync: the session re-reads its inbox, so one queued
    /// resync stands for any number (and it may pass the bound by one).
    pub fn resync(&self, max: usize) {
        let mut g = self.inner.lock().expect("push queue");
        if g.queue.len() > max || matches!(g.queue.back(), Some(Push::Resync)) {
            return;
        }
        g.queue.push_back(Push::Resync);
        if let Some(w) = g.waker.take() {
            w.wake();
        }
    }

    /// The next push, in order.
    pub fn recv(&self) -> impl Future<Output = Push> + '_ {
        std::future::poll_fn(move |cx| {
            let mut g = self.inner.lock().expect("push queue");
            match g.queue.pop_front() {
                Some(p) => {
                    if g.queue.is_empty() {
                        // A burst may have grown the buffer: an idle
                        // session keeps none.
                        g.queue = VecDeque::new();
                    }
                    Poll::Ready(p)
                }
                None => {
                    g.waker = Some(cx.waker().clone());
                    Poll::Pending
                }
            }
        })
    }
}

/// Frames queued towards the client. Filled by the session's future and
/// emptied by [`SessionFrames`], which polls that future itself: a full
/// queue makes `send` wait until the stream has taken a frame.
pub struct OutQueue<T> {
    inner: Mutex<OutInner<T>>,
    max: usize,
}

struct OutInner<T> {
    queue: VecDeque<T>,
    /// A `send` waiting for room.
    waker: Option<Waker>,
}

impl<T> OutQueue<T> {
    pub fn new(max: usize) -> Arc<Self> {
        Arc::new(OutQueue {
            inner: Mutex::new(OutInner { queue: VecDeque::new(), waker: None }),
            max,
        })
    }

    /// Queues `f`, waiting while `max` frames are queued.
    pub fn send(&self, f: T) -> impl Future<Output = ()> + '_ {
        let mut f = Some(f);
        std::future::poll_fn(move |cx| {
            let mut g = self.inner.lock().expect("out queue");
            if g.queue.len() >= self.max {
                g.waker = Some(cx.waker().clone());
                return Poll::Pending;
            }
            g.queue.push_back(f.take().expect("polled after it was ready"));
            Poll::Ready(())
        })
    }

    fn pop(&self) -> Option<T> {
        let mut g = self.inner.lock().expect("out queue");
        let f = g.queue.pop_front();
        // Emptied: the buffer goes, so an idle session holds none (the
        // session figures in docs/benchmarks.md were measured so). Keeping
        // VecDeque's first 4 slots (16 B each) would trade ~64 B per idle
        // session for one small allocation less per frame sent.
        if g.queue.is_empty() && g.queue.capacity() > 0 {
            g.queue = VecDeque::new();
        }
        if f.is_some() {
            if let Some(w) = g.waker.take() {
                w.wake();
            }
        }
        f
    }
}

/// A session as a stream of frames: each poll first runs the session's
/// future (reads the client, the pushes, the heartbeat timer), then hands
/// out the oldest queued frame. Ends once the future has finished and the
/// queue is empty. Dropping it (the client went) drops the future; what
/// must happen then is in the future's own guards (`session::Registered`).
pub struct SessionFrames<T> {
    out: Arc<OutQueue<T>>,
    run: Option<Pin<Box<dyn Future<Output = ()> + Send>>>,
}

impl<T> SessionFrames<T> {
    pub fn new(out: Arc<OutQueue<T>>, run: Pin<Box<dyn Future<Output = ()> + Send>>) -> Self {
        SessionFrames { out, run: Some(run) }
    }
}

impl<T> Stream for SessionFrames<T> {
    type Item = T;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<T>> {
        if let Some(run) = self.run.as_mut() {
            if run.as_mut().poll(cx).is_ready() {
                self.run = None;
            }
        }
        if let Some(f) = self.out.pop() {
            return Poll::Ready(Some(f));
        }
        if self.run.is_none() {
            Poll::Ready(None)
        } else {
            Poll::Pending
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::StreamExt;
    use std::sync::atomic::{AtomicBool, Ordering};

    /// Frames come out in order; a session that sends more than the queue
    /// holds waits for the stream to take some, then goes on; the stream
    /// ends once the session has finished and every frame was taken.
    #[tokio::test]
    async fn frames_come_in_order_and_a_full_queue_waits_for_the_stream() {
        let out = OutQueue::new(2);
        let o = out.clone();
        let run = Box::pin(async move {
            for i in 0..5u32 {
                o.send(i).await;
            }
        });
        let mut frames = SessionFrames::new(out.clone(), run);
        let got: Vec<u32> = (&mut frames).collect().await;
        assert_eq!(got, vec![0, 1, 2, 3, 4]);
        assert!(frames.next().await.is_none());
    }

    /// The session's future runs only as the stream is polled, and
    /// dropping the stream drops the future (its guards then run).
    #[tokio::test]
    async fn dropping_the_stream_drops_the_session() {
        struct Guard(Arc<AtomicBool>);
        impl Drop for Guard {
            fn drop(&mut self) {
                self.0.store(true, Ordering::SeqCst);
            }
        }
        let dropped = Arc::new(AtomicBool::new(false));
        let out = OutQueue::<u32>::new(4);
        let g = Guard(dropped.clone());
        let o = out.clone();
        let run = Box::pin(async move {
            let _g = g;
            o.send(7).await;
            std::future::pending::<()>().await;
        });
        let mut frames = SessionFrames::new(out, run);
        assert_eq!(frames.next().await, Some(7));
        assert!(!dropped.load(Ordering::SeqCst));
        drop(frames);
        assert!(dropped.load(Ordering::SeqCst));
    }

    /// A push wakes the waiting session; past the bound a push is handed
    /// back; resyncs collapse into one.
    #[tokio::test]
    async fn pushes_wake_the_session_and_are_bounded() {
        let q = Arc::new(PushQueue::default());
        let q2 = q.clone();
        let waiter = tokio::spawn(async move { matches!(q2.recv().await, Push::Resync) });
        tokio::task::yield_now().await;
        q.resync(2);
        assert!(waiter.await.unwrap());
        q.resync(2);
        q.resync(2);
        assert!(q.try_push(Push::Resync, 2).is_ok());
        assert!(q.try_push(Push::Resync, 2).is_err(), "the third push is past the bound of 2");
        q.resync(2); // at the bound, last is a Resync: nothing added
        let n = q.inner.lock().unwrap().queue.len();
        assert_eq!(n, 2);
    }
}
