//! When the page should give up on a silent worker: the heartbeat's bookkeeping, as plain
//! arithmetic on the page's clock (milliseconds) so that it is tested natively.
//!
//! The page ticks every [`TICK_MS`]. Once the worker has said `Ready`, a tick sends
//! [`crate::protocol::Request::Ping`] when nothing has been heard for [`PING_EVERY_MS`]; the
//! worker answers `Pong` as soon as its event loop runs. **Any** message counts as a sign of
//! life, so a long synchronous engine call that posts progress (training, a lottery ticket, an
//! evaluation in chunks) keeps the worker alive even though it cannot answer a ping. The worker
//! is stalled when the page has waited longer than the allowed time since it started waiting
//! (the worker's start, or the first unanswered ping) and has heard nothing since.

use crate::protocol::Stage;

/// How often the page checks on the worker.
pub const TICK_MS: f64 = 1_000.0;
/// A ping is sent when nothing has been heard from the worker for this long.
pub const PING_EVERY_MS: f64 = 3_000.0;
/// The page's patience: no message for this long after a ping (or after the worker was
/// started) and the worker counts as dead.
pub const STALL_MS: f64 = 20_000.0;
/// The patience during steps that run one engine call without any progress report (importing
/// a model file, running a recipe, measuring a sweep point or a layer's sensitivity): a large
/// uploaded model can keep the worker busy for longer than [`STALL_MS`].
pub const QUIET_STALL_MS: f64 = 120_000.0;

/// Whether a worker the page has waited on since `waiting_since_ms` (`None`: not waiting) is
/// stalled at `now_ms`, with `timeout_ms` of patience.
pub fn is_stalled(waiting_since_ms: Option<f64>, now_ms: f64, timeout_ms: f64) -> bool {
    waiting_since_ms.is_some_and(|t| now_ms - t > timeout_ms)
}

/// The patience for the stage the page believes the worker is in (`None`: idle or starting).
pub fn stall_timeout(stage: Option<Stage>) -> f64 {
    match stage {
        Some(Stage::Import | Stage::Compress | Stage::Sweep | Stage::Sensitivity) => QUIET_STALL_MS,
        _ => STALL_MS,
    }
}

/// What a tick asks the page to do.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Beat {
    /// Nothing to do.
    Wait,
    /// Send a ping.
    Ping,
    /// The worker has been silent too long: treat it as dead.
    Stalled,
}

/// The heartbeat of one worker.
#[derive(Clone, Debug, PartialEq)]
pub struct Heartbeat {
    /// When the page last heard from the worker (or started it).
    last_heard: f64,
    /// Since when the page has been waiting for a message: the worker's start until `Ready`,
    /// then the first unanswered ping; `None` when nothing is awaited.
    waiting_since: Option<f64>,
    /// The previous tick.
    last_tick: f64,
    /// The worker has said `Ready` (pings before that would only be queued by the link).
    ready: bool,
}

impl Heartbeat {
    /// A worker started at `now`: the page waits for its `Ready`.
    pub fn started(now: f64) -> Self {
        Heartbeat {
            last_heard: now,
            waiting_since: Some(now),
            last_tick: now,
            ready: false,
        }
    }

    /// A message arrived from the worker at `now`; `ready` when it was `Ready`.
    pub fn heard(&mut self, now: f64, ready: bool) {
        self.last_heard = now;
        self.waiting_since = None;
        self.ready |= ready;
    }

    /// The page sent a ping (or a request it expects an answer to) at `now`.
    pub fn pinged(&mut self, now: f64) {
        self.waiting_since.get_or_insert(now);
    }

    /// Since when the page has been waiting, if it is.
    pub fn waiting_since(&self) -> Option<f64> {
        self.waiting_since
    }

    /// A tick at `now` with `timeout` ms of patience: stalled, ping, or nothing.
    ///
    /// A tick that comes more than `timeout` after the previous one means the page itself was
    /// not running (a background tab's throttled timers, a suspended laptop), so the worker
    /// could not have been heard either: the wait starts again instead of counting as a stall.
    pub fn tick(&mut self, now: f64, timeout: f64) -> Beat {
        let asleep = now - self.last_tick > timeout;
        self.last_tick = now;
        if asleep && self.waiting_since.is_some() {
            self.waiting_since = Some(now);
        }
        if is_stalled(self.waiting_since, now, timeout) {
            return Beat::Stalled;
        }
        if self.ready && self.waiting_since.is_none() && now - self.last_heard >= PING_EVERY_MS {
            self.waiting_since = Some(now);
            return Beat::Ping;
        }
        Beat::Wait
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Ticks every second from `from` to `to` (inclusive); returns the beats.
    fn run(h: &mut Heartbeat, from: f64, to: f64, timeout: f64) -> Vec<(f64, Beat)> {
        let mut out = Vec::new();
        let mut t = from;
        while t <= to {
            out.push((t, h.tick(t, timeout)));
            t += TICK_MS;
        }
        out
    }

    #[test]
    fn stalled_only_after_the_timeout_while_waiting() {
        assert!(!is_stalled(None, 1e9, STALL_MS));
        assert!(!is_stalled(Some(0.0), STALL_MS, STALL_MS));
        assert!(is_stalled(Some(0.0), STALL_MS + 1.0, STALL_MS));
        assert!(!is_stalled(Some(5_000.0), 24_000.0, STALL_MS));
    }

    #[test]
    fn quiet_stages_get_more_patience() {
        assert_eq!(stall_timeout(None), STALL_MS);
        assert_eq!(stall_timeout(Some(Stage::Lottery)), STALL_MS);
        assert_eq!(stall_timeout(Some(Stage::Train)), STALL_MS);
        assert_eq!(stall_timeout(Some(Stage::Evaluate)), STALL_MS);
        assert_eq!(stall_timeout(Some(Stage::Import)), QUIET_STALL_MS);
        assert_eq!(stall_timeout(Some(Stage::Compress)), QUIET_STALL_MS);
    }

    #[test]
    fn an_answering_worker_is_pinged_and_never_stalled() {
        let mut h = Heartbeat::started(0.0);
        h.heard(500.0, true);
        let mut pings = 0;
        for t in (1..=120).map(|s| s as f64 * TICK_MS) {
            match h.tick(t, STALL_MS) {
                Beat::Ping => {
                    pings += 1;
                    // The pong comes back 50 ms later.
                    h.heard(t + 50.0, false);
                }
                Beat::Stalled => panic!("stalled at {t} ms"),
                Beat::Wait => {}
            }
        }
        // A ping after 3 s of silence, at the next whole tick: every 4 s over two minutes.
        assert_eq!(pings, 30);
    }

    #[test]
    fn a_silent_worker_is_stalled_after_the_timeout() {
        let mut h = Heartbeat::started(0.0);
        h.heard(100.0, true);
        let beats = run(&mut h, 1_000.0, 60_000.0, STALL_MS);
        let first_ping = beats.iter().find(|b| b.1 == Beat::Ping).map(|b| b.0);
        assert_eq!(first_ping, Some(4_000.0));
        let stalled = beats.iter().find(|b| b.1 == Beat::Stalled).map(|b| b.0);
        // 20 s after the unanswered ping, at the next tick.
        assert_eq!(stalled, Some(25_000.0));
        // Nothing but that one ping in between.
        assert_eq!(beats.iter().filter(|b| b.1 == Beat::Ping).count(), 1);
    }

    #[test]
    fn progress_during_a_long_call_keeps_the_worker_alive() {
        // A synchronous job cannot answer pings but posts progress every 2 s for a minute.
        let mut h = Heartbeat::started(0.0);
        h.heard(0.0, true);
        for s in 1..=60u32 {
            let t = f64::from(s) * TICK_MS;
            if s.is_multiple_of(2) {
                h.heard(t, false);
            }
            assert_ne!(h.tick(t, STALL_MS), Beat::Stalled, "at {t} ms");
        }
        // Then it goes silent: stalled 20 s after the next ping.
        let beats = run(&mut h, 61_000.0, 100_000.0, STALL_MS);
        let stalled = beats.iter().find(|b| b.1 == Beat::Stalled).map(|b| b.0);
        assert_eq!(stalled, Some(84_000.0));
    }

    #[test]
    fn a_worker_that_never_starts_is_stalled() {
        let mut h = Heartbeat::started(0.0);
        let beats = run(&mut h, 1_000.0, 30_000.0, STALL_MS);
        // No pings before Ready, stalled once the start took longer than the timeout.
        assert!(beats.iter().all(|b| b.1 != Beat::Ping));
        let stalled = beats.iter().find(|b| b.1 == Beat::Stalled).map(|b| b.0);
        assert_eq!(stalled, Some(21_000.0));
    }

    #[test]
    fn a_sleeping_page_does_not_count_as_a_stall() {
        let mut h = Heartbeat::started(0.0);
        h.heard(0.0, true);
        assert_eq!(h.tick(3_000.0, STALL_MS), Beat::Ping);
        // The tab was throttled for a minute: its next tick starts the wait again.
        assert_eq!(h.tick(63_000.0, STALL_MS), Beat::Wait);
        h.heard(63_010.0, false);
        assert_eq!(h.tick(64_000.0, STALL_MS), Beat::Wait);
        // Then silent: pinged 3 s later, stalled after the timeout, not before.
        assert_eq!(h.tick(65_000.0, STALL_MS), Beat::Wait);
        assert_eq!(h.tick(66_100.0, STALL_MS), Beat::Ping);
        assert_eq!(h.tick(86_100.0, STALL_MS), Beat::Wait);
        assert_eq!(h.tick(86_600.0, STALL_MS), Beat::Stalled);
    }

    #[test]
    fn a_short_timeout_finds_a_hang_quickly() {
        // The e2e hook: a hang is followed by a ping at once, with 2 s of patience.
        let mut h = Heartbeat::started(0.0);
        h.heard(9_500.0, true);
        assert_eq!(h.tick(10_000.0, 2_000.0), Beat::Wait);
        h.pinged(10_200.0);
        let beats = run(&mut h, 11_000.0, 14_000.0, 2_000.0);
        let stalled = beats.iter().find(|b| b.1 == Beat::Stalled).map(|b| b.0);
        assert_eq!(stalled, Some(13_000.0));
    }
}
