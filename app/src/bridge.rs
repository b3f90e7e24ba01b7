//! The page's end of the worker link: starts the worker, queues requests until it is ready,
//! transfers model bytes, decodes responses, watches the worker's heartbeat, and restarts the
//! worker when asked.

use lithe_app::heartbeat::{Beat, Heartbeat, STALL_MS, TICK_MS};
use lithe_app::protocol::{MAX_HANG_MS, Request, Response};
use std::cell::RefCell;
use std::rc::Rc;
use wasm_bindgen::prelude::*;
use web_sys::{ErrorEvent, MessageEvent, Worker};

/// The worker script (`www/worker_loader.js`): it loads trunk's `worker.js` and `worker_bg.wasm`.
pub const WORKER_URL: &str = "./worker_loader.js";

/// What the link reports to the page.
pub enum LinkEvent {
    /// A decoded response.
    Response(Response),
    /// The worker died or could not start; the text says why.
    Died(String),
}

/// A running worker and its queue. Cloning gives another handle to the same link.
#[derive(Clone)]
pub struct WorkerLink {
    inner: Rc<Inner>,
}

struct Inner {
    on_event: Box<dyn Fn(LinkEvent)>,
    state: RefCell<LinkState>,
}

/// The JS handlers attached to a worker.
struct Handlers {
    _message: Closure<dyn FnMut(MessageEvent)>,
    _error: Closure<dyn FnMut(ErrorEvent)>,
}

struct LinkState {
    worker: Option<Worker>,
    ready: bool,
    queue: Vec<Request>,
    /// The JS handlers of the current worker; kept alive with it.
    handlers: Option<Handlers>,
    /// The current worker's heartbeat; `None` while no worker is watched (none started, or
    /// it was reported dead).
    heartbeat: Option<Heartbeat>,
    /// The page's patience with a silent worker (set from what it is doing).
    stall_ms: f64,
    /// A shorter patience for the current worker only (the hang test hook).
    stall_override_ms: Option<f64>,
    /// The heartbeat's interval timer; lives as long as the link.
    ticker: Option<Closure<dyn FnMut()>>,
}

impl Default for LinkState {
    fn default() -> Self {
        LinkState {
            worker: None,
            ready: false,
            queue: Vec::new(),
            handlers: None,
            heartbeat: None,
            stall_ms: STALL_MS,
            stall_override_ms: None,
            ticker: None,
        }
    }
}

impl WorkerLink {
    /// Starts the worker; every response and failure goes to `on_event`.
    pub fn start(on_event: impl Fn(LinkEvent) + 'static) -> Self {
        let link = WorkerLink {
            inner: Rc::new(Inner {
                on_event: Box::new(on_event),
                state: RefCell::default(),
            }),
        };
        link.spawn();
        link.start_ticker();
        link
    }

    /// Checks the heartbeat every [`TICK_MS`].
    fn start_ticker(&self) {
        let weak = Rc::downgrade(&self.inner);
        let tick = Closure::<dyn FnMut()>::new(move || {
            if let Some(inner) = weak.upgrade() {
                WorkerLink { inner }.tick();
            }
        });
        let set = web_sys::window().map(|w| {
            w.set_interval_with_callback_and_timeout_and_arguments_0(
                tick.as_ref().unchecked_ref(),
                TICK_MS as i32,
            )
        });
        if !matches!(set, Some(Ok(_))) {
            (self.inner.on_event)(LinkEvent::Response(Response::error(
                "worker",
                "cannot start the heartbeat timer: a hung worker will not be noticed",
            )));
        }
        self.inner.state.borrow_mut().ticker = Some(tick);
    }

    /// One heartbeat tick: ping a quiet worker, or replace a stalled one.
    fn tick(&self) {
        let now = now_ms();
        let (beat, timeout, worker) = {
            let mut st = self.inner.state.borrow_mut();
            let timeout = st.stall_override_ms.unwrap_or(st.stall_ms);
            let worker = st.worker.clone();
            match st.heartbeat.as_mut() {
                Some(h) => (h.tick(now, timeout), timeout, worker),
                None => return,
            }
        };
        match (beat, worker) {
            (Beat::Ping, Some(w)) => self.post(&w, &Request::Ping),
            (Beat::Stalled, _) => {
                let waited = if self.inner.state.borrow().ready {
                    "it stopped answering"
                } else {
                    "it did not start"
                };
                self.kill(&format!(
                    "{waited}: nothing was heard from it for {:.0} s",
                    timeout / 1000.0
                ));
            }
            _ => {}
        }
    }

    /// The patience with a silent worker from now on, in milliseconds (see
    /// `lithe_app::heartbeat::stall_timeout`).
    pub fn set_stall_timeout(&self, ms: f64) {
        self.inner.state.borrow_mut().stall_ms = ms;
    }

    /// Test hook: makes the worker stop answering (it spins without yielding) and lowers the
    /// page's patience with it to `patience_ms`, so that the heartbeat notices within seconds.
    /// Returns false when there is no ready worker to hang.
    pub fn hang(&self, patience_ms: f64) -> bool {
        let worker = {
            let mut st = self.inner.state.borrow_mut();
            if !st.ready {
                return false;
            }
            st.stall_override_ms = Some(patience_ms);
            if let Some(h) = st.heartbeat.as_mut() {
                // The worker owes an answer from now on.
                h.pinged(now_ms());
            }
            st.worker.clone()
        };
        match worker {
            Some(w) => {
                self.post(
                    &w,
                    &Request::Hang {
                        millis: MAX_HANG_MS,
                    },
                );
                self.post(&w, &Request::Ping);
                true
            }
            None => false,
        }
    }

    /// Sends `req` now, or once the worker has said it is ready.
    pub fn send(&self, req: Request) {
        let worker = {
            let st = self.inner.state.borrow();
            if st.ready { st.worker.clone() } else { None }
        };
        match worker {
            Some(w) => self.post(&w, &req),
            None => self.inner.state.borrow_mut().queue.push(req),
        }
    }

    /// Stops the current worker and starts a fresh one (after the current event handler
    /// returns, so that no handler is dropped while it runs). Queued requests are dropped.
    pub fn restart(&self) {
        let link = self.clone();
        wasm_bindgen_futures::spawn_local(async move { link.spawn() });
    }

    /// Terminates the worker without warning and reports it as dead because of `why` (the
    /// page then recovers). The debug hook uses it as the browser's crash would.
    pub fn kill(&self, why: &str) {
        self.stop();
        self.died(why.to_string());
    }

    /// Terminates the worker and stops watching it; nothing is reported.
    pub fn stop(&self) {
        let old = {
            let mut st = self.inner.state.borrow_mut();
            st.ready = false;
            st.heartbeat = None;
            st.worker.take()
        };
        if let Some(w) = old {
            w.set_onmessage(None);
            w.set_onerror(None);
            w.terminate();
        }
    }

    /// Reports the worker as dead; it is no longer watched (a restart watches the new one).
    fn died(&self, why: String) {
        self.inner.state.borrow_mut().heartbeat = None;
        (self.inner.on_event)(LinkEvent::Died(why));
    }

    fn spawn(&self) {
        let old = {
            let mut st = self.inner.state.borrow_mut();
            st.ready = false;
            st.queue.clear();
            st.heartbeat = None;
            st.stall_override_ms = None;
            st.worker.take()
        };
        if let Some(w) = old {
            // Detach first: its handlers are dropped below and must not be called again.
            w.set_onmessage(None);
            w.set_onerror(None);
            w.terminate();
        }
        let worker = match Worker::new(WORKER_URL) {
            Ok(w) => w,
            Err(e) => return self.died(format!("cannot start the worker: {}", js_text(&e))),
        };
        let weak = Rc::downgrade(&self.inner);
        let onmessage = Closure::<dyn FnMut(MessageEvent)>::new(move |ev: MessageEvent| {
            if let Some(inner) = weak.upgrade() {
                WorkerLink { inner }.receive(ev.data());
            }
        });
        let weak = Rc::downgrade(&self.inner);
        let onerror = Closure::<dyn FnMut(ErrorEvent)>::new(move |ev: ErrorEvent| {
            ev.prevent_default();
            if let Some(inner) = weak.upgrade() {
                let what = match ev.message() {
                    m if m.is_empty() => "the worker script failed to load or threw".to_string(),
                    m => m,
                };
                WorkerLink { inner }.died(what);
            }
        });
        worker.set_onmessage(Some(onmessage.as_ref().unchecked_ref()));
        worker.set_onerror(Some(onerror.as_ref().unchecked_ref()));
        let mut st = self.inner.state.borrow_mut();
        st.heartbeat = Some(Heartbeat::started(now_ms()));
        st.worker = Some(worker);
        st.handlers = Some(Handlers {
            _message: onmessage,
            _error: onerror,
        });
    }

    fn receive(&self, data: JsValue) {
        let resp = serde_wasm_bindgen::from_value::<Response>(data).unwrap_or_else(|e| {
            Response::error(
                "protocol",
                format!("unreadable message from the worker: {e}"),
            )
        });
        // Any message is a sign of life; a pong is nothing more.
        let ready = matches!(resp, Response::Ready);
        if let Some(h) = self.inner.state.borrow_mut().heartbeat.as_mut() {
            h.heard(now_ms(), ready);
        }
        if matches!(resp, Response::Pong) {
            return;
        }
        if ready {
            let (worker, queued) = {
                let mut st = self.inner.state.borrow_mut();
                st.ready = true;
                (st.worker.clone(), std::mem::take(&mut st.queue))
            };
            if let Some(w) = worker {
                for req in &queued {
                    self.post(&w, req);
                }
            }
        }
        (self.inner.on_event)(LinkEvent::Response(resp));
    }

    fn post(&self, worker: &Worker, req: &Request) {
        let sent = serde_wasm_bindgen::to_value(req)
            .map_err(|e| e.to_string())
            .and_then(|msg| {
                let res = match req {
                    // Hand the model's buffer over instead of copying it.
                    Request::LoadOnnx { bytes } => worker
                        .post_message_with_transfer(&msg, &js_sys::Array::of1(&bytes.buffer())),
                    _ => worker.post_message(&msg),
                };
                res.map_err(|e| js_text(&e))
            });
        if let Err(e) = sent {
            (self.inner.on_event)(LinkEvent::Response(Response::error(
                "protocol",
                format!("cannot send a request: {e}"),
            )));
        }
    }
}

/// Milliseconds on the page's clock (`performance.now()`).
pub fn now_ms() -> f64 {
    web_sys::window()
        .and_then(|w| w.performance())
        .map_or_else(js_sys::Date::now, |p| p.now())
}

/// A readable text for a thrown JS value.
pub fn js_text(v: &JsValue) -> String {
    if let Some(e) = v.dyn_ref::<js_sys::Error>() {
        return String::from(e.message());
    }
    v.as_string().unwrap_or_else(|| format!("{v:?}"))
}
