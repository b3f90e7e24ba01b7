//! The page's end of the worker link: starts the worker, queues requests until it is ready,
//! transfers model bytes, decodes responses, and restarts the worker when asked.

use lithe_app::protocol::{Request, Response};
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

#[derive(Default)]
struct LinkState {
    worker: Option<Worker>,
    ready: bool,
    queue: Vec<Request>,
    /// The JS handlers of the current worker; kept alive with it.
    handlers: Option<Handlers>,
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
        link
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

    /// Terminates the worker without warning and reports it as dead, as the browser would
    /// when it crashed (the page then recovers).
    pub fn kill(&self) {
        let old = {
            let mut st = self.inner.state.borrow_mut();
            st.ready = false;
            st.worker.take()
        };
        if let Some(w) = old {
            w.set_onmessage(None);
            w.set_onerror(None);
            w.terminate();
        }
        (self.inner.on_event)(LinkEvent::Died("the worker was terminated".into()));
    }

    fn spawn(&self) {
        let old = {
            let mut st = self.inner.state.borrow_mut();
            st.ready = false;
            st.queue.clear();
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
            Err(e) => {
                return (self.inner.on_event)(LinkEvent::Died(format!(
                    "cannot start the worker: {}",
                    js_text(&e)
                )));
            }
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
                (inner.on_event)(LinkEvent::Died(what));
            }
        });
        worker.set_onmessage(Some(onmessage.as_ref().unchecked_ref()));
        worker.set_onerror(Some(onerror.as_ref().unchecked_ref()));
        let mut st = self.inner.state.borrow_mut();
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
        if matches!(resp, Response::Ready) {
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

/// A readable text for a thrown JS value.
pub fn js_text(v: &JsValue) -> String {
    if let Some(e) = v.dyn_ref::<js_sys::Error>() {
        return String::from(e.message());
    }
    v.as_string().unwrap_or_else(|| format!("{v:?}"))
}
